//! One module per subcommand.

pub mod chat;
pub mod generate;
pub mod info;
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
