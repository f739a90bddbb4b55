//! Times elementwise ops forward + backward on one activation-sized tensor (the decoder's
//! 16 x 48 x 96 x 96 at width 768): `cargo run --release -p spark-engine --example eltwise_timing`.

use spark_engine::{DType, Device, Result, Rng, Tensor};
use std::time::Instant;

fn time(label: &str, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{label}: {:.2} ms", best * 1e3);
    Ok(())
}

fn main() -> Result<()> {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let x = Tensor::randn(&[16, 48, 96, 96], 0.0, 1.0, &mut Rng::new(1), DType::F32, Device::Cpu)?.to_variable();
    time("sum fwd+bwd (baseline)", 10, || x.sum_all()?.backward().map(|_| ()))?;
    time("relu fwd", 10, || x.relu().map(|_| ()))?;
    time("relu fwd+bwd", 10, || x.relu()?.sum_all()?.backward().map(|_| ()))?;
    time("relu6 fwd+bwd", 10, || x.relu6()?.sum_all()?.backward().map(|_| ()))?;
    time("affine fwd+bwd", 10, || x.affine(2.0, 1.0)?.sum_all()?.backward().map(|_| ()))?;
    Ok(())
}
