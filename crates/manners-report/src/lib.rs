//! # manners-report
//!
//! What a finished run leaves for people to read, made from its events: `report.md` (the run's
//! facts, results, last samples, warnings) and `loss.png`, plus the plots of the experiments.
//! A consumer of [`TrainEvent`](manners_events::TrainEvent)s like the dashboard, so the learner
//! never depends on it; no Burn, no terminal UI.
//!
//! - [`ReportSink`]: an [`EventSink`](manners_events::EventSink) that writes the report when
//!   the run finishes; [`write_report`] does the same for any run folder.
//! - [`Curves`]: train and held-out loss points of a run's event log.
//! - [`plot_losses`] and [`plot_series`]: PNG plots via plotters, text drawn with an embedded
//!   font (no system font libraries needed).
//!
//! ```no_run
//! use manners_events::{Control, EventSink, Fanout, FnSink};
//! use manners_report::ReportSink;
//! # fn train(_sink: &mut dyn EventSink, _control: &Control) {}
//! let mut sink = Fanout(vec![
//!     Box::new(FnSink(|e: manners_events::TrainEvent| eprintln!("{e:?}"))),
//!     Box::new(ReportSink::new()), // writes <run>/report.md and <run>/loss.png at the end
//! ]);
//! train(&mut sink, &Control::new());
//! ```

mod plot;
mod report;

pub use plot::{PLOT_SIZE, PlotError, plot_losses, plot_series, smooth};
pub use report::{Curves, ReportError, ReportSink, write_report};
