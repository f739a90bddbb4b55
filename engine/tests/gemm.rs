//! GEMM against a naive f64 reference, on every SIMD path this CPU has (and the portable one),
//! on sizes that are not multiples of any tile, with transposed/strided operands and accumulate.

use spark_engine::cpu::gemm::{available_paths, gemm, gemm_with_path, GemmPath, MatRef};
use spark_engine::{MatmulPrecision, Rng};

fn rand_vec(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// The value a product at `prec` sees: bf16 rounds to nearest even.
fn operand(x: f32, prec: MatmulPrecision) -> f64 {
    match prec {
        MatmulPrecision::F32 => x as f64,
        MatmulPrecision::Bf16 => half::bf16::from_f32(x).to_f64(),
    }
}

/// C_ref = (accumulate ? C0 : 0) + A·B in f64, on operands rounded as `prec` rounds them.
fn reference(
    a: &MatRef<'_, f32>,
    b: &MatRef<'_, f32>,
    c0: &[f32],
    ldc: usize,
    acc: bool,
    prec: MatmulPrecision,
) -> Vec<f64> {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = if acc { c0[i * ldc + j] as f64 } else { 0.0 };
            for p in 0..k {
                s += operand(a.at(i, p), prec) * operand(b.at(p, j), prec);
            }
            out[i * n + j] = s;
        }
    }
    out
}

/// Runs one case on `path` at `prec` (path None = the public `gemm` at the process setting,
/// f32 in this binary), layout chosen by `ta`/`tb` (operand stored transposed) and a padded ldc,
/// and compares with the reference on equally rounded operands. The tolerance is f32
/// accumulation error: a bf16 kernel that did not round, or rounded differently, misses it by
/// far (bf16 keeps 8 bits).
#[allow(clippy::too_many_arguments)]
fn check(
    path: Option<GemmPath>,
    prec: MatmulPrecision,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    acc: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let av = rand_vec(m * k, &mut rng);
    let bv = rand_vec(k * n, &mut rng);
    let a = if ta { MatRef::new(&av, k, m).t() } else { MatRef::new(&av, m, k) };
    let b = if tb { MatRef::new(&bv, n, k).t() } else { MatRef::new(&bv, k, n) };
    let ldc = n + 3;
    // NaN in the padding and, without accumulate, in C itself: a kernel that reads C when it
    // should not, or writes outside the tile, shows up.
    let mut c: Vec<f32> =
        (0..m * ldc).map(|i| if acc && i % ldc < n { rng.normal() as f32 } else { f32::NAN }).collect();
    let c0 = c.clone();
    let expect = reference(&a, &b, &c0, ldc, acc, prec);
    match path {
        Some(p) => gemm_with_path(p, prec, a, b, &mut c, ldc, acc).unwrap(),
        None => gemm(a, b, &mut c, ldc, acc),
    }
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert!(got.is_nan(), "{path:?} wrote C padding at ({i},{j})");
                continue;
            }
            let e = expect[i * n + j];
            let tol = 1e-4 * (k as f64).sqrt() * (1.0 + e.abs());
            assert!(
                (got as f64 - e).abs() <= tol,
                "{path:?} {prec:?} m={m} n={n} k={k} ta={ta} tb={tb} acc={acc}: C[{i},{j}] = {got}, expected {e}"
            );
        }
    }
}

const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 33),
    (7, 1, 33),
    (7, 7, 7),
    (33, 33, 33),
    (13, 65, 1),
    (12, 32, 384),
    (25, 97, 385),
    (257, 33, 7),
    (33, 257, 70),
    (100, 300, 800),
    (257, 257, 257),
];

#[test]
fn every_path_matches_reference_on_odd_sizes() {
    let paths = available_paths();
    assert!(paths.contains(&GemmPath::Portable), "the portable path is always available");
    for &p in &paths {
        for (s, &(m, n, k)) in SIZES.iter().enumerate() {
            check(Some(p), MatmulPrecision::F32, m, n, k, false, false, false, s as u64);
        }
    }
}

#[test]
fn every_path_handles_transposes_and_accumulate() {
    for &p in &available_paths() {
        for (s, &(m, n, k)) in SIZES.iter().enumerate() {
            for (ta, tb, acc) in [(true, false, false), (false, true, true), (true, true, true), (false, false, true)] {
                check(Some(p), MatmulPrecision::F32, m, n, k, ta, tb, acc, 100 + s as u64);
            }
        }
    }
}

#[test]
fn public_gemm_large_parallel_case() {
    // Big enough to take the multi-threaded split, with several KC slices and a ragged M.
    check(None, MatmulPrecision::F32, 301, 515, 900, false, true, true, 7);
    check(None, MatmulPrecision::F32, 5, 2000, 300, true, false, false, 8);
}

#[test]
fn bf16_products_match_reference_on_rounded_operands() {
    // Native vdpbf16ps on AVX512-BF16 CPUs, rounded operands on the f32 kernels elsewhere: both
    // must equal the exact product of the rounded operands up to f32 accumulation. Odd depths
    // exercise the zero-padded last pair; 900 spans several KC slices in parallel.
    for &p in &available_paths() {
        for (s, &(m, n, k)) in SIZES.iter().enumerate() {
            let (ta, tb, acc) = [(false, false, false), (true, false, true), (false, true, false)][s % 3];
            check(Some(p), MatmulPrecision::Bf16, m, n, k, ta, tb, acc, 200 + s as u64);
        }
        check(Some(p), MatmulPrecision::Bf16, 301, 515, 900, false, true, true, 7);
    }
}

#[test]
fn bf16_products_differ_from_f32_by_bf16_rounding() {
    // The bf16 GEMM really rounds: on random data it is off the f32 product by about 2^-9
    // relative per term, far more than f32 accumulation error, and no further.
    let (m, n, k) = (16, 48, 256);
    let mut rng = Rng::new(9);
    let (av, bv) = (rand_vec(m * k, &mut rng), rand_vec(k * n, &mut rng));
    let path = available_paths()[0];
    let mut c32 = vec![0.0f32; m * n];
    let mut c16 = vec![0.0f32; m * n];
    let (a, b) = (MatRef::new(&av, m, k), MatRef::new(&bv, k, n));
    gemm_with_path(path, MatmulPrecision::F32, a, b, &mut c32, n, false).unwrap();
    gemm_with_path(path, MatmulPrecision::Bf16, a, b, &mut c16, n, false).unwrap();
    let rms = |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let diff: Vec<f32> = c32.iter().zip(&c16).map(|(x, y)| x - y).collect();
    let rel = rms(&diff) / rms(&c32);
    assert!(rel > 1e-4 && rel < 1e-2, "bf16 vs f32 relative rms difference {rel}");
}

#[test]
fn k_zero_clears_or_keeps_c() {
    let a: Vec<f32> = vec![];
    let mut c = vec![5.0f32; 6];
    gemm(MatRef::new(&a, 2, 0), MatRef::new(&a, 0, 3), &mut c, 3, true);
    assert_eq!(c, vec![5.0; 6]);
    gemm(MatRef::new(&a, 2, 0), MatRef::new(&a, 0, 3), &mut c, 3, false);
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn f64_generic_path_matches() {
    let mut rng = Rng::new(3);
    let (m, n, k) = (9, 11, 13);
    let a: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
    let b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
    let mut c = vec![0.0f64; m * n];
    gemm(MatRef::new(&a, k, m).t(), MatRef::new(&b, k, n), &mut c, n, false);
    for i in 0..m {
        for j in 0..n {
            let e: f64 = (0..k).map(|p| a[p * m + i] * b[p * n + j]).sum();
            assert!((c[i * n + j] - e).abs() < 1e-12);
        }
    }
}

/// Timing helper (not a correctness test): best-of-N GFLOP/s of the public `gemm`.
/// `GEMM_SIZES=512,1024,64x3136x576 cargo test --release -p spark-engine --test gemm -- --ignored
/// --nocapture gemm_timing` (n = square, MxNxK otherwise). Also prints a CPU-time based rate, which
/// is robust to other jobs sharing the cores.
#[test]
#[ignore]
fn gemm_timing() {
    let sizes: Vec<[usize; 3]> = std::env::var("GEMM_SIZES")
        .unwrap_or_else(|_| "512,1024,2048".into())
        .split(',')
        .map(|x| {
            let v: Vec<usize> = x.split('x').map(|d| d.parse().unwrap()).collect();
            if v.len() == 3 {
                [v[0], v[1], v[2]]
            } else {
                [v[0]; 3]
            }
        })
        .collect();
    let mut rng = Rng::new(1);
    for [m, n, k] in sizes {
        let a = rand_vec(m * k, &mut rng);
        let b = rand_vec(k * n, &mut rng);
        let mut c = vec![0.0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let reps = (4e9 / flop).clamp(3.0, 50.0) as usize;
        let (mut best, c_start) = (f64::MAX, cpu_seconds());
        for _ in 0..reps {
            let t = std::time::Instant::now();
            gemm(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut c, n, false);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "gemm {m}x{n}x{k} threads={} best {:.3} ms {:.1} GFLOP/s (CPU-time rate {:.1} GFLOP/s per busy thread)",
            rayon::current_num_threads(),
            best * 1e3,
            flop / best / 1e9,
            flop * reps as f64 / (cpu_seconds() - c_start) / 1e9 * rayon::current_num_threads() as f64
        );
    }
}

/// CPU time of this process (all threads) from /proc, in seconds: a noise-robust work measure
/// when other jobs share the cores.
fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}
