//! Matrix products on `f32` buffers through the `gemm` crate (the kernel burn-flex itself
//! calls), into outputs allocated here.
//!
//! Why not `Tensor::matmul` on flex: burn-flex 0.22 allocates every product as a zeroed
//! `Vec<u8>` and then `Bytes::from_bytes_vec` copies it into a buffer of Burn's runtime
//! alignment, so each product costs a zero fill and a full copy on one thread (about 10% of a
//! tiny training step in a profile: `memset`, `memmove` and page clearing, while gemm's worker
//! threads wait). Here the output is allocated once, uninitialised, and written by gemm.
//!
//! The one module of the crate with `unsafe` code: gemm takes raw pointers and strides, and
//! the outputs start uninitialised. Callers pass operands built from live tensors' storage.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

pub(super) use gemm::Parallelism;

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

/// Products smaller than this (multiply-adds) run on the calling thread: below it, splitting
/// the work costs more than it saves (burn-flex uses the same threshold).
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// `gemm`'s threading for an `m x k` by `k x n` product.
pub(super) fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_THRESHOLD {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
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
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs, accumulate, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs,
            1.0, 1.0, false, false, false, par,
        );
    }
}

/// An uninitialised buffer of `len` values.
pub(super) fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut out = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { out.set_len(len) };
    out
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
                parallelism(m, n, k),
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
                parallelism(m, n, k),
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
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
        acc
    };
    values
        .par_chunks(n * 256)
        .map(|rows| rows.chunks(n).fold(vec![0.0f32; n], add))
        .reduce(|| vec![0.0f32; n], |a, b| add(a, &b))
}
