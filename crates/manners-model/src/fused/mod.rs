//! Fused operations for the model's hot path: LayerNorm and GELU (tanh) for GPT-2, RMSNorm and
//! SwiGLU's `silu(gate) * up` for the Llama family, masked softmax for both, and the AdamW
//! update the trainer applies to every parameter.
//!
//! Under autodiff Burn records each of these as five to ten primitive operations, and on
//! `flex` most of those are single-threaded scalar passes over the activations, forward and
//! backward. On `flex` with `f32` tensors these functions run one multi-threaded, vectorised
//! pass each way instead (a Burn backend extension with hand-written backward passes, in
//! `flex.rs`); on every other backend, dtype or shape they compute the same function with
//! ordinary tensor operations. One path is for GPUs instead: [`select_rows`] (the embeddings and
//! the supervised-row pick) gathers rows on cubecl devices, so its gradient runs in parallel.
//! `MANNERS_FUSED=0` in the environment (or [`set_enabled`]) turns the fused paths off, for A/B
//! measurements.

#[cfg(feature = "flex")]
mod flash;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod gemm;
#[cfg(feature = "flex")]
mod kernels;

use std::sync::atomic::{AtomicU8, Ordering};

use burn::nn::{Embedding, LayerNorm, Linear, RmsNorm};
use burn::prelude::*;
#[cfg(feature = "flex")]
use burn::tensor::DType;
use burn::tensor::activation::{sigmoid, silu, softmax};

/// 0: not read yet; 1: on; 2: off.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Turns the fused kernels on or off for the whole process (default: on, unless the environment
/// has `MANNERS_FUSED=0`).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether the fused kernels are in use where they apply.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = !matches!(
                std::env::var("MANNERS_FUSED").as_deref(),
                Ok("0" | "off" | "false")
            );
            set_enabled(on);
            on
        }
    }
}

/// Whether `t` can take the fused path: `flex`, `f32`, and fusion on.
#[cfg(feature = "flex")]
fn fusable<const D: usize>(t: &Tensor<D>) -> bool {
    enabled() && t.dtype() == DType::F32 && t.device() == Device::flex()
}

/// GELU, tanh approximation (GPT-2's `gelu_new`): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
/// x^3)))`.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if fusable(&x) {
        use self::flex::FusedOps;
        return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_gelu_tanh(
            x.into_dispatch(),
        ));
    }
    gelu_tanh_composite(x)
}

/// The same function from tensor operations, computed as the identical `x * sigmoid(2z)`:
/// Burn's `gelu_approximate` composes a scalar `powf` and `tanh` per element; this form uses
/// multiplications and the backend's fused sigmoid.
pub fn gelu_tanh_composite<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4; // 2 sqrt(2/pi)
    let x3 = x.clone() * x.clone() * x.clone();
    let z2 = (x.clone() + x3 * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * sigmoid(z2)
}

/// `ln.forward(x)`, fused where it can be. `epsilon` must be the one `ln` was built with (Burn
/// keeps it private).
pub fn layer_norm<const D: usize>(ln: &LayerNorm, x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(beta) = &ln.beta {
        let gamma = ln.gamma.val();
        if fusable(&x) && gamma.dtype() == DType::F32 && x.dims()[D - 1] == gamma.dims()[0] {
            use self::flex::FusedOps;
            return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_layer_norm(
                x.into_dispatch(),
                gamma.into_dispatch(),
                beta.val().into_dispatch(),
                epsilon as f32,
            ));
        }
    }
    let _ = epsilon;
    ln.forward(x)
}

/// `rms.forward(x)` (RMSNorm over the last dimension), fused where it can be.
pub fn rms_norm<const D: usize>(rms: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let gamma = rms.gamma.val();
        if fusable(&x) && gamma.dtype() == DType::F32 && x.dims()[D - 1] == gamma.dims()[0] {
            use self::flex::FusedOps;
            return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_rms_norm(
                x.into_dispatch(),
                gamma.into_dispatch(),
                rms.epsilon as f32,
            ));
        }
    }
    rms.forward(x)
}

/// SwiGLU's gate `silu(gate) * up`, fused where it can be.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if fusable(&gate) && up.dtype() == DType::F32 && gate.dims() == up.dims() {
        use self::flex::FusedOps;
        return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_silu_mul(
            gate.into_dispatch(),
            up.into_dispatch(),
        ));
    }
    silu(gate) * up
}

/// Runs `f` on one of rayon's threads when `device` is `flex`, so that the parallel kernels it
/// starts begin at once on the calling worker, with the other workers stealing parts. Called
/// from outside the pool, each kernel (hundreds per training step) would instead hand its work
/// to the pool, wake a sleeping worker through the OS and sleep until the work is done: two
/// wake-ups per kernel with a core idle during each. Elsewhere (another device, fusion off, or
/// already on a rayon thread) `f` runs here.
pub fn on_compute_threads<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    if enabled() && rayon::current_thread_index().is_none() && *device == Device::flex() {
        return rayon::scope(|_| f());
    }
    let _ = device;
    f()
}

/// How many bytes of attention probabilities training keeps by default (see
/// [`set_attention_keep_limit`]): 1 GiB.
pub const DEFAULT_ATTENTION_KEEP: usize = 1 << 30;

/// Sets how many bytes the fused attention of training (flex) may fill, for the whole process,
/// with probabilities kept from the forward pass for the backward pass (all layers of all live
/// graphs together; default [`DEFAULT_ATTENTION_KEEP`]). A layer whose probabilities (`b * h *
/// t^2 / 2` values, about) do not fit in what is left recomputes them in its backward pass
/// instead, as FlashAttention-2 does: one product and one exponential pass more per block of
/// queries, no memory quadratic in `t`. Both ways give the same gradients bit for bit, so this
/// trades memory for speed and nothing else; 0 always recomputes.
pub fn set_attention_keep_limit(bytes: usize) {
    #[cfg(feature = "flex")]
    flash::KEEP.set_limit(bytes);
    #[cfg(not(feature = "flex"))]
    let _ = bytes;
}

/// Bytes of attention probabilities kept now by live training graphs (see
/// [`set_attention_keep_limit`]).
pub fn attention_kept_bytes() -> usize {
    #[cfg(feature = "flex")]
    {
        flash::KEEP.held()
    }
    #[cfg(not(feature = "flex"))]
    0
}

/// Whether [`attention`] runs fused on this device: flex with fusion on.
pub fn attention_fusable(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        enabled() && *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Causal attention over whole sequences where [`attention_fusable`] holds and the tensors are
/// `f32`: `softmax(q k^T * scale + mask) v` for `q` `[b, h, t, hd]` and `k`, `v`
/// `[b, kvh, t, hd]` (`h` a multiple of `kvh`: grouped-query heads share key/value heads
/// without copies), where query `i` sees key `j` only when `j <= i` and `docs[j] == docs[i]`
/// (`docs` `[b, t]`, document ids of packed rows, as floats; all equal for plain causal
/// attention). Returns `[b, h, t, hd]` (stored `[b, t, h, hd]`, so merging heads is free), or
/// `None` where the fused path does not apply. Never materialises the `[b, h, t, t]` scores or
/// a mask; gradients flow into `q`, `k` and `v`.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    docs: &Tensor<2>,
    scale: f64,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        let [b, h, t, hd] = q.dims();
        let [kb, kvh, kt, khd] = k.dims();
        let fits = fusable(&q)
            && [&k, &v].iter().all(|x| x.dtype() == DType::F32)
            && v.dims() == k.dims()
            && (kb, kt, khd) == (b, t, hd)
            && kvh > 0
            && h % kvh == 0
            && docs.dims() == [b, t]
            && docs.dtype() == DType::F32;
        if fits {
            use self::flex::FusedOps;
            return Some(Tensor::from_dispatch(
                <burn::backend::Dispatch as FusedOps>::fused_attention(
                    q.into_dispatch(),
                    k.into_dispatch(),
                    v.into_dispatch(),
                    docs.clone().into_dispatch(),
                    scale as f32,
                ),
            ));
        }
    }
    let _ = (q, k, v, docs, scale);
    None
}

/// [`attention`] on a packed projection `qkv` `[b, t, 3 * heads * hd]` (queries, then keys,
/// then values, heads in order, as GPT-2's `c_attn` produces them): the gradient flows back
/// into `qkv` as one tensor, with no slicing of heads. `None` where the fused path does not
/// apply.
pub fn attention_qkv(
    qkv: Tensor<3>,
    heads: usize,
    docs: &Tensor<2>,
    scale: f64,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        let [b, t, width] = qkv.dims();
        let fits = fusable(&qkv)
            && heads > 0
            && width % (3 * heads) == 0
            && docs.dims() == [b, t]
            && docs.dtype() == DType::F32;
        if fits {
            use self::flex::FusedOps;
            return Some(Tensor::from_dispatch(
                <burn::backend::Dispatch as FusedOps>::fused_attention_qkv(
                    qkv.into_dispatch(),
                    docs.clone().into_dispatch(),
                    heads,
                    scale as f32,
                ),
            ));
        }
    }
    let _ = (qkv, heads, docs, scale);
    None
}

/// Attention of new queries over a key/value cache, on flex without autodiff (generation):
/// `q` `[b, h, t, hd]` and `k`, `v` `[b, kvh, len, hd]` (views of a cache's buffers, any
/// strides; `h` a multiple of `kvh`, `len >= t`). Query `i` sits at position `len - t + i` and
/// sees the keys up to its own position, except row `r`'s first `pads[r]` (left padding; a
/// padding query sees only itself). Returns `[b, h, t, hd]`.
///
/// It computes what Burn's `attention` computes for such short blocks on flex (per row and
/// head: a `gemm` for the scores, the masked softmax, a `gemm` for the output) with the same
/// calls on the same strides, so the result is bit for bit the same; but it reads the keys and
/// values where the cache keeps them, where Burn would first copy them contiguous. `None` where
/// it does not apply: another backend or dtype, autodiff, or a score block above
/// [`CACHED_ATTENTION_SCORES`] (where Burn tiles instead).
pub fn cached_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    pads: Option<&[usize]>,
    scale: f64,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        let [b, h, t, hd] = q.dims();
        let [kb, kvh, len, khd] = k.dims();
        let fits = fusable(q)
            && !q.device().is_autodiff()
            && [k, v].iter().all(|x| x.dtype() == DType::F32)
            && v.dims() == k.dims()
            && (kb, khd) == (b, hd)
            && kvh > 0
            && h % kvh == 0
            && t <= len
            && t * len <= CACHED_ATTENTION_SCORES
            && pads.is_none_or(|p| p.len() == b);
        if fits {
            use self::flex::FusedInferenceOps;
            let pads: Vec<f32> = match pads {
                Some(p) => p.iter().map(|&x| x as f32).collect(),
                None => vec![0.0; b],
            };
            let pads = Tensor::<1>::from_data(TensorData::new(pads, [b]), &q.device());
            return Some(Tensor::from_dispatch(
                <burn::backend::Dispatch as FusedInferenceOps>::fused_cached_attention(
                    q.clone().into_dispatch(),
                    k.clone().into_dispatch(),
                    v.clone().into_dispatch(),
                    pads.into_dispatch(),
                    scale as f32,
                ),
            ));
        }
    }
    let _ = (q, k, v, pads, scale);
    None
}

/// The largest `t x len` score block [`cached_attention`] takes: burn-flex's own limit for
/// computing a head's scores whole (above it, it tiles them, with other rounding).
pub const CACHED_ATTENTION_SCORES: usize = 256 * 1024;

/// The cross-entropy of each row, `-ln softmax(logits)[target]`, for `logits` `[n, vocab]`
/// and `targets` `[n, 1]` (token ids as floats; they get no gradient): `[n, 1]`. On flex one
/// multi-threaded pass per row forward, and the gradient `g (softmax - onehot)` in closed form
/// from the saved log-sum-exps, one pass backward (no `[n, vocab]` intermediates kept between
/// them but the logits). `None` where the fused path does not apply.
pub fn cross_entropy(logits: Tensor<2>, targets: &Tensor<2>) -> Option<Tensor<2>> {
    #[cfg(feature = "flex")]
    {
        let [n, _] = logits.dims();
        if fusable(&logits) && targets.dims() == [n, 1] && targets.dtype() == DType::F32 {
            use self::flex::FusedOps;
            return Some(Tensor::from_dispatch(
                <burn::backend::Dispatch as FusedOps>::fused_cross_entropy(
                    logits.into_dispatch(),
                    targets.clone().into_dispatch(),
                ),
            ));
        }
    }
    let _ = (logits, targets);
    None
}

/// `e.forward(ids)`: the rows of the table `[vocab, d]` at the token ids `[b, t]`, `[b, t, d]`.
/// On flex the rows are copied by rayon tasks, and the table's gradient is built in blocks of
/// rows, each zeroed and summed on its own thread, in one fresh buffer (burn-flex's
/// `embedding_backward` fills two, one a realigned copy of the other: for GPT-2's 154 MB table
/// their page faults were 7% of a step); elsewhere this is Burn's `embedding`.
pub fn embedding(e: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    let weight = e.weight.val();
    #[cfg(feature = "flex")]
    if fusable(&weight) && weight.dims()[1] > 0 && ids.device() == weight.device() {
        use self::flex::FusedOps;
        return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::fused_embedding(
            weight.into_dispatch(),
            ids.into_dispatch(),
        ));
    }
    if enabled() && on_cubecl(&weight.device()) {
        let [b, t] = ids.dims();
        let d = weight.dims()[1];
        return select_rows(weight, ids.reshape([b * t])).reshape([b, t, d]);
    }
    burn::tensor::module::embedding(weight, ids)
}

/// Whether `device` is a cubecl device (wgpu, CUDA, ROCm).
fn on_cubecl(device: &Device) -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
    {
        matches!(
            device.as_dispatch().clone().inner(),
            burn::backend::DispatchDevice::Cube(_)
        )
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda", feature = "rocm")))]
    {
        let _ = device;
        false
    }
}

/// `x.select(0, idx)`: the rows of `x` that `idx` names, in its order (repeats allowed).
///
/// On cubecl devices this is a `gather` of whole rows, for its gradient: Burn differentiates
/// `select` with `select_assign`, whose kernel there runs one unit per column, each walking
/// every index in turn (a 256-wide embedding's gradient over 4,096 tokens took 1.1 ms of an
/// H200's time, 18% of a tiny training step over three such calls); `gather`'s gradient is a
/// scatter-add with one unit per element, atomic where the device adds floats atomically (then
/// a row's terms are added in the order they arrive, so the last bits of its sum can differ
/// from run to run). Elsewhere, or with the fused paths off (`MANNERS_FUSED=0`), Burn's
/// `select`, whose gradient adds them in index order.
pub fn select_rows(x: Tensor<2>, idx: Tensor<1, Int>) -> Tensor<2> {
    if enabled() && on_cubecl(&x.device()) {
        let [n] = idx.dims();
        let d = x.dims()[1];
        return x.gather(0, idx.reshape([n, 1]).expand([n, d]));
    }
    x.select(0, idx)
}

/// `l.forward(x)`: see [`linear`].
pub fn linear_layer<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()))
}

/// `x * weight + bias` over the last dimension (Burn's `linear`: `x` `[.., in]`, `weight`
/// `[in, out]`, any strides). On flex the product and its gradients are computed by gemm
/// straight into buffers allocated once (burn-flex's matmul zero-fills and then copies every
/// product, see `gemm.rs`), the bias is the product's starting value, and its gradient is a
/// column sum; elsewhere this is Burn's `linear`.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let [d_in, d_out] = weight.dims();
        let fits = fusable(&x)
            && weight.dtype() == DType::F32
            && x.dims()[D - 1] == d_in
            && bias
                .as_ref()
                .is_none_or(|b| b.dtype() == DType::F32 && b.dims()[0] == d_out);
        if fits {
            use self::flex::FusedOps;
            type B = burn::backend::Dispatch;
            let (x, w) = (x.into_dispatch(), weight.into_dispatch());
            return Tensor::from_dispatch(match bias {
                Some(b) => <B as FusedOps>::fused_linear_bias(x, w, b.into_dispatch()),
                None => <B as FusedOps>::fused_linear(x, w),
            });
        }
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// `softmax(scores + bias)` over the last dimension. `bias` (`[b or 1, h or 1, t, t_k]`) holds 0
/// where attention is allowed and `-inf` elsewhere; it is a constant, no gradient flows into it.
/// Every row must allow at least one position.
pub fn softmax_with_bias(scores: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let [b, h, t, n] = scores.dims();
        let [bb, bh, bt, bn] = bias.dims();
        let broadcasts = (bb == b || bb == 1) && (bh == h || bh == 1) && bt == t && bn == n;
        if broadcasts && fusable(&scores) && bias.dtype() == DType::F32 {
            use self::flex::FusedOps;
            return Tensor::from_dispatch(
                <burn::backend::Dispatch as FusedOps>::fused_softmax_bias(
                    scores.into_dispatch(),
                    bias.into_dispatch(),
                ),
            );
        }
    }
    softmax(scores + bias, 3)
}

/// AdamW's settings for one update (Burn's `AdamW`: decoupled weight decay, no AMSGrad).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

/// Whether [`adamw_update`] applies to these tensors: `flex`, `f32`, one shape, fusion on.
/// Elsewhere callers use Burn's `AdamW`, which computes the same update.
pub fn adamw_fusable<const D: usize>(
    param: &Tensor<D>,
    grad: &Tensor<D>,
    moments: Option<(&Tensor<D>, &Tensor<D>)>,
) -> bool {
    #[cfg(feature = "flex")]
    {
        let same = |x: &Tensor<D>| x.dtype() == DType::F32 && x.dims() == param.dims();
        fusable(param) && same(grad) && moments.is_none_or(|(m, v)| same(m) && same(v))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (param, grad, moments);
        false
    }
}

/// One AdamW update of one parameter, where [`adamw_fusable`] holds: returns the new value and
/// the new first and second moments. `moments` is `None` before the first update; `time` counts
/// updates, 1 for the first. Computes what `burn::optim::AdamW` does, with its order of
/// operations, in one pass over memory (Burn's version is about a dozen tensor operations, each a
/// pass), in place where the buffers are not shared.
#[cfg(feature = "flex")]
pub fn adamw_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    time: usize,
    h: &AdamWHyper,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    use self::flex::FusedOptimOps;
    let t = i32::try_from(time).unwrap_or(i32::MAX);
    let (m, v) = moments.unwrap_or_else(|| (param.zeros_like(), param.zeros_like()));
    let scalars = kernels::AdamWScalars {
        beta_1: h.beta_1,
        beta_2: h.beta_2,
        correction_1: 1.0 - h.beta_1.powi(t),
        correction_2: 1.0 - h.beta_2.powi(t),
        epsilon: h.epsilon,
        lr: h.lr as f32,
        keep: (1.0 - h.lr * f64::from(h.weight_decay)) as f32,
    };
    let (p, m, v) = <burn::backend::Dispatch as FusedOptimOps>::fused_adamw(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        scalars,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// `sum(t^2)` as a one-element tensor (a term of a global gradient norm). On flex (`f32`, fusion
/// on) one multi-threaded, read-only pass with `f64` partial sums; elsewhere `t.square().sum()`.
pub fn sum_of_squares<const D: usize>(t: &Tensor<D>) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if fusable(t) {
        use self::flex::FusedOptimOps;
        return Tensor::from_dispatch(
            <burn::backend::Dispatch as FusedOptimOps>::fused_sum_of_squares(
                t.clone().into_dispatch(),
            ),
        );
    }
    t.clone().square().sum()
}

/// `t * factor` (gradient clipping's scale). On flex (`f32`, fusion on) one multi-threaded pass,
/// in place when no other handle shares `t`; elsewhere `mul_scalar`.
pub fn scale<const D: usize>(t: Tensor<D>, factor: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if fusable(&t) {
        use self::flex::FusedOptimOps;
        return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOptimOps>::fused_scale(
            t.into_dispatch(),
            factor as f32,
        ));
    }
    t.mul_scalar(factor)
}

/// One product timed with each matrix-product kernel the fused layers can use on flex.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProductKernels {
    /// `[m, k, n]`: an `m x k` by `k x n` product.
    pub shape: [usize; 3],
    /// Median GFLOP/s per kernel, by name: `gemm, 1 thread`, `gemm, split`,
    /// `matrixmultiply, split`, `gemm panels, split`.
    pub gflops: Vec<(String, f64)>,
    /// The name (one of those in `gflops`) of the kernel this process uses for split products.
    pub split_with: String,
}

/// Times an `m x k` by `k x n` product with each kernel (`runs` runs each, interleaved; see
/// `docs/performance.md`): what `manners bench --only matmul-shapes` prints.
#[cfg(feature = "flex")]
pub fn product_kernels(m: usize, k: usize, n: usize, runs: usize) -> ProductKernels {
    ProductKernels {
        shape: [m, k, n],
        gflops: gemm::kernel_gflops(m, n, k, runs.max(1))
            .into_iter()
            .map(|(name, g)| (name.to_string(), g))
            .collect(),
        split_with: gemm::split_kernel_name().to_string(),
    }
}

/// One product timed with its destination's rows cut into per-thread panels and with its
/// columns cut (flex's split products; see `docs/performance.md`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PanelCuts {
    /// `[m, k, n]`: an `m x k` by `k x n` product.
    pub shape: [usize; 3],
    /// Whether the left and the right operand are stored transposed.
    pub transposed: [bool; 2],
    /// Median GFLOP/s with the rows cut.
    pub rows: f64,
    /// Median GFLOP/s with the columns cut.
    pub columns: f64,
    /// Whether the split products in this process cut the rows of this one.
    pub picks_rows: bool,
}

/// Times an `m x k` by `k x n` product with its rows cut and with its columns cut (`runs` runs
/// each, interleaved), the operands stored as `transposed` says: what `manners bench --only
/// matmul-cuts` prints.
#[cfg(feature = "flex")]
pub fn panel_cuts(m: usize, k: usize, n: usize, transposed: [bool; 2], runs: usize) -> PanelCuts {
    let ([rows, columns], picks_rows) = gemm::cut_gflops(m, n, k, transposed, runs.max(1));
    PanelCuts {
        shape: [m, k, n],
        transposed,
        rows,
        columns,
        picks_rows,
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::{EmbeddingConfig, LayerNormConfig};
    use burn::tensor::Distribution;

    /// Fixed, irregular output weights, so `sum(w * y)` has a gradient that checks every entry.
    fn weights<const D: usize>(dims: [usize; D], dev: &Device) -> Tensor<D> {
        let n: usize = dims.iter().product();
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.731).sin() * 1.5).collect();
        Tensor::from_data(TensorData::new(w, dims), dev)
    }

    /// Runs `f` with the fused path and with the composite one on the same inputs (autodiff
    /// flex), and returns (fused, composite) values and gradients of `sum(w * f(x))`.
    fn both<const D: usize>(
        x: &Tensor<D>,
        f: impl Fn(Tensor<D>) -> Tensor<D>,
    ) -> [(Vec<f32>, Vec<f32>); 2] {
        let run = |fused: bool| {
            let _guard = Switch::set(fused);
            let x = x.clone().detach().require_grad();
            let y = f(x.clone());
            let w = weights(y.dims(), &y.device());
            let grads = (y.clone() * w).sum().backward();
            let gx = x.grad(&grads).expect("x has a gradient");
            (
                y.into_data().try_to_vec::<f32>().expect("f32"),
                gx.into_data().try_to_vec::<f32>().expect("f32"),
            )
        };
        [run(true), run(false)]
    }

    /// Sets the process-wide switch for one test and restores "on" afterwards. Tests in this
    /// module take a lock so they do not flip the switch under each other.
    struct Switch(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    impl Switch {
        fn set(on: bool) -> Self {
            let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            set_enabled(on);
            Switch(g)
        }
    }
    impl Drop for Switch {
        fn drop(&mut self) {
            set_enabled(true);
        }
    }

    #[test]
    fn flex_work_runs_on_a_rayon_thread_and_nests_where_it_is() {
        let where_ = |device: &Device| {
            on_compute_threads(device, || {
                let outer = rayon::current_thread_index();
                (
                    outer,
                    on_compute_threads(device, rayon::current_thread_index),
                )
            })
        };
        let on = Switch::set(true);
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "tests run off the pool"
        );
        for device in [Device::flex(), Device::flex().autodiff()] {
            let (outer, inner) = where_(&device);
            assert!(outer.is_some(), "{device:?}: not on a rayon thread");
            assert_eq!(inner, outer, "{device:?}: a nested call moved");
        }
        #[allow(deprecated)] // ndarray: a CPU device that is not flex
        let ndarray = Device::ndarray();
        assert_eq!(where_(&ndarray), (None, None));
        drop(on);
        let _off = Switch::set(false);
        assert_eq!(where_(&Device::flex()), (None, None));
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let worst = a
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < tol, "{what}: worst difference {worst}");
    }

    #[test]
    fn fused_gelu_equals_the_composite_with_gradients() {
        let dev = Device::flex().autodiff();
        let x = Tensor::<3>::random([3, 5, 40], Distribution::Normal(0.0, 2.0), &dev);
        let [(yf, gf), (yc, gc)] = both(&x, gelu_tanh);
        assert_close(&yf, &yc, 1e-5, "gelu forward");
        assert_close(&gf, &gc, 1e-5, "gelu backward");
    }

    #[test]
    fn fused_layer_norm_equals_burns_with_all_three_gradients() {
        let dev = Device::flex().autodiff();
        let mut ln = LayerNormConfig::new(24).with_epsilon(1e-5).init(&dev);
        ln.gamma = Param::from_tensor(Tensor::random([24], Distribution::Normal(1.0, 0.3), &dev));
        ln.beta = Some(Param::from_tensor(Tensor::random(
            [24],
            Distribution::Normal(0.0, 0.3),
            &dev,
        )));
        // 150 rows: more than one rayon chunk of 64, and a ragged last chunk.
        let x = Tensor::<3>::random([3, 50, 24], Distribution::Normal(1.0, 3.0), &dev);
        let param_grads = |fused: bool| {
            let _guard = Switch::set(fused);
            let y = layer_norm(&ln, x.clone(), 1e-5);
            let w = weights(y.dims(), &dev);
            let grads = (y * w).sum().backward();
            let g = ln
                .gamma
                .grad(&grads)
                .expect("gamma grad")
                .into_data()
                .try_to_vec::<f32>();
            let b = ln
                .beta
                .as_ref()
                .and_then(|b| b.grad(&grads))
                .expect("beta grad");
            (
                g.expect("f32"),
                b.into_data().try_to_vec::<f32>().expect("f32"),
            )
        };
        let [(yf, gf), (yc, gc)] = both(&x, |x| layer_norm(&ln, x, 1e-5));
        assert_close(&yf, &yc, 1e-5, "layer norm forward");
        assert_close(&gf, &gc, 1e-4, "layer norm dx");
        let (gf, bf) = param_grads(true);
        let (gc, bc) = param_grads(false);
        assert_close(&gf, &gc, 1e-4, "layer norm dgamma");
        assert_close(&bf, &bc, 1e-4, "layer norm dbeta");
    }

    #[test]
    fn fused_masked_softmax_equals_the_composite_for_each_bias_broadcast() {
        let dev = Device::flex().autodiff();
        let t = 70;
        let x = Tensor::<4>::random([2, 3, t, t], Distribution::Normal(0.0, 2.0), &dev);
        let causal = Tensor::<2, Bool>::tril_mask([t, t], 0, &dev);
        let bias1 = Tensor::<2>::zeros([t, t], &dev)
            .mask_fill(causal, f32::NEG_INFINITY)
            .unsqueeze::<4>(); // [1, 1, t, t]
        // A per-row block-diagonal mask ([2, 1, t, t]): row 1 splits into two documents.
        let mut m = vec![0.0f32; 2 * t * t];
        for r in 0..2 {
            for i in 0..t {
                for j in 0..t {
                    let split = r == 1 && (i < 30) != (j < 30);
                    if j > i || split {
                        m[(r * t + i) * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let bias2 = Tensor::<4>::from_data(TensorData::new(m, [2, 1, t, t]), &dev);
        for bias in [bias1, bias2] {
            let [(yf, gf), (yc, gc)] = both(&x, |x| softmax_with_bias(x, bias.clone()));
            assert_close(&yf, &yc, 1e-5, "softmax forward");
            assert_close(&gf, &gc, 1e-5, "softmax backward");
            assert!(yf.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn fused_rms_norm_equals_burns_with_both_gradients() {
        let dev = Device::flex().autodiff();
        let mut rms = burn::nn::RmsNormConfig::new(24)
            .with_epsilon(1e-6)
            .init(&dev);
        rms.gamma = Param::from_tensor(Tensor::random([24], Distribution::Normal(1.0, 0.3), &dev));
        // 150 rows of a 4-d input (as the per-head q/k norm of Qwen3 sees it).
        let x = Tensor::<4>::random([3, 10, 5, 24], Distribution::Normal(0.5, 2.0), &dev);
        let [(yf, gf), (yc, gc)] = both(&x, |x| rms_norm(&rms, x));
        assert_close(&yf, &yc, 1e-5, "rms norm forward");
        assert_close(&gf, &gc, 1e-4, "rms norm dx");
        let dgamma = |fused: bool| {
            let _guard = Switch::set(fused);
            let y = rms_norm(&rms, x.clone());
            let w = weights(y.dims(), &dev);
            let grads = (y * w).sum().backward();
            rms.gamma
                .grad(&grads)
                .expect("gamma grad")
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32")
        };
        assert_close(&dgamma(true), &dgamma(false), 1e-4, "rms norm dgamma");
    }

    #[test]
    fn fused_silu_gate_equals_the_composite_with_both_gradients() {
        let dev = Device::flex().autodiff();
        let up = Tensor::<3>::random([3, 7, 40], Distribution::Normal(0.0, 2.0), &dev)
            .detach()
            .require_grad();
        let gate = Tensor::<3>::random([3, 7, 40], Distribution::Normal(0.0, 2.0), &dev);
        let [(yf, gf), (yc, gc)] = both(&gate, |g| silu_mul(g, up.clone()));
        assert_close(&yf, &yc, 1e-5, "silu gate forward");
        assert_close(&gf, &gc, 1e-5, "silu gate d gate");
        let dup = |fused: bool| {
            let _guard = Switch::set(fused);
            let y = silu_mul(gate.clone(), up.clone());
            let w = weights(y.dims(), &dev);
            let grads = (y * w).sum().backward();
            up.grad(&grads)
                .expect("up grad")
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32")
        };
        assert_close(&dup(true), &dup(false), 1e-5, "silu gate d up");
    }

    #[test]
    fn inference_tensors_take_the_fused_path_too() {
        let dev = Device::flex();
        let x = Tensor::<2>::random([4, 33], Distribution::Normal(0.0, 2.0), &dev);
        let fused = {
            let _g = Switch::set(true);
            gelu_tanh(x.clone())
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32")
        };
        let composite = gelu_tanh_composite(x)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert_close(&fused, &composite, 1e-5, "gelu without autodiff");
    }

    /// Attention from Burn's own operations with the mask materialised: key/value heads
    /// repeated, `softmax(q k^T * scale + bias) v`, `bias` -inf where query `i` may not see key
    /// `j` (`j > i` or another document).
    fn attention_reference(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        docs: &[Vec<f32>],
    ) -> Tensor<4> {
        let [b, h, t, hd] = q.dims();
        let kvh = k.dims()[1];
        let rep = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kvh, h / kvh, t, hd])
                .reshape([b, h, t, hd])
        };
        let mut bias = vec![0.0f32; b * t * t];
        for (r, ids) in docs.iter().enumerate() {
            for i in 0..t {
                for j in 0..t {
                    if j > i || ids[j] != ids[i] {
                        bias[(r * t + i) * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, t, t]), &q.device());
        let scores = q.matmul(rep(k).swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
        softmax(scores + bias, 3).matmul(rep(v))
    }

    /// Document ids for two rows of `t`: three documents and padding (0), and ids that come
    /// back after another document (not contiguous: the masking must follow the ids exactly).
    fn attention_docs(t: usize) -> Vec<Vec<f32>> {
        let row0 = (0..t)
            .map(|i| match i {
                _ if i < 60 => 1.0,
                _ if i < 110 => 2.0,
                _ if i < 130 => 3.0,
                _ => 0.0,
            })
            .collect();
        let row1 = (0..t).map(|i| ((i / 25) % 2) as f32 + 1.0).collect();
        vec![row0, row1]
    }

    fn values_of<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn fused_attention_equals_the_masked_composite_with_grouped_heads_and_documents() {
        let _guard = Switch::set(true);
        let dev = Device::flex().autodiff();
        // 150 positions: full blocks of queries (three of 48, or two of 64; see `flash`) and a
        // ragged one; 4 query heads over 2 key/value heads; inputs made [b, heads, t, hd] by
        // swapping dims (strided views).
        let (b, h, kvh, t, hd) = (2, 4, 2, 150, 16);
        let docs = attention_docs(t);
        let ids = Tensor::<2>::from_data(TensorData::new(docs.concat(), [b, t]), &dev);
        let make = |heads: usize| {
            Tensor::<4>::random([b, t, heads, hd], Distribution::Normal(0.0, 1.5), &dev)
                .swap_dims(1, 2)
                .detach()
                .require_grad()
        };
        let (q, k, v) = (make(h), make(kvh), make(kvh));
        let run = |fused: bool| {
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            let y = if fused {
                let scale = 1.0 / (hd as f64).sqrt();
                attention(q.clone(), k.clone(), v.clone(), &ids, scale).expect("fusable")
            } else {
                attention_reference(q.clone(), k.clone(), v.clone(), &docs)
            };
            let w = weights(y.dims(), &dev);
            let grads = (y.clone() * w).sum().backward();
            let g = |x: &Tensor<4>| values_of(x.grad(&grads).expect("gradient"));
            [values_of(y), g(&q), g(&k), g(&v)]
        };
        let (fused, reference) = (run(true), run(false));
        // Key and value gradients sum over every query that sees them (and over the query heads
        // of a group): a different summation order than Burn's, so 1e-4 as for other
        // reductions; the mutations this test guards against give errors near 1.
        for (what, (f, r), tol) in [
            ("output", (&fused[0], &reference[0]), 1e-5),
            ("dq", (&fused[1], &reference[1]), 1e-5),
            ("dk", (&fused[2], &reference[2]), 1e-4),
            ("dv", (&fused[3], &reference[3]), 1e-4),
        ] {
            assert_close(f, r, tol, what);
        }
        assert!(fused[0].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn cached_attention_reads_the_cache_in_place_and_equals_burns_bit_for_bit() {
        use crate::attention::{AttnMask, attend, padding_mask};
        let _guard = Switch::set(true);
        let dev = Device::flex();
        // A cache's buffers: room for 20 positions, 13 filled; what lies past them must not
        // be read (NaN would spread into every output it touched).
        let (b, kvh, hd, len, cap) = (3, 2, 8, 13, 20);
        let buffer = || {
            let filled =
                Tensor::<4>::random([b, kvh, len, hd], Distribution::Normal(0.0, 1.5), &dev);
            Tensor::<4>::full([b, kvh, cap, hd], f32::NAN, &dev)
                .slice_assign([0..b, 0..kvh, 0..len, 0..hd], filled)
        };
        let (kb, vb) = (buffer(), buffer());
        let (k, v) = (kb.clone().narrow(2, 0, len), vb.clone().narrow(2, 0, len));
        // Plain and grouped heads; one new token and three; no padding, and rows padded so
        // that some new queries are themselves padding (row 0 of the last case: pad 11, the
        // queries sit at 10, 11 and 12).
        for (h, t, pads) in [
            (2, 1, None),
            (6, 1, Some(vec![0, 4, 12])),
            (2, 3, Some(vec![11, 0, 2])),
            (6, 3, None),
        ] {
            let q = Tensor::<4>::random([b, h, t, hd], Distribution::Normal(0.0, 1.5), &dev);
            let scale = 1.0 / (hd as f64).sqrt();
            let fused = cached_attention(&q, &k, &v, pads.as_deref(), scale).expect("fusable");
            // What generation ran before: Burn's attention on contiguous copies of the keys
            // and values, with the padding as a boolean mask.
            let mask = AttnMask::Bool(pads.as_ref().map(|p| padding_mask(p, t, len, &dev)));
            let copy = |x: &Tensor<4>| Tensor::<4>::from_data(x.to_data(), &dev);
            let reference = attend(q.clone(), copy(&k), copy(&v), &mask);
            let (f, r) = (values_of(fused), values_of(reference));
            assert!(
                f.iter().all(|x| x.is_finite()),
                "h {h}, t {t}: read past the cache"
            );
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&f), bits(&r), "h {h}, t {t}, pads {pads:?}");
            if t == 3 && pads.is_some() {
                // Row 0's first new query (position 10) is padding: it sees only itself, so
                // each of its heads returns its key head's value at position 10 exactly.
                let vals = values_of(v.clone());
                for head in 0..h {
                    let g = head / (h / kvh);
                    let at = ((g * len) + 10) * hd;
                    let out = &f[(head * t) * hd..(head * t + 1) * hd];
                    assert_eq!(out, &vals[at..at + hd], "head {head}");
                }
            }
        }
        // Autodiff, another dtype or a block of scores too large for one pass: not taken.
        let q = Tensor::<4>::random(
            [1, 2, 1, hd],
            Distribution::Default,
            &dev.clone().autodiff(),
        );
        let (ka, va) = (q.clone(), q.clone());
        assert!(cached_attention(&q, &ka, &va, None, 0.5).is_none());
    }

    #[test]
    fn fused_attention_from_packed_qkv_equals_the_composite_with_its_gradient() {
        let _guard = Switch::set(true);
        let dev = Device::flex().autodiff();
        let (b, h, t, hd) = (2, 3, 150, 8);
        let d = h * hd;
        let docs = attention_docs(t);
        let ids = Tensor::<2>::from_data(TensorData::new(docs.concat(), [b, t]), &dev);
        let qkv =
            Tensor::<3>::random([b, t, 3 * d], Distribution::Normal(0.0, 1.5), &dev).require_grad();
        let run = |fused: bool| {
            let y = if fused {
                let scale = 1.0 / (hd as f64).sqrt();
                attention_qkv(qkv.clone(), h, &ids, scale).expect("fusable")
            } else {
                let heads = qkv
                    .clone()
                    .reshape([b, t, 3, h, hd])
                    .permute([2, 0, 3, 1, 4]);
                let part = |i: usize| heads.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
                attention_reference(part(0), part(1), part(2), &docs)
            };
            let w = weights(y.dims(), &dev);
            let grads = (y.clone() * w).sum().backward();
            [values_of(y), values_of(qkv.grad(&grads).expect("gradient"))]
        };
        let (fused, reference) = (run(true), run(false));
        assert_close(&fused[0], &reference[0], 1e-5, "output");
        assert_close(
            &fused[1],
            &reference[1],
            1e-4,
            "dqkv (key and value parts are sums)",
        );
    }

    #[test]
    fn fused_linear_equals_burns_with_all_three_gradients() {
        let _guard = Switch::set(true);
        let dev = Device::flex().autodiff();
        let x =
            Tensor::<3>::random([3, 70, 24], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let w = Tensor::<2>::random([24, 40], Distribution::Normal(0.0, 0.5), &dev).require_grad();
        let bias = Tensor::<1>::random([40], Distribution::Normal(0.0, 0.5), &dev).require_grad();
        // And a transposed (strided) weight without bias, as the tied LM head uses.
        let wt = Tensor::<2>::random([40, 24], Distribution::Normal(0.0, 0.5), &dev).require_grad();
        let run = |fused: bool| {
            let (y1, y2) = if fused {
                (
                    linear(x.clone(), w.clone(), Some(bias.clone())),
                    linear(x.clone(), wt.clone().transpose(), None),
                )
            } else {
                (
                    x.clone().matmul(w.clone().unsqueeze()) + bias.clone().unsqueeze(),
                    x.clone().matmul(wt.clone().transpose().unsqueeze()),
                )
            };
            let loss = (y1.clone() * weights(y1.dims(), &dev)).sum()
                + (y2.clone() * weights(y2.dims(), &dev)).sum();
            let grads = loss.backward();
            vec![
                values_of(y1),
                values_of(y2),
                values_of(x.grad(&grads).expect("dx")),
                values_of(w.grad(&grads).expect("dw")),
                values_of(bias.grad(&grads).expect("db")),
                values_of(wt.grad(&grads).expect("dwt")),
            ]
        };
        let (fused, reference) = (run(true), run(false));
        // The weight and bias gradients sum over all 210 rows: 1e-4, as for LayerNorm's.
        let names = [
            "y",
            "y (transposed weight)",
            "dx",
            "dw",
            "db",
            "dw (transposed)",
        ];
        for (i, (what, (f, r))) in names.iter().zip(fused.iter().zip(&reference)).enumerate() {
            assert_close(f, r, if i < 3 { 1e-5 } else { 1e-4 }, what);
        }
    }

    #[test]
    fn fused_embedding_equals_burns_bit_for_bit_alone_and_tied_to_a_head() {
        let _guard = Switch::set(true);
        let dev = Device::flex().autodiff();
        // Three backward blocks of 512 rows, the last one short.
        let (vocab, d, b, t) = (1100, 24, 3, 70);
        let mut table = EmbeddingConfig::new(vocab, d).init(&dev);
        table.weight = Param::from_tensor(
            Tensor::random([vocab, d], Distribution::Normal(0.0, 1.0), &dev).require_grad(),
        );
        // Repeated ids (summed in position order), both ends of the table, every block.
        let mut ids: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 389) % 1100).collect();
        ids[..6].copy_from_slice(&[0, 1099, 511, 512, 0, 1099]);
        ids[100..130].fill(700); // thirty terms: their order shows in the rounding
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &dev);
        let run = |fused: bool, tied: bool| {
            let w = table.weight.val();
            let y = if fused {
                embedding(&table, ids.clone())
            } else {
                burn::tensor::module::embedding(w.clone(), ids.clone())
            };
            let mut loss = (y.clone() * weights([b, t, d], &dev)).sum();
            if tied {
                // GPT-2's head: the same table, transposed; its gradient arrives first.
                let logits = linear(y.clone() * 0.5, w.clone().transpose(), None);
                loss = loss + (logits.clone() * weights(logits.dims(), &dev)).sum();
            }
            let grads = loss.backward();
            [
                values_of(y),
                values_of(table.weight.grad(&grads).expect("gradient")),
            ]
        };
        let same = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            let first = a
                .iter()
                .zip(b)
                .position(|(x, y)| x.to_bits() != y.to_bits());
            assert_eq!(first, None, "{what}: first differing value");
        };
        for tied in [false, true] {
            let (fused, reference) = (run(true, tied), run(false, tied));
            same(&fused[0], &reference[0], &format!("rows (tied: {tied})"));
            same(
                &fused[1],
                &reference[1],
                &format!("table gradient (tied: {tied})"),
            );
        }
        // Without autodiff (generation) too.
        let plain = Device::flex();
        let w = table.weight.val().inner();
        let ids = ids.inner();
        let mut inner = EmbeddingConfig::new(vocab, d).init(&plain);
        inner.weight = Param::from_tensor(w.clone());
        same(
            &values_of(embedding(&inner, ids.clone())),
            &values_of(burn::tensor::module::embedding(w, ids)),
            "rows without autodiff",
        );
    }

    /// `select_rows` and the embedding built on it, on every device (wgpu included where an
    /// adapter exists, so the `gather` path runs): the rows, and gradients summed by hand.
    #[test]
    fn select_rows_and_the_embedding_give_rows_and_summed_gradients_on_every_device() {
        let mut devices = vec![Device::flex().autodiff()];
        #[allow(deprecated)] // ndarray: Burn's select on a CPU backend that is not flex
        devices.push(Device::ndarray().autodiff());
        if let Some(c) = crate::wgpu_for_tests() {
            devices.push(c.device.autodiff());
        }
        let (rows, d) = (6, 5);
        let idx: [usize; 9] = [4, 0, 4, 2, 5, 4, 0, 4, 4]; // repeats; rows 1 and 3 never picked
        let x_host: Vec<f32> = (0..rows * d).map(|i| (i as f32) * 0.25 - 3.0).collect();
        let w_host = weights([idx.len(), d], &Device::flex())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // By hand: row i of the result is row idx[i]; row r's gradient sums the output
        // weights of every i with idx[i] == r (zero for rows never picked).
        let want_rows: Vec<f32> = idx
            .iter()
            .flat_map(|&r| x_host[r * d..(r + 1) * d].to_vec())
            .collect();
        let mut want_grad = vec![0.0f32; rows * d];
        for (i, &r) in idx.iter().enumerate() {
            for c in 0..d {
                want_grad[r * d + c] += w_host[i * d + c];
            }
        }
        for dev in devices {
            let x = Tensor::<2>::from_data(TensorData::new(x_host.clone(), [rows, d]), &dev)
                .require_grad();
            let ids: Vec<i64> = idx.iter().map(|&r| r as i64).collect();
            let ids1 = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [idx.len()]), &dev);
            let w = Tensor::<2>::from_data(TensorData::new(w_host.clone(), [idx.len(), d]), &dev);
            let y = select_rows(x.clone(), ids1);
            let grads = (y.clone() * w.clone()).sum().backward();
            assert_close(&values_of(y), &want_rows, 1e-6, &format!("{dev:?}: rows"));
            let g = values_of(x.grad(&grads).expect("gradient"));
            assert_close(&g, &want_grad, 1e-6, &format!("{dev:?}: gradient"));

            // The embedding of a [3, 3] batch of the same ids, through a table.
            let mut table = EmbeddingConfig::new(rows, d).init(&dev);
            table.weight = Param::from_tensor(
                Tensor::<2>::from_data(TensorData::new(x_host.clone(), [rows, d]), &dev)
                    .require_grad(),
            );
            let ids2 = Tensor::<2, Int>::from_data(TensorData::new(ids, [3, 3]), &dev);
            let y = embedding(&table, ids2);
            assert_eq!(y.dims(), [3, 3, d]);
            let grads = (y.clone() * w.reshape([3, 3, d])).sum().backward();
            assert_close(
                &values_of(y),
                &want_rows,
                1e-6,
                &format!("{dev:?}: embedding"),
            );
            let g = values_of(table.weight.grad(&grads).expect("gradient"));
            assert_close(
                &g,
                &want_grad,
                1e-6,
                &format!("{dev:?}: embedding gradient"),
            );
        }
    }

    #[test]
    #[should_panic(expected = "token id 7 is outside the embedding's 7 rows")]
    fn fused_embedding_names_an_id_outside_the_table() {
        let _guard = Switch::set(true);
        let dev = Device::flex();
        let table = EmbeddingConfig::new(7, 4).init(&dev);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 7], [1, 2]), &dev);
        let _ = embedding(&table, ids);
    }

    #[test]
    fn fused_cross_entropy_equals_log_softmax_with_its_gradient() {
        let _guard = Switch::set(true);
        let dev = Device::flex().autodiff();
        let (n, vocab) = (37, 203); // a vocab that is not a multiple of the 8 lanes
        let logits =
            Tensor::<2>::random([n, vocab], Distribution::Normal(0.0, 3.0), &dev).require_grad();
        let ids: Vec<i64> = (0..n as i64).map(|i| (i * 53) % vocab as i64).collect();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), &dev);
        let run = |fused: bool| {
            let rows = if fused {
                cross_entropy(logits.clone(), &targets.clone().float()).expect("fusable")
            } else {
                burn::tensor::activation::log_softmax(logits.clone(), 1)
                    .gather(1, targets.clone())
                    .neg()
            };
            // Per-row weights, and the logits used once more: the fused backward must not
            // overwrite a buffer another operation still needs.
            let loss = (rows.clone() * weights([n, 1], &dev)).sum()
                + (logits.clone() * weights([n, vocab], &dev)).sum();
            let grads = loss.backward();
            [
                values_of(rows),
                values_of(logits.grad(&grads).expect("gradient")),
            ]
        };
        let (fused, reference) = (run(true), run(false));
        assert_close(&fused[0], &reference[0], 1e-5, "cross-entropy");
        assert_close(&fused[1], &reference[1], 1e-5, "its gradient");
    }

    #[test]
    fn fused_sum_of_squares_and_scale_equal_the_tensor_operations() {
        let on = Switch::set(true);
        let dev = Device::flex();
        // Transposed (not contiguous) and long enough for several chunks.
        let x = Tensor::<2>::random([300, 70], Distribution::Normal(0.0, 1.0), &dev).transpose();
        let want: f64 = values_of(x.clone())
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum();
        let fused = values_of(sum_of_squares(&x));
        drop(on);
        let off = Switch::set(false);
        let plain = values_of(sum_of_squares(&x));
        drop(off);
        let _on = Switch::set(true);
        assert_eq!(fused.len(), 1);
        assert!(
            (f64::from(fused[0]) - want).abs() <= 1e-6 * want,
            "{fused:?} vs {want}"
        );
        assert!(
            (f64::from(plain[0]) - want).abs() <= 1e-4 * want,
            "{plain:?} vs {want}"
        );
        // A buffer shared with another handle is copied, never changed under it.
        let kept = x.clone();
        let before = values_of(kept.clone());
        let scaled = values_of(scale(x, -0.25));
        assert_eq!(values_of(kept), before);
        for (s, b) in scaled.iter().zip(&before) {
            assert_eq!(*s, b * -0.25);
        }
    }
}
