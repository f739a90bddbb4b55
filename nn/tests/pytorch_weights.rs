//! Weights written by PyTorch (scripts/make_nn_fixtures.py: torchvision ResNet blocks and the
//! official ConvNeXt V1/V2 code, narrow) load here by name and give PyTorch's outputs within
//! 1e-4, in eval and train mode (BN running stats updated as PyTorch does); timm's ConvNeXt
//! names load by remapping; files written here keep PyTorch's names, shapes and dtypes.

use std::path::PathBuf;

use safetensors::SafeTensors;
use spark_engine::{Rng, Tensor};
use spark_nn::{build_backbone, load_safetensors, save_safetensors, Backbone, BackboneConfig, Ctx};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/nn").join(name)
}

fn model(arch: &str, seed: u64) -> Box<dyn Backbone> {
    let (name, width_mult, depths) = match arch {
        "resnet18_w4" => ("resnet18", 1.0 / 16.0, vec![2, 2, 2, 2]),
        "resnet50_w4" => ("resnet50", 1.0 / 16.0, vec![1, 1, 1, 1]),
        "convnext_w8" => ("convnext_tiny", 1.0 / 12.0, vec![1, 1, 2, 1]),
        "convnextv2_w8" => ("convnextv2_tiny", 1.0 / 12.0, vec![1, 1, 2, 1]),
        _ => panic!("unknown fixture {arch}"),
    };
    let cfg = BackboneConfig { num_classes: 10, width_mult, depths: Some(depths), ..Default::default() };
    build_backbone(name, &cfg, &mut Rng::new(seed)).unwrap()
}

/// Tensors of an `_io` fixture by name.
fn io(arch: &str) -> Vec<(String, Tensor)> {
    let bytes = std::fs::read(data(&format!("{arch}_io.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let f: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (n, Tensor::from_vec(f, v.shape()).unwrap())
        })
        .collect()
}

fn get<'a>(io: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &io.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("fixture has no {name}")).1
}

fn check_against_pytorch(arch: &str, weights: &str) {
    let mut m = model(arch, 1);
    let report = load_safetensors(&*m, data(weights), true).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.loaded.len(), m.state_dict().len());
    let io = io(arch);
    let x = get(&io, "input");
    m.eval();
    let y = m.forward(x, &mut Ctx::new(0)).unwrap();
    spark_engine::testing::assert_tensor_close(&format!("{arch} eval"), &y, get(&io, "output_eval"), 1e-4, 1e-4);
    m.train();
    let y = m.forward(x, &mut Ctx::new(0)).unwrap();
    spark_engine::testing::assert_tensor_close(&format!("{arch} train"), &y, get(&io, "output_train"), 1e-4, 1e-4);
    let mut stats = 0;
    for (n, t) in m.named_buffers() {
        if n.ends_with("num_batches_tracked") {
            assert_eq!(t.to_scalar().unwrap(), 8.0, "{n}: 7 from the file + 1 train forward");
        } else {
            let want = get(&io, &format!("after_train.{n}"));
            spark_engine::testing::assert_tensor_close(&format!("{arch} {n}"), &t, want, 1e-5, 1e-4);
            stats += 1;
        }
    }
    assert_eq!(stats > 0, arch.starts_with("resnet"));
}

#[test]
fn torchvision_resnet18_weights_give_pytorch_outputs() {
    check_against_pytorch("resnet18_w4", "resnet18_w4.safetensors");
}

#[test]
fn torchvision_bottleneck_resnet_weights_give_pytorch_outputs() {
    check_against_pytorch("resnet50_w4", "resnet50_w4.safetensors");
}

#[test]
fn official_convnext_weights_give_pytorch_outputs() {
    check_against_pytorch("convnext_w8", "convnext_w8.safetensors");
}

#[test]
fn official_convnext_v2_weights_give_pytorch_outputs() {
    check_against_pytorch("convnextv2_w8", "convnextv2_w8.safetensors");
}

#[test]
fn timm_convnext_names_load_by_remapping() {
    check_against_pytorch("convnext_w8", "convnext_w8_timm.safetensors");
    let m = model("convnext_w8", 1);
    let r = load_safetensors(&*m, data("convnext_w8_timm.safetensors"), true).unwrap();
    assert!(r.remapped.contains(&("stem.0.weight".into(), "downsample_layers.0.0.weight".into())));
    assert!(r.remapped.contains(&("stages.2.blocks.1.mlp.fc2.bias".into(), "stages.2.1.pwconv2.bias".into())));
    assert!(r.remapped.contains(&("head.fc.weight".into(), "head.weight".into())));
}

#[test]
fn saved_state_round_trips_with_torch_names_and_dtypes() {
    let dir = std::env::var("SPARK_NN_EXPORT_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let path = dir.join(format!("spark_nn_resnet18_w4_{}.safetensors", std::process::id()));
    let a = model("resnet18_w4", 7);
    let counter =
        |m: &dyn Backbone| m.named_buffers().into_iter().find(|(n, _)| n == "bn1.num_batches_tracked").unwrap().1;
    counter(&*a).update::<f64>(|s| s[0] = 3.0).unwrap();
    save_safetensors(&*a, &path).unwrap();
    // Same keys, shapes and dtypes as the torchvision-side fixture (F32 weights, I64 counters).
    let mine = std::fs::read(&path).unwrap();
    let theirs = std::fs::read(data("resnet18_w4.safetensors")).unwrap();
    let (mine, theirs) = (SafeTensors::deserialize(&mine).unwrap(), SafeTensors::deserialize(&theirs).unwrap());
    let mut names: Vec<String> = mine.names().into_iter().cloned().collect();
    let mut want: Vec<String> = theirs.names().into_iter().cloned().collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);
    for n in &names {
        let (x, y) = (mine.tensor(n).unwrap(), theirs.tensor(n).unwrap());
        assert_eq!((x.dtype(), x.shape()), (y.dtype(), y.shape()), "{n}");
    }
    let b = model("resnet18_w4", 8);
    let r = load_safetensors(&*b, &path, true).unwrap();
    assert!(r.is_clean());
    for ((n, x, _), (_, y, _)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        assert_eq!(x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), "{n}");
    }
    assert_eq!(counter(&*b).to_scalar().unwrap(), 3.0);
    if std::env::var("SPARK_NN_EXPORT_DIR").is_err() {
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn load_reports_missing_unexpected_and_misshaped_keys_by_name() {
    // A ResNet-18 file into a Bottleneck ResNet: names overlap partly, shapes differ.
    let m = model("resnet50_w4", 1);
    let before = m.named_parameters()[0].1.to_vec_f64().unwrap();
    let err = load_safetensors(&*m, data("resnet18_w4.safetensors"), true).unwrap_err().to_string();
    assert!(err.contains("resnet18_w4.safetensors"), "{err}");
    assert!(err.contains("missing keys") && err.contains("layer1.0.conv3.weight"), "{err}");
    assert!(err.contains("unexpected keys") && err.contains("layer1.1.conv1.weight"), "{err}");
    assert!(err.contains("size mismatch for layer1.0.conv1.weight"), "{err}");
    assert_eq!(m.named_parameters()[0].1.to_vec_f64().unwrap(), before, "strict failure writes nothing");

    let r = load_safetensors(&*m, data("resnet18_w4.safetensors"), false).unwrap();
    assert!(r.missing.contains(&"layer1.0.conv3.weight".to_string()));
    assert!(r.unexpected.contains(&"layer1.1.bn2.running_var".to_string()));
    let mm = r.mismatched.iter().find(|s| s.name == "layer1.0.conv1.weight").unwrap();
    assert_eq!((mm.expected.clone(), mm.found.clone()), (vec![4, 4, 1, 1], vec![4, 4, 3, 3]));
    assert!(r.loaded.contains(&"conv1.weight".to_string()), "matching keys are loaded");
    let mut m = m;
    m.eval();
    let conv1 = m.named_parameters()[0].1.to_vec_f64().unwrap();
    assert_ne!(conv1, before);
}

#[test]
fn truncated_or_corrupt_files_are_clear_errors() {
    let m = model("resnet18_w4", 1);
    let bytes = std::fs::read(data("resnet18_w4.safetensors")).unwrap();
    let dir = std::env::temp_dir();
    let cut = dir.join(format!("spark_nn_truncated_{}.safetensors", std::process::id()));
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_safetensors(&*m, &cut, false).unwrap_err().to_string();
    assert!(e.contains("spark_nn_truncated") && e.contains("corrupt or truncated"), "{e}");
    let junk = dir.join(format!("spark_nn_junk_{}.safetensors", std::process::id()));
    std::fs::write(&junk, b"definitely not a safetensors file").unwrap();
    let e = load_safetensors(&*m, &junk, false).unwrap_err().to_string();
    assert!(e.contains("spark_nn_junk"), "{e}");
    let e = load_safetensors(&*m, dir.join("spark_nn_no_such_file.safetensors"), false).unwrap_err().to_string();
    assert!(e.contains("spark_nn_no_such_file"), "{e}");
    std::fs::remove_file(cut).unwrap();
    std::fs::remove_file(junk).unwrap();
}

/// Official key -> timm key (written independently of the loader's reverse map).
fn to_timm(k: &str) -> String {
    let p: Vec<&str> = k.split('.').collect();
    if k.starts_with("downsample_layers.0.") {
        format!("stem.{}", p[2..].join("."))
    } else if k.starts_with("downsample_layers.") {
        format!("stages.{}.downsample.{}", p[1], p[2..].join("."))
    } else if k.starts_with("stages.") {
        let rest = p[3..]
            .join(".")
            .replace("dwconv.", "conv_dw.")
            .replace("pwconv1.", "mlp.fc1.")
            .replace("pwconv2.", "mlp.fc2.")
            .replace("grn.gamma", "mlp.grn.weight")
            .replace("grn.beta", "mlp.grn.bias");
        format!("stages.{}.blocks.{}.{rest}", p[1], p[2])
    } else if let Some(r) = k.strip_prefix("head.") {
        format!("head.fc.{r}")
    } else {
        format!("head.{k}")
    }
}

#[test]
fn timm_convnext_v2_names_and_grn_shapes_load() {
    // timm stores GRN as mlp.grn.{weight,bias} of shape [C]; the official repo as [1, 1, 1, C].
    let bytes = std::fs::read(data("convnextv2_w8.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let shape = if k.contains(".grn.") { vec![v.shape()[3]] } else { v.shape().to_vec() };
            (to_timm(&k), shape, v.data().to_vec(), v.dtype())
        })
        .collect();
    assert!(renamed.iter().any(|r| r.0 == "stages.1.blocks.0.mlp.grn.weight" && r.1 == vec![64]));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = renamed
        .iter()
        .map(|(k, s, d, dt)| (k.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap()))
        .collect();
    let path = std::env::temp_dir().join(format!("spark_nn_v2_timm_{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, &None, &path).unwrap();
    let mut m = model("convnextv2_w8", 1);
    let r = load_safetensors(&*m, &path, true).unwrap();
    assert!(r.remapped.contains(&("stages.1.blocks.0.mlp.grn.weight".into(), "stages.1.0.grn.gamma".into())));
    m.eval();
    let io = io("convnextv2_w8");
    let y = m.forward(get(&io, "input"), &mut Ctx::new(0)).unwrap();
    spark_engine::testing::assert_tensor_close("v2 timm", &y, get(&io, "output_eval"), 1e-4, 1e-4);
    std::fs::remove_file(path).unwrap();
}

/// A state dict with the official SparK model's deprecated buffers (`imn_m`, `imn_s`,
/// `norm_black`, which no model here has) loads strictly: they are reported and skipped, every
/// other key still checked (an unknown key or a missing one still fails).
#[test]
fn deprecated_official_buffers_are_skipped_by_a_strict_load() {
    use safetensors::tensor::TensorView;
    let a = model("resnet18_w4", 3);
    let dir = std::env::temp_dir();
    let write = |name: &str, extra: &[(&str, Vec<usize>)], drop: Option<&str>| {
        let mut entries: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = a
            .state_dict()
            .into_iter()
            .filter(|(n, _, _)| Some(n.as_str()) != drop)
            .map(|(n, t, _)| {
                let (dt, bytes) = if n.ends_with("num_batches_tracked") {
                    (safetensors::Dtype::I64, 0i64.to_le_bytes().to_vec())
                } else {
                    (safetensors::Dtype::F32, t.to_vec::<f32>().unwrap().iter().flat_map(|x| x.to_le_bytes()).collect())
                };
                (n, t.shape(), bytes, dt)
            })
            .collect();
        for (n, shape) in extra {
            let bytes = vec![0u8; 4 * shape.iter().product::<usize>()];
            entries.push((n.to_string(), shape.clone(), bytes, safetensors::Dtype::F32));
        }
        let views: Vec<(String, TensorView<'_>)> =
            entries.iter().map(|(n, s, d, dt)| (n.clone(), TensorView::new(*dt, s.clone(), d).unwrap())).collect();
        let path = dir.join(format!("spark_nn_deprecated_{name}_{}.safetensors", std::process::id()));
        safetensors::serialize_to_file(views, &None, &path).unwrap();
        path
    };
    let official = [("imn_m", vec![1, 3, 1, 1]), ("imn_s", vec![1, 3, 1, 1]), ("norm_black", vec![1, 3, 32, 32])];
    let path = write("official", &official, None);
    let b = model("resnet18_w4", 4);
    let r = load_safetensors(&*b, &path, true).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.deprecated, ["imn_m", "imn_s", "norm_black"]);
    assert!(r.unexpected.is_empty());
    assert_eq!(r.loaded.len(), a.state_dict().len());
    for ((n, x, _), (_, y, _)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        if !n.ends_with("num_batches_tracked") {
            assert_eq!(x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), "{n}");
        }
    }
    // Non-strict reports them the same way.
    let r = load_safetensors(&*b, &path, false).unwrap();
    assert_eq!(r.deprecated.len(), 3);

    // Anything else is still strict: an unknown key beside the deprecated ones...
    let mut extra = official.to_vec();
    extra.push(("imn_x", vec![1]));
    let bad = write("unknown", &extra, None);
    let e = load_safetensors(&*b, &bad, true).unwrap_err().to_string();
    assert!(e.contains("unexpected keys: imn_x") && !e.contains("imn_m"), "{e}");
    // ...or a missing one.
    let short = write("missing", &official, Some("fc.bias"));
    let e = load_safetensors(&*b, &short, true).unwrap_err().to_string();
    assert!(e.contains("missing keys: fc.bias"), "{e}");
    for p in [path, bad, short] {
        std::fs::remove_file(p).unwrap();
    }
}
