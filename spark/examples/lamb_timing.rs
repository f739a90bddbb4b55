//! Times one LAMB step (official recipe defaults) over f32 parameters shaped like SparK's
//! ResNet-18 + decoder-768 model (21.5 M elements in 12 tensors, the three smallest without
//! weight decay): best of 5 steps after 2 warm-up steps.
//!
//! `cargo run --release -p spark --example lamb_timing`

use spark::optim::{Lamb, LambConfig, OptimParam, Optimizer};
use spark_engine::{DType, Device, GradStore, Rng, Tensor};

fn main() -> spark_engine::Result<()> {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let mut rng = Rng::new(0);
    let sizes = [
        5_308_416usize,
        2_654_208,
        2_359_296,
        1_327_104,
        589_824,
        1_179_648,
        4_718_592,
        2_359_296,
        1_000_000,
        512,
        64,
        256,
    ];
    let mut params = Vec::new();
    let mut grads = GradStore::new();
    for (i, &n) in sizes.iter().enumerate() {
        let tensor = Tensor::randn(&[n], 0.0, 0.1, &mut rng, DType::F32, Device::Cpu)?.to_variable();
        grads.insert(&tensor, Tensor::randn(&[n], 0.0, 0.01, &mut rng, DType::F32, Device::Cpu)?);
        params.push(OptimParam { name: format!("p{i}"), tensor, wd_scale: if n > 1000 { 1.0 } else { 0.0 } });
    }
    let mut opt = Lamb::new(LambConfig::default());
    for _ in 0..2 {
        opt.step(&params, &grads, 1e-3, 0.04)?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        opt.step(&params, &grads, 1e-3, 0.04)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("LAMB step: {best:.1} ms (best of 5) for {} f32 parameters", sizes.iter().sum::<usize>());
    Ok(())
}
