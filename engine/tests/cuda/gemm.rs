//! The f32 and bf16 GEMM kernels against an f64 product on the CPU: every transpose, edge
//! tiles, a K tail, odd leading dimensions, batches, beta.

use super::{assert_close, gpu, uniform};
use spark_engine::cuda::GemmShape;

/// f64 reference of `alpha * op(A) op(B) + beta * C` for one GemmShape.
fn reference(s: &GemmShape, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &[f64]) -> Vec<f64> {
    let mut out = c.to_vec();
    for bi in 0..s.batch {
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0.0;
                for p in 0..s.k {
                    let av =
                        if s.trans_a { a[bi * s.stride_a + p * s.lda + i] } else { a[bi * s.stride_a + i * s.lda + p] };
                    let bv =
                        if s.trans_b { b[bi * s.stride_b + j * s.ldb + p] } else { b[bi * s.stride_b + p * s.ldb + j] };
                    acc += av * bv;
                }
                let o = bi * s.stride_c + i * s.ldc + j;
                out[o] = alpha * acc + if beta == 0.0 { 0.0 } else { beta * c[o] };
            }
        }
    }
    out
}

/// Shapes that cross the 128x128 tiles and the K steps, with padded leading dimensions.
fn shapes() -> Vec<GemmShape> {
    let mut v = vec![];
    for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (128, 128, 32), (129, 130, 33), (64, 200, 257), (300, 17, 64)] {
        for ta in [false, true] {
            for tb in [false, true] {
                let mut s = GemmShape::plain(m, n, k, ta, tb);
                // Odd padding of every leading dimension on some cases (unaligned rows).
                if (m + n + k) % 2 == 1 {
                    s.lda += 3;
                    s.ldb += 1;
                    s.ldc += 5;
                    let (ar, br) = (if ta { k } else { m }, if tb { n } else { k });
                    s.stride_a = ar * s.lda;
                    s.stride_b = br * s.ldb;
                    s.stride_c = m * s.ldc;
                }
                v.push(s);
            }
        }
    }
    let mut batched = GemmShape::plain(65, 70, 40, false, true);
    batched.batch = 3;
    v.push(batched);
    v
}

fn sizes(s: &GemmShape) -> (usize, usize, usize) {
    (s.batch * s.stride_a, s.batch * s.stride_b, s.batch * s.stride_c)
}

#[test]
fn f32_gemm_equals_an_f64_product() {
    let Some(dev) = gpu("f32 gemm") else { return };
    for (i, s) in shapes().iter().enumerate() {
        let (na, nb, nc) = sizes(s);
        let (a, b, c) = (uniform(na, -1.0, 1.0, 10 + i as u64), uniform(nb, -1.0, 1.0, 20), uniform(nc, -1.0, 1.0, 30));
        for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, -2.0)] {
            let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
            // beta == 0 must not read C: fill it with NaN.
            let c_in: Vec<f32> = if beta == 0.0 { vec![f32::NAN; nc] } else { c.clone() };
            let mut dc = dev.upload(&c_in).unwrap();
            dev.gemm_f32(s, alpha, &da.slice(..), &db.slice(..), beta, &mut dc.slice_mut(..)).unwrap();
            let got = dev.download(&dc, nc).unwrap();
            let f64v = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
            let want = reference(s, alpha as f64, &f64v(&a), &f64v(&b), beta as f64, &f64v(&c_in));
            // Entries of C outside the matrices (padding) must be left alone.
            let tol = 1e-6 * (s.k as f64).sqrt() * 4.0;
            let check: Vec<(f32, f64)> =
                got.iter().zip(&want).map(|(&g, &w)| (g, w)).filter(|(_, w)| !w.is_nan()).collect();
            let (g, w): (Vec<f32>, Vec<f64>) = check.into_iter().unzip();
            assert_close(&format!("sgemm {s:?} alpha {alpha} beta {beta}"), &g, &w, tol, 1e-5);
        }
    }
}

#[test]
fn bf16_gemm_equals_an_f64_product_of_the_rounded_operands() {
    let Some(dev) = gpu("bf16 gemm") else { return };
    let round = |v: &[f32]| -> Vec<u16> { v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect() };
    let widen = |v: &[u16]| -> Vec<f64> { v.iter().map(|&b| half::bf16::from_bits(b).to_f64()).collect() };
    for (i, s) in shapes().iter().enumerate() {
        let (na, nb, nc) = sizes(s);
        let (a, b) = (round(&uniform(na, -1.0, 1.0, 40 + i as u64)), round(&uniform(nb, -1.0, 1.0, 50)));
        let c = uniform(nc, -1.0, 1.0, 60);
        let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
        let mut dc = dev.upload(&c).unwrap();
        dev.gemm_bf16(s, 1.0, &da.slice(..), &db.slice(..), 1.0, &mut dc.slice_mut(..)).unwrap();
        let got = dev.download(&dc, nc).unwrap();
        let want = reference(s, 1.0, &widen(&a), &widen(&b), 1.0, &c.iter().map(|&x| x as f64).collect::<Vec<_>>());
        // Exact products of bf16 values, f32 accumulation: error ~ k * 2^-24 * |terms|.
        let tol = 2e-7 * s.k as f64 + 1e-6;
        assert_close(&format!("bf16 gemm {s:?}"), &got, &want, tol, 1e-6);
    }
}
