//! General matrix multiply `C (+)= A · B` on strided operands.
//!
//! The operands are strided views (`MatRef`), so transposes are free: `A^T` is the same data
//! with row and column strides swapped. This is the one entry point every matmul, convolution
//! and sparse GEMM in the project calls.
//!
//! f32 runs a BLIS-style kernel (`driver.rs`): packed A/B panels blocked for L1/L2/L3 and a
//! register-blocked microkernel (`kernels.rs`) chosen at run time: AVX-512 (8x48), AVX2+FMA
//! (6x16) or a portable auto-vectorised one (4x16). f64 (gradient checks only) takes a simple
//! row-parallel loop. At `MatmulPrecision::Bf16` (see `crate::precision`) the f32 GEMM rounds
//! its packed operands to bf16 and, with AVX512-BF16, multiplies them with `vdpbf16ps`.

mod bf16;
mod driver;
mod kernels;
mod pack;

use crate::precision::{matmul_precision, MatmulPrecision};
use crate::{DType, Error, Float, Result};
use kernels::KernelSpec;
use rayon::prelude::*;
use std::sync::OnceLock;

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

/// The left operand of `gemm_packed`: anything that can write rows `i0..i0+mc`, depths
/// `p0..p0+kc` of itself as ceil(mc/mr) panels of `kc * mr` floats (for each k, `mr` row values,
/// rows past `mc` zero). Lets callers fuse a gather (e.g. im2col) into packing.
pub trait PackA: Sync {
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]);
}

/// The right operand of `gemm_packed`: writes columns `j0..j0+cols` (`cols <= nr`), depths
/// `p0..p0+kc` as one panel of `kc * nr` floats (for each k, `nr` column values, columns past
/// `cols` zero).
pub trait PackB: Sync {
    fn pack_b(&self, j0: usize, cols: usize, p0: usize, kc: usize, nr: usize, dst: &mut [f32]);
}

/// f32 `C[m, n] (+)= A[m, k] · B[k, n]` (C row-major with leading dimension `ldc`) on the
/// fastest path, with operands that pack themselves (implicit GEMM).
pub fn gemm_packed<A: PackA + ?Sized, B: PackB + ?Sized>(
    (m, n, k): (usize, usize, usize),
    a: &A,
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm_packed: C too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    driver::gemm_f32(&spec(default_path()), matmul_precision(), (m, n, k), a, b, c, ldc, accumulate);
}

/// Whether this CPU has the bf16 microkernel (AVX512-BF16 with the AVX-512 path), i.e. whether
/// `MatmulPrecision::Bf16` is faster here; checked once.
pub fn bf16_native() -> bool {
    static NATIVE: OnceLock<bool> = OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            default_path() == GemmPath::Avx512
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A SIMD code path of the f32 GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmPath {
    /// 8x48 microkernel on zmm registers (needs AVX-512F).
    Avx512,
    /// 6x16 microkernel on ymm registers (needs AVX2 and FMA).
    Avx2,
    /// Plain Rust, auto-vectorised for the baseline target.
    Portable,
}

/// The paths this CPU can run, fastest first.
pub fn available_paths() -> Vec<GemmPath> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            v.push(GemmPath::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(GemmPath::Avx2);
        }
    }
    v.push(GemmPath::Portable);
    v
}

/// The path `gemm` uses: the fastest available, chosen once.
pub fn default_path() -> GemmPath {
    static PATH: OnceLock<GemmPath> = OnceLock::new();
    *PATH.get_or_init(|| available_paths()[0])
}

fn spec(path: GemmPath) -> KernelSpec {
    match path {
        #[cfg(target_arch = "x86_64")]
        // 8x48 beat 12x32 on conv-shaped GEMMs (M = 64 channels: no padded rows) and tied on
        // square ones (docs/benchmarks.md).
        GemmPath::Avx512 => KernelSpec {
            mr: 8,
            nr: 48,
            kc: 384,
            mc: 192,
            nc: 4096,
            func: kernels::avx512::kernel_8x48,
            bf16_func: if bf16_native() { Some(bf16::avx512::kernel_8x48) } else { None },
        },
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx2 => KernelSpec {
            mr: kernels::avx2::MR,
            nr: kernels::avx2::NR,
            kc: 256,
            mc: 144,
            nc: 4096,
            func: kernels::avx2::kernel,
            bf16_func: None,
        },
        _ => KernelSpec {
            mr: kernels::portable::MR,
            nr: kernels::portable::NR,
            kc: 256,
            mc: 128,
            nc: 4096,
            func: kernels::portable::kernel,
            bf16_func: None,
        },
    }
}

/// Checks dimensions and handles the empty cases; returns false when nothing is left to do.
fn prologue<T: Float>(a: &MatRef<'_, T>, b: &MatRef<'_, T>, c: &mut [T], ldc: usize, accumulate: bool) -> bool {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return false;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm: C too small");
    if m > 0 && k > 0 {
        let last = |r: usize, c: usize, rs: usize, cs: usize| (r - 1) * rs + (c - 1) * cs;
        assert!(a.data.len() > last(a.rows, a.cols, a.rs, a.cs), "gemm: A data too short for its strides");
        assert!(b.data.len() > last(b.rows, b.cols, b.rs, b.cs), "gemm: B data too short for its strides");
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].iter_mut().for_each(|v| *v = T::ZERO);
            }
        }
        return false;
    }
    true
}

/// `C = A · B` (or `C += A · B` when `accumulate`), C row-major `[a.rows, b.cols]` with leading
/// dimension `ldc`. Panics only on inconsistent dimensions, which callers check first.
pub fn gemm<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], ldc: usize, accumulate: bool) {
    if !prologue(&a, &b, c, ldc, accumulate) {
        return;
    }
    if T::DTYPE == DType::F32 {
        // SAFETY: T::DTYPE == F32 means T is f32 (`Float` is sealed: only f32 and f64 implement it).
        let (a, b, c) = unsafe { (cast_mat(a), cast_mat(b), &mut *(c as *mut [T] as *mut [f32])) };
        let dims = (a.rows, b.cols, a.cols);
        driver::gemm_f32(&spec(default_path()), matmul_precision(), dims, &a, &b, c, ldc, accumulate);
    } else {
        reference_gemm(a, b, c, ldc, accumulate);
    }
}

/// f32 GEMM on an explicit SIMD path and precision (tests and benchmarks compare them without
/// touching the process-wide setting). Errors when this CPU cannot run `path`.
pub fn gemm_with_path(
    path: GemmPath,
    precision: MatmulPrecision,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    if !available_paths().contains(&path) {
        return Err(Error::Msg(format!("gemm_with_path: {path:?} is not supported by this CPU")));
    }
    if prologue(&a, &b, c, ldc, accumulate) {
        driver::gemm_f32(&spec(path), precision, (a.rows, b.cols, a.cols), &a, &b, c, ldc, accumulate);
    }
    Ok(())
}

/// # Safety
/// `T` must be f32.
unsafe fn cast_mat<'a, T>(m: MatRef<'a, T>) -> MatRef<'a, f32> {
    let data = std::slice::from_raw_parts(m.data.as_ptr() as *const f32, m.data.len());
    MatRef { data, rows: m.rows, cols: m.cols, rs: m.rs, cs: m.cs }
}

/// Straightforward row-parallel kernel (f64): B packed row-major once, then each C row is a sum
/// of scaled B rows (the inner loop vectorises).
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
