//! Slice-level kernels of the sparse convolution (no tensors, no autograd).
//!
//! Layouts: features are row-major `[rows, C]`; the weight is PyTorch's `[Cout, Cin/groups, kh, kw]`
//! (offset index k = ky * kw + kx fastest). Every GEMM goes through `spark_engine::cpu::gemm`.

use crate::KernelMap;
use rayon::prelude::*;
use spark_engine::cpu::gemm::{gemm, MatRef};
use spark_engine::cpu::SyncPtr;
use spark_engine::Float;

/// Rows per rayon task for memory-bound row loops.
const ROWS_PER_TASK: usize = 64;

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

/// Rows per implicit-GEMM block: whole matrices up to 8M gathered floats (32 MiB in f32), so
/// each GEMM is large and packs its weight once; bigger problems are cut into row blocks.
fn block_rows(row_len: usize) -> usize {
    (8 << 20) / row_len.max(1)
}

/// Parallel gather of rows `r0..r0+m` of the table into `buf` (`[m, K*width]`).
#[allow(clippy::too_many_arguments)]
fn gather_block<T: Float>(
    src: &[T],
    ld: usize,
    off: usize,
    width: usize,
    table: &[i32],
    kv: usize,
    m: usize,
    buf: &mut Vec<T>,
) {
    let row_len = kv * width;
    buf.resize(m * row_len, T::ZERO);
    if row_len == 0 {
        return;
    }
    buf.par_chunks_mut(row_len).enumerate().with_min_len(32).for_each(|(r, row)| {
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

/// `out[rows, ldo] (group columns) = gather(src along table) · B_g` for every group, in row
/// blocks. Used by the forward (neighbour table) and the input gradient (reverse table).
#[allow(clippy::too_many_arguments)]
fn blocked_gathered_gemm<T: Float>(
    src: &[T],
    ld: usize,
    width: usize,
    table: &[i32],
    kv: usize,
    weights: &[Vec<T>],
    ncols: usize,
    out: &mut [T],
    ldo: usize,
    rows: usize,
) {
    if rows == 0 || ldo == 0 {
        return;
    }
    let br = block_rows(kv * width);
    let mut buf = Vec::new();
    for r0 in (0..rows).step_by(br) {
        let m = br.min(rows - r0);
        for (g, b) in weights.iter().enumerate() {
            gather_block(src, ld, g * width, width, &table[r0 * kv..(r0 + m) * kv], kv, m, &mut buf);
            gemm(
                MatRef::new(&buf, m, kv * width),
                MatRef::new(b, kv * width, ncols),
                &mut out[r0 * ldo + g * ncols..],
                ldo,
                false,
            );
        }
    }
}

/// Forward: per group, gather `[n_out, K*cig]` along the neighbour table, GEMM with the
/// `[K*cig, cog]` weight (blocked over rows). A 1x1 stride-1 map on one set is the identity and
/// runs one GEMM on the features themselves.
pub fn implicit_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cig(), d.cog());
    let mut y = vec![T::ZERO; n_out * d.cout];
    let weights: Vec<Vec<T>> = (0..d.groups).map(|g| weight_kc_o(w, d, g)).collect();
    if map.is_identity() {
        for (g, b) in weights.iter().enumerate() {
            let a = MatRef { data: &x[g * cig..], rows: n_out, cols: cig, rs: d.cin, cs: 1 };
            if n_out > 0 {
                gemm(a, MatRef::new(b, cig, cog), &mut y[g * cog..], d.cout, false);
            }
        }
    } else {
        blocked_gathered_gemm(x, d.cin, cig, map.neighbours(), kv, &weights, cog, &mut y, d.cout, n_out);
    }
    add_bias(&mut y, bias, d.cout);
    y
}

/// Weight gradient `[Cout, cig, kh, kw]`: per group `G^T · dY`, with G re-gathered block by
/// block (cheaper in memory than keeping it from the forward pass), accumulated into one result.
pub fn implicit_grad_weight<T: Float>(x: &[T], dy: &[T], map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cig(), d.cog());
    let mut dw = vec![T::ZERO; d.cout * cig * kv];
    let sz = kv * cig * cog;
    for g in 0..d.groups {
        let dw2 = if map.is_identity() {
            let mut acc = vec![T::ZERO; sz];
            let a = MatRef { data: &x[g * cig..], rows: n_out, cols: cig, rs: d.cin, cs: 1 };
            let dyg = MatRef { data: &dy[g * cog..], rows: n_out, cols: cog, rs: d.cout, cs: 1 };
            if sz > 0 {
                gemm(a.t(), dyg, &mut acc, cog, false);
            }
            acc
        } else {
            let mut acc = vec![T::ZERO; sz];
            let mut buf = Vec::new();
            let br = block_rows(kv * cig);
            let nbr = map.neighbours();
            for r0 in (0..n_out).step_by(br) {
                let m = br.min(n_out - r0);
                gather_block(x, d.cin, g * cig, cig, &nbr[r0 * kv..(r0 + m) * kv], kv, m, &mut buf);
                let a = MatRef::new(&buf, m, kv * cig);
                let dyg = MatRef { data: &dy[r0 * d.cout + g * cog..], rows: m, cols: cog, rs: d.cout, cs: 1 };
                if sz > 0 {
                    gemm(a.t(), dyg, &mut acc, cog, r0 > 0);
                }
            }
            acc
        };
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
/// `[n_in, K*cog]` blocks and GEMM with the `[K*cog, cig]` weight; every input row is written
/// by one task, so no atomics or scatter conflicts.
pub fn implicit_grad_input<T: Float>(dy: &[T], w: &[T], map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (n_in, kv, cig, cog) = (map.n_in(), d.kvol, d.cig(), d.cog());
    let mut dx = vec![T::ZERO; n_in * d.cin];
    let weights: Vec<Vec<T>> = (0..d.groups).map(|g| weight_ko_c(w, d, g)).collect();
    if map.is_identity() {
        for (g, b) in weights.iter().enumerate() {
            let a = MatRef { data: &dy[g * cog..], rows: n_in, cols: cog, rs: d.cout, cs: 1 };
            if n_in > 0 {
                gemm(a, MatRef::new(b, cog, cig), &mut dx[g * cig..], d.cin, false);
            }
        }
    } else if map.geom().stride == [1, 1] {
        blocked_gathered_gemm(dy, d.cout, cog, map.reverse(), kv, &weights, cig, &mut dx, d.cin, n_in);
    } else {
        strided_grad_input(dy, w, map, d, &mut dx);
    }
    dx
}

/// Input gradient of a strided conv: `dG = dY · W^T` (`[n_out, K*cig]`, in row blocks), then
/// scatter-add along the neighbour table one offset at a time (within an offset every input row
/// is hit at most once, so rows run in parallel). Gathering dY along the reverse table instead
/// would multiply mostly zeros: with stride s only about 1/s^2 of the (input, offset) slots have
/// an output.
fn strided_grad_input<T: Float>(dy: &[T], w: &[T], map: &KernelMap, d: ConvDims, dx: &mut [T]) {
    let (n_out, kv, cig, cog) = (map.n_out(), d.kvol, d.cig(), d.cog());
    let row_len = kv * cig;
    if n_out == 0 || row_len == 0 {
        return;
    }
    let nbr = map.neighbours();
    let br = block_rows(row_len);
    let mut dg = Vec::new();
    let ptr = SyncPtr(dx.as_mut_ptr());
    let len = dx.len();
    for g in 0..d.groups {
        let w2 = weight_kc_o(w, d, g); // [K*cig, cog]
        for r0 in (0..n_out).step_by(br) {
            let m = br.min(n_out - r0);
            dg.resize(m * row_len, T::ZERO);
            let dyg = MatRef { data: &dy[r0 * d.cout + g * cog..], rows: m, cols: cog, rs: d.cout, cs: 1 };
            gemm(dyg, MatRef::new(&w2, row_len, cog).t(), &mut dg, row_len, false);
            for k in 0..kv {
                (0..m).into_par_iter().with_min_len(256).for_each(|r| {
                    let i = nbr[(r0 + r) * kv + k];
                    if i < 0 {
                        return;
                    }
                    let s = i as usize * d.cin + g * cig;
                    assert!(s + cig <= len);
                    // SAFETY: for a fixed offset k the output -> input map is injective, so
                    // parallel rows write distinct input rows; bounds are checked above.
                    let out = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(s), cig) };
                    for (o, &v) in out.iter_mut().zip(&dg[r * row_len + k * cig..r * row_len + (k + 1) * cig]) {
                        *o += v;
                    }
                });
            }
        }
    }
}

// ------------------------------------------------------------------ per-offset (groups == 1)

/// Rows `pairs[p][col]` of `src` (`[*, c]`) gathered into `out` (`[P, c]`, resized).
fn gather_pairs<T: Float>(src: &[T], c: usize, pairs: &[[u32; 2]], col: usize, out: &mut Vec<T>) {
    out.resize(pairs.len() * c, T::ZERO);
    if c > 0 {
        out.par_chunks_mut(c).zip(pairs.par_iter()).with_min_len(ROWS_PER_TASK).for_each(|(row, p)| {
            let s = p[col] as usize * c;
            row.copy_from_slice(&src[s..s + c]);
        });
    }
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
/// scatter-add into the output rows. The centre offset of a submanifold map needs neither
/// gather nor scatter: it writes `X · W_c` straight into Y first. Buffers are reused across
/// offsets (large fresh allocations page-fault on every call).
pub fn per_offset_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, map: &KernelMap, d: ConvDims) -> Vec<T> {
    let (cin, cout, kv, n_out) = (d.cin, d.cout, d.kvol, map.n_out());
    let mut y = vec![T::ZERO; n_out * cout];
    let w2 = weight_kc_o(w, d, 0);
    let wk = |k: usize| MatRef::new(&w2[k * cin * cout..(k + 1) * cin * cout], cin, cout);
    let centre = map.identity_offset();
    if let (Some(k), true) = (centre, n_out > 0) {
        gemm(MatRef::new(x, n_out, cin), wk(k), &mut y, cout, false);
    }
    let (mut xk, mut yk) = (Vec::new(), Vec::new());
    for k in (0..kv).filter(|&k| Some(k) != centre) {
        let pairs = map.pairs(k);
        if pairs.is_empty() {
            continue;
        }
        gather_pairs(x, cin, pairs, 0, &mut xk);
        yk.resize(pairs.len() * cout, T::ZERO);
        gemm(MatRef::new(&xk, pairs.len(), cin), wk(k), &mut yk, cout, false);
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
    let wk = |k: usize| MatRef::new(&w2[k * cin * cout..(k + 1) * cin * cout], cin, cout);
    let mut dx = if want_dx { vec![T::ZERO; map.n_in() * cin] } else { Vec::new() };
    let mut dw2 = if want_dw { vec![T::ZERO; kv * cin * cout] } else { Vec::new() };
    let centre = map.identity_offset();
    if let (Some(k), true) = (centre, map.n_out() > 0) {
        let n = map.n_out();
        if want_dw {
            let dst = &mut dw2[k * cin * cout..(k + 1) * cin * cout];
            gemm(MatRef::new(x, n, cin).t(), MatRef::new(dy, n, cout), dst, cout, false);
        }
        if want_dx {
            gemm(MatRef::new(dy, n, cout), wk(k).t(), &mut dx, cin, false);
        }
    }
    let (mut xk, mut dyk, mut dxk) = (Vec::new(), Vec::new(), Vec::new());
    for k in (0..kv).filter(|&k| Some(k) != centre) {
        let pairs = map.pairs(k);
        if pairs.is_empty() {
            continue;
        }
        let p = pairs.len();
        gather_pairs(dy, cout, pairs, 1, &mut dyk);
        if want_dw {
            gather_pairs(x, cin, pairs, 0, &mut xk);
            gemm(
                MatRef::new(&xk, p, cin).t(),
                MatRef::new(&dyk, p, cout),
                &mut dw2[k * cin * cout..(k + 1) * cin * cout],
                cout,
                false,
            );
        }
        if want_dx {
            dxk.resize(p * cin, T::ZERO);
            gemm(MatRef::new(&dyk, p, cout), wk(k).t(), &mut dxk, cin, false);
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
