//! The fused operations as a Burn backend extension for `flex`, with hand-written backward
//! passes for `Autodiff<Flex>`. Only `f32` tensors reach this module (see [`super`]).

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Bytes, DType, Flex, backend_extension};
use rayon::prelude::*;

use super::flash;
use super::gemm::{self, Mat};
use super::kernels;

/// Elements per rayon task for elementwise kernels.
const CHUNK: usize = 1 << 14;
/// Rows per rayon task for row kernels.
const ROWS: usize = 64;
/// Rows of an embedding table per rayon task in its backward pass.
const EMBEDDING_ROWS: usize = 512;

#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// GELU, tanh approximation.
    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// LayerNorm over the last dimension.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self>;
    /// `softmax(x + bias)` over the last dimension of a 4-d `x`; `bias` broadcasts over the
    /// first two dimensions and is a constant (no gradient flows into it).
    fn fused_softmax_bias(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// RMSNorm over the last dimension.
    fn fused_rms_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self>;
    /// `silu(gate) * up`, elementwise (same shapes).
    fn fused_silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Causal attention over whole sequences: `q` `[b, h, t, hd]`, `k` and `v`
    /// `[b, kvh, t, hd]` (any strides), `docs` `[b, t]` document ids (a constant: a query sees
    /// earlier keys of its own document only; all equal for plain causal attention). Returns
    /// `[b, h, t, hd]`, stored `[b, t, h, hd]`.
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        docs: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// [`FusedOps::fused_attention`] on a packed projection `qkv` `[b, t, 3 * heads * hd]` (q,
    /// then k, then v, heads in order: GPT-2's `c_attn` output), whose gradient comes back as
    /// one tensor. Returns `[b, heads, t, hd]`, stored `[b, t, heads, hd]`.
    fn fused_attention_qkv(
        qkv: FloatTensor<Self>,
        docs: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// Cross-entropy per row, `lse(x) - x[target]`, for logits `[n, vocab]` and targets
    /// `[n, 1]` (token ids as floats, a constant): `[n, 1]`.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The rows of `weight` `[vocab, d]` at the token ids `ids` `[b, t]` (which get no
    /// gradient): `[b, t, d]`.
    fn fused_embedding(weight: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self>;
    /// `x [.., in] * w [in, out]`.
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x [.., in] * w [in, out] + b [out]`.
    fn fused_linear_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// A contiguous `f32` view of `t` starting at offset 0 (copies only when it is not one).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    let c = t.to_contiguous();
    debug_assert_eq!(c.layout().start_offset(), 0);
    c
}

fn new_tensor(data: Vec<f32>, shape: burn::backend::Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

fn values(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

/// `g` as a contiguous tensor at offset 0, to overwrite in place through `storage_mut` (which
/// copies first only if another handle shares the buffer).
fn take_mut(g: FlexTensor) -> FlexTensor {
    if g.layout().is_contiguous() && g.layout().start_offset() == 0 {
        g
    } else {
        contiguous(&g)
    }
}

fn gelu_forward(x: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let xs = values(&x);
    let y = gemm::new_by_chunks(xs.len(), CHUNK, xs.par_chunks(CHUNK), |y, x| {
        kernels::gelu_tanh(x, y)
    });
    new_tensor(y, x.layout().shape().clone())
}

fn gelu_backward(x: &FlexTensor, g: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let mut g = take_mut(g);
    let n = g.layout().num_elements();
    let gs = &mut g.storage_mut::<f32>()[..n];
    gs.par_chunks_mut(CHUNK)
        .zip(values(&x).par_chunks(CHUNK))
        .for_each(|(g, x)| kernels::gelu_tanh_backward(x, g));
    g
}

/// LayerNorm forward: the output and `[mean, 1/std]` per row.
fn layer_norm_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f32,
) -> (FlexTensor, Vec<f32>) {
    let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
    let (xs, gs, bs) = (values(&x), values(&gamma), values(&beta));
    let d = gs.len();
    let rows = xs.len() / d;
    let mut stats = vec![0.0f32; rows * 2];
    let parts = xs.par_chunks(ROWS * d).zip(stats.par_chunks_mut(ROWS * 2));
    let y = gemm::new_by_chunks(xs.len(), ROWS * d, parts, |y, (x, st)| {
        kernels::layer_norm_rows(x, gs, bs, eps, y, st)
    });
    (new_tensor(y, x.layout().shape().clone()), stats)
}

/// LayerNorm backward: `(dx, Some((dgamma, dbeta)))`, the parameter gradients only when asked.
fn layer_norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    stats: &[f32],
    g: FlexTensor,
    want_params: bool,
) -> (FlexTensor, Option<(FlexTensor, FlexTensor)>) {
    let (x, gamma) = (contiguous(x), contiguous(gamma));
    let gs = values(&gamma);
    let d = gs.len();
    let mut g = take_mut(g);
    let n = g.layout().num_elements();
    let gm = &mut g.storage_mut::<f32>()[..n];
    let width = if want_params { d } else { 0 };
    let partial = gm
        .par_chunks_mut(ROWS * d)
        .zip(values(&x).par_chunks(ROWS * d))
        .zip(stats.par_chunks(ROWS * 2))
        .map(|((g, x), st)| {
            let mut dg = vec![0.0f32; width];
            let mut db = vec![0.0f32; width];
            kernels::layer_norm_backward_rows(x, gs, st, g, &mut dg, &mut db);
            (dg, db)
        })
        .reduce(
            || (vec![0.0f32; width], vec![0.0f32; width]),
            |(mut a, mut b), (c, e)| {
                a.iter_mut().zip(c).for_each(|(a, c)| *a += c);
                b.iter_mut().zip(e).for_each(|(b, e)| *b += e);
                (a, b)
            },
        );
    let params = want_params.then(|| {
        let shape = gamma.layout().shape().clone();
        (
            new_tensor(partial.0, shape.clone()),
            new_tensor(partial.1, shape),
        )
    });
    (g, params)
}

/// RMSNorm forward: the output and `1/rms` per row.
fn rms_norm_forward(x: &FlexTensor, gamma: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let (x, gamma) = (contiguous(x), contiguous(gamma));
    let (xs, gs) = (values(&x), values(&gamma));
    let d = gs.len();
    let rows = xs.len() / d;
    let mut stats = vec![0.0f32; rows];
    let parts = xs.par_chunks(ROWS * d).zip(stats.par_chunks_mut(ROWS));
    let y = gemm::new_by_chunks(xs.len(), ROWS * d, parts, |y, (x, st)| {
        kernels::rms_norm_rows(x, gs, eps, y, st)
    });
    (new_tensor(y, x.layout().shape().clone()), stats)
}

/// RMSNorm backward: `(dx, Some(dgamma))`, the gain's gradient only when asked.
fn rms_norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    stats: &[f32],
    g: FlexTensor,
    want_gamma: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    let (x, gamma) = (contiguous(x), contiguous(gamma));
    let gs = values(&gamma);
    let d = gs.len();
    let mut g = take_mut(g);
    let n = g.layout().num_elements();
    let gm = &mut g.storage_mut::<f32>()[..n];
    let width = if want_gamma { d } else { 0 };
    let dgamma = gm
        .par_chunks_mut(ROWS * d)
        .zip(values(&x).par_chunks(ROWS * d))
        .zip(stats.par_chunks(ROWS))
        .map(|((g, x), st)| {
            let mut dg = vec![0.0f32; width];
            kernels::rms_norm_backward_rows(x, gs, st, g, &mut dg);
            dg
        })
        .reduce(
            || vec![0.0f32; width],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        );
    let dgamma = want_gamma.then(|| new_tensor(dgamma, gamma.layout().shape().clone()));
    (g, dgamma)
}

fn silu_mul_forward(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let (gate, up) = (contiguous(gate), contiguous(up));
    let parts = values(&gate)
        .par_chunks(CHUNK)
        .zip(values(&up).par_chunks(CHUNK));
    let y = gemm::new_by_chunks(gate.layout().num_elements(), CHUNK, parts, |y, (a, u)| {
        kernels::silu_mul(a, u, y)
    });
    new_tensor(y, gate.layout().shape().clone())
}

/// `(d_gate, d_up)` from the output gradient.
fn silu_mul_backward(
    gate: &FlexTensor,
    up: &FlexTensor,
    g: FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let gate = contiguous(gate);
    let mut du = contiguous(up);
    let mut g = take_mut(g);
    let n = g.layout().num_elements();
    let gs = &mut g.storage_mut::<f32>()[..n];
    let us = &mut du.storage_mut::<f32>()[..n];
    gs.par_chunks_mut(CHUNK)
        .zip(us.par_chunks_mut(CHUNK))
        .zip(values(&gate).par_chunks(CHUNK))
        .for_each(|((g, u), a)| kernels::silu_mul_backward(a, u, g));
    (g, du)
}

fn softmax_forward(x: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let (x, bias) = (contiguous(x), contiguous(bias));
    let xd = x.layout().shape().to_vec();
    let bd = bias.layout().shape().to_vec();
    let (nb, nh, t, n) = (xd[0], xd[1], xd[2], xd[3]);
    let (xs, bs) = (values(&x), values(&bias));
    let parts = xs.par_chunks(ROWS * n).enumerate();
    let y = gemm::new_by_chunks(xs.len(), ROWS * n, parts, |y, (c, x)| {
        for (r, (y, x)) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).enumerate() {
            let row = c * ROWS + r; // over [nb, nh, t]
            let (bi, hi, ti) = (row / (nh * t), row / t % nh, row % t);
            let bb = if bd[0] == 1 { 0 } else { bi };
            let bh = if bd[1] == 1 { 0 } else { hi };
            let start = ((bb * bd[1] + bh) * t + ti) * n;
            kernels::softmax_bias_row(x, &bs[start..start + n], y);
        }
    });
    debug_assert_eq!(xs.len(), nb * nh * t * n);
    new_tensor(y, x.layout().shape().clone())
}

fn softmax_backward(y: &FlexTensor, g: FlexTensor) -> FlexTensor {
    let y = contiguous(y);
    let n = *y.layout().shape().last().expect("softmax of a scalar");
    let mut g = take_mut(g);
    let len = g.layout().num_elements();
    let gs = &mut g.storage_mut::<f32>()[..len];
    gs.par_chunks_mut(ROWS * n)
        .zip(values(&y).par_chunks(ROWS * n))
        .for_each(|(g, y)| kernels::softmax_backward_rows(y, g, n));
    g
}

/// A 2-d `f32` tensor as a gemm operand (any strides, no copy).
fn mat(t: &FlexTensor) -> Mat {
    let l = t.layout();
    let strides = l.strides();
    let ptr = t.storage::<f32>()[l.start_offset()..].as_ptr();
    Mat {
        ptr,
        rs: strides[0],
        cs: strides[1],
    }
}

/// Whether the matrix `w` (`[k, n]`, `k, n > 1`) is the transpose of a contiguous `[n, k]` one.
fn stored_transposed(w: &FlexTensor) -> bool {
    let (l, shape) = (w.layout(), w.layout().shape());
    shape[0] > 1 && shape[1] > 1 && l.strides() == [1, shape[0] as isize]
}

/// The token ids `ids` as row numbers of a `rows`-row table. An id outside the table is a bug
/// upstream (the tokenizer and the model disagree on the vocabulary), so it panics, as Burn's
/// own `select` does.
fn token_rows(ids: &FlexTensor, rows: usize) -> Vec<usize> {
    let ids: Vec<i64> = ids
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .expect("token ids convert to i64");
    ids.into_iter()
        .map(|id| {
            usize::try_from(id)
                .ok()
                .filter(|&r| r < rows)
                .unwrap_or_else(|| panic!("token id {id} is outside the embedding's {rows} rows"))
        })
        .collect()
}

/// `weight[ids]`: each row copied once, [`ROWS`] rows per rayon task. Also returns the ids as
/// row numbers, for the backward pass.
fn embedding_forward(weight: &FlexTensor, ids: &FlexTensor) -> (FlexTensor, Vec<usize>) {
    let w = contiguous(weight);
    let (rows, d) = (w.layout().shape()[0], w.layout().shape()[1]);
    let idx = token_rows(ids, rows);
    let table = values(&w);
    let y = gemm::new_by_chunks(idx.len() * d, ROWS * d, idx.par_chunks(ROWS), |y, ids| {
        for (y, &r) in y.chunks_exact_mut(d.max(1)).zip(ids) {
            y.copy_from_slice(&table[r * d..(r + 1) * d]);
        }
    });
    let mut shape = ids.layout().shape().to_vec();
    shape.push(d);
    (new_tensor(y, shape.into()), idx)
}

/// The gradient of [`embedding_forward`] for the table, `[rows, d]`, from the row number of each
/// position (`idx`, as the forward pass returned them): each position's output
/// gradient added to its token's row, in position order (so the sums are bit for bit those of
/// burn-flex's `embedding_backward`). The table is cut into blocks of [`EMBEDDING_ROWS`] rows,
/// one rayon task each, which zeroes its block (the first touch, on its own thread) and adds
/// the positions whose tokens fall in it. burn-flex builds the zeroed table as a byte vector
/// and then copies it to realign it: two fresh `[rows, d]` buffers a step, whose page faults
/// were 7% of a GPT-2 small step (a 154 MB table).
fn embedding_backward(g: &FlexTensor, idx: &[usize], rows: usize) -> FlexTensor {
    let g = contiguous(g);
    let d = *g
        .layout()
        .shape()
        .last()
        .expect("embedding gradient of a scalar");
    let gs = values(&g);
    // Positions sorted by row, then by position: each block's positions are one run, in order.
    let mut order: Vec<(usize, usize)> = idx.iter().enumerate().map(|(p, &r)| (r, p)).collect();
    order.sort_unstable();
    let blocks = rows.div_ceil(EMBEDDING_ROWS);
    let dw = gemm::new_by_chunks(
        rows * d,
        EMBEDDING_ROWS * d,
        (0..blocks).into_par_iter(),
        |block, b| {
            let first = b * EMBEDDING_ROWS;
            let start = order.partition_point(|&(r, _)| r < first);
            let end = order.partition_point(|&(r, _)| r < first + EMBEDDING_ROWS);
            for &(r, p) in &order[start..end] {
                let row = &mut block[(r - first) * d..(r - first + 1) * d];
                kernels::add_into(row, &gs[p * d..(p + 1) * d]);
            }
        },
    );
    new_tensor(dw, vec![rows, d].into())
}

/// `x` as a contiguous matrix of its rows (`[.., k] -> [m, k]`): `(x, m, k)`.
fn rows(x: &FlexTensor) -> (FlexTensor, usize, usize) {
    let x = contiguous(x);
    let shape = x.layout().shape();
    let k = shape[shape.num_dims() - 1];
    let m = shape.iter().rev().skip(1).product();
    (x, m, k)
}

/// `x * w (+ b)` for `x` `[.., k]`, `w` `[k, n]`: `[.., n]`.
fn linear_forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let (x, m, k) = rows(x);
    let n = w.layout().shape()[1];
    let lhs = Mat::rows(values(&x).as_ptr(), k);
    let y = match b {
        Some(b) => gemm::product_plus_bias(m, n, k, lhs, mat(w), values(&contiguous(b))),
        None => gemm::product(m, n, k, lhs, mat(w)),
    };
    let mut shape = x.layout().shape().clone();
    let last = shape.num_dims() - 1;
    shape[last] = n;
    new_tensor(y, shape)
}

/// The gradients of [`linear_forward`] for the inputs that want one: `dx = g w^T`,
/// `dw = x^T g`, `db` = column sums of `g`.
fn linear_backward(
    x: &FlexTensor,
    w: &FlexTensor,
    g: FlexTensor,
    want: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let (x, m, k) = rows(x);
    let g = contiguous(&g);
    let n = w.layout().shape()[1];
    let gm = Mat::rows(values(&g).as_ptr(), n);
    let dx = want[0].then(|| {
        let dx = gemm::product(m, k, n, gm, mat(w).t());
        new_tensor(dx, x.layout().shape().clone())
    });
    let dw = want[1].then(|| {
        let xm = Mat::rows(values(&x).as_ptr(), k);
        if stored_transposed(w) {
            // `w` is the transpose of a stored `[n, k]` matrix (a tied LM head's embedding):
            // give its gradient the same layout, so the transpose's backward hands the
            // embedding a contiguous gradient and the two uses' sum is a contiguous add.
            let dwt = gemm::product(n, k, m, gm.t(), xm);
            let layout = Layout::new([k, n].into(), vec![1, k as isize], 0);
            FlexTensor::new(Bytes::from_elems(dwt), layout, DType::F32)
        } else {
            new_tensor(
                gemm::product(k, n, m, xm.t(), gm),
                w.layout().shape().clone(),
            )
        }
    });
    let db = want[2].then(|| new_tensor(gemm::column_sums(values(&g), n), [n].into()));
    [dx, dw, db]
}

/// A 4-d `f32` tensor as an attention operand (any strides, no copy).
fn view(t: &FlexTensor) -> flash::View {
    let l = t.layout();
    let s = l.strides();
    flash::View {
        ptr: t.storage::<f32>()[l.start_offset()..].as_ptr(),
        s: [s[0], s[1], s[2], s[3]],
    }
}

/// `[b, heads, t, hd]` over a buffer stored `[b, t, heads, hd]`.
fn heads_view(data: Vec<f32>, b: usize, heads: usize, t: usize, hd: usize) -> FlexTensor {
    let strides = vec![
        (t * heads * hd) as isize,
        hd as isize,
        (heads * hd) as isize,
        1,
    ];
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::new([b, heads, t, hd].into(), strides, 0),
        DType::F32,
    )
}

fn attention_dims(q: &FlexTensor, k: &FlexTensor) -> flash::Dims {
    let qs = q.layout().shape();
    flash::Dims {
        b: qs[0],
        h: qs[1],
        kvh: k.layout().shape()[1],
        t: qs[2],
        hd: qs[3],
    }
}

/// [`flash::forward`] on tensors: the output and what the backward pass needs (with `keep`,
/// for training: the probabilities too where the budget allows).
fn attention_forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    docs: &FlexTensor,
    scale: f32,
    keep: Option<&'static flash::Budget>,
) -> (FlexTensor, flash::Saved) {
    let d = attention_dims(q, k);
    let docs = contiguous(docs);
    let (o, saved) = flash::forward(view(q), view(k), view(v), values(&docs), scale, d, keep);
    (heads_view(o, d.b, d.h, d.t, d.hd), saved)
}

/// The q, k and v views of a contiguous packed `qkv` `[b, t, 3 * heads * hd]`.
fn qkv_views(qkv: &FlexTensor, heads: usize) -> ([flash::View; 3], flash::Dims) {
    let shape = qkv.layout().shape();
    let (b, t, width) = (shape[0], shape[1], shape[2]);
    let hd = width / 3 / heads;
    let base = values(qkv).as_ptr();
    let s = [(t * width) as isize, hd as isize, width as isize, 1];
    let part = |i: usize| flash::View {
        ptr: base.wrapping_add(i * heads * hd),
        s,
    };
    let d = flash::Dims {
        b,
        h: heads,
        kvh: heads,
        t,
        hd,
    };
    ([part(0), part(1), part(2)], d)
}

/// [`flash::forward`] on a packed `qkv` (contiguous).
fn attention_qkv_forward(
    qkv: &FlexTensor,
    docs: &FlexTensor,
    heads: usize,
    scale: f32,
    keep: Option<&'static flash::Budget>,
) -> (FlexTensor, flash::Saved) {
    let ([q, k, v], d) = qkv_views(qkv, heads);
    let (o, saved) = flash::forward(q, k, v, values(docs), scale, d, keep);
    (heads_view(o, d.b, d.h, d.t, d.hd), saved)
}

/// Per-row cross-entropy of `logits` `[n, vocab]` against `targets` `[n, 1]` (float ids):
/// the losses `[n, 1]` and each row's log-sum-exp.
fn cross_entropy_forward(logits: &FlexTensor, targets: &FlexTensor) -> (FlexTensor, Vec<f32>) {
    let (x, tg) = (contiguous(logits), contiguous(targets));
    let (xs, ts) = (values(&x), values(&tg));
    let n = ts.len();
    let vocab = xs.len().checked_div(n).unwrap_or(0);
    let mut lse = vec![0.0f32; n];
    let mut loss = vec![0.0f32; n];
    lse.par_iter_mut()
        .zip(loss.par_iter_mut())
        .zip(xs.par_chunks(vocab.max(1)))
        .zip(ts.par_iter())
        .for_each_init(
            || vec![0.0f32; vocab],
            |scratch, (((lse, loss), row), &t)| {
                kernels::log_sum_exp_row(row, scratch, std::slice::from_mut(lse));
                *loss = *lse - row[t as usize];
            },
        );
    (new_tensor(loss, [n, 1].into()), lse)
}

/// Its gradient: `g_i (softmax(x_i) - onehot(t_i))` per row, written over the logits' buffer
/// when nothing else holds it (the head's output is needed by nothing else after the loss).
fn cross_entropy_backward(
    logits: FlexTensor,
    targets: &FlexTensor,
    lse: &[f32],
    g: FlexTensor,
) -> FlexTensor {
    let (tg, g) = (contiguous(targets), contiguous(&g));
    let (ts, gs) = (values(&tg), values(&g));
    let mut x = take_mut(logits);
    let n = x.layout().num_elements();
    let xs = &mut x.storage_mut::<f32>()[..n];
    let vocab = n.checked_div(ts.len()).unwrap_or(0);
    xs.par_chunks_mut(vocab.max(1))
        .zip(lse.par_iter().zip(ts.par_iter()).zip(gs.par_iter()))
        .for_each(|(row, ((&lse, &t), &g))| {
            kernels::softmax_scaled_row(row, lse, g);
            row[t as usize] -= g;
        });
    x
}

impl FusedOps for Flex {
    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_forward(&x)
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self> {
        layer_norm_forward(&x, &gamma, &beta, epsilon).0
    }

    fn fused_softmax_bias(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_forward(&x, &bias)
    }

    fn fused_rms_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self> {
        rms_norm_forward(&x, &gamma, epsilon).0
    }

    fn fused_silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_mul_forward(&gate, &up)
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        docs: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        attention_forward(&q, &k, &v, &docs, scale, None).0
    }

    fn fused_attention_qkv(
        qkv: FloatTensor<Self>,
        docs: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        attention_qkv_forward(&contiguous(&qkv), &contiguous(&docs), heads, scale, None).0
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy_forward(&logits, &targets).0
    }

    fn fused_embedding(weight: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        embedding_forward(&weight, &ids).0
    }

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_forward(&x, &w, None)
    }

    fn fused_linear_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        linear_forward(&x, &w, Some(&b))
    }
}

/// The backward step of a one-input operation: `grad(state, output gradient)` is the input
/// gradient (GELU keeps its input as state, softmax its output).
#[derive(Debug)]
struct UnaryBackward {
    grad: fn(&FlexTensor, FlexTensor) -> FlexTensor,
}

impl Backward<Flex, 1> for UnaryBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<Flex>(parent.id, (self.grad)(&ops.state, g));
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// The input, gamma and `[mean, 1/std]` per row.
    type State = (FlexTensor, FlexTensor, std::sync::Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pgamma, pbeta] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, gamma, stats) = ops.state;
        let want_params = pgamma.is_some() || pbeta.is_some();
        let (dx, params) = layer_norm_backward(&x, &gamma, &stats, g, want_params);
        if let Some(p) = px {
            grads.register::<Flex>(p.id, dx);
        }
        if let Some((dgamma, dbeta)) = params {
            if let Some(p) = pgamma {
                grads.register::<Flex>(p.id, dgamma);
            }
            if let Some(p) = pbeta {
                grads.register::<Flex>(p.id, dbeta);
            }
        }
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// The input, gamma and `1/rms` per row.
    type State = (FlexTensor, FlexTensor, std::sync::Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pgamma] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, gamma, stats) = ops.state;
        let (dx, dgamma) = rms_norm_backward(&x, &gamma, &stats, g, pgamma.is_some());
        if let Some(p) = px {
            grads.register::<Flex>(p.id, dx);
        }
        if let (Some(p), Some(dg)) = (pgamma, dgamma) {
            grads.register::<Flex>(p.id, dg);
        }
    }
}

#[derive(Debug)]
struct SiluMulBackward;

impl Backward<Flex, 2> for SiluMulBackward {
    /// The gate and up inputs.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pgate, pup] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (gate, up) = ops.state;
        let (dgate, dup) = silu_mul_backward(&gate, &up, g);
        if let Some(p) = pgate {
            grads.register::<Flex>(p.id, dgate);
        }
        if let Some(p) = pup {
            grads.register::<Flex>(p.id, dup);
        }
    }
}

/// The backward step of [`attention_forward`] (the document ids get no gradient).
#[derive(Debug)]
struct AttentionBackward {
    scale: f32,
}

impl Backward<Flex, 3> for AttentionBackward {
    /// q, k, v, the output, the document ids and what the forward pass left.
    type State = (
        FlexTensor,
        FlexTensor,
        FlexTensor,
        FlexTensor,
        FlexTensor,
        std::sync::Arc<flash::Saved>,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let (q, k, v, o, docs, saved) = ops.state;
        let d = attention_dims(&q, &k);
        let o_len = o.layout().num_elements();
        let (dq, dk, dv) = flash::backward(
            [view(&q), view(&k), view(&v)],
            &o.storage::<f32>()[..o_len],
            &saved,
            view(&g),
            values(&docs),
            self.scale,
            d,
        );
        let grads_of = [
            heads_view(dq, d.b, d.h, d.t, d.hd),
            heads_view(dk, d.b, d.kvh, d.t, d.hd),
            heads_view(dv, d.b, d.kvh, d.t, d.hd),
        ];
        for (parent, grad) in ops.parents.into_iter().zip(grads_of) {
            if let Some(p) = parent {
                grads.register::<Flex>(p.id, grad);
            }
        }
    }
}

/// The backward step of [`attention_qkv_forward`]: one gradient for the packed `qkv`.
#[derive(Debug)]
struct AttentionQkvBackward {
    heads: usize,
    scale: f32,
}

impl Backward<Flex, 1> for AttentionQkvBackward {
    /// The packed qkv (contiguous), the output, the document ids and what the forward pass
    /// left.
    type State = (
        FlexTensor,
        FlexTensor,
        FlexTensor,
        std::sync::Arc<flash::Saved>,
    );

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [parent] = ops.parents;
        let Some(parent) = parent else { return };
        let (qkv, o, docs, saved) = ops.state;
        let ([q, k, v], d) = qkv_views(&qkv, self.heads);
        let o_len = o.layout().num_elements();
        let dqkv = flash::backward_packed(
            [q, k, v],
            &o.storage::<f32>()[..o_len],
            &saved,
            view(&g),
            values(&docs),
            self.scale,
            d,
        );
        grads.register::<Flex>(parent.id, new_tensor(dqkv, qkv.layout().shape().clone()));
    }
}

/// The backward step of [`cross_entropy_forward`] (the targets get no gradient).
#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    /// The logits, the targets and each row's log-sum-exp.
    type State = (FlexTensor, FlexTensor, std::sync::Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [parent] = ops.parents;
        let (logits, targets, lse) = ops.state;
        if let Some(p) = parent {
            grads.register::<Flex>(p.id, cross_entropy_backward(logits, &targets, &lse, g));
        }
    }
}

/// The backward step of [`embedding_forward`] (the ids get no gradient).
#[derive(Debug)]
struct EmbeddingBackward;

impl Backward<Flex, 1> for EmbeddingBackward {
    /// Each position's row number and the table's row count.
    type State = (std::sync::Arc<Vec<usize>>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [parent] = ops.parents;
        let (idx, rows) = ops.state;
        if let Some(p) = parent {
            grads.register::<Flex>(p.id, embedding_backward(&g, &idx, rows));
        }
    }
}

/// The backward step of [`linear_forward`], with or without a bias (`N` = 2 or 3 parents).
#[derive(Debug)]
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    /// The input and the weight.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let (x, w) = ops.state;
        let parent = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref());
        let want = [0, 1, 2].map(|i| parent(i).is_some());
        let out = linear_backward(&x, &w, g, want);
        for (i, grad) in out.into_iter().enumerate() {
            if let (Some(p), Some(grad)) = (parent(i), grad) {
                grads.register::<Flex>(p.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let op = UnaryBackward {
            grad: gelu_backward,
        };
        match op.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                let y = gelu_forward(&input);
                prep.finish(input, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_forward(x.primitive())),
        }
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, stats) =
                    layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
                let state = (
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    std::sync::Arc::new(stats),
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon).0,
            ),
        }
    }

    fn fused_softmax_bias(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let op = UnaryBackward {
            grad: softmax_backward,
        };
        match op.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = softmax_forward(x.primitive(), bias.primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(softmax_forward(x.primitive(), bias.primitive()))
            }
        }
    }

    fn fused_rms_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node()];
        match RmsNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, stats) = rms_norm_forward(x.primitive(), gamma.primitive(), epsilon);
                let state = (
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    std::sync::Arc::new(stats),
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(rms_norm_forward(x.primitive(), gamma.primitive(), epsilon).0)
            }
        }
    }

    fn fused_silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [gate.node(), up.node()];
        match SiluMulBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = silu_mul_forward(gate.primitive(), up.primitive());
                prep.finish((gate.primitive().clone(), up.primitive().clone()), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(silu_mul_forward(gate.primitive(), up.primitive()))
            }
        }
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        docs: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let nodes = [q.node(), k.node(), v.node()];
        let op = AttentionBackward { scale };
        let (qp, kp, vp, dp) = (
            q.primitive(),
            k.primitive(),
            v.primitive(),
            docs.primitive(),
        );
        match op.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let docs = contiguous(dp);
                let (y, saved) = attention_forward(qp, kp, vp, &docs, scale, Some(&flash::KEEP));
                let state = (
                    qp.clone(),
                    kp.clone(),
                    vp.clone(),
                    y.clone(),
                    docs,
                    std::sync::Arc::new(saved),
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(attention_forward(qp, kp, vp, dp, scale, None).0)
            }
        }
    }

    fn fused_attention_qkv(
        qkv: FloatTensor<Self>,
        docs: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        let op = AttentionQkvBackward { heads, scale };
        let packed = contiguous(qkv.primitive());
        let docs = contiguous(docs.primitive());
        match op.prepare::<C>([qkv.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, saved) =
                    attention_qkv_forward(&packed, &docs, heads, scale, Some(&flash::KEEP));
                prep.finish((packed, y.clone(), docs, std::sync::Arc::new(saved)), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(attention_qkv_forward(&packed, &docs, heads, scale, None).0)
            }
        }
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, t) = (logits.primitive(), targets.primitive());
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, lse) = cross_entropy_forward(x, t);
                prep.finish((x.clone(), t.clone(), std::sync::Arc::new(lse)), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(cross_entropy_forward(x, t).0),
        }
    }

    fn fused_embedding(weight: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        match EmbeddingBackward
            .prepare::<C>([weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let rows = weight.primitive().layout().shape()[0];
                let (y, idx) = embedding_forward(weight.primitive(), &ids);
                prep.finish((std::sync::Arc::new(idx), rows), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(embedding_forward(weight.primitive(), &ids).0),
        }
    }

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node()];
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = linear_forward(x.primitive(), w.primitive(), None);
                prep.finish((x.primitive().clone(), w.primitive().clone()), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(linear_forward(x.primitive(), w.primitive(), None))
            }
        }
    }

    fn fused_linear_bias(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node()];
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = linear_forward(x.primitive(), w.primitive(), Some(b.primitive()));
                prep.finish((x.primitive().clone(), w.primitive().clone()), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(linear_forward(
                x.primitive(),
                w.primitive(),
                Some(b.primitive()),
            )),
        }
    }
}

/// Inference on plain (not autodiff) `flex` tensors: generation's attention over its cache.
#[backend_extension(Flex)]
pub trait FusedInferenceOps: Backend {
    /// Attention of new queries `q` `[b, h, t, hd]` over cached keys and values `k`, `v`
    /// `[b, kvh, len, hd]` (any strides, read in place), query `i` at position `len - t + i`
    /// seeing keys up to its own except the first `pads[row]` (`pads` `[b]`, whole numbers as
    /// floats; a padding query sees only itself). Returns `[b, h, t, hd]`, contiguous.
    fn fused_cached_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pads: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

impl FusedInferenceOps for Flex {
    fn fused_cached_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pads: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        cached_attention(&q, &k, &v, &pads, scale)
    }
}

/// [`flash::cached`] on tensors.
fn cached_attention(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    pads: &FlexTensor,
    scale: f32,
) -> FlexTensor {
    let q = contiguous(q);
    let pads: Vec<usize> = values(&contiguous(pads))
        .iter()
        .map(|&p| p as usize)
        .collect();
    let qs = q.layout().shape();
    let d = flash::Dims {
        b: qs[0],
        h: qs[1],
        kvh: k.layout().shape()[1],
        t: qs[2],
        hd: qs[3],
    };
    let len = k.layout().shape()[2];
    let out = flash::cached(values(&q), view(k), view(v), len, &pads, scale, d);
    new_tensor(out, [d.b, d.h, d.t, d.hd].into())
}

/// The optimizer update, on plain (not autodiff) `flex` tensors: the optimizer works on the
/// parameters' inner values.
#[backend_extension(Flex)]
pub trait FusedOptimOps: Backend {
    /// One AdamW update in one pass: returns the new parameter, first and second moments. Each
    /// is written in place into the buffer it came in when no other handle shares it.
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: kernels::AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// The sum of the squares of the values, as a one-element tensor: one multi-threaded,
    /// read-only pass, chunks' partial sums added in `f64` in a fixed order (so the result does
    /// not depend on how the threads split the work).
    fn fused_sum_of_squares(t: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `t * factor` in one multi-threaded pass, in place when no other handle shares the buffer.
    fn fused_scale(t: FloatTensor<Self>, factor: f32) -> FloatTensor<Self>;
}

impl FusedOptimOps for Flex {
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: kernels::AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grad = contiguous(&grad);
        let (mut p, mut m, mut v) = (take_mut(param), take_mut(moment_1), take_mut(moment_2));
        let n = p.layout().num_elements();
        let ps = &mut p.storage_mut::<f32>()[..n];
        let ms = &mut m.storage_mut::<f32>()[..n];
        let vs = &mut v.storage_mut::<f32>()[..n];
        ps.par_chunks_mut(CHUNK)
            .zip(values(&grad).par_chunks(CHUNK))
            .zip(ms.par_chunks_mut(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| kernels::adamw(p, g, m, v, &scalars));
        (p, m, v)
    }

    fn fused_sum_of_squares(t: FloatTensor<Self>) -> FloatTensor<Self> {
        let t = contiguous(&t);
        let parts: Vec<f64> = values(&t)
            .par_chunks(CHUNK)
            .map(|c| {
                let mut s = 0.0;
                kernels::sum_of_squares(c, &mut s);
                s
            })
            .collect();
        new_tensor(vec![parts.iter().sum::<f64>() as f32], [1].into())
    }

    fn fused_scale(t: FloatTensor<Self>, factor: f32) -> FloatTensor<Self> {
        let mut t = take_mut(t);
        let n = t.layout().num_elements();
        t.storage_mut::<f32>()[..n]
            .par_chunks_mut(CHUNK)
            .for_each(|c| kernels::scale(c, factor));
        t
    }
}
