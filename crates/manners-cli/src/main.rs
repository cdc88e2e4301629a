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
    keep_freed_pages();
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

/// mimalloc's index of its `purge_delay` option (`mi_option_e` in mimalloc 3's `mimalloc.h`;
/// `libmimalloc-sys` names no constant for it). A test checks the index by the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Training allocates the same large buffers every step. By default mimalloc returns freed
/// pages to the system after a delay, and the next step faults them back in and has the kernel
/// clear them again: on the default run that was 330,000 page faults and about 4 s of system
/// time, 2-4% of the wall time (`docs/performance.md`). So freed pages are kept for reuse, as
/// PyTorch's caching allocators keep theirs; the resident size stays near its peak. The
/// environment still decides when it says anything (`MIMALLOC_PURGE_DELAY`, which mimalloc reads
/// itself).
#[allow(unsafe_code)]
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator this binary links; mimalloc reads it
        // each time it considers purging, and any value is valid (-1: never purge).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The index really is `purge_delay` (it holds that option's documented default, 1,000 ms in
    /// mimalloc 3, which no neighbouring option has), the binary turns purging off, and a value
    /// from the environment is left as it is.
    #[test]
    #[allow(unsafe_code)]
    fn the_allocator_keeps_freed_pages_unless_the_environment_chose() {
        // SAFETY: reads one integer option of the linked allocator.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(value) => {
                keep_freed_pages();
                assert_eq!(get().to_string(), value.trim());
            }
            Err(_) => {
                assert_eq!(
                    get(),
                    1000,
                    "not mimalloc 3's purge_delay: recheck the index"
                );
                keep_freed_pages();
                assert_eq!(get(), -1);
            }
        }
    }
}
