//! The lessons of the SFT literature, rerunnable on the shipped base model and instruction set:
//! noisy vs clean data, learning rates, mixing raw text in (forgetting), quality vs quantity.
//! Each trains its variants (the default run with one change each; the default run itself is
//! shared as the baseline), evaluates them on the held-out questions and raw text, and writes
//! `docs/experiments/<name>.md` with a table, the loss curves and what it shows. The prose of
//! the write-ups is data (`experiments.toml`), filled with the measurements.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use manners::data::{
    BadRecordPolicy, Conversation, Format, QualityFilter, SplitMix64, filter_quality,
    read_conversations, write_conversations,
};
use manners::report::{Curves, plot_series, smooth};
use manners::train::eval::{EvalData, EvalOptions, EvalSummary, PromptMode, evaluate};
use manners::train::{TrainConfig, TrainOutcome};
use manners_assets::{Corruption, corrupt_dataset};
use serde::Deserialize;

use crate::default_run::{default_config, write_default_mix};
use crate::error::{RecipeError, Result};
use crate::eval_data::{EvalDataSpec, load_eval_data};

/// The experiments, by name.
pub const EXPERIMENTS: &[&str] = &["noise", "lr", "mix", "quality"];

/// How an experiment runs.
#[derive(Clone, Debug)]
pub struct ExperimentPlan {
    /// `noise`, `lr`, `mix` or `quality`.
    pub name: String,
    /// Parent folder of the runs (`<out>/exp-<name>/`, the shared baseline in
    /// `<out>/exp-baseline-<epochs>ep/`).
    pub out: PathBuf,
    /// Where the write-up goes (`<docs>/experiments/<name>.md`).
    pub docs: PathBuf,
    /// Epochs of each run (default: the default run's).
    pub epochs: Option<f64>,
    /// Examples in the "few" variant of the quality experiment.
    pub few: usize,
    pub device: manners::burn::prelude::Device,
}

/// The write-up texts of one experiment (`experiments.toml`).
#[derive(Clone, Debug, Deserialize)]
struct Prose {
    title: String,
    intro: String,
    findings: String,
    #[serde(default)]
    each: String,
    #[serde(default)]
    each_first: String,
}

fn prose(name: &str) -> Result<Prose> {
    let all: BTreeMap<String, Prose> = toml::from_str(include_str!("experiments.toml"))
        .map_err(|e| RecipeError::Invalid(format!("experiments.toml: {e}")))?;
    all.get(name)
        .cloned()
        .ok_or_else(|| RecipeError::Invalid(format!("experiments.toml has no [{name}]")))
}

/// Replaces every `{key}` of `template` by its value (unknown keys stay as they are).
fn fill(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// One trained variant and what it measured.
struct Variant {
    label: String,
    /// The run folder's name (`clean`, `noisy`, `lr-3e-5`, ...).
    name: String,
    run_dir: PathBuf,
    examples: usize,
    summary: EvalSummary,
    curves: Curves,
}

impl Variant {
    fn accuracy(&self) -> f64 {
        self.summary
            .answers
            .as_ref()
            .map(|a| a.accuracy)
            .unwrap_or(0.0)
    }

    fn clean_stop(&self) -> f64 {
        self.summary
            .answers
            .as_ref()
            .map(|a| a.clean_stop_rate)
            .unwrap_or(0.0)
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The placeholders of the findings: every variant's numbers, the best one, lists.
fn variables(vs: &[Variant], p: &Prose) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let loss = |v: &Variant| {
        v.summary
            .text_loss
            .map(|x| format!("{x:.3}"))
            .unwrap_or_default()
    };
    for v in vs {
        m.insert(format!("{}.label", v.name), v.label.clone());
        m.insert(format!("{}.accuracy", v.name), pct(v.accuracy()));
        m.insert(format!("{}.clean_stop", v.name), pct(v.clean_stop()));
        m.insert(format!("{}.text_loss", v.name), loss(v));
    }
    if let Some(best) = vs
        .iter()
        .max_by(|a, b| a.accuracy().total_cmp(&b.accuracy()))
    {
        m.insert("best.label".into(), best.label.clone());
        m.insert("best.accuracy".into(), pct(best.accuracy()));
    }
    let all: Vec<String> = vs
        .iter()
        .map(|v| format!("{}: {}", v.label, pct(v.accuracy())))
        .collect();
    m.insert("all".into(), all.join("; "));
    let first = vs.first().and_then(|v| v.summary.text_loss);
    let each: Vec<String> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut e = BTreeMap::new();
            e.insert("label".to_string(), v.label.clone());
            e.insert("accuracy".to_string(), pct(v.accuracy()));
            e.insert("text_loss".to_string(), loss(v));
            let change = match (v.summary.text_loss, first) {
                (Some(x), Some(b)) => format!("{:+.1}%", 100.0 * (x / b - 1.0)),
                _ => String::new(),
            };
            e.insert("text_loss_change".to_string(), change);
            fill(if i == 0 { &p.each_first } else { &p.each }, &e)
        })
        .collect();
    m.insert("each".into(), each.join("; "));
    m
}

/// A finished run whose recipe (everything but names and paths) matches `cfg`.
fn reusable(run_dir: &Path, cfg: &TrainConfig) -> bool {
    if !run_dir.join("final/model.safetensors").is_file() {
        return false;
    }
    let Ok(done) = TrainConfig::from_toml_file(&run_dir.join("run.toml")) else {
        return false;
    };
    // The knobs the experiments turn (the saved config also holds values resolved at run time,
    // such as warmup steps, so it is not compared whole).
    let recipe = |c: &TrainConfig| {
        format!(
            "{} {} {:?} {} {} {} {} {:?} {} {}",
            c.lr,
            c.epochs,
            c.max_steps,
            c.mix_fraction,
            c.batch_size,
            c.grad_accum,
            c.seed,
            c.template,
            c.weight_decay,
            c.min_lr_ratio
        )
    };
    recipe(&done) == recipe(cfg)
}

struct Ctx<'a> {
    root: PathBuf,
    /// Where the baseline (the default run on the clean set) lives, shared by the experiments.
    shared: PathBuf,
    device: manners::burn::prelude::Device,
    base_cfg: TrainConfig,
    eval_data: EvalData,
    run: &'a mut dyn FnMut(TrainConfig) -> Result<TrainOutcome>,
}

impl Ctx<'_> {
    /// Trains one variant (or reuses a finished run of the same recipe) and evaluates it.
    fn variant(
        &mut self,
        label: &str,
        name: &str,
        data: Vec<Conversation>,
        edit: impl FnOnce(&mut TrainConfig),
    ) -> Result<Variant> {
        let root = self.root.clone();
        self.variant_in(&root, label, name, data, edit)
    }

    /// The default run on the clean set, trained once and shared by every experiment.
    fn baseline(&mut self, label: &str, clean: &[Conversation]) -> Result<Variant> {
        let shared = self.shared.clone();
        self.variant_in(&shared, label, "clean", clean.to_vec(), |_| {})
    }

    fn variant_in(
        &mut self,
        root: &Path,
        label: &str,
        name: &str,
        data: Vec<Conversation>,
        edit: impl FnOnce(&mut TrainConfig),
    ) -> Result<Variant> {
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir).map_err(|e| RecipeError::io(&data_dir, e))?;
        let data_path = data_dir.join(format!("{name}.jsonl"));
        write_conversations(&data_path, &data)?;
        let mut cfg = TrainConfig {
            data: vec![data_path],
            out_dir: root.to_path_buf(),
            name: Some(name.to_string()),
            ..self.base_cfg.clone()
        };
        edit(&mut cfg);
        let run_dir = root.join(name);
        if reusable(&run_dir, &cfg) {
            eprintln!("experiment: reusing {}", run_dir.display());
        } else {
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir).map_err(|e| RecipeError::io(&run_dir, e))?;
            }
            eprintln!(
                "experiment: training `{label}` ({} conversations)",
                data.len()
            );
            (self.run)(cfg)?;
        }
        let final_dir = run_dir.join("final");
        let m = manners::load_model_dir(&final_dir, &self.device)?;
        let t = manners::chat_template(&m.tokenizer, Some(&final_dir), None)?;
        let summary = evaluate(
            label,
            &m.model,
            &m.tokenizer,
            &PromptMode::Chat(t),
            &self.eval_data,
            &EvalOptions::default(),
        )?;
        Ok(Variant {
            label: label.to_string(),
            name: name.to_string(),
            curves: Curves::of_run(&run_dir),
            run_dir,
            examples: data.len(),
            summary,
        })
    }
}

fn table(vs: &[Variant]) -> String {
    let mut s = String::from(
        "| variant | examples | answer accuracy | exact | clean stop | response loss | raw-text loss | final train loss |\n|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |x: Option<f64>| x.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    for v in vs {
        let a = v.summary.answers.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            v.label,
            v.examples,
            pct(a.map(|a| a.accuracy).unwrap_or(0.0)),
            pct(a.map(|a| a.exact).unwrap_or(0.0)),
            pct(a.map(|a| a.clean_stop_rate).unwrap_or(0.0)),
            opt(v.summary.response_loss),
            opt(v.summary.text_loss),
            opt(v.curves.train.last().map(|x| x.1)),
        );
    }
    s
}

fn samples(vs: &[Variant]) -> String {
    let mut s = String::new();
    let n = vs
        .iter()
        .filter_map(|v| v.summary.answers.as_ref())
        .map(|a| a.samples.len())
        .min()
        .unwrap_or(0)
        .min(4);
    for i in 0..n {
        let Some(first) = vs[0].summary.answers.as_ref().map(|a| &a.samples[i]) else {
            break;
        };
        let _ = writeln!(
            s,
            "**{}** (reference: {})\n",
            first.prompt.trim(),
            first.reference
        );
        for v in vs {
            if let Some(x) = v.summary.answers.as_ref().and_then(|a| a.samples.get(i)) {
                let _ = writeln!(
                    s,
                    "- {}: {} {}",
                    v.label,
                    if x.correct { "✓" } else { "✗" },
                    x.response.replace('\n', " ⏎ ")
                );
            }
        }
        s.push('\n');
    }
    s
}

/// Writes the experiment's markdown and plot; returns the markdown's path.
fn write_doc(
    docs: &Path,
    name: &str,
    prose: &Prose,
    intro_vars: &BTreeMap<String, String>,
    vs: &[Variant],
) -> Result<PathBuf> {
    let dir = docs.join("experiments");
    std::fs::create_dir_all(&dir).map_err(|e| RecipeError::io(&dir, e))?;
    let png = dir.join(format!("{name}.png"));
    let series: Vec<(String, Vec<(f64, f64)>)> = vs
        .iter()
        .flat_map(|v| {
            [
                (format!("{} train", v.label), smooth(&v.curves.train)),
                (format!("{} held-out", v.label), v.curves.eval.clone()),
            ]
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let plot = plot_series(&png, &prose.title, "step", "loss", &series);
    let command = format!("cargo run --release -- experiment {name}");
    let mut md = format!(
        "# {}\n\n{}\n\nReproduce: `{command}` (runs under `runs/exp-{name}/`).\n\n",
        prose.title,
        fill(&prose.intro, intro_vars)
    );
    md.push_str(&table(vs));
    md.push_str(&format!(
        "\nRun folders (reports, configs, metrics): {}.\n\n",
        vs.iter()
            .map(|v| format!("`{}`", v.run_dir.display()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    match plot {
        Ok(()) => md.push_str(&format!("![loss curves]({name}.png)\n\n")),
        Err(e) => md.push_str(&format!("(plot not drawn: {e})\n\n")),
    }
    md.push_str(&format!(
        "## What it shows\n\n{}\n\n## Answers side by side\n\n{}",
        fill(&prose.findings, &variables(vs, prose)),
        samples(vs)
    ));
    md.push_str(&format!(
        "\nAccuracy is over {} held-out questions about facts (and entities) the instruction set never \
         mentions; raw-text loss is on book text the base model never saw (lower is better; a rise \
         is forgetting).\n",
        vs.first().and_then(|v| v.summary.answers.as_ref()).map(|a| a.n).unwrap_or(0)
    ));
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, md).map_err(|e| RecipeError::io(&path, e))?;
    Ok(path)
}

/// A seeded `rate` of the conversations corrupted, cycling the three kinds of corruption.
pub fn noisy_set(clean: &[Conversation], rate: f64, seed: u64) -> Vec<Conversation> {
    let kinds = [
        Corruption::ShuffleWords,
        Corruption::DropHalf,
        Corruption::JunkChars { per_char: 0.25 },
    ];
    let mut out = Vec::with_capacity(clean.len());
    for (i, chunk) in clean.chunks(clean.len().div_ceil(3).max(1)).enumerate() {
        let (c, _) = corrupt_dataset(chunk, kinds[i % 3], rate, seed + i as u64);
        out.extend(c);
    }
    out
}

/// The filter of the quality experiment: drops repetitive responses and responses much shorter
/// than their prompt (half the words dropped), and responses longer than any clean one (junk).
pub fn quality_filter() -> QualityFilter {
    QualityFilter {
        min_response_tokens: 2,
        max_response_tokens: 48,
        max_ratio: 4.0,
        min_distinct_ratio: 0.6,
    }
}

/// Runs one experiment with `run` for every training, and writes its write-up; returns the
/// markdown's path.
pub fn run_experiment(
    plan: &ExperimentPlan,
    assets: &Path,
    run: &mut dyn FnMut(TrainConfig) -> Result<TrainOutcome>,
) -> Result<PathBuf> {
    let name = plan.name.as_str();
    if !EXPERIMENTS.contains(&name) {
        return Err(RecipeError::Invalid(format!(
            "unknown experiment `{name}`: {}",
            EXPERIMENTS.join(", ")
        )));
    }
    let prose = prose(name)?;
    let mut base_cfg = default_config(assets);
    if let Some(e) = plan.epochs {
        base_cfg.epochs = e;
    }
    base_cfg.out_dir = plan.out.clone();
    crate::default_run::place_default_mix(&mut base_cfg);
    write_default_mix(assets, &base_cfg)?;
    let mut ctx = Ctx {
        root: plan.out.join(format!("exp-{name}")),
        shared: plan.out.join(format!("exp-baseline-{}ep", base_cfg.epochs)),
        device: plan.device.clone(),
        eval_data: load_eval_data(&EvalDataSpec::default(), Some(assets))?,
        base_cfg,
        run,
    };
    let (clean, _) = read_conversations(
        &assets.join("sft/train.jsonl"),
        Format::Auto,
        BadRecordPolicy::Fail,
    )?;
    let mut intro = BTreeMap::new();
    let vs = match name {
        "noise" => vec![
            ctx.baseline("clean", &clean)?,
            ctx.variant("50% corrupted", "noisy", noisy_set(&clean, 0.5, 7), |_| {})?,
        ],
        "lr" => {
            let mut vs = Vec::new();
            for r in [3e-5, 3e-4, 3e-3] {
                let label = format!("lr {r:e}");
                vs.push(if r == ctx.base_cfg.lr {
                    ctx.baseline(&label, &clean)?
                } else {
                    ctx.variant(&label, &format!("lr-{r:e}"), clean.clone(), |c| c.lr = r)?
                });
            }
            vs
        }
        "mix" => {
            // The default run mixes raw text in; the first variant leaves it out.
            let default_label = format!(
                "SFT + {:.0}% raw text (the default)",
                100.0 * ctx.base_cfg.mix_fraction
            );
            vec![
                ctx.variant("SFT only", "sft-only", clean.clone(), |c| {
                    c.mix_text.clear();
                    c.mix_fraction = 0.0;
                })?,
                ctx.baseline(&default_label, &clean)?,
                ctx.variant("SFT + 5% raw text", "mix-5pct", clean.clone(), |c| {
                    c.mix_fraction = 0.05;
                })?,
            ]
        }
        _ => {
            let noisy = noisy_set(&clean, 0.5, 7);
            let tok = manners::Tokenizer::from_dir(&assets.join("base"))?;
            let filter = quality_filter();
            let (filtered, report) = filter_quality(noisy.clone(), tok.hf(), &filter)?;
            eprintln!("quality filter: {report}");
            intro.insert("filter".to_string(), format!("{filter:?}"));
            intro.insert("kept".to_string(), report.kept.to_string());
            intro.insert("examples".to_string(), report.examples.to_string());
            let mut small = clean.clone();
            SplitMix64::new(11).shuffle(&mut small);
            small.truncate(plan.few);
            vec![
                ctx.variant("noisy, no filter", "noisy", noisy, |_| {})?,
                ctx.variant("noisy, quality filter", "noisy-filtered", filtered, |_| {})?,
                ctx.variant(&format!("{} clean examples", plan.few), "few", small, |c| {
                    // The same number of optimiser steps as the full set's run.
                    c.epochs *= 10.0;
                })?,
                ctx.baseline("all clean examples", &clean)?,
            ]
        }
    };
    write_doc(&plan.docs, name, &prose, &intro, &vs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_experiment_has_its_prose_and_placeholders_fill() {
        for name in EXPERIMENTS {
            let p = prose(name).unwrap();
            assert!(!p.title.is_empty() && !p.findings.is_empty(), "{name}");
        }
        let mut vars = BTreeMap::new();
        vars.insert("clean.accuracy".to_string(), "61.6%".to_string());
        assert_eq!(
            fill("from {clean.accuracy} to {noisy.accuracy}", &vars),
            "from 61.6% to {noisy.accuracy}"
        );
    }
}
