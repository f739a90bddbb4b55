//! General matrix multiply `C (+)= A · B` on strided operands.
//!
//! The operands are strided views (`MatRef`), so transposes are free: `A^T` is the same data
//! with row and column strides swapped. This is the one entry point every matmul, convolution
//! and sparse GEMM in the project calls.

use crate::Float;
use rayon::prelude::*;

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A row-major matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.rs + j * self.cs]
    }
}

/// `C = A · B` (or `C += A · B` when `accumulate`), C row-major `[a.rows, b.cols]` with leading
/// dimension `ldc`. Panics only on inconsistent dimensions, which callers check first.
pub fn gemm<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], ldc: usize, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm: C too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].iter_mut().for_each(|v| *v = T::ZERO);
            }
        }
        return;
    }
    reference_gemm(a, b, c, ldc, accumulate);
}

/// Straightforward row-parallel kernel: B packed row-major once, then each C row is a sum of
/// scaled B rows (the inner loop vectorises).
fn reference_gemm<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], ldc: usize, accumulate: bool) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let packed: Vec<T>;
    let brow: &[T] = if b.cs == 1 && b.rs == n {
        &b.data[..k * n]
    } else {
        packed = (0..k).flat_map(|p| (0..n).map(move |j| b.at(p, j))).collect();
        &packed
    };
    let body = |(i, row): (usize, &mut [T])| {
        let row = &mut row[..n];
        if !accumulate {
            row.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for p in 0..k {
            let av = a.at(i, p);
            let br = &brow[p * n..p * n + n];
            for (cv, &bv) in row.iter_mut().zip(br) {
                *cv += av * bv;
            }
        }
    };
    if m * n * k > 1 << 18 {
        c.par_chunks_mut(ldc).take(m).enumerate().for_each(body);
    } else {
        c.chunks_mut(ldc).take(m).enumerate().for_each(body);
    }
}
