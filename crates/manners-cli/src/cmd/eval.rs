//! `manners eval` and `manners compare`: held-out answers, losses and a fact cloze.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use manners::data::default_set::HeldoutFact;
use manners::data::{
    BadRecordPolicy, Conversation, Format, Knowledge, read_conversations, read_texts,
};
use manners::train::eval::{
    EvalData, EvalOptions, EvalSummary, PromptMode, capital_cloze_items, comparison_markdown,
    evaluate, samples_markdown,
};

use crate::args::{CompareArgs, EvalArgs, EvalDataArgs};

/// Reads `heldout_facts.jsonl` (one `HeldoutFact` per line).
pub fn read_facts(path: &Path) -> anyhow::Result<Vec<HeldoutFact>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a held-out fact", path.display(), i + 1))
        })
        .collect()
}

/// The evaluation data: `--data` (default: the shipped held-out questions, with their facts),
/// `--text` (default: the shipped held-out raw text), `--cloze` over the knowledge tables.
pub fn load_eval_data(a: &EvalDataArgs) -> anyhow::Result<EvalData> {
    let assets = super::assets_dir().ok();
    let data = a.data.clone().or_else(|| {
        assets
            .as_ref()
            .map(|d| d.join("sft/heldout.jsonl"))
            .filter(|p| p.is_file())
    });
    let mut out = EvalData::default();
    if let Some(p) = &data {
        let (mut convs, report) = read_conversations(p, Format::Auto, BadRecordPolicy::Skip)?;
        if report.n_rejected() > 0 {
            eprintln!("{report}");
        }
        let facts_path = a.facts.clone().or_else(|| {
            let f = p.with_file_name("heldout_facts.jsonl");
            (f.is_file() && p.file_name().is_some_and(|n| n == "heldout.jsonl")).then_some(f)
        });
        let mut facts = match &facts_path {
            Some(f) => Some(read_facts(f)?),
            None => None,
        };
        if let Some(f) = &facts
            && f.len() != convs.len()
        {
            anyhow::bail!(
                "{} has {} facts but {} has {} conversations",
                facts_path.unwrap_or_default().display(),
                f.len(),
                p.display(),
                convs.len()
            );
        }
        if let Some(n) = a.limit {
            convs.truncate(n);
            if let Some(f) = facts.as_mut() {
                f.truncate(n);
            }
        }
        out.conversations = convs;
        out.facts = facts;
    }
    let text = a.text.clone().or_else(|| {
        assets
            .as_ref()
            .map(|d| d.join("base/heldout_text.jsonl"))
            .filter(|p| p.is_file())
    });
    if let Some(t) = &text {
        out.raw_text = read_texts(t, BadRecordPolicy::Skip)?.0;
    }
    if a.cloze {
        let dir = assets.context("--cloze needs the assets folder (knowledge tables)")?;
        out.cloze = capital_cloze_items(&Knowledge::load(&dir.join("knowledge"))?);
    }
    Ok(out)
}

fn print_summary(s: &EvalSummary) {
    println!("== {} ==", s.label);
    if let Some(a) = &s.answers {
        println!("questions           {} ({})", a.n, a.mode);
        println!("clean stop          {:.1}%", 100.0 * a.clean_stop_rate);
        println!(
            "answer accuracy     {:.1}%  (exact {:.1}%)",
            100.0 * a.accuracy,
            100.0 * a.exact
        );
        for k in &a.by_kind {
            println!("  {:<26} {:>4}  {:.1}%", k.kind, k.n, 100.0 * k.accuracy);
        }
        println!("mean response       {:.1} tokens", a.mean_response_tokens);
    }
    if let Some(l) = s.response_loss {
        println!("response loss       {l:.4}");
    }
    if let Some(l) = s.text_loss {
        println!("raw-text loss       {l:.4}");
    }
    if let Some(c) = &s.cloze {
        println!("capital cloze top-1 {:.1}% of {}", 100.0 * c.accuracy, c.n);
        for (p, a, cont, ok) in c.samples.iter().take(5) {
            println!(
                "  {} {p} → {} (want {a})",
                if *ok { "✓" } else { "✗" },
                cont.replace('\n', " ⏎ ")
            );
        }
    }
}

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let dev = super::device(a.backend.backend, a.json)?;
    let m = manners::load_model_dir(&a.model, &dev.device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let data = load_eval_data(&a.data)?;
    let mode = if a.raw {
        PromptMode::Raw
    } else {
        let mut tok = m.tokenizer.clone();
        let t = manners::train::choose_template(a.template.as_deref(), Some(&a.model), &tok)?;
        let missing: Vec<String> = t
            .required_special_tokens()
            .into_iter()
            .filter(|s| tok.token_id(s).is_none())
            .collect();
        if !missing.is_empty() {
            tok.add_special_tokens(&missing.iter().map(String::as_str).collect::<Vec<_>>());
            anyhow::bail!(
                "{} lacks the template's special tokens {missing:?}; use --raw or --template",
                a.model.display()
            );
        }
        PromptMode::Chat(t)
    };
    let opts = EvalOptions {
        max_new_tokens: a.max_new_tokens,
        ..EvalOptions::default()
    };
    let s = evaluate(
        &a.model.display().to_string(),
        &m.model,
        &m.tokenizer,
        &mode,
        &data,
        &opts,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_summary(&s);
    }
    Ok(ExitCode::SUCCESS)
}

/// Base model with the raw question, base model with the chat template, tuned model with the
/// chat template: the before/after of fine-tuning.
pub fn before_after(
    base_dir: &Path,
    tuned_dir: &Path,
    data: &EvalData,
    device: &manners::burn::prelude::Device,
    opts: &EvalOptions,
) -> anyhow::Result<Vec<EvalSummary>> {
    let base = manners::load_model_dir(base_dir, device)
        .with_context(|| format!("loading {}", base_dir.display()))?;
    let tuned = manners::load_model_dir(tuned_dir, device)
        .with_context(|| format!("loading {}", tuned_dir.display()))?;
    let template = manners::train::choose_template(None, Some(tuned_dir), &tuned.tokenizer)?;
    let mut cols = vec![evaluate(
        "base, raw question",
        &base.model,
        &base.tokenizer,
        &PromptMode::Raw,
        data,
        opts,
    )?];
    let base_has_specials = template
        .required_special_tokens()
        .iter()
        .all(|s| base.tokenizer.token_id(s).is_some());
    if base_has_specials {
        let no_text = EvalData {
            raw_text: Vec::new(),
            cloze: Vec::new(),
            ..data.clone()
        };
        cols.push(evaluate(
            "base + template",
            &base.model,
            &base.tokenizer,
            &PromptMode::Chat(template.clone()),
            &no_text,
            opts,
        )?);
    }
    cols.push(evaluate(
        "tuned + template",
        &tuned.model,
        &tuned.tokenizer,
        &PromptMode::Chat(template),
        data,
        opts,
    )?);
    Ok(cols)
}

pub fn compare(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let dev = super::device(a.backend.backend, false)?;
    let mut data = load_eval_data(&a.data)?;
    if let Some(p) = &a.prompts {
        data.conversations = read_prompts(p)?;
        data.facts = None;
    }
    let opts = EvalOptions {
        max_new_tokens: a.max_new_tokens,
        keep_samples: a.show,
        ..EvalOptions::default()
    };
    let cols = before_after(&a.base, &a.tuned, &data, &dev.device, &opts)?;
    println!("{}", comparison_markdown(&cols));
    println!("{}", samples_markdown(&cols, a.show));
    Ok(ExitCode::SUCCESS)
}

/// Prompts for `compare --prompts`: a JSONL/JSON dataset, or a text file with one question per
/// line (no reference answers).
fn read_prompts(path: &PathBuf) -> anyhow::Result<Vec<Conversation>> {
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path)?;
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                Conversation::new(vec![
                    manners::data::Message::user(l.trim()),
                    manners::data::Message::assistant(""),
                ])
            })
            .collect());
    }
    Ok(read_conversations(path, Format::Auto, BadRecordPolicy::Skip)?.0)
}
