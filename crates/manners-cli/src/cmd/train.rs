//! `manners train`: flags -> `TrainConfig`, the trainer on a worker thread, the dashboard (or
//! plain log lines) on this one, the report writer beside it; the embedded default (no model
//! or data given) runs the default recipe and prints its before/after table.

use std::process::ExitCode;

use anyhow::{Context, bail};
use manners::train::{TrainConfig, TrainOutcome};
use manners_recipes::default_run;

use crate::args::TrainArgs;
use crate::ui::run_with_ui;

/// Applies the flags the user gave on top of `cfg`.
pub fn apply_flags(a: &TrainArgs, cfg: &mut TrainConfig) {
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
    if a.mask_reasoning {
        cfg.mask_reasoning = true;
    }
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
    set!(schedule);
    if let Some(e) = a.epochs {
        cfg.epochs = e;
        cfg.max_steps = None;
    }
    if let Some(s) = a.max_steps {
        cfg.max_steps = Some(s);
    }
    set!(weight_decay);
    set!(beta1);
    set!(beta2);
    set!(min_lr_ratio);
    set!(truncation);
    set!(bad_records);
    set!(eval_fraction);
    set!(keep_checkpoints);
    if a.dedup {
        cfg.dedup = true;
    }
    set!(min_response_tokens);
    set!(max_response_tokens);
    set!(max_prompt_ratio);
    set!(min_distinct_ratio);
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
    set!(diverge_ratio);
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
        cfg.backend = b.into();
    }
    if let Some(d) = &a.devices {
        cfg.devices = Some(d.clone());
    }
    if let Some(r) = a.reduce {
        cfg.reduce = r;
    }
    set!(attention_keep_mib);
}

/// The devices a run trains on: `cfg.devices` parsed, or the one device of `cfg.backend`.
pub fn devices_of(cfg: &TrainConfig) -> anyhow::Result<manners::DeviceSet> {
    let mut set = match cfg.devices.as_deref() {
        Some(spec) => manners::parse_devices(spec, cfg.backend)?,
        None => manners::select_device(cfg.backend)
            .context("choosing the backend")?
            .into(),
    };
    set.reduce = cfg.reduce;
    set.resolved_reduce()?;
    Ok(set)
}

/// The exit status of a run stopped before its end (`q` or Ctrl-C) with a checkpoint to
/// resume from; 0 is a completed run, 1 an error, 130 a second Ctrl-C (no checkpoint).
pub const STOPPED: u8 = 3;

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let is_default =
        a.config.is_none() && a.resume.is_none() && a.model.is_none() && a.data.is_empty();
    let assets = is_default.then(manners_recipes::assets_dir).transpose()?;
    let mut cfg = match (&a.config, &a.resume, &assets) {
        (Some(p), _, _) => TrainConfig::from_toml_file(p)?,
        (None, Some(dir), _) => TrainConfig::from_toml_file(&dir.join("run.toml"))
            .with_context(|| format!("{} is not a run folder", dir.display()))?,
        (None, None, Some(assets)) => {
            if !assets.join("base/model.safetensors").is_file() {
                bail!(
                    "the shipped base model is missing ({}); run `manners pretrain` first",
                    assets.join("base").display()
                );
            }
            eprintln!("manners: fine-tuning the shipped base model on the shipped instruction set");
            eprintln!("         (give --model and --data to train your own; see --help)");
            default_run::default_config(assets)
        }
        (None, None, None) => TrainConfig::default(),
    };
    apply_flags(&a, &mut cfg);
    if let Some(assets) = &assets {
        default_run::place_default_mix(&mut cfg);
        default_run::write_default_mix(assets, &cfg)?;
    }
    if cfg.model.is_none() && cfg.init.is_none() {
        bail!("no --model given (a Hugging Face model folder or a manners final/ folder)");
    }
    cfg.validate()?;
    let devices = devices_of(&cfg)?;
    let device = devices.main().clone();
    if devices.len() > 1 {
        eprintln!("devices: {}", devices.describe());
    }
    if a.dry_run {
        println!("{}", manners::train::dry_run(cfg, &device)?);
        return Ok(ExitCode::SUCCESS);
    }
    let base = cfg.model.clone();
    let outcome = run_with_ui(cfg, devices, a.resume.clone(), a.no_tui)?;
    print_outcome(&outcome);
    if outcome.final_dir.is_none() {
        // Stopped (q, Ctrl-C) with a checkpoint: not an error, not a finished run either.
        return Ok(ExitCode::from(STOPPED));
    }
    if let (Some(assets), Some(base), Some(tuned)) = (&assets, base, &outcome.final_dir) {
        eprintln!("\nevaluating base and tuned models on the held-out questions...");
        let cmp = default_run::before_after_report(
            assets,
            &base,
            tuned,
            &outcome.run_dir,
            &device.device,
        )?;
        println!("\n{}\n{}", cmp.table, cmp.samples);
    }
    Ok(ExitCode::SUCCESS)
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
