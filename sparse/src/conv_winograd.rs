//! Tile-sparse Winograd F(2x2, 3x3) for submanifold 3x3 convolution (f32, stride 1, padding 1,
//! dilation 1, one group).
//!
//! The output sites are covered by the 2x2 tiles that hold at least one active site; each tile
//! reads its 4x4 input window (inactive sites are zeros, which is SparK's semantics), so a
//! sparse conv costs the dense Winograd's 2.25x fewer multiply-adds on the active tiles only.
//! SparK's masks are unions of aligned square patches of at least 2x2 sites down to the 1/16
//! scale, so there almost every tile is fully active. Outputs of a tile that are inactive are
//! computed and dropped; the kept outputs depend only on their own 3x3 windows, as in the dense
//! algorithm.
//!
//! Layout per block of tiles: `V[ξ][tile][ci]` (each transform row is a contiguous channel
//! vector), GEMMs `M_ξ [Cout, tiles] = U_ξ [Cout, Cin] · V_ξ^T` with the channels as GEMM rows,
//! then the output transform over tiles and a scatter into the `[rows, Cout]` features.

use crate::ActiveSet;
use rayon::prelude::*;
use spark_engine::cpu::conv_implicit::flip_transpose_weight;
use spark_engine::cpu::conv_winograd::{output_rows, transform_weight, weight_grad_from_components};
use spark_engine::cpu::gemm::{gemm, MatRef};
use spark_engine::cpu::partials::sum_of_partials;
use spark_engine::cpu::scratch::with_scratch;
use spark_engine::cpu::SyncPtr;

/// The active 2x2 tiles of one active set: per tile the 16 input rows of its 4x4 window and the
/// 4 output rows of its sites (-1 where inactive or outside the map). Every site of the set is
/// the output of exactly one tile, so the output rows are distinct and below `rows`.
#[derive(Debug)]
pub struct WinogradTiles {
    n: usize,
    /// Sites of the set (rows of its feature matrix).
    rows: usize,
    window: Vec<i32>,
    outputs: Vec<i32>,
}

/// Fewest input and output channels for which the transforms pay off.
const MIN_CHANNELS: usize = 16;

impl WinogradTiles {
    /// Tiles of a 3x3 / stride 1 / padding 1 submanifold conv on `set` (input = output sites).
    pub fn build(set: &ActiveSet) -> WinogradTiles {
        let (h, w) = (set.h(), set.w());
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let grid = set.grid();
        let mut tile_of = vec![-1i32; set.batch() * th * tw];
        let mut outputs: Vec<i32> = Vec::new();
        for (row, &[b, y, x]) in set.coords().iter().enumerate() {
            let key = (b * th + y / 2) * tw + x / 2;
            if tile_of[key] < 0 {
                tile_of[key] = (outputs.len() / 4) as i32;
                outputs.extend([-1; 4]);
            }
            outputs[tile_of[key] as usize * 4 + (y % 2) * 2 + x % 2] = row as i32;
        }
        let n = outputs.len() / 4;
        let mut window = vec![-1i32; n * 16];
        for (key, &t) in tile_of.iter().enumerate() {
            if t < 0 {
                continue;
            }
            let (b, ty, tx) = (key / (th * tw), (key / tw) % th, key % tw);
            for wy in 0..4 {
                let iy = (2 * ty + wy) as isize - 1;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for wx in 0..4 {
                    let ix = (2 * tx + wx) as isize - 1;
                    if ix >= 0 && ix < w as isize {
                        window[t as usize * 16 + wy * 4 + wx] = grid[(b * h + iy as usize) * w + ix as usize];
                    }
                }
            }
        }
        WinogradTiles { n, rows: set.coords().len(), window, outputs }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Whether a conv with these channel counts takes this kernel (it is also switched off with the
/// engine's dense Winograd, `spark_engine::cpu::conv_winograd::set_enabled(false)`).
pub fn pays_off(cin: usize, cout: usize) -> bool {
    cin >= MIN_CHANNELS && cout >= MIN_CHANNELS && spark_engine::cpu::conv_winograd::enabled()
}

/// Forward: `y [n_rows, cout]` from `x [n_rows, cin]` and a `[cout, cin, 3, 3]` weight.
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, tiles: &WinogradTiles, cin: usize, cout: usize) -> Vec<f32> {
    let u = transform_weight(w, cout, cin);
    run(x, &u, bias, tiles, cin, cout, x.len() / cin.max(1))
}

/// Input gradient: the same tile conv of `dy` with the flipped, transposed kernel
/// (`w'[ci][co][ky][kx] = w[co][ci][2-ky][2-kx]`), since input and output sites coincide.
pub fn grad_input(dy: &[f32], w: &[f32], tiles: &WinogradTiles, cin: usize, cout: usize) -> Vec<f32> {
    let wf = flip_transpose_weight(w, 1, cout, cin, [3, 3]);
    let u = transform_weight(&wf, cin, cout);
    run(dy, &u, None, tiles, cout, cin, dy.len() / cout.max(1))
}

/// Non-zeros of the rows of `B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]]`.
const BT: [[(usize, f32); 2]; 4] =
    [[(0, 1.0), (2, -1.0)], [(1, 1.0), (2, 1.0)], [(1, -1.0), (2, 1.0)], [(1, 1.0), (3, -1.0)]];

fn run(
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    tiles: &WinogradTiles,
    cin: usize,
    cout: usize,
    rows: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * cout];
    if tiles.n == 0 || cin == 0 || cout == 0 {
        if let Some(b) = bias {
            y.chunks_mut(cout.max(1)).for_each(|r| r.copy_from_slice(&b[..r.len()]));
        }
        return y;
    }
    // The output rows the tiles name must lie in y (the unsafe writes below rely on it).
    assert!(tiles.rows <= rows, "winograd: tiles of {} sites for features of {rows} rows", tiles.rows);
    let per_block = tiles_per_block(tiles.n, cin, cout);
    // Every output row belongs to exactly one tile and tiles to one block, so parallel blocks
    // write disjoint rows.
    let yptr = SyncPtr(y.as_mut_ptr());
    (0..tiles.n.div_ceil(per_block)).into_par_iter().for_each(|blk| {
        let t0 = blk * per_block;
        let nt = per_block.min(tiles.n - t0);
        with_scratch(16 * nt * (cin + cout), |buf: &mut [f32]| {
            let (v, m) = buf.split_at_mut(16 * nt * cin);
            transform_input(x, &tiles.window[t0 * 16..(t0 + nt) * 16], cin, v);
            for xi in 0..16 {
                gemm(
                    MatRef { data: &u[xi * cin..], rows: cout, cols: cin, rs: 16 * cin, cs: 1 },
                    MatRef { data: &v[xi * nt * cin..(xi + 1) * nt * cin], rows: cin, cols: nt, rs: 1, cs: cin },
                    &mut m[xi * cout * nt..(xi + 1) * cout * nt],
                    nt,
                    false,
                );
            }
            // SAFETY: `yptr` is `y`, `[rows, cout]` and borrowed for the whole parallel loop; the
            // tiles name output rows below tiles.rows <= rows (asserted above), each in one tile
            // only, so the blocks' disjoint tile ranges write disjoint rows.
            unsafe { output_transform(m, &tiles.outputs[t0 * 4..(t0 + nt) * 4], bias, cout, nt, yptr) };
        });
    });
    y
}

/// Tiles per block: about 256 KiB of V + M, a multiple of the GEMM's 48-wide panels, and enough
/// blocks for every thread.
fn tiles_per_block(n: usize, cin: usize, cout: usize) -> usize {
    let target = ((1usize << 16) / (cin + cout)).clamp(48, 512) / 48 * 48;
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(n.div_ceil(target).div_ceil(threads) * threads).max(1)
}

/// `V[ξ][t][c] = (B^T d B)[ξ]` for the tiles whose 4x4 windows (input rows, -1 = zero) are
/// `windows`: each component is a signed sum of four window rows.
fn transform_input(x: &[f32], windows: &[i32], cin: usize, v: &mut [f32]) {
    let nt = windows.len() / 16;
    let zeros = vec![0.0f32; cin];
    for (t, win) in windows.chunks_exact(16).enumerate() {
        let d = |k: usize| {
            if win[k] >= 0 {
                &x[win[k] as usize * cin..(win[k] as usize + 1) * cin]
            } else {
                &zeros[..]
            }
        };
        for (i, bi) in BT.iter().enumerate() {
            for (j, bj) in BT.iter().enumerate() {
                let ((a0, s0), (a1, s1)) = (bi[0], bi[1]);
                let ((b0, r0), (b1, r1)) = (bj[0], bj[1]);
                let (p, q, r, s) = (d(a0 * 4 + b0), d(a0 * 4 + b1), d(a1 * 4 + b0), d(a1 * 4 + b1));
                let (cp, cq, cr, cs) = (s0 * r0, s0 * r1, s1 * r0, s1 * r1);
                let dst = &mut v[((i * 4 + j) * nt + t) * cin..((i * 4 + j) * nt + t + 1) * cin];
                for c in 0..cin {
                    dst[c] = cp * p[c] + cq * q[c] + cr * r[c] + cs * s[c];
                }
            }
        }
    }
}

/// Whether the weight gradient takes this kernel: tiles x cin x cout >= 2^24, twice the dense
/// kernel's threshold (`spark_engine::cpu::conv_winograd::weight_grad_pays_off`), because the
/// sparse kernel has not shown a win below it. On
/// ResNet-50's 3x3 layers at mask 0.6 (below or just above it at batch 8-16) the two kernels
/// measured within noise of each other (`spark bench sparse --ratios 0.6 --batch 16`, 64->64
/// @56: 20.0-20.7 vs 20.8-21.3 ms fwd+bwd).
pub fn weight_grad_pays_off(tiles: &WinogradTiles, cin: usize, cout: usize) -> bool {
    tiles.n * cin * cout >= 1 << 24
}

/// Weight gradient `[cout, cin, 3, 3]`: per component `dU_ξ [cout, cin] = Σ_t M'_ξ[t]^T V_ξ[t]`
/// with `M' = A dY A^T` over each tile's four outputs (inactive ones contribute zero, as the
/// forward drops them), then `dW = G^T dU G`. Blocks of tiles are split into one range per
/// thread, each accumulating its own `dU`.
pub fn grad_weight(x: &[f32], dy: &[f32], tiles: &WinogradTiles, cin: usize, cout: usize) -> Vec<f32> {
    let mut gw = vec![0.0f32; 9 * cout * cin];
    if tiles.n == 0 || cin == 0 || cout == 0 {
        return gw;
    }
    let per_block = tiles_per_block(tiles.n, cin, cout);
    let blocks = tiles.n.div_ceil(per_block);
    let per_range = blocks.div_ceil(rayon::current_num_threads().clamp(1, blocks));
    let du = sum_of_partials(blocks.div_ceil(per_range), 16 * cout * cin, |ri, du| {
        for blk in ri * per_range..blocks.min((ri + 1) * per_range) {
            let t0 = blk * per_block;
            let nt = per_block.min(tiles.n - t0);
            with_scratch(16 * nt * (cin + cout), |buf: &mut [f32]| {
                let (v, m) = buf.split_at_mut(16 * nt * cin);
                transform_input(x, &tiles.window[t0 * 16..(t0 + nt) * 16], cin, v);
                transform_output_grad(dy, &tiles.outputs[t0 * 4..(t0 + nt) * 4], cout, m);
                for xi in 0..16 {
                    gemm(
                        MatRef { data: &m[xi * nt * cout..], rows: cout, cols: nt, rs: 1, cs: cout },
                        MatRef::new(&v[xi * nt * cin..(xi + 1) * nt * cin], nt, cin),
                        &mut du[xi * cout * cin..(xi + 1) * cout * cin],
                        cin,
                        true,
                    );
                }
            });
        }
    });
    weight_grad_from_components(&du, cout, cin, &mut gw);
    gw
}

/// `M'[ξ][t][co] = (A dY A^T)[ξ]` with `A = [[1,0], [1,1], [1,-1], [0,-1]]` (the adjoint of the
/// output transform) over the tiles whose output rows (-1 = inactive: zero) are `outputs`.
fn transform_output_grad(dy: &[f32], outputs: &[i32], cout: usize, m: &mut [f32]) {
    const A: [[f32; 2]; 4] = [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]];
    let nt = outputs.len() / 4;
    let zeros = vec![0.0f32; cout];
    for (t, out) in outputs.chunks_exact(4).enumerate() {
        let y = |k: usize| {
            if out[k] >= 0 {
                &dy[out[k] as usize * cout..(out[k] as usize + 1) * cout]
            } else {
                &zeros[..]
            }
        };
        let (y00, y01, y10, y11) = (y(0), y(1), y(2), y(3));
        for (r, ar) in A.iter().enumerate() {
            for (c, ac) in A.iter().enumerate() {
                let (c00, c01, c10, c11) = (ar[0] * ac[0], ar[0] * ac[1], ar[1] * ac[0], ar[1] * ac[1]);
                let dst = &mut m[((r * 4 + c) * nt + t) * cout..((r * 4 + c) * nt + t + 1) * cout];
                for co in 0..cout {
                    dst[co] = c00 * y00[co] + c01 * y01[co] + c10 * y10[co] + c11 * y11[co];
                }
            }
        }
    }
}

/// `Y = A^T M A (+ bias)`, `A^T = [[1,1,1,0], [0,1,-1,-1]]`, vectorised over the block's tiles,
/// each kept output scattered to its feature row.
///
/// # Safety
/// `y` must point to a writable `[rows, cout]` buffer that outlives the call with
/// `0 <= outputs[i] < rows` for every kept output (negative entries are skipped), and while the
/// call runs no other thread may read or write the feature rows named in `outputs` (blocks of
/// tiles whose output rows are disjoint may run in parallel).
unsafe fn output_transform(m: &[f32], outputs: &[i32], bias: Option<&[f32]>, cout: usize, nt: usize, y: SyncPtr<f32>) {
    let mut s = vec![0.0f32; 8 * nt];
    let mut o = vec![0.0f32; 4 * nt];
    for co in 0..cout {
        let at = |xi: usize| &m[(xi * cout + co) * nt..(xi * cout + co + 1) * nt];
        output_rows(at, nt, &mut s);
        for p in 0..2 {
            let sp = &s[p * 4 * nt..(p + 1) * 4 * nt];
            let (o0, o1) = o[p * 2 * nt..(p + 1) * 2 * nt].split_at_mut(nt);
            for t in 0..nt {
                let (a, b, c, d) = (sp[t], sp[nt + t], sp[2 * nt + t], sp[3 * nt + t]);
                o0[t] = a + b + c;
                o1[t] = b - c - d;
            }
        }
        let b0 = bias.map_or(0.0, |b| b[co]);
        for t in 0..nt {
            for k in 0..4 {
                let row = outputs[t * 4 + k];
                if row >= 0 {
                    // SAFETY: row < rows, so the element lies in y's buffer, and the caller
                    // gives this call the rows in `outputs` alone.
                    unsafe { *y.get().add(row as usize * cout + co) = o[k * nt + t] + b0 };
                }
            }
        }
    }
}
