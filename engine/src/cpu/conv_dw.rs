//! Direct depthwise convolution (groups == Cin == Cout, e.g. ConvNeXt's 7x7): each channel plane
//! convolves with its own kh x kw filter. The plane loops are row AXPYs / dot products, compiled
//! for AVX-512 or AVX2 when the CPU has them (runtime dispatch), else for the baseline target.

use super::conv::{dot_lanes, tap_offset, valid_range, ConvGeom};
use crate::Float;
use rayon::prelude::*;

/// Which instruction set the plane loops were compiled for.
#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Base,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Base
}

/// Defines `$name(isa, args)` that runs the `#[inline(always)]` body `$body` compiled for the
/// chosen instruction set.
macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name<T: Float>(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn v512<T: Float>($($arg: $ty),*) { $body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v256<T: Float>($($arg: $ty),*) { $body($($arg),*) }
            match isa {
                // SAFETY: `isa()` only reports features the CPU has.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { v512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { v256($($arg),*) },
                Isa::Base => $body($($arg),*),
            }
        }
    };
}

/// One output plane: `o = bias + sum_taps w[tap] * shifted(x)`.
#[inline(always)]
fn plane_fwd<T: Float>(x: &[T], wc: &[T], b0: T, g: &ConvGeom, o: &mut [T]) {
    o.fill(b0);
    let (sy, sx) = (g.stride[0], g.stride[1]);
    for ky in 0..g.kh {
        let offy = tap_offset(ky, g.dil[0], g.pad[0]);
        let (ylo, yhi) = valid_range(offy, sy, g.h, g.oh);
        for oy in ylo..yhi {
            let iy = ((oy * sy) as isize + offy) as usize;
            let xrow = &x[iy * g.w..(iy + 1) * g.w];
            let orow = &mut o[oy * g.ow..(oy + 1) * g.ow];
            for kx in 0..g.kw {
                let wv = wc[ky * g.kw + kx];
                let offx = tap_offset(kx, g.dil[1], g.pad[1]);
                let (xlo, xhi) = valid_range(offx, sx, g.w, g.ow);
                if sx == 1 {
                    let s0 = (xlo as isize + offx) as usize;
                    for (d, &s) in orow[xlo..xhi].iter_mut().zip(&xrow[s0..s0 + (xhi - xlo)]) {
                        *d += wv * s;
                    }
                } else {
                    for (ox, d) in orow.iter_mut().enumerate().take(xhi).skip(xlo) {
                        *d += wv * xrow[((ox * sx) as isize + offx) as usize];
                    }
                }
            }
        }
    }
}
multiversion!(plane_fwd_mv, plane_fwd, (x: &[T], wc: &[T], b0: T, g: &ConvGeom, o: &mut [T]));

/// One input-gradient plane: scatter `w[tap] * go` back onto the taps' input positions.
#[inline(always)]
fn plane_bwd_input<T: Float>(go: &[T], wc: &[T], g: &ConvGeom, gx: &mut [T]) {
    gx.fill(T::ZERO);
    let (sy, sx) = (g.stride[0], g.stride[1]);
    for ky in 0..g.kh {
        let offy = tap_offset(ky, g.dil[0], g.pad[0]);
        let (ylo, yhi) = valid_range(offy, sy, g.h, g.oh);
        for oy in ylo..yhi {
            let iy = ((oy * sy) as isize + offy) as usize;
            let grow = &go[oy * g.ow..(oy + 1) * g.ow];
            let xrow = &mut gx[iy * g.w..(iy + 1) * g.w];
            for kx in 0..g.kw {
                let wv = wc[ky * g.kw + kx];
                let offx = tap_offset(kx, g.dil[1], g.pad[1]);
                let (xlo, xhi) = valid_range(offx, sx, g.w, g.ow);
                if sx == 1 {
                    let d0 = (xlo as isize + offx) as usize;
                    for (d, &s) in xrow[d0..d0 + (xhi - xlo)].iter_mut().zip(&grow[xlo..xhi]) {
                        *d += wv * s;
                    }
                } else {
                    for (ox, &s) in grow.iter().enumerate().take(xhi).skip(xlo) {
                        xrow[((ox * sx) as isize + offx) as usize] += wv * s;
                    }
                }
            }
        }
    }
}
multiversion!(plane_bwd_input_mv, plane_bwd_input, (go: &[T], wc: &[T], g: &ConvGeom, gx: &mut [T]));

/// Adds one image-channel's contribution to the filter gradient `gw` (kh*kw taps).
#[inline(always)]
fn plane_bwd_weight<T: Float>(x: &[T], go: &[T], g: &ConvGeom, gw: &mut [T]) {
    let (sy, sx) = (g.stride[0], g.stride[1]);
    for ky in 0..g.kh {
        let offy = tap_offset(ky, g.dil[0], g.pad[0]);
        let (ylo, yhi) = valid_range(offy, sy, g.h, g.oh);
        for kx in 0..g.kw {
            let offx = tap_offset(kx, g.dil[1], g.pad[1]);
            let (xlo, xhi) = valid_range(offx, sx, g.w, g.ow);
            let mut acc = T::ZERO;
            for oy in ylo..yhi {
                let iy = ((oy * sy) as isize + offy) as usize;
                let grow = &go[oy * g.ow..(oy + 1) * g.ow];
                let xrow = &x[iy * g.w..(iy + 1) * g.w];
                if sx == 1 {
                    let s0 = (xlo as isize + offx) as usize;
                    acc += dot_lanes(&grow[xlo..xhi], &xrow[s0..s0 + (xhi - xlo)]);
                } else {
                    for (ox, &gv) in grow.iter().enumerate().take(xhi).skip(xlo) {
                        acc += gv * xrow[((ox * sx) as isize + offx) as usize];
                    }
                }
            }
            gw[ky * g.kw + kx] += acc;
        }
    }
}
multiversion!(plane_bwd_weight_mv, plane_bwd_weight, (x: &[T], go: &[T], g: &ConvGeom, gw: &mut [T]));

pub(crate) fn forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom, out: &mut [T]) {
    let (pin, pout, taps, isa) = (g.h * g.w, g.l(), g.kh * g.kw, isa());
    out.par_chunks_mut(pout).enumerate().for_each(|(idx, o)| {
        let c = idx % g.cin;
        let b0 = bias.map_or(T::ZERO, |b| b[c]);
        plane_fwd_mv(isa, &x[idx * pin..(idx + 1) * pin], &w[c * taps..(c + 1) * taps], b0, g, o);
    });
}

pub(crate) fn backward_input<T: Float>(go: &[T], w: &[T], g: &ConvGeom, gx: &mut [T]) {
    let (pin, pout, taps, isa) = (g.h * g.w, g.l(), g.kh * g.kw, isa());
    gx.par_chunks_mut(pin).enumerate().for_each(|(idx, gxp)| {
        let c = idx % g.cin;
        plane_bwd_input_mv(isa, &go[idx * pout..(idx + 1) * pout], &w[c * taps..(c + 1) * taps], g, gxp);
    });
}

pub(crate) fn backward_weight<T: Float>(x: &[T], go: &[T], g: &ConvGeom, gw: &mut [T]) {
    let (pin, pout, taps, isa) = (g.h * g.w, g.l(), g.kh * g.kw, isa());
    gw.par_chunks_mut(taps).enumerate().for_each(|(c, gwc)| {
        for ni in 0..g.n {
            let idx = ni * g.cin + c;
            plane_bwd_weight_mv(isa, &x[idx * pin..(idx + 1) * pin], &go[idx * pout..(idx + 1) * pout], g, gwc);
        }
    });
}
