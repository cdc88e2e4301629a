//! `manners pretrain`: flags -> the pretraining curriculum (see
//! `manners_recipes::pretrain`), trained with the dashboard; `--resume` continues a stopped
//! stage.

use std::process::ExitCode;

use manners::train::TrainConfig;
use manners_recipes::pretrain::{PretrainPlan, pretrain};

use crate::args::PretrainArgs;

pub fn run(a: PretrainArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.resume {
        let cfg = TrainConfig::from_toml_file(&dir.join("run.toml"))?;
        let device = manners::select_device(cfg.backend)?;
        let out = crate::ui::run_with_ui(cfg, device.into(), Some(dir.clone()), a.no_tui)?;
        eprintln!(
            "finished {}; run `manners pretrain` again to go on to the next stage",
            out.run_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let assets = manners_recipes::assets_dir()?;
    let plan = PretrainPlan {
        out: a.out,
        name: a.name,
        vocab_size: a.vocab_size,
        n_layer: a.n_layer,
        n_head: a.n_head,
        n_embd: a.n_embd,
        n_positions: a.n_positions,
        batch_size: a.batch_size,
        lr: a.lr,
        epochs: a.epochs,
        max_steps: a.max_steps,
        fact_repeats: a.fact_repeats,
        focus_steps: a.focus_steps,
        focus_lr: a.focus_lr,
        focus_qa_repeats: a.focus_qa_repeats,
        focus_book_fraction: a.focus_book_fraction,
        seed: a.seed,
        backend: a.backend.into(),
    };
    let device = manners::select_device(plan.backend)?;
    let mut run = crate::ui::runner(device, a.no_tui);
    let base = pretrain(&plan, &assets, &mut run)?;
    eprintln!(
        "base model: {} (ship it: rm -rf assets/base && cp -r {} assets/base)",
        base.display(),
        base.display()
    );
    Ok(ExitCode::SUCCESS)
}
