//! Matrix products on `f32` buffers, into outputs allocated here.
//!
//! Why not `Tensor::matmul` on flex: burn-flex 0.22 allocates every product as a zeroed
//! `Vec<u8>` and then `Bytes::from_bytes_vec` copies it into a buffer of Burn's runtime
//! alignment, so each product costs a zero fill and a full copy on one thread (about 10% of a
//! tiny training step in a profile: `memset`, `memmove` and page clearing, while the worker
//! threads wait). Here the output is allocated once, uninitialised, and written by the kernel.
//!
//! Split products (the layers' own, large enough to pay for threads) cut the output into one
//! panel per rayon thread, along its longer side, and run `gemm` (what burn-flex calls) on
//! each panel on one thread: no synchronisation inside a product, and each thread packs its own
//! operands. On a 2-core Intel Xeon with AVX-512 this reaches 199-242 GFLOP/s on a training
//! step's products, where `gemm`'s own rayon split read 129-240 and `matrixmultiply`'s 125-157
//! (`torch.mm`: 260-299, same run); see `docs/performance.md`. Attention blocks run `gemm` on the calling
//! thread (the tasks are the parallelism).
//!
//! Products of at most four rows (a generation step: one new token per sequence) skip `gemm`:
//! each is a pass over a weight matrix, bound by memory bandwidth, and `gemm` ran those on one
//! thread (below its threading threshold) with packing meant for blocks of 64 rows.
//! [`vector_product`] reads the weight once, split over the threads by columns.
//!
//! `MANNERS_GEMM=gemm` (gemm's own split) or `MANNERS_GEMM=matrixmultiply` (bluss'
//! `matrixmultiply`, already in Burn's tree through ndarray; it measured ahead of `gemm`'s split
//! on a 2-core AMD EPYC without AVX-512, before the panels existed) overrides the choice, for
//! comparing them on a machine: `manners bench --only matmul-shapes` times all of them.
//!
//! The one module of the crate with `unsafe` code besides the attention kernel: the kernels
//! take raw pointers and strides, and the outputs start uninitialised. Callers pass operands
//! built from live tensors' storage.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// A read-only matrix operand: element `(i, j)` is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// A row-major matrix with `cols` columns.
    pub fn rows(ptr: *const f32, cols: usize) -> Self {
        Self {
            ptr,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of this operand (no data moves).
    pub fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Where a product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Threads {
    /// On the calling thread (a task among many, e.g. one attention block).
    Calling,
    /// Split over the machine's threads when it is large enough to pay for the split.
    Split,
}

/// Products smaller than this (multiply-adds) run on the calling thread: below it, splitting
/// the work costs more than it saves (burn-flex uses the same threshold).
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// The kernel that runs split products in this process: [`Kernel::GemmPanels`] unless
/// `MANNERS_GEMM` names another.
fn split_kernel() -> Kernel {
    static CHOICE: OnceLock<Kernel> = OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("MANNERS_GEMM").as_deref() {
        Ok("gemm") => Kernel::GemmSplit,
        Ok("matrixmultiply") => Kernel::MatrixMultiplySplit,
        _ => Kernel::GemmPanels,
    })
}

/// `dst = lhs * rhs` (or `dst += lhs * rhs` when `accumulate`) for `lhs` `m x k`, `rhs` `k x n`
/// and a row-major `dst` with row stride `dst_rs`.
///
/// # Safety
/// `dst` must be valid for writes of the `m x n` matrix (and initialised when `accumulate`),
/// the operands valid for reads of their matrices, and `dst` must not overlap them.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    threads: Threads,
) {
    if m <= VECTOR_ROWS && k > 0 && rhs.rs >= 0 && rhs.cs >= 0 && (rhs.cs == 1 || rhs.rs == 1) {
        let split = threads == Threads::Split && m * n * k >= VECTOR_SPLIT;
        // SAFETY: the caller's contract.
        unsafe { vector_product(m, n, k, dst, dst_rs, accumulate, lhs, rhs, split) };
        return;
    }
    let big = m.saturating_mul(n).saturating_mul(k) >= PARALLEL_THRESHOLD;
    let kernel = if threads == Threads::Split && big {
        split_kernel()
    } else {
        Kernel::GemmHere
    };
    // SAFETY: the caller's contract.
    unsafe { run(kernel, m, n, k, dst, dst_rs, accumulate, lhs, rhs) }
}

/// `dst = lhs * rhs` through `gemm` on the calling thread, whatever the shape (no vector
/// products, no panels): the call burn-flex's attention makes for a short block, so a kernel
/// that must match its sums bit for bit ([`super::flash::cached`]) makes it too.
///
/// # Safety
/// As [`gemm_into`].
pub(super) unsafe fn gemm_here(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: Mat,
    rhs: Mat,
) {
    // SAFETY: the caller's contract.
    unsafe { run(Kernel::GemmHere, m, n, k, dst, dst_rs, false, lhs, rhs) }
}

/// Products with at most this many rows (a generation step's tokens) run as vector products
/// ([`vector_product`]): `gemm` packs for blocks of 64 rows, and a step of batch-1 generation
/// is a pass over every weight, bound by memory, not by multiply-adds.
pub(super) const VECTOR_ROWS: usize = 4;

/// Vector products with at least this many multiply-adds are split over rayon's threads (a
/// weight of 256 KB: the split costs a few microseconds, reading it about ten).
const VECTOR_SPLIT: usize = 1 << 16;

/// Columns of a vector product per pass over the rows of `lhs` (when there are several): the
/// block of a row-major `rhs` they read (`k x 128`, 1.5 MB at `k` 3,072) stays in a core's L2
/// for the next row.
const VECTOR_BLOCK: usize = 128;

/// `dst = lhs * rhs` (or `+=`) for `m <= VECTOR_ROWS`, one row of `lhs` at a time through
/// [`kernels::vector_times_rows`] (a row-major `rhs`: `cs == 1`) or [`kernels::dot_rows`] (a
/// transposed one: `rs == 1`, e.g. a tied LM head), the columns cut into one panel per thread
/// when `split`. Each output element is the same sum whichever panel or block it falls in.
///
/// # Safety
/// As [`gemm_into`], with `rhs.cs == 1` or `rhs.rs == 1`.
#[allow(clippy::too_many_arguments)]
unsafe fn vector_product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    split: bool,
) {
    use super::kernels;
    // The rows of `lhs` gathered into one contiguous buffer (at most four rows of `k`: a few
    // thousand values, whatever the operand's strides).
    let x: Vec<f32> = (0..m * k)
        .map(|e| {
            let (i, p) = (e / k, e % k);
            // SAFETY: (i, p) is inside the caller's `m x k` operand.
            unsafe { *lhs.ptr.offset(i as isize * lhs.rs + p as isize * lhs.cs) }
        })
        .collect();
    let by_rows = rhs.cs == 1;
    // The matrix `rhs` as `kernels` read it: `k` rows of `n` (row-major) or `n` rows of `k`
    // (transposed), `stride` apart.
    let (stride, lines, width) = if by_rows {
        (rhs.rs as usize, k, n)
    } else {
        (rhs.cs as usize, n, k)
    };
    let (dst, rhs_ptr) = (Shared(dst), Shared(rhs.ptr));
    let panel = |start: usize, len: usize| {
        // The whole wrappers, not their pointer fields (which a closure would capture alone).
        let (dst, rhs) = ({ dst }, { rhs_ptr });
        let block = if m == 1 { len } else { VECTOR_BLOCK };
        let mut at = start;
        while at < start + len {
            let cols = block.min(start + len - at);
            // The part of `rhs` these columns read: rows `0..k`, columns `at..at + cols`
            // (row-major), or rows `at..at + cols` (transposed).
            let (first, span) = if by_rows {
                (at, (lines - 1) * stride + cols)
            } else {
                (at * stride, (cols - 1) * stride + width)
            };
            // SAFETY: inside the caller's `k x n` operand, which no task writes.
            let w = unsafe { std::slice::from_raw_parts(rhs.0.add(first), span) };
            for (i, x) in x.chunks_exact(k).enumerate() {
                // SAFETY: row `i`, columns `at..at + cols` of the destination: this task's
                // own part, inside the caller's `m x n` destination.
                let y = unsafe {
                    std::slice::from_raw_parts_mut(dst.0.offset(i as isize * dst_rs).add(at), cols)
                };
                if !accumulate {
                    y.fill(0.0);
                }
                if by_rows {
                    kernels::vector_times_rows(y, x, w, stride);
                } else {
                    kernels::dot_rows(y, x, w, stride);
                }
            }
            at += cols;
        }
    };
    if split {
        let cuts = panels(n, rayon::current_num_threads());
        rayon::scope(|s| {
            for &(start, len) in &cuts {
                let panel = &panel;
                s.spawn(move |_| panel(start, len));
            }
        });
    } else {
        panel(0, n);
    }
}

/// What runs one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `gemm` on the calling thread.
    GemmHere,
    /// `gemm` split over rayon's threads.
    GemmSplit,
    /// `matrixmultiply` split over its own threads.
    MatrixMultiplySplit,
    /// The output cut into one panel per rayon thread (along the longer of its two sides),
    /// each panel a `gemm` product on one thread: no synchronisation inside a product.
    GemmPanels,
}

/// Panel sides are multiples of this (a whole number of AVX-512 `f32` vectors).
const PANEL_ALIGN: usize = 16;

/// A raw operand or destination shared by parallel tasks (the panels here, flash attention's
/// (row, head) tasks): each task writes only its own part.
#[derive(Clone, Copy)]
pub(super) struct Shared<T>(pub(super) T);
// SAFETY: every user splits the destination into disjoint parts, one per task, and only reads
// the operands while the call runs (the caller keeps them alive).
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl Shared<*mut f32> {
    /// The pointer `at` elements in (a method, so closures capture the whole `Shared`).
    pub(super) fn at(self, at: usize) -> *mut f32 {
        self.0.wrapping_add(at)
    }
}

/// `[start, len)` of each of up to `parts` panels of `len` elements, aligned to
/// [`PANEL_ALIGN`] except for the last.
fn panels(len: usize, parts: usize) -> Vec<(usize, usize)> {
    let size = len
        .div_ceil(parts.max(1))
        .next_multiple_of(PANEL_ALIGN)
        .max(1);
    (0..len)
        .step_by(size)
        .map(|start| (start, size.min(len - start)))
        .collect()
}

/// [`gemm_into`] with the kernel chosen.
///
/// # Safety
/// As [`gemm_into`].
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    if m == 0 || n == 0 {
        return;
    }
    if kernel == Kernel::GemmPanels {
        let by_rows = cut_rows(m, n, lhs, rhs, rayon::current_num_threads());
        // SAFETY: the caller's contract.
        unsafe { split_panels(by_rows, m, n, k, dst, dst_rs, accumulate, lhs, rhs) };
        return;
    }
    if kernel == Kernel::MatrixMultiplySplit {
        // SAFETY: the caller's contract; with beta 0 matrixmultiply does not read `dst`.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                lhs.ptr,
                lhs.rs,
                lhs.cs,
                rhs.ptr,
                rhs.rs,
                rhs.cs,
                if accumulate { 1.0 } else { 0.0 },
                dst,
                dst_rs,
                1,
            );
        }
        return;
    }
    let par = if kernel == Kernel::GemmSplit {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; gemm does not read `dst` when not accumulating.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs, accumulate, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs,
            1.0, 1.0, false, false, false, par,
        );
    }
}

/// Whether [`Kernel::GemmPanels`] cuts an `m x n` product's rows (else its columns): the cut
/// that packs less on each thread.
///
/// For a row-major destination `gemm` solves the transposed problem: it packs all of `rhs` that
/// a panel touches (a gather when `rhs`'s rows are not contiguous), and packs `lhs` only when
/// its rows are not contiguous (a gather). Cutting rows, every thread packs the whole `rhs` and
/// its share of `lhs`; cutting columns, its share of `rhs` and the whole `lhs`. So with a
/// row-major `lhs` (activations, output gradients) the columns are cut, and a transposed `lhs`
/// (the activations of a weight gradient) is cut when it is the larger of the two to pack.
/// A panel narrower than two micro-kernel tiles (128) wastes the kernel, so such a cut goes
/// to the other side when that one is longer.
fn cut_rows(m: usize, n: usize, lhs: Mat, rhs: Mat, threads: usize) -> bool {
    // Relative cost of packing one element: a contiguous copy 1, a gather 2, none 0.
    let lhs_cost = if lhs.cs == 1 { 0 } else { 2 };
    let rhs_cost = if rhs.cs == 1 { 1 } else { 2 };
    let rows = m * lhs_cost > n * rhs_cost;
    let narrow = |len: usize| len / threads.max(1) < 128;
    if rows {
        !(narrow(m) && n > m)
    } else {
        narrow(n) && m > n
    }
}

/// One `gemm` product per rayon thread on panels of the destination: `by_rows` cuts its rows
/// (and `lhs` with them), otherwise its columns (and `rhs`).
///
/// # Safety
/// As [`gemm_into`].
#[allow(clippy::too_many_arguments)]
unsafe fn split_panels(
    by_rows: bool,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    let cuts = panels(if by_rows { m } else { n }, rayon::current_num_threads());
    let (dst, lhs, rhs) = (Shared(dst), Shared(lhs), Shared(rhs));
    rayon::scope(|s| {
        for &(start, len) in &cuts {
            s.spawn(move |_| {
                let (dst, lhs, rhs) = (dst, lhs, rhs);
                let (dst, lhs, rhs, m, n) = if by_rows {
                    let at = start as isize;
                    let lhs = Mat {
                        ptr: lhs.0.ptr.wrapping_offset(at * lhs.0.rs),
                        ..lhs.0
                    };
                    (dst.0.wrapping_offset(at * dst_rs), lhs, rhs.0, len, n)
                } else {
                    let rhs = Mat {
                        ptr: rhs.0.ptr.wrapping_offset(start as isize * rhs.0.cs),
                        ..rhs.0
                    };
                    (dst.0.wrapping_add(start), lhs.0, rhs, m, len)
                };
                // SAFETY: the caller's contract, for this panel: rows (or columns)
                // `start..start + len` of the destination and of the operand cut with it;
                // panels are disjoint.
                unsafe { run(Kernel::GemmHere, m, n, k, dst, dst_rs, accumulate, lhs, rhs) }
            });
        }
    });
}

impl Kernel {
    /// How the kernel bench names it.
    fn name(self) -> &'static str {
        match self {
            Kernel::GemmHere => "gemm, 1 thread",
            Kernel::GemmSplit => "gemm, split",
            Kernel::MatrixMultiplySplit => "matrixmultiply, split",
            Kernel::GemmPanels => "gemm panels, split",
        }
    }
}

/// The name of the kernel split products use in this process, as [`kernel_gflops`] names it.
pub(super) fn split_kernel_name() -> &'static str {
    split_kernel().name()
}

/// Median GFLOP/s of each kernel on a row-major `m x k` by `k x n` product: `runs` timed runs
/// each after one warm-up, the kernels taking turns run by run so the machine's drift hits
/// them alike. Names: [`Kernel::name`].
pub(super) fn kernel_gflops(m: usize, n: usize, k: usize, runs: usize) -> Vec<(&'static str, f64)> {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let mut dst = vec![0.0f32; m * n];
    let kernels = [
        Kernel::GemmHere,
        Kernel::GemmSplit,
        Kernel::MatrixMultiplySplit,
        Kernel::GemmPanels,
    ];
    let mut secs = vec![Vec::with_capacity(runs); kernels.len()];
    for round in 0..=runs {
        for (times, kernel) in secs.iter_mut().zip(&kernels) {
            let t = std::time::Instant::now();
            // SAFETY: `dst` holds the `m x n` product; the operands are the vectors above.
            unsafe {
                run(
                    *kernel,
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    n as isize,
                    false,
                    Mat::rows(lhs.as_ptr(), k),
                    Mat::rows(rhs.as_ptr(), n),
                );
            }
            std::hint::black_box(&dst);
            if round > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let flops = 2.0 * (m * n * k) as f64;
    kernels
        .iter()
        .zip(secs)
        .map(|(kernel, t)| (kernel.name(), median_gflops(flops, t)))
        .collect()
}

/// Median GFLOP/s of [`Kernel::GemmPanels`] with the rows cut and with the columns cut, on an
/// `m x k` by `k x n` product whose operands are stored row-major or transposed (as a training
/// step's are: a weight read transposed in an input gradient, the activations in a weight
/// gradient), `runs` timed runs each after one warm-up, the two cuts taking turns and going
/// first in turn; and whether [`cut_rows`] picks the rows.
pub(super) fn cut_gflops(
    m: usize,
    n: usize,
    k: usize,
    [lhs_transposed, rhs_transposed]: [bool; 2],
    runs: usize,
) -> ([f64; 2], bool) {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let lhs = if lhs_transposed {
        Mat::rows(a.as_ptr(), m).t()
    } else {
        Mat::rows(a.as_ptr(), k)
    };
    let rhs = if rhs_transposed {
        Mat::rows(b.as_ptr(), k).t()
    } else {
        Mat::rows(b.as_ptr(), n)
    };
    let mut dst = vec![0.0f32; m * n];
    let mut secs = [Vec::with_capacity(runs), Vec::with_capacity(runs)];
    for round in 0..=runs {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let t = std::time::Instant::now();
            // SAFETY: `dst` holds the `m x n` product; the operands are the vectors above.
            unsafe {
                split_panels(
                    i == 0,
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    n as isize,
                    false,
                    lhs,
                    rhs,
                );
            }
            std::hint::black_box(&dst);
            if round > 0 {
                secs[i].push(t.elapsed().as_secs_f64());
            }
        }
    }
    let flops = 2.0 * (m * n * k) as f64;
    let gflops = secs.map(|t| median_gflops(flops, t));
    (
        gflops,
        cut_rows(m, n, lhs, rhs, rayon::current_num_threads()),
    )
}

/// GFLOP/s of `flops` done in the median of `secs` (timed runs).
fn median_gflops(flops: f64, mut secs: Vec<f64>) -> f64 {
    secs.sort_by(f64::total_cmp);
    flops / secs[secs.len() / 2].max(f64::MIN_POSITIVE) / 1e9
}

/// An uninitialised buffer of `len` values.
pub(super) fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut out = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { out.set_len(len) };
    out
}

/// A new buffer of `len` values built by rayon tasks, one per `chunk` values: each task zeroes
/// its part (the first touch, on its own thread, so no single-threaded `memset` runs first)
/// and passes it to `fill` with the matching item of `with`, which must have one item per
/// chunk.
pub(super) fn new_by_chunks<I, F>(len: usize, chunk: usize, with: I, fill: F) -> Vec<f32>
where
    I: rayon::iter::IndexedParallelIterator,
    F: Fn(&mut [f32], I::Item) + Sync + Send,
{
    use rayon::prelude::*;
    let mut out = uninit(len);
    out.par_chunks_mut(chunk.max(1))
        .zip_eq(with)
        .for_each(|(part, item)| {
            part.fill(MaybeUninit::new(0.0));
            // SAFETY: every element of `part` was just written; `MaybeUninit<f32>` has `f32`'s
            // layout.
            fill(
                unsafe { &mut *(std::ptr::from_mut(part) as *mut [f32]) },
                item,
            );
        });
    // SAFETY: `zip_eq` visited every chunk (it panics on a length mismatch), and each was
    // zeroed before `fill` saw it.
    unsafe { assume_init(out) }
}

/// # Safety
/// Every element of `v` must have been written.
pub(super) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<f32> has f32's layout; the caller wrote every element.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// A new row-major `m x n` product `lhs * rhs`, computed into an uninitialised buffer (gemm
/// does not read the destination when not accumulating).
pub(super) fn product(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat) -> Vec<f32> {
    let mut out = uninit(m * n);
    if k == 0 {
        out.fill(MaybeUninit::new(0.0));
    } else {
        // SAFETY: `out` holds `m * n` elements; the caller's operands are valid matrices of
        // these shapes and cannot alias a buffer allocated just now.
        unsafe {
            gemm_into(
                m,
                n,
                k,
                out.as_mut_ptr().cast::<f32>(),
                n as isize,
                false,
                lhs,
                rhs,
                Threads::Split,
            );
        }
    }
    // SAFETY: gemm writes the whole destination when it does not read it.
    unsafe { assume_init(out) }
}

/// A new row-major `m x n` matrix: `bias` in every row plus `lhs * rhs`.
pub(super) fn product_plus_bias(
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    bias: &[f32],
) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(bias.len(), n, "bias must have one value per output column");
    if n == 0 {
        return Vec::new();
    }
    let mut out = uninit(m * n);
    out.par_chunks_mut(n * 64).for_each(|rows| {
        for row in rows.chunks_mut(n) {
            for (o, b) in row.iter_mut().zip(bias) {
                o.write(*b);
            }
        }
    });
    // SAFETY: every row was filled with the bias just above.
    let mut out = unsafe { assume_init(out) };
    if k > 0 {
        // SAFETY: `out` is an initialised `m x n` buffer; the operands are the caller's.
        unsafe {
            gemm_into(
                m,
                n,
                k,
                out.as_mut_ptr(),
                n as isize,
                true,
                lhs,
                rhs,
                Threads::Split,
            );
        }
    }
    out
}

/// Column sums of a row-major `m x n` matrix (a bias gradient), split over rows across threads.
pub(super) fn column_sums(values: &[f32], n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if n == 0 {
        return Vec::new();
    }
    let add = |mut acc: Vec<f32>, row: &[f32]| {
        super::kernels::add_into(&mut acc, row);
        acc
    };
    values
        .par_chunks(n * 256)
        .map(|rows| rows.chunks(n).fold(vec![0.0f32; n], add))
        .reduce(|| vec![0.0f32; n], |a, b| add(a, &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_by_chunks_zeroes_each_part_before_filling_it() {
        use rayon::prelude::*;
        let (len, chunk) = (10_000, 1 << 10);
        // A freed buffer of sevens of the same size, likely what the allocator hands back next:
        // a part left unzeroed would show a seven.
        drop(std::hint::black_box(vec![7.0f32; len]));
        let parts = len.div_ceil(chunk);
        let out = new_by_chunks(len, chunk, (0..parts).into_par_iter(), |part, i| {
            for v in part {
                *v += i as f32;
            }
        });
        assert_eq!(out.len(), len);
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, (j / chunk) as f32, "element {j}");
        }
    }

    #[test]
    #[should_panic]
    fn new_by_chunks_refuses_fewer_items_than_parts() {
        use rayon::prelude::*;
        new_by_chunks(100, 10, (0..9).into_par_iter(), |_, _| {});
    }

    /// Every kernel, and the panels cut either way, computes `dst = lhs rhs` and
    /// `dst += lhs rhs` for a row-major and a transposed left operand and a destination with
    /// padding columns (left untouched), against an `f64` reference, on a product large enough
    /// to be split.
    #[test]
    fn every_kernel_computes_the_product_into_strided_destinations() {
        for (m, n, k) in [(203, 190, 211), (190, 203, 211)] {
            for lhs_transposed in [true, false] {
                product_into_strided_destination(m, n, k, lhs_transposed);
            }
        }
    }

    fn product_into_strided_destination(m: usize, n: usize, k: usize, lhs_transposed: bool) {
        assert!(m * n * k >= PARALLEL_THRESHOLD);
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0;
        // `lhs` stored `k x m` (transposed) or `m x k`, `rhs` row-major `k x n`.
        let lhs_values: Vec<f32> = (0..k * m).map(|i| value(i, 1)).collect();
        let lhs = if lhs_transposed {
            Mat::rows(lhs_values.as_ptr(), m).t()
        } else {
            Mat::rows(lhs_values.as_ptr(), k)
        };
        // Element `(i, p)` of `lhs`, read through the strides independently of `Mat`.
        let (lhs_rs, lhs_cs) = if lhs_transposed { (1, m) } else { (k, 1) };
        let rhs: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
        let start: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
        let want = |acc: bool, i: usize, j: usize| {
            let dot: f64 = (0..k)
                .map(|p| f64::from(lhs_values[i * lhs_rs + p * lhs_cs]) * f64::from(rhs[p * n + j]))
                .sum();
            dot + if acc {
                f64::from(start[i * n + j])
            } else {
                0.0
            }
        };
        let rs = n + 5;
        // Each kernel as `run` picks it, then the panels with each cut forced.
        let runners = [
            (Kernel::GemmHere, None),
            (Kernel::GemmSplit, None),
            (Kernel::MatrixMultiplySplit, None),
            (Kernel::GemmPanels, None),
            (Kernel::GemmPanels, Some(true)),
            (Kernel::GemmPanels, Some(false)),
        ];
        for (kernel, cut) in runners {
            for accumulate in [false, true] {
                let mut dst = vec![f32::NAN; m * rs];
                if accumulate {
                    for i in 0..m {
                        dst[i * rs..i * rs + n].copy_from_slice(&start[i * n..(i + 1) * n]);
                    }
                }
                let (d, rhs) = (dst.as_mut_ptr(), Mat::rows(rhs.as_ptr(), n));
                // SAFETY: `dst` holds `m` rows of stride `rs >= n`; the operands are the
                // vectors above, of the shapes given.
                unsafe {
                    match cut {
                        None => run(kernel, m, n, k, d, rs as isize, accumulate, lhs, rhs),
                        Some(by_rows) => {
                            split_panels(by_rows, m, n, k, d, rs as isize, accumulate, lhs, rhs);
                        }
                    }
                }
                let what = format!(
                    "{kernel:?} cut {cut:?} {m}x{n}x{k} lhs transposed {lhs_transposed} \
                     accumulate {accumulate}"
                );
                for i in 0..m {
                    for j in 0..rs {
                        let got = dst[i * rs + j];
                        if j >= n {
                            assert!(got.is_nan(), "{what} wrote padding ({i}, {j})");
                            continue;
                        }
                        let w = want(accumulate, i, j);
                        assert!(
                            (f64::from(got) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{what} ({i}, {j}): {got} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// Products of at most [`VECTOR_ROWS`] rows (generation's) run as vector products: every
    /// row count, a row-major and a transposed right operand (a layer's weight, a tied head),
    /// a transposed left one (copied), lengths that leave partial quads, lanes and panels, `=`
    /// and `+=` into a destination with padding columns (left untouched), on the calling thread
    /// and split, against an `f64` reference.
    #[test]
    fn short_products_run_as_vector_products_into_strided_destinations() {
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0;
        for (n, k) in [(1, 1), (3, 5), (203, 211), (1030, 67)] {
            let b: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
            for m in 1..=VECTOR_ROWS {
                let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
                let start: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
                for [lhs_t, rhs_t] in [[false, false], [false, true], [true, false]] {
                    // Element (i, p) of `lhs` and (p, j) of `rhs`, read independently of `Mat`.
                    let (l_rs, l_cs) = if lhs_t { (1, m) } else { (k, 1) };
                    let (r_rs, r_cs) = if rhs_t { (1, k) } else { (n, 1) };
                    let lhs = Mat {
                        ptr: a.as_ptr(),
                        rs: l_rs as isize,
                        cs: l_cs as isize,
                    };
                    let rhs = Mat {
                        ptr: b.as_ptr(),
                        rs: r_rs as isize,
                        cs: r_cs as isize,
                    };
                    for (threads, accumulate) in [
                        (Threads::Calling, false),
                        (Threads::Split, false),
                        (Threads::Split, true),
                    ] {
                        let rs = n + 3;
                        let mut dst = vec![f32::NAN; m * rs];
                        if accumulate {
                            for i in 0..m {
                                dst[i * rs..i * rs + n].copy_from_slice(&start[i * n..(i + 1) * n]);
                            }
                        }
                        // SAFETY: `dst` holds `m` rows of stride `rs >= n`; the operands are
                        // the vectors above, of the shapes given.
                        unsafe {
                            gemm_into(
                                m,
                                n,
                                k,
                                dst.as_mut_ptr(),
                                rs as isize,
                                accumulate,
                                lhs,
                                rhs,
                                threads,
                            );
                        }
                        let what = format!(
                            "{m}x{n}x{k} lhs transposed {lhs_t} rhs transposed {rhs_t} \
                             {threads:?} accumulate {accumulate}"
                        );
                        for i in 0..m {
                            for j in 0..rs {
                                let got = dst[i * rs + j];
                                if j >= n {
                                    assert!(got.is_nan(), "{what} wrote padding ({i}, {j})");
                                    continue;
                                }
                                let dot: f64 = (0..k)
                                    .map(|p| {
                                        f64::from(a[i * l_rs + p * l_cs])
                                            * f64::from(b[p * r_rs + j * r_cs])
                                    })
                                    .sum();
                                let w = dot
                                    + if accumulate {
                                        f64::from(start[i * n + j])
                                    } else {
                                        0.0
                                    };
                                assert!(
                                    (f64::from(got) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "{what} ({i}, {j}): {got} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The cut packs less per thread: a row-major left operand (no packing) has the columns
    /// cut; a transposed one (gathered) is cut when it is larger than the right one; and a cut
    /// that would leave panels narrower than 128 goes to the longer side instead.
    #[test]
    fn panels_cut_the_side_that_packs_less() {
        let a = [0.0f32; 1];
        let rows = Mat::rows(a.as_ptr(), 8);
        let cols = rows.t();
        // Activations times a weight (forward) or its transpose (input gradient): columns.
        assert!(!cut_rows(4096, 768, rows, rows, 2));
        assert!(!cut_rows(1024, 768, rows, cols, 2));
        // Weight gradients `x^T g`: the side whose operand costs more to pack.
        assert!(cut_rows(1024, 256, cols, rows, 2));
        assert!(cut_rows(3072, 768, cols, rows, 2));
        assert!(!cut_rows(768, 2304, cols, rows, 2));
        assert!(!cut_rows(256, 1024, cols, rows, 2));
        // Too narrow to cut the preferred way: the longer side instead.
        assert!(cut_rows(4096, 256, rows, rows, 16));
        assert!(!cut_rows(200, 300, cols, rows, 2));
        // Narrow either way: the longer side.
        assert!(cut_rows(200, 100, rows, rows, 2));
    }

    #[test]
    fn panels_cover_the_side_once_in_aligned_pieces() {
        for len in [1, 15, 16, 17, 100, 203, 4096] {
            for parts in [1, 2, 3, 16] {
                let cuts = panels(len, parts);
                assert!(cuts.len() <= parts, "{len} in {parts}: {cuts:?}");
                let mut next = 0;
                for (i, &(start, n)) in cuts.iter().enumerate() {
                    assert_eq!(start, next, "{len} in {parts}: {cuts:?}");
                    assert!(n > 0);
                    if i + 1 < cuts.len() {
                        assert_eq!(n % PANEL_ALIGN, 0, "{len} in {parts}: {cuts:?}");
                    }
                    next += n;
                }
                assert_eq!(next, len, "{len} in {parts}: {cuts:?}");
            }
        }
    }
}
