//! Pooling kernels over NCHW planes. Every pool is described per axis by a list of windows
//! (`Win`: input range and the count that enters the averaging divisor), so max/avg/adaptive
//! pooling share one loop structure. Planes run in parallel.

use crate::Float;
use rayon::prelude::*;

/// One output position along one axis: input range `[start, end)` and divisor factor `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Win {
    pub start: usize,
    pub end: usize,
    pub count: usize,
}

/// Windows of a `kernel`/`stride`/`padding` pool over `n` inputs (`out` outputs). `count` is
/// the kernel size (PyTorch `count_include_pad=True`), clipped at the padded border.
pub fn sliding_windows(n: usize, out: usize, kernel: usize, stride: usize, padding: usize) -> Vec<Win> {
    (0..out)
        .map(|o| {
            let s = (o * stride) as isize - padding as isize;
            let e = s + kernel as isize;
            let count = (e.min((n + padding) as isize) - s) as usize;
            Win { start: s.max(0) as usize, end: (e.max(0) as usize).min(n), count }
        })
        .collect()
}

/// Adaptive windows: `[floor(i*n/out), ceil((i+1)*n/out))`, divisor = window length.
pub fn adaptive_windows(n: usize, out: usize) -> Vec<Win> {
    (0..out)
        .map(|i| {
            let (s, e) = (i * n / out, ((i + 1) * n).div_ceil(out));
            Win { start: s, end: e, count: e - s }
        })
        .collect()
}

/// Average pool of `planes` planes `[h, w]` into `[ys.len(), xs.len()]`.
pub fn avg_forward<T: Float>(x: &[T], planes: usize, h: usize, w: usize, ys: &[Win], xs: &[Win]) -> Vec<T> {
    let (pin, pout) = (h * w, ys.len() * xs.len());
    let mut out = vec![T::ZERO; planes * pout];
    if pout == 0 {
        return out;
    }
    out.par_chunks_mut(pout).enumerate().for_each(|(p, o)| {
        let xp = &x[p * pin..(p + 1) * pin];
        for (oy, wy) in ys.iter().enumerate() {
            for (ox, wx) in xs.iter().enumerate() {
                let mut s = T::ZERO;
                for iy in wy.start..wy.end {
                    for &v in &xp[iy * w + wx.start..iy * w + wx.end] {
                        s += v;
                    }
                }
                o[oy * xs.len() + ox] = s / T::from_f64((wy.count * wx.count) as f64);
            }
        }
    });
    out
}

/// Adjoint of `avg_forward`.
pub fn avg_backward<T: Float>(go: &[T], planes: usize, h: usize, w: usize, ys: &[Win], xs: &[Win]) -> Vec<T> {
    let (pin, pout) = (h * w, ys.len() * xs.len());
    let mut gx = vec![T::ZERO; planes * pin];
    if pin == 0 {
        return gx;
    }
    gx.par_chunks_mut(pin).enumerate().for_each(|(p, gp)| {
        let g = &go[p * pout..(p + 1) * pout];
        for (oy, wy) in ys.iter().enumerate() {
            for (ox, wx) in xs.iter().enumerate() {
                let v = g[oy * xs.len() + ox] / T::from_f64((wy.count * wx.count) as f64);
                for iy in wy.start..wy.end {
                    for d in &mut gp[iy * w + wx.start..iy * w + wx.end] {
                        *d += v;
                    }
                }
            }
        }
    });
    gx
}

/// Max pool; also returns, per output, the in-plane index of the (first) maximum. An empty
/// window (only padding) yields -inf and index `usize::MAX`.
pub fn max_forward<T: Float>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    ys: &[Win],
    xs: &[Win],
) -> (Vec<T>, Vec<usize>) {
    let (pin, pout) = (h * w, ys.len() * xs.len());
    let mut out = vec![T::ZERO; planes * pout];
    let mut arg = vec![usize::MAX; planes * pout];
    if pout == 0 {
        return (out, arg);
    }
    out.par_chunks_mut(pout).zip(arg.par_chunks_mut(pout)).enumerate().for_each(|(p, (o, a))| {
        let xp = &x[p * pin..(p + 1) * pin];
        for (oy, wy) in ys.iter().enumerate() {
            for (ox, wx) in xs.iter().enumerate() {
                let (mut best, mut bi) = (T::from_f64(f64::NEG_INFINITY), usize::MAX);
                for iy in wy.start..wy.end {
                    for ix in wx.start..wx.end {
                        let v = xp[iy * w + ix];
                        // NaN propagates, as in PyTorch.
                        let nan = v.partial_cmp(&v).is_none();
                        if v > best || nan || bi == usize::MAX {
                            best = v;
                            bi = iy * w + ix;
                            if nan {
                                break;
                            }
                        }
                    }
                }
                o[oy * xs.len() + ox] = best;
                a[oy * xs.len() + ox] = bi;
            }
        }
    });
    (out, arg)
}

/// Routes each output gradient to its argmax.
pub fn max_backward<T: Float>(go: &[T], arg: &[usize], planes: usize, pin: usize, pout: usize) -> Vec<T> {
    let mut gx = vec![T::ZERO; planes * pin];
    if pin == 0 {
        return gx;
    }
    gx.par_chunks_mut(pin).enumerate().for_each(|(p, gp)| {
        for (&g, &i) in go[p * pout..(p + 1) * pout].iter().zip(&arg[p * pout..(p + 1) * pout]) {
            if i != usize::MAX {
                gp[i] += g;
            }
        }
    });
    gx
}
