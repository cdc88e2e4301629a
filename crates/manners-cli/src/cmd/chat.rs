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
    let interactive = std::io::stdin().is_terminal();
    let ctx = m.model.n_positions();
    let stop_ids = [
        template.stop_token_ids(m.tokenizer.hf()),
        m.default_stop_ids(),
    ]
    .concat();
    let stop_strings = [template.stop_strings(), a.sampling.stop.clone()].concat();
    let cfg = manners::GenerationConfig {
        sampling: a.sampling.sampling(),
        seed: a.sampling.seed,
        ..manners::GenerationConfig::stopping_at(
            a.sampling.max_new_tokens,
            ctx,
            stop_ids,
            stop_strings,
        )
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
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    loop {
        if interactive {
            write!(out, "\n> ")?;
            out.flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
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
        let ids = template.encode_prompt(&history, m.tokenizer.hf())?;
        // The whole conversation when it fits (the budget shrinking to a quarter of the
        // context at most), else its most recent part.
        let turn = cfg.for_prompt(ids.len(), ctx);
        let prompt = turn.fit(&ids, ctx);
        let g = manners::generate(&m.model, &m.tokenizer, prompt, &turn, |piece| {
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
