//! Wiring a training run to the terminal: the trainer on a worker thread with the dashboard
//! on this one (or plain log lines), the report writer beside them, Ctrl-C handling. Shared by
//! every command that trains.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::bail;
use manners::events::{Control, EventSink, Fanout, TrainEvent};
use manners::report::ReportSink;
use manners::train::{TrainConfig, TrainOutcome};
use manners_tui::{DashboardEnd, DashboardOptions, LogPrinter, run_dashboard};

/// Runs training with the dashboard when stdout and stderr are terminals (and `--no-tui` is not
/// given), else with plain log lines; `report.md` and `loss.png` are written when the run
/// ends. Ctrl-C asks the trainer to checkpoint and stop; a second Ctrl-C exits at once.
pub fn run_with_ui(
    cfg: TrainConfig,
    devices: manners::DeviceSet,
    resume: Option<PathBuf>,
    no_tui: bool,
) -> anyhow::Result<TrainOutcome> {
    let control = Control::new();
    let tui = !no_tui && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let train = move |sink: &mut dyn EventSink, control: &Control| match &resume {
        Some(dir) => {
            let c = cfg.clone();
            manners::train::resume(
                dir,
                devices.clone(),
                move |x| apply_resume_edits(x, &c),
                sink,
                control,
            )
        }
        None => manners::train::train(cfg, devices.clone(), sink, control),
    };
    if tui {
        let (tx, rx) = mpsc::channel::<TrainEvent>();
        let worker_control = control.clone();
        let worker = std::thread::Builder::new()
            .name("trainer".into())
            .spawn(move || {
                let mut sink = Fanout(vec![Box::new(ReportSink::new()), Box::new(tx)]);
                train(&mut sink, &worker_control)
            })?;
        let out = run_dashboard(rx, control, DashboardOptions::default())?;
        if matches!(out.end, DashboardEnd::ForceQuit) {
            std::process::exit(130);
        }
        match worker.join() {
            Ok(r) => Ok(r?),
            Err(_) => bail!("the trainer thread panicked (see the message above)"),
        }
    } else {
        install_ctrl_c(&control);
        let mut sink = Fanout(vec![
            Box::new(ReportSink::new()),
            Box::new(LogPrinter::stderr(10)),
        ]);
        Ok(train(&mut sink, &control)?)
    }
}

/// The runner recipes train with: the dashboard or log lines, as `manners train` does.
pub fn runner(
    device: manners::DeviceChoice,
    no_tui: bool,
) -> impl FnMut(TrainConfig) -> manners_recipes::Result<TrainOutcome> {
    move |cfg| {
        run_with_ui(cfg, device.clone().into(), None, no_tui)
            .map_err(|e| manners_recipes::RecipeError::Run(e.into()))
    }
}

/// On resume `given` is the saved config with the flags applied: the trainer accepts the
/// changes a resume may make and refuses the rest with the list.
fn apply_resume_edits(saved: &mut TrainConfig, given: &TrainConfig) {
    *saved = given.clone();
}

fn install_ctrl_c(control: &Control) {
    let c = control.clone();
    let mut hits = 0;
    let _ = ctrlc::set_handler(move || {
        hits += 1;
        if hits == 1 {
            eprintln!("\nstopping: writing a checkpoint (Ctrl-C again to exit now)");
            c.request_stop();
        } else {
            std::process::exit(130);
        }
    });
}
