//! Reconstruction pictures (SPARK.md section 6, the visualisation notebook): for each image a row
//! `original | masked input | reconstruction`, where the reconstruction is un-normalised with the
//! target's per-patch mean / std, composited with the visible patches, then ImageNet
//! de-normalised and clamped.

use crate::loss::{patch_target, patchify, unpatchify};
use crate::mask::PatchMask;
use crate::model::{EncoderMode, SparK};
use image::{Rgb, RgbImage};
use spark_engine::{no_grad, Error, Result, Rng, Tensor};
use std::path::Path;

const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const STD: [f64; 3] = [0.229, 0.224, 0.225];
/// Pixels between tiles.
const GAP: u32 = 2;

/// The three `[B,3,H,W]` images of the picture, still ImageNet-normalised.
pub struct Reconstruction {
    pub original: Tensor,
    pub masked: Tensor,
    /// Visible patches from the input, masked ones from the prediction.
    pub composite: Tensor,
}

/// Runs the model (as it is: call `model.eval()` first for the notebook's running-stat BN) and
/// builds the three images.
pub fn reconstruct(
    model: &SparK,
    x: &Tensor,
    mask: &PatchMask,
    mode: EncoderMode,
    rng: &mut Rng,
) -> Result<Reconstruction> {
    no_grad(|| {
        let x = x.detach();
        let rec = model.reconstruct(&x, mask, mode, rng)?;
        let p = model.patch;
        let tg = patch_target(&x, p)?;
        let rec_img = unpatchify(&patchify(&rec, p)?.mul(&tg.std)?.add(&tg.mean)?, p, 3, mask.fh, mask.fw)?;
        let m = mask.to_tensor(x.dims()[2], x.dims()[3], x.dtype())?;
        let masked = x.mul(&m)?;
        let composite = masked.add(&rec_img.mul(&m.rsub_scalar(1.0)?)?)?;
        Ok(Reconstruction { original: x, masked, composite })
    })
}

/// The grid picture: one row per image, three columns, `GAP` pixels of white between tiles.
pub fn grid_image(r: &Reconstruction) -> Result<RgbImage> {
    let d = r.original.dims().to_vec();
    if d.len() != 4 || d[1] != 3 {
        return Err(Error::Shape { op: "recon::grid_image", msg: format!("expected [B,3,H,W], got {d:?}") });
    }
    let (b, h, w) = (d[0], d[2], d[3]);
    let cols = [r.original.to_vec_f64()?, r.masked.to_vec_f64()?, r.composite.to_vec_f64()?];
    let (wi, hi) = (3 * w as u32 + 2 * GAP, b as u32 * h as u32 + (b as u32).saturating_sub(1) * GAP);
    let mut img = RgbImage::from_pixel(wi, hi, Rgb([255, 255, 255]));
    for (ci, data) in cols.iter().enumerate() {
        for bi in 0..b {
            for y in 0..h {
                for x in 0..w {
                    let mut px = [0u8; 3];
                    for (c, v) in px.iter_mut().enumerate() {
                        let z = data[((bi * 3 + c) * h + y) * w + x];
                        *v = ((z * STD[c] + MEAN[c]).clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                    let (ox, oy) = (ci as u32 * (w as u32 + GAP) + x as u32, bi as u32 * (h as u32 + GAP) + y as u32);
                    img.put_pixel(ox, oy, Rgb(px));
                }
            }
        }
    }
    Ok(img)
}

/// Reconstructs `x` under `mask` and writes the PNG grid to `path`.
pub fn save_reconstruction_png(
    model: &SparK,
    x: &Tensor,
    mask: &PatchMask,
    mode: EncoderMode,
    rng: &mut Rng,
    path: &Path,
) -> Result<()> {
    let img = grid_image(&reconstruct(model, x, mask, mode, rng)?)?;
    img.save(path).map_err(|e| Error::Msg(format!("{}: writing PNG: {e}", path.display())))
}
