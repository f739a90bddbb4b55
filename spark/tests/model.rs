//! SparK model: parameter counts (SPARK.md 9.2 / 8.3), state-dict names (section 10), and the
//! proof that the real-sparse model equals SparK's dense-masked PyTorch semantics.

use spark::mask::PatchMask;
use spark::{EncoderMode, SparK, SparkConfig};
use spark_engine::{GradStore, Rng, Tensor};
use spark_nn::Module;

fn count(cfg: SparkConfig) -> usize {
    SparK::shape_only(cfg).unwrap().num_parameters()
}

#[test]
fn parameter_counts_match_spark_md() {
    assert_eq!(count(SparkConfig::official("resnet50")), 52_921_835);
    assert_eq!(count(SparkConfig::official("convnext_small")), 74_383_083);
    assert_eq!(count(SparkConfig { decoder_width: 512, ..SparkConfig::official("resnet18") }), 22_258_931);
    assert_eq!(count(SparkConfig::official("resnet18")), 35_918_379);
    assert_eq!(count(SparkConfig::official("convnext_tiny")), 52_748_523);
    assert_eq!(count(SparkConfig::mmpretrain("resnet50")), 37_970_611);
}

#[test]
fn state_dict_names_follow_the_official_checkpoint() {
    let m = SparK::shape_only(SparkConfig::official("resnet50")).unwrap();
    let names: Vec<String> = m.state_dict().into_iter().map(|(n, _, _)| n).collect();
    for n in [
        "sparse_encoder.sp_cnn.conv1.weight",
        "sparse_encoder.sp_cnn.layer4.2.bn3.running_var",
        "dense_decoder.dec.0.up_sample.weight",
        "dense_decoder.dec.4.conv.0.weight",
        "dense_decoder.dec.4.conv.1.num_batches_tracked",
        "dense_decoder.dec.2.conv.3.weight",
        "dense_decoder.dec.3.conv.4.bias",
        "dense_decoder.proj.bias",
        "densify_norms.0.running_mean",
        "densify_projs.0.weight",
        "densify_projs.3.bias",
        "mask_tokens.3",
    ] {
        assert!(names.iter().any(|x| x == n), "missing {n}");
    }
    assert!(!names.iter().any(|n| n.contains("fc.")));
    let enc: Vec<String> = m.encoder_state().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(enc.len(), 318); // SPARK.md 9.1: ResNet-50 state dict without fc
    let shapes: Vec<(String, Vec<usize>)> = m.named_parameters().into_iter().map(|(n, t)| (n, t.shape())).collect();
    let get = |k: &str| shapes.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("dense_decoder.dec.0.up_sample.weight"), vec![768, 768, 4, 4]);
    assert_eq!(get("densify_projs.0.weight"), vec![768, 2048, 1, 1]);
    assert_eq!(get("densify_projs.1.weight"), vec![384, 1024, 3, 3]);
    assert_eq!(get("mask_tokens.0"), vec![1, 2048, 1, 1]);
    assert_eq!(get("dense_decoder.proj.weight"), vec![3, 24, 1, 1]);
    // ConvNeXt-S: the deepest projection is Identity (768 == 768), LN densify norms.
    let c = SparK::shape_only(SparkConfig::official("convnext_small")).unwrap();
    let names: Vec<String> = c.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert!(!names.iter().any(|n| n.starts_with("densify_projs.0.")));
    assert!(names.iter().any(|n| n == "densify_projs.1.weight"));
    assert!(names.iter().any(|n| n == "densify_norms.0.weight"));
    assert!(names.iter().any(|n| n == "sparse_encoder.sp_cnn.downsample_layers.0.0.weight"));
}

fn small(backbone: &str, depths: Option<Vec<usize>>, width_mult: f64, dec: usize) -> SparkConfig {
    SparkConfig {
        width_mult,
        depths,
        drop_path: 0.0,
        zero_init_last_bn: false,
        input_size: 64,
        decoder_width: dec,
        dtype: "f64".into(),
        ..SparkConfig::official(backbone)
    }
}

fn grads_of(model: &SparK, x: &Tensor, mask: &PatchMask, mode: EncoderMode) -> (f64, GradStore) {
    let out = model.forward(x, mask, mode, &mut Rng::new(5)).unwrap();
    let g = out.loss.backward().unwrap();
    (out.loss.to_scalar().unwrap(), g)
}

fn assert_sparse_equals_dense_masked(cfg: SparkConfig) {
    let model = SparK::new(cfg, &mut Rng::new(1)).unwrap();
    let x = Tensor::randn(&[2, 3, 64, 64], 0.0, 1.0, &mut Rng::new(2), spark_engine::DType::F64, Default::default())
        .unwrap();
    // Two of four cells visible per image (round(4 * 0.4) = 2), different per image.
    let mask = PatchMask::from_active(2, 2, 2, vec![true, false, false, true, false, true, true, false]).unwrap();
    let (ls, gs) = grads_of(&model, &x, &mask, EncoderMode::Sparse);
    let (ld, gd) = grads_of(&model, &x, &mask, EncoderMode::DenseMasked);
    assert!(ls.is_finite() && ls > 0.0);
    assert!((ls - ld).abs() <= 1e-10 * ld.abs().max(1.0), "loss sparse {ls} vs dense-masked {ld}");
    let mut checked = 0;
    for (name, p) in model.named_parameters() {
        let a = gs.get(&p).unwrap_or_else(|| panic!("sparse: no gradient for {name}")).to_vec_f64().unwrap();
        let b = gd.get(&p).unwrap_or_else(|| panic!("dense: no gradient for {name}")).to_vec_f64().unwrap();
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (u, v)) in a.iter().zip(&b).enumerate() {
            assert!((u - v).abs() <= 1e-8 * scale, "{name}[{i}]: sparse {u} vs dense-masked {v}");
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} parameters");
}

#[test]
fn sparse_equals_dense_masked_resnet() {
    assert_sparse_equals_dense_masked(small("resnet18", Some(vec![1, 1, 1, 1]), 0.25, 64));
}

#[test]
fn sparse_equals_dense_masked_convnext() {
    assert_sparse_equals_dense_masked(small("convnext_tiny", Some(vec![1, 1, 2, 1]), 0.25, 64));
}
