//! `manners experiment noise|lr|mix|quality`: flags -> the recipe, trained with the dashboard.

use std::process::ExitCode;

use manners_recipes::experiments::{ExperimentPlan, run_experiment};

use crate::args::ExperimentArgs;

pub fn run(a: ExperimentArgs) -> anyhow::Result<ExitCode> {
    let assets = manners_recipes::assets_dir()?;
    let device = manners::select_device(a.backend.into())?;
    let plan = ExperimentPlan {
        name: a.name,
        out: a.out,
        docs: a.docs,
        epochs: a.epochs,
        few: a.few,
        device: device.device.clone(),
    };
    let mut run = crate::ui::runner(device, a.no_tui);
    let path = run_experiment(&plan, &assets, &mut run)?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
