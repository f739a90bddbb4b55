//! Shared helpers for the sparse contract tests: random masks, and naive f64 reference loops for
//! SparK's dense simulation (dense op on the zero-filled input, then multiply by the output
//! mask). Written independently of the crate's kernels on purpose.
#![allow(dead_code)]

use spark_engine::{DType, Device, Rng, Tensor};
use spark_sparse::{ActiveSet, SparseTensor};
use std::sync::Arc;

pub const RATIOS: [f64; 5] = [0.0, 0.25, 0.6, 0.9, 1.0];

/// A `[batch, h, w]` map with exactly round(h*w*(1-ratio)) active sites per image (SparK style).
pub fn random_mask(rng: &mut Rng, batch: usize, h: usize, w: usize, ratio: f64) -> Vec<bool> {
    let keep = ((h * w) as f64 * (1.0 - ratio)).round() as usize;
    let mut m = Vec::with_capacity(batch * h * w);
    for _ in 0..batch {
        let mut img: Vec<bool> = (0..h * w).map(|i| i < keep).collect();
        rng.shuffle(&mut img);
        m.extend(img);
    }
    m
}

pub fn randn_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.normal()).collect()
}

pub fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap().to_dtype(dtype).unwrap()
}

/// Random features for `set` as a variable of `dtype`, and the same values as f64.
pub fn random_sparse(rng: &mut Rng, set: &Arc<ActiveSet>, c: usize, dtype: DType) -> (SparseTensor, Vec<f64>) {
    let v = randn_vec(rng, set.len() * c);
    let f = tensor(&v, &[set.len(), c], dtype).to_variable();
    (SparseTensor::new(f, set.clone()).unwrap(), v)
}

/// Rows `[N, C]` over `set` scattered into dense NCHW (zeros at inactive sites).
pub fn densify(rows: &[f64], set: &ActiveSet, c: usize) -> Vec<f64> {
    let (h, w) = (set.h(), set.w());
    let mut d = vec![0.0; set.batch() * c * h * w];
    for (r, &[b, y, x]) in set.coords().iter().enumerate() {
        for ch in 0..c {
            d[((b * c + ch) * h + y) * w + x] = rows[r * c + ch];
        }
    }
    d
}

/// Dense NCHW values at the active sites of `set`, as rows `[N, C]`.
pub fn rows_of(dense: &[f64], set: &ActiveSet, c: usize) -> Vec<f64> {
    let (h, w) = (set.h(), set.w());
    let mut out = Vec::with_capacity(set.len() * c);
    for &[b, y, x] in set.coords() {
        for ch in 0..c {
            out.push(dense[((b * c + ch) * h + y) * w + x]);
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
pub struct Geo {
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub p: [usize; 2],
    pub d: [usize; 2],
    pub groups: usize,
}

pub fn out_hw(h: usize, w: usize, g: &Geo) -> (usize, usize) {
    let o = |n: usize, a: usize| (n + 2 * g.p[a] - g.d[a] * (g.k[a] - 1) - 1) / g.s[a] + 1;
    (o(h, 0), o(w, 1))
}

/// Naive dense conv2d (PyTorch semantics), f64.
pub fn conv_ref(
    x: &[f64],
    dims: [usize; 4],
    wt: &[f64],
    cout: usize,
    bias: Option<&[f64]>,
    g: &Geo,
) -> (Vec<f64>, usize, usize) {
    let [b, cin, h, w] = dims;
    let (oh, ow) = out_hw(h, w, g);
    let (cig, cog) = (cin / g.groups, cout / g.groups);
    let mut y = vec![0.0; b * cout * oh * ow];
    for bb in 0..b {
        for co in 0..cout {
            let grp = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..cig {
                        for ky in 0..g.k[0] {
                            let iy = (oy * g.s[0] + ky * g.d[0]) as isize - g.p[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..g.k[1] {
                                let ix = (ox * g.s[1] + kx * g.d[1]) as isize - g.p[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((bb * cin + grp * cig + ci) * h + iy as usize) * w + ix as usize];
                                s += xv * wt[((co * cig + ci) * g.k[0] + ky) * g.k[1] + kx];
                            }
                        }
                    }
                    y[((bb * cout + co) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    (y, oh, ow)
}

/// Naive conv2d backward for upstream `gy` `[B, Cout, OH, OW]`: (grad input, grad weight, grad bias).
pub fn conv_ref_backward(
    x: &[f64],
    dims: [usize; 4],
    wt: &[f64],
    cout: usize,
    gy: &[f64],
    g: &Geo,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [b, cin, h, w] = dims;
    let (oh, ow) = out_hw(h, w, g);
    let (cig, cog) = (cin / g.groups, cout / g.groups);
    let mut gx = vec![0.0; x.len()];
    let mut gw = vec![0.0; wt.len()];
    let mut gb = vec![0.0; cout];
    for bb in 0..b {
        for co in 0..cout {
            let grp = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let gv = gy[((bb * cout + co) * oh + oy) * ow + ox];
                    gb[co] += gv;
                    for ci in 0..cig {
                        for ky in 0..g.k[0] {
                            let iy = (oy * g.s[0] + ky * g.d[0]) as isize - g.p[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..g.k[1] {
                                let ix = (ox * g.s[1] + kx * g.d[1]) as isize - g.p[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let xi = ((bb * cin + grp * cig + ci) * h + iy as usize) * w + ix as usize;
                                let wi = ((co * cig + ci) * g.k[0] + ky) * g.k[1] + kx;
                                gx[xi] += gv * wt[wi];
                                gw[wi] += gv * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (gx, gw, gb)
}

/// Naive dense pool (PyTorch max_pool2d with -inf padding, or avg_pool2d count_include_pad).
/// Returns (output, grad of the input for upstream `gy`).
pub fn pool_ref(
    x: &[f64],
    dims: [usize; 4],
    k: usize,
    s: usize,
    p: usize,
    max: bool,
    gy: &[f64],
) -> (Vec<f64>, Vec<f64>, usize, usize) {
    let [b, c, h, w] = dims;
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut y = vec![0.0; b * c * oh * ow];
    let mut gx = vec![0.0; x.len()];
    for bc in 0..b * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let oi = (bc * oh + oy) * ow + ox;
                let mut best = f64::NEG_INFINITY;
                let mut arg = usize::MAX;
                let mut sum = 0.0;
                let mut idx = Vec::new();
                for ky in 0..k {
                    let iy = (oy * s + ky) as isize - p as isize;
                    for kx in 0..k {
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy < 0 || iy >= h as isize || ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let xi = (bc * h + iy as usize) * w + ix as usize;
                        if x[xi] > best {
                            best = x[xi];
                            arg = xi;
                        }
                        sum += x[xi];
                        idx.push(xi);
                    }
                }
                if max {
                    y[oi] = best;
                    gx[arg] += gy[oi];
                } else {
                    y[oi] = sum / (k * k) as f64;
                    for xi in idx {
                        gx[xi] += gy[oi] / (k * k) as f64;
                    }
                }
            }
        }
    }
    (y, gx, oh, ow)
}

/// Asserts closeness relative to the largest reference magnitude: |a-b| <= tol*(max|b| + |b|).
pub fn assert_rel(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths {} vs {}", got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (scale + b.abs()),
            "{what}: element {i}: got {a} want {b} (scale {scale}, tol {tol})"
        );
    }
}

pub fn tol(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-10
    } else {
        1e-4
    }
}

pub fn dense_tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap().to_dtype(dtype).unwrap().to_device(Device::Cpu).unwrap()
}
