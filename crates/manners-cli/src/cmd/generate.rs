//! `manners generate`: one prompt in (raw text, or `--chat` as a user turn with the model's
//! template), streamed text out (or one JSON object with `--json`).

use std::io::Write;

use anyhow::Context;
use manners::data::Message;

use crate::args::GenerateArgs;

pub fn run(a: GenerateArgs) -> anyhow::Result<std::process::ExitCode> {
    let dev = super::device(a.backend.backend, a.json)?;
    let m = manners::load_model_dir(&a.model, &dev.device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let mut stop_token_ids = if a.ignore_eos {
        vec![]
    } else {
        m.default_stop_ids()
    };
    let mut stop_strings = a.sampling.stop.clone();
    let (shown, prompt) = match (&a.chat, &a.prompt) {
        (Some(q), _) => {
            let t = manners::chat_template(&m.tokenizer, Some(&a.model), a.template.as_deref())?;
            t.check_renders_content()?;
            stop_token_ids.extend(t.stop_token_ids(m.tokenizer.hf()));
            stop_strings.extend(t.stop_strings());
            let ids = t.encode_prompt(&[Message::user(q.clone())], m.tokenizer.hf())?;
            (String::new(), ids)
        }
        (None, Some(p)) => (p.clone(), m.tokenizer.encode(p)?),
        (None, None) => anyhow::bail!("give --prompt TEXT or --chat QUESTION"),
    };
    // No silent truncation: a prompt and budget that do not fit the context are an error.
    let cfg = manners::GenerationConfig {
        max_new_tokens: a.sampling.max_new_tokens(m.model.n_positions()),
        sampling: a.sampling.sampling()?,
        seed: a.sampling.seed,
        stop_token_ids,
        stop_strings,
    };
    if a.json {
        let g = manners::generate(&m.model, &m.tokenizer, &prompt, &cfg, |_| {})?;
        let v = serde_json::json!({
            "prompt_ids": prompt,
            "ids": g.tokens,
            "text": g.text,
            "stop": format!("{:?}", g.stop),
        });
        println!("{v}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{shown}")?;
    let mut io_err = None;
    let g = manners::generate(&m.model, &m.tokenizer, &prompt, &cfg, |piece| {
        if io_err.is_none()
            && let Err(e) = write!(out, "{piece}").and_then(|_| out.flush())
        {
            io_err = Some(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    writeln!(out)?;
    eprintln!("[{} new tokens, stop: {:?}]", g.tokens.len(), g.stop);
    Ok(std::process::ExitCode::SUCCESS)
}
