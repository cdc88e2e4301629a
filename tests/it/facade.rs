//! What an embedder does: train from code with an event closure, then generate with the
//! returned model and the training template; pretrain from scratch; load the run's `final/`.

use std::path::PathBuf;

use manners::data::Message;
use manners::events::{Control, FnSink, RunKind, TrainEvent};
use manners::train::{InitConfig, TrainConfig, train};
use manners::{BackendKind, GenerationConfig, generate, load_model_dir, select_device};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/manners-model/tests/fixtures/tiny-gpt2")
}

#[test]
fn train_from_code_then_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("chats.jsonl");
    let lines: Vec<String> = ["red", "green", "blue", "pink"]
        .iter()
        .map(|c| serde_json::json!({"messages": [{"role": "user", "content": format!("Say {c}.")}, {"role": "assistant", "content": c}]}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let cfg = TrainConfig {
        model: Some(fixture()),
        data: vec![data],
        eval_fraction: 0.0,
        template: Some("chatml".into()),
        max_steps: Some(80),
        grad_accum: 2,
        batch_size: 2,
        lr: 3e-3,
        max_len: 64,
        out_dir: tmp.path().to_path_buf(),
        name: Some("embed".into()),
        backend: BackendKind::Flex,
        ..TrainConfig::default()
    };
    let device = select_device(BackendKind::Flex).unwrap();
    let mut losses = Vec::new();
    let mut sink = FnSink(|e: TrainEvent| {
        if let TrainEvent::Step(s) = e {
            losses.push(s.loss);
        }
    });
    let out = train(cfg, &device, &mut sink, &Control::new()).unwrap();
    assert_eq!(losses.len(), 80);
    assert!(
        losses[79] < losses[0] / 5.0,
        "{} -> {}",
        losses[0],
        losses[79]
    );

    let t = out.template.unwrap();
    let prompt = t
        .encode_prompt(&[Message::user("Say green.")], out.tokenizer.hf())
        .unwrap();
    let gcfg = GenerationConfig {
        max_new_tokens: 6,
        stop_token_ids: t.stop_token_ids(out.tokenizer.hf()),
        ..Default::default()
    };
    let g = generate(&out.model, &out.tokenizer, &prompt, &gcfg, |_| {}).unwrap();
    assert_eq!(g.text, "green");
    // The saved folder gives the same answer.
    let m = load_model_dir(&out.final_dir.unwrap(), &device.device).unwrap();
    let g2 = generate(&m.model, &m.tokenizer, &prompt, &gcfg, |_| {}).unwrap();
    assert_eq!(g2.tokens, g.tokens);
}

#[test]
fn pretrain_from_scratch_learns_raw_text() {
    let tmp = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..60)
        .map(|i| format!("The capital of Peru is Lima. Lima is in Peru. Line {i}."))
        .collect();
    let tok = manners::Tokenizer::train_byte_level_bpe(
        &texts,
        300,
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        2,
    )
    .unwrap();
    let tok_dir = tmp.path().join("tok");
    std::fs::create_dir_all(&tok_dir).unwrap();
    tok.save_dir(&tok_dir, 32).unwrap();
    let data = tmp.path().join("text.jsonl");
    std::fs::write(
        &data,
        texts
            .iter()
            .map(|t| serde_json::json!({"text": t}).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let cfg = TrainConfig {
        kind: RunKind::Pretrain,
        init: Some(InitConfig {
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
            n_positions: 32,
        }),
        tokenizer: Some(tok_dir),
        data: vec![data],
        eval_fraction: 0.1,
        max_len: 33,
        batch_size: 4,
        lr: 3e-3,
        max_steps: Some(120),
        out_dir: tmp.path().to_path_buf(),
        name: Some("pt".into()),
        backend: BackendKind::Flex,
        ..TrainConfig::default()
    };
    let mut evals = Vec::new();
    let mut sink = FnSink(|e: TrainEvent| {
        if let TrainEvent::Eval(s) = e {
            evals.push(s.loss);
        }
    });
    let out = train(
        cfg,
        select_device(BackendKind::Flex).unwrap(),
        &mut sink,
        &Control::new(),
    )
    .unwrap();
    assert!(
        evals.len() >= 2 && evals.last().unwrap() < &(evals[0] * 0.5),
        "{evals:?}"
    );
    let m = load_model_dir(
        &out.final_dir.unwrap(),
        &select_device(BackendKind::Flex).unwrap().device,
    )
    .unwrap();
    assert_eq!(
        m.tokenizer.token_id("<|im_end|>"),
        Some(2),
        "chat tokens are reserved in the vocabulary"
    );
}
