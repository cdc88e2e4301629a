//! # manners-bench
//!
//! The measurements behind `manners bench` and the table it prints: training steps (tokens/s,
//! MFU against a matmul peak measured in the same process, peak memory), the AdamW update,
//! KV-cache generation, and an SFT epoch as manners ships it against a padded-batch loop; each
//! beside PyTorch's number for the same shapes when Python with torch is given. Rounds
//! interleave each measurement with its PyTorch counterpart; the table shows medians and the
//! median of same-round ratios.
//!
//! ```no_run
//! use manners_bench::{BenchShape, train_step};
//! use manners_model::{BackendKind, select_device};
//! let dev = select_device(BackendKind::Flex).unwrap();
//! let r = train_step(&BenchShape::tiny(), &dev.device, 0.35, 2, 10, None).unwrap();
//! println!("{:.0} tokens/s, MFU {:.2}", r.tokens_per_sec, r.mfu);
//! ```

mod measure;
pub mod turns;

use std::path::Path;

use anyhow::Context;
use manners_data::{
    BadRecordPolicy, Format, LengthPolicy, MaskMode, SpecialTokens, choose_template,
    encode_dataset, read_conversations,
};
use manners_events::stats::median;
use manners_model::DeviceChoice;
use serde_json::Value;

pub use measure::*;

/// Every measurement, in the order the table shows them.
pub const JOBS: &[&str] = &[
    "train-tiny",
    "train-tiny-1024",
    "train-tiny-2048",
    "train-gpt2-small",
    "train-gpt2-small-lora",
    "train-smollm2-135m",
    "matmul-shapes",
    "matmul-cuts",
    "attention-2048",
    "adamw-gpt2-small",
    "generate-gpt2-small",
    "generate-gpt2-small-512",
    "epoch-manners",
    "epoch-padded",
];

/// The share of supervised positions in the training-step batches (the default instruction set
/// has about 35%).
pub const SUPERVISED: f64 = 0.35;

/// Every run of each measurement, in round order.
pub type Runs = std::collections::BTreeMap<String, Vec<Value>>;

/// Runs one measurement in this process: `steps` timed steps (fewer for the large shapes);
/// `assets` holds the shipped base model and instruction set (the epoch jobs).
pub fn run_job(
    job: &str,
    dev: &DeviceChoice,
    steps: usize,
    assets: &Path,
) -> anyhow::Result<Value> {
    // Under `manners bench --torch`, a training step takes turns with PyTorch's (see `turns`).
    turns::join(b'm').context("joining the bench's turns")?;
    let v = match job {
        "train-tiny" => serde_json::to_value(train_step(
            &BenchShape::tiny(),
            &dev.device,
            SUPERVISED,
            2,
            steps,
            None,
        )?)?,
        "train-tiny-1024" | "train-tiny-2048" => {
            let seq = if job.ends_with("1024") { 1024 } else { 2048 };
            serde_json::to_value(train_step(
                &BenchShape::tiny_long(seq),
                &dev.device,
                SUPERVISED,
                2,
                steps,
                None,
            )?)?
        }
        "train-gpt2-small" => serde_json::to_value(train_step(
            &BenchShape::gpt2_small(),
            &dev.device,
            SUPERVISED,
            1,
            steps.min(5),
            None,
        )?)?,
        "train-gpt2-small-lora" => serde_json::to_value(train_step(
            &BenchShape::gpt2_small(),
            &dev.device,
            SUPERVISED,
            1,
            steps.min(5),
            Some(&manners_train::LoraConfig::default()),
        )?)?,
        "train-smollm2-135m" => serde_json::to_value(train_step(
            &BenchShape::smollm2_135m(),
            &dev.device,
            SUPERVISED,
            1,
            steps.min(5),
            None,
        )?)?,
        // Flex's kernels on flex, the backend's own `matmul` elsewhere (a GPU's kernels).
        "matmul-shapes" => serde_json::to_value(matmul_shapes(dev, steps.max(5)))?,
        // Flex's kernels only: on another backend the row says why it is absent.
        "matmul-cuts" => match matmul_cuts(dev, steps.max(5)) {
            Ok(m) => serde_json::to_value(m)?,
            Err(e) => serde_json::json!({ "skipped": e.to_string() }),
        },
        // The tiny model's attention over the long rows' 4,096 tokens, in rows of 2,048. Flex's
        // fused attention only: on another backend the row says why it is absent.
        "attention-2048" => match attention_pass(&dev.device, 2048, 4096, steps.max(5)) {
            Ok(a) => serde_json::to_value(a)?,
            Err(e) => serde_json::json!({ "skipped": e.to_string() }),
        },
        "adamw-gpt2-small" => serde_json::to_value(optimizer_update(
            &BenchShape::gpt2_small(),
            &dev.device,
            2,
            steps.min(5),
        ))?,
        "generate-gpt2-small" | "generate-gpt2-small-512" => {
            // The long output: 480 new tokens, to 512 positions (each step attends to all of
            // them), without the uncached run.
            let short = job == "generate-gpt2-small";
            let new = if short { 64 } else { 480 };
            serde_json::to_value(generation(
                &BenchShape::gpt2_small(),
                &dev.device,
                32,
                new,
                3,
                short,
            ))?
        }
        "epoch-manners" | "epoch-padded" => {
            // Loaded straight onto the autodiff device, as the trainer does (a model loaded
            // without autodiff and forked later has untracked parameters).
            let m =
                manners_model::load_model_dir(&assets.join("base"), &dev.device.clone().autodiff())
                    .context("the epoch benchmark uses the shipped base model")?;
            let t = &m.tokenizer;
            let specials = SpecialTokens::from_roles(t.bos_token(), t.eos_token(), t.pad_token());
            let template = choose_template(Some("chatml-tools"), None, None, &specials)?;
            let (convs, _) = read_conversations(
                &assets.join("sft/train.jsonl"),
                Format::Auto,
                BadRecordPolicy::Skip,
            )?;
            let max_len = m.config.max_positions() + 1;
            let (examples, _) = encode_dataset(
                &convs,
                &template,
                m.tokenizer.hf(),
                MaskMode::Assistant,
                max_len,
                LengthPolicy::Truncate,
            )?;
            if job == "epoch-manners" {
                serde_json::to_value(epoch_manners(
                    m.model,
                    &dev.device,
                    examples,
                    8,
                    max_len - 1,
                ))?
            } else {
                serde_json::to_value(epoch_padded(m.model, &dev.device, examples, 8))?
            }
        }
        other => anyhow::bail!("unknown bench job {other} (one of {JOBS:?})"),
    };
    let mut v = v;
    v["backend"] = Value::String(dev.description.clone());
    Ok(v)
}

/// The PyTorch configuration a measurement is compared with.
pub fn torch_key(job: &str) -> Option<&'static str> {
    match job {
        "train-tiny" => Some("tiny"),
        "train-tiny-1024" => Some("tiny-1024"),
        "train-tiny-2048" => Some("tiny-2048"),
        "train-gpt2-small" => Some("gpt2-small"),
        "train-smollm2-135m" => Some("smollm2-135m"),
        "generate-gpt2-small" => Some("generate"),
        "generate-gpt2-small-512" => Some("generate-512"),
        "matmul-shapes" => Some("matmul-shapes"),
        "attention-2048" => Some("attention-2048"),
        _ => None,
    }
}

/// Whether a measurement runs paired with its PyTorch counterpart, the two processes taking turns
/// ([`turns`]): the training steps and generation, whose both sides take the same turns.
pub fn takes_turns(job: &str) -> bool {
    (job.starts_with("train") || job.starts_with("generate")) && torch_key(job).is_some()
}

/// The number that picks each measurement's median run.
pub fn metric(job: &str) -> &'static str {
    match job {
        j if j.starts_with("train") => "tokens_per_sec",
        j if j.starts_with("generate") => "cached_tokens_per_sec",
        j if j.starts_with("adamw") => "burn_secs",
        "matmul-shapes" => "geomean_gflops",
        "matmul-cuts" => "picked_vs_longer",
        j if j.starts_with("attention") => "gflops",
        _ => "secs",
    }
}

pub fn torch_metric(key: &str) -> &'static str {
    match key {
        k if k.starts_with("generate") => "cached_tokens_per_sec",
        "matmul-shapes" => "geomean_gflops",
        k if k.starts_with("attention") => "gflops",
        _ => "tokens_per_sec",
    }
}

/// The run whose `key` is the median over rounds (a real run, so its numbers belong together).
pub fn pick_median(runs: &[Value], key: &str) -> Value {
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
pub fn medians(ours: &Runs, theirs: &Runs) -> serde_json::Map<String, Value> {
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
            v["ratio_vs_pytorch"] = median(r).into();
            // Against the fastest PyTorch variant of the same round (when the script ran them).
            let r: Vec<f64> = runs
                .iter()
                .zip(t)
                .filter_map(|(o, t)| Some(f(o, key)? / fastest_variant(t)?))
                .collect();
            if !r.is_empty() {
                v["ratio_vs_fastest"] = median(r).into();
            }
            // Utilisation's yardstick: the highest matmul peak read in any round, on either side.
            // A peak timed in a busy moment reads low, and a round's own peak would then flatter
            // both sides of that round (even past 1.0).
            let best = runs
                .iter()
                .chain(t)
                .filter_map(|x| f(x, "matmul_peak"))
                .reduce(f64::max);
            if let Some(best) = best {
                v["matmul_peak_best"] = best.into();
                // Each round's utilisation: the FLOPs manners performs (those of PyTorch's
                // supervised-head variant) over its step time, against that peak.
                let per: Vec<Value> = runs
                    .iter()
                    .zip(t)
                    .map(|(o, t)| {
                        let flops = t.get("variants")?.get("eager_sup")?;
                        Some(f(flops, "flops_per_step")? / f(o, "step_secs")? / best)
                    })
                    .map(|u| u.map_or(Value::Null, Value::from))
                    .collect();
                if per.iter().any(|u| !u.is_null()) {
                    v["utilisation_per_round"] = per.into();
                }
            }
        }
        if job == "adamw-gpt2-small" {
            let r = runs
                .iter()
                .filter_map(|o| Some(f(o, "burn_secs")? / f(o, "manners_secs")?));
            v["speedup"] = median(r).into();
        }
        if job == "epoch-manners"
            && let Some(padded) = ours.get("epoch-padded")
        {
            let r = runs
                .iter()
                .zip(padded)
                .filter_map(|(m, p)| Some(f(p, "secs")? / f(m, "secs")?));
            v["speedup_vs_padded"] = median(r).into();
        }
        v["rounds"] = runs.iter().filter(|r| !r.is_null()).count().into();
        out.insert(job.clone(), v);
    }
    out
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Tokens/s of the fastest of PyTorch's variants in one run (`None` without variants).
fn fastest_variant(t: &Value) -> Option<f64> {
    t.get("variants")?
        .as_object()?
        .values()
        .filter_map(|x| f(x, "tokens_per_sec"))
        .reduce(f64::max)
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

pub fn render(r: &serde_json::Map<String, Value>, torch: Option<&Value>) -> String {
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
    let trains = [
        "train-tiny",
        "train-tiny-1024",
        "train-tiny-2048",
        "train-gpt2-small",
        "train-gpt2-small-lora",
        "train-smollm2-135m",
    ];
    if trains.iter().any(|j| r.contains_key(*j)) {
        s.push_str("| training step | step | non-pad tok/s | supervised tok/s | MFU | matmul peak | peak memory | PyTorch tok/s | ratio |\n|---|---|---|---|---|---|---|---|---|\n");
    }
    for (job, key) in [
        ("train-tiny", "tiny"),
        ("train-tiny-1024", "tiny-1024"),
        ("train-tiny-2048", "tiny-2048"),
        ("train-gpt2-small", "gpt2-small"),
        ("train-gpt2-small-lora", "gpt2-small LoRA r8"),
        ("train-smollm2-135m", "smollm2-135m"),
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
    s.push_str(&render_variants(r, torch));
    if let Some(v) = r.get("matmul-shapes") {
        s.push_str(&render_matmul_shapes(
            v,
            torch.and_then(|t| t.get("matmul-shapes")),
        ));
    }
    if let Some(v) = r.get("matmul-cuts") {
        s.push_str(&render_matmul_cuts(v));
    }
    if let Some(v) = r.get("attention-2048") {
        s.push_str(&render_attention(
            v,
            torch.and_then(|t| t.get("attention-2048")),
        ));
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
    for (job, key, new) in [
        ("generate-gpt2-small", "generate", 64),
        ("generate-gpt2-small-512", "generate-512", 480),
    ] {
        if let Some(v) = r.get(job) {
            s.push_str(&render_generation(v, torch.and_then(|t| t.get(key)), new));
        }
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

/// The attention row: manners' fused attention beside PyTorch's SDPA, time, GFLOP/s and
/// utilisation of the highest matmul peak read in any round on either side.
fn render_attention(v: &Value, torch: Option<&Value>) -> String {
    if let Some(why) = v.get("skipped").and_then(Value::as_str) {
        return format!("\ncausal attention alone: not measured ({why}).\n");
    }
    let dims: Vec<String> = v
        .get("shape")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(Value::as_u64)
                .map(|x| x.to_string())
                .collect()
        })
        .unwrap_or_default();
    let shape = match dims.as_slice() {
        [b, h, t, hd] => format!("{b} rows x {h} heads x {t} positions x {hd}"),
        _ => "?".into(),
    };
    let peak = f(v, "matmul_peak_best").or_else(|| f(v, "matmul_peak"));
    let cells = |x: &Value| {
        let g = f(x, "gflops").unwrap_or(f64::NAN);
        let u = peak.map_or(f64::NAN, |p| g * 1e9 / p);
        format!(
            "{:.1} ms | {g:.0} GFLOP/s | {u:.2}",
            1e3 * f(x, "secs").unwrap_or(f64::NAN)
        )
    };
    let mut s = format!(
        "\n| causal attention, forward + backward, {shape} | time | counted FLOP/s (causal half, backward 2x forward) | utilisation |\n|---|---|---|---|\n| manners (flex, fused; documents from ids) | {} |\n",
        cells(v)
    );
    if let Some(t) = torch {
        s.push_str(&format!(
            "| PyTorch `scaled_dot_product_attention`, causal | {} |\n",
            cells(t)
        ));
        let ratio = f(v, "ratio_vs_pytorch")
            .or_else(|| Some(f(v, "gflops")? / f(t, "gflops")?))
            .unwrap_or(f64::NAN);
        s.push_str(&format!(
            "\nmanners' attention runs at {ratio:.2}x PyTorch's speed.\n"
        ));
    }
    s
}

/// A product row's `shape` as `m x k x n`.
fn shape_text(r: &Value) -> String {
    r.get("shape")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(Value::as_u64)
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" x ")
        })
        .unwrap_or_default()
}

/// The matrix-product kernels on the training shapes (GFLOP/s, medians of interleaved runs),
/// beside `torch.mm` on the same products when PyTorch ran.
fn render_matmul_shapes(v: &Value, torch: Option<&Value>) -> String {
    let Some(rows) = v.get("products").and_then(Value::as_array) else {
        return String::new();
    };
    let pairs = |r: &Value| -> Vec<(String, f64)> {
        r.get("gflops")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let names: Vec<String> = rows
        .first()
        .map(|r| pairs(r).into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let theirs = torch
        .and_then(|t| t.get("products"))
        .and_then(Value::as_array);
    let mut s = format!(
        "\n| product (m x k x n), GFLOP/s | {} | PyTorch `torch.mm` |\n|---|{}---|\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (i, r) in rows.iter().enumerate() {
        let what = r.get("what").and_then(Value::as_str).unwrap_or("?");
        let shape = shape_text(r);
        let cells: Vec<String> = pairs(r)
            .into_iter()
            .map(|(_, g)| format!("{g:.0}"))
            .collect();
        let pt = theirs
            .and_then(|t| t.get(i))
            .and_then(|t| f(t, "gflops"))
            .map_or_else(|| "-".into(), |g| format!("{g:.0}"));
        s.push_str(&format!(
            "| {what}: {shape} | {} | {pt} |\n",
            cells.join(" | ")
        ));
    }
    if let Some(w) = v.get("split_with").and_then(Value::as_str) {
        let (what, other) = if w == BACKEND_MATMUL {
            ("Products on this backend", "")
        } else {
            (
                "Split products in this process",
                " (`MANNERS_GEMM=gemm|matrixmultiply` picks another)",
            )
        };
        s.push_str(&format!(
            "\n{what}: {w}, geometric mean {:.0} GFLOP/s{}{other}.\n",
            f(v, "geomean_gflops").unwrap_or(f64::NAN),
            f(v, "ratio_vs_pytorch")
                .map(|r| format!(", {r:.2}x PyTorch's"))
                .unwrap_or_default()
        ));
    }
    s
}

/// Each split product with its rows cut and with its columns cut (GFLOP/s, medians of
/// interleaved runs), and which of the two this process picks.
fn render_matmul_cuts(v: &Value) -> String {
    let Some(rows) = v.get("products").and_then(Value::as_array) else {
        return String::new();
    };
    let mut s = String::from(
        "\n| split product (m x k x n), GFLOP/s | operands | rows cut | columns cut | picked |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let shape = shape_text(r);
        let t = |i: usize| {
            r.get("transposed")
                .and_then(|t| t.get(i))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let operand = |name: &str, transposed: bool| {
            if transposed {
                format!("{name}^T")
            } else {
                name.to_string()
            }
        };
        s.push_str(&format!(
            "| {}: {shape} | {} {} | {:.0} | {:.0} | {} |\n",
            r.get("what").and_then(Value::as_str).unwrap_or("?"),
            operand("A", t(0)),
            operand("B", t(1)),
            f(r, "rows").unwrap_or(f64::NAN),
            f(r, "columns").unwrap_or(f64::NAN),
            match r.get("picks_rows").and_then(Value::as_bool) {
                Some(true) => "rows",
                Some(false) => "columns",
                None => "?",
            }
        ));
    }
    s.push_str(&format!(
        "\nThe picked cut over the other one: {:.3}x; over cutting the longer side: {:.3}x (geometric means).\n",
        f(v, "picked_vs_other").unwrap_or(f64::NAN),
        f(v, "picked_vs_longer").unwrap_or(f64::NAN),
    ));
    s
}

/// The same step against PyTorch's three variants (`torch_bench.py --variants all`): eager with
/// full logits, eager with the head on supervised positions (manners' work), and the latter
/// under `torch.compile`; utilisation counts the FLOPs each performs against one peak for all:
/// the highest 2048^3 (GPU: 4096^3) matmul peak read in any round on either side (manners'
/// through Burn's matmul, PyTorch's through `torch.mm`; `matmul_peak_best` from [`medians`]), so
/// a slow matmul on either side, or a peak timed in a busy moment, lowers no one's yardstick.
/// Manners does the supervised-head variant's FLOPs.
/// The generation table: new tokens per second with the KV cache beside PyTorch's HF `generate`
/// (`eager`, its default dynamic cache) and, when the script ran it, a static cache under
/// `torch.compile` (`compiled_static`); the ratios are medians of same-round ratios.
fn render_generation(v: &Value, t: Option<&Value>, new: usize) -> String {
    let c = f(v, "cached_tokens_per_sec").unwrap_or(f64::NAN);
    let one = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
    let pt = t.and_then(|t| f(t, "cached_tokens_per_sec"));
    let compiled = t
        .and_then(|t| t.get("variants")?.get("compiled_static"))
        .map(|x| {
            let compile = f(x, "compile_secs")
                .map(|c| format!(" (compile {c:.0} s)"))
                .unwrap_or_default();
            format!("{}{compile}", one(f(x, "tokens_per_sec")))
        })
        .unwrap_or_else(|| "-".into());
    let vs_pt = ratio(f(v, "ratio_vs_pytorch").or(pt.map(|x| c / x)));
    let vs_fastest = ratio(f(v, "ratio_vs_fastest").or(t.and_then(fastest_variant).map(|x| c / x)));
    let uncached = f(v, "uncached_tokens_per_sec")
        .map(|u| format!("| without cache | {u:.1} | - | - | - | - |\n"))
        .unwrap_or_default();
    format!(
        "\n| generation (GPT-2 small, batch 1, 32-token prompt, {new} new), new tok/s | manners | PyTorch HF generate | static cache + torch.compile | vs HF generate | vs fastest |\n|---|---|---|---|---|---|\n| with KV cache | {c:.1} | {} | {compiled} | {vs_pt} | {vs_fastest} |\n{uncached}",
        one(pt),
    )
}

pub fn render_variants(r: &serde_json::Map<String, Value>, torch: Option<&Value>) -> String {
    let mut s = String::new();
    for (job, key) in [
        ("train-tiny", "tiny"),
        ("train-tiny-1024", "tiny-1024"),
        ("train-tiny-2048", "tiny-2048"),
        ("train-gpt2-small", "gpt2-small"),
        ("train-smollm2-135m", "smollm2-135m"),
    ] {
        let (Some(v), Some(t)) = (r.get(job), torch.and_then(|t| t.get(key))) else {
            continue;
        };
        let Some(vars) = t.get("variants") else {
            continue;
        };
        if s.is_empty() {
            s.push_str("\n| same step, tokens/s (utilisation of the highest matmul peak read in its rounds, either side) | PyTorch eager, full logits | eager, head on supervised | torch.compile of that | manners | vs fastest |\n|---|---|---|---|---|---|\n");
        }
        let peak = [
            f(v, "matmul_peak_best"),
            f(v, "matmul_peak"),
            f(t, "matmul_peak"),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max);
        let utilisation = |x: &Value| match (f(x, "flops_per_step"), f(x, "step_secs"), peak) {
            (Some(fl), Some(sec), Some(peak)) => Some(fl / sec / peak),
            _ => f(x, "utilisation"),
        };
        let cell = |name: &str| -> String {
            let Some(x) = vars.get(name) else {
                return "-".into();
            };
            let compile = f(x, "compile_secs")
                .map(|c| format!(", compile {c:.0} s"))
                .unwrap_or_default();
            format!(
                "{:.0} ({:.2}{compile})",
                f(x, "tokens_per_sec").unwrap_or(f64::NAN),
                utilisation(x).unwrap_or(f64::NAN)
            )
        };
        let flops = vars.get("eager_sup").and_then(|x| f(x, "flops_per_step"));
        let ours = match (flops, f(v, "step_secs"), peak) {
            (Some(fl), Some(sec), Some(peak)) => format!("{:.2}", fl / sec / peak),
            _ => "-".into(),
        };
        let tps = f(v, "tokens_per_sec").unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {key} | {} | {} | {} | {tps:.0} ({ours}) | {} |\n",
            cell("eager_full"),
            cell("eager_sup"),
            cell("compiled_sup"),
            f(v, "ratio_vs_fastest")
                .or(fastest_variant(t).map(|x| tps / x))
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn training_steps_and_generation_with_a_pytorch_counterpart_take_turns() {
        let paired: Vec<&str> = JOBS.iter().copied().filter(|j| takes_turns(j)).collect();
        assert_eq!(
            paired,
            [
                "train-tiny",
                "train-tiny-1024",
                "train-tiny-2048",
                "train-gpt2-small",
                "train-smollm2-135m",
                "generate-gpt2-small",
                "generate-gpt2-small-512"
            ]
        );
    }

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

    #[test]
    fn variants_give_the_ratio_against_the_fastest_and_utilisation_from_flops() {
        let mut ours = Runs::new();
        let mut theirs = Runs::new();
        let run = |tps: f64| json!({ "tokens_per_sec": tps, "step_secs": 4096.0 / tps, "matmul_peak": 1e11 });
        ours.insert("train-tiny".into(), vec![run(3000.0), run(3400.0)]);
        let torch = |full: f64, sup: f64, compiled: f64| {
            json!({ "tokens_per_sec": full, "variants": {
                "eager_full": { "tokens_per_sec": full, "utilisation": 0.4 },
                "eager_sup": { "tokens_per_sec": sup, "utilisation": 0.5, "flops_per_step": 1e11 },
                "compiled_sup": { "tokens_per_sec": compiled, "utilisation": 0.7, "compile_secs": 3.6 },
            }})
        };
        theirs.insert(
            "tiny".into(),
            vec![torch(2500.0, 3900.0, 5000.0), torch(2500.0, 3900.0, 4000.0)],
        );
        let m = medians(&ours, &theirs);
        // Same-round ratios against the fastest variant: 3000/5000 = 0.6 and 3400/4000 = 0.85
        // (the median of two is the upper one, as for every bench median); pairing across
        // rounds would give 3400/5000.
        assert_eq!(f(&m["train-tiny"], "ratio_vs_fastest"), Some(0.85));
        let table = render_variants(&m, Some(&json!({ "tiny": torch(2500.0, 3900.0, 5000.0) })));
        // The median run (3400 tok/s): 1e11 FLOPs in 4096/3400 s of a 1e11 FLOP/s peak = 0.83.
        assert!(table.contains("| tiny | 2500 (0.40) | 3900 (0.50) | 5000 (0.70, compile 4 s) | 3400 (0.83) | 0.85x |"), "{table}");
        // A higher PyTorch peak (2e11) is every cell's yardstick, recomputed from FLOPs and step
        // time where the run has them: manners 0.83 -> 0.42, eager supervised 1e11 FLOPs in
        // 0.5 s -> 1.00; the others keep their stored figures.
        let mut faster = torch(2500.0, 3900.0, 5000.0);
        faster["matmul_peak"] = json!(2e11);
        faster["variants"]["eager_sup"]["step_secs"] = json!(0.5);
        let table = render_variants(&m, Some(&json!({ "tiny": faster })));
        assert!(table.contains("| tiny | 2500 (0.40) | 3900 (1.00) | 5000 (0.70, compile 4 s) | 3400 (0.42) | 0.85x |"), "{table}");
        // Without variants, no table.
        assert!(
            render_variants(&m, Some(&json!({ "tiny": { "tokens_per_sec": 1.0 } }))).is_empty()
        );
    }

    #[test]
    fn utilisation_is_against_the_highest_peak_of_any_round_on_either_side() {
        let mut ours = Runs::new();
        let mut theirs = Runs::new();
        let run = |secs: f64, peak: f64| json!({ "tokens_per_sec": 4096.0 / secs, "step_secs": secs, "matmul_peak": peak });
        // Round 2's peaks were timed in a busy moment (0.5e11 and 0.6e11): against its own
        // peak manners would read 1e11 / 1 s / 0.6e11 = 1.67. PyTorch's round 3 read 1.6e11.
        ours.insert(
            "train-tiny".into(),
            vec![run(2.0, 1.0e11), run(1.0, 0.5e11), run(1.25, 1.2e11)],
        );
        let torch = |peak: f64| {
            json!({ "tokens_per_sec": 1000.0, "matmul_peak": peak, "variants": {
                "eager_sup": { "tokens_per_sec": 1000.0, "flops_per_step": 1e11, "step_secs": 1.25 },
            }})
        };
        theirs.insert(
            "tiny".into(),
            vec![torch(0.9e11), torch(0.6e11), torch(1.6e11)],
        );
        let m = medians(&ours, &theirs);
        let tiny = &m["train-tiny"];
        assert_eq!(f(tiny, "matmul_peak_best"), Some(1.6e11));
        // 1e11 FLOPs over 2, 1 and 1.25 s, each against 1.6e11 FLOP/s.
        let per: Vec<f64> = tiny["utilisation_per_round"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_f64().unwrap())
            .collect();
        assert_eq!(per, vec![0.3125, 0.625, 0.5]);
        // The table's median run (1.25 s, 3277 tok/s) against the same peak: 0.50, where the
        // median runs' own peaks (1.2e11 and the median PyTorch run's) would give 0.67.
        let table = render_variants(&m, Some(&json!({ "tiny": torch(0.9e11) })));
        assert!(
            table.contains("| tiny | - | 1000 (0.50) | - | 3277 (0.50) |"),
            "{table}"
        );
    }

    #[test]
    fn the_attention_measurement_counts_the_causal_half_and_runs_on_flex_only() {
        use manners_model::burn::prelude::Device;
        let a = attention_pass(&Device::flex(), 64, 128, 2).unwrap();
        assert_eq!(a.shape, [2, 4, 64, 64]);
        // 3 * 2 * 2 * (2 rows * 4 heads) * (64 * 65 / 2 scores) * 64.
        assert_eq!(a.flops, 12_779_520.0);
        assert!(a.secs > 0.0 && a.matmul_peak > 0.0, "{a:?}");
        assert!((a.gflops - a.flops / a.secs / 1e9).abs() < 1e-9 * a.gflops);
        assert!((a.utilisation - a.flops / a.secs / a.matmul_peak).abs() < 1e-12);
        #[allow(deprecated)] // ndarray: a CPU device that is not flex
        let ndarray = Device::ndarray();
        let e = attention_pass(&ndarray, 64, 128, 2).unwrap_err();
        assert!(e.to_string().contains("--backend flex"), "{e}");
    }

    #[test]
    fn the_attention_row_gives_the_same_round_speed_ratio_and_utilisation_of_the_best_peak() {
        let mut ours = Runs::new();
        let mut theirs = Runs::new();
        let flops = attention_flops(2, 4, 2048, 64);
        let run = |secs: f64, peak: f64| {
            json!({ "shape": [2, 4, 2048, 64], "secs": secs, "flops": flops,
                    "gflops": flops / secs / 1e9, "matmul_peak": peak })
        };
        // Same-round speed ratios 1.5, 1.2 and 2.0 (median 1.5); the medians by GFLOP/s are
        // round 1 on both sides (manners 0.1 s, PyTorch 0.15 s).
        ours.insert(
            "attention-2048".into(),
            vec![run(0.1, 2.0e11), run(0.125, 1.5e11), run(0.09, 2.1e11)],
        );
        theirs.insert(
            "attention-2048".into(),
            vec![run(0.15, 1.8e11), run(0.15, 1.6e11), run(0.18, 1.9e11)],
        );
        let m = medians(&ours, &theirs);
        let a = &m["attention-2048"];
        assert_eq!(f(a, "secs"), Some(0.1));
        let r = f(a, "ratio_vs_pytorch").unwrap();
        assert!((r - 1.5).abs() < 1e-9, "{r}");
        assert_eq!(f(a, "matmul_peak_best"), Some(2.1e11));
        let torch = json!({ "attention-2048": pick_median(&theirs["attention-2048"], torch_metric("attention-2048")) });
        let table = render(&m, Some(&torch));
        // 3 * 2 * 2 * (2 * 4) * (2048 * 2049 / 2) * 64 = 12.89 GFLOP: 128.9 GFLOP/s over 0.1 s,
        // 85.9 over 0.15 s, each against 210 GFLOP/s (0.61, 0.41).
        assert_eq!(flops, 12_891_193_344.0);
        assert!(
            table.contains("2 rows x 4 heads x 2048 positions x 64")
                && table.contains("| manners (flex, fused; documents from ids) | 100.0 ms | 129 GFLOP/s | 0.61 |")
                && table.contains("| PyTorch `scaled_dot_product_attention`, causal | 150.0 ms | 86 GFLOP/s | 0.41 |")
                && table.contains("runs at 1.50x PyTorch's speed"),
            "{table}"
        );
        // Off flex the row says why it is absent, with no table.
        let mut skipped = serde_json::Map::new();
        skipped.insert(
            "attention-2048".into(),
            json!({ "skipped": "run it with --backend flex" }),
        );
        let table = render(&skipped, Some(&torch));
        assert!(
            table.contains("causal attention alone: not measured (run it with --backend flex).")
                && !table.contains("GFLOP/s |"),
            "{table}"
        );
    }

    #[test]
    fn matmul_cuts_show_both_cuts_the_operands_layout_and_the_pick() {
        let run = |g: f64| {
            json!({
                "products": [
                    { "what": "tiny mlp down weight gradient", "shape": [1024, 4096, 256],
                      "transposed": [true, false], "rows": g, "columns": 141.0, "picks_rows": true },
                    { "what": "gpt2-small mlp up input gradient", "shape": [1024, 3072, 768],
                      "transposed": [false, true], "rows": 195.0, "columns": 213.4, "picks_rows": false },
                ],
                "picked_vs_other": g / 141.0,
                "picked_vs_longer": g / 185.0,
            })
        };
        let mut ours = Runs::new();
        ours.insert(
            "matmul-cuts".into(),
            vec![run(189.0), run(150.0), run(200.0)],
        );
        let m = medians(&ours, &Runs::new());
        let table = render(&m, None);
        assert!(table.contains("| split product (m x k x n), GFLOP/s | operands | rows cut | columns cut | picked |"), "{table}");
        // The median round by `picked_vs_longer` (189 / 185), a real run.
        assert!(
            table.contains(
                "| tiny mlp down weight gradient: 1024 x 4096 x 256 | A^T B | 189 | 141 | rows |"
            ),
            "{table}"
        );
        assert!(table.contains("| gpt2-small mlp up input gradient: 1024 x 3072 x 768 | A B^T | 195 | 213 | columns |"), "{table}");
        assert!(
            table.contains(
                "The picked cut over the other one: 1.340x; over cutting the longer side: 1.022x"
            ),
            "{table}"
        );
    }

    #[test]
    fn matmul_shapes_show_every_kernel_beside_torch_mm_and_a_same_round_ratio() {
        let names = ["gemm, 1 thread", "gemm, split", "matrixmultiply, split"];
        let ours_run = |g: [f64; 3]| {
            json!({
                "products": [{
                    "what": "tiny qkv",
                    "shape": [4096, 256, 768],
                    "gflops": names.iter().zip(g).map(|(n, x)| json!([n, x])).collect::<Vec<_>>(),
                    "split_with": "matrixmultiply, split",
                }],
                "split_with": "matrixmultiply, split",
                "geomean_gflops": g[2],
            })
        };
        let torch_run = |g: f64| json!({ "products": [{ "shape": [4096, 256, 768], "gflops": g }], "geomean_gflops": g });
        let mut ours = Runs::new();
        let mut theirs = Runs::new();
        ours.insert(
            "matmul-shapes".into(),
            vec![
                ours_run([70.0, 110.0, 120.0]),
                ours_run([60.0, 90.0, 100.0]),
                ours_run([75.0, 115.0, 130.0]),
            ],
        );
        theirs.insert(
            "matmul-shapes".into(),
            vec![torch_run(150.0), torch_run(125.0), torch_run(100.0)],
        );
        let m = medians(&ours, &theirs);
        // Same-round ratios 0.8, 0.8, 1.3: median 0.8 (pairing medians would give 120/125).
        assert_eq!(f(&m["matmul-shapes"], "ratio_vs_pytorch"), Some(0.8));
        let torch = json!({ "matmul-shapes": pick_median(&theirs["matmul-shapes"], torch_metric("matmul-shapes")) });
        let table = render(&m, Some(&torch));
        assert!(
            table.contains("| product (m x k x n), GFLOP/s | gemm, 1 thread | gemm, split | matrixmultiply, split | PyTorch `torch.mm` |"),
            "{table}"
        );
        // The median run (geometric mean 120) beside PyTorch's median run (125).
        assert!(
            table.contains("| tiny qkv: 4096 x 256 x 768 | 70 | 110 | 120 | 125 |"),
            "{table}"
        );
        assert!(
            table.contains("matrixmultiply, split, geometric mean 120 GFLOP/s, 0.80x PyTorch's"),
            "{table}"
        );
        // A skipped measurement (`matmul-cuts` off flex) renders no table.
        let mut skipped = serde_json::Map::new();
        skipped.insert("matmul-shapes".into(), json!({ "skipped": "flex only" }));
        assert!(!render(&skipped, None).contains("GFLOP/s |"));
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn off_flex_the_step_s_products_are_timed_with_the_backend_s_own_matmul() {
        // ndarray stands in for a GPU backend here: anything but flex takes this path.
        let dev = manners_model::select_device(manners_model::BackendKind::Ndarray).unwrap();
        let m = matmul_shapes(&dev, 1);
        assert_eq!(m.products.len(), 8);
        assert_eq!(m.split_with, BACKEND_MATMUL);
        assert_eq!(m.products[7].timed.shape, [358, 768, 50257]);
        for p in &m.products {
            assert_eq!(p.timed.gflops.len(), 1, "{}", p.what);
            let (name, g) = &p.timed.gflops[0];
            assert_eq!(name, BACKEND_MATMUL);
            assert!(g.is_finite() && *g > 0.0, "{}: {g}", p.what);
        }
        let lo = m
            .products
            .iter()
            .map(|p| p.timed.gflops[0].1)
            .fold(f64::INFINITY, f64::min);
        let hi = m
            .products
            .iter()
            .map(|p| p.timed.gflops[0].1)
            .fold(0.0, f64::max);
        assert!(
            (lo..=hi).contains(&m.geomean_gflops),
            "{lo} {} {hi}",
            m.geomean_gflops
        );
        // Rendered beside `torch.mm`, without flex's kernel switch.
        let mut ours = Runs::new();
        ours.insert(
            "matmul-shapes".into(),
            vec![serde_json::to_value(&m).unwrap()],
        );
        let theirs = Runs::new();
        let table = render(&medians(&ours, &theirs), None);
        assert!(
            table.contains("| product (m x k x n), GFLOP/s | Burn matmul | PyTorch `torch.mm` |"),
            "{table}"
        );
        assert!(
            table.contains("Products on this backend: Burn matmul, geometric mean"),
            "{table}"
        );
        assert!(!table.contains("MANNERS_GEMM"), "{table}");
    }

    #[test]
    fn generation_is_compared_with_each_round_s_fastest_pytorch_variant() {
        let ours = |c: f64| json!({ "cached_tokens_per_sec": c, "uncached_tokens_per_sec": 9.0 });
        let torch = |eager: f64, compiled: f64| {
            json!({
                "cached_tokens_per_sec": eager,
                "variants": {
                    "eager": { "tokens_per_sec": eager },
                    "compiled_static": { "tokens_per_sec": compiled, "compile_secs": 6.2 },
                },
            })
        };
        let mut m = Runs::new();
        let mut t = Runs::new();
        m.insert(
            "generate-gpt2-small".into(),
            vec![ours(40.0), ours(36.0), ours(44.0)],
        );
        t.insert(
            "generate".into(),
            vec![torch(32.0, 50.0), torch(45.0, 30.0), torch(40.0, 44.0)],
        );
        // The long output: its own PyTorch runs, and no run without the cache.
        let long = |c: f64| json!({ "cached_tokens_per_sec": c, "uncached_tokens_per_sec": null });
        m.insert(
            "generate-gpt2-small-512".into(),
            vec![long(38.0), long(39.0), long(37.0)],
        );
        t.insert(
            "generate-512".into(),
            vec![torch(20.0, 25.0), torch(21.0, 26.0), torch(19.0, 24.0)],
        );
        let r = medians(&m, &t);
        let g = &r["generate-gpt2-small"];
        // Same-round ratios against HF generate: 1.25, 0.8, 1.1; against the faster of the two
        // variants of each round (compiled, eager, compiled): 0.8, 0.8, 1.0.
        assert_eq!(f(g, "ratio_vs_pytorch"), Some(1.1));
        assert_eq!(f(g, "ratio_vs_fastest"), Some(0.8));
        let theirs = json!({
            "generate": pick_median(&t["generate"], torch_metric("generate")),
            "generate-512": pick_median(&t["generate-512"], torch_metric("generate-512")),
        });
        let table = render(&r, Some(&theirs));
        // manners' median run (40) beside PyTorch's median run by HF generate's speed (round 3,
        // 40); the ratios are the same-round medians, not ratios of the medians.
        assert!(
            table.contains("| with KV cache | 40.0 | 40.0 | 44.0 (compile 6 s) | 1.10x | 0.80x |"),
            "{table}"
        );
        assert!(table.contains("| without cache | 9.0 |"), "{table}");
        // Long: against HF generate 1.9, 1.86, 1.95; against the compiled cache 1.52, 1.5,
        // 1.54; beside PyTorch's median run (round 1).
        assert!(table.contains("32-token prompt, 480 new"), "{table}");
        assert!(
            table.contains("| with KV cache | 38.0 | 20.0 | 25.0 (compile 6 s) | 1.90x | 1.52x |"),
            "{table}"
        );
        assert_eq!(table.matches("| without cache |").count(), 1, "{table}");
    }
}
