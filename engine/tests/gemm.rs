//! GEMM against a naive f64 reference, on every SIMD path this CPU has (and the portable one),
//! on sizes that are not multiples of any tile, with transposed/strided operands and accumulate.

use spark_engine::cpu::gemm::{available_paths, gemm, gemm_with_path, GemmPath, MatRef};
use spark_engine::Rng;

fn rand_vec(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// C_ref = (accumulate ? C0 : 0) + A·B in f64.
fn reference(a: &MatRef<'_, f32>, b: &MatRef<'_, f32>, c0: &[f32], ldc: usize, acc: bool) -> Vec<f64> {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = if acc { c0[i * ldc + j] as f64 } else { 0.0 };
            for p in 0..k {
                s += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            out[i * n + j] = s;
        }
    }
    out
}

/// Runs one case on `path` (None = the public `gemm`), layout chosen by `ta`/`tb` (operand
/// stored transposed) and a padded ldc, and compares with the reference.
fn check(path: Option<GemmPath>, m: usize, n: usize, k: usize, ta: bool, tb: bool, acc: bool, seed: u64) {
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
    let expect = reference(&a, &b, &c0, ldc, acc);
    match path {
        Some(p) => gemm_with_path(p, a, b, &mut c, ldc, acc).unwrap(),
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
                "{path:?} m={m} n={n} k={k} ta={ta} tb={tb} acc={acc}: C[{i},{j}] = {got}, expected {e}"
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
            check(Some(p), m, n, k, false, false, false, s as u64);
        }
    }
}

#[test]
fn every_path_handles_transposes_and_accumulate() {
    for &p in &available_paths() {
        for (s, &(m, n, k)) in SIZES.iter().enumerate() {
            for (ta, tb, acc) in [(true, false, false), (false, true, true), (true, true, true), (false, false, true)] {
                check(Some(p), m, n, k, ta, tb, acc, 100 + s as u64);
            }
        }
    }
}

#[test]
fn public_gemm_large_parallel_case() {
    // Big enough to take the multi-threaded split, with several KC slices and a ragged M.
    check(None, 301, 515, 900, false, true, true, 7);
    check(None, 5, 2000, 300, true, false, false, 8);
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
