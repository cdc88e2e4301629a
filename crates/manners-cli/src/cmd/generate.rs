//! `manners generate`: one prompt in (raw text, or `--chat` as a user turn with the model's
//! template), streamed text out (or one JSON object with `--json`).

use std::io::Write;

use anyhow::Context;
use manners::data::{Message, Reply};

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
        let mut v = serde_json::json!({
            "prompt_ids": prompt,
            "ids": g.tokens,
            "text": g.text,
            "stop": format!("{:?}", g.stop),
        });
        if a.chat.is_some() {
            // The reply as a message: reasoning, content and parsed tool calls.
            let r = Reply::parse(&g.text);
            v["reply"] = serde_json::json!({
                "reasoning": r.reasoning,
                "content": r.content,
                "tool_calls": r.tool_calls.iter().map(|c| serde_json::json!({
                    "name": c.name,
                    "arguments": serde_json::from_str::<serde_json::Value>(c.arguments.as_str())
                        .unwrap_or_default(),
                })).collect::<Vec<_>>(),
            });
        }
        println!("{v}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{shown}")?;
    let mut io_err = None;
    // With --chat, text from the first `<tool_call>` on is held back and shown parsed.
    let chat = a.chat.is_some();
    let (mut acc, mut shown_len) = (String::new(), 0);
    let g = manners::generate(&m.model, &m.tokenizer, &prompt, &cfg, |piece| {
        acc.push_str(piece);
        let upto = if chat {
            Reply::printable_len(&acc)
        } else {
            acc.len()
        };
        if upto > shown_len
            && io_err.is_none()
            && let Err(e) = write!(out, "{}", &acc[shown_len..upto]).and_then(|_| out.flush())
        {
            io_err = Some(e);
        }
        shown_len = shown_len.max(upto);
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if chat {
        let calls = Reply::parse(&g.text).tool_calls;
        if calls.is_empty() {
            // Held back for nothing (markup that is no call): shown as written.
            write!(out, "{}", &acc[shown_len..])?;
        }
        for c in calls {
            write!(out, "\ncall {} {}", c.name, c.arguments)?;
        }
    }
    writeln!(out)?;
    eprintln!("[{} new tokens, stop: {:?}]", g.tokens.len(), g.stop);
    Ok(std::process::ExitCode::SUCCESS)
}
