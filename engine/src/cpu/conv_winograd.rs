//! Winograd F(2x2, 3x3) convolution (f32, 3x3, stride 1, groups 1): each 2x2 output tile is
//! `A^T [ (G g G^T) ⊙ (B^T d B) ] A` over the tile's 4x4 input window `d`, so a 3x3 conv becomes
//! 16 GEMMs `U_ξ [Cout, Cin] · V_ξ [Cin, tiles]` with 2.25x fewer multiply-adds than im2col.
//!
//! Tiles are processed in blocks of whole tile rows: a block's transformed input `V` and GEMM
//! results `M` stay in cache between the input transform, the GEMMs and the output transform.
//! Both transforms run along rows of tiles, so their inner loops are contiguous and vectorise:
//! each input row is split into even and odd columns once, after which the four window columns
//! of tile `t` are `even[t], odd[t], even[t+1], odd[t+1]`.

use super::conv::ConvGeom;
use super::gemm::{gemm, MatRef};
use super::partials::sum_of_partials;
use super::scratch::with_scratch;
use super::SyncPtr;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Fewest input and output channels for which the transforms pay off.
const MIN_CHANNELS: usize = 16;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Switches Winograd on or off for every later conv (on by default). Off, 3x3 convs run on the
/// implicit GEMM like all others: for benchmarks that compare against the plain im2col path, and
/// for studying numerics (Winograd's rounding differs slightly).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether this kernel computes `g`: f32 callers with a 3x3 kernel, stride 1, dilation 1, one
/// group and padding up to 2.
pub fn fits(g: &ConvGeom) -> bool {
    g.groups == 1
        && (g.kh, g.kw) == (3, 3)
        && g.stride == [1, 1]
        && g.dil == [1, 1]
        && g.pad[0] <= 2
        && g.pad[1] <= 2
        && g.oh > 0
        && g.ow > 0
}

/// Whether convolutions use it (measured against the implicit GEMM, fwd+bwd, 2 threads; see
/// docs/benchmarks.md): it wins from 16 channels on maps of 8x8 and more whose 2x2 tiles cover
/// the output with little waste (12x12 384->192: 46 vs 57 ms; 56x56 64->64: 30 vs 37 ms), ties
/// on 6x6 and loses on odd small maps (7x7 256->256: 12.7 vs 10.8 ms, a third of the tiles'
/// outputs fall outside the map).
pub fn pays_off(g: &ConvGeom) -> bool {
    let tiled = g.oh.div_ceil(2) * g.ow.div_ceil(2) * 4;
    enabled()
        && fits(g)
        && g.cin >= MIN_CHANNELS
        && g.cout >= MIN_CHANNELS
        && g.oh * g.ow >= 64
        && tiled * 100 <= g.oh * g.ow * 115
}

/// `U[co][ξ][ci] = (G g G^T)[ξ]` for a `[cout, cin, 3, 3]` weight, with
/// `G = [[1,0,0], [½,½,½], [½,-½,½], [0,0,1]]`, in parallel
/// over output channels (large decoder weights would otherwise take as long as the conv).
pub fn transform_weight(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * cout * cin];
    let lift = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    u.par_chunks_mut(16 * cin).enumerate().for_each(|(co, uc)| {
        for ci in 0..cin {
            let k = &w[(co * cin + ci) * 9..][..9];
            // Columns first (G g), then rows ((G g) G^T).
            let cols: [[f32; 4]; 3] = std::array::from_fn(|x| lift(k[x], k[3 + x], k[6 + x]));
            for r in 0..4 {
                let row = lift(cols[0][r], cols[1][r], cols[2][r]);
                for (c, &v) in row.iter().enumerate() {
                    uc[(r * 4 + c) * cin + ci] = v;
                }
            }
        }
    });
    u
}

/// First half of the output transform: `A^T = [[1,1,1,0], [0,1,-1,-1]]` applied down the rows
/// of the 4x4 component grid, element-wise over `n` tiles. `m(ξ)` is component ξ = r*4 + c;
/// writes `s[c*n..]` = m0c + m1c + m2c and `s[(4 + c)*n..]` = m1c - m2c - m3c.
pub fn output_rows<'a>(m: impl Fn(usize) -> &'a [f32], n: usize, s: &mut [f32]) {
    let (s0, s1) = s[..8 * n].split_at_mut(4 * n);
    for c in 0..4 {
        let (m0, m1, m2, m3) = (m(c), m(4 + c), m(8 + c), m(12 + c));
        let (s0, s1) = (&mut s0[c * n..(c + 1) * n], &mut s1[c * n..(c + 1) * n]);
        for t in 0..n {
            s0[t] = m0[t] + m1[t] + m2[t];
            s1[t] = m1[t] - m2[t] - m3[t];
        }
    }
}

/// Forward convolution into `out` (`g.out_len()`), bias added. Panics unless `fits(g)` and the
/// slices have the geometry's lengths (callers check shapes first).
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom, out: &mut [f32]) {
    assert!(fits(g), "winograd: unsupported geometry {g:?}");
    assert_eq!((x.len(), w.len()), (g.in_len(), g.weight_len()), "winograd: input / weight length");
    let (cin, cout) = (g.cin, g.cout);
    let u = transform_weight(w, cout, cin);
    let tw = g.ow.div_ceil(2);
    let blocking = Blocking::forward(g);
    assert_eq!(out.len(), g.out_len(), "winograd: output length");
    assert!(bias.is_none_or(|b| b.len() == cout), "winograd: bias length");
    let optr = SyncPtr(out.as_mut_ptr());
    (0..blocking.blocks).into_par_iter().for_each(|b| {
        with_block(x, g, &blocking, b, |r0, rows, v, m| {
            let tb = rows * tw;
            for xi in 0..16 {
                gemm(
                    MatRef { data: &u[xi * cin..], rows: cout, cols: cin, rs: 16 * cin, cs: 1 },
                    MatRef::new(&v[xi * cin * tb..(xi + 1) * cin * tb], cin, tb),
                    &mut m[xi * cout * tb..(xi + 1) * cout * tb],
                    tb,
                    false,
                );
            }
            // SAFETY: `optr` is `out`, `g.out_len()` long (asserted above) and borrowed for the
            // whole parallel loop; `with_block` hands block b the tile rows `r0..r0 + rows`,
            // disjoint from every other block's and inside the geometry.
            unsafe { transform_output(m, g, bias, r0, rows, tb, optr) };
        });
    });
}

/// Whether the weight gradient uses it: where the forward does and the convolution has enough
/// work (tiles x cin x cout >= 2^23) to amortise the two transforms and the per-thread `dU`.
/// Measured against the implicit GEMM (`engine/examples/winograd_dw_timing.rs`, batch 16 unless
/// noted): 128->128 @12 (just above the threshold): 2.08x, 64->64 @24: 1.29x, 192->192 @24: 1.63x,
/// 96->96 @48: 1.64x, 48->48 @96: 1.35-1.57x, 384->384 @12: 1.70x, batch 8 768->768 @14: 1.44-1.54x;
/// it loses where the forward is not used either (6x6 and 7x7 maps: 0.73-0.85x).
pub fn weight_grad_pays_off(g: &ConvGeom) -> bool {
    let tiles = g.n * g.oh.div_ceil(2) * g.ow.div_ceil(2);
    pays_off(g) && tiles * g.cin * g.cout >= 1 << 23
}

/// How the tile rows (`n * ceil(oh/2)` rows of `ceil(ow/2)` tiles) are cut into blocks.
struct Blocking {
    tile_rows: usize,
    rows_per_block: usize,
    blocks: usize,
}

impl Blocking {
    /// Blocks of about `target` tiles. A problem of at most two targets is one block (its GEMMs
    /// split across threads themselves); otherwise the block count is a multiple of the thread
    /// count and the blocks are even, so no thread waits on a last, larger share.
    fn new(g: &ConvGeom, target: usize) -> Blocking {
        let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        let tile_rows = g.n * th;
        if tile_rows * tw <= 2 * target {
            return Blocking { tile_rows, rows_per_block: tile_rows.max(1), blocks: 1 };
        }
        let threads = rayon::current_num_threads().max(1);
        let mut blocks = tile_rows.div_ceil((target / tw).max(1));
        if tile_rows >= threads {
            blocks = blocks.div_ceil(threads) * threads;
        }
        let rows_per_block = tile_rows.div_ceil(blocks);
        Blocking { tile_rows, rows_per_block, blocks: tile_rows.div_ceil(rows_per_block) }
    }

    /// The forward's blocks: about 256 KiB of V + M each, so a block stays in cache from the
    /// input transform through the GEMMs to the output transform (at least 192 tiles, so the
    /// GEMMs' 48-wide column panels fill).
    fn forward(g: &ConvGeom) -> Blocking {
        Blocking::new(g, ((1usize << 16) / (g.cin + g.cout)).clamp(192, 512))
    }

    /// The weight gradient's blocks: every block adds a whole `dU [16, cout, cin]` product, so
    /// with many channels (a 768-wide decoder level) blocks grow until V + M is about as large
    /// as dU, capped at 64 MiB of scratch per thread.
    fn weight_grad(g: &ConvGeom) -> Blocking {
        let cache = ((1usize << 16) / (g.cin + g.cout)).clamp(192, 512);
        let balance = g.cin * g.cout / (g.cin + g.cout);
        let cap = (1usize << 24) / (16 * (g.cin + g.cout)).max(1);
        Blocking::new(g, cache.max(balance.min(cap)))
    }

    /// Tile rows `r0..r0 + rows` of block `b`.
    fn rows(&self, b: usize) -> (usize, usize) {
        let r0 = b * self.rows_per_block;
        (r0, self.rows_per_block.min(self.tile_rows - r0))
    }
}

/// Runs `f(r0, rows, V, M)` for block `b` (tile rows `r0..r0+rows`) on this thread's scratch:
/// `V` holds the block's transformed input `[16][cin][tiles]`, `M` is room for
/// `[16][cout][tiles]`.
fn with_block<R>(
    x: &[f32],
    g: &ConvGeom,
    blocking: &Blocking,
    b: usize,
    f: impl FnOnce(usize, usize, &[f32], &mut [f32]) -> R,
) -> R {
    let (r0, rows) = blocking.rows(b);
    let tw = g.ow.div_ceil(2);
    let tb = rows * tw;
    with_scratch(16 * (g.cin + g.cout) * tb + 2 * (tw + 1), |buf: &mut [f32]| {
        let (v, rest) = buf.split_at_mut(16 * g.cin * tb);
        let (m, line) = rest.split_at_mut(16 * g.cout * tb);
        transform_input(x, g, r0, rows, tb, v, line);
        f(r0, rows, v, m)
    })
}

/// Weight gradient `[cout, cin, 3, 3]` of `forward`: per component ξ,
/// `dU_ξ [cout, cin] = Σ_tiles (A dY A^T)_ξ · V_ξ^T` (16 GEMMs whose depth is the tiles, 2.25x
/// fewer multiply-adds than im2col), then `dW = G^T dU G`. Tile blocks are split into one
/// contiguous range per thread, each accumulating its own `dU`.
pub fn backward_weight(x: &[f32], go: &[f32], g: &ConvGeom, gw: &mut [f32]) {
    assert!(fits(g), "winograd: unsupported geometry {g:?}");
    assert_eq!((x.len(), go.len(), gw.len()), (g.in_len(), g.out_len(), g.weight_len()), "winograd: lengths");
    let (cin, cout) = (g.cin, g.cout);
    let tw = g.ow.div_ceil(2);
    let blocking = Blocking::weight_grad(g);
    let blocks = blocking.blocks;
    let ranges = rayon::current_num_threads().clamp(1, blocks);
    let per_range = blocks.div_ceil(ranges);
    let du = sum_of_partials(blocks.div_ceil(per_range), 16 * cout * cin, |ri, du| {
        for b in ri * per_range..blocks.min((ri + 1) * per_range) {
            with_block(x, g, &blocking, b, |r0, rows, v, m| {
                let tb = rows * tw;
                transform_output_grad(go, g, r0, rows, tb, m);
                for xi in 0..16 {
                    gemm(
                        MatRef::new(&m[xi * cout * tb..(xi + 1) * cout * tb], cout, tb),
                        MatRef::new(&v[xi * cin * tb..(xi + 1) * cin * tb], cin, tb).t(),
                        &mut du[xi * cout * cin..(xi + 1) * cout * cin],
                        cin,
                        true,
                    );
                }
            });
        }
    });
    weight_grad_from_components(&du, cout, cin, gw);
}

/// `dW [cout, cin, 3, 3] = G^T dU G` from the component gradients `dU [16][cout][cin]` (shared
/// with the sparse Winograd weight gradient).
pub fn weight_grad_from_components(du: &[f32], cout: usize, cin: usize, gw: &mut [f32]) {
    assert_eq!((du.len(), gw.len()), (16 * cout * cin, 9 * cout * cin), "winograd: dU / dW lengths");
    // `lower` is G^T applied to one 4-vector.
    let lower = |a: f32, b: f32, c: f32, d: f32| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
    let plane = cout * cin;
    gw.par_chunks_mut(cin * 9).enumerate().for_each(|(co, gwc)| {
        for ci in 0..cin {
            let at = |r: usize, c: usize| du[(r * 4 + c) * plane + co * cin + ci];
            // Rows first (G^T down each column c), then columns.
            let cols: [[f32; 3]; 4] = std::array::from_fn(|c| lower(at(0, c), at(1, c), at(2, c), at(3, c)));
            for a in 0..3 {
                let row = lower(cols[0][a], cols[1][a], cols[2][a], cols[3][a]);
                gwc[ci * 9 + a * 3..ci * 9 + a * 3 + 3].copy_from_slice(&row);
            }
        }
    });
}

/// `M'[ξ][co][tile] = (A dY A^T)[ξ]` for the tiles of tile rows `r0..r0+rows`, with
/// `A = [[1,0], [1,1], [1,-1], [0,-1]]`: the adjoint of `transform_output`. Outputs of a tile
/// that fall outside the map (odd sizes) count as zero.
fn transform_output_grad(go: &[f32], g: &ConvGeom, r0: usize, rows: usize, tb: usize, m: &mut [f32]) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let (oh, ow, cout) = (g.oh, g.ow, g.cout);
    // A applied along x to one output row: s[c][t] for c = 0..4.
    let mut s = vec![0.0f32; 2 * 4 * tw];
    for co in 0..cout {
        for r in 0..rows {
            let (n, ty) = ((r0 + r) / th, (r0 + r) % th);
            for dy in 0..2 {
                let sr = &mut s[dy * 4 * tw..(dy + 1) * 4 * tw];
                let oy = 2 * ty + dy;
                if oy >= oh {
                    sr.fill(0.0);
                    continue;
                }
                let row = &go[((n * cout + co) * oh + oy) * ow..][..ow];
                let (s0, rest) = sr.split_at_mut(tw);
                let (s1, rest) = rest.split_at_mut(tw);
                let (s2, s3) = rest.split_at_mut(tw);
                for t in 0..tw {
                    let y0 = row[2 * t];
                    let y1 = if 2 * t + 1 < ow { row[2 * t + 1] } else { 0.0 };
                    s0[t] = y0;
                    s1[t] = y0 + y1;
                    s2[t] = y0 - y1;
                    s3[t] = -y1;
                }
            }
            let (top, bottom) = s.split_at(4 * tw);
            for c in 0..4 {
                let (a, b) = (&top[c * tw..(c + 1) * tw], &bottom[c * tw..(c + 1) * tw]);
                let off = |k: usize| ((k * 4 + c) * cout + co) * tb + r * tw;
                // A applied down the two output rows: components (k, c) for k = 0..4.
                let o = off(0);
                m[o..o + tw].copy_from_slice(a);
                let o = off(1);
                m[o..o + tw].iter_mut().zip(a.iter().zip(b)).for_each(|(d, (x, y))| *d = x + y);
                let o = off(2);
                m[o..o + tw].iter_mut().zip(a.iter().zip(b)).for_each(|(d, (x, y))| *d = x - y);
                let o = off(3);
                m[o..o + tw].iter_mut().zip(b).for_each(|(d, y)| *d = -y);
            }
        }
    }
}

/// `V[ξ][ci][tile] = (B^T d B)[ξ]` for the tiles of tile rows `r0..r0+rows`, with
/// `B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]]`. `line` is scratch (>= 2*(tw+1)).
/// Tile rows overlap by two input rows, so each input row is transformed along x once per
/// image and channel and then combined down the windows.
fn transform_input(x: &[f32], g: &ConvGeom, r0: usize, rows: usize, tb: usize, v: &mut [f32], line: &mut [f32]) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let (h, cin) = (g.h, g.cin);
    let py = g.pad[0] as isize;
    let (even, odd) = line.split_at_mut(tw + 1);
    let cols = EvenOdd::new(g.w, g.pad[1], tw + 1);
    // Row-transformed input rows of one image's tile rows: e[row][c][t].
    let max_rows = 2 * rows.min(th) + 2;
    let mut e = vec![0.0f32; max_rows * 4 * tw];
    let mut r = 0;
    while r < rows {
        // Tile rows r..r_end of this block lie in image n, tile rows ty0..ty0 + (r_end - r).
        let (n, ty0) = ((r0 + r) / th, (r0 + r) % th);
        let r_end = rows.min(r + th - ty0);
        let iy0 = (2 * ty0) as isize - py;
        let nrows = 2 * (r_end - r) + 2;
        for ci in 0..cin {
            let plane = &x[(n * cin + ci) * h * g.w..(n * cin + ci + 1) * h * g.w];
            for k in 0..nrows {
                let iy = iy0 + k as isize;
                let er = &mut e[k * 4 * tw..(k + 1) * 4 * tw];
                if iy < 0 || iy >= h as isize {
                    er.fill(0.0);
                } else {
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    cols.split(src, even, odd);
                    transform_row(even, odd, er, tw);
                }
            }
            for (j, rr) in (r..r_end).enumerate() {
                let at = |k: usize, c: usize| &e[((2 * j + k) * 4 + c) * tw..((2 * j + k) * 4 + c + 1) * tw];
                for c in 0..4 {
                    let (d0, d1, d2, d3) = (at(0, c), at(1, c), at(2, c), at(3, c));
                    // Rows of B^T applied down the window: V[k][c] for k = 0..4.
                    let off = |k: usize| ((k * 4 + c) * cin + ci) * tb + rr * tw;
                    for (k, (p, q, sign)) in
                        [(d0, d2, -1.0), (d1, d2, 1.0), (d2, d1, -1.0), (d1, d3, -1.0)].into_iter().enumerate()
                    {
                        // V[k][c] = p + sign * q over the row's tiles.
                        for ((d, &a), &b) in v[off(k)..off(k) + tw].iter_mut().zip(p).zip(q) {
                            *d = a + sign * b;
                        }
                    }
                }
            }
        }
        r = r_end;
    }
}

/// Splits input rows into their even and odd window columns: `even[t] = src[2t - pad]`,
/// `odd[t] = src[2t - pad + 1]`, zero outside the row. The bounds of the interior (where both
/// come from the row) depend only on the geometry, so they are computed once per conv, not per
/// row: this runs for every input row of every channel.
struct EvenOdd {
    pad: isize,
    /// Tiles `lo..hi` read both columns from the row; the rest touch the padding.
    lo: usize,
    hi: usize,
}

impl EvenOdd {
    fn new(w: usize, pad: usize, len: usize) -> EvenOdd {
        let (w, pad) = (w as isize, pad as isize);
        // Interior: 0 <= 2t - pad and 2t - pad + 1 < w.
        let lo = ((pad + 1) / 2).min(len as isize) as usize;
        let hi = (((w + pad - 1) / 2).max(lo as isize) as usize).min(len);
        EvenOdd { pad, lo, hi }
    }

    #[inline(always)]
    fn split(&self, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let w = src.len() as isize;
        let at = |i: isize| if i >= 0 && i < w { src[i as usize] } else { 0.0 };
        for t in (0..self.lo).chain(self.hi..even.len()) {
            let i = 2 * t as isize - self.pad;
            even[t] = at(i);
            odd[t] = at(i + 1);
        }
        let n = self.hi - self.lo;
        let base = (2 * self.lo as isize - self.pad) as usize;
        let pairs = src[base..base + 2 * n].chunks_exact(2);
        for ((e, o), pair) in even[self.lo..self.hi].iter_mut().zip(&mut odd[self.lo..self.hi]).zip(pairs) {
            *e = pair[0];
            *o = pair[1];
        }
    }
}

/// One input row times B along x: `e[c][t]` for the window columns
/// `even[t], odd[t], even[t+1], odd[t+1]`.
#[inline(always)]
fn transform_row(even: &[f32], odd: &[f32], e: &mut [f32], tw: usize) {
    let (e0, rest) = e.split_at_mut(tw);
    let (e1, rest) = rest.split_at_mut(tw);
    let (e2, e3) = rest.split_at_mut(tw);
    let (x0, x2) = (&even[..tw], &even[1..tw + 1]);
    let (x1, x3) = (&odd[..tw], &odd[1..tw + 1]);
    for t in 0..tw {
        e0[t] = x0[t] - x2[t];
        e1[t] = x1[t] + x2[t];
        e2[t] = x2[t] - x1[t];
        e3[t] = x1[t] - x3[t];
    }
}

/// `out = A^T M A (+ bias)` with `A^T = [[1,1,1,0], [0,1,-1,-1]]`, for tile rows `r0..r0+rows`.
///
/// # Safety
/// `out` must point to a writable buffer of at least `g.out_len()` f32s that outlives the call,
/// `r0 + rows <= g.n * ceil(g.oh / 2)`, and while the call runs no other thread may read or
/// write the output rows of tile rows `r0..r0 + rows` (calls on disjoint tile-row ranges may run
/// in parallel).
unsafe fn transform_output(
    m: &[f32],
    g: &ConvGeom,
    bias: Option<&[f32]>,
    r0: usize,
    rows: usize,
    tb: usize,
    out: SyncPtr<f32>,
) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let (oh, ow, cout) = (g.oh, g.ow, g.cout);
    let mut s = vec![0.0f32; 8 * tw];
    for co in 0..cout {
        let b0 = bias.map_or(0.0, |b| b[co]);
        for r in 0..rows {
            let (n, ty) = ((r0 + r) / th, (r0 + r) % th);
            let at = |xi: usize| &m[(xi * cout + co) * tb + r * tw..(xi * cout + co) * tb + (r + 1) * tw];
            output_rows(at, tw, &mut s);
            for dy in 0..2 {
                let oy = 2 * ty + dy;
                if oy >= oh {
                    break;
                }
                let sr = &s[dy * 4 * tw..(dy + 1) * 4 * tw];
                let base = ((n * cout + co) * oh + oy) * ow;
                // SAFETY: output row (n, co, oy) belongs to tile row (n, ty), which the caller
                // gives this call alone; base + ow <= out_len since n < g.n, co < cout, oy < oh.
                let orow = unsafe { std::slice::from_raw_parts_mut(out.get().add(base), ow) };
                let (s0, rest) = sr.split_at(tw);
                let (s1, rest) = rest.split_at(tw);
                let (s2, s3) = rest.split_at(tw);
                // Whole tiles in pairs of output columns; an odd width leaves a last half tile.
                let full = ow / 2;
                for (t, pair) in orow[..2 * full].chunks_exact_mut(2).enumerate() {
                    pair[0] = s0[t] + s1[t] + s2[t] + b0;
                    pair[1] = s1[t] - s2[t] - s3[t] + b0;
                }
                if ow % 2 == 1 {
                    orow[ow - 1] = s0[full] + s1[full] + s2[full] + b0;
                }
            }
        }
    }
}
