//! f32 implicit GEMM for sparse convolution with the gather fused into the GEMM's packing.
//!
//! The materialised form (`conv_kernels::implicit_*`) writes the gathered matrix
//! `G [rows, K*C]` to memory and reads it back, and its GEMMs have the channel count (often 64)
//! as their column dimension, which leaves a third of the 48-wide AVX-512 tiles empty. Here the
//! channels are the GEMM's rows (M = Cout, a multiple of the 8-row tile) and the active sites its
//! columns, as in the dense implicit-GEMM conv, and the GEMM packs its right operand straight
//! from the feature rows along the kernel map (`GatherT`, `GatherRows`). Only the `[C, rows]`
//! result is transposed back into the `[rows, C]` feature layout.

use crate::conv_kernels::ConvDims;
use crate::KernelMap;
use rayon::prelude::*;
use spark_engine::cpu::gemm::{gemm_packed, MatRef, PackB};
use spark_engine::cpu::partials::sum_of_partials;
use spark_engine::cpu::scratch::with_scratch;
use spark_engine::cpu::transpose::transpose;

/// `G^T [K*width, rows]` as a GEMM right operand: depth `p = k*width + c`, column `j` = row `j`
/// of the table; element = `src[table[j*kv + k] * ld + off + c]`, or 0 where the table has -1.
#[derive(Clone, Copy)]
struct GatherT<'a> {
    src: &'a [f32],
    ld: usize,
    off: usize,
    width: usize,
    table: &'a [i32],
    kv: usize,
}

impl PackB for GatherT<'_> {
    fn pack_b(&self, j0: usize, cols: usize, p0: usize, kc: usize, nr: usize, dst: &mut [f32]) {
        let mut p = p0;
        while p < p0 + kc {
            // One kernel offset: depths p..p+len are channels c0..c0+len of offset k.
            let (k, c0) = (p / self.width, p % self.width);
            let len = (self.width - c0).min(p0 + kc - p);
            let panel = &mut dst[(p - p0) * nr..(p - p0 + len) * nr];
            if len < 8 {
                // Few channels (the RGB stem): element-wise, a block transpose would not pay.
                for j in 0..cols {
                    let i = self.table[(j0 + j) * self.kv + k];
                    for t in 0..len {
                        panel[t * nr + j] =
                            if i >= 0 { self.src[i as usize * self.ld + self.off + c0 + t] } else { 0.0 };
                    }
                }
                if cols < nr {
                    for t in 0..len {
                        panel[t * nr + cols..(t + 1) * nr].fill(0.0);
                    }
                }
                p += len;
                continue;
            }
            // Gathered rows go into a small [cols, len] block, transposed into the panel.
            let mut tmp = [0.0f32; 48 * 64];
            let step = (tmp.len() / cols.max(1)).min(64);
            for q0 in (0..len).step_by(step) {
                let q = step.min(len - q0);
                for j in 0..cols {
                    let i = self.table[(j0 + j) * self.kv + k];
                    let row = &mut tmp[j * q..(j + 1) * q];
                    if i >= 0 {
                        let s = i as usize * self.ld + self.off + c0 + q0;
                        row.copy_from_slice(&self.src[s..s + q]);
                    } else {
                        row.fill(0.0);
                    }
                }
                transpose(&tmp, q, cols, q, &mut panel[q0 * nr..], nr);
            }
            if cols < nr {
                for t in 0..len {
                    panel[t * nr + cols..(t + 1) * nr].fill(0.0);
                }
            }
            p += len;
        }
    }
}

/// `G [rows, K*width]` as a GEMM right operand: depth `p` = row `p` of the table, column
/// `j = k*width + c`. Each packed row is a few contiguous channel runs.
struct GatherRows<'a>(GatherT<'a>);

impl PackB for GatherRows<'_> {
    fn pack_b(&self, j0: usize, cols: usize, p0: usize, kc: usize, nr: usize, dst: &mut [f32]) {
        let g = &self.0;
        for p in 0..kc {
            let row = &mut dst[p * nr..(p + 1) * nr];
            let trow = &g.table[(p0 + p) * g.kv..(p0 + p + 1) * g.kv];
            let mut j = j0;
            while j < j0 + cols {
                let (k, c0) = (j / g.width, j % g.width);
                let len = (g.width - c0).min(j0 + cols - j);
                let d = &mut row[j - j0..j - j0 + len];
                let i = trow[k];
                if i >= 0 {
                    let s = i as usize * g.ld + g.off + c0;
                    d.copy_from_slice(&g.src[s..s + len]);
                } else {
                    d.fill(0.0);
                }
                j += len;
            }
            row[cols..].fill(0.0);
        }
    }
}

/// Sites per parallel task of the forward and input-gradient GEMMs, about: each task multiplies
/// the weight by its own block of gathered columns and transposes the `[C, sites]` result
/// (still in cache) into its rows of the output, so tasks never share output rows.
const SITES_PER_TASK: usize = 512;

/// Fewest sites per task of the weight gradient, whose site dimension is the GEMM depth: below
/// this, one GEMM parallel over its own tiles beats short per-thread partial products.
const MIN_SITES_PER_WEIGHT_TASK: usize = 2048;

/// Rows per task when `rows` are split into about `target`-row tasks, a multiple of the thread
/// count so that every thread gets the same share.
fn balanced_chunk(rows: usize, target: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let tasks = rows.div_ceil(target).div_ceil(threads) * threads;
    rows.div_ceil(tasks.max(1)).max(1)
}

/// `out[rows, ldo]` columns `off..off + wa.rows` = `(wa · G^T)^T (+ bias)`, for every row of the
/// table in `b`, in parallel blocks of sites.
fn gemm_gathered_t(
    wa: MatRef<'_, f32>,
    b: &GatherT<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
    off: usize,
) {
    let chans = wa.rows;
    let chunk = balanced_chunk(out.len() / ldo, SITES_PER_TASK);
    out.par_chunks_mut(ldo * chunk).enumerate().for_each(|(t, blk)| {
        let (r0, n) = (t * chunk, blk.len() / ldo);
        let sub = GatherT { table: &b.table[r0 * b.kv..(r0 + n) * b.kv], ..*b };
        with_scratch(chans * n, |ct| {
            gemm_packed((chans, n, wa.cols), &wa, &sub, ct, n, false);
            for c in 0..chans {
                let bv = bias.map_or(0.0, |bs| bs[c]);
                for (r, &v) in ct[c * n..(c + 1) * n].iter().enumerate() {
                    blk[r * ldo + off + c] = v + bv;
                }
            }
        });
    });
}

/// Weight rows for the GEMM's left operand: `[rows_of(g), K*width]` with element
/// `(a, k*width + b) = w[index(a, b, k)]`. Both callers' indices are contiguous in `k`, so each
/// (a, b) reads its `kv` taps in one run; rows run in parallel. On a deep layer's small map
/// (ResNet layer 4: 64 sites, 512 channels) this copy is as large as the GEMM's whole input.
fn weight_rows(
    rows: usize,
    width: usize,
    kv: usize,
    index: impl Fn(usize, usize, usize) -> usize + Sync,
    w: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * kv * width];
    out.par_chunks_mut((kv * width).max(1)).enumerate().for_each(|(a, row)| {
        for b in 0..width {
            let taps = &w[index(a, b, 0)..index(a, b, 0) + kv];
            for (k, &v) in taps.iter().enumerate() {
                row[k * width + b] = v;
            }
        }
    });
    out
}

/// Forward over any kernel map: per group `Y_g^T [cog, n_out] = W_g [cog, K*cig] · G^T`.
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, map: &KernelMap, d: ConvDims) -> Vec<f32> {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cin / d.groups, d.cout / d.groups);
    let mut y = vec![0.0f32; n_out * d.cout];
    if n_out == 0 || d.cout == 0 {
        return y;
    }
    for g in 0..d.groups {
        let wg = weight_rows(cog, cig, kv, |co, ci, k| ((g * cog + co) * cig + ci) * kv + k, w);
        let b = GatherT { src: x, ld: d.cin, off: g * cig, width: cig, table: map.neighbours(), kv };
        let bias = bias.map(|b| &b[g * cog..(g + 1) * cog]);
        gemm_gathered_t(MatRef::new(&wg, cog, kv * cig), &b, bias, &mut y, d.cout, g * cog);
    }
    y
}

/// Input gradient of a stride-1 map (every input row is read by at most one output per offset):
/// per group `dX_g^T [cig, n_in] = W'_g [cig, K*cog] · gather(dY along the reverse table)^T`.
pub fn grad_input_stride1(dy: &[f32], w: &[f32], map: &KernelMap, d: ConvDims) -> Vec<f32> {
    let (n_in, kv, cig, cog) = (map.n_in(), d.kvol, d.cin / d.groups, d.cout / d.groups);
    let mut dx = vec![0.0f32; n_in * d.cin];
    if n_in == 0 || d.cin == 0 {
        return dx;
    }
    for g in 0..d.groups {
        let wg = weight_rows(cig, cog, kv, |ci, co, k| ((g * cog + co) * cig + ci) * kv + k, w);
        let b = GatherT { src: dy, ld: d.cout, off: g * cog, width: cog, table: map.reverse(), kv };
        gemm_gathered_t(MatRef::new(&wg, cig, kv * cog), &b, None, &mut dx, d.cin, g * cig);
    }
    dx
}

/// Weight gradient `[Cout, cig, kh, kw]`: per group `dW_g [cog, K*cig] = dY_g^T · G`, the long
/// site dimension as the GEMM depth. Few sites (a deep layer's small map) make one GEMM whose
/// result is permuted straight into place; many are split across threads, each with its own
/// partial product, summed pairwise.
pub fn grad_weight(x: &[f32], dy: &[f32], map: &KernelMap, d: ConvDims) -> Vec<f32> {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cin / d.groups, d.cout / d.groups);
    let mut dw = vec![0.0f32; d.cout * cig * kv];
    let len = cog * kv * cig;
    let per_task = n_out.div_ceil(rayon::current_num_threads()).max(MIN_SITES_PER_WEIGHT_TASK);
    let tasks = n_out.div_ceil(per_task);
    for g in 0..d.groups {
        let b = GatherT { src: x, ld: d.cin, off: g * cig, width: cig, table: map.neighbours(), kv };
        // `out [cog, kv*cig] = dY[r0..r0+n]^T · G[r0..r0+n]` over the site range of task `t`.
        let partial = |t: usize, out: &mut [f32]| {
            let (r0, n) = (t * per_task, per_task.min(n_out - t * per_task));
            let a = MatRef { data: &dy[r0 * d.cout + g * cog..], rows: cog, cols: n, rs: 1, cs: d.cout };
            let sub = GatherRows(GatherT { table: &b.table[r0 * kv..(r0 + n) * kv], ..b });
            gemm_packed((cog, kv * cig, n), &a, &sub, out, kv * cig, false);
        };
        let part = sum_of_partials(tasks, len, partial);
        // [co][k][ci] -> [co][ci][k]: contiguous reads, one co block (kv*cig floats) at a time.
        for co in 0..cog {
            let dst = &mut dw[(g * cog + co) * cig * kv..][..cig * kv];
            for k in 0..kv {
                let src = &part[(co * kv + k) * cig..][..cig];
                for (ci, &v) in src.iter().enumerate() {
                    dst[ci * kv + k] = v;
                }
            }
        }
    }
    dw
}
