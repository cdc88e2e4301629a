//! `manners`: supervised fine-tuning of GPT-style models, from the command line.
//!
//! The binary only parses arguments, turns them into library configs, wires threads and prints.
//! Everything else lives in the `manners` library crates.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod cmd;
mod ui;

use args::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_mesa_warnings();
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
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once: our errors already show their source (`path:
/// Is a directory`), which `{:#}` would repeat.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
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
        Command::Export(a) => cmd::export::run(a),
        Command::Logits(a) => cmd::export::logits(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Experiment(a) => cmd::experiment::run(a),
        Command::ServeDevice(a) => cmd::info::serve_device(a),
    }
}

/// Mesa's Vulkan loader complains on stderr when `XDG_RUNTIME_DIR` is unset (containers, CI),
/// every time wgpu probes for an adapter. Point it at the temp dir before any thread starts.
#[allow(unsafe_code)]
fn quiet_mesa_warnings() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called first thing in main, before any other thread exists, so nothing can
        // read the environment concurrently.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}
