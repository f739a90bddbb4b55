//! Transposed convolution forward by sub-pixel decomposition.
//!
//! Along one axis with stride `s`, padding `p` and kernel `k`, output `o` receives input `i`
//! through tap `kk` exactly when `i*s - p + kk = o`. Split the outputs by phase `r = o mod s`
//! (`o = r + s*t`): only taps with `kk ≡ r + p (mod s)` reach phase `r`. With
//! `q = (r + p) mod s` and `c = (r + p) div s` these are `kk = q + s*j` (`j = 0, 1, ..` while
//! `kk < k`), and they read `i = t + c - j`. So each phase is a stride-1 correlation of the input
//! with `ceil((k - q) / s)` taps at offsets `c - j` (a 4x4/s2/p1 transposed conv is four 2x2
//! convs, offsets {0, -1} or {1, 0}). Each `(ry, rx)` phase runs on the f32 implicit GEMM
//! (`Im2col` over the phase's taps) and is written interleaved into the output: no zero-stuffed
//! input, no column matrix and no col2im scatter-add.
//!
//! Dilation > 1, depthwise geometries (direct kernel already) and f64 keep the adjoint path:
//! `conv2d_backward_input` of the matching conv2d.

use super::conv::{conv2d_backward_input, ConvGeom};
use super::conv_implicit::{as_f32, as_f32_mut, Im2col, Tap, BATCH_BELOW_L};
use super::gemm::{gemm_packed, MatRef};
use super::scratch::with_scratch;
use crate::Float;
use rayon::prelude::*;

/// `y = conv_transpose2d(x, w) + bias`, described by the conv2d `g` it is the adjoint of: `x` is
/// `g`'s output shape `[n, g.cout, g.oh, g.ow]`, `y` is `g`'s input shape `[n, g.cin, g.h, g.w]`,
/// and `w` is `[g.cout, g.cin / groups, kh, kw]` (the same buffer in both readings).
pub fn conv_transpose2d_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    if subpixel_applies(g) {
        if let (Some(xf), Some(wf)) = (as_f32(x), as_f32(w)) {
            let mut y = vec![T::ZERO; g.in_len()];
            let bf = bias.map(|b| as_f32(b).expect("bias has the input's dtype"));
            subpixel_forward(xf, wf, bf, g, as_f32_mut(&mut y).expect("T is f32"));
            return y;
        }
    }
    let mut y = conv2d_backward_input(x, w, g);
    if let Some(b) = bias {
        let plane = g.h * g.w;
        if plane > 0 {
            for (p, c) in y.chunks_mut(plane).zip((0..g.cin).cycle()) {
                p.iter_mut().for_each(|v| *v += b[c]);
            }
        }
    }
    y
}

/// Whether `conv_transpose2d_forward` takes the sub-pixel path (for f32 operands): strided,
/// undilated, not depthwise. Stride 1 already runs as a plain forward conv (flipped kernel).
pub fn subpixel_applies(g: &ConvGeom) -> bool {
    g.stride != [1, 1] && g.dil == [1, 1] && !g.is_depthwise()
}

/// The outputs `r, r + s, ..` of one phase along one axis and the taps that reach them.
struct AxisPhase {
    r: usize,
    len: usize,
    /// (kernel index, input offset): phase output `t` reads input `t + offset`.
    taps: Vec<(usize, isize)>,
}

/// The phases of an axis with stride `s`, padding `pad`, kernel `k` and `out` outputs (phases
/// past `out` have no outputs and are left out).
fn axis_phases(s: usize, pad: usize, k: usize, out: usize) -> Vec<AxisPhase> {
    (0..s.min(out))
        .map(|r| {
            let (q, c) = ((r + pad) % s, (r + pad) / s);
            let taps = (q..k).step_by(s).enumerate().map(|(j, kk)| (kk, c as isize - j as isize)).collect();
            AxisPhase { r, len: (out - r).div_ceil(s), taps }
        })
        .collect()
}

/// One `(ry, rx)` phase as a stride-1 convolution: input `[n, g.cout, g.oh, g.ow]`, output
/// `[n, g.cin, len_y, len_x]`, weight `[groups][cout_g][cin_g * taps]`.
struct Phase {
    ry: usize,
    rx: usize,
    geom: ConvGeom,
    taps: Vec<Tap>,
    w: Vec<f32>,
}

fn phases(w: &[f32], g: &ConvGeom) -> Vec<Phase> {
    // Our input channels are g's output channels and vice versa.
    let (cin_g, cout_g, plane_in) = (g.cout_g(), g.cin_g(), g.oh * g.ow);
    let py = axis_phases(g.stride[0], g.pad[0], g.kh, g.h);
    let px = axis_phases(g.stride[1], g.pad[1], g.kw, g.w);
    let mut out = Vec::with_capacity(py.len() * px.len());
    for ay in &py {
        for ax in &px {
            let mut taps = Vec::with_capacity(cin_g * ay.taps.len() * ax.taps.len());
            for ci in 0..cin_g {
                for &(_, oy) in &ay.taps {
                    taps.extend(ax.taps.iter().map(|&(_, ox)| (ci * plane_in, oy, ox)));
                }
            }
            let mut wp = Vec::with_capacity(g.groups * cout_g * taps.len());
            for gi in 0..g.groups {
                for co in 0..cout_g {
                    for ci in 0..cin_g {
                        let w0 = ((gi * cin_g + ci) * cout_g + co) * g.kh * g.kw;
                        for &(ky, _) in &ay.taps {
                            wp.extend(ax.taps.iter().map(|&(kx, _)| w[w0 + ky * g.kw + kx]));
                        }
                    }
                }
            }
            let geom = ConvGeom {
                n: g.n,
                cin: g.cout,
                h: g.oh,
                w: g.ow,
                cout: g.cin,
                kh: ay.taps.len(),
                kw: ax.taps.len(),
                oh: ay.len,
                ow: ax.len,
                stride: [1, 1],
                pad: [0, 0],
                dil: [1, 1],
                groups: g.groups,
            };
            out.push(Phase { ry: ay.r, rx: ax.r, geom, taps, w: wp });
        }
    }
    out
}

/// Writes one image-group's phase result `c[co][t * len_x + u]` (row `co` at `c[co * ldc..]`)
/// to `y[co][ry + sy*t][rx + sx*u]` (planes of `h * w`), adding `bias[co]`.
#[allow(clippy::too_many_arguments)]
fn interleave(
    c: &[f32],
    ldc: usize,
    ph: &Phase,
    s: [usize; 2],
    w: usize,
    plane: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (ly, lx) = (ph.geom.oh, ph.geom.ow);
    for (co, yp) in y.chunks_mut(plane).enumerate() {
        let b0 = bias.map_or(0.0, |b| b[co]);
        let src = &c[co * ldc..co * ldc + ly * lx];
        for (t, sr) in src.chunks(lx).enumerate() {
            let oy = ph.ry + s[0] * t;
            let row = &mut yp[oy * w + ph.rx..(oy + 1) * w];
            for (d, &v) in row.iter_mut().step_by(s[1]).zip(sr) {
                *d = v + b0;
            }
        }
    }
}

/// Sub-pixel transposed convolution into `y` (`g.in_len()`), bias added; see the module docs.
/// Panics unless `subpixel_applies(g)` and the slices have `g`'s lengths.
pub fn subpixel_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom, y: &mut [f32]) {
    assert!(subpixel_applies(g), "subpixel_forward: needs stride > 1, dilation 1, not depthwise");
    assert!(x.len() == g.out_len() && w.len() == g.weight_len() && y.len() == g.in_len(), "subpixel_forward: lengths");
    if y.is_empty() {
        return;
    }
    let (cout_g, plane_out) = (g.cin_g(), g.h * g.w);
    let (img_in, grp_in, img_out) = (g.cout * g.oh * g.ow, g.cout_g() * g.oh * g.ow, g.cin * plane_out);
    let phases = phases(w, g);
    let bias_g = |gi: usize| bias.map(|b| &b[gi * cout_g..(gi + 1) * cout_g]);
    if g.n > 1 && phases.iter().all(|p| p.geom.l() < BATCH_BELOW_L) {
        // Small maps: one GEMM per phase and group over the whole batch (N = n * L fills the
        // microkernel's column panels), then interleave per image.
        let max_l = phases.iter().map(|p| p.geom.l()).max().unwrap_or(0);
        let mut c = vec![0.0f32; cout_g * g.n * max_l];
        for ph in &phases {
            let (l, k) = (ph.geom.l(), ph.geom.k());
            let nl = g.n * l;
            for gi in 0..g.groups {
                let src = Im2col::new(&x[gi * grp_in..], &ph.geom, &ph.taps, img_in);
                let wg = MatRef::new(&ph.w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k);
                gemm_packed((cout_g, nl, k), &wg, &src, &mut c, nl, false);
                y.par_chunks_mut(img_out).enumerate().for_each(|(img, yi)| {
                    let yg = &mut yi[gi * cout_g * plane_out..(gi + 1) * cout_g * plane_out];
                    interleave(&c[img * l..], nl, ph, g.stride, g.w, plane_out, bias_g(gi), yg);
                });
            }
        }
        return;
    }
    y.par_chunks_mut(img_out).enumerate().for_each(|(ni, yi)| {
        let xi = &x[ni * img_in..(ni + 1) * img_in];
        for ph in &phases {
            let (l, k) = (ph.geom.l(), ph.geom.k());
            with_scratch(cout_g * l, |c: &mut [f32]| {
                for gi in 0..g.groups {
                    let src = Im2col::new(&xi[gi * grp_in..(gi + 1) * grp_in], &ph.geom, &ph.taps, 0);
                    let wg = MatRef::new(&ph.w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k);
                    gemm_packed((cout_g, l, k), &wg, &src, c, l, false);
                    let yg = &mut yi[gi * cout_g * plane_out..(gi + 1) * cout_g * plane_out];
                    interleave(c, l, ph, g.stride, g.w, plane_out, bias_g(gi), yg);
                }
            });
        }
    });
}
