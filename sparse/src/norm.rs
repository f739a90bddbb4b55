//! BatchNorm over active rows (SparK's SparseBatchNorm2d: BatchNorm1d on the gathered `[N, C]`)
//! and LayerNorm per active row (SparK's SparseConvNeXtLayerNorm), as fused differentiable ops.
//! Statistics accumulate in f64 whatever the feature dtype.

use crate::SparseTensor;
use rayon::prelude::*;
use spark_engine::{with_float, Error, Float, Op, Result, Tensor};

const ROWS_PER_TASK: usize = 256;

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

/// Per-channel sums over rows of `[n, c]` of `f(row, channel, value)` pairs, in f64.
fn channel_sums<T: Float>(x: &[T], c: usize, f: impl Fn(usize, T) -> [f64; 2] + Sync) -> (Vec<f64>, Vec<f64>) {
    if c == 0 {
        return (Vec::new(), Vec::new());
    }
    x.par_chunks(c * ROWS_PER_TASK)
        .map(|block| {
            let (mut a, mut b) = (vec![0.0; c], vec![0.0; c]);
            for row in block.chunks(c) {
                for (ch, &v) in row.iter().enumerate() {
                    let [p, q] = f(ch, v);
                    a[ch] += p;
                    b[ch] += q;
                }
            }
            (a, b)
        })
        .reduce(
            || (vec![0.0; c], vec![0.0; c]),
            |(mut a, mut b), (a2, b2)| {
                a.iter_mut().zip(a2).for_each(|(x, y)| *x += y);
                b.iter_mut().zip(b2).for_each(|(x, y)| *x += y);
                (a, b)
            },
        )
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
    if training && n == 1 {
        return Err(Error::Shape {
            op,
            msg: format!("expected more than 1 active site per channel when training, got input [1, {c}]"),
        });
    }
    let use_batch = training || running_mean.is_none() || running_var.is_none();
    let mut inputs = vec![f.clone()];
    let (wi, bi) = (weight.map(|_| 1), bias.map(|_| 1 + weight.is_some() as usize));
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    let out = with_float!(f.dtype(), op, |T| {
        let w = weight.map(|t| t.to_vec::<T>()).transpose()?;
        let b = bias.map(|t| t.to_vec::<T>()).transpose()?;
        let (mean, var) = if use_batch {
            let (s, _) = f.with_slice(|xs: &[T]| channel_sums(xs, c, |_, v| [v.to_f64(), 0.0]))?;
            let mean: Vec<f64> = s.iter().map(|v| v / n.max(1) as f64).collect();
            let (q, _) = f.with_slice(|xs: &[T]| {
                channel_sums(xs, c, |ch, v| {
                    let d = v.to_f64() - mean[ch];
                    [d * d, 0.0]
                })
            })?;
            (mean, q.iter().map(|v| v / n.max(1) as f64).collect::<Vec<f64>>())
        } else {
            (running_mean.unwrap().to_vec_f64()?, running_var.unwrap().to_vec_f64()?)
        };
        if training && n > 1 {
            if let Some(rm) = running_mean {
                rm.update::<T>(|s| {
                    for (r, m) in s.iter_mut().zip(&mean) {
                        *r = <T>::from_f64((1.0 - momentum) * r.to_f64() + momentum * m);
                    }
                })?;
            }
            if let Some(rv) = running_var {
                let unbias = n as f64 / (n - 1) as f64;
                rv.update::<T>(|s| {
                    for (r, v) in s.iter_mut().zip(&var) {
                        *r = <T>::from_f64((1.0 - momentum) * r.to_f64() + momentum * v * unbias);
                    }
                })?;
            }
        }
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        // Folded per-channel scale and shift: y = x * a + s.
        let a: Vec<T> =
            (0..c).map(|ch| <T>::from_f64(invstd[ch] * w.as_ref().map_or(1.0, |w| w[ch].to_f64()))).collect();
        let s: Vec<T> = (0..c)
            .map(|ch| {
                let sh = b.as_ref().map_or(0.0, |b| b[ch].to_f64());
                <T>::from_f64(sh - mean[ch] * a[ch].to_f64())
            })
            .collect();
        let y = f.with_slice(|xs: &[T]| {
            let mut y = xs.to_vec();
            if c > 0 {
                y.par_chunks_mut(c).with_min_len(ROWS_PER_TASK).for_each(|row| {
                    for ((v, &aa), &ss) in row.iter_mut().zip(&a).zip(&s) {
                        *v = *v * aa + ss;
                    }
                });
            }
            y
        })?;
        Ok(Tensor::from_vec_op(y, &[n, c], inputs, BatchNormOp { mean, invstd, use_batch, wi, bi }))
    })?;
    Ok(SparseTensor { features: out, active: x.active.clone() })
}

struct BatchNormOp {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    use_batch: bool,
    wi: Option<usize>,
    bi: Option<usize>,
}

impl Op for BatchNormOp {
    fn name(&self) -> &'static str {
        "sparse_batch_norm"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (n, c) = (x.dims()[0], x.dims()[1]);
        let (mean, invstd) = (&self.mean, &self.invstd);
        with_float!(g.dtype(), "sparse_batch_norm backward", |T| {
            let w: Option<Vec<f64>> = self.wi.map(|i| inputs[i].to_vec_f64()).transpose()?;
            let xs = x.to_vec::<T>()?;
            let gs = g.contiguous()?.to_vec::<T>()?;
            // sum(g) and sum(g * xhat) per channel.
            let (sg, sgx) = {
                let (mut a, mut b) = (vec![0.0; c], vec![0.0; c]);
                if c > 0 {
                    let parts: Vec<(Vec<f64>, Vec<f64>)> = xs
                        .par_chunks(c * ROWS_PER_TASK)
                        .zip(gs.par_chunks(c * ROWS_PER_TASK))
                        .map(|(xb, gb)| {
                            let (mut a, mut b) = (vec![0.0; c], vec![0.0; c]);
                            for (xr, gr) in xb.chunks(c).zip(gb.chunks(c)) {
                                for ch in 0..c {
                                    let xh = (xr[ch].to_f64() - mean[ch]) * invstd[ch];
                                    a[ch] += gr[ch].to_f64();
                                    b[ch] += gr[ch].to_f64() * xh;
                                }
                            }
                            (a, b)
                        })
                        .collect();
                    for (pa, pb) in parts {
                        a.iter_mut().zip(pa).for_each(|(x, y)| *x += y);
                        b.iter_mut().zip(pb).for_each(|(x, y)| *x += y);
                    }
                }
                (a, b)
            };
            let mut dx = vec![<T>::ZERO; n * c];
            if x.requires_grad() && c > 0 {
                let nf = n.max(1) as f64;
                dx.par_chunks_mut(c).enumerate().with_min_len(ROWS_PER_TASK).for_each(|(r, row)| {
                    for (ch, v) in row.iter_mut().enumerate() {
                        let wv = w.as_ref().map_or(1.0, |w| w[ch]);
                        let gv = gs[r * c + ch].to_f64();
                        let d = if self.use_batch {
                            let xh = (xs[r * c + ch].to_f64() - mean[ch]) * invstd[ch];
                            wv * invstd[ch] * (gv - sg[ch] / nf - xh * sgx[ch] / nf)
                        } else {
                            wv * invstd[ch] * gv
                        };
                        *v = <T>::from_f64(d);
                    }
                });
            }
            let mut grads = vec![if x.requires_grad() { Some(Tensor::from_vec(dx, &[n, c])?) } else { None }];
            if let Some(i) = self.wi {
                let v: Vec<T> = sgx.iter().map(|&v| <T>::from_f64(v)).collect();
                grads.push(Some(Tensor::from_vec(v, inputs[i].dims())?));
            }
            if let Some(i) = self.bi {
                let v: Vec<T> = sg.iter().map(|&v| <T>::from_f64(v)).collect();
                grads.push(Some(Tensor::from_vec(v, inputs[i].dims())?));
            }
            Ok(grads)
        })
    }
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
