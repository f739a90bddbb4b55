//! `KernelMap` (rulebook): which input row feeds which output row through each kernel offset.
//!
//! Stored two ways, both conflict-free for parallel kernels:
//! - `neighbours`: `[n_out, K]`, the input row under offset k of output row o (or -1). The forward
//!   implicit GEMM gathers along it; each output row is written by one thread.
//! - `reverse`: `[n_in, K]`, the output row that reads input row i through offset k (or -1). For a
//!   fixed k the map output -> input is injective, so this is well defined; the input-gradient
//!   GEMM gathers along it, again one writer per row.
//!
//! `reverse` and the per-offset (input row, output row) pair lists of the classic rulebook are
//! derived lazily from `neighbours`.

use crate::conv_winograd::WinogradTiles;
use crate::ActiveSet;
use rayon::prelude::*;
use spark_engine::{Conv2dParams, Error, Result};
use std::sync::OnceLock;

/// Kernel geometry of a conv or pool window (index 0 = height, 1 = width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelGeom {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl KernelGeom {
    /// The window of a convolution with kernel `[kh, kw]`.
    pub fn conv(kernel: [usize; 2], p: &Conv2dParams) -> Self {
        KernelGeom { kernel, stride: p.stride, padding: p.padding, dilation: p.dilation }
    }
    /// A pooling window (square, dilation 1).
    pub fn pool(kernel: usize, stride: usize, padding: usize) -> Self {
        KernelGeom { kernel: [kernel; 2], stride: [stride; 2], padding: [padding; 2], dilation: [1; 2] }
    }
    /// Number of kernel offsets.
    pub fn volume(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Output size for an input `h x w` (PyTorch formula, floor mode), or an error when the
    /// window does not fit.
    pub fn out_size(&self, op: &'static str, h: usize, w: usize) -> Result<(usize, usize)> {
        let one = |a: usize, n: usize| -> Option<usize> {
            if self.kernel[a] == 0 || self.stride[a] == 0 || self.dilation[a] == 0 {
                return None;
            }
            let span = self.dilation[a] * (self.kernel[a] - 1) + 1;
            (n + 2 * self.padding[a]).checked_sub(span).map(|v| v / self.stride[a] + 1)
        };
        match (one(0, h), one(1, w)) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(Error::Shape {
                op,
                msg: format!("window {self:?} does not fit an input of {h}x{w} (or has a zero extent/stride)"),
            }),
        }
    }
    /// Input coordinate read by output coordinate `o` through kernel index `k` along axis `a`.
    #[inline]
    pub fn input_coord(&self, a: usize, o: usize, k: usize) -> isize {
        (o * self.stride[a] + k * self.dilation[a]) as isize - self.padding[a] as isize
    }
}

/// The rulebook between an input and an output active set for one geometry.
pub struct KernelMap {
    geom: KernelGeom,
    n_in: usize,
    n_out: usize,
    neighbours: Vec<i32>,
    /// Centred odd kernel on one set: the reverse table is the mirrored neighbour table.
    mirrored: bool,
    reverse: OnceLock<Vec<i32>>,
    identity: bool,
    identity_offset: Option<usize>,
    pairs: OnceLock<Vec<Vec<[u32; 2]>>>,
    /// 3x3 submanifold maps: the active 2x2 tiles for the Winograd kernel.
    winograd: Option<WinogradTiles>,
}

impl std::fmt::Debug for KernelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelMap[{:?}, {} -> {} rows]", self.geom, self.n_in, self.n_out)
    }
}

impl KernelMap {
    /// Builds the map. `output` must have the batch size and the spatial size that `geom`
    /// produces from `input`.
    pub fn build(input: &ActiveSet, output: &ActiveSet, geom: KernelGeom) -> Result<KernelMap> {
        let (oh, ow) = geom.out_size("KernelMap::build", input.h(), input.w())?;
        if output.batch() != input.batch() || output.h() != oh || output.w() != ow {
            return Err(Error::Shape {
                op: "KernelMap::build",
                msg: format!(
                    "output set is {}x{}x{}, but {geom:?} maps the input {}x{}x{} to {}x{oh}x{ow}",
                    output.batch(),
                    output.h(),
                    output.w(),
                    input.batch(),
                    input.h(),
                    input.w(),
                    input.batch()
                ),
            });
        }
        let k = geom.volume();
        let [kh, kw] = geom.kernel;
        let (ih, iw) = (input.h(), input.w());
        let in_grid = input.grid();
        let mut neighbours = vec![-1i32; output.len() * k];
        neighbours.par_chunks_mut(k.max(1)).zip(output.coords().par_iter()).with_min_len(256).for_each(
            |(row, &[b, oy, ox])| {
                for ky in 0..kh {
                    let iy = geom.input_coord(0, oy, ky);
                    if iy < 0 || iy >= ih as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = geom.input_coord(1, ox, kx);
                        if ix < 0 || ix >= iw as isize {
                            continue;
                        }
                        row[ky * kw + kx] = in_grid[(b * ih + iy as usize) * iw + ix as usize];
                    }
                }
            },
        );
        // A centred odd kernel on one set is symmetric: output o reads input i through offset k
        // exactly when i reads o through the mirrored offset K-1-k, so the reverse table is the
        // neighbour table with its columns reversed (half the build cost).
        let centred = (0..2).all(|a| {
            geom.stride[a] == 1
                && geom.kernel[a] % 2 == 1
                && geom.padding[a] == geom.dilation[a] * (geom.kernel[a] - 1) / 2
        });
        let mirrored = centred && input.id() == output.id();
        let identity =
            k == 1 && input.len() == output.len() && neighbours.iter().enumerate().all(|(o, &i)| i == o as i32);
        // The centre offset of a submanifold map reads each site itself: kernels use it without
        // a gather or scatter.
        let centre = (kh / 2) * kw + kw / 2;
        let identity_offset = (k > 0
            && input.len() == output.len()
            && (0..output.len()).into_par_iter().all(|o| neighbours[o * k + centre] == o as i32))
        .then_some(centre);
        let winograd =
            (mirrored && geom.kernel == [3, 3] && geom.dilation == [1, 1]).then(|| WinogradTiles::build(output));
        Ok(KernelMap {
            geom,
            winograd,
            identity_offset,
            n_in: input.len(),
            n_out: output.len(),
            neighbours,
            mirrored,
            reverse: OnceLock::new(),
            identity,
            pairs: OnceLock::new(),
        })
    }

    pub fn geom(&self) -> KernelGeom {
        self.geom
    }
    /// Number of kernel offsets K.
    pub fn volume(&self) -> usize {
        self.geom.volume()
    }
    pub fn n_in(&self) -> usize {
        self.n_in
    }
    pub fn n_out(&self) -> usize {
        self.n_out
    }
    /// True for a 1x1 map where output row o reads input row o (no gather needed).
    pub fn is_identity(&self) -> bool {
        self.identity
    }
    /// The kernel offset (if any) under which every output row o reads input row o.
    pub fn identity_offset(&self) -> Option<usize> {
        self.identity_offset
    }
    /// The active 2x2 tiles of a 3x3 submanifold map (stride 1, padding 1, one set), which the
    /// Winograd kernel runs on; `None` for every other geometry.
    pub fn winograd_tiles(&self) -> Option<&WinogradTiles> {
        self.winograd.as_ref()
    }
    /// `[n_out, K]`: input row read by output row o through offset k, or -1.
    pub fn neighbours(&self) -> &[i32] {
        &self.neighbours
    }
    /// `[n_in, K]`: output row that reads input row i through offset k, or -1.
    /// Built on first use (strided convs and most kernels only need `neighbours`).
    pub fn reverse(&self) -> &[i32] {
        self.reverse.get_or_init(|| {
            let k = self.volume();
            if self.mirrored {
                let mut r = self.neighbours.clone();
                r.par_chunks_mut(k.max(1)).with_min_len(256).for_each(|row| row.reverse());
                return r;
            }
            // Invert the neighbour table: for a fixed offset, output -> input is injective.
            let mut r = vec![-1i32; self.n_in * k];
            for (o, row) in self.neighbours.chunks(k.max(1)).enumerate() {
                for (kk, &i) in row.iter().enumerate() {
                    if i >= 0 {
                        r[i as usize * k + kk] = o as i32;
                    }
                }
            }
            r
        })
    }
    /// The (input row, output row) pairs of kernel offset `k` (row-major over the kernel).
    pub fn pairs(&self, k: usize) -> &[[u32; 2]] {
        &self.all_pairs()[k]
    }
    /// Total number of (input, output) pairs over all offsets (the useful multiply-adds per
    /// channel pair).
    pub fn num_pairs(&self) -> usize {
        self.neighbours.iter().filter(|&&r| r >= 0).count()
    }
    fn all_pairs(&self) -> &Vec<Vec<[u32; 2]>> {
        self.pairs.get_or_init(|| {
            let k = self.volume();
            (0..k)
                .into_par_iter()
                .map(|kk| {
                    (0..self.n_out)
                        .filter_map(|o| {
                            let i = self.neighbours[o * k + kk];
                            (i >= 0).then_some([i as u32, o as u32])
                        })
                        .collect()
                })
                .collect()
        })
    }
}
