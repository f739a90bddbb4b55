//! A backbone as a library: build it, load weights, and run it sparse on a SparK mask (only the
//! visible patches are computed), printing each scale's features and a checksum.
//!
//! `cargo run --release -p spark --example sparse_features [-- BACKBONE WEIGHTS.safetensors]`
//!
//! With a weights file (PyTorch names, e.g. a torchvision / timm ResNet or an exported SparK
//! encoder) the named backbone is built at full width and loaded strictly; without one a narrow
//! ResNet-18's fresh weights are saved to a temporary file and loaded back.

use spark::mask::PatchMask;
use spark_engine::{DType, Device, Rng, Tensor};
use spark_nn::{build_backbone, load_safetensors, save_safetensors, BackboneConfig, Ctx, FeatureMap};
use spark_nn::{SparseContext, SparseTensor};
use std::path::PathBuf;

fn main() -> spark_engine::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, weights) = match args.as_slice() {
        [] => ("resnet18".to_string(), None),
        [name, path] => (name.clone(), Some(PathBuf::from(path))),
        _ => {
            eprintln!("usage: sparse_features [BACKBONE WEIGHTS.safetensors]");
            std::process::exit(2);
        }
    };
    // The encoder has no head, as in SparK; without weights, a narrow model keeps this fast.
    let cfg = match weights {
        Some(_) => BackboneConfig::headless(),
        None => BackboneConfig { width_mult: 0.25, ..BackboneConfig::headless() },
    };
    let mut rng = Rng::new(0);
    let mut model = build_backbone(&name, &cfg, &mut rng)?;

    let (path, temporary) = match weights {
        Some(p) => (p, false),
        None => {
            let p = std::env::temp_dir().join(format!("sparse_features_{}.safetensors", std::process::id()));
            save_safetensors(&*build_backbone(&name, &cfg, &mut Rng::new(1))?, &p)?;
            (p, true)
        }
    };
    // Strict: every key must match (known-deprecated SparK buffers are skipped and reported).
    let report = load_safetensors(&*model, &path, true)?;
    println!(
        "{name}: loaded {} tensors from {}{}",
        report.loaded.len(),
        path.display(),
        if report.deprecated.is_empty() { String::new() } else { format!(" (skipped {:?})", report.deprecated) }
    );
    if temporary {
        std::fs::remove_file(&path).ok();
    }
    model.eval();

    // SparK's mask: 60% of the 32x32 patches hidden, the rest visible, per image.
    let (batch, size) = (2, 224);
    let (fh, fw) = (size / 32, size / 32);
    let mask = PatchMask::sample(batch, fh, fw, 0.6, &mut rng)?;
    let mut sc = SparseContext::hierarchical(&mask.active, batch, fh, fw)?;
    let active = sc.active_set(batch, size, size)?;
    let image = Tensor::randn(&[batch, 3, size, size], 0.0, 1.0, &mut rng, DType::F32, Device::Cpu)?;
    let x = SparseTensor::from_dense(&image, active)?;
    let patches = batch * mask.cells();
    println!("mask: {} of {patches} patches visible, {} active pixels", patches - mask.masked_count(), x.len());

    let feats = spark_engine::no_grad(|| model.forward_features(FeatureMap::Sparse(x), &mut Ctx::with_sparse(0, sc)))?;
    let mut total = 0.0;
    for (i, f) in feats.iter().enumerate() {
        let FeatureMap::Sparse(s) = f else { unreachable!("a sparse input stays sparse") };
        let sum: f64 = s.features.to_vec_f64()?.iter().sum();
        total += sum;
        println!(
            "scale {i}: features {:?} (active sites x channels) of dense {:?}, sum {sum:.6}",
            s.features.dims(),
            s.dims_dense()
        );
    }
    println!("checksum {total:.6}");
    Ok(())
}
