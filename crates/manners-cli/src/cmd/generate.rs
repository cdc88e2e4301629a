//! `manners generate`: one prompt in, streamed text out.

use std::io::Write;

use anyhow::Context;

use crate::args::GenerateArgs;

pub fn run(a: GenerateArgs) -> anyhow::Result<std::process::ExitCode> {
    let dev = super::device(a.backend.backend, false)?;
    let m = manners::load_model_dir(&a.model, &dev.device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let prompt = m.tokenizer.encode(&a.prompt)?;
    let cfg = manners::GenerationConfig {
        max_new_tokens: a.sampling.max_new_tokens,
        sampling: a.sampling.sampling(),
        seed: a.sampling.seed,
        stop_token_ids: if a.ignore_eos {
            vec![]
        } else {
            m.default_stop_ids()
        },
        stop_strings: a.sampling.stop.clone(),
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
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
