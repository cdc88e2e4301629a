//! `manners bench`: one table of training throughput, MFU, peak memory, generation speed and
//! an SFT epoch against a padded loop, with PyTorch's numbers beside ours when Python with torch
//! is available. Each measurement runs in its own child process (peak RSS is per measurement).

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use manners::data::{
    BadRecordPolicy, Format, LengthPolicy, MaskMode, encode_dataset, read_conversations,
};
use manners::train::bench::{self, BenchShape};
use serde_json::Value;

use crate::args::BenchArgs;

const JOBS: &[&str] = &[
    "train-tiny",
    "train-gpt2-small",
    "train-gpt2-small-lora",
    "adamw-gpt2-small",
    "generate-gpt2-small",
    "epoch-manners",
    "epoch-padded",
];

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(job) = &a.job {
        let v = run_job(job, &a)?;
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
                let mut t = torch_numbers(py, &a, key).unwrap_or(Value::Null);
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
    let table = render(&results, torch.as_ref());
    println!("{table}");
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

/// Every run of each measurement, in round order.
type Runs = std::collections::BTreeMap<String, Vec<Value>>;

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

/// The PyTorch configuration a measurement is compared with.
fn torch_key(job: &str) -> Option<&'static str> {
    match job {
        "train-tiny" => Some("tiny"),
        "train-gpt2-small" => Some("gpt2-small"),
        "generate-gpt2-small" => Some("generate"),
        _ => None,
    }
}

/// The number that picks each measurement's median run.
fn metric(job: &str) -> &'static str {
    match job {
        j if j.starts_with("train") => "tokens_per_sec",
        j if j.starts_with("generate") => "cached_tokens_per_sec",
        j if j.starts_with("adamw") => "burn_secs",
        _ => "secs",
    }
}

fn torch_metric(key: &str) -> &'static str {
    if key == "generate" {
        "cached_tokens_per_sec"
    } else {
        "tokens_per_sec"
    }
}

fn median_of(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// The run whose `key` is the median over rounds (a real run, so its numbers belong together).
fn pick_median(runs: &[Value], key: &str) -> Value {
    let mut order: Vec<&Value> = runs.iter().filter(|v| !v.is_null()).collect();
    order.sort_by(|x, y| {
        let (x, y) = (f(x, key).unwrap_or(f64::NAN), f(y, key).unwrap_or(f64::NAN));
        x.total_cmp(&y)
    });
    order
        .get(order.len() / 2)
        .map_or(Value::Null, |v| (*v).clone())
}

/// Each measurement's median run, with the median over rounds of each same-round ratio:
/// `ratio_vs_pytorch` for training and generation, `speedup_vs_padded` for the epoch and
/// `speedup` (Burn's AdamW time over ours) for the optimiser update.
fn medians(ours: &Runs, theirs: &Runs) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (job, runs) in ours {
        let mut v = pick_median(runs, metric(job));
        if v.is_null() {
            continue; // every round failed (listed under "failed")
        }
        let key = metric(job);
        if let Some(t) = torch_key(job).and_then(|k| theirs.get(k)) {
            let tk = torch_metric(torch_key(job).unwrap_or_default());
            let r = runs
                .iter()
                .zip(t)
                .filter_map(|(o, t)| Some(f(o, key)? / f(t, tk)?));
            v["ratio_vs_pytorch"] = median_of(r.collect()).into();
        }
        if job == "adamw-gpt2-small" {
            let r = runs
                .iter()
                .filter_map(|o| Some(f(o, "burn_secs")? / f(o, "manners_secs")?));
            v["speedup"] = median_of(r.collect()).into();
        }
        if job == "epoch-manners"
            && let Some(padded) = ours.get("epoch-padded")
        {
            let r = runs
                .iter()
                .zip(padded)
                .filter_map(|(m, p)| Some(f(p, "secs")? / f(m, "secs")?));
            v["speedup_vs_padded"] = median_of(r.collect()).into();
        }
        v["rounds"] = runs.iter().filter(|r| !r.is_null()).count().into();
        out.insert(job.clone(), v);
    }
    out
}

fn device(a: &BenchArgs) -> anyhow::Result<manners::DeviceChoice> {
    Ok(manners::select_device(a.backend.into())?)
}

fn run_job(job: &str, a: &BenchArgs) -> anyhow::Result<Value> {
    let dev = device(a)?;
    let steps = a.steps;
    let v = match job {
        "train-tiny" => serde_json::to_value(bench::train_step(
            &BenchShape::tiny(),
            &dev.device,
            SUPERVISED,
            2,
            steps,
            None,
        ))?,
        "train-gpt2-small" => serde_json::to_value(bench::train_step(
            &BenchShape::gpt2_small(),
            &dev.device,
            SUPERVISED,
            1,
            steps.min(5),
            None,
        ))?,
        "train-gpt2-small-lora" => serde_json::to_value(bench::train_step(
            &BenchShape::gpt2_small(),
            &dev.device,
            SUPERVISED,
            1,
            steps.min(5),
            Some(&manners::train::LoraConfig::default()),
        ))?,
        "adamw-gpt2-small" => serde_json::to_value(bench::optimizer_update(
            &BenchShape::gpt2_small(),
            &dev.device,
            2,
            steps.min(5),
        ))?,
        "generate-gpt2-small" => serde_json::to_value(bench::generation(
            &BenchShape::gpt2_small(),
            &dev.device,
            32,
            64,
            3,
        ))?,
        "epoch-manners" | "epoch-padded" => {
            let assets = super::assets_dir()?;
            // Loaded straight onto the autodiff device, as the trainer does (a model loaded
            // without autodiff and forked later has untracked parameters).
            let m = manners::load_model_dir(&assets.join("base"), &dev.device.clone().autodiff())
                .context("the epoch benchmark uses the shipped base model")?;
            let template = manners::train::choose_template(Some("chatml"), None, &m.tokenizer)?;
            let (convs, _) = read_conversations(
                &assets.join("sft/train.jsonl"),
                Format::Auto,
                BadRecordPolicy::Skip,
            )?;
            let max_len = m.config.n_positions + 1;
            let (examples, _) = encode_dataset(
                &convs,
                &template,
                m.tokenizer.hf(),
                MaskMode::Assistant,
                max_len,
                LengthPolicy::Truncate,
            )?;
            if job == "epoch-manners" {
                serde_json::to_value(bench::epoch_manners(
                    m.model,
                    &dev.device,
                    examples,
                    8,
                    max_len - 1,
                ))?
            } else {
                serde_json::to_value(bench::epoch_padded(m.model, &dev.device, examples, 8))?
            }
        }
        other => bail!("unknown bench job {other} (one of {JOBS:?})"),
    };
    let mut v = v;
    v["backend"] = Value::String(dev.description.clone());
    Ok(v)
}

/// The share of supervised positions in the training-step batches (the default instruction set
/// has about 35%).
pub const SUPERVISED: f64 = 0.35;

/// One PyTorch configuration (`tiny`, `gpt2-small` or `generate`) from the committed script.
fn torch_numbers(python: &Path, a: &BenchArgs, key: &str) -> Option<Value> {
    let script = super::assets_dir()
        .ok()?
        .join("../scripts/bench/torch_bench.py");
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

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Peak memory: GPU memory where the measurement has it (manners' allocator reservation on a
/// GPU backend, PyTorch's `max_memory_allocated` on CUDA), else peak resident memory.
fn gb(v: &Value) -> String {
    match (
        f(v, "device_memory").or_else(|| f(v, "peak_gpu_mem")),
        f(v, "peak_rss"),
    ) {
        (Some(b), _) => format!("{:.2} GB GPU", b / 1e9),
        (None, Some(b)) => format!("{:.2} GB", b / 1e9),
        (None, None) => "-".into(),
    }
}

fn render(r: &serde_json::Map<String, Value>, torch: Option<&Value>) -> String {
    let mut s = String::new();
    let backend = r
        .values()
        .find_map(|v| v.get("backend").and_then(Value::as_str))
        .unwrap_or("?");
    let rounds = r
        .values()
        .filter_map(|v| f(v, "rounds"))
        .fold(1.0, f64::max);
    s.push_str(&format!(
        "backend: {backend}; medians after warm-up{}\n\n",
        if rounds > 1.0 {
            format!("; median of {rounds} interleaved rounds (ratios per round)")
        } else {
            String::new()
        }
    ));
    let trains = ["train-tiny", "train-gpt2-small", "train-gpt2-small-lora"];
    if trains.iter().any(|j| r.contains_key(*j)) {
        s.push_str("| training step | step | non-pad tok/s | supervised tok/s | MFU | matmul peak | peak memory | PyTorch tok/s | ratio |\n|---|---|---|---|---|---|---|---|---|\n");
    }
    for (job, key) in [
        ("train-tiny", "tiny"),
        ("train-gpt2-small", "gpt2-small"),
        ("train-gpt2-small-lora", "gpt2-small LoRA r8"),
    ] {
        if let Some(v) = r.get(job) {
            let tps = f(v, "tokens_per_sec").unwrap_or(f64::NAN);
            let pt = torch
                .and_then(|t| t.get(key))
                .and_then(|t| f(t, "tokens_per_sec"));
            s.push_str(&format!(
                "| {} | {:.0} ms | {:.0} | {:.0} | {:.2} | {:.0} GFLOP/s | {} | {} | {} |\n",
                key,
                1e3 * f(v, "step_secs").unwrap_or(f64::NAN),
                tps,
                f(v, "supervised_per_sec").unwrap_or(f64::NAN),
                f(v, "mfu").unwrap_or(f64::NAN),
                f(v, "matmul_peak").unwrap_or(f64::NAN) / 1e9,
                gb(v),
                pt.map(|x| {
                    let t = torch.and_then(|t| t.get(key));
                    let mfu = t
                        .and_then(|t| f(t, "mfu"))
                        .map(|m| format!(", MFU {m:.2}"))
                        .unwrap_or_default();
                    format!("{x:.0} ({}{mfu})", t.map(gb).unwrap_or_default())
                })
                .unwrap_or_else(|| "-".into()),
                f(v, "ratio_vs_pytorch")
                    .or(pt.map(|x| tps / x))
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
    }
    if let Some(v) = r.get("adamw-gpt2-small") {
        let (b, m) = (
            f(v, "burn_secs").unwrap_or(f64::NAN),
            f(v, "manners_secs").unwrap_or(f64::NAN),
        );
        s.push_str(&format!(
            "\n| AdamW update, all {:.0}M GPT-2 small parameters | Burn's AdamW | manners (one pass) | ratio |\n|---|---|---|---|\n| time | {:.0} ms | {:.0} ms | {:.2}x |\n",
            f(v, "params").unwrap_or(f64::NAN) / 1e6,
            1e3 * b,
            1e3 * m,
            f(v, "speedup").unwrap_or(b / m)
        ));
    }
    if let Some(v) = r.get("generate-gpt2-small") {
        let c = f(v, "cached_tokens_per_sec").unwrap_or(f64::NAN);
        let pt = torch
            .and_then(|t| t.get("generate"))
            .and_then(|t| f(t, "cached_tokens_per_sec"));
        s.push_str(&format!(
            "\n| generation (GPT-2 small, batch 1, 32-token prompt, 64 new) | new tok/s | PyTorch | ratio |\n|---|---|---|---|\n| with KV cache | {c:.1} | {} | {} |\n| without cache | {:.1} | - | - |\n",
            pt.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into()),
            f(v, "ratio_vs_pytorch")
                .or(pt.map(|x| c / x))
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
            f(v, "uncached_tokens_per_sec").unwrap_or(f64::NAN),
        ));
    }
    if let (Some(m), Some(p)) = (r.get("epoch-manners"), r.get("epoch-padded")) {
        let (ms, ps) = (
            f(m, "secs").unwrap_or(f64::NAN),
            f(p, "secs").unwrap_or(f64::NAN),
        );
        s.push_str("\n| one SFT epoch, default instruction set, shipped base model | wall | steps | positions computed | peak RSS |\n|---|---|---|---|---|\n");
        for v in [m, p] {
            s.push_str(&format!(
                "| {} | {:.1} s | {} | {} | {} |\n",
                v.get("method").and_then(Value::as_str).unwrap_or("?"),
                f(v, "secs").unwrap_or(f64::NAN),
                v.get("steps").and_then(Value::as_u64).unwrap_or(0),
                v.get("padded_positions")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                gb(v)
            ));
        }
        s.push_str(&format!(
            "\nmanners is {:.2}x faster than the padded loop end to end.\n",
            f(m, "speedup_vs_padded").unwrap_or(ps / ms)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn medians_pair_runs_by_round_and_skip_failed_ones() {
        let mut ours = Runs::new();
        let mut theirs = Runs::new();
        let tps = |x: f64| json!({ "tokens_per_sec": x });
        // Round 2 failed on our side; its PyTorch number must not pair with another round.
        ours.insert(
            "train-tiny".into(),
            vec![tps(100.0), Value::Null, tps(300.0), tps(800.0)],
        );
        theirs.insert(
            "tiny".into(),
            vec![tps(50.0), tps(999.0), tps(100.0), tps(100.0)],
        );
        let secs = |x: f64| json!({ "secs": x });
        ours.insert(
            "epoch-manners".into(),
            vec![secs(10.0), secs(20.0), secs(40.0)],
        );
        ours.insert(
            "epoch-padded".into(),
            vec![secs(30.0), secs(30.0), secs(30.0)],
        );
        ours.insert("generate-gpt2-small".into(), vec![Value::Null]);
        let m = medians(&ours, &theirs);
        let tiny = &m["train-tiny"];
        // The median run (300 tok/s) and the median of the same-round ratios 2, 3, 8 (pairing
        // runs across rounds would give 2, 0.3, 8).
        assert_eq!(f(tiny, "tokens_per_sec"), Some(300.0));
        assert_eq!(f(tiny, "ratio_vs_pytorch"), Some(3.0));
        assert_eq!(f(tiny, "rounds"), Some(3.0));
        // Speedups 3, 1.5, 0.75: the median is 1.5, not 30 / 20.
        assert_eq!(f(&m["epoch-manners"], "speedup_vs_padded"), Some(1.5));
        assert!(!m.contains_key("generate-gpt2-small"), "every round failed");
    }
}
