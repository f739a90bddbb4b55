//! Register-blocked microkernels: `C[MR x NR] (+)= Apanel · Bpanel` over `kc` steps.
//!
//! Packed layouts (see `pack.rs`): the A panel holds, for each k, MR consecutive row values; the
//! B panel holds, for each k, NR consecutive column values. Every kernel only ever touches a full
//! MR x NR tile of C; the driver routes edge tiles through a scratch tile.

/// A microkernel: `(kc, a_panel, b_panel, c, ldc, accumulate)`.
pub(crate) type KernelFn = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, bool);

/// A bf16 microkernel over pair words (see `bf16.rs`): `(depth_pairs, a, b, c, ldc, accumulate)`.
pub(crate) type Bf16KernelFn = unsafe fn(usize, *const u32, *const u32, *mut f32, usize, bool);

/// Tile shape and cache blocking of one SIMD path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelSpec {
    pub mr: usize,
    pub nr: usize,
    /// Depth of one packed block (A micro-panel + B micro-panel stay in L1 across it).
    pub kc: usize,
    /// Rows of A per packed block (MC x KC lives in L2).
    pub mc: usize,
    /// Columns of B per packed block (KC x NC lives in L3).
    pub nc: usize,
    pub func: KernelFn,
    /// The same tile on bf16 pairs, where the CPU has one (AVX512-BF16).
    pub bf16_func: Option<Bf16KernelFn>,
}

// ------------------------------------------------------------------ AVX-512

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// MR x (16*NV) tile: MR*NV zmm accumulators, NV B loads and one broadcast per row per k.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `a` holds `kc * MR`, `b` holds `kc * 16 * NV` floats and `c`
    /// addresses an MR x 16*NV tile with row stride `ldc`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const MR: usize, const NV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let mut cr = [[_mm512_setzero_ps(); NV]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, r) in bv.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(b.add(16 * v));
            }
            _mm_prefetch::<_MM_HINT_T0>(b.add(8 * 16 * NV) as *const i8);
            for row in cr.iter_mut() {
                let av = _mm512_set1_ps(*a);
                a = a.add(1);
                for (r, &bb) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(av, bb, *r);
                }
            }
            b = b.add(16 * NV);
        }
        for (i, row) in cr.iter().enumerate() {
            let p = c.add(i * ldc);
            for (v, &r) in row.iter().enumerate() {
                let r = if acc { _mm512_add_ps(r, _mm512_loadu_ps(p.add(16 * v))) } else { r };
                _mm512_storeu_ps(p.add(16 * v), r);
            }
        }
    }

    /// 8 x 48: divides the channel counts of convnets (64, 128, 256, ...) exactly.
    ///
    /// # Safety
    /// As `tile`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x48(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        tile::<8, 3>(kc, a, b, c, ldc, acc)
    }
}

// ------------------------------------------------------------------ AVX2 + FMA: 6 x 16

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;
    pub const MR: usize = 6;
    pub const NR: usize = 16;

    /// 12 ymm accumulators (the classic Haswell 6x16 tile).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; buffer sizes as for the AVX-512 kernel.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        let mut c0 = [_mm256_setzero_ps(); MR];
        let mut c1 = [_mm256_setzero_ps(); MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for i in 0..MR {
                let av = _mm256_broadcast_ss(&*a.add(i));
                c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        for i in 0..MR {
            let row = c.add(i * ldc);
            if acc {
                c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(row));
                c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(row.add(8)));
            }
            _mm256_storeu_ps(row, c0[i]);
            _mm256_storeu_ps(row.add(8), c1[i]);
        }
    }
}

// ------------------------------------------------------------------ portable: 4 x 16

pub(crate) mod portable {
    pub const MR: usize = 4;
    pub const NR: usize = 16;

    /// Plain Rust over fixed-size arrays; the compiler vectorises the NR loop for whatever the
    /// baseline target offers (SSE2 on x86_64, NEON on aarch64).
    ///
    /// # Safety
    /// Buffer sizes as for the AVX-512 kernel.
    pub unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        let mut t = [[0.0f32; NR]; MR];
        let a = std::slice::from_raw_parts(a, kc * MR);
        let b = std::slice::from_raw_parts(b, kc * NR);
        for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for i in 0..MR {
                let av = ap[i];
                for j in 0..NR {
                    t[i][j] += av * bp[j];
                }
            }
        }
        for (i, tr) in t.iter().enumerate() {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), NR);
            if acc {
                row.iter_mut().zip(tr).for_each(|(r, v)| *r += v);
            } else {
                row.copy_from_slice(tr);
            }
        }
    }
}
