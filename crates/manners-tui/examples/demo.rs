//! A fake training run driving the dashboard (or the plain log lines), to try the UI without
//! Burn: `cargo run --release -p manners-tui --example demo [-- --no-tui] [--steps N] [--fast]
//! [--panic-at STEP]`.
//!
//! The fake trainer honours the keys: `q` stops after a "checkpoint", `p` pauses, `e`/`s`/`c`
//! evaluate, sample and checkpoint at the next step. It is also the thread layout the CLI uses:
//! trainer on a worker thread, UI on the main thread.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use manners_events::{
    CheckpointInfo, Control, EvalStats, EventSink, RunInfo, RunSummary, SampleOut, StepStats,
    TrainEvent,
};
use manners_report::plot_losses;
use manners_tui::{DashboardEnd, DashboardOptions, LogPrinter, run_dashboard};

fn fake_train(
    sink: &mut dyn EventSink,
    control: &Control,
    total: u64,
    step_ms: u64,
    panic_at: Option<u64>,
) -> Vec<(f64, f64)> {
    let t0 = Instant::now();
    sink.send(TrainEvent::Started(RunInfo {
        name: "demo".into(),
        run_dir: "runs/demo".into(),
        model: "gpt2 4L/256d/4h vocab 8192".into(),
        params: 3_412_480,
        trainable_params: 3_412_480,
        backend: "fake (no Burn)".into(),
        data: "synthetic".into(),
        train_examples: 1_200,
        eval_examples: 64,
        template: "chatml".into(),
        total_steps: total,
        facts: vec![("batch".into(), "8 x 2 accum".into())],
        ..Default::default()
    }));
    let mut losses = Vec::new();
    let mut paused_sent = false;
    let mut step = 0;
    let mut reason = "completed";
    let eval = |sink: &mut dyn EventSink, step: u64| {
        let loss = 0.7 + 2.3 * (-(step as f64) / 170.0).exp();
        sink.send(TrainEvent::Eval(EvalStats {
            step,
            loss,
            perplexity: loss.exp(),
            ..Default::default()
        }));
    };
    let checkpoint = |sink: &mut dyn EventSink, step: u64| {
        std::thread::sleep(Duration::from_millis(150));
        sink.send(TrainEvent::Checkpoint(CheckpointInfo {
            step,
            path: format!("runs/demo/checkpoints/step-{step}"),
            secs: 0.15,
        }));
    };
    let sample = |sink: &mut dyn EventSink, step: u64| {
        for (p, r) in [
            (
                "What is the capital of France?",
                "The capital of France is Paris.",
            ),
            ("Name three primary colours.", "Red, yellow and blue."),
        ] {
            sink.send(TrainEvent::Sample(SampleOut {
                step,
                prompt: p.into(),
                response: r.into(),
                stopped: true,
            }));
        }
    };
    while step < total {
        if control.should_stop() {
            checkpoint(sink, step);
            reason = "stopped by user";
            break;
        }
        if control.is_paused() {
            if !paused_sent {
                sink.send(TrainEvent::Paused { step, paused: true });
                paused_sent = true;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        } else if paused_sent {
            sink.send(TrainEvent::Paused {
                step,
                paused: false,
            });
            paused_sent = false;
        }
        std::thread::sleep(Duration::from_millis(step_ms));
        step += 1;
        if panic_at == Some(step) {
            panic!("fake trainer bug at step {step}");
        }
        let x = step as f64;
        let loss = 0.55 + 2.4 * (-x / 150.0).exp() + 0.12 * ((x * 1.3).sin() * (x * 0.17).cos());
        losses.push((x, loss));
        sink.send(TrainEvent::Step(StepStats {
            step,
            total_steps: total,
            epoch: x * 16.0 / 1_200.0,
            loss,
            lr: 3e-4 * (1.0 - x / total as f64).max(0.1),
            grad_norm: 0.6 + 1.5 * (-x / 80.0).exp(),
            tokens: 7_800,
            supervised_tokens: 2_964,
            tokens_per_sec: 7_800.0 / (step_ms.max(1) as f64 / 1000.0)
                * (1.0 + 0.05 * (x * 0.4).sin()),
            elapsed_secs: t0.elapsed().as_secs_f64(),
            skipped: false,
            ..Default::default()
        }));
        if step == 137 {
            sink.send(TrainEvent::Warning {
                step,
                message: "loss spike (3.1x the running mean)".into(),
            });
        }
        if step % 100 == 0 || control.take_eval() {
            eval(sink, step);
        }
        if step % 200 == 0 || control.take_sample() {
            sample(sink, step);
        }
        if step % 250 == 0 || control.take_checkpoint() {
            checkpoint(sink, step);
        }
    }
    sink.send(TrainEvent::Finished(RunSummary {
        steps: step,
        final_loss: losses.last().map(|p| p.1),
        final_eval_loss: None,
        elapsed_secs: t0.elapsed().as_secs_f64(),
        run_dir: "runs/demo".into(),
        reason: reason.into(),
    }));
    losses
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let no_tui = args.iter().any(|a| a == "--no-tui") || !std::io::stdout().is_terminal();
    let total = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let panic_at: Option<u64> = args
        .iter()
        .position(|a| a == "--panic-at")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    let step_ms = if args.iter().any(|a| a == "--fast") {
        2
    } else {
        40
    };
    let control = Control::new();
    let losses = if no_tui {
        let mut log = LogPrinter::stderr(50);
        fake_train(&mut log, &control, total, step_ms, panic_at)
    } else {
        let (tx, rx) = mpsc::channel();
        let worker = {
            let control = control.clone();
            std::thread::spawn(move || {
                let mut tx = tx;
                fake_train(&mut tx, &control, total, step_ms, panic_at)
            })
        };
        let outcome = run_dashboard(rx, control, DashboardOptions::default())?;
        if outcome.end == DashboardEnd::ForceQuit {
            eprintln!("quit without waiting for the trainer");
            std::process::exit(130);
        }
        eprintln!("dashboard ended: {:?}", outcome.end);
        worker.join().unwrap_or_default()
    };
    let path = std::env::temp_dir().join("manners-demo-loss.png");
    match plot_losses(&path, "demo: loss", &losses, &[], &[]) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("no plot: {e}"),
    }
    Ok(())
}
