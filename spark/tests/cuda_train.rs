//! Training on CUDA: LAMB and AdamW steps (fused kernels, global-norm clip, no-decay groups)
//! equal to the CPU optimizers, and a few classifier training steps of a ResNet on the GPU
//! following the same loss curve as on the CPU. Skips without a usable GPU, saying why;
//! `SPARK_REQUIRE_CUDA=1` makes that a failure.

use spark::optim::{optim_params, AdamW, AdamWConfig, Lamb, LambConfig, NoDecayRules, OptimParam, Optimizer};
use spark_engine::{DType, Device, GradStore, Rng, Tensor};
use spark_nn::{build_backbone, BackboneConfig, Ctx};

fn gpu(test: &str) -> bool {
    spark_engine::testing::cuda_or_skip(test).is_some()
}

fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| scale * (r.uniform() as f32 * 2.0 - 1.0)).collect::<Vec<f32>>(), shape).unwrap()
}

fn params_on(device: Device) -> Vec<OptimParam> {
    // A decayed weight (more than LAMB's 1024 blocks of 256), a no-decay bias, a zero tensor.
    let shapes: [(&str, Vec<usize>, f64); 3] =
        [("conv.weight", vec![300_001], 1.0), ("conv.bias", vec![64], 0.0), ("zero.weight", vec![10, 10], 1.0)];
    shapes
        .iter()
        .enumerate()
        .map(|(i, (n, s, wd))| {
            let t = if n.starts_with("zero") {
                Tensor::zeros(s, DType::F32, Device::Cpu).unwrap()
            } else {
                rand(s, i as u64, 0.5)
            };
            OptimParam { name: n.to_string(), tensor: t.to_device(device).unwrap().to_variable(), wd_scale: *wd }
        })
        .collect()
}

fn grads_for(ps: &[OptimParam], step: u64) -> GradStore {
    let mut g = GradStore::new();
    for (i, p) in ps.iter().enumerate() {
        let t = rand(p.tensor.dims(), 100 * step + i as u64, 3.0).to_device(p.tensor.device()).unwrap();
        g.insert(&p.tensor, t);
    }
    g
}

fn run(opt: &mut dyn Optimizer, device: Device) -> (Vec<f64>, Vec<Vec<f64>>) {
    let ps = params_on(device);
    let mut norms = vec![];
    for step in 0..4 {
        norms.push(opt.step(&ps, &grads_for(&ps, step), 2e-3, 0.05).unwrap().grad_norm);
    }
    (norms, ps.iter().map(|p| p.tensor.to_vec_f64().unwrap()).collect())
}

#[test]
fn lamb_and_adamw_steps_on_cuda_equal_the_cpu() {
    if !gpu("optimizers on cuda") {
        return;
    }
    type Make = fn() -> Box<dyn Optimizer>;
    let makes: [(&str, Make); 3] = [
        ("lamb (clip 5)", || Box::new(Lamb::new(LambConfig::default()))),
        ("lamb without bias correction", || {
            Box::new(Lamb::new(LambConfig { bias_correction: false, ..Default::default() }))
        }),
        ("adamw (clip 1)", || Box::new(AdamW::new(AdamWConfig { max_grad_norm: Some(1.0), ..Default::default() }))),
    ];
    for (name, make) in makes {
        let (nc, pc) = run(make().as_mut(), Device::Cpu);
        let (ng, pg) = run(make().as_mut(), Device::Cuda(0));
        for (a, b) in nc.iter().zip(&ng) {
            assert!((a - b).abs() <= 1e-5 * a, "{name}: grad norm cpu {a} vs cuda {b}");
        }
        for (i, (c, g)) in pc.iter().zip(&pg).enumerate() {
            let worst = c.iter().zip(g).fold(0.0f64, |w, (x, y)| w.max((x - y).abs() / (1e-3 + x.abs())));
            assert!(worst < 1e-5, "{name}: parameter {i}: worst relative difference {worst:.2e}");
        }
    }
}

#[test]
fn a_resnet_trains_on_cuda_along_the_cpu_loss_curve() {
    if !gpu("resnet training on cuda") {
        return;
    }
    let losses = |device: Device| -> Vec<f64> {
        let cfg = BackboneConfig { num_classes: 10, width_mult: 0.25, dtype: DType::F32, ..Default::default() };
        let mut model = build_backbone("resnet18", &cfg, &mut Rng::new(3)).unwrap();
        model.to_device(device).unwrap();
        let ps = optim_params(&model.trainable_parameters(), &NoDecayRules::default());
        let mut opt = Lamb::new(LambConfig::default());
        let x = rand(&[8, 3, 64, 64], 9, 1.0).to_device(device).unwrap();
        let targets = [0, 1, 2, 3, 4, 5, 6, 7];
        (0..5)
            .map(|_| {
                let loss = model.forward(&x, &mut Ctx::new(0)).unwrap().cross_entropy(&targets, 0.1).unwrap();
                let grads = loss.backward().unwrap();
                opt.step(&ps, &grads, 5e-3, 0.05).unwrap();
                loss.to_scalar().unwrap()
            })
            .collect()
    };
    let (c, g) = (losses(Device::Cpu), losses(Device::Cuda(0)));
    eprintln!("loss on the cpu {c:?}\nloss on cuda   {g:?}");
    assert!(c.last() < c.first(), "the loss falls: {c:?}");
    for (a, b) in c.iter().zip(&g) {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "loss curves part: cpu {c:?} vs cuda {g:?}");
    }
}

#[test]
fn a_spark_dense_masked_step_on_cuda_equals_the_cpu() {
    use spark::{EncoderMode, SparK, SparkConfig};
    use spark_nn::Module;
    if !gpu("SparK dense-masked on cuda") {
        return;
    }
    // SparK's own simulation of sparsity (dense convs, re-masked outputs, BatchNorm over visible
    // sites): the encoder mode the official code runs on GPUs.
    for backbone in ["resnet18", "convnext_tiny"] {
        let cfg = SparkConfig {
            backbone: backbone.into(),
            width_mult: 0.25,
            input_size: 64,
            decoder_width: 64,
            ..SparkConfig::official(backbone)
        };
        let run = |device: Device| -> (f64, Vec<(String, Vec<f64>)>) {
            let mut m = SparK::new(cfg.clone(), &mut Rng::new(5)).unwrap();
            m.to_device(device).unwrap();
            let x = rand(&[4, 3, 64, 64], 6, 1.0).to_device(device).unwrap();
            let mask = m.sample_mask(4, &mut Rng::new(7)).unwrap();
            let out = m.forward(&x, &mask, EncoderMode::DenseMasked, &mut Rng::new(8)).unwrap();
            let g = out.loss.backward().unwrap();
            let grads = m
                .trainable_parameters()
                .into_iter()
                .filter_map(|(n, p)| g.get(&p).map(|t| (n, t.to_vec_f64().unwrap())))
                .collect();
            (out.loss.to_scalar().unwrap(), grads)
        };
        let ((lc, gc), (lg, gg)) = (run(Device::Cpu), run(Device::Cuda(0)));
        eprintln!("SparK {backbone} dense-masked: loss {lc:.6} (cpu) vs {lg:.6} (cuda)");
        assert!((lc - lg).abs() <= 1e-4 * lc.abs(), "{backbone}: loss cpu {lc} vs cuda {lg}");
        assert_eq!(gc.len(), gg.len(), "{backbone}: gradient count");
        for ((n, c), (_, g)) in gc.iter().zip(&gg) {
            let scale = c.iter().fold(1e-6f64, |a, v| a.max(v.abs()));
            let err = c.iter().zip(g).fold(0.0f64, |a, (x, y)| a.max((x - y).abs())) / scale;
            assert!(err < 2e-3, "{backbone}: gradient of {n}: max error {err:.2e} of its largest entry");
        }
    }
}
