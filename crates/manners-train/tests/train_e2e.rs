//! End to end on the tiny fixture model: overfitting a handful of conversations, exact
//! resume, and the run folder.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use manners_data::{Message, Role};
use manners_events::{Control, EventSink, FnSink, TrainEvent, read_events};
use manners_model::{
    BackendKind, DeviceChoice, GenerationConfig, StopReason, generate, load_model_dir,
    select_device,
};
use manners_report::ReportSink;
use manners_train::{TrainConfig, resume, train};

/// Burn's device RNG (dropout masks) is one per process: runs in parallel test threads would
/// draw from each other's stream, so the tests that train here take turns.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|p| p.into_inner())
}

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manners-model/tests/fixtures/tiny-gpt2")
}

fn flex() -> DeviceChoice {
    select_device(BackendKind::Flex).unwrap()
}

const QA: &[(&str, &str)] = &[
    ("What is the capital of Peru?", "Lima."),
    ("What is the capital of France?", "Paris."),
    ("Who wrote Emma?", "Jane Austen."),
    ("What is two plus two?", "Four."),
    ("Name a colour.", "Blue."),
    ("What is the chemical symbol of gold?", "Au."),
    ("Say hello.", "Hello!"),
];

fn write_data(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for (q, a) in QA {
        let mut msgs = vec![
            serde_json::json!({"role": "user", "content": q}),
            serde_json::json!({"role": "assistant", "content": a}),
        ];
        if *q == "Say hello." {
            msgs.insert(
                0,
                serde_json::json!({"role": "system", "content": "Be brief."}),
            );
        }
        let v = serde_json::json!({ "messages": msgs });
        lines.push(v.to_string());
    }
    // One two-turn conversation: both assistant turns are trained.
    let v = serde_json::json!({"messages": [
        {"role": "user", "content": "Italy?"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "Spain?"},
        {"role": "assistant", "content": "Madrid."}
    ]});
    lines.push(v.to_string());
    let p = dir.join("data.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn base_config(dir: &Path) -> TrainConfig {
    TrainConfig {
        model: Some(fixture_model()),
        data: vec![write_data(dir)],
        eval_fraction: 0.0,
        template: Some("chatml".into()),
        batch_size: 8,
        lr: 3e-3,
        warmup_steps: Some(10),
        max_len: 64,
        backend: BackendKind::Flex,
        out_dir: dir.to_path_buf(),
        seed: 3,
        ..Default::default()
    }
}

#[test]
fn overfits_eight_conversations_and_answers_them() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        max_steps: Some(300),
        name: Some("overfit".into()),
        ..base_config(tmp.path())
    };
    // The events, and the run report written from them (as `manners train` wires it).
    let mut events = Vec::new();
    let mut report = ReportSink::new();
    let mut sink = FnSink(|e: TrainEvent| {
        report.send(e.clone());
        events.push(e);
    });
    let out = train(cfg, flex(), &mut sink, &Control::new()).unwrap();
    let losses: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(s.loss),
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 300);
    let truncated = events
        .iter()
        .any(|e| matches!(e, TrainEvent::Warning { message, .. } if message.contains("truncated")));
    assert!(!truncated, "the test data must fit max_len");
    let tail = losses[290..].iter().sum::<f64>() / 10.0;
    assert!(
        tail < 0.05,
        "training loss did not fall below 0.05: {tail} (first {})",
        losses[0]
    );

    // The exported folder answers every question with the trained answer, then stops at <|im_end|>.
    let final_dir = out.final_dir.unwrap();
    let dev = flex().device;
    let m = load_model_dir(&final_dir, &dev).unwrap();
    let template = manners_data::saved_template(&final_dir, None, &Default::default())
        .unwrap()
        .expect("template saved");
    let im_end = m.tokenizer.token_id("<|im_end|>").unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: 16,
        stop_token_ids: template.stop_token_ids(m.tokenizer.hf()),
        ..Default::default()
    };
    for (q, a) in QA {
        let mut msgs = vec![Message::user(*q)];
        if *q == "Say hello." {
            msgs.insert(0, Message::system("Be brief."));
        }
        let prompt = template.encode_prompt(&msgs, m.tokenizer.hf()).unwrap();
        let g = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap();
        assert_eq!(g.text, *a, "answer to {q:?}");
        assert_eq!(
            g.stop,
            StopReason::StopToken(im_end),
            "{q:?} did not stop at <|im_end|>"
        );
    }
    // The second assistant turn of the multi-turn conversation was trained too.
    let msgs = vec![
        Message::user("Italy?"),
        Message::new(Role::Assistant, "Rome."),
        Message::user("Spain?"),
    ];
    let prompt = template.encode_prompt(&msgs, m.tokenizer.hf()).unwrap();
    let g = generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {}).unwrap();
    assert_eq!(g.text, "Madrid.");

    // The run folder.
    for f in [
        "run.toml",
        "metrics.jsonl",
        "samples.jsonl",
        "report.md",
        "loss.png",
        "final/model.safetensors",
        "final/manners_template.json",
    ] {
        assert!(out.run_dir.join(f).exists(), "{f} missing");
    }
    // run.toml reproduces the run: it parses back to the resolved config.
    let saved = TrainConfig::from_toml_file(&out.run_dir.join("run.toml")).unwrap();
    assert_eq!(saved.max_steps, Some(300));
    assert!(
        saved.eval_every > 0 && saved.save_every > 0,
        "intervals are resolved"
    );
}

fn step_losses(events: &[TrainEvent]) -> Vec<(u64, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some((s.step, s.loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn resume_continues_exactly() {
    resume_is_exact(0.0);
}

/// Dropout masks come from the device RNG, which a resumed run must not re-seed differently
/// (before each step was seeded from (seed, step), resuming at dropout 0.1 moved weights by
/// ~1e-3).
#[test]
fn resume_continues_exactly_with_dropout() {
    resume_is_exact(0.1);
}

fn resume_is_exact(dropout: f64) {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let base = TrainConfig {
        max_steps: Some(100),
        save_every: 30,
        lr: 1e-3,
        dropout,
        ..base_config(tmp.path())
    };

    // 100 steps in one go.
    let mut full_events = Vec::new();
    let full = train(
        TrainConfig {
            name: Some("full".into()),
            ..base.clone()
        },
        flex(),
        &mut full_events,
        &Control::new(),
    )
    .unwrap();

    // 50 steps, stopped (as `q` does), then resumed to 100.
    let control = Control::new();
    let stopper = control.clone();
    let mut first = Vec::new();
    let mut sink = FnSink(|e: TrainEvent| {
        if matches!(&e, TrainEvent::Step(s) if s.step == 50) {
            stopper.request_stop();
        }
        first.push(e);
    });
    let part = train(
        TrainConfig {
            name: Some("split".into()),
            ..base
        },
        flex(),
        &mut sink,
        &control,
    )
    .unwrap();
    assert!(
        part.final_dir.is_none(),
        "a stopped run exports no final model"
    );
    assert_eq!(part.summary.steps, 50);
    assert_eq!(part.summary.reason, "stopped by user");
    // A setting that shaped the trained weights cannot change on resume (it was silently
    // ignored before); the refusal names it, old and new.
    let err = resume(
        &part.run_dir,
        flex(),
        |c| {
            c.lr = 1e-4;
            c.batch_size = 4;
        },
        &mut Vec::new(),
        &Control::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("lr: 0.001 -> 0.0001") && err.contains("batch_size: 8 -> 4"),
        "{err}"
    );
    // One it may change is applied and reported.
    let mut second = Vec::new();
    let resumed = resume(
        &part.run_dir,
        flex(),
        |c| c.log_every = 7,
        &mut second,
        &Control::new(),
    )
    .unwrap();
    assert_eq!(resumed.summary.steps, 100);
    assert!(
        second
            .iter()
            .any(|e| matches!(e, TrainEvent::Warning { message, .. }
            if message.contains("log_every: 10 -> 7"))),
        "the change is reported"
    );

    let want = step_losses(&full_events);
    let got: Vec<(u64, f64)> = step_losses(&first)
        .into_iter()
        .chain(step_losses(&second))
        .collect();
    assert_eq!(got.len(), 100);
    for ((s1, l1), (s2, l2)) in want.iter().zip(&got) {
        assert_eq!(s1, s2);
        assert_eq!(l1.to_bits(), l2.to_bits(), "step {s1}: {l1} vs {l2}");
    }
    let a = std::fs::read(full.run_dir.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(resumed.run_dir.join("final/model.safetensors")).unwrap();
    assert!(a == b, "final weights differ after resume");

    // The resumed run's log reads as one run: every step once, in order.
    let steps: Vec<u64> = read_events(&resumed.run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(s.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=100).collect::<Vec<_>>());
    // Only the newest checkpoints are kept.
    assert_eq!(manners_train::list_checkpoints(&resumed.run_dir).len(), 2);
}

/// Resume takes the newest intact checkpoint: a damaged newest one is skipped with a warning
/// (it was a dead end before), and a run killed before its first checkpoint starts again from
/// step 0 instead of being stuck ("no complete checkpoint" / "already holds a run"). Both end
/// bit-identical to a run that was never interrupted.
#[test]
fn resume_skips_damaged_checkpoints_and_restarts_without_one() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let base = TrainConfig {
        max_steps: Some(60),
        save_every: 20,
        lr: 1e-3,
        ..base_config(tmp.path())
    };
    let full = train(
        TrainConfig {
            name: Some("full".into()),
            ..base.clone()
        },
        flex(),
        &mut Vec::new(),
        &Control::new(),
    )
    .unwrap();
    let want = std::fs::read(full.run_dir.join("final/model.safetensors")).unwrap();
    let stopped_at = |name: &str, step: u64| {
        let control = Control::new();
        let stopper = control.clone();
        let mut sink = FnSink(|e: TrainEvent| {
            if matches!(&e, TrainEvent::Step(s) if s.step == step) {
                stopper.request_stop();
            }
        });
        train(
            TrainConfig {
                name: Some(name.into()),
                ..base.clone()
            },
            flex(),
            &mut sink,
            &control,
        )
        .unwrap()
        .run_dir
    };
    let warnings = |events: &[TrainEvent]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Warning { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    };

    // Checkpoints at 40 and 45 (the stop); the newest gets a flipped byte.
    let dir = stopped_at("damaged", 45);
    let newest = dir.join("checkpoints/step-00000045/model.bpk");
    let mut bytes = std::fs::read(&newest).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    std::fs::write(&newest, bytes).unwrap();
    let mut events = Vec::new();
    let out = resume(&dir, flex(), |_| {}, &mut events, &Control::new()).unwrap();
    let w = warnings(&events);
    assert!(
        w.iter()
            .any(|m| m.contains("skipped a damaged checkpoint") && m.contains("model.bpk")),
        "{w:?}"
    );
    let first = events.iter().find_map(|e| match e {
        TrainEvent::Step(s) => Some(s.step),
        _ => None,
    });
    assert_eq!(first, Some(41), "continued from step 40");
    assert!(std::fs::read(out.run_dir.join("final/model.safetensors")).unwrap() == want);

    // Killed while writing its first checkpoint: only a temporary folder is left.
    let dir = stopped_at("first", 3);
    let ckpts = dir.join("checkpoints");
    std::fs::remove_dir_all(&ckpts).unwrap();
    std::fs::create_dir_all(ckpts.join(".step-00000003.tmp-999999")).unwrap();
    let mut events = Vec::new();
    let out = resume(&dir, flex(), |_| {}, &mut events, &Control::new()).unwrap();
    assert!(
        warnings(&events)
            .iter()
            .any(|m| m.contains("starts again from step 0")),
        "{:?}",
        warnings(&events)
    );
    assert_eq!(out.summary.steps, 60);
    assert!(std::fs::read(out.run_dir.join("final/model.safetensors")).unwrap() == want);
    let steps: Vec<u64> = read_events(&out.run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(s.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=60).collect::<Vec<_>>(), "one clean log");
}

/// A loss that explodes but stays finite stops the run (it used to "complete" with exit 0
/// after pruning had deleted every good checkpoint), and the checkpoint with the best held-out
/// loss survives pruning.
#[test]
fn an_exploding_loss_stops_the_run_and_keeps_the_best_checkpoint() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // lr climbs through warmup from 1e-3 to far too high: first it learns, then it explodes.
    let counting =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/reference/counting.jsonl");
    let cfg = TrainConfig {
        name: Some("boom".into()),
        data: vec![counting],
        max_steps: Some(300),
        lr: 1.0,
        warmup_steps: Some(1000),
        eval_fraction: 0.05,
        eval_every: 5,
        save_every: 10,
        keep_checkpoints: 1,
        ..base_config(tmp.path())
    };
    let mut events = Vec::new();
    let err = train(cfg, flex(), &mut events, &Control::new())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, manners_train::TrainError::LossDiverged { .. }),
        "{msg}"
    );
    let evals: Vec<(u64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Eval(x) => Some((x.step, x.loss)),
            _ => None,
        })
        .collect();
    let saved: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Checkpoint(c) => Some(c.step),
            _ => None,
        })
        .collect();
    // The best evaluation among the checkpointed steps is the one kept, besides the newest.
    let (best_step, best_loss) = evals
        .iter()
        .filter(|(s, _)| saved.contains(s))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .copied()
        .unwrap();
    let kept: Vec<u64> = manners_train::list_checkpoints(&tmp.path().join("boom"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(kept.contains(&best_step), "kept {kept:?}, best {best_step}");
    assert!(
        msg.contains(&format!("step-{best_step:08}")) && msg.contains(&format!("{best_loss:.4}")),
        "{msg}"
    );
    assert!(matches!(events.last(), Some(TrainEvent::Failed { .. })));
    assert!(
        !events.iter().any(|e| matches!(e, TrainEvent::Finished(_))),
        "a diverged run does not finish"
    );
}

/// At an absurd learning rate the first update leaves finite but exploded weights: no
/// checkpoint may hold them (one used to be kept, and resuming it failed at once).
#[test]
fn no_checkpoint_holds_weights_from_an_exploded_update() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        name: Some("nan".into()),
        max_steps: Some(20),
        lr: 1e30,
        warmup_steps: Some(0),
        save_every: 1,
        max_bad_steps: 3,
        ..base_config(tmp.path())
    };
    let mut events = Vec::new();
    let err = train(cfg, flex(), &mut events, &Control::new())
        .err()
        .unwrap();
    assert!(
        matches!(err, manners_train::TrainError::Diverged { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no good checkpoint"), "{err}");
    // max_bad_steps = 3: the third non-finite step in a row ends the run.
    assert!(err.to_string().contains("3 steps in a row"), "{err}");
    assert!(manners_train::list_checkpoints(&tmp.path().join("nan")).is_empty());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TrainEvent::Warning { message, .. }
        if message.contains("checkpoint at step 1 not written")))
    );
}

#[test]
fn refuses_to_overwrite_a_run_and_names_bad_config() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        max_steps: Some(2),
        name: Some("once".into()),
        ..base_config(tmp.path())
    };
    train(cfg.clone(), flex(), &mut Vec::new(), &Control::new()).unwrap();
    let err = train(cfg.clone(), flex(), &mut Vec::new(), &Control::new())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");
    // Another process writing the folder (its lock held) keeps a second one out, before it
    // reads or writes anything there (two runs could interleave one metrics.jsonl before).
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let lock = std::fs::File::create(busy.join(".lock")).unwrap();
    lock.lock().unwrap();
    let err = train(
        TrainConfig {
            name: Some("busy".into()),
            ..cfg.clone()
        },
        flex(),
        &mut Vec::new(),
        &Control::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("in use"), "{err}");
    assert!(!busy.join("run.toml").exists());
    drop(lock);
    let err = train(
        TrainConfig {
            max_len: 500,
            name: Some("x".into()),
            ..cfg
        },
        flex(),
        &mut Vec::new(),
        &Control::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("max_len"), "{err}");
}

/// Early stopping: at a learning rate too small to move an f32 weight, the held-out loss never
/// improves on the first evaluation, so patience 2 ends the run at the third.
#[test]
fn early_stopping_ends_a_run_whose_heldout_loss_stops_improving() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let base = base_config(tmp.path());
    let cfg = TrainConfig {
        name: Some("early".into()),
        max_steps: Some(50),
        lr: 1e-12,
        eval_every: 1,
        eval_data: base.data.clone(),
        early_stopping_patience: Some(2),
        ..base
    };
    let mut events = Vec::new();
    let out = train(cfg, flex(), &mut events, &Control::new()).unwrap();
    let steps = events
        .iter()
        .filter(|e| matches!(e, TrainEvent::Step(_)))
        .count();
    assert_eq!(steps, 3);
    assert_eq!(out.summary.reason, "early stopping");
    assert!(out.final_dir.is_some(), "an early-stopped run is finished");
}

/// Raw text mixed into the SFT data inside the trainer: `mix_fraction` 0.5 of the training
/// examples are raw-text pieces (8 SFT conversations + 8 pieces), reported in the run's facts.
#[test]
fn raw_text_is_mixed_into_the_training_examples() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("books.jsonl");
    let lines: Vec<String> = (0..20)
        .map(|i| {
            serde_json::json!({"text": format!("Chapter {i}. It was a quiet morning.")}).to_string()
        })
        .collect();
    std::fs::write(&text, lines.join("\n")).unwrap();
    let cfg = TrainConfig {
        name: Some("mix".into()),
        max_steps: Some(2),
        mix_text: vec![text],
        mix_fraction: 0.5,
        ..base_config(tmp.path())
    };
    let mut events = Vec::new();
    train(cfg, flex(), &mut events, &Control::new()).unwrap();
    let info = events
        .iter()
        .find_map(|e| match e {
            TrainEvent::Started(i) => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(info.train_examples, 16);
    let mix = info
        .facts
        .iter()
        .find(|(k, _)| k == "mix")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(mix.contains("mixed 8 raw-text pieces"), "{mix}");
    // Every step reports the conversations' loss; steps with raw text also report its loss.
    let steps: Vec<&manners_events::StepStats> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(steps.iter().all(|s| s.sft_loss.is_some()));
    assert!(steps.iter().any(|s| s.mixed_loss.is_some()));
}

/// `dedup` drops conversations equal up to case, Unicode form and whitespace (keeping the
/// first, naming it); the quality filter drops answers outside its bounds; both are counted in
/// the run's facts, and a filter that leaves nothing is an error that says so.
#[test]
fn dedup_and_quality_filter_drop_and_report_conversations() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    // (base_config rewrites data.jsonl: the copies go to their own file.)
    let mut text = std::fs::read_to_string(write_data(tmp.path())).unwrap();
    let data = tmp.path().join("with-copies.jsonl");
    // Two copies of line 1 ("What is the capital of Peru?" / "Lima."), re-cased and re-spaced.
    for copy in [
        r#"{"messages": [{"role": "user", "content": "what is the  capital of PERU?"}, {"role": "assistant", "content": "Lima."}]}"#,
        r#"{"messages": [{"role": "user", "content": " What is the capital of Peru? "}, {"role": "assistant", "content": "lima."}]}"#,
    ] {
        text.push('\n');
        text.push_str(copy);
    }
    std::fs::write(&data, text).unwrap();
    let started = |cfg: TrainConfig| {
        let mut events = Vec::new();
        let r = train(cfg, flex(), &mut events, &Control::new());
        let info = events.iter().find_map(|e| match e {
            TrainEvent::Started(i) => Some(i.clone()),
            _ => None,
        });
        (r, info)
    };
    let base = TrainConfig {
        data: vec![data.clone()],
        max_steps: Some(1),
        ..base_config(tmp.path())
    };
    let (r, info) = started(TrainConfig {
        name: Some("all".into()),
        ..base.clone()
    });
    r.unwrap();
    let info = info.unwrap();
    assert_eq!(info.train_examples, 10, "{:?}", info.facts);
    let (r, info) = started(TrainConfig {
        name: Some("dedup".into()),
        dedup: true,
        ..base.clone()
    });
    r.unwrap();
    let info = info.unwrap();
    assert_eq!(info.train_examples, 8);
    let fact = info
        .facts
        .iter()
        .find(|(k, _)| k == "filter: duplicates")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        fact.contains("removed (duplicate): 2")
            && fact.contains("duplicate of ")
            && fact.contains("with-copies.jsonl:1"),
        "{fact}"
    );
    // Answers of at least 4 tokens: "Blue.", "Au.", "Lima." (x3) are shorter in this tokenizer.
    let (r, info) = started(TrainConfig {
        name: Some("quality".into()),
        min_response_tokens: 4,
        ..base.clone()
    });
    r.unwrap();
    let info = info.unwrap();
    assert!(info.train_examples < 10, "{}", info.train_examples);
    assert!(
        info.facts
            .iter()
            .any(|(k, v)| k == "filter: quality" && v.contains("response too short")),
        "{:?}",
        info.facts
    );
    // Nothing left: the error says why.
    let (r, _) = started(TrainConfig {
        name: Some("none".into()),
        min_response_tokens: 1000,
        ..base
    });
    let err = r.err().unwrap().to_string();
    assert!(err.contains("response too short"), "{err}");
}

/// A data-parallel run (two devices; here flex twice, two threads on one device, so the
/// comparison is exact) gives the losses and the final weights of a one-device run with the
/// same global batch, reports each device's throughput, and resumes on one device as if it
/// had never been split. Too few micro-batches for the devices is a clear error.
#[test]
fn data_parallel_runs_equal_one_device_and_resume_on_another_count() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let base = TrainConfig {
        max_steps: Some(12),
        save_every: 6,
        batch_size: 4,
        grad_accum: 2,
        lr: 1e-3,
        ..base_config(tmp.path())
    };
    let pair = manners_model::DeviceSet {
        devices: vec![flex(), flex()],
        reduce: manners_model::Reduce::Auto,
    };

    let mut one_events = Vec::new();
    let one = train(
        TrainConfig {
            name: Some("one".into()),
            ..base.clone()
        },
        flex(),
        &mut one_events,
        &Control::new(),
    )
    .unwrap();

    let control = Control::new();
    let stopper = control.clone();
    let mut first = Vec::new();
    let mut sink = FnSink(|e: TrainEvent| {
        if matches!(&e, TrainEvent::Step(s) if s.step == 6) {
            stopper.request_stop();
        }
        first.push(e);
    });
    let part = train(
        TrainConfig {
            name: Some("two".into()),
            ..base.clone()
        },
        pair.clone(),
        &mut sink,
        &control,
    )
    .unwrap();
    assert_eq!(part.summary.steps, 6);
    let mut second = Vec::new();
    let resumed = resume(&part.run_dir, flex(), |_| {}, &mut second, &Control::new()).unwrap();
    assert_eq!(resumed.summary.steps, 12);

    let want = step_losses(&one_events);
    let got: Vec<(u64, f64)> = step_losses(&first)
        .into_iter()
        .chain(step_losses(&second))
        .collect();
    assert_eq!(want, got);
    let a = std::fs::read(one.run_dir.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(resumed.run_dir.join("final/model.safetensors")).unwrap();
    assert!(a == b, "final weights differ");

    // Per-device throughput on the two-device steps, none on one device.
    let rates: Vec<&Vec<manners_events::DeviceRate>> = first
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(&s.devices),
            _ => None,
        })
        .collect();
    assert_eq!(rates.len(), 6);
    for (r, e) in rates.iter().zip(first.iter().filter_map(|e| match e {
        TrainEvent::Step(s) => Some(s),
        _ => None,
    })) {
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|d| d.tokens > 0 && d.tokens_per_sec > 0.0));
        assert_eq!(r.iter().map(|d| d.tokens).sum::<u64>(), e.tokens);
    }
    assert!(step_devices_empty(&one_events));
    let started = first.iter().find_map(|e| match e {
        TrainEvent::Started(i) => Some(i.clone()),
        _ => None,
    });
    let info = started.unwrap();
    assert!(info.backend.contains(" + "), "{}", info.backend);
    assert!(
        info.facts
            .iter()
            .any(|(k, v)| k == "devices" && v.contains("2 data-parallel")),
        "{:?}",
        info.facts
    );

    // Two devices need at least two micro-batches per step.
    let err = train(
        TrainConfig {
            name: Some("too-few".into()),
            grad_accum: 1,
            ..base
        },
        pair,
        &mut Vec::new(),
        &Control::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("2 devices but grad_accum 1"), "{err}");
}

fn step_devices_empty(events: &[TrainEvent]) -> bool {
    events.iter().all(|e| match e {
        TrainEvent::Step(s) => s.devices.is_empty(),
        _ => true,
    })
}

/// On a GPU adapter, a weight larger than one buffer may be is a clear error before the model
/// is made or the run folder written (wgpu's own is a validation panic on every thread at the
/// first kernel that binds it). The model: one layer whose MLP projection (`[e, 4e]`) is just
/// over this adapter's limit, whatever the limit (lavapipe's is 128 MiB), so nothing is ever
/// allocated at that size.
#[test]
fn a_gpu_whose_buffers_are_too_small_is_told_before_the_run_starts() {
    let Some(wgpu) = manners_model::wgpu_for_tests() else {
        return;
    };
    let limit = manners_model::BufferLimit::of(&wgpu.device).expect("a wgpu device has a limit");
    // The smallest multiple of 4 with 4 * e * 4e bytes over the limit.
    let e = ((limit.bytes as f64 / 16.0).sqrt() as usize + 1).next_multiple_of(4);
    assert!((16 * e * e) as u64 > limit.bytes);
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        model: None,
        init: Some(manners_train::InitConfig {
            n_layer: 1,
            n_head: 4,
            n_embd: e,
            n_positions: 64,
        }),
        tokenizer: Some(fixture_model()),
        backend: BackendKind::Wgpu,
        name: Some("too-big".into()),
        ..base_config(tmp.path())
    };
    let err = train(cfg, wgpu, &mut Vec::new(), &Control::new())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&format!("an MLP projection of gpt2 1L/{e}d/4h"))
            && err.contains(&format!("([{e}, {}], f32) needs one buffer of", 4 * e))
            && err.contains(&format!("{} binds at most", limit.device)),
        "{err}"
    );
    assert!(!tmp.path().join("too-big").exists(), "no run folder");
}

/// A batch's logits (`[supervised, vocab]`) and attention scores (`[rows, heads, t, t]`) are
/// checked against the limit by hand-counted sizes: each passes at its exact size in bytes and
/// fails one value under it, naming the batch; no limit (the CPU) passes anything.
#[test]
fn a_batch_too_large_for_a_gpu_buffer_names_its_logits_or_scores() {
    use manners_model::BufferLimit;
    let shape = (1000, 4); // vocabulary, heads
    let batch = manners_data::HostBatch {
        batch: 3,
        seq_len: 50,
        n_supervised: 70,
        ..Default::default()
    };
    let at = |bytes: u64| BufferLimit {
        bytes,
        device: "a small adapter".into(),
    };
    let check = |limit: Option<&BufferLimit>| {
        manners_train::check_batch(limit, shape, &batch, &|| "batch 7".into())
            .map_err(|e| e.to_string())
    };
    let (logits, scores) = (70 * 1000 * 4, 3 * 4 * 50 * 50 * 4); // 280,000 and 120,000 bytes
    assert!(check(None).is_ok());
    assert!(check(Some(&at(logits))).is_ok());
    let err = check(Some(&at(logits - 1))).unwrap_err();
    assert!(
        err.starts_with("the logits of batch 7 ([70, 1000], f32)") && err.contains("batch_size"),
        "{err}"
    );
    let few = manners_data::HostBatch {
        n_supervised: 1,
        ..batch.clone()
    };
    let check_few =
        |bytes| manners_train::check_batch(Some(&at(bytes)), shape, &few, &|| "batch 7".into());
    assert!(check_few(scores).is_ok());
    let err = check_few(scores - 1).unwrap_err().to_string();
    assert!(
        err.starts_with("the attention scores of batch 7 ([3, 4, 50, 50], f32)"),
        "{err}"
    );
}
