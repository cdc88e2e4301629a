//! Measurements behind `manners bench`: training-step throughput and model FLOPs utilisation,
//! a matmul peak on the same backend, KV-cache generation speed, and one SFT epoch as manners
//! ships it (packing, LM head on supervised positions) against a plain padded-batch loop.
//! Medians over several runs after warm-up; each measurement is meant to run in its own process
//! so its peak RSS is its own.

use std::time::Instant;

use manners_data::{BatchConfig, Encoded, HostBatch, Loader, batches};
use manners_events::stats::median;
use manners_model::burn::module::Module;
use manners_model::burn::prelude::*;
use manners_model::burn::tensor::Distribution;
use manners_model::burn::tensor::activation::log_softmax;
use manners_model::{Gpt2Config, KvCache, LlamaConfig, Model, ModelConfig};
use manners_train::{Learner, LoraConfig, TrainConfig, build_burn_optimizer, build_optimizer};
use serde::Serialize;

/// Runs `f` `warmup` times, then `runs` timed times; the median seconds. When this process takes
/// turns with another ([`crate::turns`]), the warm-up is one turn and each timed run one more.
pub fn time_median(warmup: usize, runs: usize, f: impl FnMut()) -> f64 {
    timed(warmup, runs, true, f)
}

/// [`time_median`], taking turns only when `turns` (otherwise the whole measurement runs in
/// the turn this process holds).
fn timed(warmup: usize, runs: usize, turns: bool, mut f: impl FnMut()) -> f64 {
    let pass = || {
        if turns {
            crate::turns::pass();
        }
    };
    pass();
    for _ in 0..warmup {
        f();
    }
    let times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            pass();
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(times).unwrap_or(f64::NAN)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// FLOP/s of a large fp32 matmul (`n x n @ n x n`) on `device`: the peak MFU is measured against.
/// The fastest of 7 runs after warm-up (a peak, and on a shared machine far steadier than a
/// median, which drifts with whatever else runs).
pub fn matmul_peak(device: &Device, n: usize) -> f64 {
    let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let run = || {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _ = device.sync();
        std::hint::black_box(c);
        t.elapsed().as_secs_f64()
    };
    run();
    run();
    let secs = (0..7).map(|_| run()).fold(f64::INFINITY, f64::min);
    2.0 * (n as f64).powi(3) / secs
}

/// A benchmark model shape and batch.
#[derive(Clone, Debug, Serialize)]
pub struct BenchShape {
    pub name: String,
    pub model: ModelConfig,
    pub batch: usize,
    pub seq: usize,
}

impl BenchShape {
    /// GPT-2 shaped, 4 layers, 256 wide, 4 heads, vocab 8192, batch 16 x 256.
    pub fn tiny() -> Self {
        Self::gpt2("tiny", 4, 4, 256, 8192, 16)
    }

    /// The tiny model on long rows, the same 4,096 tokens per step: batch `4096 / seq` x `seq`
    /// (1,024 or 2,048 positions).
    pub fn tiny_long(seq: usize) -> Self {
        let mut s = Self::gpt2(&format!("tiny-{seq}"), 4, 4, 256, 8192, 4096 / seq);
        s.seq = seq;
        if let ModelConfig::Gpt2(c) = &mut s.model {
            c.n_positions = c.n_positions.max(seq);
        }
        s
    }

    /// GPT-2 small (12/768/12, vocab 50257), batch 4 x 256.
    pub fn gpt2_small() -> Self {
        Self::gpt2("gpt2-small", 12, 12, 768, 50257, 4)
    }

    /// SmolLM2-135M (Llama family: 30 layers, width 576, 9 heads / 3 kv heads, MLP 1536,
    /// vocab 49152, tied), batch 4 x 256.
    pub fn smollm2_135m() -> Self {
        BenchShape {
            name: "smollm2-135m".into(),
            model: ModelConfig::Llama(LlamaConfig::smollm2_135m()),
            batch: 4,
            seq: 256,
        }
    }

    fn gpt2(
        name: &str,
        n_layer: usize,
        n_head: usize,
        n_embd: usize,
        vocab: usize,
        batch: usize,
    ) -> Self {
        BenchShape {
            name: name.into(),
            model: ModelConfig::Gpt2(Gpt2Config {
                n_layer,
                n_head,
                n_embd,
                n_positions: 1024,
                vocab_size: vocab,
                dropout: 0.0,
                ..Gpt2Config::gpt2()
            }),
            batch,
            seq: 256,
        }
    }

    pub fn vocab(&self) -> usize {
        self.model.vocab_size()
    }

    pub fn init(&self, device: &Device) -> Model {
        self.model.init(device)
    }
}

/// A deterministic SFT-like batch: every row one document, `supervised` of the positions (a
/// contiguous "assistant" span at the end of each row) supervised.
pub fn synthetic_batch(shape: &BenchShape, supervised: f64) -> HostBatch {
    let (b, t) = (shape.batch, shape.seq);
    let n = b * t;
    let span = ((t as f64) * supervised).round() as usize;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |v: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % v as u64) as u32
    };
    let inputs: Vec<u32> = (0..n).map(|_| next(shape.vocab())).collect();
    let targets: Vec<u32> = (0..n).map(|_| next(shape.vocab())).collect();
    let loss_mask: Vec<bool> = (0..n).map(|i| i % t >= t - span).collect();
    HostBatch {
        batch: b,
        seq_len: t,
        inputs,
        targets,
        n_supervised: loss_mask.iter().filter(|&&m| m).count(),
        loss_mask,
        positions: (0..b).flat_map(|_| 0..t as u32).collect(),
        doc_ids: vec![1; n],
        mixed: vec![false; n],
        n_mixed: 0,
        n_tokens: n,
    }
}

/// One training-step measurement.
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    pub shape: BenchShape,
    pub params: usize,
    pub supervised_fraction: f64,
    pub step_secs: f64,
    pub tokens_per_sec: f64,
    pub supervised_per_sec: f64,
    /// 6 x params x tokens / step time.
    pub model_flops_per_sec: f64,
    pub matmul_peak: f64,
    pub mfu: f64,
    pub peak_rss: Option<u64>,
    /// Bytes the device allocator holds after the steps (GPU backends; `None` on the CPU, where
    /// `peak_rss` is the memory).
    pub device_memory: Option<u64>,
}

/// Times full training steps (forward, masked loss, backward, clip, AdamW) on `device`; with
/// `lora`, only rank-r adapters on every projection train.
pub fn train_step(
    shape: &BenchShape,
    device: &Device,
    supervised: f64,
    warmup: usize,
    runs: usize,
    lora: Option<&LoraConfig>,
) -> anyhow::Result<StepBench> {
    // On a GPU adapter with a small buffer limit, a clear error instead of wgpu's panic.
    let limit = manners_model::BufferLimit::of(device);
    shape.model.check_limit(limit.as_ref())?;
    let batch = synthetic_batch(shape, supervised);
    let dims = (shape.model.vocab_size(), shape.model.dims().heads);
    manners_train::check_batch(limit.as_ref(), dims, &batch, &|| {
        format!("the {} batch", shape.name)
    })?;
    device.seed(0);
    let ad = device.clone().autodiff();
    let model = shape.init(&ad);
    let params = model.num_params();
    let model = match lora {
        Some(l) => manners_train::lora::apply(model, l).expect("the model's own targets"),
        None => model,
    };
    let optim = build_optimizer(&TrainConfig::default(), &model);
    let mut learner = Learner::new(model, optim, Some(1.0), ad);
    let step_secs = time_median(warmup, runs, || {
        learner.step(std::slice::from_ref(&batch), 1e-4);
    });
    let device_memory = device.memory_pool_usage().map(|u| u.bytes_reserved);
    crate::turns::pass();
    // A backend with a device memory pool (cubecl's: wgpu, CUDA, ROCm) runs on a GPU, where
    // 2048^3 is too short to reach the peak: there, the 4096^3 product that PyTorch's CUDA side
    // times (`matmul_peak` in torch_bench.py), as on the CPU the same 2048^3.
    let peak = matmul_peak(device, if device_memory.is_some() { 4096 } else { 2048 });
    let tokens = batch.n_tokens as f64;
    let flops = 6.0 * params as f64 * tokens / step_secs;
    Ok(StepBench {
        shape: shape.clone(),
        params,
        supervised_fraction: batch.n_supervised as f64 / tokens,
        step_secs,
        tokens_per_sec: tokens / step_secs,
        supervised_per_sec: batch.n_supervised as f64 / step_secs,
        model_flops_per_sec: flops,
        matmul_peak: peak,
        mfu: flops / peak,
        peak_rss: peak_rss(),
        device_memory,
    })
}

/// A training step's split products in their real layouts (forward `x W`, input gradient
/// `g W^T`, weight gradient `x^T g`; tiny at 16 x 256 tokens, GPT-2 small at 4 x 256), each
/// timed with the destination's rows cut into per-thread panels and with its columns cut:
/// `runs` interleaved runs, medians. Flex only.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulCuts {
    pub products: Vec<ProductRow<manners_model::fused::PanelCuts>>,
    /// Geometric mean over the products of the cut this process picks over the other one.
    pub picked_vs_other: f64,
    /// Geometric mean over the products of the cut this process picks over cutting the longer
    /// side (the rule before it looked at the operands' layouts).
    pub picked_vs_longer: f64,
}

pub fn matmul_cuts(dev: &manners_model::DeviceChoice, runs: usize) -> anyhow::Result<MatmulCuts> {
    #[cfg(not(feature = "flex"))]
    let _ = runs;
    #[cfg(feature = "flex")]
    if dev.device == Device::flex() {
        // (what, [m, k, n], [lhs transposed, rhs transposed])
        let (x, dx, dw) = ([false, false], [false, true], [true, false]);
        let rows: [(&'static str, [usize; 3], [bool; 2]); 14] = [
            ("tiny qkv forward", [4096, 256, 768], x),
            ("tiny mlp down forward", [4096, 1024, 256], x),
            ("tiny qkv input gradient", [4096, 768, 256], dx),
            ("tiny mlp up input gradient", [4096, 1024, 256], dx),
            ("tiny mlp down input gradient", [4096, 256, 1024], dx),
            ("tiny qkv weight gradient", [256, 4096, 768], dw),
            ("tiny mlp up weight gradient", [256, 4096, 1024], dw),
            ("tiny mlp down weight gradient", [1024, 4096, 256], dw),
            ("gpt2-small qkv forward", [1024, 768, 2304], x),
            ("gpt2-small mlp down forward", [1024, 3072, 768], x),
            ("gpt2-small mlp up input gradient", [1024, 3072, 768], dx),
            ("gpt2-small mlp down input gradient", [1024, 768, 3072], dx),
            ("gpt2-small mlp up weight gradient", [768, 1024, 3072], dw),
            ("gpt2-small mlp down weight gradient", [3072, 1024, 768], dw),
        ];
        let products: Vec<_> = rows
            .into_iter()
            .map(|(what, [m, k, n], transposed)| ProductRow {
                what,
                timed: manners_model::fused::panel_cuts(m, k, n, transposed, runs),
            })
            .collect();
        let cuts = || products.iter().map(|p| &p.timed);
        let picked = |c: &manners_model::fused::PanelCuts| {
            if c.picks_rows { c.rows } else { c.columns }
        };
        let picked_vs_other = geometric_mean(
            cuts().map(|c| picked(c) / if c.picks_rows { c.columns } else { c.rows }),
        );
        let longer = |c: &manners_model::fused::PanelCuts| {
            if c.shape[0] >= c.shape[2] {
                c.rows
            } else {
                c.columns
            }
        };
        let picked_vs_longer = geometric_mean(cuts().map(|c| picked(c) / longer(c)));
        return Ok(MatmulCuts {
            products,
            picked_vs_other,
            picked_vs_longer,
        });
    }
    anyhow::bail!(
        "matmul-cuts times flex's kernels: run it with --backend flex (this run: {})",
        dev.description
    )
}

/// One row of the `matmul-shapes` and `matmul-cuts` jobs: a product of a step and its timings.
#[derive(Clone, Debug, Serialize)]
pub struct ProductRow<T> {
    /// Which product of which step.
    pub what: &'static str,
    #[serde(flatten)]
    pub timed: T,
}

/// The geometric mean of `xs` (1 when empty).
fn geometric_mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x.ln(), n + 1));
    (sum / n.max(1) as f64).exp()
}

/// The matrix products of a training step (tiny: the projections' forward `x W` and weight
/// gradient `x^T g`, the LM head at 35% of 16 x 256 positions; GPT-2 small: its widest
/// projection and its head). On flex each is timed with every kernel the fused layers can use
/// (`runs` interleaved runs, medians); on another backend (a GPU's) with the backend's own
/// `matmul` ([`BACKEND_MATMUL`]), so a GPU run shows Burn's kernels beside `torch.mm`.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulShapes {
    pub products: Vec<ProductRow<manners_model::fused::ProductKernels>>,
    /// The kernel split products use in this process (its name in the rows' `gflops`).
    pub split_with: String,
    /// Geometric mean over the products of the GFLOP/s of the kernel this process uses.
    pub geomean_gflops: f64,
}

pub fn matmul_shapes(dev: &manners_model::DeviceChoice, runs: usize) -> MatmulShapes {
    let rows: [(&'static str, [usize; 3]); 8] = [
        ("tiny qkv", [4096, 256, 768]),
        ("tiny mlp up", [4096, 256, 1024]),
        ("tiny mlp down", [4096, 1024, 256]),
        ("tiny mlp up, weight gradient", [256, 4096, 1024]),
        ("tiny mlp down, weight gradient", [1024, 4096, 256]),
        ("tiny head, 35% of rows", [1434, 256, 8192]),
        ("gpt2-small mlp up", [1024, 768, 3072]),
        ("gpt2-small head, 35% of rows", [358, 768, 50257]),
    ];
    let timed = |m, k, n| {
        #[cfg(feature = "flex")]
        if dev.device == Device::flex() {
            return manners_model::fused::product_kernels(m, k, n, runs);
        }
        backend_product(&dev.device, m, k, n, runs)
    };
    let products: Vec<_> = rows
        .into_iter()
        .map(|(what, [m, k, n])| ProductRow {
            what,
            timed: timed(m, k, n),
        })
        .collect();
    let split_with = products
        .first()
        .map(|p| p.timed.split_with.clone())
        .unwrap_or_default();
    let geomean_gflops = geometric_mean(products.iter().filter_map(|p| {
        p.timed
            .gflops
            .iter()
            .find(|(name, _)| *name == split_with)
            .map(|(_, g)| *g)
    }));
    MatmulShapes {
        products,
        split_with,
        geomean_gflops,
    }
}

/// The column name of products timed through the backend's own `matmul`.
pub const BACKEND_MATMUL: &str = "Burn matmul";

/// An `m x k` by `k x n` product through the backend's own `matmul` (on a GPU: Burn's cubecl
/// kernels, autotuned in the warm-up run), synchronised with the device: the median GFLOP/s of
/// `runs` runs after one warm-up, as PyTorch's side times `torch.mm`.
fn backend_product(
    device: &Device,
    m: usize,
    k: usize,
    n: usize,
    runs: usize,
) -> manners_model::fused::ProductKernels {
    let a = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
    let _ = device.sync();
    let secs = timed(1, runs, false, || {
        let c = a.clone().matmul(b.clone());
        let _ = device.sync();
        std::hint::black_box(c);
    });
    manners_model::fused::ProductKernels {
        shape: [m, k, n],
        gflops: vec![(
            BACKEND_MATMUL.to_string(),
            2.0 * (m * k * n) as f64 / secs / 1e9,
        )],
        split_with: BACKEND_MATMUL.to_string(),
    }
}

/// Generation speed, batch 1.
#[derive(Clone, Debug, Serialize)]
pub struct GenBench {
    pub shape: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub cached_tokens_per_sec: f64,
    /// Without the cache (re-running the prefix every step); measured for short outputs only.
    pub uncached_tokens_per_sec: Option<f64>,
    pub peak_rss: Option<u64>,
}

/// New tokens per second with the KV cache and, when `uncached`, without (re-running the
/// prefix every step). Paired with PyTorch ([`crate::turns`]), building the model is one turn,
/// the cached warm-up one more and each cached timed run one more, as in `torch_bench.py`'s
/// `generate`.
pub fn generation(
    shape: &BenchShape,
    device: &Device,
    prompt: usize,
    new: usize,
    runs: usize,
    uncached: bool,
) -> GenBench {
    device.seed(0);
    let model = shape.init(device);
    let ids: Vec<u32> = (0..prompt as u32)
        .map(|i| (i * 7919) % shape.vocab() as u32)
        .collect();
    let cached = time_median(1, runs, || {
        let mut cache = KvCache::new();
        cache.reserve(prompt + new);
        let mut input = Tensor::<2, Int>::from_data(
            TensorData::new(
                ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
                [1, prompt],
            ),
            device,
        );
        for _ in 0..new {
            let logits = model.forward_cached(input, &mut cache);
            let next = logits
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap_or_default();
            input = Tensor::from_data(TensorData::new(next, [1, 1]), device);
        }
    });
    // PyTorch has no counterpart: this runs in manners' last turn, after PyTorch's last run.
    let uncached = uncached.then(|| {
        timed(1, runs.min(3), false, || {
            std::hint::black_box(manners_model::generate_greedy_uncached(&model, &ids, new));
        })
    });
    GenBench {
        shape: shape.name.clone(),
        prompt_tokens: prompt,
        new_tokens: new,
        cached_tokens_per_sec: new as f64 / cached,
        uncached_tokens_per_sec: uncached.map(|u| new as f64 / u),
        peak_rss: peak_rss(),
    }
}

/// One epoch of SFT over `examples`.
#[derive(Clone, Debug, Serialize)]
pub struct EpochBench {
    pub method: String,
    pub steps: usize,
    pub secs: f64,
    pub tokens: usize,
    pub padded_positions: usize,
    pub peak_rss: Option<u64>,
}

/// The epoch as manners ships it: packed rows (block-diagonal attention), LM head and loss only
/// at supervised positions, token-normalised masked mean.
pub fn epoch_manners(
    model: Model,
    device: &Device,
    examples: Vec<Encoded>,
    batch_rows: usize,
    seq: usize,
) -> EpochBench {
    let ad = device.clone().autodiff();
    let model = model.fork(&ad);
    let cfg = BatchConfig {
        batch_size: batch_rows,
        seq_len: seq,
        pack: true,
        shuffle: false,
        ..BatchConfig::default()
    };
    let all = batches(&examples, &cfg).unwrap_or_default();
    let optim = build_optimizer(&TrainConfig::default(), &model);
    let mut learner = Learner::new(model, optim, Some(1.0), ad);
    let t = Instant::now();
    for b in &all {
        learner.step(std::slice::from_ref(b), 1e-4);
    }
    EpochBench {
        method: "manners (packed, head on supervised positions)".into(),
        steps: all.len(),
        secs: t.elapsed().as_secs_f64(),
        tokens: all.iter().map(|b| b.n_tokens).sum(),
        padded_positions: all.iter().map(|b| b.batch * b.seq_len).sum(),
        peak_rss: peak_rss(),
    }
}

/// The same epoch the way the tutorials write it: one example per row padded to the longest
/// in the batch, logits for every position, cross-entropy at every position multiplied by the
/// mask and divided by its sum; AdamW, no packing.
pub fn epoch_padded(
    model: Model,
    device: &Device,
    examples: Vec<Encoded>,
    batch_rows: usize,
) -> EpochBench {
    use manners_model::burn::optim::{AdamWConfig, GradientsParams};
    let ad = device.clone().autodiff();
    let mut model = model.fork(&ad);
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();
    let mut loader = Loader::new(
        examples,
        BatchConfig {
            batch_size: batch_rows,
            seq_len: 100_000,
            pack: false,
            shuffle: false,
            ..BatchConfig::default()
        },
    )
    .expect("examples fit");
    let n = loader.steps_per_epoch();
    let (mut tokens, mut padded) = (0, 0);
    let t = Instant::now();
    for _ in 0..n {
        let hb = loader.next_batch().expect("in-memory batch");
        tokens += hb.n_tokens;
        padded += hb.batch * hb.seq_len;
        let (b, s) = (hb.batch, hb.seq_len);
        let ints = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ints(&hb.inputs), [b, s]), &ad);
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(ints(&hb.targets), [b * s, 1]), &ad);
        let mask = Tensor::<1>::from_data(
            TensorData::new(
                hb.loss_mask
                    .iter()
                    .map(|&m| if m { 1.0f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                [b * s],
            ),
            &ad,
        );
        let logits = model.forward(ids); // [b, s, v]
        let v = logits.dims()[2];
        let nll = log_softmax(logits.reshape([b * s, v]), 1)
            .gather(1, tgt)
            .reshape([b * s])
            .neg();
        let loss = (nll * mask.clone()).sum() / mask.sum().clamp_min(1.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }
    EpochBench {
        method: "padded loop (tutorial style)".into(),
        steps: n,
        secs: t.elapsed().as_secs_f64(),
        tokens,
        padded_positions: padded,
        peak_rss: peak_rss(),
    }
}

/// One optimiser update over every parameter of a model: Burn's AdamW against ours.
#[derive(Clone, Debug, Serialize)]
pub struct OptimBench {
    pub shape: String,
    pub params: usize,
    pub burn_secs: f64,
    pub manners_secs: f64,
}

/// Times `ModuleOptimizer::step` with a fixed gradient for every parameter (after `warmup`
/// updates, so the moments exist), for Burn's `AdamW` and for [`manners_train::FusedAdamW`] as
/// [`build_optimizer`] builds them (decay on the weight matrices).
pub fn optimizer_update(
    shape: &BenchShape,
    device: &Device,
    warmup: usize,
    runs: usize,
) -> OptimBench {
    use manners_model::burn::module::{ModuleVisitor, Param, ParamId};
    use manners_model::burn::optim::{GradientsParams, ModuleOptimizer};

    /// A gradient for every parameter: a scaled copy of its value, kept as plain tensors.
    struct Grads(Vec<(ParamId, Tensor<1>, Vec<usize>)>);
    impl ModuleVisitor for Grads {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v = p.val().inner();
            let dims = v.dims().to_vec();
            self.0
                .push((p.id, v.flatten(0, D - 1).mul_scalar(1e-3), dims));
        }
    }
    fn grads(g: &Grads) -> GradientsParams {
        let mut out = GradientsParams::new();
        for (id, t, dims) in &g.0 {
            match dims.len() {
                1 => out.register::<1>(*id, t.clone()),
                2 => out.register::<2>(*id, t.clone().reshape([dims[0], dims[1]])),
                n => panic!("a rank-{n} parameter"),
            }
        }
        out
    }

    device.seed(0);
    let ad = device.clone().autodiff();
    let model = shape.init(&ad);
    let params = model.num_params();
    let mut g = Grads(Vec::new());
    model.visit(&mut g);
    let cfg = TrainConfig {
        weight_decay: 0.1,
        ..TrainConfig::default()
    };
    let time = |mut optim: ModuleOptimizer| {
        let mut m = Some(model.clone());
        time_median(warmup, runs, || {
            let next = optim.step(1e-4, m.take().expect("model"), grads(&g));
            // Wait for the update (a no-op on the CPU; GPU backends run asynchronously).
            let _ = next.token_embedding().val().slice([0..1, 0..1]).into_data();
            m = Some(next);
        })
    };
    let burn_secs = time(build_burn_optimizer(&cfg, &model));
    let manners_secs = time(build_optimizer(&cfg, &model));
    OptimBench {
        shape: shape.name.clone(),
        params,
        burn_secs,
        manners_secs,
    }
}

/// Causal attention, forward and backward, on its own: the part of a long-row training step
/// that grows with the row's length.
#[derive(Clone, Debug, Serialize)]
pub struct AttentionPass {
    /// `[b, heads, t, head_dim]`.
    pub shape: [usize; 4],
    /// Median seconds of one forward and backward pass.
    pub secs: f64,
    /// The FLOPs counted for it: the products of the causal half (`q k^T` and the weights times
    /// `v`, `t (t + 1) / 2` scores per row and head), backward twice the forward, as the
    /// training rows count attention (`torch_bench.py`'s `forward_flops`).
    pub flops: f64,
    /// `flops / secs`, in GFLOP/s.
    pub gflops: f64,
    /// FLOP/s of a 2048^3 product in the same process ([`matmul_peak`]).
    pub matmul_peak: f64,
    /// `flops / secs / matmul_peak`.
    pub utilisation: f64,
}

/// FLOPs counted for causal attention's forward and backward over `b` rows of `t` positions,
/// `heads` heads of `head_dim` (see [`AttentionPass::flops`]).
pub fn attention_flops(b: usize, heads: usize, t: usize, head_dim: usize) -> f64 {
    let scores = (t * (t + 1) / 2) as f64;
    3.0 * 2.0 * 2.0 * (b * heads) as f64 * scores * head_dim as f64
}

/// Times the tiny model's attention (4 heads of 64) over `tokens` positions in rows of `seq`,
/// forward and backward (the gradient of the output's sum, into a packed `qkv` as GPT-2's
/// projection gives it, plain causal: every position of a row in one document), `runs` timed
/// runs after two of warm-up. Flex's fused attention only: elsewhere an error says so.
pub fn attention_pass(
    device: &Device,
    seq: usize,
    tokens: usize,
    runs: usize,
) -> anyhow::Result<AttentionPass> {
    if !manners_model::fused::attention_fusable(device) {
        anyhow::bail!("flex's fused attention only; run it with --backend flex");
    }
    let (heads, head_dim) = (4, 64);
    let b = (tokens / seq).max(1);
    let ad = device.clone().autodiff();
    device.seed(0);
    let qkv = Tensor::<3>::random(
        [b, seq, 3 * heads * head_dim],
        Distribution::Normal(0.0, 1.0),
        &ad,
    );
    let docs = Tensor::<2>::zeros([b, seq], &ad);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut failed = false;
    let secs = manners_model::fused::on_compute_threads(device, || {
        time_median(2, runs, || {
            let x = qkv.clone().detach().require_grad();
            let Some(out) = manners_model::fused::attention_qkv(x.clone(), heads, &docs, scale)
            else {
                failed = true;
                return;
            };
            let grads = out.sum().backward();
            std::hint::black_box(x.grad(&grads));
            let _ = device.sync();
        })
    });
    if failed {
        anyhow::bail!("flex's fused attention did not apply to a {b} x {seq} packed qkv");
    }
    let flops = attention_flops(b, heads, seq, head_dim);
    let matmul_peak = matmul_peak(device, 2048);
    Ok(AttentionPass {
        shape: [b, heads, seq, head_dim],
        secs,
        flops,
        gflops: flops / secs / 1e9,
        matmul_peak,
        utilisation: flops / secs / matmul_peak,
    })
}
