//! `manners bench`: each measurement of `manners_bench` in its own child process of this
//! executable (so peak RSS is per measurement), interleaved over rounds with PyTorch's number
//! for the same shapes when Python with torch is given; then the table.

use std::path::Path;
use std::process::{Command, ExitCode, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use manners_bench::turns::{Referee, TURNS_ENV};
use manners_bench::{
    JOBS, Runs, SUPERVISED, medians, pick_median, render, takes_turns, torch_key, torch_metric,
};
use serde_json::Value;

use crate::args::BenchArgs;

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let assets = manners_recipes::assets_dir()?;
    if let Some(job) = &a.job {
        let dev = manners::select_device(a.backend.into())?;
        let v = manners_bench::run_job(job, &dev, a.steps, &assets)?;
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    let jobs: Vec<&str> = JOBS
        .iter()
        .copied()
        .filter(|j| a.only.is_empty() || a.only.iter().any(|o| j.contains(o.as_str())))
        .collect();
    // Rounds interleave each measurement with its PyTorch counterpart (a training step takes
    // turns with PyTorch's, step by step), so a ratio compares runs of the same minutes; the
    // table shows the median over rounds.
    let rounds = a.rounds.max(1);
    let mut ours: Runs = Runs::new();
    let mut theirs: Runs = Runs::new();
    let mut torch_meta = None;
    let mut failed = Vec::new();
    for round in 1..=rounds {
        for job in &jobs {
            eprintln!("bench: {job} (round {round} of {rounds}) ...");
            let key = a.torch.as_ref().and(torch_key(job));
            // A training step beside PyTorch's runs paired: both processes at once, taking turns
            // step by step, so that a slow stretch of this shared machine lands on both sides.
            let (mine, torch) = match (&a.torch, key) {
                (Some(py), Some(key)) if takes_turns(job) => {
                    eprintln!("bench: PyTorch {key} ({}), taking turns ...", py.display());
                    let torch = torch_command(py, &assets, &a, key);
                    let (m, t) = run_paired(child(&exe, job, &a), torch)?;
                    (m, Some(t))
                }
                _ => (run_to_end(child(&exe, job, &a), job), None),
            };
            // A failed run is kept as null, so runs of the same round stay aligned for the
            // same-round ratios; one failed measurement must not lose the others.
            let v = mine.unwrap_or_else(|e| {
                eprintln!("bench: {job} failed: {e:#}");
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("");
                failed.push(format!("{job}: {first}"));
                Value::Null
            });
            let ok = !v.is_null();
            ours.entry(job.to_string()).or_default().push(v);
            let (Some(py), Some(key)) = (&a.torch, key) else {
                continue;
            };
            let v = if ok {
                let t = match torch {
                    Some(t) => t,
                    None => {
                        eprintln!("bench: PyTorch {key} ({}) ...", py.display());
                        run_to_end(torch_command(py, &assets, &a, key), "PyTorch")
                    }
                };
                let mut t = t
                    .inspect_err(|e| eprintln!("PyTorch bench failed: {e:#}"))
                    .unwrap_or(Value::Null);
                let v = t.as_object_mut().and_then(|o| o.remove(key));
                if v.is_none() {
                    failed.push(format!("PyTorch {key}"));
                } else {
                    torch_meta = Some(t);
                }
                v
            } else {
                None
            };
            theirs
                .entry(key.to_string())
                .or_default()
                .push(v.unwrap_or(Value::Null));
        }
    }
    let results = medians(&ours, &theirs);
    let torch = torch_meta.map(|mut meta| {
        for (key, runs) in &theirs {
            meta[key.as_str()] = pick_median(runs, torch_metric(key));
        }
        meta
    });
    println!("{}", render(&results, torch.as_ref()));
    if let Some(p) = &a.json {
        let all = serde_json::json!({
            "manners": results,
            "pytorch": torch,
            "rounds": { "count": rounds, "manners": ours, "pytorch": theirs },
            "failed": failed,
        });
        std::fs::write(p, serde_json::to_string_pretty(&all)?)?;
        eprintln!("wrote {}", p.display());
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("bench: {} measurement(s) failed:", failed.len());
        for f in &failed {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// One measurement in a child process of this executable (its own peak RSS). The child's
/// allocator keeps freed pages for reuse, as every run of this binary does (`keep_freed_pages`
/// in `main.rs`), unless the caller's `MIMALLOC_PURGE_DELAY` says otherwise: so the bench times
/// what `manners train` runs.
fn child(exe: &Path, job: &str, a: &BenchArgs) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "bench",
        "--job",
        job,
        "--steps",
        &a.steps.to_string(),
        "--backend",
        manners::BackendKind::from(a.backend).name(),
    ]);
    c
}

/// One PyTorch configuration from the committed script.
fn torch_command(python: &Path, assets: &Path, a: &BenchArgs, key: &str) -> Command {
    let script = assets.join("../scripts/bench/torch_bench.py");
    let mut c = Command::new(python);
    c.arg(&script).args([
        "--steps",
        &a.steps.to_string(),
        "--supervised",
        &SUPERVISED.to_string(),
        "--device",
        &a.torch_device,
        "--only",
        key,
        // Also eager with the head on supervised positions and its torch.compile.
        "--variants",
        "all",
    ]);
    c
}

/// Runs `c` to the end; its standard output as JSON.
fn run_to_end(mut c: Command, what: &str) -> anyhow::Result<Value> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    parse(out, what)
}

fn parse(out: Output, what: &str) -> anyhow::Result<Value> {
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what}: bad output"))
}

/// Runs manners' measurement and PyTorch's at once, taking turns under a referee
/// ([`manners_bench::turns`]); each one's JSON. An error here is the referee's own (the
/// measurements' errors come back in their results).
fn run_paired(
    mut mine: Command,
    mut torch: Command,
) -> anyhow::Result<(anyhow::Result<Value>, anyhow::Result<Value>)> {
    let referee = Referee::bind().context("the bench referee's localhost socket")?;
    let addr = referee.addr()?;
    let start = |c: &mut Command, what: &'static str| {
        let child = c
            .env(TURNS_ENV, &addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"));
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let handle = std::thread::spawn(move || {
            let out = child.and_then(|c| c.wait_with_output().context("waiting"));
            flag.store(true, Ordering::SeqCst);
            out.and_then(|o| parse(o, what))
        });
        (handle, done)
    };
    let (m, m_done) = start(&mut mine, "manners");
    let (t, t_done) = start(&mut torch, "PyTorch");
    let fm = || m_done.load(Ordering::SeqCst);
    let ft = || t_done.load(Ordering::SeqCst);
    let mut log = Vec::new();
    let played = referee.run(&[(b'm', &fm), (b't', &ft)], &mut log);
    let join = |h: std::thread::JoinHandle<anyhow::Result<Value>>| {
        h.join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the bench thread panicked")))
    };
    let (m, t) = (join(m), join(t));
    let played = played.context("taking turns")?;
    let turns: Vec<String> = played
        .iter()
        .map(|p| format!("{} {}", p.tag as char, p.turns))
        .collect();
    eprintln!("bench: turns taken: {}", turns.join(", "));
    // Both sides take the same turns (building, warm-up, each timed step, the peak); counts that
    // differ mean the two scripts disagree on the steps and the pairing is off.
    if played.len() == 2 && played[0].turns != played[1].turns {
        eprintln!("bench: warning: the two sides took different numbers of turns");
    }
    Ok((m, t))
}
