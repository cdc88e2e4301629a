//! Fine-tune a model from Rust code, watching the events.
//!
//! ```sh
//! cargo run --release --example train_from_code -- <model-dir> <data.jsonl>
//! ```
//! With no arguments it fine-tunes the tiny test model on a few generated conversations.

use std::path::PathBuf;

use manners::events::{Control, FnSink, TrainEvent};
use manners::train::{TrainConfig, train};
use manners::{BackendKind, GenerationConfig, generate, select_device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tmp = std::env::temp_dir().join("manners-example");
    let (model, data) = match args.as_slice() {
        [m, d] => (PathBuf::from(m), PathBuf::from(d)),
        _ => {
            std::fs::create_dir_all(&tmp)?;
            let data = tmp.join("chats.jsonl");
            let lines: Vec<String> = ["red", "green", "blue", "yellow"]
                .iter()
                .map(|c| {
                    format!(r#"{{"messages":[{{"role":"user","content":"Say {c}."}},{{"role":"assistant","content":"{c}"}}]}}"#)
                })
                .collect();
            std::fs::write(&data, lines.join("\n"))?;
            (
                PathBuf::from("crates/manners-model/tests/fixtures/tiny-gpt2"),
                data,
            )
        }
    };
    let cfg = TrainConfig {
        model: Some(model),
        data: vec![data],
        eval_fraction: 0.0,
        template: Some("chatml".into()),
        max_steps: Some(60),
        lr: 3e-3,
        max_len: 64,
        out_dir: tmp.join("runs"),
        name: Some(format!("example-{}", std::process::id())),
        ..TrainConfig::default()
    };
    let device = select_device(BackendKind::Auto)?;
    // Any closure is a sink: the dashboard, log lines and metrics.jsonl consume the same events.
    let mut sink = FnSink(|e: TrainEvent| match e {
        TrainEvent::Step(s) if s.step % 10 == 0 => {
            println!("step {:>3}  loss {:.4}", s.step, s.loss)
        }
        TrainEvent::Finished(s) => println!("finished: {} ({})", s.reason, s.run_dir),
        _ => {}
    });
    let out = train(cfg, &device, &mut sink, &Control::new())?;

    // The trained model is returned too, ready to generate with the training template.
    let template = out.template.expect("SFT runs have a template");
    let prompt = template.encode_prompt(
        &[manners::data::Message::user("Say blue.")],
        out.tokenizer.hf(),
    )?;
    let cfg = GenerationConfig {
        max_new_tokens: 8,
        stop_token_ids: template.stop_token_ids(out.tokenizer.hf()),
        ..Default::default()
    };
    let answer = generate(&out.model, &out.tokenizer, &prompt, &cfg, |_| {})?;
    println!("Say blue. -> {:?}", answer.text);
    Ok(())
}
