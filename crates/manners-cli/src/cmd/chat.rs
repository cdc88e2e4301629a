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
    let template =
        manners::train::choose_template(a.template.as_deref(), Some(&a.model), &m.tokenizer)?;
    let interactive = std::io::stdin().is_terminal();
    let mut stop_ids = template.stop_token_ids(m.tokenizer.hf());
    stop_ids.extend(m.default_stop_ids());
    stop_ids.sort_unstable();
    stop_ids.dedup();
    let cfg = manners::GenerationConfig {
        max_new_tokens: a.sampling.max_new_tokens,
        sampling: a.sampling.sampling(),
        seed: a.sampling.seed,
        stop_token_ids: stop_ids,
        stop_strings: [template.stop_strings(), a.sampling.stop.clone()].concat(),
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
        let mut prompt = template.encode_prompt(&history, m.tokenizer.hf())?;
        // Keep the most recent context that fits with the answer budget.
        let keep = m
            .model
            .n_positions()
            .saturating_sub(cfg.max_new_tokens)
            .max(1);
        if prompt.len() > keep {
            prompt.drain(..prompt.len() - keep);
        }
        let g = manners::generate(&m.model, &m.tokenizer, &prompt, &cfg, |piece| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        })?;
        writeln!(out)?;
        if !g.stopped_cleanly() {
            eprintln!("[hit the {}-token budget]", cfg.max_new_tokens);
        }
        history.push(Message::new(Role::Assistant, g.text.trim().to_string()));
    }
    Ok(ExitCode::SUCCESS)
}
