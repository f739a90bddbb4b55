//! Slice-level kernels of the sparse convolution (no tensors, no autograd).
//!
//! Layouts: features are row-major `[rows, C]`; the weight is PyTorch's `[Cout, Cin/groups, kh, kw]`
//! (offset index k = ky * kw + kx fastest). Every GEMM goes through `spark_engine::cpu::gemm`.

use crate::KernelMap;
use rayon::prelude::*;
use spark_engine::cpu::gemm::{gemm, MatRef};
use spark_engine::Float;

/// Rows per rayon task for memory-bound row loops.
const ROWS_PER_TASK: usize = 64;

/// A raw pointer that rayon tasks may share when each writes disjoint rows.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: only used where every task writes a distinct set of rows (documented at each use).
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    /// A method (not field access) so closures capture the whole `Sync` wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

/// Geometry shared by the kernels of one conv call.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub kvol: usize,
}

impl ConvDims {
    fn cig(&self) -> usize {
        self.cin / self.groups
    }
    fn cog(&self) -> usize {
        self.cout / self.groups
    }
}

/// Weight of group g as `[K*cig, cog]`: row k*cig+ci, column co (the forward GEMM's B).
fn weight_kc_o<T: Float>(w: &[T], d: ConvDims, g: usize) -> Vec<T> {
    let (cig, cog, kv) = (d.cig(), d.cog(), d.kvol);
    let mut out = vec![T::ZERO; kv * cig * cog];
    for co in 0..cog {
        for ci in 0..cig {
            for k in 0..kv {
                out[(k * cig + ci) * cog + co] = w[((g * cog + co) * cig + ci) * kv + k];
            }
        }
    }
    out
}

/// Weight of group g as `[K*cog, cig]`: row k*cog+co, column ci (the input-gradient GEMM's B).
fn weight_ko_c<T: Float>(w: &[T], d: ConvDims, g: usize) -> Vec<T> {
    let (cig, cog, kv) = (d.cig(), d.cog(), d.kvol);
    let mut out = vec![T::ZERO; kv * cog * cig];
    for co in 0..cog {
        for ci in 0..cig {
            for k in 0..kv {
                out[(k * cog + co) * cig + ci] = w[((g * cog + co) * cig + ci) * kv + k];
            }
        }
    }
    out
}

/// `dst[r, k*width + j] = src[table[r*K + k] * ld + off + j]` (0 where the table holds -1).
fn gather<T: Float>(src: &[T], ld: usize, off: usize, width: usize, table: &[i32], kv: usize, dst: &mut [T]) {
    let row_len = kv * width;
    if row_len == 0 {
        return;
    }
    dst.par_chunks_mut(row_len).enumerate().with_min_len(ROWS_PER_TASK).for_each(|(r, row)| {
        for k in 0..kv {
            let seg = &mut row[k * width..(k + 1) * width];
            let i = table[r * kv + k];
            if i >= 0 {
                let s = i as usize * ld + off;
                seg.copy_from_slice(&src[s..s + width]);
            } else {
                seg.fill(T::ZERO);
            }
        }
    });
}

fn add_bias<T: Float>(y: &mut [T], bias: Option<&[T]>, cout: usize) {
    if let (Some(b), true) = (bias, cout > 0) {
        y.par_chunks_mut(cout).with_min_len(ROWS_PER_TASK).for_each(|row| {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        });
    }
}

/// Column sums of a row-major `[rows, c]` matrix (bias gradients).
pub fn column_sums<T: Float>(m: &[T], c: usize) -> Vec<T> {
    if c == 0 {
        return Vec::new();
    }
    m.par_chunks(c * 256)
        .map(|block| {
            let mut acc = vec![T::ZERO; c];
            for row in block.chunks(c) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .reduce(
            || vec![T::ZERO; c],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
}

// ------------------------------------------------------------------ implicit GEMM (any groups)

/// Forward: per group, gather `[n_out, K*cig]` along the neighbour table, one GEMM with the
/// `[K*cig, cog]` weight. A 1x1 stride-1 map on one set is the identity and skips the gather.
pub fn implicit_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cig(), d.cog());
    let mut y = vec![T::ZERO; n_out * d.cout];
    let mut buf = if map.is_identity() { Vec::new() } else { vec![T::ZERO; n_out * kv * cig] };
    for g in 0..d.groups {
        let b = weight_kc_o(w, d, g);
        let a = if map.is_identity() {
            MatRef { data: &x[g * cig..], rows: n_out, cols: cig, rs: d.cin, cs: 1 }
        } else {
            gather(x, d.cin, g * cig, cig, map.neighbours(), kv, &mut buf);
            MatRef::new(&buf, n_out, kv * cig)
        };
        if n_out > 0 {
            gemm(a, MatRef::new(&b, kv * cig, cog), &mut y[g * cog..], d.cout, false);
        }
    }
    add_bias(&mut y, bias, d.cout);
    y
}

/// Weight gradient `[Cout, cig, kh, kw]`: per group `G^T · dY` with G re-gathered (cheaper in
/// memory than keeping it from the forward pass).
pub fn implicit_grad_weight<T: Float>(x: &[T], dy: &[T], map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cig(), d.cog());
    let mut dw = vec![T::ZERO; d.cout * cig * kv];
    let mut buf = if map.is_identity() { Vec::new() } else { vec![T::ZERO; n_out * kv * cig] };
    let mut dw2 = vec![T::ZERO; kv * cig * cog];
    for g in 0..d.groups {
        let a = if map.is_identity() {
            MatRef { data: &x[g * cig..], rows: n_out, cols: cig, rs: d.cin, cs: 1 }
        } else {
            gather(x, d.cin, g * cig, cig, map.neighbours(), kv, &mut buf);
            MatRef::new(&buf, n_out, kv * cig)
        };
        let dyg = MatRef { data: &dy[g * cog..], rows: n_out, cols: cog, rs: d.cout, cs: 1 };
        if kv * cig > 0 && cog > 0 {
            gemm(a.t(), dyg, &mut dw2, cog, false);
        }
        for co in 0..cog {
            for ci in 0..cig {
                for k in 0..kv {
                    dw[((g * cog + co) * cig + ci) * kv + k] = dw2[(k * cig + ci) * cog + co];
                }
            }
        }
    }
    dw
}

/// Input gradient `[n_in, Cin]`: per group gather dY along the reverse table into
/// `[n_in, K*cog]` and one GEMM with the `[K*cog, cig]` weight; every input row is written by
/// one task, so no atomics or scatter conflicts.
pub fn implicit_grad_input<T: Float>(dy: &[T], w: &[T], map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (n_in, kv, cig, cog) = (map.n_in(), d.kvol, d.cig(), d.cog());
    let mut dx = vec![T::ZERO; n_in * d.cin];
    let mut buf = if map.is_identity() { Vec::new() } else { vec![T::ZERO; n_in * kv * cog] };
    for g in 0..d.groups {
        let b = weight_ko_c(w, d, g);
        let a = if map.is_identity() {
            MatRef { data: &dy[g * cog..], rows: n_in, cols: cog, rs: d.cout, cs: 1 }
        } else {
            gather(dy, d.cout, g * cog, cog, map.reverse(), kv, &mut buf);
            MatRef::new(&buf, n_in, kv * cog)
        };
        if n_in > 0 {
            gemm(a, MatRef::new(&b, kv * cog, cig), &mut dx[g * cig..], d.cin, false);
        }
    }
    dx
}

// ------------------------------------------------------------------ per-offset (groups == 1)

/// Rows `rows[p][col]` of `src` (`[*, c]`) gathered into `[P, c]`.
fn gather_pairs<T: Float>(src: &[T], c: usize, pairs: &[[u32; 2]], col: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; pairs.len() * c];
    if c > 0 {
        out.par_chunks_mut(c).zip(pairs.par_iter()).with_min_len(ROWS_PER_TASK).for_each(|(row, p)| {
            let s = p[col] as usize * c;
            row.copy_from_slice(&src[s..s + c]);
        });
    }
    out
}

/// `dst[pairs[p][col]] += rows[p]`. Within one kernel offset every input and every output row
/// appears at most once, so the parallel writes hit distinct rows.
fn scatter_add_pairs<T: Float>(dst: &mut [T], c: usize, rows: &[T], pairs: &[[u32; 2]], col: usize) {
    if c == 0 {
        return;
    }
    let ptr = SyncPtr(dst.as_mut_ptr());
    let len = dst.len();
    rows.par_chunks(c).zip(pairs.par_iter()).with_min_len(ROWS_PER_TASK).for_each(|(row, p)| {
        let s = p[col] as usize * c;
        assert!(s + c <= len);
        // SAFETY: rows of one offset are distinct (the map is injective per offset), so no two
        // tasks touch the same elements; bounds are checked above.
        let out = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(s), c) };
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    });
}

/// Forward, classic rulebook form: per offset gather `[P_k, Cin]`, GEMM with `W_k [Cin, Cout]`,
/// scatter-add into the output rows.
pub fn per_offset_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (cin, cout, kv) = (d.cin, d.cout, d.kvol);
    let mut y = vec![T::ZERO; map.n_out() * cout];
    let w2 = weight_kc_o(w, d, 0);
    for k in 0..kv {
        let pairs = map.pairs(k);
        if pairs.is_empty() {
            continue;
        }
        let xk = gather_pairs(x, cin, pairs, 0);
        let mut yk = vec![T::ZERO; pairs.len() * cout];
        gemm(
            MatRef::new(&xk, pairs.len(), cin),
            MatRef::new(&w2[k * cin * cout..(k + 1) * cin * cout], cin, cout),
            &mut yk,
            cout,
            false,
        );
        scatter_add_pairs(&mut y, cout, &yk, pairs, 1);
    }
    add_bias(&mut y, bias, cout);
    y
}

/// Backward, rulebook form: `dW_k = X_k^T dY_k`, `dX[in] += dY_k W_k^T`. Returns (dx, dw);
/// either is skipped (empty) when not wanted.
pub fn per_offset_backward<T: Float>(
    x: &[T],
    w: &[T],
    dy: &[T],
    map: &KernelMap,
    d: ConvDims,
    want_dx: bool,
    want_dw: bool,
) -> (Vec<T>, Vec<T>) {
    let (cin, cout, kv) = (d.cin, d.cout, d.kvol);
    let w2 = weight_kc_o(w, d, 0);
    let mut dx = if want_dx { vec![T::ZERO; map.n_in() * cin] } else { Vec::new() };
    let mut dw2 = if want_dw { vec![T::ZERO; kv * cin * cout] } else { Vec::new() };
    for k in 0..kv {
        let pairs = map.pairs(k);
        if pairs.is_empty() {
            continue;
        }
        let p = pairs.len();
        let dyk = gather_pairs(dy, cout, pairs, 1);
        let wk = MatRef::new(&w2[k * cin * cout..(k + 1) * cin * cout], cin, cout);
        if want_dw {
            let xk = gather_pairs(x, cin, pairs, 0);
            gemm(
                MatRef::new(&xk, p, cin).t(),
                MatRef::new(&dyk, p, cout),
                &mut dw2[k * cin * cout..(k + 1) * cin * cout],
                cout,
                false,
            );
        }
        if want_dx {
            let mut dxk = vec![T::ZERO; p * cin];
            gemm(MatRef::new(&dyk, p, cout), wk.t(), &mut dxk, cin, false);
            scatter_add_pairs(&mut dx, cin, &dxk, pairs, 0);
        }
    }
    let mut dw = Vec::new();
    if want_dw {
        dw = vec![T::ZERO; cout * cin * kv];
        for co in 0..cout {
            for ci in 0..cin {
                for k in 0..kv {
                    dw[(co * cin + ci) * kv + k] = dw2[(k * cin + ci) * cout + co];
                }
            }
        }
    }
    (dx, dw)
}

// ------------------------------------------------------------------ depthwise (direct)

/// `[K, C]` copy of a depthwise weight `[C, 1, kh, kw]`, so the inner loop runs over channels.
fn depthwise_kc<T: Float>(w: &[T], c: usize, kv: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; kv * c];
    for ch in 0..c {
        for k in 0..kv {
            out[k * c + ch] = w[ch * kv + k];
        }
    }
    out
}

/// `y[o, c] = b[c] + sum_k x[nbr(o, k), c] * w[c, k]`, vectorised over channels.
pub fn depthwise_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, map: &KernelMap, c: usize) -> Vec<T> {
    let kv = map.volume();
    let wt = depthwise_kc(w, c, kv);
    let nbr = map.neighbours();
    let mut y = vec![T::ZERO; map.n_out() * c];
    if c == 0 {
        return y;
    }
    y.par_chunks_mut(c).enumerate().with_min_len(16).for_each(|(o, row)| {
        if let Some(b) = bias {
            row.copy_from_slice(b);
        }
        for k in 0..kv {
            let i = nbr[o * kv + k];
            if i < 0 {
                continue;
            }
            let xr = &x[i as usize * c..(i as usize + 1) * c];
            let wr = &wt[k * c..(k + 1) * c];
            for ((v, &a), &b) in row.iter_mut().zip(xr).zip(wr) {
                *v += a * b;
            }
        }
    });
    y
}

/// `dx[i, c] = sum_k dy[rev(i, k), c] * w[c, k]`.
pub fn depthwise_grad_input<T: Float>(dy: &[T], w: &[T], map: &KernelMap, c: usize) -> Vec<T> {
    let kv = map.volume();
    let wt = depthwise_kc(w, c, kv);
    let rev = map.reverse();
    let mut dx = vec![T::ZERO; map.n_in() * c];
    if c == 0 {
        return dx;
    }
    dx.par_chunks_mut(c).enumerate().with_min_len(16).for_each(|(i, row)| {
        for k in 0..kv {
            let o = rev[i * kv + k];
            if o < 0 {
                continue;
            }
            let gr = &dy[o as usize * c..(o as usize + 1) * c];
            let wr = &wt[k * c..(k + 1) * c];
            for ((v, &a), &b) in row.iter_mut().zip(gr).zip(wr) {
                *v += a * b;
            }
        }
    });
    dx
}

/// `dw[c, k] = sum_o x[nbr(o, k), c] * dy[o, c]`: per-task partial sums, then a reduction.
pub fn depthwise_grad_weight<T: Float>(x: &[T], dy: &[T], map: &KernelMap, c: usize) -> Vec<T> {
    let kv = map.volume();
    let nbr = map.neighbours();
    let n_out = map.n_out();
    if c == 0 || n_out == 0 {
        return vec![T::ZERO; c * kv];
    }
    let chunk = 128;
    let acc = (0..n_out.div_ceil(chunk))
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![T::ZERO; kv * c];
            for o in t * chunk..((t + 1) * chunk).min(n_out) {
                let gr = &dy[o * c..(o + 1) * c];
                for k in 0..kv {
                    let i = nbr[o * kv + k];
                    if i < 0 {
                        continue;
                    }
                    let xr = &x[i as usize * c..(i as usize + 1) * c];
                    for ((a, &xv), &gv) in acc[k * c..(k + 1) * c].iter_mut().zip(xr).zip(gr) {
                        *a += xv * gv;
                    }
                }
            }
            acc
        })
        .reduce(
            || vec![T::ZERO; kv * c],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        );
    let mut dw = vec![T::ZERO; c * kv];
    for ch in 0..c {
        for k in 0..kv {
            dw[ch * kv + k] = acc[k * c + ch];
        }
    }
    dw
}
