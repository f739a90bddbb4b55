//! CUDA backend tests. Kernel sources compile with NVRTC wherever libnvrtc loads (CI installs
//! it from PyPI); every other test compares a CUDA kernel or op with its CPU twin and skips,
//! saying why, when no GPU is usable. `SPARK_REQUIRE_CUDA=1` (set by scripts/gpu-check.sh)
//! turns a skip into a failure, so a GPU run cannot pass by skipping.

mod compile;
mod conv;
mod elementwise;
mod gemm;
mod index;
mod no_gpu;
mod norm;
mod optim;
mod pool;
mod softmax;
mod tensor;

use spark_engine::cuda::CudaDevice;
use spark_engine::Rng;
use std::sync::Arc;

/// The first GPU, or `None` after printing why the test is skipped.
pub fn gpu(test: &str) -> Option<Arc<CudaDevice>> {
    spark_engine::testing::cuda_or_skip(test)
}

/// `n` values uniform in [lo, hi), seeded.
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| lo + (hi - lo) * r.uniform() as f32).collect()
}

/// Max |a-b| / (atol + rtol*|b|) must stay <= 1; names the first element that fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let ok = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: cuda {g} vs cpu {w} (atol {atol}, rtol {rtol})");
    }
}
