//! One module per subcommand: each parses its arguments into library calls and prints.

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
