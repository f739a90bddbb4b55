//! Whole backbones on CUDA: a dense ResNet-18 and ConvNeXt (V1 and V2) classifier, forward and
//! backward in training mode, equal to the same model on the CPU (loss, every parameter
//! gradient, BatchNorm running statistics). Skips, saying why, without a usable GPU;
//! `SPARK_REQUIRE_CUDA=1` (scripts/gpu-check.sh) makes that a failure.

use spark_engine::{DType, Device, Rng, Tensor};
use spark_nn::{build_backbone, Backbone, BackboneConfig, Ctx};

fn gpu(test: &str) -> bool {
    spark_engine::testing::cuda_or_skip(test).is_some()
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| r.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>(), shape).unwrap()
}

/// Cross entropy of the classifier on `x`, and its gradients by parameter name.
fn step(m: &dyn Backbone, x: &Tensor, targets: &[usize]) -> (f64, Vec<(String, Tensor)>) {
    let logits = m.forward(x, &mut Ctx::new(0)).unwrap();
    let loss = logits.cross_entropy(targets, 0.1).unwrap();
    let grads = loss.backward().unwrap();
    let g = m
        .trainable_parameters()
        .into_iter()
        .map(|(n, p)| (n, grads.get(&p).expect("parameter gradient").clone()))
        .collect();
    (loss.to_scalar().unwrap(), g)
}

fn compare(name: &str, width_mult: f64, input: usize) {
    let cfg = BackboneConfig { num_classes: 10, width_mult, dtype: DType::F32, ..Default::default() };
    let cpu = build_backbone(name, &cfg, &mut Rng::new(7)).unwrap();
    let mut gpu_model = build_backbone(name, &cfg, &mut Rng::new(7)).unwrap();
    gpu_model.to_device(Device::Cuda(0)).unwrap();
    let x = rand(&[4, 3, input, input], 3);
    let targets = [1, 5, 9, 0];
    let (lc, gc) = step(cpu.as_ref(), &x, &targets);
    let (lg, gg) = step(gpu_model.as_ref(), &x.to_device(Device::Cuda(0)).unwrap(), &targets);
    assert!((lc - lg).abs() <= 1e-4 * lc.abs().max(1.0), "{name}: loss cpu {lc} vs cuda {lg}");
    let mut worst = (0.0f64, String::new());
    for ((n, c), (_, g)) in gc.iter().zip(&gg) {
        assert_eq!(g.device(), Device::Cuda(0), "{name}: {n} gradient device");
        let (c, g) = (c.to_vec_f64().unwrap(), g.to_vec_f64().unwrap());
        let scale = c.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-6);
        let err = c.iter().zip(&g).fold(0.0f64, |a, (x, y)| a.max((x - y).abs())) / scale;
        if err > worst.0 {
            worst = (err, n.clone());
        }
        assert!(err < 2e-3, "{name}: gradient of {n}: max error {err:.2e} of its largest entry {scale:.2e}");
    }
    for ((n, c), (_, g)) in cpu.named_buffers().iter().zip(gpu_model.named_buffers()) {
        let (c, g) = (c.to_vec_f64().unwrap(), g.to_vec_f64().unwrap());
        let err = c.iter().zip(&g).fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
        assert!(err < 1e-4, "{name}: buffer {n} differs by {err:.2e}");
    }
    eprintln!(
        "{name} x{width_mult} @{input}: loss {lc:.6} (cpu) vs {lg:.6} (cuda); worst gradient {:.2e} at {}",
        worst.0, worst.1
    );
}

#[test]
fn resnet18_dense_training_step_on_cuda_equals_the_cpu() {
    if gpu("resnet18 on cuda") {
        compare("resnet18", 1.0, 64);
    }
}

#[test]
fn resnet50_dense_training_step_on_cuda_equals_the_cpu() {
    if gpu("resnet50 on cuda") {
        compare("resnet50", 0.5, 64);
    }
}

#[test]
fn convnext_v1_and_v2_dense_training_steps_on_cuda_equal_the_cpu() {
    if gpu("convnext on cuda") {
        compare("convnext_tiny", 0.5, 64);
        compare("convnextv2_tiny", 0.5, 64);
    }
}
