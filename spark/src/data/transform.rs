//! Augmentations and the eval transform, producing normalised CHW f32 pixels.
//! RandomResizedCrop follows torchvision's parameter sampling (ten tries of area x log-uniform
//! aspect ratio, then a centre-crop fallback), so its ranges mean what they mean there.

use super::resample::{resize_rgb, Interp};
use image::RgbImage;
use spark_engine::{Error, Result, Rng};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel normalisation of [0, 1] pixels: (v - mean) / std.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize { mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }
}

impl Normalize {
    /// Back to [0, 1] pixels (for writing reconstructions as images).
    pub fn denormalize(&self, c: usize, v: f32) -> f32 {
        v * self.std[c] + self.mean[c]
    }
}

/// Interleaved HWC pixels in [0, 255] -> normalised planar CHW, optionally mirrored left-right.
pub fn normalize_to_chw(hwc: &[f32], w: usize, h: usize, flip: bool, norm: &Normalize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x };
            let p = &hwc[(y * w + sx) * 3..(y * w + sx) * 3 + 3];
            for c in 0..3 {
                out[c * h * w + y * w + x] = (p[c] / 255.0 - norm.mean[c]) / norm.std[c];
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    pub size: usize,
    /// Range of the crop area as a fraction of the image area (SparK official: (0.67, 1.0);
    /// mmpretrain: (0.2, 1.0)).
    pub scale: (f64, f64),
    /// Range of the crop aspect ratio w/h, sampled log-uniformly (default (3/4, 4/3)).
    pub ratio: (f64, f64),
    pub interp: Interp,
}

impl RandomResizedCrop {
    pub fn new(size: usize, scale: (f64, f64)) -> Self {
        RandomResizedCrop { size, scale, ratio: (3.0 / 4.0, 4.0 / 3.0), interp: Interp::Bicubic }
    }

    /// The crop box (x, y, w, h) in source pixels, as torchvision's `get_params`.
    pub fn sample_box(&self, width: usize, height: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
        let area = (width * height) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * (self.scale.0 + (self.scale.1 - self.scale.0) * rng.uniform());
            let aspect = (lr0 + (lr1 - lr0) * rng.uniform()).exp();
            let w = (target * aspect).sqrt().round() as usize;
            let h = (target / aspect).sqrt().round() as usize;
            if w > 0 && h > 0 && w <= width && h <= height {
                let y = rng.below(height - h + 1);
                let x = rng.below(width - w + 1);
                return (x, y, w, h);
            }
        }
        // Fallback: the largest centred crop whose ratio lies in range.
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, ((width as f64 / self.ratio.0).round() as usize).clamp(1, height))
        } else if in_ratio > self.ratio.1 {
            (((height as f64 * self.ratio.1).round() as usize).clamp(1, width), height)
        } else {
            (width, height)
        };
        ((width - w) / 2, (height - h) / 2, w, h)
    }
}

/// The pretraining / fine-tuning augmentation: RandomResizedCrop, horizontal flip, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTransform {
    pub crop: RandomResizedCrop,
    pub flip_prob: f64,
    pub norm: Normalize,
}

/// The evaluation transform: resize the short side to `resize`, centre-crop `size`, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    pub resize: usize,
    pub size: usize,
    pub interp: Interp,
    pub norm: Normalize,
}

impl EvalTransform {
    /// The usual crop ratio 0.875 (resize 256 for 224), as timm / torchvision evaluation.
    pub fn new(size: usize) -> Self {
        EvalTransform {
            resize: ((size as f64 / 0.875).round() as usize).max(size),
            size,
            interp: Interp::Bicubic,
            norm: Normalize::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Train(TrainTransform),
    Eval(EvalTransform),
}

impl Transform {
    /// SparK's pretraining augmentation at `size` with crop-area range `scale` (bicubic, flip 0.5).
    pub fn train(size: usize, scale: (f64, f64)) -> Transform {
        Transform::Train(TrainTransform {
            crop: RandomResizedCrop::new(size, scale),
            flip_prob: 0.5,
            norm: Normalize::default(),
        })
    }
    pub fn eval(size: usize) -> Transform {
        Transform::Eval(EvalTransform::new(size))
    }

    /// Output side length (outputs are square).
    pub fn size(&self) -> usize {
        match self {
            Transform::Train(t) => t.crop.size,
            Transform::Eval(t) => t.size,
        }
    }

    pub fn normalize(&self) -> &Normalize {
        match self {
            Transform::Train(t) => &t.norm,
            Transform::Eval(t) => &t.norm,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Msg(format!("transform: {m}")));
        match self {
            Transform::Train(t) => {
                let (s0, s1) = t.crop.scale;
                let (r0, r1) = t.crop.ratio;
                if t.crop.size == 0 {
                    return bad("crop size must be positive".into());
                }
                if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
                    return bad(format!("crop scale range ({s0}, {s1}) must satisfy 0 < min <= max <= 1"));
                }
                if !(r0 > 0.0 && r0 <= r1) {
                    return bad(format!("crop ratio range ({r0}, {r1}) must satisfy 0 < min <= max"));
                }
            }
            Transform::Eval(t) => {
                if t.size == 0 || t.resize < t.size {
                    return bad(format!("eval resize {} must be >= crop size {} > 0", t.resize, t.size));
                }
            }
        }
        Ok(())
    }

    /// Applies the transform to one image; returns normalised CHW f32 of 3 x size x size.
    /// The eval transform ignores `rng`.
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng) -> Vec<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        match self {
            Transform::Train(t) => {
                let (x, y, cw, ch) = t.crop.sample_box(w, h, rng);
                let s = t.crop.size;
                let hwc = resize_rgb(img, (x as f64, y as f64, cw as f64, ch as f64), s, s, t.crop.interp);
                let flip = rng.uniform() < t.flip_prob;
                normalize_to_chw(&hwc, s, s, flip, &t.norm)
            }
            Transform::Eval(t) => {
                // torchvision Resize(int): short side -> resize, long side truncated.
                let (nw, nh) = if w <= h {
                    (t.resize, (t.resize as f64 * h as f64 / w as f64) as usize)
                } else {
                    ((t.resize as f64 * w as f64 / h as f64) as usize, t.resize)
                };
                let (nw, nh) = (nw.max(t.size), nh.max(t.size));
                let full = resize_rgb(img, (0.0, 0.0, w as f64, h as f64), nw, nh, t.interp);
                // CenterCrop: offsets round((n - size) / 2).
                let top = ((nh - t.size) as f64 / 2.0).round() as usize;
                let left = ((nw - t.size) as f64 / 2.0).round() as usize;
                let mut crop = Vec::with_capacity(t.size * t.size * 3);
                for y in top..top + t.size {
                    crop.extend_from_slice(&full[(y * nw + left) * 3..(y * nw + left + t.size) * 3]);
                }
                normalize_to_chw(&crop, t.size, t.size, false, &t.norm)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn random_resized_crop_respects_scale_and_ratio_ranges() {
        let rrc = RandomResizedCrop::new(32, (0.3, 0.6));
        let mut rng = Rng::new(3);
        let (w, h) = (200usize, 150usize);
        for _ in 0..500 {
            let (x, y, cw, ch) = rrc.sample_box(w, h, &mut rng);
            assert!(x + cw <= w && y + ch <= h);
            let frac = (cw * ch) as f64 / (w * h) as f64;
            // Rounding w and h to integers moves the area a little off the sampled value.
            assert!(frac > 0.3 * 0.97 && frac < 0.6 * 1.03, "area fraction {frac}");
            let r = cw as f64 / ch as f64;
            assert!(r > 0.75 * 0.97 && r < 4.0 / 3.0 * 1.03, "ratio {r}");
        }
    }

    #[test]
    fn random_resized_crop_falls_back_to_a_centre_crop() {
        // A 100x1 strip cannot host any crop with ratio <= 4/3 of >= 50% area: centre fallback.
        let rrc = RandomResizedCrop::new(8, (0.5, 1.0));
        let (x, y, w, h) = rrc.sample_box(100, 1, &mut Rng::new(0));
        assert_eq!((w, h), (1, 1));
        assert_eq!((x, y), (49, 0));
    }

    #[test]
    fn train_transform_output_flip_and_normalisation() {
        // Left half red, right half blue; a full-image crop (scale 1, ratio fixed to the image's)
        // must be exactly the resized image, mirrored when the flip fires.
        let img = RgbImage::from_fn(16, 16, |x, _| if x < 8 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
        let t = Transform::Train(TrainTransform {
            crop: RandomResizedCrop { size: 8, scale: (1.0, 1.0), ratio: (1.0, 1.0), interp: Interp::Bilinear },
            flip_prob: 0.5,
            norm: Normalize::default(),
        });
        let (mut seen_flip, mut seen_plain) = (false, false);
        for seed in 0..20 {
            let out = t.apply(&img, &mut Rng::new(seed));
            assert_eq!(out.len(), 3 * 8 * 8);
            let red_left = out[0]; // channel 0, pixel (0, 0)
            let hi = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
            let lo = (0.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
            if (red_left - hi).abs() < 1e-4 {
                seen_plain = true;
            } else {
                assert!((red_left - lo).abs() < 1e-4, "{red_left}");
                seen_flip = true;
            }
        }
        assert!(seen_flip && seen_plain);
    }

    #[test]
    fn eval_transform_resizes_short_side_and_centre_crops() {
        // 40x20 image whose columns 8..32 are white: resizing the short side 20 -> 10 gives 20x10
        // and the centre 10x10 crop is its columns 5..15, which read source columns 9..31 only.
        let img = RgbImage::from_fn(40, 20, |x, _| if (8..32).contains(&x) { Rgb([255; 3]) } else { Rgb([0; 3]) });
        let t = Transform::Eval(EvalTransform {
            resize: 10,
            size: 10,
            interp: Interp::Bilinear,
            norm: Normalize { mean: [0.0; 3], std: [1.0; 3] },
        });
        let out = t.apply(&img, &mut Rng::new(0));
        assert_eq!(out.len(), 300);
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-5), "{:?}", &out[..10]);
        assert_eq!(EvalTransform::new(224).resize, 256);
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        assert!(Transform::train(32, (0.5, 0.2)).validate().is_err());
        assert!(Transform::train(32, (0.0, 1.0)).validate().is_err());
        assert!(Transform::train(32, (0.2, 1.0)).validate().is_ok());
        assert!(Transform::eval(32).validate().is_ok());
    }
}
