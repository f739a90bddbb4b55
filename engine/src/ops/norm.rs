//! Normalisation layers: batch_norm (`[N, C, *]`, statistics per channel), layer_norm over the
//! trailing dims (channels-last), and layer_norm_channels_first (`[N, C, *]`, statistics per
//! position over C, as ConvNeXt's `channels_first` LayerNorm).
//!
//! Each op is fused: one pass for the statistics (f64 accumulators in 8 independent lanes so
//! the loop vectorises), one pass that normalises; backward uses the closed forms with one
//! reduction pass and one elementwise pass. Work is split with rayon when the tensor is large;
//! `with_min_len(usize::MAX)` keeps small tensors on the calling thread.

use crate::autograd::Op;
use crate::cpu::isa::{isa, multiversion};
use crate::layout::numel;
use crate::ops::binary::PAR_THRESHOLD;
use crate::{shape_err, with_float, Error, Float, Result, Tensor};
use rayon::prelude::*;

/// Minimum items per rayon task: everything on one thread below `PAR_THRESHOLD` elements of
/// work, otherwise tasks of at least ~4096 elements.
fn min_len(work: usize, item: usize) -> usize {
    if work < PAR_THRESHOLD {
        usize::MAX
    } else {
        (4096 / item.max(1)).max(1)
    }
}

/// `(sum f(a_i, b_i).0, sum f(a_i, b_i).1)` with 8 accumulator lanes (vectorisable).
#[inline(always)]
fn sum2<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> (f64, f64)) -> (f64, f64) {
    let (mut p, mut q) = ([0.0f64; 8], [0.0f64; 8]);
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            let (u, v) = f(x[l], y[l]);
            p[l] += u;
            q[l] += v;
        }
    }
    for (&x, &y) in ar.iter().zip(br) {
        let (u, v) = f(x, y);
        p[0] += u;
        q[0] += v;
    }
    (p.iter().sum(), q.iter().sum())
}

// ------------------------------------------------------------------ SIMD leaf kernels
//
// The inner loops below are `#[inline(always)]` bodies compiled three times (AVX-512, AVX2+FMA,
// baseline) and picked at run time, as in `cpu/conv_dw.rs`; rayon splitting stays outside them.

/// BN segment sums: `(sum d, sum d^2)` with `d = x - k` (stats) or `(sum y, sum y (x - k))`.
#[inline(always)]
fn seg_sums_body<T: Float>(x: &[T], y: &[T], k: f64, stats: bool) -> (f64, f64) {
    if stats {
        sum2(x, x, |a, _| {
            let d = a.to_f64() - k;
            (d, d * d)
        })
    } else {
        sum2(x, y, |a, b| {
            let g = b.to_f64();
            (g, g * (a.to_f64() - k))
        })
    }
}
multiversion!(seg_sums, seg_sums_body, (x: &[T], y: &[T], k: f64, stats: bool) -> (f64, f64));

/// BN row accumulation: the same sums per row position into `au`, `av`.
#[inline(always)]
fn row_acc_body<T: Float>(x: &[T], y: &[T], ke: &[f64], au: &mut [f64], av: &mut [f64], stats: bool) {
    if stats {
        for (((&a, &k), u), v) in x.iter().zip(ke).zip(au.iter_mut()).zip(av.iter_mut()) {
            let d = a.to_f64() - k;
            *u += d;
            *v += d * d;
        }
    } else {
        for ((((&a, &b), &k), u), v) in x.iter().zip(y).zip(ke).zip(au.iter_mut()).zip(av.iter_mut()) {
            let g = b.to_f64();
            *u += g;
            *v += g * (a.to_f64() - k);
        }
    }
}
multiversion!(row_acc, row_acc_body, (x: &[T], y: &[T], ke: &[f64], au: &mut [f64], av: &mut [f64], stats: bool) -> ());

/// `o = a*y + b*x + d` with scalar coefficients.
#[inline(always)]
fn affine_seg_body<T: Float>(o: &mut [T], y: &[T], x: &[T], a: T, b: T, d: T) {
    for ((v, &yv), &xv) in o.iter_mut().zip(y).zip(x) {
        *v = a * yv + b * xv + d;
    }
}
multiversion!(affine_seg, affine_seg_body, (o: &mut [T], y: &[T], x: &[T], a: T, b: T, d: T) -> ());

/// `o = a*y + b*x + d` with per-position coefficients.
#[inline(always)]
fn affine_row_body<T: Float>(o: &mut [T], y: &[T], x: &[T], a: &[T], b: &[T], d: &[T]) {
    for (((((v, &yv), &xv), &a), &b), &d) in o.iter_mut().zip(y).zip(x).zip(a).zip(b).zip(d) {
        *v = a * yv + b * xv + d;
    }
}
multiversion!(affine_row, affine_row_body, (o: &mut [T], y: &[T], x: &[T], a: &[T], b: &[T], d: &[T]) -> ());

/// LayerNorm of one row into `o`; returns (mean, rstd).
#[inline(always)]
fn ln_row_fwd_body<T: Float>(x: &[T], w: &[T], b: &[T], eps: f64, o: &mut [T]) -> (f64, f64) {
    let (mu, rs) = row_stats(x, eps);
    let (mu_t, rs_t) = (T::from_f64(mu), T::from_f64(rs));
    for (((v, &xv), &wv), &bv) in o.iter_mut().zip(x).zip(w).zip(b) {
        *v = (xv - mu_t) * rs_t * wv + bv;
    }
    (mu, rs)
}
multiversion!(ln_row_fwd, ln_row_fwd_body, (x: &[T], w: &[T], b: &[T], eps: f64, o: &mut [T]) -> (f64, f64));

/// LayerNorm backward of one row: `o = dx`; adds `g*xhat` and `g` into `aw`, `ab` unless empty.
#[inline(always)]
fn ln_row_bwd_body<T: Float>(x: &[T], g: &[T], w: &[T], mu: f64, rs: f64, o: &mut [T], aw: &mut [f64], ab: &mut [f64]) {
    let m = x.len() as f64;
    let (s1, s2) = row_dots(x, g, w, mu);
    let (c1, c2) = (T::from_f64(s1 / m), T::from_f64(s2 * rs / m));
    let (mu_t, rs_t) = (T::from_f64(mu), T::from_f64(rs));
    for (((v, &xv), &gv), &wv) in o.iter_mut().zip(x).zip(g).zip(w) {
        let xh = (xv - mu_t) * rs_t;
        *v = rs_t * (gv * wv - c1 - xh * c2);
    }
    if !aw.is_empty() {
        for (((pw, pb), &xv), &gv) in aw.iter_mut().zip(ab.iter_mut()).zip(x).zip(g) {
            let gf = gv.to_f64();
            *pw += gf * (xv.to_f64() - mu) * rs;
            *pb += gf;
        }
    }
}
multiversion!(ln_row_bwd, ln_row_bwd_body, (x: &[T], g: &[T], w: &[T], mu: f64, rs: f64, o: &mut [T], aw: &mut [f64], ab: &mut [f64]) -> ());

/// Channels-first statistics of positions `s0..s0+t.len()` of one image block `xb` (`[c, s]`).
#[inline(always)]
fn cf_stats_body<T: Float>(xb: &[T], c: usize, s: usize, s0: usize, eps: f64, t: &mut [(f64, f64)]) {
    let l = t.len();
    let (mut mu, mut sq) = ([0.0f64; TILE], [0.0f64; TILE]);
    let (mu, sq) = (&mut mu[..l], &mut sq[..l]);
    for ch in 0..c {
        for (m, &v) in mu.iter_mut().zip(&xb[ch * s + s0..][..l]) {
            *m += v.to_f64();
        }
    }
    let cf = c as f64;
    mu.iter_mut().for_each(|v| *v /= cf);
    for ch in 0..c {
        for ((q, &m), &v) in sq.iter_mut().zip(mu.iter()).zip(&xb[ch * s + s0..][..l]) {
            let d = v.to_f64() - m;
            *q += d * d;
        }
    }
    for ((o, &m), &q) in t.iter_mut().zip(mu.iter()).zip(sq.iter()) {
        *o = (m, 1.0 / (q / cf + eps).sqrt());
    }
}
multiversion!(cf_stats, cf_stats_body, (xb: &[T], c: usize, s: usize, s0: usize, eps: f64, t: &mut [(f64, f64)]) -> ());

/// Channels-first normalisation of one `(n, c)` segment.
#[inline(always)]
fn cf_seg_fwd_body<T: Float>(o: &mut [T], x: &[T], mu: &[T], rs: &[T], wv: T, bv: T) {
    for (((v, &xv), &m), &r) in o.iter_mut().zip(x).zip(mu).zip(rs) {
        *v = (xv - m) * r * wv + bv;
    }
}
multiversion!(cf_seg_fwd, cf_seg_fwd_body, (o: &mut [T], x: &[T], mu: &[T], rs: &[T], wv: T, bv: T) -> ());

/// Channels-first backward sums of a position tile: `(mean_c g*w, mean_c g*w*xhat)`.
#[inline(always)]
fn cf_pq_body<T: Float>(xb: &[T], gb: &[T], w: &[T], s: usize, s0: usize, st: &[(f64, f64)], t: &mut [(f64, f64)]) {
    let l = t.len();
    let (mut p, mut q, mut mu) = ([0.0f64; TILE], [0.0f64; TILE], [0.0f64; TILE]);
    let (p, q, mu) = (&mut p[..l], &mut q[..l], &mut mu[..l]);
    mu.iter_mut().zip(st).for_each(|(m, s)| *m = s.0);
    for (ch, wc) in w.iter().enumerate() {
        let o = ch * s + s0;
        let wv = wc.to_f64();
        for ((((pv, qv), &xv), &gv), &m) in
            p.iter_mut().zip(q.iter_mut()).zip(&xb[o..o + l]).zip(&gb[o..o + l]).zip(mu.iter())
        {
            let gw = gv.to_f64() * wv;
            *pv += gw;
            *qv += gw * (xv.to_f64() - m);
        }
    }
    let cf = w.len() as f64;
    for (((o, &pv), &qv), stv) in t.iter_mut().zip(p.iter()).zip(q.iter()).zip(st) {
        *o = (pv / cf, qv * stv.1 / cf);
    }
}
multiversion!(cf_pq, cf_pq_body, (xb: &[T], gb: &[T], w: &[T], s: usize, s0: usize, st: &[(f64, f64)], t: &mut [(f64, f64)]) -> ());

/// Channels-first backward of one `(n, c)` segment; returns `(sum g*xhat, sum g)`.
#[inline(always)]
fn cf_seg_bwd_body<T: Float>(o: &mut [T], x: &[T], g: &[T], mu: &[T], rs: &[T], p: &[T], q: &[T], wv: T) -> (f64, f64) {
    // Fixed 8-wide blocks: known lengths let the loop vectorise, 8 partial sums per lane.
    let (mut sw, mut sb) = ([0.0f64; 8], [0.0f64; 8]);
    let len = o.len();
    let n8 = len / 8 * 8;
    for base in (0..n8).step_by(8) {
        let (ob, xb, gb) = (&mut o[base..base + 8], &x[base..base + 8], &g[base..base + 8]);
        let (mb, rb, pb, qb) = (&mu[base..base + 8], &rs[base..base + 8], &p[base..base + 8], &q[base..base + 8]);
        for l in 0..8 {
            let xh = (xb[l] - mb[l]) * rb[l];
            ob[l] = rb[l] * (gb[l] * wv - pb[l] - xh * qb[l]);
            sw[l] += (gb[l] * xh).to_f64();
            sb[l] += gb[l].to_f64();
        }
    }
    for k in n8..len {
        let xh = (x[k] - mu[k]) * rs[k];
        o[k] = rs[k] * (g[k] * wv - p[k] - xh * q[k]);
        sw[0] += (g[k] * xh).to_f64();
        sb[0] += g[k].to_f64();
    }
    (sw.iter().sum(), sb.iter().sum())
}
multiversion!(cf_seg_bwd, cf_seg_bwd_body, (o: &mut [T], x: &[T], g: &[T], mu: &[T], rs: &[T], p: &[T], q: &[T], wv: T) -> (f64, f64));

/// Spatial extents at least this long are processed one `(n, c)` segment at a time; shorter
/// ones (BatchNorm1d on `[N, C]`, tiny maps) row by row with per-position coefficients, so the
/// inner loops stay long and vectorise either way.
const SEGMENT_MIN: usize = 32;

/// Per-channel `(sum u, sum u * (x - k[c]))` over `[n, c, s]` data (see `pair`).
fn channel_sums<T: Float, const STATS: bool>(
    x: &[T],
    y: &[T],
    n: usize,
    c: usize,
    s: usize,
    k: &[f64],
) -> Vec<(f64, f64)> {
    let total = n * c * s;
    if total == 0 {
        return vec![(0.0, 0.0); c];
    }
    let isa = isa();
    if s >= SEGMENT_MIN {
        return (0..c)
            .into_par_iter()
            .with_min_len(min_len(total, n * s))
            .map(|ch| {
                let mut acc = (0.0, 0.0);
                for i in 0..n {
                    let o = (i * c + ch) * s;
                    let (u, v) = seg_sums(isa, &x[o..o + s], &y[o..o + s], k[ch], STATS);
                    acc.0 += u;
                    acc.1 += v;
                }
                acc
            })
            .collect();
    }
    // Rows of c*s elements: one accumulator per row position, folded to channels at the end.
    let l = c * s;
    let ke: Vec<f64> = (0..l).map(|e| k[e / s]).collect();
    let zero = || (vec![0.0f64; l], vec![0.0f64; l]);
    let (pu, pv) = x
        .par_chunks(l)
        .zip(y.par_chunks(l))
        .with_min_len(min_len(total, l))
        .fold(zero, |mut acc, (xr, yr)| {
            row_acc(isa, xr, yr, &ke, &mut acc.0, &mut acc.1, STATS);
            acc
        })
        .reduce(zero, |mut a, b| {
            a.0.iter_mut().zip(&b.0).for_each(|(p, q)| *p += q);
            a.1.iter_mut().zip(&b.1).for_each(|(p, q)| *p += q);
            a
        });
    (0..c).map(|ch| (pu[ch * s..(ch + 1) * s].iter().sum(), pv[ch * s..(ch + 1) * s].iter().sum())).collect()
}

/// `out = A[c] * y + B[c] * x + D[c]` over `[n, c, s]` data, with `coef[c] = (A, B, D)`.
fn channel_affine<T: Float>(x: &[T], y: &[T], c: usize, s: usize, coef: &[(T, T, T)]) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    if out.is_empty() {
        return out;
    }
    let isa = isa();
    if s >= SEGMENT_MIN {
        let ml = min_len(out.len(), s);
        out.par_chunks_mut(s).enumerate().with_min_len(ml).for_each(|(j, o)| {
            let (a, b, d) = coef[j % c];
            let off = j * s;
            affine_seg(isa, o, &y[off..off + s], &x[off..off + s], a, b, d);
        });
    } else {
        let l = c * s;
        let expand = |f: fn(&(T, T, T)) -> T| -> Vec<T> { (0..l).map(|e| f(&coef[e / s])).collect() };
        let (ae, be, de) = (expand(|p| p.0), expand(|p| p.1), expand(|p| p.2));
        out.par_chunks_mut(l).enumerate().with_min_len(min_len(x.len(), l)).for_each(|(i, o)| {
            let (xr, yr) = (&x[i * l..(i + 1) * l], &y[i * l..(i + 1) * l]);
            affine_row(isa, o, yr, xr, &ae, &be, &de);
        });
    }
    out
}

/// Calls `f(ch, offset, out_segment)` for each `(n, c)` segment of length `s` of `[n, c, s]`.
fn channel_map<T: Float>(out: &mut [T], c: usize, s: usize, f: impl Fn(usize, usize, &mut [T]) + Sync + Send) {
    if s == 0 {
        return;
    }
    let ml = min_len(out.len(), s);
    out.par_chunks_mut(s).enumerate().with_min_len(ml).for_each(|(j, o)| f(j % c, j * s, o));
}

/// Checks an optional per-feature tensor (dtype of `x`, shape `shape`).
fn check_param(op: &'static str, name: &str, p: Option<&Tensor>, x: &Tensor, shape: &[usize]) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    if p.dtype() != x.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: p.dtype() });
    }
    if p.device() != x.device() {
        return Err(Error::DeviceMismatch { op, lhs: x.device(), rhs: p.device() });
    }
    if p.dims() != shape {
        return shape_err(op, format!("{name} has shape {:?}, expected {shape:?} for input {:?}", p.dims(), x.dims()));
    }
    Ok(())
}

/// The values of an optional parameter, or `fill` repeated.
fn param_vec<T: Float>(p: Option<&Tensor>, len: usize, fill: f64) -> Result<Vec<T>> {
    match p {
        Some(p) => p.to_vec::<T>(),
        None => Ok(vec![T::from_f64(fill); len]),
    }
}

/// Inputs of a norm op (`x`, then weight and bias when present) and where to find them.
fn norm_inputs(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>) -> Vec<Tensor> {
    let mut v = vec![x.clone()];
    v.extend(w.cloned());
    v.extend(b.cloned());
    v
}

/// Gradients in the order of `norm_inputs`.
fn norm_grads(
    gx: Option<Tensor>,
    gw: Option<Tensor>,
    gb: Option<Tensor>,
    has_w: bool,
    has_b: bool,
) -> Vec<Option<Tensor>> {
    let mut v = vec![gx];
    if has_w {
        v.push(gw);
    }
    if has_b {
        v.push(gb);
    }
    v
}

fn requires(inputs: &[Tensor], i: Option<usize>) -> bool {
    i.is_some_and(|i| inputs[i].requires_grad())
}

// ------------------------------------------------------------------------------- batch norm

struct BatchNormOp {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    /// True when the statistics came from the batch (they depend on x).
    batch_stats: bool,
    has_w: bool,
    has_b: bool,
}

impl Op for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch_norm"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (n, c) = (x.dims()[0], x.dims()[1]);
        let s = numel(&x.dims()[2..]);
        let m = (n * s) as f64;
        let (wi, bi) = (self.has_w.then_some(1), self.has_b.then_some(1 + self.has_w as usize));
        let (mean, invstd) = (&self.mean, &self.invstd);
        with_float!(x.dtype(), "batch_norm", |T| {
            let w = param_vec::<T>(wi.map(|i| &inputs[i]), c, 1.0)?;
            let res = x.with_slice(|xs: &[T]| {
                g.with_slice(|gs: &[T]| -> Result<Vec<Option<Tensor>>> {
                    // sum_dy and sum_dy * (x - mean) per channel.
                    // (Eval mode with frozen affine parameters needs no reduction at all.)
                    let need_sums =
                        (self.batch_stats && x.requires_grad()) || requires(inputs, wi) || requires(inputs, bi);
                    let sums =
                        if need_sums { channel_sums::<T, false>(xs, gs, n, c, s, mean) } else { vec![(0.0, 0.0); c] };
                    let gx = if x.requires_grad() {
                        // dx = a*g + b*x + d per channel (closed form of the BN backward).
                        let coef: Vec<(T, T, T)> = (0..c)
                            .map(|ch| {
                                let a = w[ch].to_f64() * invstd[ch];
                                if self.batch_stats {
                                    let (sum_dy, sum_dy_xmu) = sums[ch];
                                    let b = -a * invstd[ch] * invstd[ch] * sum_dy_xmu / m;
                                    let d = -a * sum_dy / m - b * mean[ch];
                                    (T::from_f64(a), T::from_f64(b), T::from_f64(d))
                                } else {
                                    (T::from_f64(a), T::ZERO, T::ZERO)
                                }
                            })
                            .collect();
                        Some(Tensor::from_vec(channel_affine(xs, gs, c, s, &coef), x.dims())?)
                    } else {
                        None
                    };
                    let gw = if requires(inputs, wi) {
                        let v: Vec<T> = (0..c).map(|ch| T::from_f64(sums[ch].1 * invstd[ch])).collect();
                        Some(Tensor::from_vec(v, &[c])?)
                    } else {
                        None
                    };
                    let gb = if requires(inputs, bi) {
                        let v: Vec<T> = sums.iter().map(|p| T::from_f64(p.0)).collect();
                        Some(Tensor::from_vec(v, &[c])?)
                    } else {
                        None
                    };
                    Ok(norm_grads(gx, gw, gb, self.has_w, self.has_b))
                })
            })??;
            res
        })
    }
}

impl Tensor {
    /// Batch normalisation of `[N, C, *]` (PyTorch `F.batch_norm`). In training mode the batch
    /// statistics normalise (biased variance) and, when given, `running_mean`/`running_var` are
    /// updated in place: `r = (1 - momentum) r + momentum * stat` with the UNBIASED variance.
    /// In eval mode the running statistics normalise (both must be given).
    pub fn batch_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "batch_norm";
        if self.rank() < 2 {
            return shape_err(op, format!("input must be [N, C, *], got {:?}", self.dims()));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        let s = numel(&self.dims()[2..]);
        check_param(op, "weight", weight, self, &[c])?;
        check_param(op, "bias", bias, self, &[c])?;
        check_param(op, "running_mean", running_mean, self, &[c])?;
        check_param(op, "running_var", running_var, self, &[c])?;
        if training && n * s <= 1 {
            return shape_err(
                op,
                format!("expected more than 1 value per channel when training, got {:?}", self.dims()),
            );
        }
        let m = n * s;
        if !self.device().is_cpu() {
            let running = [running_mean, running_var];
            return crate::cuda::norm::batch_norm(self, weight, bias, running, training, momentum, eps);
        }
        with_float!(self.dtype(), op, |T| {
            let w = param_vec::<T>(weight, c, 1.0)?;
            let b = param_vec::<T>(bias, c, 0.0)?;
            let out = self.with_slice(|xs: &[T]| -> Result<(Vec<T>, Vec<f64>, Vec<f64>)> {
                let (mean, var) = if training {
                    // Shifted sums (shift = first value of the channel) keep E[x^2]-E[x]^2 exact
                    // enough even when |mean| >> std.
                    let shift: Vec<f64> = (0..c).map(|ch| xs[ch * s].to_f64()).collect();
                    let sums = channel_sums::<T, true>(xs, xs, n, c, s, &shift);
                    let mf = m as f64;
                    let mean: Vec<f64> = sums.iter().zip(&shift).map(|(p, k)| k + p.0 / mf).collect();
                    let var: Vec<f64> = sums.iter().map(|p| (p.1 / mf - (p.0 / mf) * (p.0 / mf)).max(0.0)).collect();
                    (mean, var)
                } else {
                    let (Some(rm), Some(rv)) = (running_mean, running_var) else {
                        return Err(Error::Msg(format!(
                            "{op}: eval mode needs running_mean and running_var (input {:?})",
                            self.dims()
                        )));
                    };
                    (rm.to_vec_f64()?, rv.to_vec_f64()?)
                };
                let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                let coef: Vec<(T, T, T)> = (0..c)
                    .map(|ch| {
                        let sc = w[ch].to_f64() * invstd[ch];
                        (T::ZERO, T::from_f64(sc), T::from_f64(b[ch].to_f64() - mean[ch] * sc))
                    })
                    .collect();
                let out = channel_affine(xs, xs, c, s, &coef);
                if training {
                    let unbias = m as f64 / (m as f64 - 1.0);
                    if let Some(rm) = running_mean {
                        rm.update::<T>(|r| {
                            for (r, mu) in r.iter_mut().zip(&mean) {
                                *r = T::from_f64((1.0 - momentum) * r.to_f64() + momentum * mu);
                            }
                        })?;
                    }
                    if let Some(rv) = running_var {
                        rv.update::<T>(|r| {
                            for (r, v) in r.iter_mut().zip(&var) {
                                *r = T::from_f64((1.0 - momentum) * r.to_f64() + momentum * v * unbias);
                            }
                        })?;
                    }
                }
                Ok((out, mean, invstd))
            })??;
            let (out, mean, invstd) = out;
            let saved =
                BatchNormOp { mean, invstd, batch_stats: training, has_w: weight.is_some(), has_b: bias.is_some() };
            Ok(Tensor::from_vec_op(out, self.dims(), norm_inputs(self, weight, bias), saved))
        })
    }
}

// ------------------------------------------------------------------ layer norm (channels-last)

/// `(sum g*w, sum g*w*(x - mu))` over one row, 8 lanes.
#[inline(always)]
fn row_dots<T: Float>(x: &[T], g: &[T], w: &[T], mu: f64) -> (f64, f64) {
    let (mut p, mut q) = ([0.0f64; 8], [0.0f64; 8]);
    let (xc, gc, wc) = (x.chunks_exact(8), g.chunks_exact(8), w.chunks_exact(8));
    let (xr, gr, wr) = (xc.remainder(), gc.remainder(), wc.remainder());
    for ((xs, gs), ws) in xc.zip(gc).zip(wc) {
        for l in 0..8 {
            let gw = gs[l].to_f64() * ws[l].to_f64();
            p[l] += gw;
            q[l] += gw * (xs[l].to_f64() - mu);
        }
    }
    for ((&xv, &gv), &wv) in xr.iter().zip(gr).zip(wr) {
        let gw = gv.to_f64() * wv.to_f64();
        p[0] += gw;
        q[0] += gw * (xv.to_f64() - mu);
    }
    (p.iter().sum(), q.iter().sum())
}

/// Mean and 1/sqrt(biased var + eps) of one row (two passes over a row that is in cache).
#[inline(always)]
fn row_stats<T: Float>(x: &[T], eps: f64) -> (f64, f64) {
    let m = x.len() as f64;
    let mu = sum2(x, x, |v, _| (v.to_f64(), 0.0)).0 / m;
    let var = sum2(x, x, |v, _| {
        let d = v.to_f64() - mu;
        (d * d, 0.0)
    })
    .0 / m;
    (mu, 1.0 / (var + eps).sqrt())
}

struct LayerNormOp {
    /// Elements per normalised row.
    m: usize,
    mean: Vec<f64>,
    rstd: Vec<f64>,
    has_w: bool,
    has_b: bool,
}

/// Weight and bias gradient accumulators of a block of rows (empty when not needed).
type WbAcc = (Vec<f64>, Vec<f64>);

fn add_acc(mut a: WbAcc, b: WbAcc) -> WbAcc {
    if a.0.is_empty() {
        return b;
    }
    a.0.iter_mut().zip(&b.0).for_each(|(p, q)| *p += q);
    a.1.iter_mut().zip(&b.1).for_each(|(p, q)| *p += q);
    a
}

impl Op for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let m = self.m;
        let (wi, bi) = (self.has_w.then_some(1), self.has_b.then_some(1 + self.has_w as usize));
        let need_wb = requires(inputs, wi) || requires(inputs, bi);
        let (mean, rstd) = (&self.mean, &self.rstd);
        with_float!(x.dtype(), "layer_norm", |T| {
            let w = param_vec::<T>(wi.map(|i| &inputs[i]), m, 1.0)?;
            let isa = isa();
            let (gx, (dw, db)) = x.with_slice(|xs: &[T]| {
                g.with_slice(|gs: &[T]| {
                    let mut gx = vec![T::ZERO; xs.len()];
                    let rows_per = (4096 / m).max(1);
                    let zero = || -> WbAcc {
                        if need_wb {
                            (vec![0.0; m], vec![0.0; m])
                        } else {
                            (Vec::new(), Vec::new())
                        }
                    };
                    // dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)); dw += g*xhat; db += g.
                    let acc = gx
                        .par_chunks_mut(rows_per * m)
                        .enumerate()
                        .with_min_len(min_len(xs.len(), rows_per * m))
                        .fold(zero, |mut acc, (blk, o)| {
                            for (k, orow) in o.chunks_exact_mut(m).enumerate() {
                                let r = blk * rows_per + k;
                                let (xr, gr) = (&xs[r * m..(r + 1) * m], &gs[r * m..(r + 1) * m]);
                                let (aw, ab) = (&mut acc.0, &mut acc.1);
                                ln_row_bwd(isa, xr, gr, &w, mean[r], rstd[r], orow, aw, ab);
                            }
                            acc
                        })
                        .reduce(zero, add_acc);
                    (gx, acc)
                })
            })??;
            let gx = if x.requires_grad() { Some(Tensor::from_vec(gx, x.dims())?) } else { None };
            let grad_of = |i: Option<usize>, v: &[f64]| -> Result<Option<Tensor>> {
                match i {
                    Some(i) if inputs[i].requires_grad() => Ok(Some(Tensor::from_vec(
                        v.iter().map(|&a| T::from_f64(a)).collect::<Vec<T>>(),
                        inputs[i].dims(),
                    )?)),
                    _ => Ok(None),
                }
            };
            Ok(norm_grads(gx, grad_of(wi, &dw)?, grad_of(bi, &db)?, self.has_w, self.has_b))
        })
    }
}

// ----------------------------------------------------------------- layer norm (channels-first)

/// Lanes per task of the channels-first statistics (a `[C, TILE]` block stays in L2).
const TILE: usize = 256;

/// Runs `f(i, s0, tile)` over a per-position buffer `[n, s]` split into `(image i, lanes s0..)`
/// tiles of at most `TILE` lanes.
fn position_tiles<E: Send>(buf: &mut [E], s: usize, work: usize, f: impl Fn(usize, usize, &mut [E]) + Sync + Send) {
    if s == 0 {
        return;
    }
    let ml = if work < PAR_THRESHOLD { usize::MAX } else { 1 };
    buf.par_chunks_mut(s).enumerate().with_min_len(ml).for_each(|(i, row)| {
        row.par_chunks_mut(TILE).enumerate().with_min_len(ml).for_each(|(t, tile)| f(i, t * TILE, tile));
    });
}

/// Splits per-position `(a, b)` f64 pairs into two `T` arrays for the elementwise passes.
fn stats_in<T: Float>(v: &[(f64, f64)]) -> (Vec<T>, Vec<T>) {
    v.iter().map(|&(a, b)| (T::from_f64(a), T::from_f64(b))).unzip()
}

struct LayerNormCfOp {
    /// Per (image, position): (mean, rstd), `[N * S]`.
    stats: Vec<(f64, f64)>,
    has_w: bool,
    has_b: bool,
}

impl Op for LayerNormCfOp {
    fn name(&self) -> &'static str {
        "layer_norm_channels_first"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (n, c) = (x.dims()[0], x.dims()[1]);
        let s = numel(&x.dims()[2..]);
        let (wi, bi) = (self.has_w.then_some(1), self.has_b.then_some(1 + self.has_w as usize));
        let stats = &self.stats;
        with_float!(x.dtype(), "layer_norm_channels_first", |T| {
            let w = param_vec::<T>(wi.map(|i| &inputs[i]), c, 1.0)?;
            let isa = isa();
            let (gx, partial) = x.with_slice(|xs: &[T]| {
                g.with_slice(|gs: &[T]| {
                    // Per position: p = mean_c(g*w), q = mean_c(g*w*xhat).
                    let mut pq = vec![(0.0f64, 0.0f64); n * s];
                    position_tiles(&mut pq, s, xs.len(), |i, s0, t| {
                        let blk = i * c * s..(i + 1) * c * s;
                        let st = &stats[i * s + s0..][..t.len()];
                        cf_pq(isa, &xs[blk.clone()], &gs[blk], &w, s, s0, st, t)
                    });
                    // dx = rstd * (g*w - p - xhat*q); per (image, channel) partial dw, db.
                    let (mu_t, rs_t) = stats_in::<T>(stats);
                    let (p_t, q_t) = stats_in::<T>(&pq);
                    let mut gx = vec![T::ZERO; xs.len()];
                    let partial: Vec<(f64, f64)> = gx
                        .par_chunks_mut(s.max(1))
                        .enumerate()
                        .with_min_len(min_len(xs.len(), s))
                        .map(|(j, o)| {
                            let (p0, off, wv) = (j / c * s, j * s, w[j % c]);
                            let (xr, gr) = (&xs[off..off + s], &gs[off..off + s]);
                            let (mu, rs, p, q) =
                                (&mu_t[p0..p0 + s], &rs_t[p0..p0 + s], &p_t[p0..p0 + s], &q_t[p0..p0 + s]);
                            cf_seg_bwd(isa, o, xr, gr, mu, rs, p, q, wv)
                        })
                        .collect();
                    (gx, partial)
                })
            })??;
            let gx = if x.requires_grad() { Some(Tensor::from_vec(gx, x.dims())?) } else { None };
            let per_channel = |sel: fn(&(f64, f64)) -> f64| -> Vec<T> {
                let mut v = vec![0.0f64; c];
                for (j, p) in partial.iter().enumerate() {
                    v[j % c] += sel(p);
                }
                v.into_iter().map(T::from_f64).collect()
            };
            let gw = if requires(inputs, wi) { Some(Tensor::from_vec(per_channel(|p| p.0), &[c])?) } else { None };
            let gb = if requires(inputs, bi) { Some(Tensor::from_vec(per_channel(|p| p.1), &[c])?) } else { None };
            Ok(norm_grads(gx, gw, gb, self.has_w, self.has_b))
        })
    }
}

impl Tensor {
    /// LayerNorm over the last `normalized_trailing_dims` dims (PyTorch `F.layer_norm` with
    /// `normalized_shape = dims[rank-k..]`): biased variance, `eps` inside the square root;
    /// `weight`/`bias` have the normalised shape.
    pub fn layer_norm(
        &self,
        normalized_trailing_dims: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "layer_norm";
        let k = normalized_trailing_dims;
        if k == 0 || k > self.rank() {
            return shape_err(op, format!("cannot normalise the last {k} dims of {:?}", self.dims()));
        }
        let nshape = &self.dims()[self.rank() - k..];
        let m = numel(nshape);
        if m == 0 {
            return shape_err(op, format!("normalised shape {nshape:?} of {:?} is empty", self.dims()));
        }
        check_param(op, "weight", weight, self, nshape)?;
        check_param(op, "bias", bias, self, nshape)?;
        if !self.device().is_cpu() {
            return crate::cuda::norm::layer_norm(self, k, false, weight, bias, eps);
        }
        with_float!(self.dtype(), op, |T| {
            let w = param_vec::<T>(weight, m, 1.0)?;
            let b = param_vec::<T>(bias, m, 0.0)?;
            let isa = isa();
            let (out, stats) = self.with_slice(|xs: &[T]| {
                let mut out = vec![T::ZERO; xs.len()];
                let stats: Vec<(f64, f64)> = out
                    .par_chunks_mut(m)
                    .enumerate()
                    .with_min_len(min_len(xs.len(), m))
                    .map(|(r, o)| ln_row_fwd(isa, &xs[r * m..(r + 1) * m], &w, &b, eps, o))
                    .collect();
                (out, stats)
            })?;
            let (mean, rstd) = stats.into_iter().unzip();
            let saved = LayerNormOp { m, mean, rstd, has_w: weight.is_some(), has_b: bias.is_some() };
            Ok(Tensor::from_vec_op(out, self.dims(), norm_inputs(self, weight, bias), saved))
        })
    }

    /// LayerNorm over the channel dim of `[N, C, *]` (ConvNeXt's `channels_first` LayerNorm):
    /// each (image, position) is normalised over C; `weight`/`bias` are `[C]`.
    pub fn layer_norm_channels_first(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "layer_norm_channels_first";
        if self.rank() < 2 || self.dims()[1] == 0 {
            return shape_err(op, format!("input must be [N, C, *] with C > 0, got {:?}", self.dims()));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        let s = numel(&self.dims()[2..]);
        check_param(op, "weight", weight, self, &[c])?;
        check_param(op, "bias", bias, self, &[c])?;
        if !self.device().is_cpu() {
            return crate::cuda::norm::layer_norm(self, 0, true, weight, bias, eps);
        }
        with_float!(self.dtype(), op, |T| {
            let w = param_vec::<T>(weight, c, 1.0)?;
            let b = param_vec::<T>(bias, c, 0.0)?;
            let isa = isa();
            let (out, stats) = self.with_slice(|xs: &[T]| {
                let mut stats = vec![(0.0f64, 0.0f64); n * s];
                position_tiles(&mut stats, s, xs.len(), |i, s0, t| {
                    cf_stats(isa, &xs[i * c * s..(i + 1) * c * s], c, s, s0, eps, t)
                });
                let (mu_t, rs_t) = stats_in::<T>(&stats);
                let mut out = vec![T::ZERO; xs.len()];
                channel_map(&mut out, c, s, |ch, off, o| {
                    let p0 = off / (c * s) * s;
                    let (mu, rs) = (&mu_t[p0..p0 + s], &rs_t[p0..p0 + s]);
                    cf_seg_fwd(isa, o, &xs[off..off + s], mu, rs, w[ch], b[ch]);
                });
                (out, stats)
            })?;
            let saved = LayerNormCfOp { stats, has_w: weight.is_some(), has_b: bias.is_some() };
            Ok(Tensor::from_vec_op(out, self.dims(), norm_inputs(self, weight, bias), saved))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::isa::Isa;

    /// Every instruction set this CPU can run, baseline first.
    fn isas() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Base];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    fn close(what: &str, a: &[f64], b: &[f64]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    fn f(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    /// Runs `run(isa)` on every ISA and checks the outputs agree with the baseline build.
    fn same_on_all_isas(what: &str, run: impl Fn(Isa) -> Vec<f64>) {
        let base = run(Isa::Base);
        assert!(base.iter().all(|v| v.is_finite()), "{what}: non-finite baseline");
        for isa in isas() {
            close(what, &run(isa), &base);
        }
    }

    #[test]
    fn leaf_kernels_agree_across_instruction_sets() {
        let len = 301; // not a multiple of 8 or 16: exercises the tails
        let (x, y, z) = (data(len, 1), data(len, 2), data(len, 3));
        let ke: Vec<f64> = f(&data(len, 4));
        for stats in [true, false] {
            same_on_all_isas("seg_sums", |isa| {
                let (u, v) = seg_sums(isa, &x, &y, 0.3, stats);
                vec![u, v]
            });
            same_on_all_isas("row_acc", |isa| {
                let (mut u, mut v) = (vec![1.0; len], vec![2.0; len]);
                row_acc(isa, &x, &y, &ke, &mut u, &mut v, stats);
                u.extend(v);
                u
            });
        }
        same_on_all_isas("affine_seg", |isa| {
            let mut o = vec![0.0f32; len];
            affine_seg(isa, &mut o, &x, &y, 0.5, -1.5, 0.25);
            f(&o)
        });
        same_on_all_isas("affine_row", |isa| {
            let mut o = vec![0.0f32; len];
            affine_row(isa, &mut o, &x, &y, &z, &x, &y);
            f(&o)
        });
        same_on_all_isas("ln_row_fwd", |isa| {
            let mut o = vec![0.0f32; len];
            let (m, r) = ln_row_fwd(isa, &x, &y, &z, 1e-6, &mut o);
            let mut v = f(&o);
            v.extend([m, r]);
            v
        });
        same_on_all_isas("ln_row_bwd", |isa| {
            let (mut o, mut aw, mut ab) = (vec![0.0f32; len], vec![0.5; len], vec![0.0; len]);
            ln_row_bwd(isa, &x, &y, &z, 0.1, 1.3, &mut o, &mut aw, &mut ab);
            let mut v = f(&o);
            v.extend(aw);
            v.extend(ab);
            v
        });
        // channels-first: an image block [c, s] and a tile of positions in it
        let (c, s, s0, l) = (7, 43, 5, 37);
        let (xb, gb, w) = (data(c * s, 5), data(c * s, 6), data(c, 7));
        same_on_all_isas("cf_stats + cf_pq", |isa| {
            let mut st = vec![(0.0, 0.0); l];
            cf_stats(isa, &xb, c, s, s0, 1e-6, &mut st);
            let mut pq = vec![(0.0, 0.0); l];
            cf_pq(isa, &xb, &gb, &w, s, s0, &st, &mut pq);
            st.iter().chain(&pq).flat_map(|&(a, b)| [a, b]).collect()
        });
        same_on_all_isas("cf_seg_fwd", |isa| {
            let mut o = vec![0.0f32; len];
            cf_seg_fwd(isa, &mut o, &x, &y, &z, 0.7, -0.2);
            f(&o)
        });
        same_on_all_isas("cf_seg_bwd", |isa| {
            let mut o = vec![0.0f32; len];
            let (a, b) = cf_seg_bwd(isa, &mut o, &x, &y, &z, &x, &y, &z, 0.9);
            let mut v = f(&o);
            v.extend([a, b]);
            v
        });
    }
}
