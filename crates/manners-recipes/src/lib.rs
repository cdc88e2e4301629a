//! # manners-recipes
//!
//! What manners runs on its own assets, as library code an embedder can call: the embedded
//! default fine-tune and its before/after comparison ([`default_run`]), the two-stage
//! pretraining curriculum of the shipped base model ([`pretrain`]), the SFT experiments
//! ([`experiments`]), and the evaluation data they read ([`eval_data`]). Written against the
//! public `manners` facade, the way a user would.
//!
//! Recipes train through a runner the caller passes (`FnMut(TrainConfig) -> Result<..>`): the
//! CLI's shows the dashboard; an embedder's can be `manners::train::train` with any sink.
//!
//! ```no_run
//! use manners::events::{Control, NullSink};
//! use manners_recipes::{RecipeError, assets_dir, default_run};
//! # fn main() -> Result<(), RecipeError> {
//! let assets = assets_dir()?;
//! let cfg = default_run::default_config(&assets);
//! default_run::write_default_mix(&assets, &cfg)?;
//! let device = manners::select_device(manners::BackendKind::Auto)?;
//! let out = manners::train::train(cfg, &device, &mut NullSink, &Control::new())?;
//! if let Some(tuned) = &out.final_dir {
//!     let cmp = default_run::before_after_report(
//!         &assets, &assets.join("base"), tuned, &out.run_dir, &device.device,
//!     )?;
//!     println!("{}", cmp.table);
//! }
//! # Ok(()) }
//! ```

pub mod default_run;
mod error;
pub mod eval_data;
pub mod experiments;
pub mod pretrain;

use std::path::PathBuf;

pub use error::{RecipeError, Result};

/// The shipped assets: `$MANNERS_ASSETS`, else `./assets`, else the source tree's `assets/`.
pub fn assets_dir() -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("MANNERS_ASSETS").map(PathBuf::from),
        Some(PathBuf::from("assets")),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets"
        ))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|c| c.join("knowledge").is_dir())
        .ok_or_else(|| {
            RecipeError::Invalid(
                "the assets folder was not found (set MANNERS_ASSETS, or run from the \
                 repository root)"
                    .into(),
            )
        })
}
