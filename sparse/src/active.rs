//! `ActiveSet`: the active sites of one feature-map scale.
//!
//! Rows of every sparse feature matrix follow this set's order: batch-major, then row-major
//! (b, y, x). The dense index grid `B*H*W -> row or -1` gives O(1) neighbour look-up, which is
//! all a 2-D rulebook needs (a hash map would only pay off for 3-D volumes).

use spark_engine::{DType, Device, Error, Result, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The active sites (b, y, x) of a `[batch, h, w]` map, in batch-major then row-major order.
#[derive(Debug)]
pub struct ActiveSet {
    id: u64,
    batch: usize,
    h: usize,
    w: usize,
    coords: Vec<[usize; 3]>,
    grid: Vec<i32>,
    /// Row range of image b is `starts[b]..starts[b + 1]`.
    starts: Vec<usize>,
}

impl ActiveSet {
    /// From a boolean map `[batch, h, w]` (true = active), row-major.
    pub fn from_mask(mask: &[bool], batch: usize, h: usize, w: usize) -> Result<ActiveSet> {
        if mask.len() != batch * h * w {
            return Err(Error::Shape {
                op: "ActiveSet::from_mask",
                msg: format!("mask has {} elements, expected batch*h*w = {batch}*{h}*{w}", mask.len()),
            });
        }
        if batch * h * w > i32::MAX as usize {
            return Err(Error::Msg(format!("ActiveSet::from_mask: map {batch}x{h}x{w} is too large for i32 rows")));
        }
        let mut coords = Vec::new();
        let mut grid = vec![-1i32; mask.len()];
        let mut starts = Vec::with_capacity(batch + 1);
        for b in 0..batch {
            starts.push(coords.len());
            for y in 0..h {
                for x in 0..w {
                    let g = (b * h + y) * w + x;
                    if mask[g] {
                        grid[g] = coords.len() as i32;
                        coords.push([b, y, x]);
                    }
                }
            }
        }
        starts.push(coords.len());
        Ok(ActiveSet { id: next_id(), batch, h, w, coords, grid, starts })
    }

    /// From a `[batch, 1, h, w]` (or `[batch, h, w]`) tensor whose non-zero entries are active.
    pub fn from_mask_tensor(mask: &Tensor) -> Result<ActiveSet> {
        let d = mask.dims();
        let (batch, h, w) = match d {
            [b, 1, h, w] | [b, h, w] => (*b, *h, *w),
            _ => {
                return Err(Error::Shape {
                    op: "ActiveSet::from_mask_tensor",
                    msg: format!("mask must be [B, 1, H, W] or [B, H, W], got {d:?}"),
                })
            }
        };
        let m: Vec<bool> = mask.to_vec_f64()?.iter().map(|&v| v != 0.0).collect();
        Self::from_mask(&m, batch, h, w)
    }

    /// SparK's hierarchical mask: the patch mask `[batch, fh, fw]` upsampled by nearest
    /// repetition, `scale` times along each axis (so the map is `[batch, fh*scale, fw*scale]`).
    pub fn from_patch_mask(patch: &[bool], batch: usize, fh: usize, fw: usize, scale: usize) -> Result<ActiveSet> {
        Self::from_patch_mask_scaled(patch, batch, fh, fw, scale, scale)
    }

    /// Like `from_patch_mask` with separate factors along height (`sy`) and width (`sx`).
    pub fn from_patch_mask_scaled(
        patch: &[bool],
        batch: usize,
        fh: usize,
        fw: usize,
        sy: usize,
        sx: usize,
    ) -> Result<ActiveSet> {
        if patch.len() != batch * fh * fw {
            return Err(Error::Shape {
                op: "ActiveSet::from_patch_mask",
                msg: format!("patch mask has {} elements, expected batch*fh*fw = {batch}*{fh}*{fw}", patch.len()),
            });
        }
        if sy == 0 || sx == 0 {
            return Err(Error::Msg("ActiveSet::from_patch_mask: upsampling factor must be >= 1".into()));
        }
        let (h, w) = (fh * sy, fw * sx);
        let mut m = vec![false; batch * h * w];
        for b in 0..batch {
            for y in 0..h {
                for x in 0..w {
                    m[(b * h + y) * w + x] = patch[(b * fh + y / sy) * fw + x / sx];
                }
            }
        }
        Self::from_mask(&m, batch, h, w)
    }

    /// A process-unique identity (kernel maps are cached by it).
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn h(&self) -> usize {
        self.h
    }
    pub fn w(&self) -> usize {
        self.w
    }
    /// Number of active sites (rows of a feature matrix over this set).
    pub fn len(&self) -> usize {
        self.coords.len()
    }
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }
    /// Active coordinates (b, y, x) in row order.
    pub fn coords(&self) -> &[[usize; 3]] {
        &self.coords
    }
    /// The dense index grid `[batch, h, w]`: row index, or -1 where inactive.
    pub fn grid(&self) -> &[i32] {
        &self.grid
    }
    /// The row of site (b, y, x), or `None` when inactive or out of range.
    pub fn row_of(&self, b: usize, y: usize, x: usize) -> Option<usize> {
        if b >= self.batch || y >= self.h || x >= self.w {
            return None;
        }
        let r = self.grid[(b * self.h + y) * self.w + x];
        (r >= 0).then_some(r as usize)
    }
    /// Number of active sites of each image.
    pub fn count_per_image(&self) -> Vec<usize> {
        self.starts.windows(2).map(|s| s[1] - s[0]).collect()
    }
    /// Rows of image `b` (`b < batch`).
    pub fn image_rows(&self, b: usize) -> std::ops::Range<usize> {
        self.starts[b]..self.starts[b + 1]
    }
    /// The boolean map `[batch, h, w]`.
    pub fn mask(&self) -> Vec<bool> {
        self.grid.iter().map(|&r| r >= 0).collect()
    }
    /// The map as a 0/1 tensor `[batch, 1, h, w]` (for SparK's dense simulation and densify).
    pub fn mask_tensor(&self, dtype: DType) -> Result<Tensor> {
        let v: Vec<f64> = self.grid.iter().map(|&r| if r >= 0 { 1.0 } else { 0.0 }).collect();
        Tensor::from_vec(v, &[self.batch, 1, self.h, self.w])?.to_dtype(dtype)?.to_device(Device::Cpu)
    }
    /// True when both sets describe the same sites (same shape and same active map).
    pub fn same_sites(&self, other: &ActiveSet) -> bool {
        self.id == other.id
            || (self.batch == other.batch && self.h == other.h && self.w == other.w && self.coords == other.coords)
    }
}
