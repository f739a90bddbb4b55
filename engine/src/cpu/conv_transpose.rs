//! Transposed convolution forward by sub-pixel decomposition.
//!
//! Along one axis (stride `s`, padding `p`, kernel `k`), output `o` receives input `i` through
//! tap `kk` exactly when `i*s - p + kk = o`. Write `o + p = s*m + rho` with `rho < s`: the taps
//! that reach `o` are `kk = rho + s*j` (`j = 0, 1, ..` while `kk < k`) and they read `i = m - j`.
//! So the outputs split into `s` phases; phase `rho` is a stride-1 correlation of the input with
//! `ceil((k - rho) / s)` taps (a 4x4/s2/p1 transposed conv is four 2x2 convs), and every phase's
//! output at window position `m` reads the same `J = ceil(k / s)` inputs `m - J + 1 ..= m`.
//! The `sy * sx` phase convolutions therefore share one im2col: a single stride-1 implicit-GEMM
//! convolution with `Jy x Jx` taps whose `sy * sx * Cout` rows are the phases' weights stacked
//! (zero where a phase has fewer taps, i.e. `k` is not a multiple of `s`), followed by a pixel
//! shuffle that writes row `(rho_y, rho_x, co)` at window `(m_y, m_x)` to output
//! `(s*m_y + rho_y - p, s*m_x + rho_x - p)`, dropping what falls outside the output (border
//! windows; output_padding only lengthens the output). No zero-stuffed input, no column matrix,
//! no col2im scatter-add; when `s` divides `k` the multiply-adds are the definition's times
//! windows/inputs, e.g. `(H + 1)(W + 1) / HW` for 4x4/s2/p1.
//!
//! Stacked rather than one GEMM per phase: per-phase GEMMs have only Cout rows and each gathers
//! its own im2col, 4x the packing of the stacked form (twice the adjoint path's col2im volume
//! when Cin = 2 Cout, as in SparK's decoder); that version measured slower than the adjoint path
//! on every decoder shape.
//!
//! The adjoint path (`conv2d_backward_input` of the matching conv2d: one GEMM with
//! M = Cout*kh*kw, then col2im) stays where it measured faster (`use_subpixel`), and for
//! dilation > 1, depthwise geometries (direct kernel) and f64.

use super::conv::{conv2d_backward_input, ConvGeom};
use super::conv_implicit::{Im2col, Tap};
use super::gemm::{gemm_packed, MatRef};
use super::scratch::with_scratch;
use crate::Float;
use crate::{as_f32, as_f32_mut};
use rayon::prelude::*;

/// Fewest windows per image (about the input map size) for which `conv_transpose2d` takes the
/// sub-pixel path. 4x4/s2 transposed convs, batch 16, f32, 2 threads (`examples/convt_timing.rs`):
/// on 3x3..7x7 inputs the adjoint path is 2-5x faster (its one GEMM runs over the whole batch
/// with M = Cout*16; the windows add (H+1)(W+1)/HW multiply-adds), on 12x12 and 24x24 it is
/// 5-15% faster, on 32x32 and 48x48 inputs sub-pixel takes 8-9% less CPU time (col2im
/// dominates the adjoint path there).
const SUBPIXEL_MIN_WINDOWS: usize = 1024;

/// Whether `conv_transpose2d_forward` runs `g` (f32) by sub-pixel decomposition: strided,
/// undilated, not depthwise, no zero phase taps (a 3x3/s2 kernel stacks into 4x4: 1.8x the
/// multiply-adds, measured 1.5x slower than the adjoint path) and a large enough map.
pub fn use_subpixel(g: &ConvGeom) -> bool {
    if !subpixel_applies(g)
        || !g.kh.is_multiple_of(g.stride[0])
        || !g.kw.is_multiple_of(g.stride[1])
        || g.h == 0
        || g.w == 0
    {
        return false;
    }
    let windows = |a: usize, out: usize| Axis::new(g.stride[a], g.pad[a], 1, out).windows;
    windows(0, g.h) * windows(1, g.w) >= SUBPIXEL_MIN_WINDOWS
}

/// `y = conv_transpose2d(x, w) + bias`, described by the conv2d `g` it is the adjoint of: `x` is
/// `g`'s output shape `[n, g.cout, g.oh, g.ow]`, `y` is `g`'s input shape `[n, g.cin, g.h, g.w]`,
/// and `w` is `[g.cout, g.cin / groups, kh, kw]` (the same buffer in both readings).
pub fn conv_transpose2d_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    if use_subpixel(g) {
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

/// Whether `subpixel_forward` can compute `g`'s transposed conv at all: strided, undilated, not
/// depthwise (stride 1 already runs as a forward conv with the flipped kernel).
pub fn subpixel_applies(g: &ConvGeom) -> bool {
    g.stride != [1, 1] && g.dil == [1, 1] && !g.is_depthwise()
}

/// One axis of the decomposition: stride `s`, padding `pad`, `out` outputs. Window `t` (input
/// position `m = first + t`) reads inputs `m - j` through kernel taps `rho + s*j`, `j < taps`,
/// and feeds output `s*m + rho - pad` of every phase `rho < s` (see the module docs).
struct Axis {
    s: usize,
    pad: usize,
    out: usize,
    taps: usize,
    first: usize,
    windows: usize,
}

impl Axis {
    fn new(s: usize, pad: usize, k: usize, out: usize) -> Axis {
        let (first, last) = (pad / s, (out - 1 + pad) / s);
        Axis { s, pad, out, taps: k.div_ceil(s), first, windows: last - first + 1 }
    }

    /// Phase `rho`: window `t` holds output `s*t + base`, which lies in `[0, out)` for `t` in
    /// `lo..hi` (the first and last windows straddle the border for some phases).
    fn phase(&self, rho: usize) -> (usize, usize, usize) {
        let base = (self.s * self.first + rho) as isize - self.pad as isize;
        let lo = if base < 0 { base.unsigned_abs().div_ceil(self.s) } else { 0 };
        // At most `windows`: the last window holds the last output in phase `(out - 1 + pad) % s`.
        let hi = ((self.out as isize - base).max(0) as usize).div_ceil(self.s).max(lo);
        ((base + (self.s * lo) as isize) as usize, lo, hi)
    }
}

/// Writes every phase's weight into `wa` (`[groups][cin_g * ty * tx][sy * sx * cout_g]`, K-major
/// so that `w` is read in order and the GEMM packs contiguous runs of rows), zero where a phase
/// has fewer taps than `ty * tx` (kernel size not a multiple of the stride).
fn fill_weights(w: &[f32], g: &ConvGeom, ay: &Axis, ax: &Axis, wa: &mut [f32]) {
    let (cin_g, cout_g, kk) = (g.cout_g(), g.cin_g(), g.kh * g.kw);
    let (m, tt) = (ay.s * ax.s * cout_g, ay.taps * ax.taps);
    if !g.kh.is_multiple_of(ay.s) || !g.kw.is_multiple_of(ax.s) {
        wa.fill(0.0);
    }
    // Kernel tap (ky, kx) -> (column among a channel's taps, row offset of its phase).
    let dst: Vec<(usize, usize)> = (0..kk)
        .map(|t| {
            let (ky, kx) = (t / g.kw, t % g.kw);
            ((ky / ay.s) * ax.taps + kx / ax.s, ((ky % ay.s) * ax.s + kx % ax.s) * cout_g)
        })
        .collect();
    for gi in 0..g.groups {
        let wg = &mut wa[gi * cin_g * tt * m..(gi + 1) * cin_g * tt * m];
        for ci in 0..cin_g {
            let lines = &w[(gi * cin_g + ci) * cout_g * kk..(gi * cin_g + ci + 1) * cout_g * kk];
            for (co, line) in lines.chunks_exact(kk).enumerate() {
                for (&v, &(col, row)) in line.iter().zip(&dst) {
                    wg[(ci * tt + col) * m + row + co] = v;
                }
            }
        }
    }
}

/// Pixel shuffle of one image-group: row `(rho_y, rho_x, co)` of `c` (`windows_y * windows_x`
/// values each) goes to `y[co]` (planes of `ay.out * ax.out`) at stride `s` from its phase's
/// first output, border windows dropped, `bias[co]` added.
fn shuffle(c: &[f32], ay: &Axis, ax: &Axis, bias: Option<&[f32]>, y: &mut [f32]) {
    let (plane, l) = (ay.out * ax.out, ay.windows * ax.windows);
    let cout_g = y.len() / plane;
    for ry in 0..ay.s {
        let (oy0, ylo, yhi) = ay.phase(ry);
        for rx in 0..ax.s {
            let (ox0, xlo, xhi) = ax.phase(rx);
            let rows = &c[(ry * ax.s + rx) * cout_g * l..][..cout_g * l];
            for (co, (yp, src)) in y.chunks_mut(plane).zip(rows.chunks(l)).enumerate() {
                let b0 = bias.map_or(0.0, |b| b[co]);
                for (i, ty) in (ylo..yhi).enumerate() {
                    let oy = oy0 + ay.s * i;
                    let out = yp[oy * ax.out + ox0..(oy + 1) * ax.out].iter_mut().step_by(ax.s);
                    for (d, &v) in out.zip(&src[ty * ax.windows + xlo..ty * ax.windows + xhi]) {
                        *d = v + b0;
                    }
                }
            }
        }
    }
}

/// Sub-pixel transposed convolution into `y` (`g.in_len()`, every element written), bias added;
/// see the module docs. Panics unless `subpixel_applies(g)` and the slices have `g`'s lengths.
pub fn subpixel_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom, y: &mut [f32]) {
    assert!(subpixel_applies(g), "subpixel_forward: needs stride > 1, dilation 1, not depthwise");
    assert!(
        x.len() == g.out_len() && w.len() == g.weight_len() && y.len() == g.in_len(),
        "subpixel_forward: slice lengths do not match the geometry"
    );
    if y.is_empty() {
        return;
    }
    // Our input is g's output [n, g.cout, g.oh, g.ow], our output g's input [n, g.cin, g.h, g.w].
    let (cin_g, cout_g, plane_in) = (g.cout_g(), g.cin_g(), g.oh * g.ow);
    let (img_in, grp_in, img_out, grp_out) =
        (g.cout * plane_in, cin_g * plane_in, g.cin * g.h * g.w, cout_g * g.h * g.w);
    let ay = Axis::new(g.stride[0], g.pad[0], g.kh, g.h);
    let ax = Axis::new(g.stride[1], g.pad[1], g.kw, g.w);
    let (m, k) = (ay.s * ax.s * cout_g, cin_g * ay.taps * ax.taps);
    let mut taps: Vec<Tap> = Vec::with_capacity(k);
    for ci in 0..cin_g {
        for jy in 0..ay.taps {
            for jx in 0..ax.taps {
                taps.push((ci * plane_in, ay.first as isize - jy as isize, ax.first as isize - jx as isize));
            }
        }
    }
    // The stride-1 window convolution: only extents and stride are read by `Im2col`.
    let geom = ConvGeom {
        kh: ay.taps,
        kw: ax.taps,
        oh: ay.windows,
        ow: ax.windows,
        stride: [1, 1],
        pad: [0, 0],
        cout: ay.s * ax.s * g.cin,
        h: g.oh,
        w: g.ow,
        cin: g.cout,
        ..*g
    };
    let l = geom.l();
    // Reused buffer: the decoder's weights are megabytes, fresh pages would cost a fault each.
    with_scratch(g.groups * m * k, |wa: &mut [f32]| {
        fill_weights(w, g, &ay, &ax, wa);
        let wa = &*wa;
        y.par_chunks_mut(img_out).enumerate().for_each(|(ni, yi)| {
            let xi = &x[ni * img_in..(ni + 1) * img_in];
            with_scratch(m * l, |c: &mut [f32]| {
                for gi in 0..g.groups {
                    let src = Im2col::new(&xi[gi * grp_in..(gi + 1) * grp_in], &geom, &taps, 0);
                    let wg = MatRef::new(&wa[gi * m * k..(gi + 1) * m * k], k, m).t();
                    gemm_packed((m, l, k), &wg, &src, c, l, false);
                    let bg = bias.map(|b| &b[gi * cout_g..(gi + 1) * cout_g]);
                    shuffle(c, &ay, &ax, bg, &mut yi[gi * grp_out..(gi + 1) * grp_out]);
                }
            });
        });
    });
}
