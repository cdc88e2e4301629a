//! `manners train`: flags -> `TrainConfig`, the trainer on a worker thread, the dashboard (or
//! plain log lines) on this one.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::{Context, bail};
use manners::events::{Control, TrainEvent};
use manners::train::{TrainConfig, TrainOutcome};
use manners_tui::{DashboardEnd, DashboardOptions, LogPrinter, run_dashboard};

use crate::args::TrainArgs;

/// Applies the flags the user gave on top of `cfg`.
pub fn apply_flags(a: &TrainArgs, cfg: &mut TrainConfig) -> anyhow::Result<()> {
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = &a.$field {
                cfg.$field = v.clone().into();
            }
        };
    }
    if let Some(m) = &a.model {
        cfg.model = Some(m.clone());
    }
    if !a.data.is_empty() {
        cfg.data = a.data.clone();
    }
    if !a.eval_data.is_empty() {
        cfg.eval_data = a.eval_data.clone();
    }
    set!(format);
    if let Some(t) = &a.template {
        cfg.template = Some(t.clone());
    }
    set!(mask);
    if a.pack {
        cfg.pack = true;
    }
    if a.no_pack {
        cfg.pack = false;
    }
    set!(max_len);
    set!(batch_size);
    set!(grad_accum);
    set!(lr);
    if let Some(w) = a.warmup {
        cfg.warmup_steps = Some(w);
    }
    if let Some(s) = &a.schedule {
        cfg.schedule = match s.as_str() {
            "cosine" => manners::train::ScheduleKind::Cosine,
            "linear" => manners::train::ScheduleKind::Linear,
            "constant" => manners::train::ScheduleKind::Constant,
            other => bail!("--schedule {other}: expected cosine, linear or constant"),
        };
    }
    if let Some(e) = a.epochs {
        cfg.epochs = e;
        cfg.max_steps = None;
    }
    if let Some(s) = a.max_steps {
        cfg.max_steps = Some(s);
    }
    set!(weight_decay);
    if let Some(c) = a.clip {
        cfg.clip_grad_norm = (c > 0.0).then_some(c);
    }
    set!(dropout);
    if !a.mix_text.is_empty() {
        cfg.mix_text = a.mix_text.clone();
    }
    set!(mix_fraction);
    set!(eval_every);
    set!(sample_every);
    set!(save_every);
    set!(log_every);
    if !a.sample_prompts.is_empty() {
        cfg.sample_prompts = a.sample_prompts.clone();
    }
    if let Some(p) = a.early_stopping {
        cfg.early_stopping_patience = Some(p);
    }
    set!(seed);
    if let Some(o) = &a.out {
        cfg.out_dir = o.clone();
    }
    if let Some(n) = &a.name {
        cfg.name = Some(n.clone());
    }
    if let Some(r) = a.lora_rank {
        let mut l = cfg.lora.clone().unwrap_or_default();
        l.rank = r;
        l.alpha = a.lora_alpha.unwrap_or(2.0 * r as f64);
        if !a.lora_targets.is_empty() {
            l.targets = a.lora_targets.clone();
        }
        cfg.lora = Some(l);
    }
    if let Some(b) = a.backend {
        cfg.backend = manners::BackendKind::from(b).name().to_string();
    }
    Ok(())
}

/// The embedded default: the shipped base model fine-tuned on the shipped instruction set.
pub fn default_config(assets: &std::path::Path) -> TrainConfig {
    TrainConfig {
        mix_text: vec![default_mix_path(&TrainConfig::default().out_dir)],
        mix_fraction: DEFAULT_MIX_FRACTION,
        model: Some(assets.join("base")),
        data: vec![assets.join("sft/train.jsonl")],
        eval_data: vec![assets.join("sft/heldout.jsonl")],
        template: Some("chatml".into()),
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

/// Learning rate of the default run (docs/experiments/lr.md has the comparison).
pub const DEFAULT_LR: f64 = 3e-4;
/// Epochs of the default run. One: held-out loss bottoms out after about one epoch, and on the
/// shipped base 3 epochs answered 51% of held-out questions where 1 answers 58%.
pub const DEFAULT_EPOCHS: f64 = 1.0;
/// Share of the default run's examples that are raw pretraining text (limits forgetting; see
/// docs/experiments/mix.md: none forgets 11%, 5% costs 10 points of accuracy, 2% keeps both).
pub const DEFAULT_MIX_FRACTION: f64 = 0.02;

/// Where the default run's raw text goes: written from `assets/` on first use.
pub fn default_mix_path(out_dir: &std::path::Path) -> std::path::PathBuf {
    out_dir.join("data/default-mix-text.jsonl")
}

/// Writes the default run's raw text (pretraining-corpus training documents, never the
/// held-out ones) unless it is already there. Deterministic.
pub fn write_default_mix(assets: &std::path::Path, path: &std::path::Path) -> anyhow::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let texts = super::experiment::mix_source(assets)?;
    manners::data::corpus::write_jsonl(path, &texts)?;
    Ok(())
}

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let is_default =
        a.config.is_none() && a.resume.is_none() && a.model.is_none() && a.data.is_empty();
    let mut cfg = match (&a.config, &a.resume) {
        (Some(p), _) => TrainConfig::from_toml_file(p)?,
        (None, Some(dir)) => TrainConfig::from_toml_file(&dir.join("run.toml"))
            .with_context(|| format!("{} is not a run folder", dir.display()))?,
        (None, None) if is_default => {
            let assets = super::assets_dir()?;
            if !assets.join("base/model.safetensors").is_file() {
                bail!(
                    "the shipped base model is missing ({}); run `manners pretrain` first",
                    assets.join("base").display()
                );
            }
            eprintln!("manners: fine-tuning the shipped base model on the shipped instruction set");
            eprintln!("         (give --model and --data to train your own; see --help)");
            default_config(&assets)
        }
        (None, None) => TrainConfig::default(),
    };
    apply_flags(&a, &mut cfg)?;
    if is_default {
        let assets = super::assets_dir()?;
        for p in cfg.mix_text.clone() {
            if p.ends_with("default-mix-text.jsonl") {
                write_default_mix(&assets, &p)?;
            }
        }
    }
    if cfg.model.is_none() && cfg.init.is_none() {
        bail!("no --model given (a Hugging Face GPT-2 folder or a manners final/ folder)");
    }
    cfg.validate()?;
    let backend: manners::BackendKind = cfg.backend.parse()?;
    let device = manners::select_device(backend).context("choosing the backend")?;
    let base = cfg.model.clone();
    let outcome = run_with_ui(cfg, device.clone(), a.resume.clone(), a.no_tui)?;
    print_outcome(&outcome);
    if is_default && let (Some(base), Some(tuned)) = (base, &outcome.final_dir) {
        before_after_report(&base, tuned, &outcome.run_dir, &device)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the before/after table on the held-out questions and appends it to `report.md`.
fn before_after_report(
    base: &std::path::Path,
    tuned: &std::path::Path,
    run_dir: &std::path::Path,
    device: &manners::DeviceChoice,
) -> anyhow::Result<()> {
    use manners::train::eval::{EvalOptions, comparison_markdown, samples_markdown};
    eprintln!("\nevaluating base and tuned models on the held-out questions...");
    let data = super::eval::load_eval_data(&crate::args::EvalDataArgs::default())?;
    let opts = EvalOptions {
        keep_samples: 6,
        ..EvalOptions::default()
    };
    let cols = super::eval::before_after(base, tuned, &data, &device.device, &opts)?;
    let table = comparison_markdown(&cols);
    let samples = samples_markdown(&cols, 6);
    println!("\n{table}\n{samples}");
    let report = run_dir.join("report.md");
    let mut md = std::fs::read_to_string(&report).unwrap_or_default();
    md.push_str("\n## Before and after fine-tuning (held-out questions)\n\n");
    md.push_str(&format!(
        "{} held-out questions about facts the instruction set never mentions.\n\n",
        data.conversations.len()
    ));
    md.push_str(&table);
    md.push_str("\n### Answers side by side\n\n");
    md.push_str(&samples);
    manners::write_atomic(&report, md.as_bytes())?;
    Ok(())
}

/// Runs training with the dashboard when stdout and stderr are terminals (and `--no-tui` is not
/// given), else with plain log lines. Ctrl-C asks the trainer to checkpoint and stop; a second
/// Ctrl-C exits at once.
pub fn run_with_ui(
    cfg: TrainConfig,
    device: manners::DeviceChoice,
    resume: Option<std::path::PathBuf>,
    no_tui: bool,
) -> anyhow::Result<TrainOutcome> {
    let control = Control::new();
    let tui = !no_tui && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let train = move |sink: &mut dyn manners::events::EventSink, control: &Control| match &resume {
        Some(dir) => {
            let c = cfg.clone();
            manners::train::resume(
                dir,
                &device,
                move |x| apply_resume_edits(x, &c),
                sink,
                control,
            )
        }
        None => manners::train::train(cfg, &device, sink, control),
    };
    if tui {
        let (tx, rx) = mpsc::channel::<TrainEvent>();
        let worker_control = control.clone();
        let worker = std::thread::Builder::new()
            .name("trainer".into())
            .spawn(move || {
                let mut sink = tx;
                train(&mut sink, &worker_control)
            })?;
        let out = run_dashboard(rx, control, DashboardOptions::default())?;
        if matches!(out.end, DashboardEnd::ForceQuit) {
            std::process::exit(130);
        }
        match worker.join() {
            Ok(r) => Ok(r?),
            Err(_) => bail!("the trainer thread panicked (see the message above)"),
        }
    } else {
        install_ctrl_c(&control);
        let mut printer = LogPrinter::stderr(10);
        Ok(train(&mut printer, &control)?)
    }
}

/// On resume the saved config is used; flags given with `--resume` may extend the run.
fn apply_resume_edits(saved: &mut TrainConfig, given: &TrainConfig) {
    saved.max_steps = given.max_steps.or(saved.max_steps);
    saved.epochs = given.epochs;
    saved.backend = given.backend.clone();
}

fn install_ctrl_c(control: &Control) {
    let c = control.clone();
    let mut hits = 0;
    let _ = ctrlc::set_handler(move || {
        hits += 1;
        if hits == 1 {
            eprintln!("\nstopping: writing a checkpoint (Ctrl-C again to exit now)");
            c.request_stop();
        } else {
            std::process::exit(130);
        }
    });
}

fn print_outcome(o: &TrainOutcome) {
    let s = &o.summary;
    eprintln!();
    eprintln!("run        {}", o.run_dir.display());
    eprintln!(
        "ended      {} after {} steps ({:.1} min)",
        s.reason,
        s.steps,
        s.elapsed_secs / 60.0
    );
    if let Some(l) = s.final_loss {
        eprintln!("train loss {l:.4}");
    }
    if let Some(l) = s.final_eval_loss {
        eprintln!("eval loss  {l:.4} (perplexity {:.2})", l.exp());
    }
    match &o.final_dir {
        Some(d) => eprintln!(
            "model      {}  (try: manners chat --model {})",
            d.display(),
            d.display()
        ),
        None => eprintln!("resume     manners train --resume {}", o.run_dir.display()),
    }
    eprintln!("report     {}", o.run_dir.join("report.md").display());
}
