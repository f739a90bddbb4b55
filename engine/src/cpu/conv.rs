//! Dense 2-D convolution kernels (NCHW) on the GEMM, plus a direct depthwise kernel.
//!
//! Per image and group, the convolution is `out[Cout_g, L] = W[Cout_g, K] · col[K, L]` with
//! `K = Cin_g*kh*kw`, `L = oh*ow` and `col` the im2col matrix. Backward is the same GEMM with
//! transposed operands: `col_grad = W^T · grad_out` folded back by col2im, and
//! `grad_W += grad_out · col^T`. 1x1/stride-1/no-padding convs skip im2col entirely (the input
//! plane already is `col`). Transposed convolution (`conv_transpose.rs`) uses the input gradient
//! here as its forward wherever its sub-pixel form does not apply or measured slower.

use super::conv_dw;
use super::conv_implicit as implicit;
use super::conv_winograd as winograd;
use super::gemm::{gemm, MatRef};
use super::scratch::with_scratch;
use crate::Float;
use crate::{as_f32, as_f32_mut};
use rayon::prelude::*;

/// Full geometry of one convolution: input `[n, cin, h, w]`, weight `[cout, cin/groups, kh, kw]`,
/// output `[n, cout, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub groups: usize,
}

impl ConvGeom {
    pub fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    pub fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of the im2col matrix (reduction length of the GEMM).
    pub fn k(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    /// Output positions per image.
    pub fn l(&self) -> usize {
        self.oh * self.ow
    }
    pub fn in_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.n * self.cout * self.l()
    }
    pub fn weight_len(&self) -> usize {
        self.cout * self.k()
    }
    /// The input plane is the im2col matrix as is.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }
    /// One input and one output channel per group: handled by the direct kernel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.cin && self.cout == self.cin
    }
}

/// Output positions `o` in `[lo, hi)` (clamped to `out`) whose input index `o*s + off` lies in
/// `[0, n)`.
#[inline]
pub(crate) fn valid_range(off: isize, s: usize, n: usize, out: usize) -> (usize, usize) {
    let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(s) };
    let lim = n as isize - 1 - off;
    let hi = if lim < 0 { 0 } else { (lim as usize / s + 1).min(out) };
    (lo.min(hi), hi)
}

/// Kernel tap offset along one axis: `k*dilation - padding`.
#[inline]
pub(crate) fn tap_offset(k: usize, dil: usize, pad: usize) -> isize {
    (k * dil) as isize - pad as isize
}

/// Writes the im2col matrix `[K, L]` of one group's input planes `x` (`cin_g*h*w`).
fn im2col<T: Float>(x: &[T], g: &ConvGeom, col: &mut [T]) {
    let (l, plane) = (g.l(), g.h * g.w);
    for ci in 0..g.cin_g() {
        let xp = &x[ci * plane..(ci + 1) * plane];
        for ky in 0..g.kh {
            let offy = tap_offset(ky, g.dil[0], g.pad[0]);
            let (ylo, yhi) = valid_range(offy, g.stride[0], g.h, g.oh);
            for kx in 0..g.kw {
                let offx = tap_offset(kx, g.dil[1], g.pad[1]);
                let (xlo, xhi) = valid_range(offx, g.stride[1], g.w, g.ow);
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &mut col[r * l..(r + 1) * l];
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    if oy < ylo || oy >= yhi {
                        dst.fill(T::ZERO);
                        continue;
                    }
                    let iy = (oy * g.stride[0]) as isize + offy;
                    let src = &xp[iy as usize * g.w..(iy as usize + 1) * g.w];
                    dst[..xlo].fill(T::ZERO);
                    dst[xhi..].fill(T::ZERO);
                    if g.stride[1] == 1 {
                        let s0 = (xlo as isize + offx) as usize;
                        dst[xlo..xhi].copy_from_slice(&src[s0..s0 + (xhi - xlo)]);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate().take(xhi).skip(xlo) {
                            *d = src[((ox * g.stride[1]) as isize + offx) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns `[K, L]` (row `r` at `col[r * ld..]`) back onto one group's input-gradient
/// planes (adjoint of im2col).
fn col2im<T: Float>(col: &[T], ld: usize, g: &ConvGeom, gx: &mut [T]) {
    let (l, plane) = (g.l(), g.h * g.w);
    for ci in 0..g.cin_g() {
        let xp = &mut gx[ci * plane..(ci + 1) * plane];
        for ky in 0..g.kh {
            let offy = tap_offset(ky, g.dil[0], g.pad[0]);
            let (ylo, yhi) = valid_range(offy, g.stride[0], g.h, g.oh);
            for kx in 0..g.kw {
                let offx = tap_offset(kx, g.dil[1], g.pad[1]);
                let (xlo, xhi) = valid_range(offx, g.stride[1], g.w, g.ow);
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &col[r * ld..r * ld + l];
                for oy in ylo..yhi {
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = ((oy * g.stride[0]) as isize + offy) as usize;
                    let dst = &mut xp[iy * g.w..(iy + 1) * g.w];
                    if g.stride[1] == 1 {
                        let d0 = (xlo as isize + offx) as usize;
                        for (d, &s) in dst[d0..d0 + (xhi - xlo)].iter_mut().zip(&src[xlo..xhi]) {
                            *d += s;
                        }
                    } else {
                        for (ox, &s) in src.iter().enumerate().take(xhi).skip(xlo) {
                            dst[((ox * g.stride[1]) as isize + offx) as usize] += s;
                        }
                    }
                }
            }
        }
    }
}

/// Whether the f32 implicit-GEMM path applies: every conv except 1x1/s1/p0 ones on large maps,
/// whose input planes already are the GEMM operand (on small maps the implicit path still wins
/// by running one GEMM over the whole batch).
fn use_implicit(g: &ConvGeom) -> bool {
    !g.is_pointwise() || (g.l() < implicit::BATCH_BELOW_L && g.n > 1)
}

/// `out = conv2d(x, w) + bias`, all NCHW, `out` of length `g.out_len()`.
pub fn conv2d_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let mut out = vec![T::ZERO; g.out_len()];
    if g.out_len() == 0 {
        return out;
    }
    if g.is_depthwise() {
        conv_dw::forward(x, w, bias, g, &mut out);
        return out;
    }
    if use_implicit(g) {
        if let (Some(xf), Some(wf), Some(of)) = (as_f32(x), as_f32(w), as_f32_mut(&mut out)) {
            implicit::forward(xf, wf, bias.map(|b| as_f32(b).expect("bias has the input's dtype")), g, of);
            return out;
        }
    }
    let (cin_g, cout_g, k, l) = (g.cin_g(), g.cout_g(), g.k(), g.l());
    let img_in = g.cin * g.h * g.w;
    let grp_in = cin_g * g.h * g.w;
    out.par_chunks_mut(g.cout * l).enumerate().for_each(|(ni, o)| {
        let xi = &x[ni * img_in..(ni + 1) * img_in];
        for gi in 0..g.groups {
            let xg = &xi[gi * grp_in..(gi + 1) * grp_in];
            let wg = MatRef::new(&w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k);
            let og = &mut o[gi * cout_g * l..(gi + 1) * cout_g * l];
            if g.is_pointwise() {
                gemm(wg, MatRef::new(xg, k, l), og, l, false);
            } else {
                with_scratch(k * l, |col: &mut [T]| {
                    im2col(xg, g, col);
                    gemm(wg, MatRef::new(col, k, l), og, l, false);
                });
            }
        }
        if let Some(b) = bias {
            for (row, &bv) in o.chunks_mut(l).zip(b) {
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    });
    out
}

/// Gradient w.r.t. the input, `[n, cin, h, w]`, from `go` `[n, cout, oh, ow]`.
pub fn conv2d_backward_input<T: Float>(go: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let mut gx = vec![T::ZERO; g.in_len()];
    if g.in_len() == 0 || g.out_len() == 0 {
        return gx;
    }
    if g.is_depthwise() {
        conv_dw::backward_input(go, w, g, &mut gx);
        return gx;
    }
    if use_implicit(g) && implicit::input_grad_as_conv(g) {
        if let (Some(gof), Some(wf), Some(gxf)) = (as_f32(go), as_f32(w), as_f32_mut(&mut gx)) {
            implicit::backward_input_stride1(gof, wf, g, gxf);
            return gx;
        }
    }
    let (cin_g, cout_g, k, l) = (g.cin_g(), g.cout_g(), g.k(), g.l());
    let grp_in = cin_g * g.h * g.w;
    if !g.is_pointwise() && l < 512 && g.n > 1 {
        // Small maps (e.g. the decoder's 7x7 transposed convs): one GEMM over the whole batch,
        // so N = n*L fills the microkernel's column panels, then col2im per image.
        let nl = g.n * l;
        for gi in 0..g.groups {
            let mut gob = vec![T::ZERO; cout_g * nl];
            for (ni, chunk) in gob.chunks_mut(l).enumerate() {
                let (co, img) = (ni / g.n, ni % g.n);
                let off = (img * g.cout + gi * cout_g + co) * l;
                chunk.copy_from_slice(&go[off..off + l]);
            }
            let wt = MatRef::new(&w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k).t();
            let mut col = vec![T::ZERO; k * nl];
            gemm(wt, MatRef::new(&gob, cout_g, nl), &mut col, nl, false);
            gx.par_chunks_mut(g.cin * g.h * g.w).enumerate().for_each(|(ni, gxi)| {
                col2im(&col[ni * l..], nl, g, &mut gxi[gi * grp_in..(gi + 1) * grp_in]);
            });
        }
        return gx;
    }
    gx.par_chunks_mut(g.cin * g.h * g.w).enumerate().for_each(|(ni, gxi)| {
        let goi = &go[ni * g.cout * l..(ni + 1) * g.cout * l];
        for gi in 0..g.groups {
            let wt = MatRef::new(&w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k).t();
            let gog = MatRef::new(&goi[gi * cout_g * l..(gi + 1) * cout_g * l], cout_g, l);
            let gxg = &mut gxi[gi * grp_in..(gi + 1) * grp_in];
            if g.is_pointwise() {
                gemm(wt, gog, gxg, l, false);
            } else {
                with_scratch(k * l, |col: &mut [T]| {
                    gemm(wt, gog, col, l, false);
                    col2im(col, l, g, gxg);
                });
            }
        }
    });
    gx
}

/// Gradient w.r.t. the weight, `[cout, cin/groups, kh, kw]`, summed over the batch.
pub fn conv2d_backward_weight<T: Float>(x: &[T], go: &[T], g: &ConvGeom) -> Vec<T> {
    let wlen = g.weight_len();
    if g.in_len() == 0 || g.out_len() == 0 {
        return vec![T::ZERO; wlen];
    }
    if g.is_depthwise() {
        let mut gw = vec![T::ZERO; wlen];
        conv_dw::backward_weight(x, go, g, &mut gw);
        return gw;
    }
    if use_implicit(g) {
        let mut gw = vec![T::ZERO; wlen];
        if let (Some(xf), Some(gof), Some(gwf)) = (as_f32(x), as_f32(go), as_f32_mut(&mut gw)) {
            if winograd::weight_grad_pays_off(g) {
                winograd::backward_weight(xf, gof, g, gwf);
            } else {
                implicit::backward_weight(xf, gof, g, gwf);
            }
            return gw;
        }
    }
    let (cin_g, cout_g, k, l) = (g.cin_g(), g.cout_g(), g.k(), g.l());
    let (img_in, grp_in) = (g.cin * g.h * g.w, cin_g * g.h * g.w);
    // Images split into one chunk per thread, each with its own partial gradient.
    let chunk = g.n.div_ceil(rayon::current_num_threads().clamp(1, g.n));
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut gw = vec![T::ZERO; wlen];
            for ni in c * chunk..g.n.min((c + 1) * chunk) {
                let xi = &x[ni * img_in..(ni + 1) * img_in];
                let goi = &go[ni * g.cout * l..(ni + 1) * g.cout * l];
                for gi in 0..g.groups {
                    let xg = &xi[gi * grp_in..(gi + 1) * grp_in];
                    let gog = MatRef::new(&goi[gi * cout_g * l..(gi + 1) * cout_g * l], cout_g, l);
                    let gwg = &mut gw[gi * cout_g * k..(gi + 1) * cout_g * k];
                    if g.is_pointwise() {
                        gemm(gog, MatRef::new(xg, k, l).t(), gwg, k, true);
                    } else {
                        with_scratch(k * l, |col: &mut [T]| {
                            im2col(xg, g, col);
                            gemm(gog, MatRef::new(col, k, l).t(), gwg, k, true);
                        });
                    }
                }
            }
            gw
        })
        .collect();
    let mut it = partials.into_iter();
    let mut gw = it.next().unwrap_or_else(|| vec![T::ZERO; wlen]);
    for p in it {
        gw.iter_mut().zip(&p).for_each(|(a, &b)| *a += b);
    }
    gw
}

/// Sum of `go` `[n, c, hw]` over n and hw: the bias gradient.
pub fn channel_sum<T: Float>(go: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; c];
    if hw == 0 {
        return out;
    }
    for ni in 0..n {
        for (ci, o) in out.iter_mut().enumerate() {
            let s = &go[(ni * c + ci) * hw..(ni * c + ci + 1) * hw];
            *o += sum_lanes(s);
        }
    }
    out
}

/// Sum with 8 independent accumulators (vectorisable without reassociation).
#[inline]
pub(crate) fn sum_lanes<T: Float>(s: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = s.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().copied().sum::<T>() + rest.iter().copied().sum::<T>()
}

/// Dot product with 8 independent accumulators.
#[inline(always)]
pub(crate) fn dot_lanes<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = acc.iter().copied().sum::<T>();
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
