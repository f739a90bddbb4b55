//! `spark info`: a model summary: the SparK contract values (patch size, feature channels, mask
//! grid, kept cells, densify projections, decoder widths), parameters per part and per encoder
//! stage, and multiply-accumulate counts (the "FLOPs" of the SparK / timm tables).

use super::pretrain::PretrainConfig;
use crate::error::{CliError, CliResult};
use clap::Args;
use spark::zoo::{self, ZooModel};
use spark::SparK;
use spark_nn::Module;
use std::collections::BTreeMap;

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// A model name from `spark models` (mmpretrain's names, e.g. spark_sparse-resnet50_800e_in1k);
    /// without it, the model of --preset / --backbone.
    #[arg(value_name = "NAME", conflicts_with_all = ["preset", "backbone", "width_mult", "decoder_width", "mask_ratio"])]
    pub name: Option<String>,
    /// Settings preset whose model to describe (quick, official, mmpretrain).
    #[arg(long, default_value = "quick")]
    pub preset: String,
    #[arg(long)]
    pub backbone: Option<String>,
    #[arg(long)]
    pub width_mult: Option<f64>,
    #[arg(long)]
    pub input_size: Option<usize>,
    #[arg(long)]
    pub decoder_width: Option<usize>,
    #[arg(long)]
    pub mask_ratio: Option<f64>,
}

/// Output side of a feature map of stride `s` at input `h`.
fn at(h: usize, s: usize) -> usize {
    h.div_ceil(s)
}

/// Multiply-accumulates of one weight, from its name and shape (torchvision ResNet / official
/// ConvNeXt / SparK decoder naming), at input size `h` with mask grid `f = h / 32`.
pub fn weight_macs(name: &str, shape: &[usize], h: usize) -> u64 {
    if !name.ends_with("weight") || shape.len() < 2 {
        return 0;
    }
    let per_pos: u64 = shape.iter().map(|&d| d as u64).product();
    // Output resolution (stride relative to the input) of the layer owning this weight.
    let stride = if let Some(rest) = name.strip_prefix("sparse_encoder.sp_cnn.") {
        return weight_macs(rest, shape, h);
    } else if name == "conv1.weight" {
        2
    } else if let Some(rest) = name.strip_prefix("layer") {
        let stage: u32 = rest[..1].parse().unwrap_or(1);
        let first = rest[1..].starts_with(".0.");
        let out = 1usize << (stage + 1);
        // v1.5 bottleneck: conv1 of a stage's first block still runs at the previous resolution.
        if first && stage > 1 && rest.contains(".conv1.") && shape[2] == 1 {
            out / 2
        } else {
            out
        }
    } else if let Some(rest) = name.strip_prefix("downsample_layers.") {
        let s: u32 = rest[..1].parse().unwrap_or(0);
        1 << (s + 2)
    } else if let Some(rest) = name.strip_prefix("stages.") {
        let s: u32 = rest[..1].parse().unwrap_or(0);
        1 << (s + 2)
    } else if name.starts_with("fc.") || name.starts_with("head.") {
        return if shape.len() == 2 { per_pos } else { 0 };
    } else if let Some(rest) = name.strip_prefix("dense_decoder.dec.") {
        let i: u32 = rest[..1].parse().unwrap_or(0);
        // Block i upsamples 32/2^i -> 32/2^(i+1).
        32 >> (i + 1)
    } else if name.starts_with("dense_decoder.proj") {
        1
    } else if let Some(rest) = name.strip_prefix("densify_projs.") {
        let i: u32 = rest[..1].parse().unwrap_or(0);
        32 >> i
    } else {
        return 0;
    };
    if shape.len() == 1 {
        return 0;
    }
    let hw = at(h, stride.max(1)) as u64;
    if name.contains("up_sample") {
        // ConvTranspose2d [Cin, Cout, k, k]: every input position scatters Cin*Cout*k*k MACs.
        let hin = at(h, (stride * 2).max(1)) as u64;
        return per_pos * hin * hin;
    }
    per_pos * hw * hw
}

/// Multiply-accumulates of a zoo model's backbone at `h` px: the page's "FLOPs" (for the SparK
/// pretraining models the page counts the backbone alone, SPARK.md 8.3).
pub fn zoo_macs(model: &ZooModel, h: usize) -> u64 {
    let mut total = 0u64;
    model.backbone().visit("", &mut |n, t, _| total += weight_macs(n, t.dims(), h));
    total
}

/// The zoo model `name`, shape only; an unknown name is a usage error listing the valid ones.
pub fn zoo_model(name: &str) -> CliResult<(&'static zoo::ZooEntry, ZooModel)> {
    let e = zoo::entry(name).map_err(|_| {
        CliError::usage(format!("unknown model name '{name}'"))
            .hint(format!("valid names: {} (see `spark models`)", zoo::names().join(", ")))
    })?;
    Ok((e, zoo::build(name).map_err(|e| CliError::usage(e.to_string()))?))
}

fn run_zoo(name: &str, input_size: Option<usize>) -> CliResult<()> {
    let (e, model) = zoo_model(name)?;
    let h = input_size.unwrap_or(224);
    let params = model.num_params();
    match e.spark_config() {
        Some(mut sc) => {
            sc.input_size = h;
            let label = format!("{name} ({}, mmpretrain SparK)", e.task);
            describe_spark(sc, &label)?;
        }
        None => {
            let b = model.backbone();
            outln!("{name} ({}): {} with a {}-class head, input {h}x{h}", e.task, e.backbone(), b.num_classes());
            outln!();
            outln!("Layers (parameters)");
            let mut tops: Vec<(String, usize)> = Vec::new();
            b.visit("", &mut |n, t, k| {
                if k != spark_nn::Kind::Param {
                    return;
                }
                let mut it = n.split('.');
                let top = match it.next() {
                    Some(s @ ("stages" | "downsample_layers")) => format!("{s}.{}", it.next().unwrap_or("")),
                    Some(s) => s.to_string(),
                    None => String::new(),
                };
                match tops.last_mut() {
                    Some((name, cnt)) if *name == top => *cnt += t.numel(),
                    _ => tops.push((top, t.numel())),
                }
            });
            for (n, c) in &tops {
                outln!("  {n:<22} {c:>12}");
            }
        }
    }
    let macs = zoo_macs(&model, h) as f64 / 1e9;
    outln!();
    outln!("{name}");
    outln!("  config                 {}", e.config);
    outln!("  parameters             {params} ({:.2}M; page {:.2}M)", params as f64 / 1e6, e.page_params_m);
    let what = if e.task == zoo::Task::Pretrain { "backbone GMACs (FLOPs)" } else { "GMACs (FLOPs)" };
    if h == 224 {
        outln!("  {what:<22} {macs:.3} at 224 px (page {:.2}G)", e.page_flops_g);
    } else {
        outln!("  {what:<22} {macs:.3} at {h} px");
    }
    if let (Some(t1), Some(t5)) = (e.top1, e.top5) {
        outln!("  ImageNet-1k top-1/5    {t1:.2} / {t5:.2} (page)");
    }
    if e.name == "resnet50_spark-pre_300e_in1k" {
        outln!(
            "  note: the page's 23.52M / 1.31G match no ResNet-50 (with fc: 25,557,032 / ~4.1G; without: \
             23,508,032); this is ResNet-50 with its fc, as torchvision counts it."
        );
    }
    Ok(())
}

pub fn run(a: InfoArgs) -> CliResult<()> {
    if let Some(name) = &a.name {
        return run_zoo(name, a.input_size);
    }
    let mut c = PretrainConfig::preset(&a.preset)?;
    if let Some(b) = a.backbone {
        c.backbone = b;
    }
    if let Some(w) = a.width_mult {
        c.width_mult = w;
    }
    if let Some(s) = a.input_size {
        c.input_size = s;
    }
    if let Some(d) = a.decoder_width {
        c.decoder_width = d;
    }
    if let Some(m) = a.mask_ratio {
        c.mask_ratio = m;
    }
    if !spark_nn::BACKBONE_NAMES.contains(&c.backbone.as_str()) {
        return Err(CliError::usage(format!("unknown backbone '{}'", c.backbone))
            .hint(format!("valid names: {}", spark_nn::BACKBONE_NAMES.join(", "))));
    }
    let label = format!("preset {}", c.preset);
    describe_spark(c.spark_config(), &label)
}

/// The SparK contract values, parameters and GMACs of one SparK model.
fn describe_spark(sc: spark::SparkConfig, label: &str) -> CliResult<()> {
    let model = SparK::shape_only(sc.clone()).map_err(|e| CliError::usage(e.to_string()))?;
    let h = sc.input_size;
    let f = model.grid();
    let keep = spark::mask::len_keep(f, f, sc.mask_ratio);
    outln!("SparK model: {} (width x{}), input {h}x{h}, {label}", sc.backbone, sc.width_mult);
    outln!();
    outln!("SparK contract");
    outln!("  downsample ratio (mask patch)  {} px", model.patch);
    outln!("  feature channels (stride 4..32) {:?}", model.encoder.feature_channels());
    outln!("  mask grid                       {f}x{f} = {} cells", f * f);
    outln!(
        "  mask ratio {:.2}: kept          {keep} visible, {} masked per image (round-half-even)",
        sc.mask_ratio,
        f * f - keep
    );
    let dec: Vec<usize> = (0..6).map(|i| sc.decoder_width >> i).collect();
    outln!("  decoder widths                  {dec:?}");
    outln!("  densify norm                    {:?}", sc.densify_norm);
    // Parameters per part and per top-level encoder module.
    let mut parts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut stages: Vec<(String, usize)> = Vec::new();
    let mut macs: BTreeMap<&str, u64> = BTreeMap::new();
    let mut projs = Vec::new();
    model.visit("", &mut |n, t, k| {
        let part = if n.starts_with("sparse_encoder.") {
            "encoder"
        } else if n.starts_with("dense_decoder.") {
            "decoder"
        } else if n.starts_with("densify_projs.") {
            "densify projections"
        } else if n.starts_with("densify_norms.") {
            "densify norms"
        } else {
            "mask tokens"
        };
        if n.starts_with("densify_projs.") && n.ends_with("weight") {
            projs.push(format!("{}: {:?}", n, t.dims()));
        }
        if k == spark_nn::Kind::Param {
            *parts.entry(part).or_default() += t.numel();
            if let Some(rest) = n.strip_prefix("sparse_encoder.sp_cnn.") {
                let top = match rest.split('.').next() {
                    Some(s @ ("stages" | "downsample_layers")) => {
                        format!("{s}.{}", rest.split('.').nth(1).unwrap_or(""))
                    }
                    Some(s) => s.to_string(),
                    None => String::new(),
                };
                match stages.last_mut() {
                    Some((name, cnt)) if *name == top => *cnt += t.numel(),
                    _ => stages.push((top, t.numel())),
                }
            }
        }
        *macs.entry(part).or_default() += weight_macs(n, t.dims(), h);
    });
    outln!("  densify projections             {}", if projs.is_empty() { "none".into() } else { projs.join(", ") });
    outln!();
    outln!("Encoder layers (parameters)");
    for (name, n) in &stages {
        outln!("  {name:<22} {n:>12}");
    }
    outln!();
    outln!("{:<22} {:>12} {:>14}", "part", "parameters", "GMACs (dense)");
    let mut total = 0;
    for (p, n) in &parts {
        total += n;
        outln!("  {p:<20} {n:>12} {:>14.3}", *macs.get(p).unwrap_or(&0) as f64 / 1e9);
    }
    let all_macs: u64 = macs.values().sum();
    outln!("  {:<20} {total:>12} {:>14.3}", "total", all_macs as f64 / 1e9);
    let enc = *macs.get("encoder").unwrap_or(&0) as f64;
    outln!();
    outln!(
        "The sparse encoder computes only the visible {:.0}% of sites: about {:.3} GMACs per image.",
        100.0 * keep as f64 / (f * f) as f64,
        enc * keep as f64 / (f * f) as f64 / 1e9
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spark_engine::Rng;
    use spark_nn::{build_backbone, BackboneConfig};

    fn backbone_macs(name: &str, h: usize) -> f64 {
        let cfg = BackboneConfig { shape_only: true, ..BackboneConfig::default() };
        let m = build_backbone(name, &cfg, &mut Rng::new(0)).unwrap();
        let mut total = 0u64;
        m.visit("", &mut |n, t, _| total += weight_macs(n, t.dims(), h));
        total as f64 / 1e9
    }

    #[test]
    fn macs_match_published_counts() {
        // torchvision / timm: ResNet-50 4.09 GMACs, ResNet-18 1.81, ConvNeXt-T 4.46 (incl. the head).
        let r50 = backbone_macs("resnet50", 224);
        assert!((r50 - 4.09).abs() < 0.05, "resnet50 {r50}");
        let r18 = backbone_macs("resnet18", 224);
        assert!((r18 - 1.81).abs() < 0.03, "resnet18 {r18}");
        let cnx = backbone_macs("convnext_tiny", 224);
        assert!((cnx - 4.46).abs() < 0.06, "convnext_tiny {cnx}");
    }

    #[test]
    fn zoo_flops_match_the_page() {
        // mmpretrain's page (SPARK.md 8.3): FLOPs at 224 px within 1%. The pretraining models'
        // 4.10G / 4.47G are the backbone alone; ConvNeXt-V2-T's classifier is 4,469,631,744.
        for (name, page) in [
            ("spark_sparse-resnet50_800e_in1k", 4.10e9),
            ("spark_sparse-convnextv2-tiny_800e_in1k", 4.47e9),
            ("convnextv2-tiny_spark-pre_300e_in1k", 4_469_631_744.0),
        ] {
            let (_, m) = zoo_model(name).unwrap();
            let g = zoo_macs(&m, 224) as f64;
            assert!((g / page - 1.0).abs() < 0.01, "{name}: {g} vs {page}");
        }
        // The page's 1.31G for resnet50_spark-pre_300e_in1k matches no ResNet-50 (SPARK.md 8.3):
        // the real architecture is ~4.1 GMACs, like torchvision's.
        let (_, m) = zoo_model("resnet50_spark-pre_300e_in1k").unwrap();
        let g = zoo_macs(&m, 224) as f64 / 1e9;
        assert!((g - 4.1).abs() < 0.05, "{g}");
        assert!(zoo_model("resnet50").is_err());
    }
}
