//! Fused CPU kernels on plain `f32` slices: one pass over memory where Burn's autodiff would
//! record five to ten separate operations (each its own pass, most of them single-threaded on
//! `flex`). Row kernels are split over rayon's pool by the callers; each slice kernel is compiled
//! three times (baseline, AVX2+FMA, AVX-512) and picks the best the CPU has at run time, so the
//! plain loops below auto-vectorise, `exp` included (a polynomial, not a libm call).

/// `sqrt(2 / pi)`, GELU's tanh approximation constant.
const GELU_C: f32 = 0.797_884_6;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_A: f32 = 0.044_715;

/// Defines a kernel once and compiles it three times: for AVX-512, for AVX2+FMA and for the
/// baseline target; each call runs the best copy the CPU supports (std caches the detection).
/// The body is inlined into each copy, so its plain loops auto-vectorise for that target.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(unsafe_code)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                fn v4($($arg: $ty),*) {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has every feature `v4` is compiled for (checked above).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `v3` is compiled for (checked above).
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

/// `e^x` for `f32`, vectorisable: Cephes' `expf` (range reduction by `ln 2` in two parts, a
/// degree-6 polynomial, the power of two built in the exponent bits). Relative error below
/// 2e-7 on [-87, 88]; 0 below -87.3 (so `-inf` gives exactly 0), and clamped at 88.3 (no overflow).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.3);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * C1 - n * C2;
    let r2 = r * r;
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let e = p.mul_add(r2, r) + 1.0;
    // 2^n from the exponent bits. `n` is a whole number in [-126, 128] (x is clamped), so
    // `n + 127 + 2^23` holds `n + 127` exactly in its low mantissa bits; shifting them into
    // the exponent field stays vectorised, where `n as i32` (saturating, NaN to 0) compiles
    // to a scalar conversion per lane.
    let scale = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    if x < -87.3 { 0.0 } else { e * scale }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

multiversion! {
    /// `y = gelu_tanh(x)` (GPT-2's `gelu_new`).
    pub fn gelu_tanh(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            // 0.5 x (1 + tanh(u/2)) = x sigmoid(u), u = 2 c (x + a x^3)
            let u = 2.0 * GELU_C * (x + GELU_A * x * x * x);
            *y = x * sigmoid(u);
        }
    }
}

multiversion! {
    /// `g <- g * gelu_tanh'(x)`, in place.
    pub fn gelu_tanh_backward(x: &[f32], g: &mut [f32]) {
        for (g, &x) in g.iter_mut().zip(x) {
            let u = 2.0 * GELU_C * (x + GELU_A * x * x * x);
            let s = sigmoid(u);
            let du = 2.0 * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
            *g *= s + x * s * (1.0 - s) * du;
        }
    }
}

multiversion! {
    /// LayerNorm over rows of `gamma.len()`: `y = (x - mean) / sqrt(var + eps) * gamma + beta`
    /// (biased variance, as PyTorch). `stats` gets `[mean, 1/std]` per row for the backward pass.
    pub fn layer_norm_rows(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        y: &mut [f32],
        stats: &mut [f32],
    ) {
        let d = gamma.len();
        for ((x, y), st) in x
            .chunks_exact(d)
            .zip(y.chunks_exact_mut(d))
            .zip(stats.chunks_exact_mut(2))
        {
            let mean = x.iter().sum::<f32>() / d as f32;
            let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = (x - mean) * rstd * g + b;
            }
            st[0] = mean;
            st[1] = rstd;
        }
    }
}

multiversion! {
    /// LayerNorm backward over rows: `g` (the output gradient) becomes the input gradient in
    /// place; `dgamma`/`dbeta` accumulate the parameter gradients (pass empty slices to skip
    /// them, e.g. when the LayerNorm is frozen).
    pub fn layer_norm_backward_rows(
        x: &[f32],
        gamma: &[f32],
        stats: &[f32],
        g: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let d = gamma.len();
        let want_params = !dgamma.is_empty();
        for ((x, g), st) in x
            .chunks_exact(d)
            .zip(g.chunks_exact_mut(d))
            .zip(stats.chunks_exact(2))
        {
            let (mean, rstd) = (st[0], st[1]);
            if want_params {
                for (((dg, db), &gv), &xv) in
                    dgamma.iter_mut().zip(dbeta.iter_mut()).zip(g.iter()).zip(x)
                {
                    *dg += gv * (xv - mean) * rstd;
                    *db += gv;
                }
            }
            // dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = g * gamma
            let mut sum_gh = 0.0f32;
            let mut sum_gh_xhat = 0.0f32;
            for ((&gv, &gm), &xv) in g.iter().zip(gamma).zip(x) {
                let gh = gv * gm;
                sum_gh += gh;
                sum_gh_xhat += gh * (xv - mean) * rstd;
            }
            let a = sum_gh / d as f32;
            let b = sum_gh_xhat / d as f32;
            for ((gv, &gm), &xv) in g.iter_mut().zip(gamma).zip(x) {
                let xhat = (xv - mean) * rstd;
                *gv = rstd * (*gv * gm - a - xhat * b);
            }
        }
    }
}

multiversion! {
    /// RMSNorm over rows of `gamma.len()`: `y = x / sqrt(mean(x^2) + eps) * gamma` (Llama's
    /// `LlamaRMSNorm`). `stats` gets `1/rms` per row for the backward pass.
    pub fn rms_norm_rows(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32], stats: &mut [f32]) {
        let d = gamma.len();
        for ((x, y), st) in x
            .chunks_exact(d)
            .zip(y.chunks_exact_mut(d))
            .zip(stats.iter_mut())
        {
            let ms = x.iter().map(|&v| v * v).sum::<f32>() / d as f32;
            let r = 1.0 / (ms + eps).sqrt();
            for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
                *y = x * r * g;
            }
            *st = r;
        }
    }
}

multiversion! {
    /// RMSNorm backward over rows: `g` becomes the input gradient in place,
    /// `dx = r (g gamma - xhat mean(g gamma xhat))` with `xhat = x r`; `dgamma` accumulates
    /// `g xhat` (pass an empty slice to skip it).
    pub fn rms_norm_backward_rows(
        x: &[f32],
        gamma: &[f32],
        stats: &[f32],
        g: &mut [f32],
        dgamma: &mut [f32],
    ) {
        let d = gamma.len();
        let want_params = !dgamma.is_empty();
        for ((x, g), &r) in x.chunks_exact(d).zip(g.chunks_exact_mut(d)).zip(stats) {
            if want_params {
                for ((dg, &gv), &xv) in dgamma.iter_mut().zip(g.iter()).zip(x) {
                    *dg += gv * xv * r;
                }
            }
            let mut sum = 0.0f32;
            for ((&gv, &gm), &xv) in g.iter().zip(gamma).zip(x) {
                sum += gv * gm * xv * r;
            }
            let b = sum / d as f32;
            for ((gv, &gm), &xv) in g.iter_mut().zip(gamma).zip(x) {
                *gv = r * (*gv * gm - xv * r * b);
            }
        }
    }
}

multiversion! {
    /// SwiGLU's gate: `y = silu(gate) * up`, `silu(x) = x sigmoid(x)`.
    pub fn silu_mul(gate: &[f32], up: &[f32], y: &mut [f32]) {
        for ((y, &a), &u) in y.iter_mut().zip(gate).zip(up) {
            *y = a * sigmoid(a) * u;
        }
    }
}

multiversion! {
    /// SwiGLU's gate backward: from the output gradient `g`, `d_gate` (written into `g`) and
    /// `d_up` (written into `up`, which is consumed): `d_up = g silu(gate)`,
    /// `d_gate = g up sigmoid(gate) (1 + gate (1 - sigmoid(gate)))`.
    pub fn silu_mul_backward(gate: &[f32], up: &mut [f32], g: &mut [f32]) {
        for ((g, u), &a) in g.iter_mut().zip(up.iter_mut()).zip(gate) {
            let s = sigmoid(a);
            let gv = *g;
            *g = gv * *u * s * (1.0 + a * (1.0 - s));
            *u = gv * a * s;
        }
    }
}

multiversion! {
    /// One row of `softmax(x + bias)`; `bias` holds 0 or `-inf` (masking). The row must keep
    /// at least one finite entry.
    pub fn softmax_bias_row(x: &[f32], bias: &[f32], y: &mut [f32]) {
        let mut max = f32::NEG_INFINITY;
        for ((y, &x), &b) in y.iter_mut().zip(x).zip(bias) {
            let v = x + b;
            *y = v;
            max = max.max(v);
        }
        let mut sum = 0.0f32;
        for y in y.iter_mut() {
            let e = exp(*y - max);
            *y = e;
            sum += e;
        }
        let inv = 1.0 / sum;
        for y in y.iter_mut() {
            *y *= inv;
        }
    }
}

/// One row of unnormalised attention weights, in place: `s <- exp(scale * s - shift)` with
/// `shift = scale * max(s)`, where masked entries hold `-inf` on entry (they become 0). Returns
/// `(shift, 1 / sum)`: the caller scales the row's output by the second (normalising `hd`
/// values, not `t`), and the backward pass recomputes the probabilities from both with
/// [`attention_probs_row`], equal bit for bit to this row times `1 / sum` ([`scale`]). The row
/// must keep at least one finite entry; `scale` must be positive.
pub fn attention_exp_row(s: &mut [f32], scale: f32) -> (f32, f32) {
    let shift = scale * row_max(s);
    let mut sum = [0.0f32];
    attention_exp_pass(s, scale, shift, &mut sum);
    (shift, 1.0 / sum[0])
}

multiversion! {
    /// The largest value of a row, into `out[0]` (eight lanes, so it vectorises).
    fn row_max_into(x: &[f32], out: &mut [f32]) {
        let mut max = [f32::NEG_INFINITY; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for (m, &v) in max.iter_mut().zip(c) {
                *m = if v > *m { v } else { *m };
            }
        }
        for &v in chunks.remainder() {
            max[0] = if v > max[0] { v } else { max[0] };
        }
        out[0] = max.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    }
}

fn row_max(x: &[f32]) -> f32 {
    let mut out = [0.0f32];
    row_max_into(x, &mut out);
    out[0]
}

multiversion! {
    /// `s <- exp(scale * s - shift)` and the sum of the results into `sum[0]`. Two plain loops:
    /// the exponentials vectorise across elements, the sum over eight lanes (one loop doing
    /// both compiled to scalar code, 3x slower).
    fn attention_exp_pass(s: &mut [f32], scale: f32, shift: f32, sum: &mut [f32]) {
        for v in s.iter_mut() {
            *v = exp(v.mul_add(scale, -shift));
        }
        sum[0] = lane_sum(s);
    }
}

/// The sum of a slice over eight independent lanes (so it vectorises); inlined into the
/// kernels that call it.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for &v in chunks.remainder() {
        acc[0] += v;
    }
    acc.iter().sum()
}

multiversion! {
    /// Log-sum-exp of one row of logits into `lse[0]`, with `scratch` (the row's length) for
    /// the exponentials: one vectorised pass for them, one for their sum.
    pub fn log_sum_exp_row(x: &[f32], scratch: &mut [f32], lse: &mut [f32]) {
        let mut max = [0.0f32];
        row_max_into(x, &mut max);
        for (e, &v) in scratch.iter_mut().zip(x) {
            *e = exp(v - max[0]);
        }
        lse[0] = max[0] + lane_sum(scratch).ln();
    }
}

multiversion! {
    /// The cross-entropy gradient of one row, in place over its logits: `x <- g * softmax(x)`
    /// from the row's log-sum-exp (the caller subtracts `g` at the target).
    pub fn softmax_scaled_row(x: &mut [f32], lse: f32, g: f32) {
        for v in x.iter_mut() {
            *v = g * exp(*v - lse);
        }
    }
}

multiversion! {
    /// Probabilities recomputed from the scores and the row's `(shift, inv)` from
    /// [`attention_exp_row`], in place: `s <- exp(scale * s - shift) * inv` (`-inf`, masked,
    /// gives 0). The same operations in the same order as the forward pass's exponentials
    /// followed by [`scale`], so the probabilities are those of the forward pass bit for bit.
    pub fn attention_probs_row(s: &mut [f32], scale: f32, shift: f32, inv: f32) {
        for v in s.iter_mut() {
            *v = exp(v.mul_add(scale, -shift)) * inv;
        }
    }
}

multiversion! {
    /// Gradients of the scaled scores from those of the probabilities, in place:
    /// `dp <- scale * p * (dp - d)`, with `d = sum(p * dp)` over the row (= `dO . O`).
    pub fn attention_dscores_row(p: &[f32], dp: &mut [f32], d: f32, scale: f32) {
        for (g, &p) in dp.iter_mut().zip(p) {
            *g = scale * p * (*g - d);
        }
    }
}

multiversion! {
    /// Softmax backward over rows of `n`: `g <- y * (g - sum(g * y))`, in place.
    pub fn softmax_backward_rows(y: &[f32], g: &mut [f32], n: usize) {
        for (y, g) in y.chunks_exact(n).zip(g.chunks_exact_mut(n)) {
            let dot: f32 = y.iter().zip(g.iter()).map(|(&y, &g)| y * g).sum();
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - dot);
            }
        }
    }
}

/// The scalars of one AdamW update (Burn's `AdamW`, decoupled decay, no AMSGrad), as `f32`
/// the way Burn applies them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `1 - beta_1^t` and `1 - beta_2^t` for this update's step number `t`.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    pub lr: f32,
    /// `1 - lr * weight_decay`.
    pub keep: f32,
}

/// Lanes of the partial sums in [`sum_of_squares`] (one AVX-512 vector of `f32`).
const LANES: usize = 16;

multiversion! {
    /// `out = sum(x^2)`: `LANES` running `f32` sums (so the loop vectorises) added up in `f64`.
    /// Callers keep slices short (a chunk of a tensor) and add the chunks' sums in `f64`.
    pub fn sum_of_squares(x: &[f32], out: &mut f64) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v * v;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|v| f64::from(v * v)).sum();
        *out = acc.iter().map(|&a| f64::from(a)).sum::<f64>() + tail;
    }
}

multiversion! {
    /// `acc += x`, element by element.
    pub fn add_into(acc: &mut [f32], x: &[f32]) {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += v;
        }
    }
}

multiversion! {
    /// `y[j] += sum_i x[i] w[i rs + j]` for every `j < y.len()` and `i < x.len()`: a row vector
    /// times the rows of a matrix (each `rs` apart in `w`), four rows per pass over `y`, each
    /// element's sum taken in row order.
    pub fn vector_times_rows(y: &mut [f32], x: &[f32], w: &[f32], rs: usize) {
        let n = y.len();
        let row = |i: usize| &w[i * rs..i * rs + n];
        let mut quads = x.chunks_exact(4);
        let mut i = 0;
        for q in quads.by_ref() {
            let (w0, w1, w2, w3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
            for ((((y, &a), &b), &c), &d) in y.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                *y = d.mul_add(q[3], c.mul_add(q[2], b.mul_add(q[1], a.mul_add(q[0], *y))));
            }
            i += 4;
        }
        for &v in quads.remainder() {
            for (y, &a) in y.iter_mut().zip(row(i)) {
                *y = a.mul_add(v, *y);
            }
            i += 1;
        }
    }
}

/// Lanes of the partial sums in [`dot_rows`] (one AVX-512 vector of `f32`).
const DOT_LANES: usize = 16;

/// Adds `x * r` lane by lane into `acc` over the whole vectors of `x` and `r`.
#[inline(always)]
fn dot_lanes(acc: &mut [f32; DOT_LANES], x: &[[f32; DOT_LANES]], r: &[[f32; DOT_LANES]]) {
    for (xc, rc) in x.iter().zip(r) {
        for l in 0..DOT_LANES {
            acc[l] = xc[l].mul_add(rc[l], acc[l]);
        }
    }
}

/// The lanes' sum plus the tail's products.
#[inline(always)]
fn dot_total(acc: &[f32; DOT_LANES], x: &[f32], r: &[f32]) -> f32 {
    acc.iter().sum::<f32>() + x.iter().zip(r).map(|(a, b)| a * b).sum::<f32>()
}

multiversion! {
    /// `y[j] += x . w[j rs .. j rs + x.len()]` for every `j < y.len()`: a row vector times the
    /// transpose of a matrix stored by rows (each `rs` apart in `w`), four rows at a time, each
    /// dot product in [`DOT_LANES`] partial sums.
    pub fn dot_rows(y: &mut [f32], x: &[f32], w: &[f32], rs: usize) {
        let k = x.len();
        let row = |j: usize| &w[j * rs..j * rs + k];
        let (xv, xt) = x.as_chunks::<DOT_LANES>();
        let body = k - xt.len();
        let mut quads = y.chunks_exact_mut(4);
        let mut j = 0;
        for q in quads.by_ref() {
            let rows = [row(j), row(j + 1), row(j + 2), row(j + 3)];
            let [v0, v1, v2, v3] = rows.map(|r| r[..body].as_chunks::<DOT_LANES>().0);
            let mut acc = [[0.0f32; DOT_LANES]; 4];
            for ((((xc, c0), c1), c2), c3) in xv.iter().zip(v0).zip(v1).zip(v2).zip(v3) {
                for l in 0..DOT_LANES {
                    acc[0][l] = xc[l].mul_add(c0[l], acc[0][l]);
                    acc[1][l] = xc[l].mul_add(c1[l], acc[1][l]);
                    acc[2][l] = xc[l].mul_add(c2[l], acc[2][l]);
                    acc[3][l] = xc[l].mul_add(c3[l], acc[3][l]);
                }
            }
            for ((y, a), r) in q.iter_mut().zip(&acc).zip(rows) {
                *y += dot_total(a, xt, &r[body..]);
            }
            j += 4;
        }
        for y in quads.into_remainder() {
            let r = row(j);
            let mut acc = [0.0f32; DOT_LANES];
            dot_lanes(&mut acc, xv, r[..body].as_chunks::<DOT_LANES>().0);
            *y += dot_total(&acc, xt, &r[body..]);
            j += 1;
        }
    }
}

multiversion! {
    /// `x *= factor`.
    pub fn scale(x: &mut [f32], factor: f32) {
        for v in x.iter_mut() {
            *v *= factor;
        }
    }
}

multiversion! {
    /// One AdamW update, in place: `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
    /// `p = p (1 - lr wd) - lr (m / c1) / (sqrt(v / c2) + eps)`, with Burn's order of operations.
    pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamWScalars) {
        let (f1, f2) = (1.0 - h.beta_1, 1.0 - h.beta_2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let mi = *m * h.beta_1 + g * f1;
            let vi = *v * h.beta_2 + g * g * f2;
            *m = mi;
            *v = vi;
            let delta = (mi / h.correction_1) / ((vi / h.correction_2).sqrt() + h.epsilon);
            *p = *p * h.keep - delta * h.lr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64, tol: f64) -> bool {
        (f64::from(a) - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn exp_matches_std_over_the_float_range() {
        let mut worst = 0.0f64;
        for i in -8700..=8830 {
            let x = i as f32 * 0.01;
            let want = f64::from(x).exp();
            let rel = (f64::from(exp(x)) - want).abs() / want;
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn gelu_and_its_derivative_match_the_formula() {
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let mut y = vec![0.0; xs.len()];
        gelu_tanh(&xs, &mut y);
        let mut g = vec![1.0; xs.len()];
        gelu_tanh_backward(&xs, &mut g);
        let f = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        };
        for ((&x, &y), &g) in xs.iter().zip(&y).zip(&g) {
            let x = f64::from(x);
            assert!(close(y, f(x), 1e-6), "gelu({x}) = {y} vs {}", f(x));
            let h = 1e-4;
            let num = (f(x + h) - f(x - h)) / (2.0 * h);
            assert!(close(g, num, 1e-5), "gelu'({x}) = {g} vs {num}");
        }
    }

    /// Reference LayerNorm in f64, and its gradient by central differences of
    /// `sum(w * layer_norm(x))`.
    #[test]
    fn layer_norm_forward_and_backward_match_f64_references() {
        let d = 7;
        let rows = 3;
        let x: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + (i as f32).sin())
            .collect();
        let gamma: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..d).map(|i| i as f32 * -0.05).collect();
        let w: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.25)
            .collect();
        let eps = 1e-5f32;
        let reference = |x: &[f64], gamma: &[f64], beta: &[f64]| -> Vec<f64> {
            x.chunks(d)
                .flat_map(|r| {
                    let m = r.iter().sum::<f64>() / d as f64;
                    let v = r.iter().map(|a| (a - m).powi(2)).sum::<f64>() / d as f64;
                    let s = (v + f64::from(eps)).sqrt();
                    r.iter()
                        .zip(gamma)
                        .zip(beta)
                        .map(move |((a, g), b)| (a - m) / s * g + b)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let to64 = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let (x64, g64, b64, w64) = (to64(&x), to64(&gamma), to64(&beta), to64(&w));

        let mut y = vec![0.0; rows * d];
        let mut stats = vec![0.0; rows * 2];
        layer_norm_rows(&x, &gamma, &beta, eps, &mut y, &mut stats);
        for (a, b) in y.iter().zip(reference(&x64, &g64, &b64)) {
            assert!(close(*a, b, 1e-5), "{a} vs {b}");
        }

        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            reference(x, g, b)
                .iter()
                .zip(&w64)
                .map(|(a, w)| a * w)
                .sum()
        };
        let mut dx = w.clone();
        let mut dgamma = vec![0.0; d];
        let mut dbeta = vec![0.0; d];
        layer_norm_backward_rows(&x, &gamma, &stats, &mut dx, &mut dgamma, &mut dbeta);
        let h = 1e-6;
        let numeric = |v: &[f64], i: usize, f: &dyn Fn(&[f64]) -> f64| {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        };
        for (i, &got) in dx.iter().enumerate() {
            let n = numeric(&x64, i, &|v| loss(v, &g64, &b64));
            assert!(close(got, n, 1e-4), "dx[{i}] {got} vs {n}");
        }
        for i in 0..d {
            let n = numeric(&g64, i, &|v| loss(&x64, v, &b64));
            assert!(
                close(dgamma[i], n, 1e-4),
                "dgamma[{i}] {} vs {n}",
                dgamma[i]
            );
            let n = numeric(&b64, i, &|v| loss(&x64, &g64, v));
            assert!(close(dbeta[i], n, 1e-4), "dbeta[{i}] {} vs {n}", dbeta[i]);
        }
    }

    /// Reference RMSNorm in f64 and its gradient by central differences.
    #[test]
    fn rms_norm_forward_and_backward_match_f64_references() {
        let (d, rows) = (7, 3);
        let x: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + (i as f32).sin())
            .collect();
        let gamma: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.1).collect();
        let w: Vec<f64> = (0..rows * d)
            .map(|i| ((i * 13 % 7) as f64 - 3.0) * 0.25)
            .collect();
        let eps = 1e-5f32;
        let reference = |x: &[f64], gamma: &[f64]| -> Vec<f64> {
            x.chunks(d)
                .flat_map(|r| {
                    let ms = r.iter().map(|a| a * a).sum::<f64>() / d as f64;
                    let s = (ms + f64::from(eps)).sqrt();
                    r.iter()
                        .zip(gamma)
                        .map(move |(a, g)| a / s * g)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let to64 = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let (x64, g64) = (to64(&x), to64(&gamma));
        let mut y = vec![0.0; rows * d];
        let mut stats = vec![0.0; rows];
        rms_norm_rows(&x, &gamma, eps, &mut y, &mut stats);
        for (a, b) in y.iter().zip(reference(&x64, &g64)) {
            assert!(close(*a, b, 1e-5), "{a} vs {b}");
        }
        let loss = |x: &[f64], g: &[f64]| -> f64 {
            reference(x, g).iter().zip(&w).map(|(a, w)| a * w).sum()
        };
        let mut dx: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let mut dgamma = vec![0.0; d];
        rms_norm_backward_rows(&x, &gamma, &stats, &mut dx, &mut dgamma);
        let h = 1e-6;
        let numeric = |v: &[f64], i: usize, f: &dyn Fn(&[f64]) -> f64| {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        };
        for (i, &got) in dx.iter().enumerate() {
            let n = numeric(&x64, i, &|v| loss(v, &g64));
            assert!(close(got, n, 1e-4), "dx[{i}] {got} vs {n}");
        }
        for (i, &got) in dgamma.iter().enumerate() {
            let n = numeric(&g64, i, &|v| loss(&x64, v));
            assert!(close(got, n, 1e-4), "dgamma[{i}] {got} vs {n}");
        }
    }

    #[test]
    fn silu_gate_and_its_derivatives_match_the_formula() {
        let a: Vec<f32> = (-600..=600).map(|i| i as f32 * 0.013).collect();
        let u: Vec<f32> = a.iter().map(|x| 0.7 - x * 0.31).collect();
        let mut y = vec![0.0; a.len()];
        silu_mul(&a, &u, &mut y);
        let (mut g, mut du) = (vec![1.0f32; a.len()], u.clone());
        silu_mul_backward(&a, &mut du, &mut g);
        let silu = |x: f64| x / (1.0 + (-x).exp());
        for i in 0..a.len() {
            let (x, up) = (f64::from(a[i]), f64::from(u[i]));
            assert!(
                close(y[i], silu(x) * up, 1e-6),
                "silu({x}) * {up} = {}",
                y[i]
            );
            let h = 1e-5;
            let num = (silu(x + h) - silu(x - h)) / (2.0 * h) * up;
            assert!(close(g[i], num, 1e-5), "d gate at {x}: {} vs {num}", g[i]);
            assert!(close(du[i], silu(x), 1e-6), "d up at {x}");
        }
    }

    #[test]
    fn masked_softmax_and_its_backward_match_references() {
        let x = [0.3f32, -1.2, 2.0, 0.7, -0.1];
        let bias = [0.0, f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY];
        let mut y = [0.0f32; 5];
        softmax_bias_row(&x, &bias, &mut y);
        let kept = [0usize, 2, 3];
        let z: f64 = kept.iter().map(|&i| f64::from(x[i]).exp()).sum();
        for i in 0..5 {
            let want = if kept.contains(&i) {
                f64::from(x[i]).exp() / z
            } else {
                0.0
            };
            assert!(close(y[i], want, 1e-6), "y[{i}] {} vs {want}", y[i]);
        }
        assert_eq!(y[1], 0.0);
        // d/dx_j sum_i w_i y_i = y_j (w_j - sum_i w_i y_i)
        let w = [0.5f32, 2.0, -1.0, 0.25, 3.0];
        let mut g = w;
        softmax_backward_rows(&y, &mut g, 5);
        let dot: f64 = (0..5).map(|i| f64::from(w[i]) * f64::from(y[i])).sum();
        for j in 0..5 {
            let want = f64::from(y[j]) * (f64::from(w[j]) - dot);
            assert!(close(g[j], want, 1e-6), "g[{j}] {} vs {want}", g[j]);
        }
        assert_eq!(g[4], 0.0);
    }

    #[test]
    fn adamw_matches_hand_values_and_an_f64_reference() {
        // Step 1 from zero moments: m/c1 = g and v/c2 = g^2, so the step is lr * sign(g) after
        // the decay p (1 - lr wd): 1 -> 0.99 - 0.1, -2 -> -1.98 + 0.1, and g = 0 only decays.
        let scalars = |t: i32, lr: f32, wd: f32| AdamWScalars {
            beta_1: 0.9,
            beta_2: 0.999,
            correction_1: 1.0 - 0.9f32.powi(t),
            correction_2: 1.0 - 0.999f32.powi(t),
            epsilon: 1e-8,
            lr,
            keep: 1.0 - lr * wd,
        };
        let (mut p, mut m, mut v) = (vec![1.0f32, -2.0, 0.5], vec![0.0f32; 3], vec![0.0f32; 3]);
        adamw(
            &mut p,
            &[0.5, -0.1, 0.0],
            &mut m,
            &mut v,
            &scalars(1, 0.1, 0.1),
        );
        for (got, want) in p.iter().zip([0.89f64, -1.88, 0.495]) {
            assert!(close(*got, want, 1e-6), "{got} vs {want}");
        }
        // Many elements (vector body and remainder), three steps, against f64 arithmetic.
        let n = 37;
        let mut p: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut r: Vec<[f64; 3]> = p.iter().map(|&p| [f64::from(p), 0.0, 0.0]).collect();
        for t in 1..=3 {
            let g: Vec<f32> = (0..n)
                .map(|i| ((i * t) as f32 * 0.91).cos() * 0.3)
                .collect();
            adamw(&mut p, &g, &mut m, &mut v, &scalars(t as i32, 0.01, 0.05));
            for (r, &g) in r.iter_mut().zip(&g) {
                let g = f64::from(g);
                r[1] = 0.9 * r[1] + 0.1 * g;
                r[2] = 0.999 * r[2] + 0.001 * g * g;
                let mh = r[1] / (1.0 - 0.9f64.powi(t as i32));
                let vh = r[2] / (1.0 - 0.999f64.powi(t as i32));
                r[0] = r[0] * (1.0 - 0.01 * 0.05) - 0.01 * mh / (vh.sqrt() + 1e-8);
            }
        }
        for i in 0..n {
            assert!(close(p[i], r[i][0], 1e-6), "p[{i}] {} vs {}", p[i], r[i][0]);
            assert!(close(m[i], r[i][1], 1e-6), "m[{i}] {} vs {}", m[i], r[i][1]);
            assert!(close(v[i], r[i][2], 1e-6), "v[{i}] {} vs {}", v[i], r[i][2]);
        }
    }

    #[test]
    fn sum_of_squares_and_scale_match_f64() {
        for len in [0, 1, 15, 16, 17, 1000, 16_411] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03)
                .collect();
            let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let mut got = -1.0;
            sum_of_squares(&x, &mut got);
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + want),
                "{len}: {got} vs {want}"
            );
            let mut y = x.clone();
            scale(&mut y, -0.37);
            let mut z = x.clone();
            add_into(&mut z, &y);
            for ((z, a), b) in z.iter().zip(&x).zip(&y) {
                assert_eq!(*z, a + b);
            }
            for (a, b) in y.iter().zip(&x) {
                assert_eq!(*a, b * -0.37);
            }
        }
    }
}
