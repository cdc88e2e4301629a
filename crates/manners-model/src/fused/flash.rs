//! Causal attention over whole sequences on `f32` buffers, forward and backward, for training
//! and full-sequence evaluation on flex: packed documents are masked from their ids, and
//! neither the `[b, h, t, t]` scores nor a mask is ever materialised.
//!
//! Each task owns one row of the batch and one key/value head (with the query heads that
//! share it under grouped-query attention, so no key/value head is repeated and the key and
//! value gradients of a task are its own). Queries go in blocks of [`block_rows()`]; a block's
//! scores are computed only against the keys some query of the block may see (from the first
//! position of the earliest query's document to the last query), masked exactly inside that
//! range, and turned into probabilities in place. The forward pass keeps two numbers per query
//! (the shift and the normaliser of its exponentials); the backward pass recomputes the
//! probabilities from them (FlashAttention-2's recomputation), so memory grows with `t`, not
//! `t^2`. Where a [`Budget`] allows, the forward pass of training keeps the probabilities
//! themselves instead, and the backward pass reads them: one product and one exponential pass
//! fewer per block, for `h * t^2 / 2` values per row. Both give the same probabilities bit for
//! bit, so the budget changes speed and memory, never a result.
//!
//! Layouts: inputs are `[b, heads, t, hd]` views with any strides (as the models produce them
//! by splitting heads); outputs are stored `[b, t, heads, hd]`, so merging heads afterwards is
//! free.
//!
//! [`cached`] is generation's attention: a few new queries over a key/value cache's buffers.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::gemm::{self, Mat, Shared, Threads, gemm_here, gemm_into};
use super::kernels;

/// Queries per block: 48 under `gemm`'s AVX-512 kernels, 64 elsewhere.
///
/// Why 48: a block's products have its queries as the destination's rows, which `gemm` covers
/// in tiles of 6 (AVX-512, `f32`), and it packs the other operand (keys, values) once a product
/// has more than 8 tiles. A block of 48 is 8 whole tiles and reads the keys and values in
/// place; one of 64 packed them for every block and ended in a part tile (10 2/3). Measured on
/// an AMD EPYC (Zen 4), attention's forward and backward ran 3-7% faster at 256, 1,024 and
/// 2,048 positions (`docs/performance.md`). Other instruction sets keep the 64 measured before.
fn block_rows() -> usize {
    #[cfg(all(feature = "x86-v4", target_arch = "x86_64"))]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 48;
    }
    64
}

/// A read-only `[b, heads, t, hd]` tensor: element `(i, j, k, l)` at `ptr + i*s[0] + ... `.
#[derive(Clone, Copy)]
pub(super) struct View {
    pub ptr: *const f32,
    pub s: [isize; 4],
}

impl View {
    /// The `[t, hd]` matrix of row `bi`, head `h`, from position `from`.
    fn mat(&self, bi: usize, h: usize, from: usize) -> Mat {
        let off = bi as isize * self.s[0] + h as isize * self.s[1] + from as isize * self.s[2];
        Mat {
            ptr: self.ptr.wrapping_offset(off),
            rs: self.s[2],
            cs: self.s[3],
        }
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    pub b: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (`h` is a multiple).
    pub kvh: usize,
    pub t: usize,
    pub hd: usize,
}

/// Bytes the forward passes of training may fill with kept probabilities: every layer of every
/// graph alive in the process together. A forward pass keeps its probabilities only if all of
/// them fit in what is left; the rest recompute theirs.
pub(super) struct Budget {
    limit: AtomicUsize,
    held: AtomicUsize,
}

/// The process's [`Budget`] (see [`super::set_attention_keep_limit`]).
pub(super) static KEEP: Budget = Budget::new(super::DEFAULT_ATTENTION_KEEP);

impl Budget {
    pub(super) const fn new(limit: usize) -> Self {
        Budget {
            limit: AtomicUsize::new(limit),
            held: AtomicUsize::new(0),
        }
    }

    pub(super) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub(super) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes held now by kept probabilities.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit in what is left.
    fn reserve(&self, bytes: usize) -> bool {
        let limit = self.limit();
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&n| n <= limit)
            })
            .is_ok()
    }
}

/// Probabilities kept from a forward pass, in a [`Layout`]; their bytes go back to the budget
/// when they are dropped (after the backward pass, or with the graph).
struct Kept {
    probs: Vec<f32>,
    budget: &'static Budget,
}

impl Drop for Kept {
    fn drop(&mut self) {
        let bytes = std::mem::size_of_val(self.probs.as_slice());
        self.budget.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What a forward pass leaves for the backward pass.
pub(super) struct Saved {
    /// Per query, `[b, h, t]`: the `(shift, inv)` of its exponentials
    /// ([`kernels::attention_exp_row`]).
    stats: Vec<[f32; 2]>,
    /// The probabilities themselves, where the budget allowed.
    kept: Option<Kept>,
}

impl Saved {
    /// Whether the probabilities were kept (the backward pass recomputes nothing).
    #[cfg(test)]
    fn kept(&self) -> bool {
        self.kept.is_some()
    }

    /// Each query's log-sum-exp of its scaled scores, `[b, h, t]`.
    #[cfg(test)]
    fn lse(&self) -> Vec<f32> {
        self.stats
            .iter()
            .map(|[shift, inv]| shift - inv.ln())
            .collect()
    }
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("queries", &self.stats.len())
            .field("kept", &self.kept.as_ref().map(|k| k.probs.len()))
            .finish()
    }
}

/// Where each query block's probabilities lie in a kept buffer: `(row, head)` after
/// `(row, head)`, and within one the blocks in query order, each `rows x l` row-major (the
/// keys `lo..i1` it may see, as [`block_scores`] computes them).
struct Layout {
    /// The start of each `(row, head)`, `[b, h]`.
    head: Vec<usize>,
    /// The start of each block within a head of row `bi` (the same for every head of a row).
    block: Vec<Vec<usize>>,
    len: usize,
}

impl Layout {
    fn new(starts: &Starts, d: Dims, rows_per_block: usize) -> Self {
        let mut head = Vec::with_capacity(d.b * d.h);
        let mut block = Vec::with_capacity(d.b);
        let mut len = 0;
        for bi in 0..d.b {
            let mut offsets = Vec::with_capacity(d.t.div_ceil(rows_per_block));
            let mut per_head = 0;
            for i0 in (0..d.t).step_by(rows_per_block) {
                let i1 = (i0 + rows_per_block).min(d.t);
                offsets.push(per_head);
                per_head += (i1 - i0) * (i1 - starts.key_start(d, bi, i0, i1));
            }
            for _ in 0..d.h {
                head.push(len);
                len += per_head;
            }
            block.push(offsets);
        }
        Layout { head, block, len }
    }

    /// The offset of block `n` of row `bi`, head `qh`.
    fn at(&self, d: Dims, bi: usize, qh: usize, n: usize) -> usize {
        self.head[bi * d.h + qh] + self.block[bi][n]
    }
}

/// `dst (+)= lhs * rhs` for an `m x n` block on the calling thread (the tasks are the
/// parallelism); `dst` is a pointer and its row stride.
///
/// # Safety
/// As [`gemm_into`]: `dst` valid for writes of the block (initialised when accumulating), the
/// operands valid for reads, no overlap.
unsafe fn block(
    (dst, dst_rs): (*mut f32, isize),
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
) {
    // SAFETY: the caller's contract.
    unsafe { gemm_into(m, n, k, dst, dst_rs, accumulate, lhs, rhs, Threads::Calling) }
}

/// Where each position's keys start, per row of `[b, t]` document ids.
struct Starts {
    /// The first position of the same row with the same id: no key before it can be attended
    /// (every position before it has another id).
    first: Vec<usize>,
    /// The start of the run of equal ids that holds the position. When it equals `first`, the
    /// document is contiguous up to the position, so its keys are exactly `first..=i`.
    run: Vec<usize>,
}

impl Starts {
    fn new(docs: &[f32], d: Dims) -> Self {
        let mut first = vec![0usize; d.b * d.t];
        let mut run = vec![0usize; d.b * d.t];
        let mut seen = std::collections::HashMap::new();
        for (r, row) in docs.chunks(d.t).enumerate() {
            seen.clear();
            for (i, id) in row.iter().enumerate() {
                first[r * d.t + i] = *seen.entry(id.to_bits()).or_insert(i);
                run[r * d.t + i] = if i > 0 && row[i - 1] == *id {
                    run[r * d.t + i - 1]
                } else {
                    i
                };
            }
        }
        Starts { first, run }
    }

    /// The keys block `i0..i1` of row `bi` may see: `lo..i1`.
    fn key_start(&self, d: Dims, bi: usize, i0: usize, i1: usize) -> usize {
        self.first[bi * d.t + i0..bi * d.t + i1]
            .iter()
            .copied()
            .min()
            .unwrap_or(i0)
    }
}

/// Sets to `-inf` the scores (keys `lo..`) that query `i` of row `bi` may not see: later
/// positions and other documents.
fn mask_row(
    row: &mut [f32],
    docs: &[f32],
    starts: &Starts,
    d: Dims,
    bi: usize,
    i: usize,
    lo: usize,
) {
    let at = bi * d.t + i;
    let first = starts.first[at];
    if starts.run[at] == first {
        // Contiguous document: keys `first..=i` and nothing else.
        row[..first - lo].fill(f32::NEG_INFINITY);
        row[i + 1 - lo..].fill(f32::NEG_INFINITY);
        return;
    }
    for (j, s) in (lo..).zip(row.iter_mut()) {
        if j > i || docs[j] != docs[i] {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Buffers reused by the calling thread across calls (fresh allocations of this size cost
/// page faults every layer): two of `n` values for a block's scores and their companion, and
/// two for a task's transposed keys and values (sized by [`transpose_into`]).
fn with_scratch<R>(n: usize, f: impl FnOnce([&mut [f32]; 2], [&mut Vec<f32>; 2]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<[Vec<f32>; 4]> =
            const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
    }
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let [a, b, kt, vt] = &mut *guard;
        if a.len() < n {
            a.resize(n, 0.0);
            b.resize(n, 0.0);
        }
        f([&mut a[..n], &mut b[..n]], [kt, vt])
    })
}

/// `m`, a `[t, hd]` matrix (a task's keys or values), transposed into `buf`: the `[hd, t]`
/// matrix returned, row-major with a row stride a little over `t`.
///
/// Why: a block's scores `q_blk K^T` (and the backward's `dO_blk V^T`) are products whose
/// row-major destination makes `gemm` pack `K` (`V`) into column panels, once per query
/// block, so every key was packed once per later block (about 7% of a 2 x 2,048 training step).
/// From this layout `gemm` reads the keys as they are. The stride is not a multiple of 4 KiB
/// (`t` rounded up to 16, plus 16), so the rows of a panel do not all fall in the same L1
/// cache sets.
fn transpose_into(buf: &mut Vec<f32>, m: Mat, t: usize, hd: usize) -> Mat {
    let stride = t.next_multiple_of(16) + 16;
    if buf.len() < hd * stride {
        buf.resize(hd * stride, 0.0);
    }
    let done = transpose_tiles(buf, m, t, hd, stride);
    transpose_scalar(buf, m, (t, hd, stride), done);
    Mat::rows(buf.as_ptr(), stride)
}

/// The `8 x 8` tiles of [`transpose_into`] with AVX (8 loads, 24 shuffles, 8 stores per tile,
/// where the scalar loop does 64 loads and stores): the positions and columns they covered,
/// `(0, 0)` where the CPU has no AVX or the rows are not contiguous.
fn transpose_tiles(buf: &mut [f32], m: Mat, t: usize, hd: usize, stride: usize) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if m.cs == 1 && std::arch::is_x86_feature_detected!("avx") {
        let (tt, ht) = (t / 8 * 8, hd / 8 * 8);
        assert!(buf.len() >= hd * stride, "transpose buffer too small");
        for j0 in (0..tt).step_by(8) {
            for c0 in (0..ht).step_by(8) {
                // SAFETY: AVX is present (checked above); rows j0..j0+8 and columns c0..c0+8
                // lie in the `[t, hd]` matrix `m` with contiguous rows, and output rows
                // c0..c0+8 at columns j0..j0+8 lie in `buf` (checked above: `hd * stride`).
                unsafe {
                    transpose8x8(
                        m.ptr.offset(j0 as isize * m.rs + c0 as isize),
                        m.rs,
                        buf.as_mut_ptr().add(c0 * stride + j0),
                        stride,
                    );
                }
            }
        }
        return (tt, ht);
    }
    let _ = (buf, m, t, hd, stride);
    (0, 0)
}

/// What [`transpose_tiles`] left: positions from `done.0` in every column, and columns from
/// `done.1` at every position, one element at a time.
fn transpose_scalar(
    buf: &mut [f32],
    m: Mat,
    (t, hd, stride): (usize, usize, usize),
    done: (usize, usize),
) {
    let at = |j: usize, c: usize| {
        // SAFETY: element (j, c) of a valid `[t, hd]` matrix.
        unsafe { *m.ptr.offset(j as isize * m.rs + c as isize * m.cs) }
    };
    // Sixteen positions at a time: their rows stay in L1 while each output row gets one cache
    // line of them.
    for j0 in (0..t).step_by(16) {
        let j1 = (j0 + 16).min(t);
        for (c, row) in buf.chunks_mut(stride).take(hd).enumerate() {
            let from = if c < done.1 { j0.max(done.0) } else { j0 };
            for (j, out) in (from..j1).zip(row[from.min(j1)..j1].iter_mut()) {
                *out = at(j, c);
            }
        }
    }
}

/// One `8 x 8` tile: `dst[c * ds + r] = src[r * rs + c]`.
///
/// # Safety
/// The CPU has AVX; `src` holds 8 rows of 8 contiguous values `rs` apart, and `dst` has room
/// for 8 rows of 8 values `ds` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(src: *const f32, rs: isize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract: every load and store below is inside those rows.
    unsafe {
        let r0 = _mm256_loadu_ps(src);
        let r1 = _mm256_loadu_ps(src.offset(rs));
        let r2 = _mm256_loadu_ps(src.offset(2 * rs));
        let r3 = _mm256_loadu_ps(src.offset(3 * rs));
        let r4 = _mm256_loadu_ps(src.offset(4 * rs));
        let r5 = _mm256_loadu_ps(src.offset(5 * rs));
        let r6 = _mm256_loadu_ps(src.offset(6 * rs));
        let r7 = _mm256_loadu_ps(src.offset(7 * rs));
        // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves exchanged.
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(s0, s4));
        _mm256_storeu_ps(dst.add(ds), _mm256_permute2f128_ps::<0x20>(s1, s5));
        _mm256_storeu_ps(dst.add(2 * ds), _mm256_permute2f128_ps::<0x20>(s2, s6));
        _mm256_storeu_ps(dst.add(3 * ds), _mm256_permute2f128_ps::<0x20>(s3, s7));
        _mm256_storeu_ps(dst.add(4 * ds), _mm256_permute2f128_ps::<0x31>(s0, s4));
        _mm256_storeu_ps(dst.add(5 * ds), _mm256_permute2f128_ps::<0x31>(s1, s5));
        _mm256_storeu_ps(dst.add(6 * ds), _mm256_permute2f128_ps::<0x31>(s2, s6));
        _mm256_storeu_ps(dst.add(7 * ds), _mm256_permute2f128_ps::<0x31>(s3, s7));
    }
}

/// Columns `lo..` of a row-major transposed matrix from [`transpose_into`].
fn from_column(mt: Mat, lo: usize) -> Mat {
    Mat {
        ptr: mt.ptr.wrapping_add(lo),
        ..mt
    }
}

/// The scores `q_blk k_range^T` of block `i0..i1` against keys `lo..i1`, into `s` (row-major,
/// `i1 - lo` wide), masked: returned as a slice of the `rows * l` values written. `kt` is the
/// task's keys transposed (`[hd, t]`, from [`transpose_into`]).
///
/// # Safety
/// `s` is valid for writes of `rows * l` values (they may be uninitialised) that nothing else
/// uses while the returned slice lives.
#[allow(clippy::too_many_arguments)]
unsafe fn block_scores<'a>(
    s: *mut f32,
    q: View,
    kt: Mat,
    docs: &[f32],
    starts: &Starts,
    d: Dims,
    (bi, qh): (usize, usize),
    (i0, i1, lo): (usize, usize, usize),
) -> &'a mut [f32] {
    let (rows, l) = (i1 - i0, i1 - lo);
    // SAFETY: `s` holds `rows * l` values (the caller's contract); q and k are valid
    // `[b, heads, t, hd]` views. The product writes every one of them, so the slice after it
    // is initialised.
    let s = unsafe {
        block(
            (s, l as isize),
            false,
            (rows, l, d.hd),
            q.mat(bi, qh, i0),
            from_column(kt, lo),
        );
        std::slice::from_raw_parts_mut(s, rows * l)
    };
    let row_docs = &docs[bi * d.t..(bi + 1) * d.t];
    for (r, row) in s.chunks_mut(l).enumerate() {
        mask_row(row, row_docs, starts, d, bi, i0 + r, lo);
    }
    s
}

/// Forward: the output, stored `[b, t, h, hd]`, and what the backward pass needs. `docs` is
/// `[b, t]` (all equal: plain causal attention). With `keep` (training), the probabilities are
/// kept if they fit in what is left of that budget.
pub(super) fn forward(
    q: View,
    k: View,
    v: View,
    docs: &[f32],
    scale: f32,
    d: Dims,
    keep: Option<&'static Budget>,
) -> (Vec<f32>, Saved) {
    forward_in_blocks(q, k, v, docs, scale, d, keep, block_rows())
}

/// [`forward`] with blocks of `rows_per_block` queries.
#[allow(clippy::too_many_arguments)]
fn forward_in_blocks(
    q: View,
    k: View,
    v: View,
    docs: &[f32],
    scale: f32,
    d: Dims,
    keep: Option<&'static Budget>,
    rows_per_block: usize,
) -> (Vec<f32>, Saved) {
    let starts = Starts::new(docs, d);
    let layout = keep.map(|_| Layout::new(&starts, d, rows_per_block));
    let mut kept = keep.zip(layout.as_ref()).and_then(|(budget, layout)| {
        let bytes = layout.len.checked_mul(std::mem::size_of::<f32>())?;
        budget.reserve(bytes).then(|| gemm::uninit(layout.len))
    });
    let mut out = gemm::uninit(d.b * d.t * d.h * d.hd);
    let mut stats = vec![[0.0f32; 2]; d.b * d.h * d.t];
    let (o_ptr, stats_ptr) = (Shared(out.as_mut_ptr().cast()), Shared(stats.as_mut_ptr()));
    // Where the probabilities go when they are kept: the buffer and its layout.
    let keeping = kept
        .as_mut()
        .zip(layout.as_ref())
        .map(|(p, layout)| (Shared(p.as_mut_ptr().cast::<f32>()), layout));
    let (q, k, v) = (Shared(q), Shared(k), Shared(v));
    let rep = d.h / d.kvh;
    (0..d.b * d.kvh).into_par_iter().for_each(|task| {
        let (bi, kh) = (task / d.kvh, task % d.kvh);
        let (q, k, v, stats_ptr) = (q, k, v, stats_ptr);
        let (q, k, v) = (q.0, k.0, v.0);
        with_scratch(rows_per_block * d.t, |[scratch, inv], [kt, _]| {
            let kt = transpose_into(kt, k.mat(bi, kh, 0), d.t, d.hd);
            for qh in kh * rep..(kh + 1) * rep {
                for (n, i0) in (0..d.t).step_by(rows_per_block).enumerate() {
                    let i1 = (i0 + rows_per_block).min(d.t);
                    let lo = starts.key_start(d, bi, i0, i1);
                    let (rows, l) = (i1 - i0, i1 - lo);
                    // Kept: the scores go where the backward pass will read the probabilities.
                    let dst = match keeping {
                        Some((p, layout)) => p.at(layout.at(d, bi, qh, n)),
                        None => scratch.as_mut_ptr(),
                    };
                    // SAFETY: the kept block `(bi, qh, n)` (this task's own, `rows * l` values
                    // long by the layout) or the scratch (`rows_per_block * t` values).
                    let s = unsafe {
                        block_scores(dst, q, kt, docs, &starts, d, (bi, qh), (i0, i1, lo))
                    };
                    for (r, row) in s.chunks_mut(l).enumerate() {
                        let at = (bi * d.h + qh) * d.t + i0 + r;
                        let (shift, row_inv) = kernels::attention_exp_row(row, scale);
                        // SAFETY: `at` indexes this task's own (row, head) statistics.
                        unsafe { *stats_ptr.0.add(at) = [shift, row_inv] };
                        // Unnormalised: the output row is divided by the sum after the product.
                        inv[r] = row_inv;
                    }
                    let row_stride = (d.h * d.hd) as isize;
                    let dst = ((bi * d.t + i0) * d.h + qh) * d.hd;
                    // SAFETY: rows `i0..i1` of head `qh` in row `bi` belong to this task only; `s`
                    // holds `rows * l` probabilities.
                    unsafe {
                        block(
                            (o_ptr.at(dst), row_stride),
                            false,
                            (rows, d.hd, l),
                            Mat::rows(s.as_ptr(), l),
                            v.mat(bi, kh, lo),
                        );
                        for (r, &inv) in inv[..rows].iter().enumerate() {
                            // SAFETY: the row just written, of this task.
                            let row = std::slice::from_raw_parts_mut(
                                o_ptr.at(dst + r * d.h * d.hd),
                                d.hd,
                            );
                            row.iter_mut().for_each(|x| *x *= inv);
                        }
                    }
                    if keeping.is_some() {
                        // The probabilities, as the backward pass would recompute them.
                        for (row, &inv) in s.chunks_mut(l).zip(&inv[..rows]) {
                            kernels::scale(row, inv);
                        }
                    }
                }
            }
        });
    });
    let kept = kept.zip(keep).map(|(probs, budget)| Kept {
        // SAFETY: the tasks wrote every block of every (row, head) of the layout.
        probs: unsafe { gemm::assume_init(probs) },
        budget,
    });
    // SAFETY: the tasks wrote every query row of every head.
    (unsafe { gemm::assume_init(out) }, Saved { stats, kept })
}

/// A `[b, heads, t, hd]` destination with unit stride along `hd`: element `(i, j, k, l)` at
/// `ptr + i*s[0] + j*s[1] + k*s[2] + l`.
#[derive(Clone, Copy)]
pub(super) struct Dst {
    pub ptr: *mut f32,
    pub s: [isize; 3],
}

impl Dst {
    /// A destination stored `[b, t, heads, hd]` (contiguous) at `ptr`.
    fn stored(ptr: *mut f32, d: Dims, heads: usize) -> Self {
        Dst {
            ptr,
            s: [
                (d.t * heads * d.hd) as isize,
                d.hd as isize,
                (heads * d.hd) as isize,
            ],
        }
    }

    /// The row `(bi, h, i)` and the stride between consecutive positions.
    fn row(self, bi: usize, h: usize, i: usize) -> (*mut f32, isize) {
        let off = bi as isize * self.s[0] + h as isize * self.s[1] + i as isize * self.s[2];
        (self.ptr.wrapping_offset(off), self.s[2])
    }
}

/// Backward: `(dq, dk, dv)`, stored `[b, t, h, hd]`, `[b, t, kvh, hd]` and `[b, t, kvh, hd]`.
/// `o` is the forward output (stored `[b, t, h, hd]`), `saved` what its forward pass left, `g`
/// the output's gradient as a `[b, h, t, hd]` view.
pub(super) fn backward(
    [q, k, v]: [View; 3],
    o: &[f32],
    saved: &Saved,
    g: View,
    docs: &[f32],
    scale: f32,
    d: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dq = gemm::uninit(d.b * d.t * d.h * d.hd);
    let mut dk = gemm::uninit(d.b * d.t * d.kvh * d.hd);
    let mut dv = gemm::uninit(d.b * d.t * d.kvh * d.hd);
    let dst =
        |buf: &mut Vec<MaybeUninit<f32>>, heads| Dst::stored(buf.as_mut_ptr().cast(), d, heads);
    let dsts = [dst(&mut dq, d.h), dst(&mut dk, d.kvh), dst(&mut dv, d.kvh)];
    // SAFETY: three separate buffers of the destinations' shapes, alive for the call; the call
    // writes every element of them.
    unsafe {
        backward_into(q, k, v, o, saved, g, docs, scale, d, dsts, block_rows());
        (
            gemm::assume_init(dq),
            gemm::assume_init(dk),
            gemm::assume_init(dv),
        )
    }
}

/// Backward for a packed projection (`d.h == d.kvh`): the gradient of `qkv`, stored
/// `[b, t, 3 * h * hd]` (queries, keys, values).
pub(super) fn backward_packed(
    [q, k, v]: [View; 3],
    o: &[f32],
    saved: &Saved,
    g: View,
    docs: &[f32],
    scale: f32,
    d: Dims,
) -> Vec<f32> {
    assert_eq!(
        d.h, d.kvh,
        "a packed projection has as many key/value heads as query heads"
    );
    let width = 3 * d.h * d.hd;
    let mut dqkv = gemm::uninit(d.b * d.t * width);
    let base = dqkv.as_mut_ptr().cast::<f32>();
    let dst = |i: usize| Dst {
        ptr: base.wrapping_add(i * d.h * d.hd),
        s: [(d.t * width) as isize, d.hd as isize, width as isize],
    };
    // SAFETY: the three destinations are disjoint column ranges that together cover one buffer
    // of the packed shape, alive for the call, and the call writes every element of them.
    unsafe {
        let dsts = [dst(0), dst(1), dst(2)];
        backward_into(q, k, v, o, saved, g, docs, scale, d, dsts, block_rows());
        gemm::assume_init(dqkv)
    }
}

/// Writes the gradients of `q`, `k` and `v` into `dst` (`[b, h, t, hd]`,
/// `[b, kvh, t, hd]`, `[b, kvh, t, hd]` destinations, which may share one buffer, e.g. a packed
/// `qkv` gradient). Every element of the destinations is written (each task first zeroes its
/// own rows, on its own thread just before using them, then accumulates into them), so they
/// may start uninitialised.
/// `o` is the forward output (stored `[b, t, h, hd]`), `saved` what its forward pass (with
/// blocks of `rows_per_block`) left, `g` the output's gradient as a `[b, h, t, hd]` view.
///
/// # Safety
/// The destinations must be valid for writes of those shapes, not overlap each other or the
/// inputs, and stay alive for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn backward_into(
    q: View,
    k: View,
    v: View,
    o: &[f32],
    saved: &Saved,
    g: View,
    docs: &[f32],
    scale: f32,
    d: Dims,
    dst: [Dst; 3],
    rows_per_block: usize,
) {
    let starts = Starts::new(docs, d);
    let layout = saved
        .kept
        .as_ref()
        .map(|kept| (kept, Layout::new(&starts, d, rows_per_block)));
    assert!(
        layout
            .as_ref()
            .is_none_or(|(kept, l)| l.len == kept.probs.len()),
        "kept probabilities from a forward pass of another shape"
    );
    let stats = &saved.stats;
    let dsts = Shared(dst);
    let (q, k, v, g) = (Shared(q), Shared(k), Shared(v), Shared(g));
    let rep = d.h / d.kvh;
    (0..d.b * d.kvh).into_par_iter().for_each(|task| {
        let (bi, kh) = (task / d.kvh, task % d.kvh);
        let (q, k, v, g, dsts) = (q, k, v, g, dsts);
        let (q, k, v, g) = (q.0, k.0, v.0, g.0);
        let [dq, dk, dv] = dsts.0;
        for i in 0..d.t {
            let rows = (kh * rep..(kh + 1) * rep).map(|qh| dq.row(bi, qh, i));
            for (row, _) in rows.chain([dk.row(bi, kh, i), dv.row(bi, kh, i)]) {
                // SAFETY: position `i` of this task's own heads (queries `qh` of key head `kh`,
                // and key head `kh`) in row `bi`: `hd` values of a valid destination.
                unsafe { std::ptr::write_bytes(row, 0, d.hd) };
            }
        }
        let mut dot = vec![0.0f32; d.t];
        with_scratch(rows_per_block * d.t, |[scratch, dp], [kt, vt]| {
            // The transposed keys serve only to recompute scores.
            let kt = layout
                .is_none()
                .then(|| transpose_into(kt, k.mat(bi, kh, 0), d.t, d.hd));
            let vt = transpose_into(vt, v.mat(bi, kh, 0), d.t, d.hd);
            for qh in kh * rep..(kh + 1) * rep {
                // d_i = dO_i . O_i (= sum_j p_ij dp_ij).
                for (i, di) in dot.iter_mut().enumerate() {
                    let orow = &o[((bi * d.t + i) * d.h + qh) * d.hd..][..d.hd];
                    let gm = g.mat(bi, qh, i);
                    *di = (0..d.hd)
                        // SAFETY: element (0, c) of a valid `[t, hd]` view, c < hd.
                        .map(|c| unsafe { *gm.ptr.offset(c as isize * gm.cs) } * orow[c])
                        .sum();
                }
                for (n, i0) in (0..d.t).step_by(rows_per_block).enumerate() {
                    let i1 = (i0 + rows_per_block).min(d.t);
                    let lo = starts.key_start(d, bi, i0, i1);
                    let (rows, l) = (i1 - i0, i1 - lo);
                    let p: &[f32] = match &layout {
                        Some((kept, layout)) => &kept.probs[layout.at(d, bi, qh, n)..][..rows * l],
                        None => {
                            // SAFETY: the scratch holds `rows_per_block * t` values.
                            let s = unsafe {
                                block_scores(
                                    scratch.as_mut_ptr(),
                                    q,
                                    kt.expect("transposed when nothing is kept"),
                                    docs,
                                    &starts,
                                    d,
                                    (bi, qh),
                                    (i0, i1, lo),
                                )
                            };
                            let at = (bi * d.h + qh) * d.t + i0;
                            for (row, &[shift, inv]) in s.chunks_mut(l).zip(&stats[at..]) {
                                kernels::attention_probs_row(row, scale, shift, inv);
                            }
                            s
                        }
                    };
                    let p_blk = Mat::rows(p.as_ptr(), l);
                    // SAFETY (all four products): the destinations are this task's own rows
                    // (`dq` rows of head `qh`, `dk`/`dv` rows of key head `kh` in row `bi`), the
                    // scratch buffers hold `rows * l` values, the views are valid.
                    unsafe {
                        // dV[lo..i1] += P^T dO_blk
                        block(
                            dv.row(bi, kh, lo),
                            true,
                            (l, d.hd, rows),
                            p_blk.t(),
                            g.mat(bi, qh, i0),
                        );
                        // dP = dO_blk V[lo..i1]^T
                        block(
                            (dp.as_mut_ptr(), l as isize),
                            false,
                            (rows, l, d.hd),
                            g.mat(bi, qh, i0),
                            from_column(vt, lo),
                        );
                    }
                    for (r, (prow, dprow)) in
                        p.chunks(l).zip(dp[..rows * l].chunks_mut(l)).enumerate()
                    {
                        kernels::attention_dscores_row(prow, dprow, dot[i0 + r], scale);
                    }
                    let ds = Mat::rows(dp.as_ptr(), l);
                    unsafe {
                        // dQ_blk = dS K[lo..i1]
                        block(
                            dq.row(bi, qh, i0),
                            false,
                            (rows, d.hd, l),
                            ds,
                            k.mat(bi, kh, lo),
                        );
                        // dK[lo..i1] += dS^T Q_blk
                        block(
                            dk.row(bi, kh, lo),
                            true,
                            (l, d.hd, rows),
                            ds.t(),
                            q.mat(bi, qh, i0),
                        );
                    }
                }
            }
        });
    });
}

/// Minimum multiply-adds of a [`cached`] attention for one rayon task per (row, head):
/// burn-flex's threshold for the same split.
const CACHED_PARALLEL: usize = 256 * 1024;

/// Generation's attention: `d.t` new queries `q` (`[b, h, t, hd]`, contiguous) over the first
/// `len` positions of a key/value cache `k`, `v` (`[b, kvh, len, hd]` views, any strides, read
/// where they are). Query `i` sits at position `len - t + i` and sees the keys up to its own,
/// except row `r`'s first `pads[r]` (left padding; a padding query sees only itself). Returns
/// `[b, h, t, hd]`, contiguous.
///
/// Per (row, head) this is burn-flex's attention of a short block (its `naive_attention_head`):
/// a `gemm` for the scores into a `[t, len]` scratch, the masked softmax row by row, a `gemm`
/// for the output ([`gemm_here`]: the same call on the same strides as it makes on contiguous
/// copies). So the
/// sums run in the same order and the result is bit for bit Burn's; only the copy of the cache
/// that Burn would make first is gone.
pub(super) fn cached(
    q: &[f32],
    k: View,
    v: View,
    len: usize,
    pads: &[usize],
    scale: f32,
    d: Dims,
) -> Vec<f32> {
    let Dims { b, h, kvh, t, hd } = d;
    let group = h / kvh;
    let past = len - t;
    let (k, v) = (Shared(k), Shared(v));
    let mut out = vec![0.0f32; b * h * t * hd];
    let head = |scores: &mut Vec<f32>, (idx, o): (usize, &mut [f32])| {
        // The whole wrappers, not their pointer fields (which the closure would capture alone).
        let (k, v) = ({ k }.0, { v }.0);
        let (r, g) = (idx / h, idx % h / group);
        let qh = &q[idx * t * hd..(idx + 1) * t * hd];
        // SAFETY: `k.mat` is this row's and key head's `len x hd` block of the live, read-only
        // keys (through their strides), `qh` is `t x hd` and `scores` `t x len`.
        unsafe {
            gemm_here(
                t,
                len,
                hd,
                scores.as_mut_ptr(),
                len as isize,
                Mat::rows(qh.as_ptr(), hd),
                k.mat(r, g, 0).t(),
            )
        };
        let pad = pads[r];
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            let pos = past + i;
            let mut max = f32::NEG_INFINITY;
            for (j, s) in row.iter_mut().enumerate() {
                let mut x = *s * scale;
                if (j < pad && j != pos) || j > pos {
                    x = f32::NEG_INFINITY;
                }
                *s = x;
                if x > max {
                    max = x;
                }
            }
            let mut sum = 0.0f32;
            for s in row.iter_mut() {
                let e = (*s - max).exp();
                *s = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for s in row.iter_mut() {
                *s *= inv;
            }
        }
        // SAFETY: as above, for the values (`len x hd`) and the output block `o` (`t x hd`).
        unsafe {
            gemm_here(
                t,
                hd,
                len,
                o.as_mut_ptr(),
                hd as isize,
                Mat::rows(scores.as_ptr(), len),
                v.mat(r, g, 0),
            );
        }
    };
    if b * h > 1 && b * h * t * len * 2 * hd >= CACHED_PARALLEL {
        out.par_chunks_exact_mut(t * hd)
            .enumerate()
            .for_each_init(|| vec![0.0f32; t * len], head);
    } else {
        let mut scores = vec![0.0f32; t * len];
        for block in out.chunks_exact_mut(t * hd).enumerate() {
            head(&mut scores, block);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// A contiguous `[b, heads, t, hd]` view of `v`.
    fn view(v: &[f32], heads: usize, d: Dims) -> View {
        View {
            ptr: v.as_ptr(),
            s: [
                (heads * d.t * d.hd) as isize,
                (d.t * d.hd) as isize,
                d.hd as isize,
                1,
            ],
        }
    }

    /// Queries, keys, values and the output's gradient (values from `seed` on), and document
    /// ids: the second row holds a second document from position `second_doc`.
    fn inputs(d: Dims, seed: u64, second_doc: usize) -> ([Vec<f32>; 4], Vec<f32>) {
        let qkvg = [d.h, d.kvh, d.kvh, d.h]
            .into_iter()
            .zip(seed..)
            .map(|(heads, seed)| values(d.b * heads * d.t * d.hd, seed));
        let docs = (0..d.b * d.t)
            .map(|i| if i >= d.t + second_doc { 1.0 } else { 0.0 })
            .collect();
        (qkvg.collect::<Vec<_>>().try_into().unwrap(), docs)
    }

    /// [`backward_into`] (scale 0.35, blocks of `rows`) into `dq`, `dk`, `dv` destinations
    /// (stored `[b, t, heads, hd]`) that start full of NaN.
    fn backward_into_nan(
        [q, k, v]: [View; 3],
        o: &[f32],
        saved: &Saved,
        g: View,
        docs: &[f32],
        d: Dims,
        rows: usize,
    ) -> [Vec<f32>; 3] {
        let mut grads = [d.h, d.kvh, d.kvh].map(|heads| vec![f32::NAN; d.b * d.t * heads * d.hd]);
        let [a, b, c] = &mut grads;
        let dst = |buf: &mut Vec<f32>, heads| Dst::stored(buf.as_mut_ptr(), d, heads);
        let dsts = [dst(a, d.h), dst(b, d.kvh), dst(c, d.kvh)];
        // SAFETY: three separate buffers of the destinations' shapes, alive for the call.
        unsafe { backward_into(q, k, v, o, saved, g, docs, 0.35, d, dsts, rows) };
        grads
    }

    #[test]
    fn backward_writes_every_destination_element_whatever_it_held() {
        // Grouped heads, two query blocks (t > block_rows()) and two documents in the second row.
        let d = Dims {
            b: 2,
            h: 4,
            kvh: 2,
            t: block_rows() + 6,
            hd: 8,
        };
        let ([q, k, v, g], docs) = inputs(d, 1, 30);
        let view = |x: &[f32], heads: usize| view(x, heads, d);
        let qkv = [view(&q, d.h), view(&k, d.kvh), view(&v, d.kvh)];
        let (o, saved) = forward(qkv[0], qkv[1], qkv[2], &docs, 0.35, d, None);
        let (dq, dk, dv) = backward(qkv, &o, &saved, view(&g, d.h), &docs, 0.35, d);
        assert!(dq.iter().chain(&dk).chain(&dv).all(|x| x.is_finite()));
        assert!(dk.iter().any(|&x| x != 0.0) && dv.iter().any(|&x| x != 0.0));

        // The same into destinations full of NaN: an element left unwritten (or accumulated
        // into without being zeroed first) stays NaN.
        let nan = backward_into_nan(qkv, &o, &saved, view(&g, d.h), &docs, d, block_rows());
        assert_eq!(nan, [dq, dk, dv]);
    }

    /// Keys and values are transposed in `8 x 8` tiles with AVX and element by element for
    /// the rest (ragged positions and columns, or rows that are not contiguous): every element
    /// lands where a plain transpose puts it, from a strided source as the packed `qkv` gives.
    #[test]
    fn transposed_keys_equal_a_plain_transpose_for_ragged_and_strided_matrices() {
        for (t, hd) in [(150, 64), (8, 8), (7, 64), (64, 12), (33, 20), (1, 3)] {
            let rs = 3 * hd + 5;
            let src = values(t * rs, t as u64 * 31 + hd as u64);
            let want = |j: usize, c: usize| src[j * rs + c];
            // Rows contiguous (the tiles where the CPU has AVX), and the same matrix read
            // through a column-major copy (element by element only).
            let col_major: Vec<f32> = (0..hd)
                .flat_map(|c| (0..t).map(move |j| (c, j)))
                .map(|(c, j)| want(j, c))
                .collect();
            let sources = [
                Mat {
                    ptr: src.as_ptr(),
                    rs: rs as isize,
                    cs: 1,
                },
                Mat {
                    ptr: col_major.as_ptr(),
                    rs: 1,
                    cs: t as isize,
                },
            ];
            for m in sources {
                let mut buf = vec![f32::NAN; 3];
                let out = transpose_into(&mut buf, m, t, hd);
                assert_eq!(out.cs, 1);
                for c in 0..hd {
                    for j in 0..t {
                        let got = buf[c * out.rs as usize + j];
                        assert_eq!(got, want(j, c), "t {t} hd {hd} cs {}: ({c}, {j})", m.cs);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx") {
                let mut buf = vec![0.0; hd * (t.next_multiple_of(16) + 16)];
                let stride = t.next_multiple_of(16) + 16;
                let done = transpose_tiles(&mut buf, sources[0], t, hd, stride);
                assert_eq!(done, (t / 8 * 8, hd / 8 * 8), "the tiles ran");
            }
        }
    }

    /// The shape of the block-size and kept-probability tests: two rows of 150 positions, the
    /// second of two documents (the second starts at 70, inside a block of any size tried);
    /// grouped heads.
    const SHAPE: Dims = Dims {
        b: 2,
        h: 4,
        kvh: 2,
        t: 150,
        hd: 8,
    };

    /// Forward and backward on [`SHAPE`] with blocks of `rows` and the budget `keep`: the
    /// output, the log-sum-exps and the three gradients, and whether the probabilities were
    /// kept.
    fn run_blocks(rows: usize, keep: Option<&'static Budget>) -> ([Vec<f32>; 5], bool) {
        let d = SHAPE;
        let ([q, k, v, g], docs) = inputs(d, 5, 70);
        let view = |x: &[f32], heads: usize| view(x, heads, d);
        let [q, k, v] = [view(&q, d.h), view(&k, d.kvh), view(&v, d.kvh)];
        let (o, saved) = forward_in_blocks(q, k, v, &docs, 0.35, d, keep, rows);
        let [dq, dk, dv] = backward_into_nan([q, k, v], &o, &saved, view(&g, d.h), &docs, d, rows);
        ([o, saved.lse(), dq, dk, dv], saved.kept())
    }

    #[test]
    fn every_block_size_gives_the_same_attention_and_gradients() {
        // Block sizes: the two `block_rows` picks (48 and 64, so the one this machine does not
        // use runs too) and 16.
        let (reference, _) = run_blocks(48, None);
        for rows in [64, 16] {
            let (other, _) = run_blocks(rows, None);
            for (what, (x, y)) in ["output", "lse", "dq", "dk", "dv"]
                .iter()
                .zip(reference.iter().zip(&other))
            {
                let worst = x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{what}, blocks of {rows}: off by {worst}");
            }
        }
    }

    /// The probabilities kept by the forward pass and those the backward pass recomputes are
    /// the same bits, so the budget never changes a result; the budget holds a forward pass's
    /// bytes while its graph lives, refuses what does not fit, and gets them back on drop.
    #[test]
    fn kept_probabilities_give_the_gradients_of_recomputed_ones_bit_for_bit() {
        let d = SHAPE;
        for rows in [48, 64, 16] {
            // What the layout holds, counted by hand: per row and head, each block's queries
            // times the keys it may see (from its earliest query's document start to its last
            // query). Row 0 is one document; row 1's second document starts at 70.
            let blocks = |first_doc_end: usize| -> usize {
                (0..d.t)
                    .step_by(rows)
                    .map(|i0| {
                        let i1 = (i0 + rows).min(d.t);
                        let lo = if i0 >= first_doc_end {
                            first_doc_end
                        } else {
                            0
                        };
                        (i1 - i0) * (i1 - lo)
                    })
                    .sum()
            };
            let bytes = 4 * d.h * (blocks(d.t) + blocks(70));
            let budget: &'static Budget = Box::leak(Box::new(Budget::new(bytes)));
            let (recomputed, kept) = run_blocks(rows, None);
            assert!(!kept);
            let (from_kept, kept) = run_blocks(rows, Some(budget));
            assert!(
                kept,
                "blocks of {rows}: {bytes} bytes fit a budget of as many"
            );
            assert_eq!(budget.held(), 0, "dropped with the graph");
            for (what, (x, y)) in ["output", "lse", "dq", "dk", "dv"]
                .iter()
                .zip(recomputed.iter().zip(&from_kept))
            {
                let same = x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}, blocks of {rows}: kept and recomputed differ");
            }

            // Held while the forward pass's result lives; one byte short of the layout: not kept.
            let ([q, k, v, _], docs) = inputs(d, 5, 70);
            let [q, k, v] = [view(&q, d.h, d), view(&k, d.kvh, d), view(&v, d.kvh, d)];
            let (_, saved) = forward_in_blocks(q, k, v, &docs, 0.35, d, Some(budget), rows);
            assert!(saved.kept());
            assert_eq!(budget.held(), bytes);
            let (_, second) = forward_in_blocks(q, k, v, &docs, 0.35, d, Some(budget), rows);
            assert!(!second.kept(), "nothing left for a second pass");
            drop(saved);
            assert_eq!(budget.held(), 0);
            budget.set_limit(bytes - 1);
            let (_, short) = forward_in_blocks(q, k, v, &docs, 0.35, d, Some(budget), rows);
            assert!(!short.kept() && budget.held() == 0);
        }
    }
}
