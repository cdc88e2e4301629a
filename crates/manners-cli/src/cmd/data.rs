//! `manners data inspect | lint | build-default`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use manners::data::{ChatTemplate, InspectOptions, LintOptions, inspect, lint};
use manners_assets::{
    DefaultSetConfig, Knowledge, build_default_set, load_identity, write_default_set,
};

use crate::args::{DataArgs, DataCommand, TokenizerArgs};

pub fn run(a: DataArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        DataCommand::Inspect {
            file,
            tok,
            n,
            format,
            mask,
            max_len,
            json,
        } => {
            let (tokenizer, template) = tokenizer_and_template(&tok)?;
            let opts = InspectOptions {
                format,
                n,
                mask,
                max_len,
                color: std::io::stdout().is_terminal(),
                ..InspectOptions::default()
            };
            let report = inspect(&file, &template, tokenizer.hf(), &opts)?;
            if json {
                for v in report.examples_json(tokenizer.hf())? {
                    println!("{v}");
                }
            } else {
                println!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Lint {
            files,
            tok,
            heldout,
            format,
            mask,
            max_len,
        } => {
            let (tokenizer, template) = tokenizer_and_template(&tok)?;
            let opts = LintOptions {
                format,
                mask,
                max_len,
                heldout,
                ..LintOptions::default()
            };
            let report = lint(&files, &template, tokenizer.hf(), &opts)?;
            print!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DataCommand::BuildDefault { out, seed } => {
            let assets = manners_recipes::assets_dir()?;
            let k = Knowledge::load(&assets.join("knowledge"))?;
            let identity = load_identity(&assets.join("instruct/identity.json"))?;
            let cfg = DefaultSetConfig {
                seed,
                ..DefaultSetConfig::default()
            };
            let set = build_default_set(&k, &identity, &cfg);
            let out = out.unwrap_or_else(|| assets.join("sft"));
            write_default_set(&out, &set).with_context(|| format!("writing {}", out.display()))?;
            println!("{}", set.stats);
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The tokenizer (`--tokenizer`, else the shipped base model's, else GPT-2's) with the
/// template's special tokens added, and the template (`--template`, else the folder's saved
/// template, else chatml).
fn tokenizer_and_template(a: &TokenizerArgs) -> anyhow::Result<(manners::Tokenizer, ChatTemplate)> {
    let dir: PathBuf = match &a.tokenizer {
        Some(d) => d.clone(),
        None => {
            let assets = manners_recipes::assets_dir()?;
            let base = assets.join("base");
            if base.join("tokenizer.json").is_file() {
                base
            } else {
                assets.join("gpt2-tokenizer")
            }
        }
    };
    let mut tok = manners::Tokenizer::from_dir(&dir)
        .with_context(|| format!("loading the tokenizer in {}", dir.display()))?;
    let template = manners::chat_template(&tok, Some(Path::new(&dir)), a.template.as_deref())?;
    let needed = template.required_special_tokens();
    tok.add_special_tokens(&needed.iter().map(String::as_str).collect::<Vec<_>>());
    Ok((tok, template))
}
