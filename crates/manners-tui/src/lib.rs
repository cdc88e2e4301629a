//! Everything that presents a manners training run live, without Burn: the ratatui dashboard
//! and the plain log lines (no terminal, or `--no-tui`). Both consume the same
//! [`manners_events::TrainEvent`]s (the run's `report.md` and `loss.png` come from another
//! consumer, `manners-report`).
//!
//! - [`Dashboard`]: pure state (`update(&TrainEvent)`, `on_key(KeyEvent) -> Option<Request>`,
//!   `render(&mut Frame)`), snapshot-tested on ratatui's `TestBackend`. Usable at 80x24
//!   (compact layout), full layout from 100x30.
//! - [`run_dashboard`]: owns the terminal and runs the dashboard until the run ends, forwarding
//!   key requests to the trainer's [`Control`](manners_events::Control). The terminal is
//!   restored on return, on error, on panic and on Ctrl-C (in raw mode Ctrl-C is a key: the
//!   first one asks the trainer to stop after a checkpoint, the second quits at once).
//! - [`LogPrinter`]: an [`EventSink`](manners_events::EventSink) printing one line per logging
//!   interval (plus evals, samples, checkpoints, warnings, the end), with an `indicatif`
//!   progress bar when stderr is a terminal.
//!
//! # Wiring (what `manners train` does)
//!
//! Training runs on a worker thread; the UI thread owns the terminal.
//!
//! ```no_run
//! use std::sync::mpsc;
//! use manners_events::{Control, EventSink, Fanout, TrainEvent};
//! use manners_tui::{DashboardEnd, DashboardOptions, LogPrinter, run_dashboard};
//!
//! # fn train(_sink: &mut dyn EventSink, _control: &Control) {}
//! let control = Control::new();
//! let (tx, rx) = mpsc::channel::<TrainEvent>();
//! let worker = {
//!     let control = control.clone();
//!     std::thread::spawn(move || {
//!         let mut sink = tx; // or Fanout(vec![Box::new(tx), Box::new(metrics_jsonl)])
//!         train(&mut sink, &control);
//!         // dropping the sender tells the dashboard no more events will come
//!     })
//! };
//! let outcome = run_dashboard(rx, control, DashboardOptions::default())?;
//! if outcome.end == DashboardEnd::ForceQuit {
//!     std::process::exit(130); // second Ctrl-C: do not wait for the trainer
//! }
//! worker.join().expect("trainer thread panicked");
//! // Without a terminal: `let mut log = LogPrinter::stderr(10);` and pass `&mut log` (or a
//! // Fanout containing it) to the trainer on the current thread instead.
//! # Ok::<(), std::io::Error>(())
//! ```

mod dashboard;
mod format;
mod history;
mod log;
mod render;
mod terminal;

pub use dashboard::{ChartView, Dashboard, DeviceMeter, RunStatus};
pub use format::{
    eta_secs, fmt_count, fmt_duration, fmt_gnorm, fmt_loss, fmt_lr, fmt_pct, fmt_rate, fmt_si,
    fmt_sig3,
};
pub use history::{DEFAULT_HISTORY_CAP, LossHistory};
pub use log::{LogPrinter, StepLine};
pub use manners_events::stats::Ema;
pub use render::{WIDE_MIN_HEIGHT, WIDE_MIN_WIDTH};
pub use terminal::{
    DashboardEnd, DashboardOptions, DashboardOutcome, PanicHookGuard, install_panic_hook,
    run_dashboard,
};
