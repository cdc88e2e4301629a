//! `manners experiment noise|lr|mix|quality`: the lessons of the SFT literature, rerunnable on
//! the shipped base model and instruction set. Each writes `docs/experiments/<name>.md` with a
//! table and a plot, from runs under `runs/exp-<name>/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use manners::data::{
    BadRecordPolicy, Conversation, CorpusConfig, Corruption, Format, Knowledge, QualityFilter,
    build_corpus, corrupt_dataset, filter_quality, load_books, read_conversations,
};
use manners::events::TrainEvent;
use manners::train::eval::{EvalOptions, EvalSummary, PromptMode, evaluate};
use manners::train::{TrainConfig, read_events};

use crate::args::ExperimentArgs;

/// One trained variant and what it measured.
struct Variant {
    label: String,
    run_dir: PathBuf,
    examples: usize,
    summary: EvalSummary,
    train: Vec<(f64, f64)>,
    eval: Vec<(f64, f64)>,
}

fn write_convs(path: &Path, convs: &[Conversation]) -> anyhow::Result<()> {
    let mut s = String::new();
    for c in convs {
        let msgs: Vec<serde_json::Value> = c
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        s.push_str(&serde_json::json!({ "messages": msgs }).to_string());
        s.push('\n');
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// A loss curve: (step, loss) points.
type Curve = Vec<(f64, f64)>;

/// Training and held-out loss curves of a run.
fn curves(run_dir: &Path) -> (Curve, Curve) {
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for e in read_events(&run_dir.join("metrics.jsonl")).unwrap_or_default() {
        match e {
            TrainEvent::Step(s) if !s.skipped => train.push((s.step as f64, s.loss)),
            TrainEvent::Eval(s) => eval.push((s.step as f64, s.loss)),
            _ => {}
        }
    }
    (train, eval)
}

struct Ctx {
    root: PathBuf,
    /// Where the baseline (the default run on the clean set) lives, shared by the experiments.
    shared: PathBuf,
    device: manners::DeviceChoice,
    base_cfg: TrainConfig,
    eval_data: manners::train::eval::EvalData,
    no_tui: bool,
}

impl Ctx {
    /// Trains one variant (or reuses a finished run of the same name) and evaluates it.
    fn variant(
        &self,
        label: &str,
        name: &str,
        data: Vec<Conversation>,
        edit: impl FnOnce(&mut TrainConfig),
    ) -> anyhow::Result<Variant> {
        self.variant_in(&self.root, label, name, data, edit)
    }

    /// The default run on the clean set, trained once and shared by every experiment.
    fn baseline(&self, label: &str, clean: &[Conversation]) -> anyhow::Result<Variant> {
        self.variant_in(&self.shared, label, "clean", clean.to_vec(), |_| {})
    }

    fn variant_in(
        &self,
        root: &Path,
        label: &str,
        name: &str,
        data: Vec<Conversation>,
        edit: impl FnOnce(&mut TrainConfig),
    ) -> anyhow::Result<Variant> {
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let data_path = data_dir.join(format!("{name}.jsonl"));
        write_convs(&data_path, &data)?;
        let mut cfg = TrainConfig {
            data: vec![data_path],
            out_dir: root.to_path_buf(),
            name: Some(name.to_string()),
            ..self.base_cfg.clone()
        };
        edit(&mut cfg);
        let run_dir = root.join(name);
        if !reusable(&run_dir, &cfg) {
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir)?;
            }
            eprintln!(
                "experiment: training `{label}` ({} conversations)",
                data.len()
            );
            super::train::run_with_ui(cfg, self.device.clone(), None, self.no_tui)?;
        } else {
            eprintln!("experiment: reusing {}", run_dir.display());
        }
        let m = manners::load_model_dir(&run_dir.join("final"), &self.device.device)?;
        let t = manners::train::choose_template(None, Some(&run_dir.join("final")), &m.tokenizer)?;
        let summary = evaluate(
            label,
            &m.model,
            &m.tokenizer,
            &PromptMode::Chat(t),
            &self.eval_data,
            &EvalOptions::default(),
        )?;
        let (train, eval) = curves(&run_dir);
        Ok(Variant {
            label: label.to_string(),
            run_dir,
            examples: data.len(),
            summary,
            train,
            eval,
        })
    }
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

fn table(vs: &[Variant]) -> String {
    let mut s = String::from(
        "| variant | examples | answer accuracy | exact | clean stop | response loss | raw-text loss | final train loss |\n|---|---|---|---|---|---|---|---|\n",
    );
    for v in vs {
        let a = v.summary.answers.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {:.1}% | {:.1}% | {:.1}% | {} | {} | {} |",
            v.label,
            v.examples,
            100.0 * a.map(|a| a.accuracy).unwrap_or(0.0),
            100.0 * a.map(|a| a.exact).unwrap_or(0.0),
            100.0 * a.map(|a| a.clean_stop_rate).unwrap_or(0.0),
            v.summary
                .response_loss
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            v.summary
                .text_loss
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            v.train
                .last()
                .map(|x| format!("{:.3}", x.1))
                .unwrap_or_else(|| "-".into()),
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
        let first = &vs[0].summary.answers.as_ref().expect("answers").samples[i];
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

fn write_doc(
    root_docs: &Path,
    name: &str,
    title: &str,
    intro: &str,
    vs: &[Variant],
    findings: &str,
    command: &str,
) -> anyhow::Result<PathBuf> {
    let dir = root_docs.join("experiments");
    std::fs::create_dir_all(&dir)?;
    let png = dir.join(format!("{name}.png"));
    let series: Vec<(String, Vec<(f64, f64)>)> = vs
        .iter()
        .flat_map(|v| {
            [
                (format!("{} train", v.label), manners_tui::smooth(&v.train)),
                (format!("{} held-out", v.label), v.eval.clone()),
            ]
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let plot = manners_tui::plot_series(&png, title, "step", "loss", &series);
    let mut md = format!(
        "# {title}\n\n{intro}\n\nReproduce: `{command}` (runs under `runs/exp-{name}/`).\n\n"
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
        "## What it shows\n\n{findings}\n\n## Answers side by side\n\n{}",
        samples(vs)
    ));
    md.push_str(&format!(
        "\nAccuracy is over {} held-out questions about facts (and entities) the instruction set never \
         mentions; raw-text loss is on book text the base model never saw (lower is better; a rise \
         is forgetting).\n",
        vs.first().and_then(|v| v.summary.answers.as_ref()).map(|a| a.n).unwrap_or(0)
    ));
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, md)?;
    Ok(path)
}

pub fn run(a: ExperimentArgs) -> anyhow::Result<ExitCode> {
    let assets = super::assets_dir()?;
    let device = manners::select_device(manners::BackendKind::from(a.backend))?;
    let root = a.out.join(format!("exp-{}", a.name));
    std::fs::create_dir_all(&root)?;
    let mut base_cfg = super::train::default_config(&assets);
    if let Some(e) = a.epochs {
        base_cfg.epochs = e;
    }
    for p in &base_cfg.mix_text {
        super::train::write_default_mix(&assets, p)?;
    }
    let shared = a.out.join(format!("exp-baseline-{}ep", base_cfg.epochs));
    let eval_data = super::eval::load_eval_data(&crate::args::EvalDataArgs::default())?;
    let ctx = Ctx {
        root,
        shared,
        device,
        base_cfg,
        eval_data,
        no_tui: a.no_tui,
    };
    let (clean, _) = read_conversations(
        &assets.join("sft/train.jsonl"),
        Format::Auto,
        BadRecordPolicy::Fail,
    )?;
    let docs = a.docs.clone();
    let cmd = format!("cargo run --release -- experiment {}", a.name);
    let path = match a.name.as_str() {
        "noise" => {
            let noisy = noisy_set(&clean, 0.5, 7);
            let vs = vec![
                ctx.baseline("clean", &clean)?,
                ctx.variant("50% corrupted", "noisy", noisy, |_| {})?,
            ];
            let findings = finding_noise(&vs);
            write_doc(
                &docs,
                "noise",
                "Noisy vs clean responses",
                "The same questions, with the responses of a seeded half of the conversations corrupted (words shuffled, half the words dropped, or junk characters inserted; one kind each).",
                &vs,
                &findings,
                &cmd,
            )?
        }
        "lr" => {
            let rates = [3e-5, 3e-4, 3e-3];
            let mut vs = Vec::new();
            for r in rates {
                let label = format!("lr {r:e}");
                vs.push(if r == ctx.base_cfg.lr {
                    ctx.baseline(&label, &clean)?
                } else {
                    ctx.variant(&label, &format!("lr-{r:e}"), clean.clone(), |c| c.lr = r)?
                });
            }
            let findings = finding_best(&vs, "learning rate");
            write_doc(
                &docs,
                "lr",
                "Learning rates a decade apart",
                "The default run at three peak learning rates (warmup then cosine to 10%), everything else equal.",
                &vs,
                &findings,
                &cmd,
            )?
        }
        "mix" => {
            // The default run mixes raw text in; the variant leaves it out.
            let vs = vec![
                ctx.variant("SFT only", "sft-only", clean.clone(), |c| {
                    c.mix_text.clear();
                    c.mix_fraction = 0.0;
                })?,
                ctx.baseline(
                    &format!(
                        "SFT + {:.0}% raw text (the default)",
                        100.0 * ctx.base_cfg.mix_fraction
                    ),
                    &clean,
                )?,
                ctx.variant("SFT + 5% raw text", "mix-5pct", clean.clone(), |c| {
                    c.mix_fraction = 0.05;
                })?,
            ];
            let findings = finding_mix(&vs);
            write_doc(
                &docs,
                "mix",
                "Mixing raw text into SFT: none, 2% (the default), 5%",
                "Fine-tuning shifts the model toward the chat format; mixing a little of the pretraining text (every token supervised) back in is the classic way to limit forgetting. Raw text: pretraining-corpus documents (never the held-out ones), cut into pieces of at most 256 tokens; the fraction counts examples, so 2% of examples is about 10% of tokens and 5% about 21%.",
                &vs,
                &findings,
                &cmd,
            )?
        }
        "quality" => {
            let noisy = noisy_set(&clean, 0.5, 7);
            let tok = manners::Tokenizer::from_dir(&assets.join("base"))?;
            let filter = quality_filter();
            let (filtered, report) = filter_quality(noisy.clone(), tok.hf(), &filter)?;
            eprintln!("quality filter: {report}");
            let mut small = clean.clone();
            manners::data::SplitMix64::new(11).shuffle(&mut small);
            small.truncate(a.few);
            let vs = vec![
                ctx.variant("noisy, no filter", "noisy", noisy, |_| {})?,
                ctx.variant("noisy, quality filter", "noisy-filtered", filtered, |_| {})?,
                ctx.variant(&format!("{} clean examples", a.few), "few", small, |c| {
                    // The same number of optimiser steps as the full set's run.
                    c.epochs *= 10.0;
                })?,
                ctx.baseline("all clean examples", &clean)?,
            ];
            let intro = format!(
                "Quality vs quantity. (1) The half-corrupted set with and without a quality filter ({filter:?}; it kept {} of {}). (2) A few hundred clean examples (trained for more epochs) vs all of them.",
                report.kept, report.examples
            );
            let findings = finding_best(&vs, "data");
            write_doc(
                &docs,
                "quality",
                "Quality filter on vs off; a few hundred examples vs all",
                &intro,
                &vs,
                &findings,
                &cmd,
            )?
        }
        other => anyhow::bail!("unknown experiment `{other}`: noise, lr, mix, quality"),
    };
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A seeded `rate` of the conversations corrupted, cycling the three kinds of corruption.
fn noisy_set(clean: &[Conversation], rate: f64, seed: u64) -> Vec<Conversation> {
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

/// Pretraining-corpus training documents (not the held-out ones) for the mixing experiment.
pub fn mix_source(assets: &Path) -> anyhow::Result<Vec<String>> {
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

fn acc(v: &Variant) -> f64 {
    v.summary
        .answers
        .as_ref()
        .map(|a| a.accuracy)
        .unwrap_or(0.0)
}

fn finding_noise(vs: &[Variant]) -> String {
    let (c, n) = (&vs[0], &vs[1]);
    format!(
        "Corrupting half the responses moves held-out answer accuracy from {:.1}% to {:.1}% and the clean-stop rate from {:.1}% to {:.1}%. The model learns the format and the noise alike: SFT copies what the data shows, so data quality bounds the result.",
        100.0 * acc(c),
        100.0 * acc(n),
        100.0
            * c.summary
                .answers
                .as_ref()
                .map(|a| a.clean_stop_rate)
                .unwrap_or(0.0),
        100.0
            * n.summary
                .answers
                .as_ref()
                .map(|a| a.clean_stop_rate)
                .unwrap_or(0.0)
    )
}

fn finding_mix(vs: &[Variant]) -> String {
    let base = vs[0].summary.text_loss;
    let parts: Vec<String> = vs
        .iter()
        .map(|v| {
            let t = v.summary.text_loss;
            format!(
                "{}: accuracy {:.1}%, raw-text loss {}",
                v.label,
                100.0 * acc(v),
                t.map(|x| format!("{x:.3}")).unwrap_or_default()
            ) + &match (t, base) {
                (Some(x), Some(b)) if !std::ptr::eq(v, &vs[0]) => {
                    format!(" ({:+.1}% vs none)", 100.0 * (x / b - 1.0))
                }
                _ => String::new(),
            }
        })
        .collect();
    format!(
        "{}. Raw text in the mix holds the raw-text loss down (less forgetting of the pretraining distribution) and, past a point, takes answer accuracy with it: the mix competes with the SFT examples for the same few steps.",
        parts.join("; ")
    )
}

fn finding_best(vs: &[Variant], what: &str) -> String {
    let best = vs.iter().max_by(|a, b| acc(a).total_cmp(&acc(b)));
    match best {
        Some(b) => format!(
            "Best held-out accuracy with {what}: **{}** ({:.1}%). {}",
            b.label,
            100.0 * acc(b),
            vs.iter()
                .map(|v| format!("{}: {:.1}%", v.label, 100.0 * acc(v)))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        None => String::new(),
    }
}
