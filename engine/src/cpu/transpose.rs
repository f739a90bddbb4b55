//! Out-of-place transpose of a strided f32 block, for GEMM packing: packing a row-major
//! operand into the microkernel's column-interleaved panels is a transpose, and done one element
//! at a time it is a strided scalar store per value. AVX does 8x8 blocks in registers.

/// `dst[c * dst_ld + r] = src[r * src_ld + c]` for `r < rows`, `c < cols`.
pub fn transpose(src: &[f32], src_ld: usize, rows: usize, cols: usize, dst: &mut [f32], dst_ld: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * src_ld + cols, "transpose: source too short");
    assert!(dst.len() >= (cols - 1) * dst_ld + rows, "transpose: destination too short");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present; the 8x8 blocks lie inside the bounds checked above.
        unsafe { transpose_avx(src, src_ld, rows, cols, dst, dst_ld) };
        return;
    }
    transpose_scalar(src, src_ld, (0, rows), (0, cols), dst, dst_ld);
}

fn transpose_scalar(
    src: &[f32],
    src_ld: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    dst: &mut [f32],
    dst_ld: usize,
) {
    for r in r0..r1 {
        for c in c0..c1 {
            dst[c * dst_ld + r] = src[r * src_ld + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx(src: &[f32], src_ld: usize, rows: usize, cols: usize, dst: &mut [f32], dst_ld: usize) {
    let (rb, cb) = (rows / 8 * 8, cols / 8 * 8);
    for r in (0..rb).step_by(8) {
        for c in (0..cb).step_by(8) {
            block8(src.as_ptr().add(r * src_ld + c), src_ld, dst.as_mut_ptr().add(c * dst_ld + r), dst_ld);
        }
    }
    transpose_scalar(src, src_ld, (0, rb), (cb, cols), dst, dst_ld);
    transpose_scalar(src, src_ld, (rb, rows), (0, cols), dst, dst_ld);
}

/// One 8x8 block: unpack pairs of rows, shuffle quads, swap 128-bit halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn block8(s: *const f32, sl: usize, d: *mut f32, dl: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * sl)));
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (i, v) in out.iter().enumerate() {
        _mm256_storeu_ps(d.add(i * dl), *v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_on_odd_shapes_and_strides() {
        for (rows, cols, sld, dld) in
            [(8, 8, 8, 8), (1, 1, 3, 2), (13, 21, 25, 17), (16, 48, 50, 16), (7, 9, 9, 7), (40, 3, 3, 41)]
        {
            let src: Vec<f32> = (0..rows * sld).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut dst = vec![f32::NAN; cols * dld];
            transpose(&src, sld, rows, cols, &mut dst, dld);
            let mut want = vec![f32::NAN; cols * dld];
            transpose_scalar(&src, sld, (0, rows), (0, cols), &mut want, dld);
            for c in 0..cols {
                for r in 0..rows {
                    assert_eq!(dst[c * dld + r], src[r * sld + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
            // Nothing outside the transposed block is written.
            for (i, (a, b)) in dst.iter().zip(&want).enumerate() {
                assert!(a.to_bits() == b.to_bits(), "{rows}x{cols}: element {i} differs");
            }
        }
    }
}
