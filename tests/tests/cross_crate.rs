//! Cross-crate checks: the sparse path through a whole backbone (engine + sparse + nn) agrees with
//! the ordinary dense path when nothing is masked, for ResNet and ConvNeXt, and is unaffected by
//! what the image holds under masked patches.

use spark_engine::testing::assert_tensor_close;
use spark_engine::{DType, Device, Rng, Tensor};
use spark_nn::{build_backbone, Backbone, BackboneConfig, Ctx, FeatureMap};
use spark_sparse::{SparseContext, SparseTensor};

const SIZE: usize = 64;
const GRID: usize = SIZE / 32;

fn small(name: &str) -> Box<dyn Backbone> {
    let cfg = BackboneConfig {
        num_classes: 0,
        width_mult: 0.25,
        depths: Some(vec![1, 1, 1, 1]),
        dtype: DType::F64,
        ..BackboneConfig::default()
    };
    let mut model = build_backbone(name, &cfg, &mut Rng::new(3)).unwrap();
    // Eval mode: BN uses running statistics, so a dense and a sparse forward over different site
    // sets compute the same per-site function.
    model.eval();
    model
}

fn sparse_features(model: &dyn Backbone, x: &Tensor, visible: &[bool]) -> Vec<Tensor> {
    let batch = x.dims()[0];
    let mut sctx = SparseContext::hierarchical(visible, batch, GRID, GRID).unwrap();
    let active = sctx.active_set(batch, SIZE, SIZE).unwrap();
    let input = FeatureMap::Sparse(SparseTensor::from_dense(x, active).unwrap());
    let mut ctx = Ctx::with_sparse(0, sctx);
    let feats = model.forward_features(input, &mut ctx).unwrap();
    feats.iter().map(|f| f.to_dense().unwrap()).collect()
}

#[test]
fn all_visible_sparse_backbones_equal_their_dense_forward() {
    let x = Tensor::randn(&[2, 3, SIZE, SIZE], 0.0, 1.0, &mut Rng::new(9), DType::F64, Device::Cpu).unwrap();
    for name in ["resnet18", "resnet50", "convnext_tiny", "convnextv2_tiny"] {
        let model = small(name);
        let dense = model.forward_features(FeatureMap::Dense(x.clone()), &mut Ctx::new(0)).unwrap();
        let sparse = sparse_features(model.as_ref(), &x, &[true; 2 * GRID * GRID]);
        assert_eq!(dense.len(), 4, "{name}: four scales");
        for (i, (d, s)) in dense.iter().zip(&sparse).enumerate() {
            assert_tensor_close(&format!("{name} scale {i}"), s, &d.to_dense().unwrap(), 1e-10, 1e-9);
        }
    }
}

#[test]
fn masked_pixels_do_not_leak_into_sparse_features() {
    // Two images that differ only under masked patches give identical sparse features.
    let visible = [true, false, false, true, false, true, true, false];
    let a = Tensor::randn(&[2, 3, SIZE, SIZE], 0.0, 1.0, &mut Rng::new(10), DType::F64, Device::Cpu).unwrap();
    let noise = Tensor::randn(&[2, 3, SIZE, SIZE], 0.0, 5.0, &mut Rng::new(11), DType::F64, Device::Cpu).unwrap();
    let patch: Vec<f64> = visible.iter().map(|&v| if v { 0.0 } else { 1.0 }).collect();
    let hidden = Tensor::from_vec(patch, &[2, 1, GRID, GRID]).unwrap().upsample_nearest2d(32, 32).unwrap();
    let b = a.add(&noise.mul(&hidden).unwrap()).unwrap();
    for name in ["resnet18", "convnext_tiny"] {
        let model = small(name);
        let fa = sparse_features(model.as_ref(), &a, &visible);
        let fb = sparse_features(model.as_ref(), &b, &visible);
        for (i, (p, q)) in fa.iter().zip(&fb).enumerate() {
            assert_tensor_close(&format!("{name} scale {i}"), p, q, 0.0, 0.0);
        }
    }
}
