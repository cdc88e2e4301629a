//! `manners`: supervised fine-tuning of GPT-style models, from the command line.
//!
//! The binary only parses arguments, turns them into library configs, wires threads and prints.
//! Everything else lives in the `manners` library crates.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod cmd;

use args::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (e.g. `manners ... | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Generate(a) => cmd::generate::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Train(a) => cmd::train::run(*a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Pretrain(a) => cmd::pretrain::run(a),
        Command::Data(a) => cmd::data::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Compare(a) => cmd::eval::compare(a),
    }
}
