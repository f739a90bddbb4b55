//! `spark reconstruct`: the SparK picture from a checkpoint. For a few images: the original,
//! the masked input the encoder sees, and the reconstruction with the visible patches pasted
//! back (SPARK.md section 6: prediction de-normalised with each patch's own mean and std).

use crate::checkpoint;
use crate::common::{setup_device, setup_precision, setup_threads, CommonOpts};
use crate::error::{CliError, CliResult, Context};
use crate::output::{ensure_not_input, write_atomic};
use clap::Args;
use image::{Rgb, RgbImage};
use spark::data::{Dataset, Loader, LoaderConfig, Normalize, Transform};
use spark::{EncoderMode, SparK};
use spark_engine::{no_grad, Rng};
use spark_nn::Module;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct ReconstructArgs {
    /// A checkpoint written by `spark pretrain`.
    #[arg(long, short = 'c', default_value = "runs/pretrain/last.safetensors")]
    pub checkpoint: PathBuf,
    /// Images to reconstruct: a folder, an IDX file, or `builtin:val`.
    #[arg(long, default_value = "builtin:val")]
    pub data: String,
    /// Number of images (rows of the grid).
    #[arg(long, short = 'n', default_value_t = 6)]
    pub images: usize,
    /// Output PNG.
    #[arg(long, short = 'o', default_value = "reconstruction.png")]
    pub out: PathBuf,
    /// Seed of the random masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: ReconstructArgs, common: CommonOpts) -> CliResult<()> {
    setup_threads(common.threads)?;
    setup_device(common.device.as_deref().unwrap_or("cpu"))?;
    setup_precision(&common)?;
    ensure_not_input(&a.out, "-o", &[("--checkpoint", &a.checkpoint), ("--data", Path::new(&a.data))])?;
    let ck = checkpoint::load(&a.checkpoint)?;
    let mut model = SparK::new(ck.spark.clone(), &mut Rng::new(0))?;
    checkpoint::load_into(&model, &ck.model, &a.checkpoint)?;
    model.eval();
    let ds = Dataset::open(&a.data).map_err(|e| CliError::runtime(e.to_string()))?;
    write_grid(&model, &ds, a.images, a.seed, common.workers.unwrap_or(2), &a.out)?;
    outln!(
        "wrote {} ({} rows: original | masked input | reconstruction; checkpoint step {})",
        a.out.display(),
        a.images.min(ds.len()),
        ck.step
    );
    Ok(())
}

/// Writes the grid for `n` images spread evenly over `ds` (eval transform at the model's size).
pub fn write_grid(model: &SparK, ds: &Dataset, n: usize, seed: u64, workers: usize, path: &Path) -> CliResult<()> {
    let n = n.min(ds.len()).max(1);
    let pick: Vec<_> = (0..n).map(|i| ds.samples[i * ds.len() / n].clone()).collect();
    let sub = Arc::new(Dataset { samples: pick, ..ds.clone() });
    let size = model.config.input_size;
    let loader = Loader::new(sub, Transform::eval(size), LoaderConfig::eval(n, workers))?;
    let batch = loader.epoch(0).next().ok_or_else(|| CliError::runtime("no image to reconstruct"))??;
    let b = batch.labels.len();
    if b == 0 {
        return Err(CliError::runtime("every selected image was unreadable"));
    }
    let mut rng = Rng::new(seed);
    let mask = model.sample_mask(b, &mut rng)?;
    let rec = no_grad(|| model.reconstruct(&batch.images, &mask, EncoderMode::Sparse, &mut rng))?;
    let x = batch.images.to_vec_f32()?;
    let r = rec.to_vec_f32()?;
    let p = model.patch;
    let f = size / p;
    let norm = Normalize::default();
    let gap = 4u32;
    let s = size as u32;
    let mut grid = RgbImage::from_pixel(3 * s + 4 * gap, b as u32 * (s + gap) + gap, Rgb([255, 255, 255]));
    let plane = size * size;
    for bi in 0..b {
        let xb = &x[bi * 3 * plane..(bi + 1) * 3 * plane];
        let rb = &r[bi * 3 * plane..(bi + 1) * 3 * plane];
        for cy in 0..f {
            for cx in 0..f {
                let active = mask.active[bi * f * f + cy * f + cx];
                // Per-patch statistics of the input (unbiased variance + 1e-6, as the loss).
                let mut vals = Vec::with_capacity(3 * p * p);
                for c in 0..3 {
                    for y in cy * p..(cy + 1) * p {
                        vals.extend_from_slice(&xb[c * plane + y * size + cx * p..c * plane + y * size + (cx + 1) * p]);
                    }
                }
                let nv = vals.len() as f64;
                let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / nv;
                let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (nv - 1.0);
                let std = (var + 1e-6).sqrt();
                for y in cy * p..(cy + 1) * p {
                    for xx in cx * p..(cx + 1) * p {
                        // px[column][channel]: original, masked input, reconstruction.
                        let mut px = [[0u8; 3]; 3];
                        let to_u8 = |c: usize, v: f32| (norm.denormalize(c, v).clamp(0.0, 1.0) * 255.0).round() as u8;
                        #[allow(clippy::needless_range_loop)] // c indexes the planes of xb / rb too
                        for c in 0..3 {
                            let i = c * plane + y * size + xx;
                            let orig = xb[i];
                            let masked = if active { orig } else { 0.0 };
                            let recon = if active { orig } else { (rb[i] as f64 * std + mean) as f32 };
                            px[0][c] = to_u8(c, orig);
                            px[1][c] = to_u8(c, masked);
                            px[2][c] = to_u8(c, recon);
                        }
                        let oy = gap + bi as u32 * (s + gap) + y as u32;
                        for (k, pxk) in px.iter().enumerate() {
                            grid.put_pixel(gap + k as u32 * (s + gap) + xx as u32, oy, Rgb(*pxk));
                        }
                    }
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        }
    }
    // Encoded in memory, then written atomically: a failed write leaves no truncated picture.
    let format = image::ImageFormat::from_path(path)
        .map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display())).hint("use a .png file name"))?;
    let mut bytes = Vec::new();
    grid.write_to(&mut std::io::Cursor::new(&mut bytes), format).ctx(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}
