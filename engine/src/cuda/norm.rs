//! BatchNorm and LayerNorm on CUDA (`kernels/norm.cu`): statistics, normalisation, running
//! statistics and backward, over NCHW maps or channels-last rows. Each op keeps its statistics
//! on the device for its backward; optional affine parameters are null pointers when absent.

use super::compile::NORM;
use super::launch::{self, int, launch};
use super::tensor::{address, compact, device_of, f32_only, from_f32};
use crate::autograd::Op;
use crate::layout::numel;
use crate::{Error, Result, Tensor};
use cudarc::driver::LaunchConfig;

/// Column kernels: a block covers 32 channels.
fn columns(c: usize) -> LaunchConfig {
    launch::per_row(c.div_ceil(32))
}

/// Warp-per-row kernels: 8 rows per block of 256.
fn warp_rows(r: usize) -> LaunchConfig {
    launch::per_row(r.div_ceil(8))
}

/// Compact copies of optional parameters (their addresses are taken for the kernels).
fn params(p: [Option<&Tensor>; 2]) -> Result<[Option<Tensor>; 2]> {
    Ok([p[0].map(compact).transpose()?, p[1].map(compact).transpose()?])
}

/// A fresh f32 tensor of `shape` on `x`'s device, with its address.
fn output(x: &Tensor, shape: &[usize]) -> Result<(Tensor, u64)> {
    let dev = device_of(x)?;
    let t = from_f32(&dev, dev.alloc::<f32>(numel(shape))?, shape);
    let a = address(Some(&t), "norm output")?;
    Ok((t, a))
}

// --------------------------------------------------------------------------------- BatchNorm

struct BatchNormOp {
    /// Statistics that normalised the forward ([C] each): the batch's, or the running ones.
    mean: Tensor,
    var: Tensor,
    eps: f64,
    batch_stats: bool,
    has_w: bool,
    has_b: bool,
}

/// BatchNorm of `x [N, C, *]`, the CUDA twin of `Tensor::batch_norm`.
pub(crate) fn batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running: [Option<&Tensor>; 2],
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    const OP: &str = "batch_norm";
    f32_only(x, OP)?;
    let xc = compact(x)?;
    let dev = device_of(x)?;
    let (n, c, s) = (x.dims()[0], x.dims()[1], numel(&x.dims()[2..]));
    let (ni, ci, si) = (int(n, OP)?, int(c, OP)?, int(s, OP)?);
    let [w, b] = params([weight, bias])?;
    let (mean, var) = if training {
        let (mean, pm) = output(x, &[c])?;
        let (var, pv) = output(x, &[c])?;
        let px = address(Some(&xc), OP)?;
        launch!(dev, NORM, "bn_stats_nchw_f32", launch::per_row(c), &px, &pm, &pv, &ni, &ci, &si);
        if running[0].is_some() || running[1].is_some() {
            // In place on the running buffers (device memory, ordered on the one stream).
            let (rm, rv) = (address(running[0], OP)?, address(running[1], OP)?);
            let (mom, count) = (momentum as f32, int(n * s, OP)?);
            launch!(dev, NORM, "bn_running_update_f32", launch::elementwise(c), &rm, &rv, &pm, &pv, &mom, &count, &ci);
        }
        (mean, var)
    } else {
        let (Some(rm), Some(rv)) = (running[0], running[1]) else {
            return Err(Error::Msg(format!(
                "{OP}: eval mode needs running_mean and running_var (input {:?})",
                x.dims()
            )));
        };
        (compact(rm)?.detach(), compact(rv)?.detach())
    };
    let (y, py) = output(x, x.dims())?;
    let (px, pm, pv) = (address(Some(&xc), OP)?, address(Some(&mean), OP)?, address(Some(&var), OP)?);
    let (pw, pb, e) = (address(w.as_ref(), OP)?, address(b.as_ref(), OP)?, eps as f32);
    launch!(
        dev,
        NORM,
        "bn_apply_nchw_f32",
        launch::elementwise(x.numel()),
        &px,
        &pm,
        &pv,
        &pw,
        &pb,
        &e,
        &py,
        &ni,
        &ci,
        &si
    );
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    let op = BatchNormOp { mean, var, eps, batch_stats: training, has_w: weight.is_some(), has_b: bias.is_some() };
    Ok(y.attach_op(inputs, op))
}

impl Op for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch_norm"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        const OP: &str = "batch_norm backward";
        let x = &inputs[0];
        let dev = device_of(x)?;
        let (n, c, s) = (x.dims()[0], x.dims()[1], numel(&x.dims()[2..]));
        let (ni, ci, si) = (int(n, OP)?, int(c, OP)?, int(s, OP)?);
        let (xc, gc) = (compact(x)?, compact(g)?);
        let w = if self.has_w { Some(compact(&inputs[1])?) } else { None };
        let (px, pg, pm, pv) = (
            address(Some(&xc), OP)?,
            address(Some(&gc), OP)?,
            address(Some(&self.mean), OP)?,
            address(Some(&self.var), OP)?,
        );
        let (pw, e) = (address(w.as_ref(), OP)?, self.eps as f32);
        let (sum_gy, p_sum_gy) = output(x, &[c])?;
        let (sum_gy_xhat, p_sum_gy_xhat) = output(x, &[c])?;
        launch!(
            dev,
            NORM,
            "bn_bwd_reduce_nchw_f32",
            launch::per_row(c),
            &pg,
            &px,
            &pm,
            &pv,
            &e,
            &p_sum_gy,
            &p_sum_gy_xhat,
            &ni,
            &ci,
            &si
        );
        let gx = if x.requires_grad() {
            let (gx, pgx) = output(x, x.dims())?;
            if self.batch_stats {
                launch!(
                    dev,
                    NORM,
                    "bn_bwd_apply_nchw_f32",
                    launch::elementwise(x.numel()),
                    &pg,
                    &px,
                    &pm,
                    &pv,
                    &pw,
                    &e,
                    &p_sum_gy,
                    &p_sum_gy_xhat,
                    &pgx,
                    &ni,
                    &ci,
                    &si
                );
            } else {
                // Frozen statistics: gx = gamma * invstd * gy (the apply kernel with no shift).
                let null = 0u64;
                launch!(
                    dev,
                    NORM,
                    "bn_apply_nchw_f32",
                    launch::elementwise(x.numel()),
                    &pg,
                    &null,
                    &pv,
                    &pw,
                    &null,
                    &e,
                    &pgx,
                    &ni,
                    &ci,
                    &si
                );
            }
            Some(gx)
        } else {
            None
        };
        let mut grads = vec![gx];
        if self.has_w {
            grads.push(inputs[1].requires_grad().then_some(sum_gy_xhat));
        }
        if self.has_b {
            grads.push(inputs[1 + self.has_w as usize].requires_grad().then_some(sum_gy));
        }
        Ok(grads)
    }
}

// --------------------------------------------------------------------------------- LayerNorm

struct LayerNormOp {
    /// Per normalised row or position: mean and 1/sqrt(var + eps).
    mean: Tensor,
    rstd: Tensor,
    channels_first: bool,
    has_w: bool,
    has_b: bool,
}

/// `x` as (rows, row length) for a LayerNorm over its last `k` dims, or (N, C, S) for the
/// channels-first form.
fn ln_dims(x: &Tensor, channels_first: bool, k: usize) -> (usize, usize, usize) {
    if channels_first {
        (x.dims()[0], x.dims()[1], numel(&x.dims()[2..]))
    } else {
        let m = numel(&x.dims()[x.rank() - k..]);
        (x.numel() / m, m, 1)
    }
}

/// LayerNorm on CUDA: over the last `k` dims (`channels_first == false`) or over the channels
/// of `[N, C, *]` (ConvNeXt's channels_first form).
pub(crate) fn layer_norm(
    x: &Tensor,
    k: usize,
    channels_first: bool,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let op_name = if channels_first { "layer_norm_channels_first" } else { "layer_norm" };
    f32_only(x, op_name)?;
    let xc = compact(x)?;
    let dev = device_of(x)?;
    let (r, c, s) = ln_dims(x, channels_first, k);
    let (ri, ci, si) = (int(r, op_name)?, int(c, op_name)?, int(s, op_name)?);
    let [w, b] = params([weight, bias])?;
    let stats = if channels_first { r * s } else { r };
    let (mean, pm) = output(x, &[stats])?;
    let (rstd, pr) = output(x, &[stats])?;
    let (y, py) = output(x, x.dims())?;
    let (px, pw, pb, e) =
        (address(Some(&xc), op_name)?, address(w.as_ref(), op_name)?, address(b.as_ref(), op_name)?, eps as f32);
    if channels_first {
        launch!(
            dev,
            NORM,
            "ln_fwd_nchw_f32",
            launch::elementwise(r * s),
            &px,
            &pw,
            &pb,
            &e,
            &py,
            &pm,
            &pr,
            &ri,
            &ci,
            &si
        );
    } else {
        launch!(dev, NORM, "ln_fwd_rows_f32", warp_rows(r), &px, &pw, &pb, &e, &py, &pm, &pr, &ri, &ci);
    }
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    Ok(y.attach_op(inputs, LayerNormOp { mean, rstd, channels_first, has_w: weight.is_some(), has_b: bias.is_some() }))
}

impl Op for LayerNormOp {
    fn name(&self) -> &'static str {
        if self.channels_first {
            "layer_norm_channels_first"
        } else {
            "layer_norm"
        }
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        const OP: &str = "layer_norm backward";
        let x = &inputs[0];
        let dev = device_of(x)?;
        // Rows: one statistic per row; channels-first: one per (image, position).
        let (r, c, s) = if self.channels_first {
            ln_dims(x, true, 0)
        } else {
            let rows = self.mean.numel();
            (rows, x.numel() / rows, 1)
        };
        let (ri, ci, si) = (int(r, OP)?, int(c, OP)?, int(s, OP)?);
        let (xc, gc) = (compact(x)?, compact(g)?);
        let w = if self.has_w { Some(compact(&inputs[1])?) } else { None };
        let (px, pg, pm, pr) = (
            address(Some(&xc), OP)?,
            address(Some(&gc), OP)?,
            address(Some(&self.mean), OP)?,
            address(Some(&self.rstd), OP)?,
        );
        let pw = address(w.as_ref(), OP)?;
        let gx = if x.requires_grad() {
            let (gx, pgx) = output(x, x.dims())?;
            if self.channels_first {
                launch!(
                    dev,
                    NORM,
                    "ln_bwd_nchw_f32",
                    launch::elementwise(r * s),
                    &pg,
                    &px,
                    &pm,
                    &pr,
                    &pw,
                    &pgx,
                    &ri,
                    &ci,
                    &si
                );
            } else {
                launch!(dev, NORM, "ln_bwd_rows_f32", warp_rows(r), &pg, &px, &pm, &pr, &pw, &pgx, &ri, &ci);
            }
            Some(gx)
        } else {
            None
        };
        let want_w = self.has_w && inputs[1].requires_grad();
        let want_b = self.has_b && inputs[1 + self.has_w as usize].requires_grad();
        let (mut gw, mut gb) = (None, None);
        if want_w || want_b {
            // The weight's (or, without one, the bias's) shape: the normalised shape.
            let pshape = inputs[1].dims().to_vec();
            let (tw, pgw) = output(x, &pshape)?;
            let (tb, pgb) = output(x, &pshape)?;
            if self.channels_first {
                launch!(
                    dev,
                    NORM,
                    "ln_bwd_params_nchw_f32",
                    launch::per_row(c),
                    &pg,
                    &px,
                    &pm,
                    &pr,
                    &pgw,
                    &pgb,
                    &ri,
                    &ci,
                    &si
                );
            } else {
                launch!(dev, NORM, "ln_bwd_params_f32", columns(c), &pg, &px, &pm, &pr, &pgw, &pgb, &ri, &ci);
            }
            gw = want_w.then_some(tw);
            gb = want_b.then_some(tb);
        }
        let mut grads = vec![gx];
        if self.has_w {
            grads.push(gw);
        }
        if self.has_b {
            grads.push(gb);
        }
        Ok(grads)
    }
}
