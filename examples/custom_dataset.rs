//! Build conversations in code (no file format at all), encode them with a chat template, and
//! look at what the model will be trained on: which tokens are supervised, and the batches.
//!
//! ```sh
//! cargo run --release --example custom_dataset
//! ```

use manners::data::{
    BatchConfig, Conversation, Highlight, LengthPolicy, Loader, MaskMode, Message, debug_render,
    encode_dataset,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut tok = manners::Tokenizer::from_dir(std::path::Path::new("assets/gpt2-tokenizer"))?;
    let template = manners::chat_template(&tok, None, Some("chatml"))?;
    let needed = template.required_special_tokens();
    tok.add_special_tokens(&needed.iter().map(String::as_str).collect::<Vec<_>>());

    let convs: Vec<Conversation> = (1..=12)
        .map(|n| {
            Conversation::new(vec![
                Message::system("You are a calculator."),
                Message::user(format!("What is {n} times {n}?")),
                Message::assistant(format!("{}", n * n)),
                Message::user("And plus one?"),
                Message::assistant(format!("{}", n * n + 1)),
            ])
        })
        .collect();
    let (examples, report) = encode_dataset(
        &convs,
        &template,
        tok.hf(),
        MaskMode::Assistant,
        129,
        LengthPolicy::Truncate,
    )?;
    println!("{report}");
    // Supervised tokens in [[...]]: both assistant turns and their <|im_end|>.
    println!(
        "{}",
        debug_render(&examples[0], tok.hf(), Highlight::Brackets)?
    );

    let mut loader = Loader::new(
        examples,
        BatchConfig {
            batch_size: 2,
            seq_len: 128,
            pack: true,
            ..BatchConfig::default()
        },
    )?;
    let b = loader.next_batch()?;
    println!(
        "batch: {} rows x {} positions, {} supervised of {} tokens",
        b.batch, b.seq_len, b.n_supervised, b.n_tokens
    );
    Ok(())
}
