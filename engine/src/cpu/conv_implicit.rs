//! f32 implicit-GEMM convolution: the im2col matrix is never materialised; the GEMM packs its
//! panels straight from the input planes (`Im2col`/`Im2colT` implement `PackB`). This saves a
//! full write + read of the column matrix, which is several times larger than the input.

use super::conv::{tap_offset, valid_range, ConvGeom};
use super::conv_winograd as winograd;
use super::gemm::{gemm_packed, MatRef, PackB};
use super::transpose::transpose;
use rayon::prelude::*;

/// Per im2col row k = (ci, ky, kx): offset of the channel plane and the tap offsets.
pub(crate) type Tap = (usize, isize, isize);

fn taps(g: &ConvGeom) -> Vec<Tap> {
    let mut t = Vec::with_capacity(g.k());
    for ci in 0..g.cin_g() {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                t.push((ci * g.h * g.w, tap_offset(ky, g.dil[0], g.pad[0]), tap_offset(kx, g.dil[1], g.pad[1])));
            }
        }
    }
    t
}

/// The im2col matrix `col[K, L]` of one image-group's input planes `x` (`cin_g * h * w`).
/// With `img_stride > 0` the columns run over several images: column `l` is position `l % L`
/// of the image at `x[(l / L) * img_stride..]` (batched GEMMs on small maps).
pub(crate) struct Im2col<'a> {
    x: &'a [f32],
    g: &'a ConvGeom,
    taps: &'a [Tap],
    img_stride: usize,
}

impl<'a> Im2col<'a> {
    /// Row k reads input position `(oy * stride + taps[k].1, ox * stride + taps[k].2)` of the
    /// plane at `x[taps[k].0..]`; only `g`'s input/output extents and stride are used.
    pub(crate) fn new(x: &'a [f32], g: &'a ConvGeom, taps: &'a [Tap], img_stride: usize) -> Self {
        Im2col { x, g, taps, img_stride }
    }

    /// Splits columns `l0..l0+len` into runs that each lie in one output row (at most
    /// `MAX_RUNS`; `len` must allow that). Done once per packed block, so the divisions are not
    /// paid per im2col row.
    fn runs(&self, l0: usize, len: usize) -> Runs {
        let g = self.g;
        let l = g.l();
        let (mut img, r) = if self.img_stride > 0 { (l0 / l, l0 % l) } else { (0, l0) };
        let (mut oy, mut ox) = (r / g.ow, r % g.ow);
        let mut runs = Runs { n: 0, run: [Run::default(); MAX_RUNS] };
        let mut t = 0;
        while t < len {
            if oy == g.oh {
                img += 1;
                oy = 0;
            }
            let n = (g.ow - ox).min(len - t);
            runs.run[runs.n] = Run { t, base: img * self.img_stride, oy, ox, len: n };
            runs.n += 1;
            t += n;
            ox = 0;
            oy += 1;
        }
        runs
    }

    /// Writes im2col row `k` over one run to `dst[run.t..run.t + run.len]`.
    #[inline(always)]
    fn tap_run(&self, k: usize, run: &Run, dst: &mut [f32]) {
        let g = self.g;
        let (plane, offy, offx) = self.taps[k];
        let (sy, sx) = (g.stride[0], g.stride[1]);
        let iy = (run.oy * sy) as isize + offy;
        let d = &mut dst[run.t..run.t + run.len];
        if iy < 0 || iy >= g.h as isize {
            d.fill(0.0);
            return;
        }
        let row = &self.x[run.base + plane + iy as usize * g.w..][..g.w];
        // Output columns [a, b) of this run read inside the input row.
        let (xlo, xhi) = if sx == 1 {
            ((-offx).max(0) as usize, (g.w as isize - offx).max(0) as usize)
        } else {
            valid_range(offx, sx, g.w, g.ow)
        };
        let end = run.ox + run.len;
        let a = run.ox.max(xlo).min(end);
        let b = end.min(xhi).max(a);
        let (za, zb) = (a - run.ox, b - run.ox);
        d[..za].fill(0.0);
        d[zb..].fill(0.0);
        if b > a {
            let s0 = (a * sx) as isize + offx;
            if sx == 1 {
                d[za..zb].copy_from_slice(&row[s0 as usize..s0 as usize + (b - a)]);
            } else {
                // a lies in the valid range, so every index here is inside the row.
                for (u, v) in d[za..zb].iter_mut().enumerate() {
                    *v = row[(s0 + (u * sx) as isize) as usize];
                }
            }
        }
    }
}

/// Most runs one packing call handles at once (a run has at least one column).
const MAX_RUNS: usize = 64;

/// Consecutive im2col columns in one output row: block columns `t..t+len` are output row `oy`,
/// columns `ox..ox+len` of the image at `x[base..]`.
#[derive(Clone, Copy, Default)]
struct Run {
    t: usize,
    base: usize,
    oy: usize,
    ox: usize,
    len: usize,
}

struct Runs {
    n: usize,
    run: [Run; MAX_RUNS],
}

impl Runs {
    fn iter(&self) -> impl Iterator<Item = &Run> {
        self.run[..self.n].iter()
    }
}

/// Below this output width runs are too short to pay for their set-up (the decoder's 3x3 and
/// 6x6 maps): packing goes element by element from precomputed column positions instead.
const SHORT_ROWS: usize = 8;

/// Where one im2col column reads: its image's offset in `x` and the input coordinates of its
/// window origin (`oy * sy`, `ox * sx`).
#[derive(Clone, Copy, Default)]
struct Pos {
    base: usize,
    y: isize,
    x: isize,
}

impl Im2col<'_> {
    /// Positions of columns `l0..l0 + out.len()`.
    fn positions(&self, l0: usize, out: &mut [Pos]) {
        let g = self.g;
        let l = g.l();
        let (mut img, r) = if self.img_stride > 0 { (l0 / l, l0 % l) } else { (0, l0) };
        let (mut oy, mut ox) = (r / g.ow, r % g.ow);
        for p in out.iter_mut() {
            if ox == g.ow {
                ox = 0;
                oy += 1;
                if oy == g.oh {
                    oy = 0;
                    img += 1;
                }
            }
            let base = img * self.img_stride;
            *p = Pos { base, y: (oy * g.stride[0]) as isize, x: (ox * g.stride[1]) as isize };
            ox += 1;
        }
    }

    /// `col[k]` at one column position (0 in the padding).
    #[inline(always)]
    fn value(&self, k: usize, pos: &Pos) -> f32 {
        let (plane, offy, offx) = self.taps[k];
        let (iy, ix) = (pos.y + offy, pos.x + offx);
        if iy >= 0 && iy < self.g.h as isize && ix >= 0 && ix < self.g.w as isize {
            self.x[pos.base + plane + iy as usize * self.g.w + ix as usize]
        } else {
            0.0
        }
    }
}

impl PackB for Im2col<'_> {
    fn pack_b(&self, j0: usize, cols: usize, p0: usize, kc: usize, nr: usize, dst: &mut [f32]) {
        if self.g.ow < SHORT_ROWS && cols <= MAX_RUNS {
            let mut pos = [Pos::default(); MAX_RUNS];
            self.positions(j0, &mut pos[..cols]);
            for p in 0..kc {
                let row = &mut dst[p * nr..(p + 1) * nr];
                for (d, q) in row.iter_mut().zip(&pos[..cols]) {
                    *d = self.value(p0 + p, q);
                }
                row[cols..].fill(0.0);
            }
            return;
        }
        for c0 in (0..cols).step_by(MAX_RUNS) {
            let runs = self.runs(j0 + c0, MAX_RUNS.min(cols - c0));
            for p in 0..kc {
                let row = &mut dst[p * nr + c0..(p + 1) * nr];
                for run in runs.iter() {
                    self.tap_run(p0 + p, run, row);
                }
            }
        }
        for p in 0..kc {
            dst[p * nr + cols..(p + 1) * nr].fill(0.0);
        }
    }
}

/// `col^T[L, K]`: the transposed column matrix as the right GEMM operand (weight gradient).
struct Im2colT<'a>(Im2col<'a>);

impl PackB for Im2colT<'_> {
    fn pack_b(&self, j0: usize, cols: usize, p0: usize, kc: usize, nr: usize, dst: &mut [f32]) {
        if self.0.g.ow < SHORT_ROWS {
            let mut pos = [Pos::default(); MAX_RUNS];
            for q0 in (0..kc).step_by(MAX_RUNS) {
                let q = MAX_RUNS.min(kc - q0);
                self.0.positions(p0 + q0, &mut pos[..q]);
                for (u, at) in pos[..q].iter().enumerate() {
                    let row = &mut dst[(q0 + u) * nr..(q0 + u + 1) * nr];
                    for (j, d) in row[..cols].iter_mut().enumerate() {
                        *d = self.0.value(j0 + j, at);
                    }
                    row[cols..].fill(0.0);
                }
            }
            return;
        }
        // Run by run (one output row): every tap's values are copied as a contiguous row of a
        // small [taps, run] block, which is then transposed into the panel.
        let mut tmp = [0.0f32; 48 * MAX_RUNS];
        for q0 in (0..kc).step_by(MAX_RUNS) {
            let runs = self.0.runs(p0 + q0, MAX_RUNS.min(kc - q0));
            let block = &mut dst[q0 * nr..];
            for run in runs.iter() {
                let n = run.len;
                // cols <= nr <= 48 (the widest microkernel) and n <= MAX_RUNS.
                assert!(cols * n <= tmp.len(), "Im2colT: panel wider than 48 columns");
                let local = Run { t: 0, ..*run };
                for j in 0..cols {
                    self.0.tap_run(j0 + j, &local, &mut tmp[j * n..(j + 1) * n]);
                }
                transpose(&tmp, n, cols, n, &mut block[run.t * nr..], nr);
            }
        }
        if cols < nr {
            for p in 0..kc {
                dst[p * nr + cols..(p + 1) * nr].fill(0.0);
            }
        }
    }
}

/// Maps smaller than this run as one GEMM over the whole batch (N = n*L) so the 48-wide
/// column panels are filled (a 7x7 map alone would leave half of the second panel empty).
pub(crate) const BATCH_BELOW_L: usize = 512;

/// Forward convolution into `out` (`g.out_len()`), bias added.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom, out: &mut [f32]) {
    if winograd::pays_off(g) {
        return winograd::forward(x, w, bias, g, out);
    }
    let (cin_g, cout_g, k, l) = (g.cin_g(), g.cout_g(), g.k(), g.l());
    let (img_in, grp_in) = (g.cin * g.h * g.w, cin_g * g.h * g.w);
    let taps = taps(g);
    if l < BATCH_BELOW_L && g.n > 1 {
        let nl = g.n * l;
        let mut c = vec![0.0f32; cout_g * nl];
        for gi in 0..g.groups {
            let src = Im2col { x: &x[gi * grp_in..], g, taps: &taps, img_stride: img_in };
            let wg = MatRef::new(&w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k);
            gemm_packed((cout_g, nl, k), &wg, &src, &mut c, nl, false);
            // c[co][img][l] -> out[img][gi*cout_g + co][l], plus bias.
            out.par_chunks_mut(g.cout * l).enumerate().for_each(|(img, o)| {
                for co in 0..cout_g {
                    let oc = gi * cout_g + co;
                    let b0 = bias.map_or(0.0, |b| b[oc]);
                    let src = &c[co * nl + img * l..co * nl + (img + 1) * l];
                    for (d, &v) in o[oc * l..(oc + 1) * l].iter_mut().zip(src) {
                        *d = v + b0;
                    }
                }
            });
        }
        return;
    }
    out.par_chunks_mut(g.cout * l).enumerate().for_each(|(ni, o)| {
        for gi in 0..g.groups {
            let src = Im2col {
                x: &x[ni * img_in + gi * grp_in..ni * img_in + (gi + 1) * grp_in],
                g,
                taps: &taps,
                img_stride: 0,
            };
            let wg = MatRef::new(&w[gi * cout_g * k..(gi + 1) * cout_g * k], cout_g, k);
            gemm_packed((cout_g, l, k), &wg, &src, &mut o[gi * cout_g * l..(gi + 1) * cout_g * l], l, false);
        }
        if let Some(b) = bias {
            for (row, &bv) in o.chunks_mut(l).zip(b) {
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    });
}

/// Whether the input gradient can run as a forward convolution of `grad_out` with the flipped
/// kernel (stride 1 and padding within the kernel span).
pub(crate) fn input_grad_as_conv(g: &ConvGeom) -> bool {
    g.stride == [1, 1] && g.pad[0] <= g.dil[0] * (g.kh - 1) && g.pad[1] <= g.dil[1] * (g.kw - 1)
}

/// The kernel of the transposed convolution: `w'[gi*cin_g + ci][co][ky][kx] =
/// w[gi*cout_g + co][ci][kh-1-ky][kw-1-kx]` for a `[groups*cout_g, cin_g, kh, kw]` weight. A
/// stride-1 input gradient is the forward conv of the output gradient with it.
pub fn flip_transpose_weight(w: &[f32], groups: usize, cout_g: usize, cin_g: usize, [kh, kw]: [usize; 2]) -> Vec<f32> {
    let mut wf = vec![0.0f32; w.len()];
    for gi in 0..groups {
        for co in 0..cout_g {
            for ci in 0..cin_g {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let src = (((gi * cout_g + co) * cin_g + ci) * kh + kh - 1 - ky) * kw + kw - 1 - kx;
                        let dst = (((gi * cin_g + ci) * cout_g + co) * kh + ky) * kw + kx;
                        wf[dst] = w[src];
                    }
                }
            }
        }
    }
    wf
}

/// Input gradient for `input_grad_as_conv` geometries: `gx = conv(go, flip(w)^T)` with
/// padding `dil*(k-1) - pad`.
pub(crate) fn backward_input_stride1(go: &[f32], w: &[f32], g: &ConvGeom, gx: &mut [f32]) {
    let (kh, kw) = (g.kh, g.kw);
    let wf = flip_transpose_weight(w, g.groups, g.cout_g(), g.cin_g(), [kh, kw]);
    let gt = ConvGeom {
        cin: g.cout,
        h: g.oh,
        w: g.ow,
        cout: g.cin,
        oh: g.h,
        ow: g.w,
        pad: [g.dil[0] * (kh - 1) - g.pad[0], g.dil[1] * (kw - 1) - g.pad[1]],
        ..*g
    };
    forward(go, &wf, None, &gt, gx);
}

/// Weight gradient `[cout, cin_g, kh, kw]`: per image and group `gw[cout_g, K] += go · col^T`
/// (the long L dimension is the GEMM depth; M = channels divides the 8-row tile), images split
/// across threads with one partial gradient each.
pub fn backward_weight(x: &[f32], go: &[f32], g: &ConvGeom, gw: &mut [f32]) {
    let (cin_g, cout_g, k, l) = (g.cin_g(), g.cout_g(), g.k(), g.l());
    let (img_in, grp_in) = (g.cin * g.h * g.w, cin_g * g.h * g.w);
    let taps = taps(g);
    if l < BATCH_BELOW_L && g.n > 1 {
        let nl = g.n * l;
        let mut gob = vec![0.0f32; cout_g * nl];
        gw.fill(0.0);
        for gi in 0..g.groups {
            for (r, chunk) in gob.chunks_mut(l).enumerate() {
                let (co, img) = (r / g.n, r % g.n);
                let off = (img * g.cout + gi * cout_g + co) * l;
                chunk.copy_from_slice(&go[off..off + l]);
            }
            let src = Im2col { x: &x[gi * grp_in..], g, taps: &taps, img_stride: img_in };
            let gwg = &mut gw[gi * cout_g * k..(gi + 1) * cout_g * k];
            gemm_packed((cout_g, k, nl), &MatRef::new(&gob, cout_g, nl), &Im2colT(src), gwg, k, false);
        }
        return;
    }
    let chunk = g.n.div_ceil(rayon::current_num_threads().clamp(1, g.n));
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut part = vec![0.0f32; gw.len()];
            for ni in c * chunk..g.n.min((c + 1) * chunk) {
                for gi in 0..g.groups {
                    let src = Im2col {
                        x: &x[ni * img_in + gi * grp_in..ni * img_in + (gi + 1) * grp_in],
                        g,
                        taps: &taps,
                        img_stride: 0,
                    };
                    let off = (ni * g.cout + gi * cout_g) * l;
                    let gog = MatRef::new(&go[off..off + cout_g * l], cout_g, l);
                    let pg = &mut part[gi * cout_g * k..(gi + 1) * cout_g * k];
                    gemm_packed((cout_g, k, l), &gog, &Im2colT(src), pg, k, true);
                }
            }
            part
        })
        .collect();
    gw.fill(0.0);
    for part in &partials {
        gw.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
    }
}
