//! `manners chat`: an interactive conversation with a model folder, streaming tokens, with the
//! template the model was trained with. Lines starting with `/` are commands (/reset, /exit,
//! /tool RESULT). With `--tools FILE` the model sees the functions it may call; a call in its
//! reply is printed as `call name {arguments}`, not as markup.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use manners::data::{JsonText, Message, Reply, Role};

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
    let tools = match &a.tools {
        None => Vec::new(),
        Some(p) => read_tools(p)?,
    };
    if !tools.is_empty() && !template.renders_tools() {
        anyhow::bail!(
            "--tools: template {} does not render tools (use --template chatml-tools or the \
             model's Jinja template)",
            template.name()
        );
    }
    let mut history: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::system(s.clone()))
        .collect();
    if interactive {
        eprintln!(
            "chatting with {} (template {}); /reset clears, /exit quits, /tool RESULT answers a \
             tool call",
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
        if let Some(result) = line.trim().strip_prefix("/tool ") {
            let pending = history
                .last()
                .is_some_and(|m| !m.tool_calls.is_empty() || m.role == Role::Tool);
            if !pending {
                eprintln!("[no tool call to answer]");
                continue;
            }
            history.push(Message::tool(result.trim()));
        } else {
            if history.last().is_some_and(|m| !m.tool_calls.is_empty()) {
                eprintln!("[the model called a tool: answer with /tool RESULT first]");
                continue;
            }
            history.push(Message::user(line));
        }
        // The whole conversation when it fits (the answer budget shrinking down to a quarter
        // of the context), else without its oldest turns: whole turns, never a cut through the
        // template's markers.
        let mut dropped = 0;
        let (ids, turn) = loop {
            let ids = template.encode_prompt_with_tools(&history, &tools, m.tokenizer.hf())?;
            let turn = cfg.for_prompt(ids.len(), ctx);
            if ids.len() + turn.max_new_tokens <= ctx {
                break (ids, turn);
            }
            let Some(first) = history.iter().position(|m| m.role != Role::System) else {
                unreachable!("the history holds the new user message")
            };
            // The oldest exchange: its user turn up to the next user turn (tool calls and
            // results included).
            let Some(next_user) = history[first + 1..]
                .iter()
                .position(|m| m.role == Role::User)
                .map(|p| p + first + 1)
            else {
                break (Vec::new(), turn);
            };
            history.drain(first..next_user);
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
        // Stream the text, holding back from the first `<tool_call>` on (printed parsed).
        let mut acc = String::new();
        let mut shown = 0;
        let g = manners::generate(&m.model, &m.tokenizer, &ids, &turn, |piece| {
            acc.push_str(piece);
            let upto = Reply::printable_len(&acc);
            if upto > shown {
                let _ = write!(out, "{}", &acc[shown..upto]);
                let _ = out.flush();
                shown = upto;
            }
        })?;
        let reply = Reply::parse(&g.text);
        if reply.tool_calls.is_empty() {
            // Held back for nothing (markup that is no call): shown as written.
            write!(out, "{}", &acc[shown..])?;
        }
        for c in &reply.tool_calls {
            write!(out, "\ncall {} {}", c.name, c.arguments)?;
        }
        if !reply.tool_calls.is_empty() && acc.len() > shown {
            // Text after the calls (unusual): shown as written.
            let after = acc[shown..]
                .rsplit("</tool_call>")
                .next()
                .unwrap_or("")
                .trim();
            if !after.is_empty() {
                write!(out, "\n{after}")?;
            }
        }
        writeln!(out)?;
        if !g.stopped_cleanly() {
            eprintln!("[hit the {}-token budget]", turn.max_new_tokens);
        }
        if reply.content.is_empty() && reply.tool_calls.is_empty() {
            history.push(Message::assistant(g.text.trim().to_string()));
        } else {
            history.push(reply.into_message());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON file holding a list of tool schemas (objects).
fn read_tools(path: &std::path::Path) -> anyhow::Result<Vec<JsonText>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let list =
        JsonText::parse_list(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(k) = list.iter().position(|t| !t.is_object()) {
        anyhow::bail!(
            "{}: item {k} is not a tool schema (an object)",
            path.display()
        );
    }
    Ok(list)
}
