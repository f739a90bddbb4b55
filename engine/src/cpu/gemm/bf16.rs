//! bf16 products for the f32 GEMM (see `crate::precision`): packed f32 panels are rounded to
//! bfloat16 pairs, and a microkernel built on `vdpbf16ps` multiplies them with f32 accumulation.
//!
//! Pair layout: `vdpbf16ps` adds, per 32-bit lane, `a.lo * b.lo + a.hi * b.hi`. A packed panel
//! of width W (MR for A, NR for B) holding, for each k, W values becomes, for each pair of depths
//! (2p, 2p+1), W 32-bit words: depth 2p in the low half, depth 2p+1 in the high half (zero past
//! an odd depth). An A word is broadcast to all lanes; B words are loaded 16 columns at a time.

use half::bf16;

/// Rounds a packed f32 panel in place to the values a bf16 product sees (nearest, ties to even;
/// NaN stays NaN): the fallback on CPUs without AVX512-BF16, which then multiplies the rounded
/// values with the f32 kernel.
pub(crate) fn round_in_place(panel: &mut [f32]) {
    panel.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
}

/// Converts a packed f32 panel (`kc` depths of `width` values) into `kc.div_ceil(2) * width`
/// bf16 pair words. Only the native kernel reads pairs, so only CPUs with AVX512-BF16 get here.
pub(crate) fn to_pairs(src: &[f32], width: usize, kc: usize, dst: &mut [u32]) {
    assert!(src.len() >= kc * width && dst.len() >= kc.div_ceil(2) * width, "to_pairs: panel sizes");
    assert!(super::bf16_native(), "to_pairs: bf16 pairs need AVX512-BF16");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX512-BF16/BW (asserted); sizes asserted above.
    unsafe {
        avx512::to_pairs(src, width, kc, dst)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// Interleaves the two 16-value halves of a 32 x bf16 vector: (lo0, hi0, lo1, hi1, ...).
    const INTERLEAVE: [i16; 32] = {
        let mut idx = [0i16; 32];
        let mut j = 0;
        while j < 16 {
            idx[2 * j] = j as i16;
            idx[2 * j + 1] = 16 + j as i16;
            j += 1;
        }
        idx
    };

    /// # Safety
    /// The CPU must support AVX512-F/BW/BF16; `src` holds `kc * width` floats and `dst`
    /// `kc.div_ceil(2) * width` words.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn to_pairs(src: &[f32], width: usize, kc: usize, dst: &mut [u32]) {
        let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr() as *const __m512i);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for p in 0..kc.div_ceil(2) {
            let has_hi = 2 * p + 1 < kc;
            for j0 in (0..width).step_by(16) {
                let n = (width - j0).min(16);
                let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                let lo = _mm512_maskz_loadu_ps(mask, s.add(2 * p * width + j0));
                let hi = if has_hi {
                    _mm512_maskz_loadu_ps(mask, s.add((2 * p + 1) * width + j0))
                } else {
                    _mm512_setzero_ps()
                };
                // Elements 0..16 from `lo`, 16..32 from `hi`, then interleaved into pairs.
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let pairs = _mm512_permutexvar_epi16(idx, packed);
                _mm512_mask_storeu_epi32(d.add(p * width + j0) as *mut i32, mask, pairs);
            }
        }
    }

    /// MR x (16*NV) tile over `kp` depth pairs: MR*NV zmm accumulators, NV B loads and one
    /// broadcast pair per row per step.
    ///
    /// # Safety
    /// The CPU must support AVX512-F/BF16; `a` holds `kp * MR` and `b` `kp * 16 * NV` pair words,
    /// and `c` addresses an MR x 16*NV tile with row stride `ldc`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const MR: usize, const NV: usize>(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let mut cr = [[_mm512_setzero_ps(); NV]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kp {
            let mut bv: [__m512bh; NV] = std::mem::zeroed();
            for (v, r) in bv.iter_mut().enumerate() {
                *r = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.add(16 * v) as *const __m512i));
            }
            _mm_prefetch::<_MM_HINT_T0>(b.add(8 * 16 * NV) as *const i8);
            for row in cr.iter_mut() {
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a as i32));
                a = a.add(1);
                for (r, &bb) in row.iter_mut().zip(&bv) {
                    *r = _mm512_dpbf16_ps(*r, av, bb);
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

    /// 8 x 48, the f32 kernel's tile shape (so both share packing and blocking).
    ///
    /// # Safety
    /// As `tile`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel_8x48(kp: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
        tile::<8, 3>(kp, a, b, c, ldc, acc)
    }
}
