//! `report.md` and `loss.png` of a run folder, from its `metrics.jsonl`.

use std::fmt::Write as _;
use std::path::Path;

use manners_events::{RunInfo, RunSummary, TrainEvent};

use crate::config::TrainConfig;
use crate::error::Result;
use crate::files::{RunFiles, read_events};

/// Median of a list (NaN-free), for throughput figures.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Writes `loss.png` and `report.md`. A plot that cannot be drawn is noted, not fatal.
pub fn write(
    run_dir: &Path,
    cfg: &TrainConfig,
    info: &RunInfo,
    summary: &RunSummary,
    files: &RunFiles,
) -> Result<()> {
    let events = read_events(files.metrics_path()).unwrap_or_default();
    let mut train = Vec::new();
    let mut eval = Vec::new();
    let mut tps = Vec::new();
    let mut samples = Vec::new();
    let mut warnings = Vec::new();
    for ev in &events {
        match ev {
            TrainEvent::Step(s) if !s.skipped => {
                train.push((s.step as f64, s.loss));
                tps.push(s.tokens_per_sec);
            }
            TrainEvent::Eval(e) => eval.push((e.step as f64, e.loss)),
            TrainEvent::Sample(s) => samples.push(s.clone()),
            TrainEvent::Warning { step, message } => {
                warnings.push(format!("step {step}: {message}"))
            }
            _ => {}
        }
    }
    let plot = run_dir.join("loss.png");
    let title = format!("{} — loss", info.name);
    let plot_note = match manners_tui::plot_losses(&plot, &title, &train, &eval) {
        Ok(()) => "![loss](loss.png)".to_string(),
        Err(e) => format!("(loss plot not drawn: {e})"),
    };

    let mut md = String::new();
    let _ = writeln!(md, "# Run `{}`\n", info.name);
    let _ = writeln!(
        md,
        "Ended: **{}** after {} steps in {:.1} min.\n",
        summary.reason,
        summary.steps,
        summary.elapsed_secs / 60.0
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| kind | {:?} |", info.kind);
    let _ = writeln!(md, "| model | {} |", info.model);
    let _ = writeln!(
        md,
        "| parameters | {} ({} trained) |",
        info.params, info.trainable_params
    );
    let _ = writeln!(md, "| backend | {} |", info.backend);
    let _ = writeln!(md, "| data | {} |", info.data);
    let _ = writeln!(
        md,
        "| examples | {} train, {} held out |",
        info.train_examples, info.eval_examples
    );
    if !info.template.is_empty() {
        let _ = writeln!(md, "| template | {} (mask: {}) |", info.template, cfg.mask);
    }
    let _ = writeln!(
        md,
        "| batch | {} rows x {} accumulation, max_len {}, packing {} |",
        cfg.batch_size, cfg.grad_accum, cfg.max_len, cfg.pack
    );
    let _ = writeln!(
        md,
        "| optimiser | AdamW lr {:e} ({:?}, warmup {}, floor {}x), wd {}, clip {:?} |",
        cfg.lr,
        cfg.schedule,
        cfg.warmup_steps.unwrap_or(0),
        cfg.min_lr_ratio,
        cfg.weight_decay,
        cfg.clip_grad_norm
    );
    for (k, v) in &info.facts {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "\n## Results\n");
    let _ = writeln!(md, "| metric | value |\n|---|---|");
    if let Some(l) = summary.final_loss {
        let _ = writeln!(md, "| final train loss | {l:.4} |");
    }
    if let Some(l) = summary.final_eval_loss {
        let _ = writeln!(
            md,
            "| final held-out loss | {l:.4} (perplexity {:.2}) |",
            l.exp()
        );
    }
    if let Some(first) = eval.first() {
        let _ = writeln!(
            md,
            "| first held-out loss | {:.4} (step {}) |",
            first.1, first.0
        );
    }
    if let Some(m) = median(tps) {
        let _ = writeln!(md, "| median throughput | {m:.0} tokens/s |");
    }
    let _ = writeln!(md, "\n{plot_note}\n");
    let last_step = samples.last().map(|s| s.step);
    let last: Vec<_> = samples
        .iter()
        .filter(|s| Some(s.step) == last_step)
        .collect();
    if !last.is_empty() {
        let _ = writeln!(md, "## Samples at step {}\n", last_step.unwrap_or(0));
        for s in last {
            let _ = writeln!(md, "**Prompt:** {}\n", s.prompt.trim());
            let _ = writeln!(
                md,
                "**Response{}:** {}\n",
                if s.stopped {
                    ""
                } else {
                    " (hit the token budget)"
                },
                s.response.trim()
            );
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(md, "## Warnings\n");
        for w in warnings.iter().take(50) {
            let _ = writeln!(md, "- {w}");
        }
    }
    let _ = writeln!(
        md,
        "\nFull config: `run.toml`. Every event: `metrics.jsonl`."
    );
    manners_model::write_atomic(&run_dir.join("report.md"), md.as_bytes())?;
    Ok(())
}
