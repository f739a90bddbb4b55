//! Sparse vs dense-masked convolution timings, as plain functions so that the criterion bench,
//! the `sparse_table` example and the CLI's `spark bench sparse` print the same table.
//!
//! "Dense masked" is SparK's simulation with the engine's own dense conv: `conv2d` on the
//! zero-filled input, then the output multiplied by the output mask (forward), and the
//! backward of that through both ops. "Sparse" is `conv_features` over a prebuilt kernel map
//! (a forward pass shares each map across many layers; its build time is its own column).

use crate::{conv_features, ActiveSet, ConvAlgo, KernelGeom, KernelMap};
use spark_engine::{no_grad, Conv2dParams, DType, Device, Result, Rng, Tensor};
use std::sync::Arc;
use std::time::Instant;

/// One benchmarked conv layer.
#[derive(Clone, Debug)]
pub struct LayerShape {
    pub name: &'static str,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    /// Input height = width.
    pub hw: usize,
}

/// The issue's shapes: ResNet-50's 3x3 64->64 @56, 3x3 256->256 @14, 1x1 256->64 @56 and
/// ConvNeXt's depthwise 7x7 96ch @56; plus ResNet's 7x7/s2 stem on the masked 224 image.
pub fn resnet_convnext_shapes() -> Vec<LayerShape> {
    vec![
        LayerShape {
            name: "conv3x3 64->64 @56",
            cin: 64,
            cout: 64,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
            hw: 56,
        },
        LayerShape {
            name: "conv3x3 256->256 @14",
            cin: 256,
            cout: 256,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
            hw: 14,
        },
        LayerShape {
            name: "conv1x1 256->64 @56",
            cin: 256,
            cout: 64,
            kernel: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            hw: 56,
        },
        LayerShape {
            name: "stem7x7/s2 3->64 @224",
            cin: 3,
            cout: 64,
            kernel: 7,
            stride: 2,
            padding: 3,
            groups: 1,
            hw: 224,
        },
        LayerShape { name: "dw7x7 96ch @56", cin: 96, cout: 96, kernel: 7, stride: 1, padding: 3, groups: 96, hw: 56 },
    ]
}

/// Minimum milliseconds (over interleaved rounds) of each measured quantity for one (layer, mask ratio).
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub layer: &'static str,
    pub ratio: f64,
    /// Active sites / all sites.
    pub active_fraction: f64,
    pub kmap_ms: f64,
    pub sparse_fwd_ms: f64,
    pub sparse_fwd_bwd_ms: f64,
    /// Each groups == 1 algorithm forced, fwd+bwd (`None` for depthwise): the measurement
    /// behind `ConvAlgo::Auto`.
    pub per_offset_fwd_bwd_ms: Option<f64>,
    pub implicit_fwd_bwd_ms: Option<f64>,
    pub dense_fwd_ms: f64,
    pub dense_fwd_bwd_ms: f64,
}

impl BenchRow {
    pub fn speedup_fwd(&self) -> f64 {
        self.dense_fwd_ms / self.sparse_fwd_ms
    }
    pub fn speedup_fwd_bwd(&self) -> f64 {
        self.dense_fwd_bwd_ms / self.sparse_fwd_bwd_ms
    }
}

/// Minimum milliseconds of each closure over `reps` rounds, the closures interleaved within a
/// round so that load from other processes hits all of them alike (the minimum is the least
/// disturbed run on a shared machine).
fn min_ms_interleaved(reps: usize, fs: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<Vec<f64>> {
    for f in fs.iter_mut() {
        f()?; // warm-up (allocator, caches, lazily built pairs)
    }
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..reps.max(1) {
        for (i, f) in fs.iter_mut().enumerate() {
            let s = Instant::now();
            f()?;
            best[i] = best[i].min(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(best)
}

/// SparK-style mask on a 7x7 patch grid (exactly round(49 * (1 - ratio)) kept per image),
/// upsampled to `hw` (which must be a multiple of 7).
pub fn spark_mask(rng: &mut Rng, batch: usize, hw: usize, ratio: f64) -> Result<ActiveSet> {
    ActiveSet::from_patch_mask(&spark_patch(rng, batch, ratio), batch, 7, 7, hw / 7)
}

/// The `[batch, 7, 7]` patch mask behind `spark_mask`.
pub fn spark_patch(rng: &mut Rng, batch: usize, ratio: f64) -> Vec<bool> {
    let f = 7;
    let keep = ((f * f) as f64 * (1.0 - ratio)).round() as usize;
    let mut patch = Vec::with_capacity(batch * f * f);
    for _ in 0..batch {
        let mut img: Vec<bool> = (0..f * f).map(|i| i < keep).collect();
        rng.shuffle(&mut img);
        patch.extend(img);
    }
    patch
}

/// Times one layer at one mask ratio (f32, CPU).
pub fn bench_layer(shape: &LayerShape, batch: usize, ratio: f64, reps: usize, rng: &mut Rng) -> Result<BenchRow> {
    let (dt, dev) = (DType::F32, Device::Cpu);
    let patch = spark_patch(rng, batch, ratio);
    let set = Arc::new(ActiveSet::from_patch_mask(&patch, batch, 7, 7, shape.hw / 7)?);
    let params = Conv2dParams::new(shape.stride, shape.padding).with_groups(shape.groups);
    let geom = KernelGeom::conv([shape.kernel; 2], &params);
    // Stride 1: submanifold (output sites = input sites); strided: the patch mask at the output
    // resolution, as SparK's hierarchical masks.
    let (h, wd) = (shape.hw, shape.hw);
    let (oh, ow) = geom.out_size("bench_layer", h, wd)?;
    let out_set = if shape.stride == 1 {
        set.clone()
    } else {
        Arc::new(ActiveSet::from_patch_mask(&patch, batch, 7, 7, oh / 7)?)
    };
    let map = Arc::new(KernelMap::build(&set, &out_set, geom)?);
    let (n, n_out) = (set.len(), out_set.len());
    let cig = shape.cin / shape.groups;
    let w = Tensor::randn(&[shape.cout, cig, shape.kernel, shape.kernel], 0.0, 0.05, rng, dt, dev)?.to_variable();
    let b = Tensor::randn(&[shape.cout], 0.0, 0.05, rng, dt, dev)?.to_variable();
    let xs = Tensor::randn(&[n, shape.cin], 0.0, 1.0, rng, dt, dev)?.to_variable();
    let gs = Tensor::randn(&[n_out, shape.cout], 0.0, 1.0, rng, dt, dev)?;
    let sparse = |algo: ConvAlgo, bwd: bool| -> Result<()> {
        if bwd {
            conv_features(&xs, &w, Some(&b), &map, shape.groups, algo)?.backward_with(&gs).map(|_| ())
        } else {
            no_grad(|| conv_features(&xs, &w, Some(&b), &map, shape.groups, algo).map(|_| ()))
        }
    };
    let (mask_in, mask) = (set.mask_tensor(dt)?, out_set.mask_tensor(dt)?);
    let xd = Tensor::randn(&[batch, shape.cin, h, wd], 0.0, 1.0, rng, dt, dev)?.mul(&mask_in)?.detach().to_variable();
    let gd = Tensor::randn(&[batch, shape.cout, oh, ow], 0.0, 1.0, rng, dt, dev)?;
    let dense = |bwd: bool| -> Result<()> {
        if bwd {
            xd.conv2d(&w, Some(&b), params)?.mul(&mask)?.backward_with(&gd).map(|_| ())
        } else {
            no_grad(|| xd.conv2d(&w, Some(&b), params)?.mul(&mask).map(|_| ()))
        }
    };
    let mut kmap = || KernelMap::build(&set, &out_set, geom).map(|_| ());
    let (mut s_f, mut s_fb) = (|| sparse(ConvAlgo::Auto, false), || sparse(ConvAlgo::Auto, true));
    let mut p_fb = || sparse(ConvAlgo::PerOffset, true);
    let mut i_fb = || sparse(ConvAlgo::ImplicitGemm, true);
    let (mut d_f, mut d_fb) = (|| dense(false), || dense(true));
    let mut fs: Vec<&mut dyn FnMut() -> Result<()>> = vec![&mut kmap, &mut s_f, &mut s_fb, &mut d_f, &mut d_fb];
    if shape.groups == 1 {
        fs.push(&mut p_fb);
        fs.push(&mut i_fb);
    }
    let t = min_ms_interleaved(reps, &mut fs)?;
    let (kmap_ms, sparse_fwd_ms, sparse_fwd_bwd_ms, dense_fwd_ms, dense_fwd_bwd_ms) = (t[0], t[1], t[2], t[3], t[4]);
    let (per_offset_fwd_bwd_ms, implicit_fwd_bwd_ms) = (t.get(5).copied(), t.get(6).copied());
    Ok(BenchRow {
        layer: shape.name,
        ratio,
        active_fraction: n as f64 / (batch * h * wd) as f64,
        kmap_ms,
        sparse_fwd_ms,
        sparse_fwd_bwd_ms,
        per_offset_fwd_bwd_ms,
        implicit_fwd_bwd_ms,
        dense_fwd_ms,
        dense_fwd_bwd_ms,
    })
}

/// Every (shape, ratio) row: the issue's table (batch 8, ratios 0.0..0.9 in the callers).
pub fn sparse_vs_dense_table(
    shapes: &[LayerShape],
    batch: usize,
    ratios: &[f64],
    reps: usize,
) -> Result<Vec<BenchRow>> {
    let mut rng = Rng::new(0x5a_a7_5e);
    let mut rows = Vec::new();
    for s in shapes {
        for &r in ratios {
            rows.push(bench_layer(s, batch, r, reps, &mut rng)?);
        }
    }
    Ok(rows)
}

/// The ratios of the issue: 0.0 to 0.9 in steps of 0.1.
pub fn default_ratios() -> Vec<f64> {
    (0..10).map(|i| i as f64 / 10.0).collect()
}

/// Markdown table of the rows, plus a text plot of sparse/dense fwd+bwd time against the ratio.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "| layer | mask ratio | active | kmap ms | sparse fwd ms | dense fwd ms | fwd speed-up | sparse fwd+bwd ms | \
         per-offset fwd+bwd ms | implicit fwd+bwd ms | dense fwd+bwd ms | fwd+bwd speed-up |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2} | {} | {} | {:.2} | {:.2}x |\n",
            r.layer,
            r.ratio,
            r.active_fraction,
            r.kmap_ms,
            r.sparse_fwd_ms,
            r.dense_fwd_ms,
            r.speedup_fwd(),
            r.sparse_fwd_bwd_ms,
            r.per_offset_fwd_bwd_ms.map_or("-".to_string(), |v| format!("{v:.2}")),
            r.implicit_fwd_bwd_ms.map_or("-".to_string(), |v| format!("{v:.2}")),
            r.dense_fwd_bwd_ms,
            r.speedup_fwd_bwd(),
        );
    }
    s += "\nsparse / dense fwd+bwd time (each # = 0.05; | marks 1.0):\n\n```\n";
    for r in rows {
        let q = r.sparse_fwd_bwd_ms / r.dense_fwd_bwd_ms;
        let bar: String = (0..((q / 0.05).round() as usize).min(40)).map(|i| if i == 19 { '|' } else { '#' }).collect();
        s += &format!("{:<22} {:.1} {:>5.2} {bar}\n", r.layer, r.ratio, q);
    }
    s += "```\n";
    s
}
