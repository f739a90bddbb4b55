//! BatchNorm over active rows (SparK's SparseBatchNorm2d: BatchNorm1d on the gathered `[N, C]`)
//! and LayerNorm per active row (SparK's SparseConvNeXtLayerNorm). BatchNorm runs the engine's
//! `batch_norm` on the features; LayerNorm is a fused differentiable op here.
//! Statistics accumulate in f64 whatever the feature dtype.

use crate::SparseTensor;
use rayon::prelude::*;
use spark_engine::{with_float, Error, Float, Op, Result, Tensor};

fn check_param(op: &'static str, what: &str, t: Option<&Tensor>, x: &Tensor, c: usize) -> Result<()> {
    if let Some(t) = t {
        if t.numel() != c {
            return Err(Error::Shape { op, msg: format!("{what} must have {c} elements, got {:?}", t.dims()) });
        }
        if t.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: t.dtype() });
        }
    }
    Ok(())
}

/// BatchNorm over the N active rows. Training: normalise with the batch mean and biased
/// variance over N and update the running stats in place (momentum, unbiased variance), as
/// PyTorch. Eval: use the running stats (batch stats when none are given). N = 0 gives an empty
/// output and leaves the running stats alone; N = 1 in training is an error, as in PyTorch.
pub fn sparse_batch_norm(
    x: &SparseTensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<SparseTensor> {
    let op = "sparse_batch_norm";
    let f = &x.features;
    let (n, c) = (f.dims()[0], f.dims()[1]);
    for (what, t) in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)]
    {
        check_param(op, what, t, f, c)?;
    }
    if n == 0 {
        // No active site: nothing to normalise, running statistics stay as they are.
        return Ok(x.clone());
    }
    // BatchNorm over active rows is exactly the engine's BatchNorm1d on the `[N, C]` features.
    // Eval without running statistics normalises with the batch statistics (and updates none).
    let (rm, rv, use_batch) = match (running_mean, running_var) {
        (Some(m), Some(v)) => (Some(m), Some(v), training),
        _ if training => (running_mean, running_var, true),
        _ => (None, None, true),
    };
    let features = f.batch_norm(weight, bias, rm, rv, use_batch, momentum, eps).map_err(|e| match e {
        Error::Shape { msg, .. } => Error::Shape { op, msg },
        other => other,
    })?;
    Ok(SparseTensor { features, active: x.active.clone() })
}

/// LayerNorm over the C channels of every active row (biased variance, eps inside the root),
/// with optional per-channel affine weight and bias.
pub fn sparse_layer_norm(
    x: &SparseTensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<SparseTensor> {
    let op = "sparse_layer_norm";
    let f = &x.features;
    let (n, c) = (f.dims()[0], f.dims()[1]);
    check_param(op, "weight", weight, f, c)?;
    check_param(op, "bias", bias, f, c)?;
    let mut inputs = vec![f.clone()];
    let (wi, bi) = (weight.map(|_| 1), bias.map(|_| 1 + weight.is_some() as usize));
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    let out = with_float!(f.dtype(), op, |T| {
        let w = weight.map(|t| t.to_vec::<T>()).transpose()?;
        let b = bias.map(|t| t.to_vec::<T>()).transpose()?;
        let mut stats = vec![[0.0f64; 2]; n];
        let y = f.with_slice(|xs: &[T]| {
            let mut y = vec![<T>::ZERO; n * c];
            if c > 0 {
                y.par_chunks_mut(c).zip(stats.par_iter_mut()).enumerate().with_min_len(64).for_each(
                    |(r, (row, st))| {
                        let xr = &xs[r * c..(r + 1) * c];
                        let (mean, invstd) = row_stats(xr, eps);
                        *st = [mean, invstd];
                        for (ch, v) in row.iter_mut().enumerate() {
                            let mut t = (xr[ch].to_f64() - mean) * invstd;
                            if let Some(w) = &w {
                                t *= w[ch].to_f64();
                            }
                            if let Some(b) = &b {
                                t += b[ch].to_f64();
                            }
                            *v = <T>::from_f64(t);
                        }
                    },
                );
            }
            y
        })?;
        Ok(Tensor::from_vec_op(y, &[n, c], inputs, LayerNormOp { stats, wi, bi }))
    })?;
    Ok(SparseTensor { features: out, active: x.active.clone() })
}

fn row_stats<T: Float>(xr: &[T], eps: f64) -> (f64, f64) {
    let c = xr.len().max(1) as f64;
    let mean = xr.iter().map(|v| v.to_f64()).sum::<f64>() / c;
    let var = xr.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / c;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNormOp {
    /// (mean, 1/std) per row.
    stats: Vec<[f64; 2]>,
    wi: Option<usize>,
    bi: Option<usize>,
}

impl Op for LayerNormOp {
    fn name(&self) -> &'static str {
        "sparse_layer_norm"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (n, c) = (x.dims()[0], x.dims()[1]);
        with_float!(g.dtype(), "sparse_layer_norm backward", |T| {
            let w: Option<Vec<f64>> = self.wi.map(|i| inputs[i].to_vec_f64()).transpose()?;
            let xs = x.to_vec::<T>()?;
            let gs = g.contiguous()?.to_vec::<T>()?;
            let mut dx = vec![<T>::ZERO; n * c];
            if c > 0 {
                dx.par_chunks_mut(c).enumerate().with_min_len(64).for_each(|(r, row)| {
                    let [mean, invstd] = self.stats[r];
                    let (mut s1, mut s2) = (0.0, 0.0);
                    for ch in 0..c {
                        let xh = (xs[r * c + ch].to_f64() - mean) * invstd;
                        let gh = gs[r * c + ch].to_f64() * w.as_ref().map_or(1.0, |w| w[ch]);
                        s1 += gh;
                        s2 += gh * xh;
                    }
                    let cf = c as f64;
                    for (ch, v) in row.iter_mut().enumerate() {
                        let xh = (xs[r * c + ch].to_f64() - mean) * invstd;
                        let gh = gs[r * c + ch].to_f64() * w.as_ref().map_or(1.0, |w| w[ch]);
                        *v = <T>::from_f64(invstd * (gh - s1 / cf - xh * s2 / cf));
                    }
                });
            }
            let mut grads = vec![if x.requires_grad() { Some(Tensor::from_vec(dx, &[n, c])?) } else { None }];
            if self.wi.is_some() || self.bi.is_some() {
                let (sg, sgx) = {
                    let (mut a, mut b) = (vec![0.0; c], vec![0.0; c]);
                    for r in 0..n {
                        let [mean, invstd] = self.stats[r];
                        for ch in 0..c {
                            let gv = gs[r * c + ch].to_f64();
                            a[ch] += gv;
                            b[ch] += gv * (xs[r * c + ch].to_f64() - mean) * invstd;
                        }
                    }
                    (a, b)
                };
                if let Some(i) = self.wi {
                    let v: Vec<T> = sgx.iter().map(|&v| <T>::from_f64(v)).collect();
                    grads.push(Some(Tensor::from_vec(v, inputs[i].dims())?));
                }
                if let Some(i) = self.bi {
                    let v: Vec<T> = sg.iter().map(|&v| <T>::from_f64(v)).collect();
                    grads.push(Some(Tensor::from_vec(v, inputs[i].dims())?));
                }
            }
            Ok(grads)
        })
    }
}
