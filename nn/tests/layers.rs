//! Layer-level checks: engine kernels against the primitive-built references, gradient checks
//! of the ops this crate composes itself (GRN, masked BN, drop-path), sparse vs dense per
//! layer, module naming / freezing / train-eval, and initialisation.

use std::sync::Arc;

use spark_engine::testing::{assert_tensor_close, gradcheck, GradCheck};
use spark_engine::{Conv2dParams, ConvTranspose2dParams, DType, Device, Rng, Tensor};
use spark_nn::functional as F;
use spark_nn::reference as R;
use spark_nn::*;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F64, Device::Cpu).unwrap()
}

/// Forward values and input/weight gradients of two implementations agree.
fn same_fn(what: &str, inputs: &[Tensor], a: impl Fn(&[Tensor]) -> Tensor, b: impl Fn(&[Tensor]) -> Tensor) {
    let run = |f: &dyn Fn(&[Tensor]) -> Tensor| {
        let vars: Vec<Tensor> = inputs.iter().map(|t| t.detach().to_variable()).collect();
        let y = f(&vars);
        let w = randn(y.dims(), 77);
        let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let grads: Vec<Tensor> = vars.iter().map(|v| g.get(v).unwrap().clone()).collect();
        (y.detach(), grads)
    };
    let (ya, ga) = run(&a);
    let (yb, gb) = run(&b);
    assert_tensor_close(&format!("{what} forward"), &ya, &yb, 1e-10, 1e-9);
    for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
        assert_tensor_close(&format!("{what} grad {i}"), x, y, 1e-10, 1e-9);
    }
}

#[test]
fn engine_convolutions_equal_the_reference() {
    let x = randn(&[2, 4, 9, 8], 1);
    let cases = [
        (Conv2dParams::new(1, 1), [6, 4, 3, 3]),
        (Conv2dParams::new(2, 3), [6, 4, 7, 7]),
        (Conv2dParams::new(2, 0), [5, 4, 2, 2]),
        (Conv2dParams::new(1, 2).with_dilation(2), [6, 4, 3, 3]),
        (Conv2dParams::new(1, 1).with_groups(2), [6, 2, 3, 3]),
        (Conv2dParams::new(1, 3).with_groups(4), [4, 1, 7, 7]),
    ];
    for (p, ws) in cases {
        let (w, b) = (randn(&ws, 2), randn(&[ws[0]], 3));
        same_fn(
            &format!("conv2d {p:?}"),
            &[x.clone(), w, b],
            |v| F::conv2d(&v[0], &v[1], Some(&v[2]), p).unwrap(),
            |v| R::conv2d(&v[0], &v[1], Some(&v[2]), p).unwrap(),
        );
    }
    let mut tp = ConvTranspose2dParams::new(2, 1);
    tp.output_padding = [1, 1];
    let (w, b) = (randn(&[4, 3, 4, 4], 4), randn(&[3], 5));
    same_fn(
        "conv_transpose2d",
        &[x.clone(), w, b],
        |v| F::conv_transpose2d(&v[0], &v[1], Some(&v[2]), tp).unwrap(),
        |v| R::conv_transpose2d(&v[0], &v[1], Some(&v[2]), tp).unwrap(),
    );
}

#[test]
fn engine_pools_and_norms_equal_the_reference() {
    let x = randn(&[2, 3, 9, 8], 6);
    same_fn(
        "max_pool2d",
        &[x.clone()],
        |v| F::max_pool2d(&v[0], 3, 2, 1).unwrap(),
        |v| R::max_pool2d(&v[0], 3, 2, 1).unwrap(),
    );
    same_fn(
        "avg_pool2d",
        &[x.clone()],
        |v| F::avg_pool2d(&v[0], 3, 2, 1).unwrap(),
        |v| R::avg_pool2d(&v[0], 3, 2, 1).unwrap(),
    );
    let (w, b) = (randn(&[3], 7), randn(&[3], 8));
    same_fn(
        "layer_norm_channels_first",
        &[x.clone(), w.clone(), b.clone()],
        |v| F::layer_norm_channels_first(&v[0], Some(&v[1]), Some(&v[2]), 1e-6).unwrap(),
        |v| R::layer_norm_channels_first(&v[0], Some(&v[1]), Some(&v[2]), 1e-6).unwrap(),
    );
    let xl = randn(&[2, 5, 4, 3], 9);
    same_fn(
        "layer_norm",
        &[xl, w.clone(), b.clone()],
        |v| F::layer_norm(&v[0], Some(&v[1]), Some(&v[2]), 1e-6).unwrap(),
        |v| R::layer_norm(&v[0], Some(&v[1]), Some(&v[2]), 1e-6).unwrap(),
    );
    let stats = || {
        (Tensor::zeros(&[3], DType::F64, Device::Cpu).unwrap(), Tensor::ones(&[3], DType::F64, Device::Cpu).unwrap())
    };
    let (ra, rb) = (stats(), stats());
    same_fn(
        "batch_norm train",
        &[x, w, b],
        |v| F::batch_norm(&v[0], Some(&v[1]), Some(&v[2]), Some((&ra.0, &ra.1)), true, 0.1, 1e-5).unwrap(),
        |v| R::batch_norm(&v[0], Some(&v[1]), Some(&v[2]), Some((&rb.0, &rb.1)), true, 0.1, 1e-5).unwrap(),
    );
    assert_tensor_close("running_mean", &ra.0, &rb.0, 1e-12, 1e-10);
    assert_tensor_close("running_var", &ra.1, &rb.1, 1e-12, 1e-10);
}

#[test]
fn reference_conv_matches_a_direct_loop() {
    // Independent of both implementations: out[o, y, x] = b + sum w * x over the window.
    let x = randn(&[1, 2, 5, 4], 10);
    let w = randn(&[3, 2, 3, 3], 11);
    let y = R::conv2d(&x, &w, None, Conv2dParams::new(2, 1)).unwrap();
    assert_eq!(y.dims(), &[1, 3, 3, 2]);
    let (xv, wv, yv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap(), y.to_vec_f64().unwrap());
    for o in 0..3 {
        for oy in 0..3 {
            for ox in 0..2 {
                let mut s = 0.0;
                for c in 0..2 {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                            if (0..5).contains(&iy) && (0..4).contains(&ix) {
                                s += wv[((o * 2 + c) * 3 + ky) * 3 + kx] * xv[(c * 5 + iy as usize) * 4 + ix as usize];
                            }
                        }
                    }
                }
                assert!((yv[(o * 3 + oy) * 2 + ox] - s).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn depthwise_conv_on_a_map_smaller_than_its_padding() {
    // ConvNeXt's 7x7 depthwise on a 2x2 map (stride-32 stage at 64 px): only the centre taps hit.
    let x = randn(&[1, 3, 2, 2], 12);
    let w = randn(&[3, 1, 7, 7], 13);
    let y = F::conv2d(&x, &w, None, Conv2dParams::new(1, 3).with_groups(3)).unwrap();
    let (xv, wv, yv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap(), y.to_vec_f64().unwrap());
    for c in 0..3 {
        for oy in 0..2 {
            for ox in 0..2 {
                let mut s = 0.0;
                for iy in 0..2 {
                    for ix in 0..2 {
                        s += wv[c * 49 + (iy + 3 - oy) * 7 + (ix + 3 - ox)] * xv[c * 4 + iy * 2 + ix];
                    }
                }
                assert!((yv[c * 4 + oy * 2 + ox] - s).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn composed_ops_pass_gradient_checks() {
    gradcheck(
        |v| {
            let g = Grn { gamma: v[1].clone(), beta: v[2].clone() };
            g.forward_tensor(&v[0])
        },
        &[randn(&[2, 3, 3, 4], 14), randn(&[1, 1, 1, 4], 15), randn(&[1, 1, 1, 4], 16)],
        GradCheck::default(),
    )
    .unwrap();
    let m = DenseMask::new(&[true, false, true, true], 2, 1, 2).unwrap().mask(4, 4, DType::F64).unwrap();
    let (rm, rv) =
        (Tensor::zeros(&[3], DType::F64, Device::Cpu).unwrap(), Tensor::ones(&[3], DType::F64, Device::Cpu).unwrap());
    gradcheck(
        |v| F::batch_norm_masked(&v[0], &m, &v[1], &v[2], &rm, &rv, true, 0.1, 1e-5),
        &[randn(&[2, 3, 4, 4], 17), randn(&[3], 18), randn(&[3], 19)],
        GradCheck::default(),
    )
    .unwrap();
    let dp = DropPath::new(0.5).unwrap();
    gradcheck(
        |v| dp.forward(&FeatureMap::Dense(v[0].clone()), &mut Ctx::new(4))?.to_dense(),
        &[randn(&[4, 2, 3, 3], 20)],
        GradCheck::default(),
    )
    .unwrap();
}

fn sparse_input(c: usize, seed: u64) -> (Tensor, SparseTensor, SparseContext) {
    let patch = [true, false, false, true, true, true, false, true];
    let mut sc = SparseContext::hierarchical(&patch, 2, 2, 2).unwrap();
    let act = sc.active_set(2, 8, 8).unwrap();
    let x = randn(&[2, c, 8, 8], seed).mul(&act.mask_tensor(DType::F64).unwrap()).unwrap();
    let s = SparseTensor::from_dense(&x, act).unwrap();
    (x, s, sc)
}

#[test]
fn sparse_layers_equal_their_dense_simulation() {
    let (x, s, sc) = sparse_input(4, 21);
    let patch = [true, false, false, true, true, true, false, true];
    let mut sctx = Ctx::with_sparse(0, sc);
    let mut dctx = Ctx::with_dense_mask(0, DenseMask::new(&patch, 2, 2, 2).unwrap());
    let mut b = Builder::new(3, DType::F64);
    let bn = BatchNorm2d::new(4, &mut b).unwrap();
    bn.weight.update::<f64>(|w| w.iter_mut().enumerate().for_each(|(i, v)| *v = 0.5 + i as f64)).unwrap();
    let layers: Vec<(&str, Box<dyn Layer>)> = vec![
        (
            "conv",
            Box::new(Conv2d::new(4, 6, 3, Conv2dParams::new(1, 1), true, WeightInit::TorchDefault, &mut b).unwrap()),
        ),
        (
            "strided conv",
            Box::new(Conv2d::new(4, 6, 3, Conv2dParams::new(2, 1), true, WeightInit::TorchDefault, &mut b).unwrap()),
        ),
        ("bn", Box::new(bn)),
        ("ln", Box::new(LayerNorm::new(4, 1e-6, LnLayout::ChannelsFirst, &mut b).unwrap())),
        ("maxpool", Box::new(MaxPool2d { kernel: 3, stride: 2, padding: 1 })),
        ("avgpool", Box::new(AvgPool2d { kernel: 2, stride: 2, padding: 0 })),
        ("relu", Box::new(ReLU)),
        ("gelu", Box::new(GELU)),
        ("gap", Box::new(GlobalAvgPool)),
    ];
    for (name, l) in &layers {
        let d = l.forward(&FeatureMap::Dense(x.clone()), &mut dctx).unwrap().to_dense().unwrap();
        let sp = l.forward(&FeatureMap::Sparse(s.clone()), &mut sctx).unwrap();
        let d = match dctx.mask_like(&d) {
            Ok(Some(m)) => d.mul(&m).unwrap(),
            _ => d,
        };
        assert_tensor_close(name, &sp.to_dense().unwrap(), &d, 1e-10, 1e-9);
    }
    // BN in sparse mode: statistics over the active rows only.
    let rows = s.features.to_vec_f64().unwrap();
    let n = s.active.len();
    let mean0: f64 = (0..n).map(|r| rows[r * 4]).sum::<f64>() / n as f64;
    let bn = &layers[2].1;
    let y = bn.forward(&FeatureMap::Sparse(s.clone()), &mut sctx).unwrap();
    let FeatureMap::Sparse(y) = y else { panic!("sparse in, sparse out") };
    let y0: f64 = y.features.to_vec_f64().unwrap().iter().step_by(4).sum::<f64>() / n as f64;
    assert!(y0.abs() < 1e-10, "normalised channel 0 has mean {y0} (input mean {mean0})");
}

#[test]
fn sparse_grn_and_linear_work_on_active_rows() {
    let (x, s, _) = sparse_input(4, 22);
    let mut b = Builder::new(5, DType::F64);
    let mut grn = Grn::new(4, &mut b).unwrap();
    grn.gamma = randn(&[1, 1, 1, 4], 23);
    grn.beta = randn(&[1, 1, 1, 4], 24);
    let lin = Linear::new(4, 3, true, WeightInit::TorchDefault, &mut b).unwrap();
    let mut ctx = Ctx::new(0);
    let dense_cl = x.permute(&[0, 2, 3, 1]).unwrap();
    // Dense GRN on the zero-filled map has the same statistics as active-only GRN.
    let dg = grn.forward_tensor(&dense_cl).unwrap().permute(&[0, 3, 1, 2]).unwrap();
    let sg = grn.forward(&FeatureMap::Sparse(s.clone()), &mut ctx).unwrap();
    let FeatureMap::Sparse(sg) = sg else { panic!() };
    let dg_at_active = SparseTensor::from_dense(&dg, s.active.clone()).unwrap();
    assert_tensor_close("grn", &sg.features, &dg_at_active.features, 1e-10, 1e-9);
    let dl = lin.forward(&FeatureMap::Dense(dense_cl), &mut ctx).unwrap().to_dense().unwrap();
    let sl = lin.forward(&FeatureMap::Sparse(s.clone()), &mut ctx).unwrap();
    let FeatureMap::Sparse(sl) = sl else { panic!() };
    let dl =
        SparseTensor::from_dense(&dl.permute(&[0, 3, 1, 2]).unwrap().contiguous().unwrap(), s.active.clone()).unwrap();
    assert_tensor_close("linear", &sl.features, &dl.features, 1e-12, 1e-10);
}

#[test]
fn drop_path_drops_whole_samples_and_images() {
    let dp = DropPath::new(0.5).unwrap();
    let x = randn(&[16, 2, 3, 3], 25);
    let y = dp.forward(&FeatureMap::Dense(x.clone()), &mut Ctx::new(9)).unwrap().to_dense().unwrap();
    let (xv, yv) = (x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap());
    let mut dropped = 0;
    for s in 0..16 {
        let (a, b) = (&xv[s * 18..(s + 1) * 18], &yv[s * 18..(s + 1) * 18]);
        if b.iter().all(|v| *v == 0.0) {
            dropped += 1;
        } else {
            assert!(a.iter().zip(b).all(|(p, q)| (2.0 * p - q).abs() < 1e-12), "sample {s} kept, scaled by 2");
        }
    }
    assert!((3..=13).contains(&dropped), "{dropped} of 16 dropped");
    // Sparse: the same draws (same seed) drop the same images.
    let (xd, s, _) = sparse_input(2, 26);
    let yd = dp.forward(&FeatureMap::Dense(xd), &mut Ctx::new(9)).unwrap().to_dense().unwrap();
    let ys = dp.forward(&FeatureMap::Sparse(s), &mut Ctx::new(9)).unwrap().to_dense().unwrap();
    assert_tensor_close("drop path sparse", &ys, &yd, 0.0, 0.0);
    let mut dp = dp;
    dp.eval();
    let z = dp.forward(&FeatureMap::Dense(x.clone()), &mut Ctx::new(9)).unwrap().to_dense().unwrap();
    assert_eq!(z.to_vec_f64().unwrap(), xv);
}

fn tiny_resnet(seed: u64) -> Box<dyn Backbone> {
    let cfg = BackboneConfig {
        num_classes: 5,
        width_mult: 0.0625,
        depths: Some(vec![1, 1, 1, 1]),
        dtype: DType::F64,
        ..Default::default()
    };
    build_backbone("resnet18", &cfg, &mut Rng::new(seed)).unwrap()
}

#[test]
fn freezing_stops_gradients_and_train_eval_switches_bn() {
    let mut m = tiny_resnet(1);
    let n_params = m.named_parameters().len();
    assert_eq!(m.freeze(&|n| n.starts_with("layer1.") || n == "conv1.weight"), 7);
    assert_eq!(m.trainable_parameters().len(), n_params - 7);
    assert!(m.frozen_parameters().contains(&"layer1.0.bn2.bias".to_string()));
    let x = randn(&[2, 3, 32, 32], 27);
    let g = m.forward(&x, &mut Ctx::new(0)).unwrap().sum_all().unwrap().backward().unwrap();
    for (n, p) in m.named_parameters() {
        let frozen = n.starts_with("layer1.") || n == "conv1.weight";
        assert_eq!(g.get(&p).is_some(), !frozen, "{n}");
    }
    assert_eq!(m.unfreeze(&|n| n.starts_with("layer1.")), 6);
    assert_eq!(m.frozen_parameters(), vec!["conv1.weight".to_string()]);

    let counter =
        |m: &dyn Backbone| m.named_buffers().into_iter().find(|(n, _)| n == "bn1.num_batches_tracked").unwrap().1;
    let rm = |m: &dyn Backbone| m.named_buffers()[0].1.to_vec_f64().unwrap();
    assert_eq!(counter(&*m).to_scalar().unwrap(), 1.0);
    let before = rm(&*m);
    m.eval();
    let y1 = m.forward(&x, &mut Ctx::new(0)).unwrap();
    let y2 = m.forward(&x.narrow(0, 0, 1).unwrap(), &mut Ctx::new(0)).unwrap();
    assert_eq!(rm(&*m), before, "eval leaves running stats alone");
    assert_eq!(counter(&*m).to_scalar().unwrap(), 1.0);
    // Eval output of a sample does not depend on the rest of the batch.
    assert_tensor_close("eval per-sample", &y1.narrow(0, 0, 1).unwrap(), &y2, 1e-12, 1e-10);
    m.train();
    m.forward(&x, &mut Ctx::new(0)).unwrap();
    assert_eq!(counter(&*m).to_scalar().unwrap(), 2.0);
    assert_ne!(rm(&*m), before);
}

#[test]
fn initialisation_follows_pytorch_and_timm_and_is_seeded() {
    let cfg = BackboneConfig { num_classes: 10, width_mult: 0.5, ..Default::default() };
    let r = build_backbone("resnet18", &cfg, &mut Rng::new(3)).unwrap();
    let r2 = build_backbone("resnet18", &cfg, &mut Rng::new(3)).unwrap();
    let r3 = build_backbone("resnet18", &cfg, &mut Rng::new(4)).unwrap();
    let p = |m: &dyn Backbone, n: &str| {
        m.named_parameters().into_iter().find(|(k, _)| k == n).unwrap().1.to_vec_f64().unwrap()
    };
    let std = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    // kaiming_normal fan_out/relu: std = sqrt(2 / (cout * 3 * 3)), cout = 128 here.
    let w = p(&*r, "layer3.0.conv2.weight");
    assert!((std(&w) / (2.0f64 / (128.0 * 9.0)).sqrt() - 1.0).abs() < 0.03, "{}", std(&w));
    assert_eq!(w, p(&*r2, "layer3.0.conv2.weight"));
    assert_ne!(w, p(&*r3, "layer3.0.conv2.weight"));
    assert!(p(&*r, "layer3.0.bn2.weight").iter().all(|v| *v == 0.0), "timm zero-inits the last BN");
    assert!(p(&*r, "layer3.0.bn1.weight").iter().all(|v| *v == 1.0));
    // fc: PyTorch default U(±1/sqrt(fan_in)), fan_in = 256.
    let fc = p(&*r, "fc.weight");
    assert!(fc.iter().all(|v| v.abs() <= 1.0 / 16.0) && fc.iter().any(|v| v.abs() > 0.9 / 16.0));
    let c =
        build_backbone("convnext_tiny", &BackboneConfig { width_mult: 0.5, ..Default::default() }, &mut Rng::new(3))
            .unwrap();
    let pw = p(&*c, "stages.2.0.pwconv1.weight");
    assert!((std(&pw) / 0.02 - 1.0).abs() < 0.03, "{}", std(&pw));
    assert!(p(&*c, "stages.2.0.pwconv1.bias").iter().all(|v| *v == 0.0));
    assert!(p(&*c, "stages.2.0.gamma").iter().all(|v| (*v - 1e-6).abs() < 1e-12));
    assert!(p(&*c, "downsample_layers.1.0.weight").iter().all(|v| *v == 1.0));
}

#[test]
fn backbone_outputs_and_errors() {
    let m = tiny_resnet(2);
    let x = randn(&[2, 3, 64, 64], 28);
    assert_eq!(m.forward(&x, &mut Ctx::new(0)).unwrap().dims(), &[2, 5]);
    let cfg = BackboneConfig {
        num_classes: 0,
        width_mult: 1.0 / 12.0,
        depths: Some(vec![1, 1, 1, 1]),
        drop_path: 0.3,
        dtype: DType::F64,
        ..Default::default()
    };
    let c = build_backbone("convnext_tiny", &cfg, &mut Rng::new(1)).unwrap();
    assert_eq!(c.forward(&x, &mut Ctx::new(0)).unwrap().dims(), &[2, 64]);
    assert_eq!(c.num_features(), 64);
    let feats = c.forward_features(FeatureMap::Dense(x.clone()), &mut Ctx::new(0)).unwrap();
    let shapes: Vec<Vec<usize>> = feats.iter().map(|f| f.to_dense().unwrap().shape()).collect();
    assert_eq!(shapes, vec![vec![2, 8, 16, 16], vec![2, 16, 8, 8], vec![2, 32, 4, 4], vec![2, 64, 2, 2]]);
    // A sparse map without a sparse context is a clear error.
    let act = Arc::new(ActiveSet::from_mask(&vec![true; 2 * 64 * 64], 2, 64, 64).unwrap());
    let s = SparseTensor::from_dense(&x, act).unwrap();
    let e = m.forward_features(FeatureMap::Sparse(s), &mut Ctx::new(0)).unwrap_err().to_string();
    assert!(e.contains("Conv2d") && e.contains("with_sparse"), "{e}");
    let mut b = Builder::new(0, DType::F64);
    let ct = ConvTranspose2d::new(4, 2, 2, ConvTranspose2dParams::new(2, 0), true, WeightInit::TorchDefault, &mut b)
        .unwrap();
    let (_, sp, _) = sparse_input(4, 29);
    let e = ct.forward(&FeatureMap::Sparse(sp), &mut Ctx::new(0)).unwrap_err().to_string();
    assert!(e.contains("ConvTranspose2d"), "{e}");
    assert!(DropPath::new(1.0).is_err() && Dropout::new(-0.1).is_err());
}

#[test]
fn sequential_names_children_by_index() {
    let mut b = Builder::new(0, DType::F32);
    let s = Sequential::new()
        .push(Conv2d::new(3, 4, 3, Conv2dParams::new(1, 1), false, WeightInit::TorchDefault, &mut b).unwrap())
        .push(BatchNorm2d::new(4, &mut b).unwrap())
        .push(ReLU);
    let names: Vec<String> = s.state_dict().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]);
    assert_eq!(s.num_parameters(), 4 * 3 * 9 + 8);
    let mut names = Vec::new();
    s.visit("downsample", &mut |n, _, _| names.push(n.to_string()));
    assert_eq!(names[0], "downsample.0.weight");
}
