//! SparK's reconstruction loss (SPARK.md section 6): per-patch normalised target (mean and
//! UNBIASED variance + 1e-6), per-patch MSE, summed over the masked patches of the whole batch and
//! divided by (masked count + 1e-8).

use crate::mask::PatchMask;
use spark_engine::{no_grad, Error, Result, Tensor};

/// Epsilon added to the unbiased per-patch variance before the square root.
pub const PATCH_VAR_EPS: f64 = 1e-6;

/// `[B,C,H,W]` -> `[B, L=(H/p)(W/p), p*p*C]`; patch index `row*w + col`, element `(py*p+px)*C + c`.
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let d = x.dims();
    if d.len() != 4 || p == 0 || !d[2].is_multiple_of(p) || !d[3].is_multiple_of(p) {
        return Err(Error::Shape {
            op: "patchify",
            msg: format!("input {d:?} is not [B,C,H,W] divisible by patch {p}"),
        });
    }
    let (b, c, h, w) = (d[0], d[1], d[2] / p, d[3] / p);
    x.reshape(&[b, c, h, p, w, p])?.permute(&[0, 2, 4, 3, 5, 1])?.reshape(&[b, h * w, p * p * c])
}

/// Inverse of [`patchify`]: `[B, L, p*p*C]` -> `[B,C,h*p,w*p]`.
pub fn unpatchify(x: &Tensor, p: usize, c: usize, h: usize, w: usize) -> Result<Tensor> {
    let d = x.dims();
    if d.len() != 3 || d[1] != h * w || d[2] != p * p * c {
        return Err(Error::Shape {
            op: "unpatchify",
            msg: format!("{d:?} is not [B, {}, {}] for patch {p}, {c} channels", h * w, p * p * c),
        });
    }
    let b = d[0];
    x.reshape(&[b, h, w, p, p, c])?.permute(&[0, 5, 1, 3, 2, 4])?.reshape(&[b, c, h * p, w * p])
}

/// The normalised target and its per-patch statistics (no graph: the target is a constant).
#[derive(Debug, Clone)]
pub struct PatchTarget {
    /// `[B, L, N]` (x - mean) / std.
    pub target: Tensor,
    /// `[B, L, 1]`.
    pub mean: Tensor,
    /// `[B, L, 1]` sqrt(unbiased var + 1e-6).
    pub std: Tensor,
}

/// Per-patch normalised target of the (unmasked, ImageNet-normalised) input.
pub fn patch_target(input: &Tensor, p: usize) -> Result<PatchTarget> {
    no_grad(|| {
        let x = patchify(&input.detach(), p)?;
        let mean = x.mean(&[-1], true)?;
        let std = x.var(&[-1], true, true)?.add_scalar(PATCH_VAR_EPS)?.sqrt()?;
        let target = x.sub(&mean)?.div(&std)?;
        Ok(PatchTarget { target, mean, std })
    })
}

/// Output of [`masked_patch_loss`].
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Scalar loss (with graph to `rec`).
    pub loss: Tensor,
    /// `[B, L]` per-patch MSE (with graph).
    pub per_patch_mse: Tensor,
    pub target: PatchTarget,
}

/// The SparK loss of a reconstruction `rec` `[B,3,H,W]` against `input` with patch size `p`;
/// only masked (not visible) cells of `mask` are scored.
pub fn masked_patch_loss(rec: &Tensor, input: &Tensor, mask: &PatchMask, p: usize) -> Result<LossOutput> {
    if rec.dims() != input.dims() {
        return Err(Error::Shape {
            op: "masked_patch_loss",
            msg: format!("reconstruction {:?} != input {:?}", rec.dims(), input.dims()),
        });
    }
    let d = input.dims();
    if d.len() != 4 || d[2] / p.max(1) != mask.fh || d[3] / p.max(1) != mask.fw || d[0] != mask.batch {
        return Err(Error::Shape {
            op: "masked_patch_loss",
            msg: format!("input {d:?} with patch {p} does not match a [{}, {}, {}] mask", mask.batch, mask.fh, mask.fw),
        });
    }
    let target = patch_target(input, p)?;
    let pred = patchify(rec, p)?;
    let per_patch_mse = pred.sub(&target.target)?.sqr()?.mean(&[-1], false)?;
    let weights: Vec<f64> = mask.active.iter().map(|&a| if a { 0.0 } else { 1.0 }).collect();
    let m = Tensor::from_vec(weights, &[mask.batch, mask.cells()])?.to_dtype(rec.dtype())?.to_device(rec.device())?;
    // SparK adds 1e-8 to an integer count, giving a float32 scalar: exactly the count when it is
    // positive, 1e-8 (no division by zero) when nothing is masked.
    let denom = (mask.masked_count() as f32 + 1e-8f32) as f64;
    let loss = per_patch_mse.mul(&m)?.sum_all()?.div_scalar(denom)?;
    Ok(LossOutput { loss, per_patch_mse, target })
}
