//! Direct depthwise convolution (groups == Cin == Cout, e.g. ConvNeXt's 7x7): each channel plane
//! convolves with its own kh x kw filter. The plane loops are row AXPYs / dot products, compiled
//! for AVX-512 or AVX2 when the CPU has them (runtime dispatch), else for the baseline target.

use super::conv::{dot_lanes, tap_offset, valid_range, ConvGeom};
use super::isa::{isa, multiversion};
use super::scratch::with_scratch;
use crate::Float;
use rayon::prelude::*;

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

// ------------------------------------------------------------------ stride-1 fast path
//
// The plane is copied once into a zero-padded buffer wide enough that every output row can be
// computed in whole LANES-wide chunks; each chunk then accumulates all kh*kw taps in registers
// (one FMA per tap per vector) and is stored once.

const LANES: usize = 16;

/// Padded copy geometry for a stride-1 plane pass: rows `oh + (kh-1)*dy`, row width `pw`.
struct Padded {
    ph: usize,
    pw: usize,
    owr: usize,
}

fn padded_dims(g: &ConvGeom) -> Padded {
    // Wide rows are computed 4 vectors at a time (4 independent accumulator chains hide the
    // add latency), so round them to 4*LANES.
    let blk = if g.ow > 2 * LANES { 4 * LANES } else { LANES };
    let owr = g.ow.div_ceil(blk) * blk;
    Padded { ph: g.oh + (g.kh - 1) * g.dil[0], pw: owr + (g.kw - 1) * g.dil[1], owr }
}

/// `dst[y][x] = src[y - pad_y][x - pad_x]` (zero outside) over the padded buffer.
#[inline(always)]
fn fill_padded<T: Float>(src: &[T], g: &ConvGeom, pd: &Padded, dst: &mut [T]) {
    for y in 0..pd.ph {
        let row = &mut dst[y * pd.pw..(y + 1) * pd.pw];
        let iy = y as isize - g.pad[0] as isize;
        if iy < 0 || iy >= g.h as isize {
            row.fill(T::ZERO);
            continue;
        }
        let s = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
        let px = g.pad[1].min(pd.pw);
        row[..px].fill(T::ZERO);
        let n = g.w.min(pd.pw - px);
        row[px..px + n].copy_from_slice(&s[..n]);
        row[px + n..].fill(T::ZERO);
    }
}

/// Stride-1 output plane from its padded input `p`. `taps` holds (offset in `p`, weight).
#[inline(always)]
fn plane_fwd_s1<T: Float>(p: &[T], taps: &[(usize, T)], b0: T, g: &ConvGeom, pd: &Padded, o: &mut [T]) {
    let max_off = taps.iter().map(|t| t.0).max().unwrap_or(0);
    // Every read below is at base + off + i with base + off + LANES <= this bound.
    assert!(p.len() >= (g.oh - 1) * pd.pw + pd.owr + max_off && o.len() >= g.oh * g.ow);
    let wide = g.ow > 2 * LANES; // as in `padded_dims`: owr is then a multiple of 4*LANES
    for oy in 0..g.oh {
        let orow = &mut o[oy * g.ow..(oy + 1) * g.ow];
        let mut ox0 = 0;
        while ox0 < pd.owr {
            let base = oy * pd.pw + ox0;
            if wide {
                let acc = taps_block::<T, 4>(p, taps, base, b0);
                store_block(&acc, ox0, orow);
                ox0 += 4 * LANES;
            } else {
                let acc = taps_block::<T, 1>(p, taps, base, b0);
                store_block(&acc, ox0, orow);
                ox0 += LANES;
            }
        }
    }
}

/// `C` consecutive LANES-wide output vectors starting at `base`, all taps accumulated.
#[inline(always)]
fn taps_block<T: Float, const C: usize>(p: &[T], taps: &[(usize, T)], base: usize, b0: T) -> [[T; LANES]; C] {
    let mut acc = [[b0; LANES]; C];
    for &(off, wv) in taps {
        // SAFETY: the caller asserted base + off + C*LANES <= p.len() for every tap.
        let seg = unsafe { p.get_unchecked(base + off..base + off + C * LANES) };
        for c in 0..C {
            for i in 0..LANES {
                acc[c][i] += wv * seg[c * LANES + i];
            }
        }
    }
    acc
}

/// Stores the part of a block that lies inside the row.
#[inline(always)]
fn store_block<T: Float, const C: usize>(acc: &[[T; LANES]; C], ox0: usize, orow: &mut [T]) {
    for (c, a) in acc.iter().enumerate() {
        let x0 = ox0 + c * LANES;
        if x0 >= orow.len() {
            break;
        }
        let n = LANES.min(orow.len() - x0);
        orow[x0..x0 + n].copy_from_slice(&a[..n]);
    }
}
multiversion!(plane_fwd_s1_mv, plane_fwd_s1, (p: &[T], taps: &[(usize, T)], b0: T, g: &ConvGeom, pd: &Padded, o: &mut [T]));

/// Stride-1 filter gradient of one plane: `gw[tap] += sum(go * shifted(p))`, `gp` being `go`
/// padded to `owr` columns with zeros.
#[inline(always)]
fn plane_bwd_weight_s1<T: Float>(p: &[T], gp: &[T], g: &ConvGeom, pd: &Padded, gw: &mut [T]) {
    let (dy, dx) = (g.dil[0], g.dil[1]);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            // Four independent accumulator chains (latency hiding), reduced at the end.
            let mut acc = [[T::ZERO; LANES]; 4];
            let n64 = pd.owr / (4 * LANES) * (4 * LANES);
            for oy in 0..g.oh {
                let prow = &p[(oy + ky * dy) * pd.pw + kx * dx..][..pd.owr];
                let grow = &gp[oy * pd.owr..(oy + 1) * pd.owr];
                for (gc, pc) in grow[..n64].chunks_exact(4 * LANES).zip(prow[..n64].chunks_exact(4 * LANES)) {
                    for c in 0..4 {
                        for i in 0..LANES {
                            acc[c][i] += gc[c * LANES + i] * pc[c * LANES + i];
                        }
                    }
                }
                for (gc, pc) in grow[n64..].chunks_exact(LANES).zip(prow[n64..].chunks_exact(LANES)) {
                    for i in 0..LANES {
                        acc[0][i] += gc[i] * pc[i];
                    }
                }
            }
            let acc = acc.iter().flatten().copied().sum::<T>();
            gw[ky * g.kw + kx] += acc;
        }
    }
}
multiversion!(plane_bwd_weight_s1_mv, plane_bwd_weight_s1, (p: &[T], gp: &[T], g: &ConvGeom, pd: &Padded, gw: &mut [T]));

/// Stride-1 forward over all planes (`taps_of(c)` gives each channel's kh*kw filter).
fn forward_s1<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom, out: &mut [T], flip: bool) {
    let (pin, pout, taps, isa, pd) = (g.h * g.w, g.l(), g.kh * g.kw, isa(), padded_dims(g));
    out.par_chunks_mut(pout).enumerate().for_each(|(idx, o)| {
        let c = idx % g.cin;
        let b0 = bias.map_or(T::ZERO, |b| b[c]);
        let wc = &w[c * taps..(c + 1) * taps];
        let tl: Vec<(usize, T)> = (0..taps)
            .map(|t| {
                let (ky, kx) = (t / g.kw, t % g.kw);
                let wv = if flip { wc[taps - 1 - t] } else { wc[t] };
                (ky * g.dil[0] * pd.pw + kx * g.dil[1], wv)
            })
            .collect();
        with_scratch(pd.ph * pd.pw, |p: &mut [T]| {
            fill_padded(&x[idx * pin..(idx + 1) * pin], g, &pd, p);
            plane_fwd_s1_mv(isa, &*p, &tl, b0, g, &pd, o);
        });
    });
}

pub(crate) fn forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom, out: &mut [T]) {
    if g.stride == [1, 1] {
        return forward_s1(x, w, bias, g, out, false);
    }
    let (pin, pout, taps, isa) = (g.h * g.w, g.l(), g.kh * g.kw, isa());
    out.par_chunks_mut(pout).enumerate().for_each(|(idx, o)| {
        let c = idx % g.cin;
        let b0 = bias.map_or(T::ZERO, |b| b[c]);
        plane_fwd_mv(isa, &x[idx * pin..(idx + 1) * pin], &w[c * taps..(c + 1) * taps], b0, g, o);
    });
}

pub(crate) fn backward_input<T: Float>(go: &[T], w: &[T], g: &ConvGeom, gx: &mut [T]) {
    if g.stride == [1, 1] && g.pad[0] <= g.dil[0] * (g.kh - 1) && g.pad[1] <= g.dil[1] * (g.kw - 1) {
        // Stride 1: the input gradient is the forward conv of `go` with the flipped filter.
        let gt = ConvGeom {
            h: g.oh,
            w: g.ow,
            oh: g.h,
            ow: g.w,
            pad: [g.dil[0] * (g.kh - 1) - g.pad[0], g.dil[1] * (g.kw - 1) - g.pad[1]],
            ..*g
        };
        return forward_s1(go, w, None, &gt, gx, true);
    }
    let (pin, pout, taps, isa) = (g.h * g.w, g.l(), g.kh * g.kw, isa());
    gx.par_chunks_mut(pin).enumerate().for_each(|(idx, gxp)| {
        let c = idx % g.cin;
        plane_bwd_input_mv(isa, &go[idx * pout..(idx + 1) * pout], &w[c * taps..(c + 1) * taps], g, gxp);
    });
}

pub(crate) fn backward_weight<T: Float>(x: &[T], go: &[T], g: &ConvGeom, gw: &mut [T]) {
    if g.stride == [1, 1] {
        let (pin, pout, taps, isa, pd) = (g.h * g.w, g.l(), g.kh * g.kw, isa(), padded_dims(g));
        gw.par_chunks_mut(taps).enumerate().for_each(|(c, gwc)| {
            with_scratch(pd.ph * pd.pw + g.oh * pd.owr, |buf: &mut [T]| {
                let (p, gp) = buf.split_at_mut(pd.ph * pd.pw);
                for ni in 0..g.n {
                    let idx = ni * g.cin + c;
                    fill_padded(&x[idx * pin..(idx + 1) * pin], g, &pd, p);
                    for oy in 0..g.oh {
                        let row = &mut gp[oy * pd.owr..(oy + 1) * pd.owr];
                        row[..g.ow].copy_from_slice(&go[idx * pout + oy * g.ow..idx * pout + (oy + 1) * g.ow]);
                        row[g.ow..].fill(T::ZERO);
                    }
                    plane_bwd_weight_s1_mv(isa, &*p, &*gp, g, &pd, gwc);
                }
            });
        });
        return;
    }
    let (pin, pout, taps, isa) = (g.h * g.w, g.l(), g.kh * g.kw, isa());
    gw.par_chunks_mut(taps).enumerate().for_each(|(c, gwc)| {
        for ni in 0..g.n {
            let idx = ni * g.cin + c;
            plane_bwd_weight_mv(isa, &x[idx * pin..(idx + 1) * pin], &go[idx * pout..(idx + 1) * pout], g, gwc);
        }
    });
}
