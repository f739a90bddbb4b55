//! Dense conv2d layers (batch 8, f32, NCHW), forward and forward+backward (grads of input,
//! weight and bias), on the shapes of `../shared/peers/RESULTS.md`, plus the SparK decoder's
//! 4x4/s2 transposed conv.
//! `cargo bench -p spark-benches --bench conv -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion};
use spark_engine::{no_grad, Conv2dParams, ConvTranspose2dParams, DType, Device, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F32, Device::Cpu).unwrap().to_variable()
}

fn bench_conv(c: &mut Criterion) {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let cases: [(&str, [usize; 4], [usize; 4], Conv2dParams); 5] = [
        ("conv3x3_64-64_56x56", [8, 64, 56, 56], [64, 64, 3, 3], Conv2dParams::new(1, 1)),
        ("conv3x3_256-256_14x14", [8, 256, 14, 14], [256, 256, 3, 3], Conv2dParams::new(1, 1)),
        ("conv1x1_256-64_56x56", [8, 256, 56, 56], [64, 256, 1, 1], Conv2dParams::new(1, 0)),
        ("dw7x7_96_56x56", [8, 96, 56, 56], [96, 1, 7, 7], Conv2dParams::new(1, 3).with_groups(96)),
        ("stem7x7s2_3-64_224x224", [8, 3, 224, 224], [64, 3, 7, 7], Conv2dParams::new(2, 3)),
    ];
    let mut group = c.benchmark_group("conv2d_b8");
    group.sample_size(10);
    for (name, xs, ws, p) in cases {
        let (x, w, b) = (randn(&xs, 1), randn(&ws, 2), randn(&[ws[0]], 3));
        group.bench_function(format!("{name}/fwd"), |bch| bch.iter(|| no_grad(|| x.conv2d(&w, Some(&b), p).unwrap())));
        group.bench_function(format!("{name}/fwd+bwd"), |bch| {
            bch.iter(|| {
                let y = x.conv2d(&w, Some(&b), p).unwrap();
                y.backward_with(&y.ones_like().unwrap()).unwrap()
            })
        });
    }
    let (x, w) = (randn(&[8, 768, 7, 7], 4), randn(&[768, 384, 4, 4], 5));
    let p = ConvTranspose2dParams::new(2, 1);
    group.bench_function("convT4x4s2_768-384_7x7/fwd", |bch| {
        bch.iter(|| no_grad(|| x.conv_transpose2d(&w, None, p).unwrap()))
    });
    group.bench_function("convT4x4s2_768-384_7x7/fwd+bwd", |bch| {
        bch.iter(|| {
            let y = x.conv_transpose2d(&w, None, p).unwrap();
            y.backward_with(&y.ones_like().unwrap()).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
