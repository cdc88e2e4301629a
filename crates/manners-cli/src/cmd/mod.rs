//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod generate;
pub mod info;
pub mod pretrain;
pub mod train;

use anyhow::Context;
use manners::DeviceChoice;

/// Builds the device for a backend argument, saying which one was picked on stderr.
pub fn device(b: crate::args::BackendArg, quiet: bool) -> anyhow::Result<DeviceChoice> {
    let choice = manners::select_device(b.into()).context("choosing the backend")?;
    if !quiet {
        eprintln!("backend: {}", choice.description);
    }
    Ok(choice)
}

/// The shipped assets: `$MANNERS_ASSETS`, else `./assets`, else the source tree's `assets/`.
pub fn assets_dir() -> anyhow::Result<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("MANNERS_ASSETS").map(std::path::PathBuf::from),
        Some(std::path::PathBuf::from("assets")),
        Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets"
        ))),
    ];
    for c in candidates.into_iter().flatten() {
        if c.join("knowledge").is_dir() {
            return Ok(c);
        }
    }
    anyhow::bail!(
        "the assets folder was not found (set MANNERS_ASSETS, or run from the repository root)"
    )
}
