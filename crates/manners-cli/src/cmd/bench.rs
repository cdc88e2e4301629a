//! `manners bench`: each measurement of `manners_bench` in its own child process of this
//! executable (so peak RSS is per measurement), interleaved over rounds with PyTorch's number
//! for the same shapes when Python with torch is given; then the table.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use manners_bench::{
    JOBS, Runs, SUPERVISED, medians, pick_median, render, torch_key, torch_metric,
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
    // Rounds interleave each measurement with its PyTorch counterpart, so a ratio compares two
    // runs minutes apart at most; the table shows the median over rounds.
    let rounds = a.rounds.max(1);
    let mut ours: Runs = Runs::new();
    let mut theirs: Runs = Runs::new();
    let mut torch_meta = None;
    let mut failed = Vec::new();
    for round in 1..=rounds {
        for job in &jobs {
            eprintln!("bench: {job} (round {round} of {rounds}) ...");
            // A failed run is kept as null, so runs of the same round stay aligned for the
            // same-round ratios; one failed measurement must not lose the others.
            let v = run_child(&exe, job, &a).unwrap_or_else(|e| {
                eprintln!("bench: {job} failed: {e:#}");
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("");
                failed.push(format!("{job}: {first}"));
                Value::Null
            });
            let ok = !v.is_null();
            ours.entry(job.to_string()).or_default().push(v);
            let (Some(py), Some(key)) = (&a.torch, torch_key(job)) else {
                continue;
            };
            let v = if ok {
                eprintln!("bench: PyTorch {key} ({}) ...", py.display());
                let mut t = torch_numbers(py, &assets, &a, key).unwrap_or(Value::Null);
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

/// One measurement in a child process of this executable (its own peak RSS).
fn run_child(exe: &Path, job: &str, a: &BenchArgs) -> anyhow::Result<Value> {
    let out = Command::new(exe)
        .args([
            "bench",
            "--job",
            job,
            "--steps",
            &a.steps.to_string(),
            "--backend",
            manners::BackendKind::from(a.backend).name(),
        ])
        .output()
        .with_context(|| format!("running {job}"))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{job}: bad output"))
}

/// One PyTorch configuration from the committed script.
fn torch_numbers(python: &Path, assets: &Path, a: &BenchArgs, key: &str) -> Option<Value> {
    let script = assets.join("../scripts/bench/torch_bench.py");
    let out = Command::new(python)
        .arg(&script)
        .args([
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
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PyTorch bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
