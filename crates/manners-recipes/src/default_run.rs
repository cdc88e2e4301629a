//! The embedded default: the shipped base model fine-tuned on the shipped instruction set with
//! a little raw text mixed in, then the before/after comparison on held-out questions.

use std::path::{Path, PathBuf};

use manners::data::write_texts;
use manners::train::TrainConfig;
use manners::train::eval::{
    EvalData, EvalOptions, EvalSummary, PromptMode, comparison_markdown, evaluate, samples_markdown,
};
use manners_assets::{CorpusConfig, Knowledge, build_corpus, load_books};

use crate::error::{RecipeError, Result};
use crate::eval_data::{EvalDataSpec, load_eval_data};

/// Learning rate of the default run (docs/experiments/lr.md has the comparison).
pub const DEFAULT_LR: f64 = 3e-4;
/// Epochs of the default run. One: held-out loss bottoms out after about one epoch, and on the
/// shipped base 3 epochs answered 51% of held-out questions where 1 answers 58%.
pub const DEFAULT_EPOCHS: f64 = 1.0;
/// Share of the default run's examples that are raw pretraining text (limits forgetting; see
/// docs/experiments/mix.md: none forgets 11%, 5% costs 10 points of accuracy, 2% keeps both).
pub const DEFAULT_MIX_FRACTION: f64 = 0.02;

/// Where the default run's raw text goes under the runs folder (written on first use).
pub fn default_mix_path(out_dir: &Path) -> PathBuf {
    out_dir.join("data/default-mix-text.jsonl")
}

/// The default run's config: the shipped base, the shipped instruction set and held-out set,
/// chatml-tools (chatml plus the tool-use slice's calls), 1 epoch at lr 3e-4, 2% raw text.
pub fn default_config(assets: &Path) -> TrainConfig {
    TrainConfig {
        mix_text: vec![default_mix_path(&TrainConfig::default().out_dir)],
        mix_fraction: DEFAULT_MIX_FRACTION,
        model: Some(assets.join("base")),
        data: vec![assets.join("sft/train.jsonl")],
        eval_data: vec![assets.join("sft/heldout.jsonl")],
        template: Some("chatml-tools".into()),
        batch_size: 8,
        lr: DEFAULT_LR,
        epochs: DEFAULT_EPOCHS,
        warmup_ratio: 0.05,
        weight_decay: 0.0,
        sample_prompts: vec![
            "What is the capital of France?".into(),
            "Which element has atomic number 8?".into(),
            "Who are you?".into(),
        ],
        name: None,
        ..TrainConfig::default()
    }
}

/// Pretraining-corpus training documents (never the held-out ones): the raw text the default
/// run and the mixing experiment mix in.
pub fn mix_source(assets: &Path) -> Result<Vec<String>> {
    let books = load_books(&assets.join("corpus"))?;
    let k = Knowledge::load(&assets.join("knowledge"))?;
    let c = build_corpus(
        &books,
        &k,
        &CorpusConfig {
            fact_repeats: 1,
            word_repeats: 0,
            ..CorpusConfig::default()
        },
    );
    Ok(c.train.into_iter().take(600).collect())
}

/// Puts the default mix file under `cfg.out_dir` (the default config names it under the
/// default `runs/`): a run or experiment given another parent folder writes nothing outside it.
pub fn place_default_mix(cfg: &mut TrainConfig) {
    let default = default_mix_path(&TrainConfig::default().out_dir);
    for p in &mut cfg.mix_text {
        if *p == default {
            *p = default_mix_path(&cfg.out_dir);
        }
    }
}

/// Writes the raw-text files of `cfg` that are the default mix and do not exist yet.
/// Deterministic, so a rerun reads the same text.
pub fn write_default_mix(assets: &Path, cfg: &TrainConfig) -> Result<()> {
    for p in &cfg.mix_text {
        if p.is_file() || !p.ends_with("default-mix-text.jsonl") {
            continue;
        }
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RecipeError::io(dir, e))?;
        }
        write_texts(p, &mix_source(assets)?)?;
    }
    Ok(())
}

/// Base model with the raw question, base model with the chat template (when its tokenizer has
/// the template's tokens), tuned model with the chat template: the before/after of
/// fine-tuning.
pub fn before_after(
    base_dir: &Path,
    tuned_dir: &Path,
    data: &EvalData,
    device: &manners::burn::prelude::Device,
    opts: &EvalOptions,
) -> Result<Vec<EvalSummary>> {
    let base = manners::load_model_dir(base_dir, device)?;
    let tuned = manners::load_model_dir(tuned_dir, device)?;
    let template = manners::chat_template(&tuned.tokenizer, Some(tuned_dir), None)?;
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
        // (The base model has never seen a tool call: its tool columns show that.)
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

/// The before/after comparison of a finished default run, as markdown.
pub struct BeforeAfter {
    /// Questions asked.
    pub questions: usize,
    pub table: String,
    pub samples: String,
}

/// Evaluates the base and the tuned model on the shipped held-out questions and raw text,
/// and appends the comparison to the run's `report.md`.
pub fn before_after_report(
    assets: &Path,
    base: &Path,
    tuned: &Path,
    run_dir: &Path,
    device: &manners::burn::prelude::Device,
) -> Result<BeforeAfter> {
    let spec = EvalDataSpec {
        tools: true,
        ..EvalDataSpec::default()
    };
    let data = load_eval_data(&spec, Some(assets))?;
    let opts = EvalOptions {
        keep_samples: 6,
        ..EvalOptions::default()
    };
    let cols = before_after(base, tuned, &data, device, &opts)?;
    let out = BeforeAfter {
        questions: data.conversations.len(),
        table: comparison_markdown(&cols),
        samples: samples_markdown(&cols, 6),
    };
    let report = run_dir.join("report.md");
    let mut md = std::fs::read_to_string(&report).unwrap_or_default();
    md.push_str("\n## Before and after fine-tuning (held-out questions)\n\n");
    md.push_str(&format!(
        "{} held-out questions about facts the instruction set never mentions.\n\n",
        out.questions
    ));
    md.push_str(&out.table);
    md.push_str("\n### Answers side by side\n\n");
    md.push_str(&out.samples);
    manners::write_atomic(&report, md.as_bytes())?;
    Ok(out)
}
