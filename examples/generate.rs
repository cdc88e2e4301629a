//! Load a model folder (Hugging Face GPT-2 layout or a manners `final/`) and stream a completion.
//!
//! ```sh
//! cargo run --release --example generate -- <model-dir> "The capital of France is"
//! ```

use std::io::Write;
use std::path::PathBuf;

use manners::{BackendKind, GenerationConfig, Sampling, generate, load_model_dir, select_device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "crates/manners-model/tests/fixtures/tiny-gpt2".into()),
    );
    let prompt = args
        .next()
        .unwrap_or_else(|| "It is a truth universally acknowledged".into());
    let device = select_device(BackendKind::Auto)?;
    eprintln!("backend: {}", device.description);
    let m = load_model_dir(&dir, &device.device)?;
    let ids = m.tokenizer.encode(&prompt)?;
    let cfg = GenerationConfig {
        max_new_tokens: 40,
        sampling: Sampling::Sample {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.95),
        },
        seed: 7,
        stop_token_ids: m.default_stop_ids(),
        ..Default::default()
    };
    print!("{prompt}");
    let out = generate(&m.model, &m.tokenizer, &ids, &cfg, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    })?;
    println!("\n[{} tokens, {:?}]", out.tokens.len(), out.stop);
    Ok(())
}
