//! Times one sparse conv on a small, few-site map (ResNet-18 layer4 at 96 px: 3x3 grid, 4 of 9
//! cells visible, batch 16 = 64 sites): forward, input grad and weight grad separately.
//! `cargo run --release -p spark-sparse --example small_map_timing -- [cin] [cout] [grid] [visible] [batch]`
//! Prints the tile-sparse Winograd and the fused implicit GEMM (Winograd switched off) side by side.

use spark_engine::{no_grad, Conv2dParams, DType, Device, Result, Rng, Tensor};
use spark_sparse::{conv_features, ActiveSet, ConvAlgo, KernelGeom, KernelMap};
use std::sync::Arc;
use std::time::Instant;

fn best(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        b = b.min(t.elapsed().as_secs_f64());
    }
    Ok(b * 1e3)
}

fn main() -> Result<()> {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (cin, cout, grid, visible, batch) = (
        a.first().copied().unwrap_or(512),
        a.get(1).copied().unwrap_or(512),
        a.get(2).copied().unwrap_or(3),
        a.get(3).copied().unwrap_or(4),
        a.get(4).copied().unwrap_or(16),
    );
    let mut rng = Rng::new(1);
    let mask: Vec<bool> = (0..batch).flat_map(|_| (0..grid * grid).map(move |i| i < visible)).collect();
    let set = Arc::new(ActiveSet::from_mask(&mask, batch, grid, grid)?);
    let geom = KernelGeom::conv([3, 3], &Conv2dParams::new(1, 1));
    let map = Arc::new(KernelMap::build(&set, &set, geom)?);
    let n = set.len();
    let (dt, dev) = (DType::F32, Device::Cpu);
    let w = Tensor::randn(&[cout, cin, 3, 3], 0.0, 0.05, &mut rng, dt, dev)?.to_variable();
    let x = Tensor::randn(&[n, cin], 0.0, 1.0, &mut rng, dt, dev)?.to_variable();
    let xc = x.detach();
    let g = Tensor::randn(&[n, cout], 0.0, 1.0, &mut rng, dt, dev)?;
    let gflop = 2.0 * (n * cin * cout * 9) as f64 / 1e9;
    let tiles = map.winograd_tiles().map_or(0, |t| t.len());
    println!(
        "{cin}->{cout} 3x3, {n} sites, {tiles} active 2x2 tiles, {gflop:.2} GFLOP per pass (dense-equivalent taps)"
    );
    for winograd in [true, false] {
        spark_engine::cpu::conv_winograd::set_enabled(winograd);
        let fwd = best(20, || no_grad(|| conv_features(&x, &w, None, &map, 1, ConvAlgo::Auto).map(|_| ())))?;
        let both = best(20, || conv_features(&x, &w, None, &map, 1, ConvAlgo::Auto)?.backward_with(&g).map(|_| ()))?;
        let dw_only =
            best(20, || conv_features(&xc, &w, None, &map, 1, ConvAlgo::Auto)?.backward_with(&g).map(|_| ()))?;
        let name = if winograd { "winograd (when it applies)" } else { "implicit GEMM" };
        println!("  {name}: fwd {fwd:.2} ms, fwd+dW {dw_only:.2}, fwd+dX+dW {both:.2} ms");
    }
    Ok(())
}
