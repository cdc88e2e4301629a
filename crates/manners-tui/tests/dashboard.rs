//! Snapshot tests of the dashboard drawn on ratatui's `TestBackend` from synthetic events.
//! The `.snap` files under `tests/snapshots/` are the dashboard's spec: review changes to them.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use manners_events::{
    CheckpointInfo, EvalStats, Request, RunInfo, RunSummary, SampleOut, StepStats, TrainEvent,
};
use manners_tui::{Dashboard, RunStatus};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const TOTAL: u64 = 800;

fn run_info() -> RunInfo {
    RunInfo {
        name: "sft-demo".into(),
        run_dir: "runs/sft-demo".into(),
        kind: manners_events::RunKind::Sft,
        model: "gpt2 4L/256d/4h vocab 8192".into(),
        params: 3_412_480,
        trainable_params: 3_412_480,
        backend: "flex (cpu)".into(),
        data: "assets/instruct/train.jsonl (messages)".into(),
        train_examples: 1_200,
        eval_examples: 64,
        template: "chatml".into(),
        total_steps: TOTAL,
        start_step: 0,
        facts: vec![
            ("batch".into(), "8 x 2 accum, 512 tokens".into()),
            ("schedule".into(), "warmup 40, cosine".into()),
        ],
    }
}

/// A plausible SFT loss curve with deterministic noise.
fn loss_at(step: u64) -> f64 {
    let x = step as f64;
    0.55 + 2.4 * (-x / 150.0).exp() + 0.12 * ((x * 1.3).sin() * (x * 0.17).cos())
}

fn lr_at(step: u64) -> f64 {
    let peak = 3e-4;
    if step <= 40 {
        peak * step as f64 / 40.0
    } else {
        let t = (step - 40) as f64 / (TOTAL - 40) as f64;
        peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
    }
}

fn step_event(step: u64) -> TrainEvent {
    let skipped = step == 137;
    TrainEvent::Step(StepStats {
        step,
        total_steps: TOTAL,
        epoch: step as f64 * 16.0 / 1_200.0,
        loss: if skipped { f64::NAN } else { loss_at(step) },
        lr: lr_at(step),
        grad_norm: 0.6 + 1.5 * (-(step as f64) / 80.0).exp(),
        tokens: 7_800,
        supervised_tokens: 2_964,
        tokens_per_sec: 4_100.0 + 300.0 * ((step as f64) * 0.4).sin(),
        elapsed_secs: step as f64 * 1.9,
        skipped,
        ..Default::default()
    })
}

fn samples(step: u64) -> Vec<TrainEvent> {
    [
        ("What is the capital of France?", "The capital of France is Paris.", true),
        (
            "Write a haiku about gradient descent.",
            "Down the loss we roll,\nsmall steps in the valley's dark,\nminimum in sight.",
            true,
        ),
        (
            "Explain supervised fine-tuning in one sentence.",
            "Supervised fine-tuning trains a pretrained language model on example conversations so that it learns to answer instructions, with the loss taken only on the assistant's tokens and",
            false,
        ),
    ]
    .into_iter()
    .map(|(p, r, stopped)| {
        TrainEvent::Sample(SampleOut {
            step,
            prompt: p.into(),
            response: r.into(),
            stopped,
        })
    })
    .collect()
}

/// The events of a run up to `upto` steps: evals every 100, checkpoints every 200, samples
/// every 200, one skipped step with its warning.
fn events(upto: u64) -> Vec<TrainEvent> {
    let mut ev = vec![TrainEvent::Started(run_info())];
    for step in 1..=upto {
        ev.push(step_event(step));
        if step == 137 {
            ev.push(TrainEvent::Warning {
                step,
                message: "non-finite loss (NaN); step skipped".into(),
            });
        }
        if step % 100 == 0 {
            let loss = 0.7 + 2.3 * (-(step as f64) / 170.0).exp();
            ev.push(TrainEvent::Eval(EvalStats {
                step,
                loss,
                perplexity: loss.exp(),
                tokens: 20_480,
                extra: vec![],
            }));
        }
        if step % 200 == 0 {
            ev.extend(samples(step));
            ev.push(TrainEvent::Checkpoint(CheckpointInfo {
                step,
                path: format!("runs/sft-demo/checkpoints/step-{step}"),
                secs: 0.42,
            }));
        }
    }
    ev
}

fn dashboard(upto: u64) -> Dashboard {
    let mut d = Dashboard::new();
    for e in events(upto) {
        d.update(&e);
    }
    d
}

fn draw(d: &Dashboard, w: u16, h: u16) -> TestBackend {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| d.render(f)).expect("draw");
    t.backend().clone()
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

#[test]
fn mid_run_wide() {
    insta::assert_snapshot!(draw(&dashboard(420), 120, 40));
}

#[test]
fn mid_run_narrow() {
    insta::assert_snapshot!(draw(&dashboard(420), 80, 24));
}

#[test]
fn paused_wide() {
    let mut d = dashboard(420);
    assert_eq!(d.on_key(key('p')), Some(Request::TogglePause));
    d.update(&TrainEvent::Paused {
        step: 420,
        paused: true,
    });
    assert_eq!(d.status(), &RunStatus::Paused);
    // The request was acknowledged: the help bar shows the keys again, with "p resume".
    insta::assert_snapshot!(draw(&d, 120, 40));
}

#[test]
fn stopping_narrow_with_pending_eval() {
    let mut d = dashboard(420);
    assert_eq!(d.on_key(key('e')), Some(Request::EvalNow));
    assert_eq!(d.on_key(key('q')), Some(Request::Stop));
    insta::assert_snapshot!(draw(&d, 80, 24));
}

#[test]
fn recent_view_wide() {
    let mut d = dashboard(700);
    assert_eq!(d.on_key(key('v')), None);
    assert_eq!(
        d.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)),
        None
    );
    insta::assert_snapshot!(draw(&d, 120, 40));
}

#[test]
fn finished_wide() {
    let mut d = dashboard(TOTAL);
    d.update(&TrainEvent::Finished(RunSummary {
        steps: TOTAL,
        final_loss: Some(loss_at(TOTAL)),
        final_eval_loss: Some(0.7208),
        elapsed_secs: TOTAL as f64 * 1.9,
        run_dir: "runs/sft-demo".into(),
        reason: "completed".into(),
    }));
    insta::assert_snapshot!(draw(&d, 120, 40));
}

#[test]
fn failed_narrow() {
    let mut d = dashboard(250);
    d.update(&TrainEvent::Failed {
        step: 251,
        error: "5 non-finite losses in a row (steps 247-251): stopping; the last good checkpoint is kept".into(),
    });
    insta::assert_snapshot!(draw(&d, 80, 24));
}

#[test]
fn waiting_for_start_narrow() {
    insta::assert_snapshot!(draw(&Dashboard::new(), 80, 24));
}

#[test]
fn resumed_run_wide_at_threshold() {
    // Resumed at step 400 and seen only from there; 100x30 is the smallest wide layout.
    let mut d = Dashboard::new();
    let mut info = run_info();
    info.start_step = 400;
    d.update(&TrainEvent::Started(info));
    for step in 401..=460 {
        d.update(&step_event(step));
    }
    insta::assert_snapshot!(draw(&d, 100, 30));
}

#[test]
fn long_history_stays_small() {
    // 200k steps through the dashboard: the chart keeps bounded history.
    let mut d = Dashboard::with_history_cap(256);
    for step in 1..=200_000u64 {
        d.update(&TrainEvent::Step(StepStats {
            step,
            total_steps: 200_000,
            loss: 1.0 + 1.0 / step as f64,
            ..Default::default()
        }));
    }
    assert!(d.train_history().stored() <= 256);
    assert!(d.train_history().points().len() <= 258);
    assert_eq!(d.train_history().first(), Some((1.0, 2.0)));
    let _ = draw(&d, 80, 24);
}

#[test]
fn trainer_died_narrow() {
    let mut d = dashboard(90);
    d.disconnect(Some(
        "thread 'trainer' panicked at crates/manners-train/src/step.rs:88: shape mismatch".into(),
    ));
    assert!(d.status().is_over());
    insta::assert_snapshot!(draw(&d, 80, 24));
}

/// A run that mixes raw text into its SFT data: the chart and the loss row show the
/// conversations' loss, and a row of its own shows the raw text's (last and smoothed).
#[test]
fn mixing_raw_text_wide_and_narrow() {
    let mut d = Dashboard::new();
    for ev in events(300) {
        let ev = match ev {
            TrainEvent::Step(s) if !s.skipped => TrainEvent::Step(StepStats {
                sft_loss: Some(s.loss),
                mixed_loss: Some(4.2 + 0.5 * (-(s.step as f64) / 200.0).exp()),
                loss: 0.8 * s.loss + 0.2 * 4.4,
                ..s
            }),
            other => other,
        };
        d.update(&ev);
    }
    let wide = draw(&d, 120, 40).to_string();
    assert!(wide.contains("raw txt"), "{wide}");
    insta::assert_snapshot!("mixing_raw_text_wide", draw(&d, 120, 40));
    insta::assert_snapshot!("mixing_raw_text_narrow", draw(&d, 80, 24));
}

/// A data-parallel run shows each device's tokens/s (latest step and run mean) in the
/// throughput panel.
#[test]
fn data_parallel_devices_wide() {
    let mut d = Dashboard::new();
    for ev in events(300) {
        let ev = match ev {
            TrainEvent::Step(s) => {
                let f = 1.0 + 0.05 * ((s.step as f64) * 0.3).sin();
                TrainEvent::Step(StepStats {
                    devices: vec![
                        manners_events::DeviceRate {
                            device: "cuda:0".into(),
                            tokens: 3_900,
                            tokens_per_sec: 2_100.0 * f,
                        },
                        manners_events::DeviceRate {
                            device: "cuda:1".into(),
                            tokens: 3_900,
                            tokens_per_sec: 2_000.0,
                        },
                    ],
                    ..s
                })
            }
            other => other,
        };
        d.update(&ev);
    }
    assert_eq!(d.devices().len(), 2);
    assert_eq!(d.devices()[1].mean().map(|m| m.round()), Some(2_000.0));
    let wide = draw(&d, 120, 40).to_string();
    assert!(wide.contains("cuda:0") && wide.contains("cuda:1"), "{wide}");
    assert!(wide.contains("2,000 now · avg 2,000"), "{wide}");
    insta::assert_snapshot!(draw(&d, 120, 40));
}

/// Eight devices in a two-row panel: the latest rates, packed several to a line, each device
/// by its place in the list.
#[test]
fn eight_devices_pack_into_the_throughput_panel() {
    let mut d = Dashboard::new();
    for ev in events(20) {
        let ev = match ev {
            TrainEvent::Step(s) => TrainEvent::Step(StepStats {
                devices: (0..8)
                    .map(|i| manners_events::DeviceRate {
                        device: format!("cuda:{i}"),
                        tokens: 1_000,
                        tokens_per_sec: 1_000.0 + 100.0 * i as f64,
                    })
                    .collect(),
                ..s
            }),
            other => other,
        };
        d.update(&ev);
    }
    let wide = draw(&d, 120, 40).to_string();
    for i in 0..8 {
        let want = format!("#{i} {}", manners_tui::fmt_si(1_000 + 100 * i));
        assert!(wide.contains(&want), "{want} missing:\n{wide}");
    }
}
