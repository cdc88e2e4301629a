//! `manners chat`: an interactive conversation with a model folder, streaming tokens, with the
//! template the model was trained with. Lines starting with `/` are commands (/reset, /exit).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use manners::data::{Message, Role};

use crate::args::ChatArgs;

pub fn run(a: ChatArgs) -> anyhow::Result<ExitCode> {
    let dev = super::device(a.backend.backend, false)?;
    let m = manners::load_model_dir(&a.model, &dev.device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let template = manners::chat_template(&m.tokenizer, Some(&a.model), a.template.as_deref())?;
    template.check_renders_content()?;
    let interactive = std::io::stdin().is_terminal();
    let ctx = m.model.n_positions();
    let max_new = a.sampling.max_new_tokens(ctx);
    if max_new >= ctx {
        anyhow::bail!(
            "--max-new-tokens {max_new} leaves no room for the conversation in the model's \
             {ctx}-token context (at most {})",
            ctx - 1
        );
    }
    let stop_ids = [
        template.stop_token_ids(m.tokenizer.hf()),
        m.default_stop_ids(),
    ]
    .concat();
    let stop_strings = [template.stop_strings(), a.sampling.stop.clone()].concat();
    let cfg = manners::GenerationConfig {
        sampling: a.sampling.sampling()?,
        seed: a.sampling.seed,
        ..manners::GenerationConfig::stopping_at(max_new, ctx, stop_ids, stop_strings)
    };
    let mut history: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::system(s.clone()))
        .collect();
    if interactive {
        eprintln!(
            "chatting with {} (template {}); /reset clears, /exit quits",
            a.model.display(),
            template.name()
        );
    } else {
        eprintln!("template: {}", template.name());
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    loop {
        if interactive {
            write!(out, "\n> ")?;
            out.flush()?;
        }
        // Bytes, then lossy UTF-8: one bad byte must not end the session.
        let mut raw = Vec::new();
        if stdin.lock().read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&raw);
        if matches!(line, std::borrow::Cow::Owned(_)) {
            eprintln!("[the input was not valid UTF-8; invalid bytes were replaced by \u{FFFD}]");
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.retain(|m| m.role == Role::System);
                continue;
            }
            _ => {}
        }
        history.push(Message::user(line));
        // The whole conversation when it fits (the answer budget shrinking down to a quarter
        // of the context), else without its oldest turns: whole turns, never a cut through the
        // template's markers.
        let mut dropped = 0;
        let (ids, turn) = loop {
            let ids = template.encode_prompt(&history, m.tokenizer.hf())?;
            let turn = cfg.for_prompt(ids.len(), ctx);
            if ids.len() + turn.max_new_tokens <= ctx {
                break (ids, turn);
            }
            let Some(first) = history.iter().position(|m| m.role != Role::System) else {
                unreachable!("the history holds the new user message")
            };
            if first + 1 >= history.len() {
                break (Vec::new(), turn);
            }
            history.remove(first);
            if history
                .get(first)
                .is_some_and(|m| m.role == Role::Assistant)
            {
                history.remove(first);
            }
            dropped += 1;
        };
        if ids.is_empty() {
            eprintln!(
                "[this message does not fit the model's {ctx}-token context with room for an \
                 answer; write a shorter one]"
            );
            history.pop();
            continue;
        }
        if dropped > 0 {
            eprintln!("[the {dropped} oldest turns were dropped to fit the {ctx}-token context]");
        }
        let g = manners::generate(&m.model, &m.tokenizer, &ids, &turn, |piece| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        })?;
        writeln!(out)?;
        if !g.stopped_cleanly() {
            eprintln!("[hit the {}-token budget]", turn.max_new_tokens);
        }
        history.push(Message::new(Role::Assistant, g.text.trim().to_string()));
    }
    Ok(ExitCode::SUCCESS)
}
