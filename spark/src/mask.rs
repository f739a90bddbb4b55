//! Patch masks (SPARK.md section 2): exactly `round_half_even(fh*fw*(1-ratio))` visible cells per
//! image, a uniformly random subset drawn by argsort of uniform noise, plus nearest-neighbour
//! upsampling of the cell grid to any multiple resolution (the hierarchical masks).

use spark_engine::{DType, Error, Result, Rng, Tensor};

/// Python's `round` (ties to even), which SparK uses for the kept count (`f64::round` would
/// round 2.5 up to 3).
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Number of visible cells per image for an `fh x fw` grid and a mask ratio.
pub fn len_keep(fh: usize, fw: usize, mask_ratio: f64) -> usize {
    round_half_even((fh * fw) as f64 * (1.0 - mask_ratio)).max(0.0) as usize
}

/// A batch of patch masks on the `fh x fw` cell grid; `true` = visible ("active").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchMask {
    pub batch: usize,
    pub fh: usize,
    pub fw: usize,
    /// Row-major `[batch, fh, fw]`.
    pub active: Vec<bool>,
}

impl PatchMask {
    /// Uniformly random masks with exactly `len_keep(fh, fw, ratio)` visible cells per image.
    /// Draws `batch*fh*fw` uniforms row by row, argsorts each row and keeps the first `len_keep`.
    pub fn sample(batch: usize, fh: usize, fw: usize, mask_ratio: f64, rng: &mut Rng) -> Result<PatchMask> {
        if !(0.0..1.0).contains(&mask_ratio) {
            return Err(Error::Msg(format!("PatchMask::sample: mask ratio {mask_ratio} is not in [0, 1)")));
        }
        if fh == 0 || fw == 0 {
            return Err(Error::Shape { op: "PatchMask::sample", msg: format!("empty cell grid {fh}x{fw}") });
        }
        let l = fh * fw;
        let keep = len_keep(fh, fw, mask_ratio);
        let mut active = vec![false; batch * l];
        for b in 0..batch {
            let noise: Vec<f64> = (0..l).map(|_| rng.uniform()).collect();
            let mut idx: Vec<usize> = (0..l).collect();
            idx.sort_by(|&i, &j| noise[i].total_cmp(&noise[j]));
            for &i in &idx[..keep] {
                active[b * l + i] = true;
            }
        }
        Ok(PatchMask { batch, fh, fw, active })
    }

    /// A caller-supplied mask (row-major `[batch, fh, fw]`, `true` = visible).
    pub fn from_active(batch: usize, fh: usize, fw: usize, active: Vec<bool>) -> Result<PatchMask> {
        if active.len() != batch * fh * fw {
            return Err(Error::Shape {
                op: "PatchMask::from_active",
                msg: format!("{} flags for a [{batch}, {fh}, {fw}] mask", active.len()),
            });
        }
        Ok(PatchMask { batch, fh, fw, active })
    }

    /// From a `[B,1,fh,fw]` (or `[B,fh,fw]`) tensor of 0/1 values (non-zero = visible).
    pub fn from_tensor(t: &Tensor) -> Result<PatchMask> {
        let d = t.dims();
        let (b, fh, fw) = match d {
            [b, 1, h, w] | [b, h, w] => (*b, *h, *w),
            _ => {
                return Err(Error::Shape {
                    op: "PatchMask::from_tensor",
                    msg: format!("expected [B,1,f,f], got {d:?}"),
                })
            }
        };
        let v = t.to_vec_f64()?;
        Self::from_active(b, fh, fw, v.iter().map(|&x| x != 0.0).collect())
    }

    pub fn cells(&self) -> usize {
        self.fh * self.fw
    }

    /// Number of masked (scored) cells over the whole batch.
    pub fn masked_count(&self) -> usize {
        self.active.iter().filter(|&&a| !a).count()
    }

    /// Visible flags upsampled by nearest-neighbour repeat to `[batch, h, w]`; `h`, `w` must be
    /// multiples of the grid (SparK's `repeat_interleave`).
    pub fn upsample(&self, h: usize, w: usize) -> Result<Vec<bool>> {
        if !h.is_multiple_of(self.fh) || !w.is_multiple_of(self.fw) || h == 0 || w == 0 {
            return Err(Error::Shape {
                op: "PatchMask::upsample",
                msg: format!("{h}x{w} is not a positive multiple of the {}x{} mask grid", self.fh, self.fw),
            });
        }
        let (sh, sw) = (h / self.fh, w / self.fw);
        let mut out = vec![false; self.batch * h * w];
        for b in 0..self.batch {
            for y in 0..h {
                for x in 0..w {
                    out[(b * h + y) * w + x] = self.active[(b * self.fh + y / sh) * self.fw + x / sw];
                }
            }
        }
        Ok(out)
    }

    /// The upsampled mask as a `[batch, 1, h, w]` tensor of 0/1 (1 = visible).
    pub fn to_tensor(&self, h: usize, w: usize, dtype: DType) -> Result<Tensor> {
        let v: Vec<f64> = self.upsample(h, w)?.into_iter().map(|a| a as u8 as f64).collect();
        Tensor::from_vec(v, &[self.batch, 1, h, w])?.to_dtype(dtype)
    }

    /// `[batch, 1, fh, fw]` cell-grid tensor of 0/1.
    pub fn grid_tensor(&self, dtype: DType) -> Result<Tensor> {
        self.to_tensor(self.fh, self.fw, dtype)
    }

    /// The hierarchical masks for feature maps whose sides are `grid * 2^i`, i = 0..levels
    /// (deepest first), as used by densify.
    pub fn hierarchy(&self, levels: usize) -> Result<Vec<Vec<bool>>> {
        (0..levels).map(|i| self.upsample(self.fh << i, self.fw << i)).collect()
    }

    /// Zeroes masked pixels of an image batch `[B,C,H,W]` (H, W multiples of the grid).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dims();
        if d.len() != 4 || d[0] != self.batch {
            return Err(Error::Shape {
                op: "PatchMask::apply",
                msg: format!("image batch {d:?} does not match a mask of batch {}", self.batch),
            });
        }
        let m = self.to_tensor(d[2], d[3], x.dtype())?.to_device(x.device())?;
        x.mul(&m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even_matches_python() {
        assert_eq!(round_half_even(19.6), 20.0);
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(len_keep(7, 7, 0.6), 20);
        assert_eq!(len_keep(12, 12, 0.75), 36);
        assert_eq!(len_keep(2, 2, 0.6), 2); // round(1.6)
        assert_eq!(len_keep(5, 1, 0.5), 2); // round(2.5) = 2, not 3
    }

    #[test]
    fn sample_keeps_exact_count_and_is_seeded() {
        let mut r1 = Rng::new(3);
        let mut r2 = Rng::new(3);
        let a = PatchMask::sample(16, 7, 7, 0.6, &mut r1).unwrap();
        let b = PatchMask::sample(16, 7, 7, 0.6, &mut r2).unwrap();
        assert_eq!(a, b);
        for img in a.active.chunks(49) {
            assert_eq!(img.iter().filter(|&&x| x).count(), 20);
        }
        assert_eq!(a.masked_count(), 16 * 29);
        // Different images get different masks (uniform subsets; 16 identical rows is ~impossible).
        assert!(a.active.chunks(49).any(|c| c != &a.active[..49]));
    }

    #[test]
    fn sample_is_roughly_uniform_over_cells() {
        let mut rng = Rng::new(11);
        let m = PatchMask::sample(4000, 2, 2, 0.5, &mut rng).unwrap();
        for cell in 0..4 {
            let hits = m.active.chunks(4).filter(|c| c[cell]).count() as f64 / 4000.0;
            assert!((hits - 0.5).abs() < 0.03, "cell {cell}: {hits}");
        }
    }

    #[test]
    fn upsample_repeats_cells() {
        let m = PatchMask::from_active(1, 2, 2, vec![true, false, false, true]).unwrap();
        let u = m.upsample(4, 4).unwrap();
        let expect = [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1];
        assert_eq!(u.iter().map(|&b| b as i32).collect::<Vec<_>>(), expect);
        assert!(m.upsample(5, 4).is_err());
        let h = m.hierarchy(3).unwrap();
        assert_eq!(h[0].len(), 4);
        assert_eq!(h[2].len(), 64);
        let x = Tensor::ones(&[1, 3, 4, 4], DType::F32, spark_engine::Device::Cpu).unwrap();
        let y = m.apply(&x).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y.iter().sum::<f32>(), 24.0);
    }

    #[test]
    fn caller_mask_validated() {
        assert!(PatchMask::from_active(2, 2, 2, vec![true; 7]).is_err());
        let t = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[1, 1, 2, 2]).unwrap();
        assert_eq!(PatchMask::from_tensor(&t).unwrap().active, vec![true, false, false, true]);
    }
}
