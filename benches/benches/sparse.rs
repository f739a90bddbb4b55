//! Sparse vs dense-masked convolution (issue 3): ResNet-50's 3x3 64->64 @56, 3x3 256->256 @14,
//! 1x1 256->64 @56, the 7x7/s2 stem @224 and ConvNeXt's depthwise 7x7 96ch @56, batch 8, forward and forward+backward,
//! at mask ratios 0.0..0.9, plus the kernel-map build alone. Short runs (the machine is shared);
//! the full 0.0..0.9 table with speed-ups comes from
//! `cargo run --release -p spark-sparse --example sparse_table` (same code, `spark_sparse::bench`).
//!
//! `cargo bench -p spark-benches --bench sparse` (filter with e.g. `-- "conv3x3 64"`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spark_engine::{no_grad, Conv2dParams, DType, Device, Rng, Tensor};
use spark_sparse::bench::{resnet_convnext_shapes, spark_patch};
use spark_sparse::{conv_features, ActiveSet, ConvAlgo, KernelGeom, KernelMap};
use std::sync::Arc;
use std::time::Duration;

const BATCH: usize = 8;
/// A subset of the ratios keeps a full criterion run to a few minutes on 2 cores.
const RATIOS: [f64; 4] = [0.0, 0.3, 0.6, 0.9];

fn bench_sparse(c: &mut Criterion) {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let mut rng = Rng::new(7);
    let (dt, dev) = (DType::F32, Device::Cpu);
    for shape in resnet_convnext_shapes() {
        let mut g = c.benchmark_group(shape.name);
        g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        let params = Conv2dParams::new(shape.stride, shape.padding).with_groups(shape.groups);
        let geom = KernelGeom::conv([shape.kernel; 2], &params);
        let cig = shape.cin / shape.groups;
        let w = Tensor::randn(&[shape.cout, cig, shape.kernel, shape.kernel], 0.0, 0.05, &mut rng, dt, dev)
            .unwrap()
            .to_variable();
        let b = Tensor::randn(&[shape.cout], 0.0, 0.05, &mut rng, dt, dev).unwrap().to_variable();
        for ratio in RATIOS {
            // Stride 1: output sites = input sites; strided (the stem): the patch mask at the
            // output resolution, as SparK's hierarchical masks.
            let patch = spark_patch(&mut rng, BATCH, ratio);
            let set = Arc::new(ActiveSet::from_patch_mask(&patch, BATCH, 7, 7, shape.hw / 7).unwrap());
            let ohw = shape.hw / shape.stride;
            let out_set = if shape.stride == 1 {
                set.clone()
            } else {
                Arc::new(ActiveSet::from_patch_mask(&patch, BATCH, 7, 7, ohw / 7).unwrap())
            };
            g.bench_function(BenchmarkId::new("kernel_map_build", ratio), |bn| {
                bn.iter(|| KernelMap::build(&set, &out_set, geom).unwrap())
            });
            let map = Arc::new(KernelMap::build(&set, &out_set, geom).unwrap());
            let n = set.len();
            let xs = Tensor::randn(&[n, shape.cin], 0.0, 1.0, &mut rng, dt, dev).unwrap().to_variable();
            let gs = Tensor::randn(&[out_set.len(), shape.cout], 0.0, 1.0, &mut rng, dt, dev).unwrap();
            let algos: &[(&str, ConvAlgo)] = if shape.groups == 1 {
                &[
                    ("sparse", ConvAlgo::Auto),
                    ("sparse_per_offset", ConvAlgo::PerOffset),
                    ("sparse_implicit", ConvAlgo::ImplicitGemm),
                ]
            } else {
                &[("sparse", ConvAlgo::Auto)]
            };
            for &(name, algo) in algos {
                g.bench_function(BenchmarkId::new(format!("{name}_fwd"), ratio), |bn| {
                    bn.iter(|| no_grad(|| conv_features(&xs, &w, Some(&b), &map, shape.groups, algo).unwrap()))
                });
                g.bench_function(BenchmarkId::new(format!("{name}_fwd_bwd"), ratio), |bn| {
                    bn.iter(|| {
                        conv_features(&xs, &w, Some(&b), &map, shape.groups, algo).unwrap().backward_with(&gs).unwrap()
                    })
                });
            }
            let (mask_in, mask) = (set.mask_tensor(dt).unwrap(), out_set.mask_tensor(dt).unwrap());
            let xd = Tensor::randn(&[BATCH, shape.cin, shape.hw, shape.hw], 0.0, 1.0, &mut rng, dt, dev)
                .unwrap()
                .mul(&mask_in)
                .unwrap()
                .to_variable();
            let gd = Tensor::randn(&[BATCH, shape.cout, ohw, ohw], 0.0, 1.0, &mut rng, dt, dev).unwrap();
            g.bench_function(BenchmarkId::new("dense_masked_fwd", ratio), |bn| {
                bn.iter(|| no_grad(|| xd.conv2d(&w, Some(&b), params).unwrap().mul(&mask).unwrap()))
            });
            g.bench_function(BenchmarkId::new("dense_masked_fwd_bwd", ratio), |bn| {
                bn.iter(|| xd.conv2d(&w, Some(&b), params).unwrap().mul(&mask).unwrap().backward_with(&gd).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_sparse);
criterion_main!(benches);
