//! The sparse forward of a whole backbone equals SparK's dense simulation (dense ops on the
//! masked image, every conv/pool/norm output re-masked, BN statistics over visible sites) at
//! every returned scale, and all parameter gradients agree. f64, narrow models, 64 px.

use spark_engine::{DType, Device, Rng, Tensor};
use spark_nn::{build_backbone, Backbone, BackboneConfig, Ctx, DenseMask, FeatureMap, SparseContext, SparseTensor};

const PATCH: [bool; 8] = [true, false, true, true, false, true, true, false]; // [2, 2, 2]

fn narrow_model(name: &str, depths: Vec<usize>, seed: u64) -> Box<dyn Backbone> {
    model(name, depths, 0.125, seed)
}

fn model(name: &str, depths: Vec<usize>, width_mult: f64, seed: u64) -> Box<dyn Backbone> {
    model_dp(name, depths, width_mult, 0.0, seed)
}

fn model_dp(name: &str, depths: Vec<usize>, width_mult: f64, drop_path: f64, seed: u64) -> Box<dyn Backbone> {
    let cfg = BackboneConfig {
        num_classes: 0,
        width_mult,
        drop_path,
        depths: Some(depths),
        dtype: DType::F64,
        zero_init_last_bn: false,
        ..Default::default()
    };
    let m = build_backbone(name, &cfg, &mut Rng::new(seed)).unwrap();
    // Move every 1/0 or 1e-6 initialised parameter off its default so each one matters.
    let mut rng = Rng::new(seed + 1);
    for (n, p) in m.named_parameters() {
        if n.ends_with("bias") || n.ends_with("gamma") || n.contains("bn") || n.contains("norm") {
            p.update::<f64>(|s| s.iter_mut().for_each(|v| *v = 0.5 + 0.5 * rng.uniform() - 0.25 * rng.uniform()))
                .unwrap();
        }
    }
    m
}

/// Returns per-scale dense outputs and the gradient of `sum_i <out_i, w_i>` for each parameter.
fn run(m: &dyn Backbone, x: &Tensor, sparse: bool) -> (Vec<Tensor>, Vec<(String, Vec<f64>)>) {
    let (feats, masks) = if sparse {
        let mut sc = SparseContext::hierarchical(&PATCH, 2, 2, 2).unwrap();
        let act = sc.active_set(2, 64, 64).unwrap();
        let xs = SparseTensor::from_dense(x, act).unwrap();
        let mut ctx = Ctx::with_sparse(3, sc);
        let f = m.forward_features(FeatureMap::Sparse(xs), &mut ctx).unwrap();
        assert!(f.iter().all(|f| f.is_sparse()));
        (f.iter().map(|f| f.to_dense().unwrap()).collect::<Vec<_>>(), None)
    } else {
        let mut dm = DenseMask::new(&PATCH, 2, 2, 2).unwrap();
        let xm = x.mul(&dm.mask(64, 64, DType::F64).unwrap()).unwrap();
        let mut ctx = Ctx::with_dense_mask(3, dm);
        let f = m.forward_features(FeatureMap::Dense(xm), &mut ctx).unwrap();
        let masks: Vec<Tensor> = f.iter().map(|f| ctx.mask_like(&f.to_dense().unwrap()).unwrap().unwrap()).collect();
        (f.iter().map(|f| f.to_dense().unwrap()).collect(), Some(masks))
    };
    let outs: Vec<Tensor> = match masks {
        Some(ms) => feats.iter().zip(&ms).map(|(f, m)| f.mul(m).unwrap()).collect(),
        None => feats,
    };
    let mut rng = Rng::new(99);
    let mut loss: Option<Tensor> = None;
    for o in &outs {
        let w = Tensor::randn(o.dims(), 0.0, 1.0, &mut rng, DType::F64, Device::Cpu).unwrap();
        let l = o.mul(&w).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            None => l,
            Some(a) => a.add(&l).unwrap(),
        });
    }
    let grads = loss.unwrap().backward().unwrap();
    let g = m
        .named_parameters()
        .into_iter()
        .map(|(n, p)| {
            let v = grads.get(&p).map(|g| g.to_vec_f64().unwrap()).unwrap_or_else(|| vec![0.0; p.numel()]);
            (n, v)
        })
        .collect();
    (outs.iter().map(|o| o.detach()).collect(), g)
}

fn check(name: &str, depths: Vec<usize>, channels: Vec<usize>) {
    check_model(name, narrow_model(name, depths, 11), channels, true);
}

/// `all_grads`: every parameter must get a non-zero gradient (not so when drop-path drops a
/// block for every image).
fn check_model(name: &str, m: Box<dyn Backbone>, channels: Vec<usize>, all_grads: bool) {
    assert_eq!(m.feature_channels(), channels);
    let x = Tensor::randn(&[2, 3, 64, 64], 0.0, 1.0, &mut Rng::new(5), DType::F64, Device::Cpu).unwrap();
    let (dense, gd) = run(&*m, &x, false);
    let (sparse, gs) = run(&*m, &x, true);
    let sizes: Vec<usize> = dense.iter().map(|t| t.dims()[2]).collect();
    assert_eq!(sizes, vec![16, 8, 4, 2], "{name}: strides 4/8/16/32");
    for (i, (d, s)) in dense.iter().zip(&sparse).enumerate() {
        assert_eq!(d.dims()[1], channels[i]);
        let nz = d.to_vec_f64().unwrap().iter().filter(|v| v.abs() > 1e-12).count();
        assert!(nz > d.numel() / 4, "{name} scale {i}: output is trivially empty");
        spark_engine::testing::assert_tensor_close(&format!("{name} scale {i}"), s, d, 1e-9, 1e-7);
    }
    let mut nonzero = 0;
    for ((n, a), (n2, b)) in gs.iter().zip(&gd) {
        assert_eq!(n, n2);
        if a.iter().any(|v| v.abs() > 1e-12) {
            nonzero += 1;
        }
        spark_engine::testing::assert_close(&format!("{name} grad {n}"), a, b, 1e-8, 1e-6);
    }
    if all_grads {
        assert_eq!(nonzero, gs.len(), "{name}: every parameter must get a gradient");
    } else {
        assert!(nonzero > 0);
    }
}

#[test]
fn resnet18_sparse_forward_and_grads_equal_masked_dense() {
    check("resnet18", vec![2, 2, 2, 2], vec![8, 16, 32, 64]);
}

#[test]
fn convnext_tiny_sparse_forward_and_grads_equal_masked_dense() {
    check("convnext_tiny", vec![1, 1, 2, 1], vec![12, 24, 48, 96]);
}

#[test]
fn convnext_v2_sparse_forward_and_grads_equal_masked_dense() {
    check("convnextv2_tiny", vec![1, 1, 1, 1], vec![12, 24, 48, 96]);
}

#[test]
fn bottleneck_resnet_sparse_forward_and_grads_equal_masked_dense() {
    check("resnet50", vec![1, 1, 1, 1], vec![32, 64, 128, 256]);
}

/// Drop-path draws one keep/drop per image in both modes, in the same order.
#[test]
fn drop_path_models_agree_sparse_and_dense() {
    check_model("resnet18", model_dp("resnet18", vec![2, 2, 2, 2], 0.125, 0.6, 14), vec![8, 16, 32, 64], false);
    check_model(
        "convnext_tiny",
        model_dp("convnext_tiny", vec![2, 2, 2, 2], 0.125, 0.6, 15),
        vec![12, 24, 48, 96],
        false,
    );
}

/// The comparison is sensitive: a plain dense forward (no re-masking, BN over all sites)
/// of the masked image differs from the sparse one.
#[test]
fn plain_dense_forward_differs_from_sparse() {
    let m = narrow_model("resnet18", vec![1, 1, 1, 1], 11);
    let x = Tensor::randn(&[2, 3, 64, 64], 0.0, 1.0, &mut Rng::new(5), DType::F64, Device::Cpu).unwrap();
    let (sparse, _) = run(&*m, &x, true);
    let mut dm = DenseMask::new(&PATCH, 2, 2, 2).unwrap();
    let xm = x.mul(&dm.mask(64, 64, DType::F64).unwrap()).unwrap();
    let plain = m.forward_features(FeatureMap::Dense(xm), &mut Ctx::new(3)).unwrap();
    let last = plain[3].to_dense().unwrap();
    let masked = last.mul(&dm.mask(2, 2, DType::F64).unwrap()).unwrap().to_vec_f64().unwrap();
    let s = sparse[3].to_vec_f64().unwrap();
    let diff = masked.iter().zip(&s).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(diff > 1e-3, "plain dense unexpectedly equals sparse (max diff {diff})");
}

// Full-width models (ResNet-18: 11.2M, ConvNeXt-T: 27.8M f64 parameters) take seconds in a
// release build and minutes in a debug one: run with `cargo test --release`.
#[test]
#[cfg_attr(debug_assertions, ignore)]
fn full_resnet18_sparse_forward_and_grads_equal_masked_dense() {
    check_model("resnet18", model("resnet18", vec![2, 2, 2, 2], 1.0, 12), vec![64, 128, 256, 512], true);
}

#[test]
#[cfg_attr(debug_assertions, ignore)]
fn full_convnext_tiny_sparse_forward_and_grads_equal_masked_dense() {
    check_model("convnext_tiny", model("convnext_tiny", vec![3, 3, 9, 3], 1.0, 13), vec![96, 192, 384, 768], true);
}
