//! Separable image resampling with PIL's semantics (the library torchvision uses for PIL
//! images): output pixel centres map to `box_start + (i + 0.5) * scale`, and when downscaling the
//! filter support widens by the scale factor, so shrinking averages (antialiases) instead of
//! skipping pixels. Bilinear = triangle filter (support 1), bicubic = Keys cubic with a = -0.5
//! (support 2). Unlike PIL we keep f32 between the two passes and clamp once at the end.

use image::RgbImage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interp {
    Bilinear,
    #[default]
    Bicubic,
}

impl Interp {
    fn support(self) -> f64 {
        match self {
            Interp::Bilinear => 1.0,
            Interp::Bicubic => 2.0,
        }
    }
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interp::Bilinear => (1.0 - x).max(0.0),
            Interp::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }

    pub fn parse(s: &str) -> Option<Interp> {
        match s {
            "bilinear" => Some(Interp::Bilinear),
            "bicubic" => Some(Interp::Bicubic),
            _ => None,
        }
    }
}

/// For each output index: the first input index and the normalised weights of its taps.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

fn taps(in_size: usize, box0: f64, box_len: f64, out_size: usize, interp: Interp) -> Taps {
    let scale = box_len / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = interp.support() * filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for i in 0..out_size {
        let center = box0 + (i as f64 + 0.5) * scale;
        // PIL truncates toward zero here; the clamp to 0 makes that equal to floor.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let mut w: Vec<f64> =
            (lo..hi.max(lo)).map(|x| interp.weight((x as f64 - center + 0.5) / filterscale)).collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        start.push(lo);
        weights.push(w.into_iter().map(|v| v as f32).collect());
    }
    Taps { start, weights }
}

/// Resamples the box (`x0`, `y0`, `w`, `h`, in source pixels; may be fractional) of `src` to
/// `out_w` x `out_h`. Returns interleaved RGB f32 in [0, 255], row-major (HWC).
pub fn resize_rgb(
    src: &RgbImage,
    (x0, y0, w, h): (f64, f64, f64, f64),
    out_w: usize,
    out_h: usize,
    interp: Interp,
) -> Vec<f32> {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let tx = taps(sw, x0, w, out_w, interp);
    let ty = taps(sh, y0, h, out_h, interp);
    // Only the source rows some output row reads go through the horizontal pass.
    let row_lo = ty.start.iter().copied().min().unwrap_or(0);
    let row_hi = ty.start.iter().zip(&ty.weights).map(|(s, w)| s + w.len()).max().unwrap_or(0).max(row_lo);
    let raw = src.as_raw();
    let mut tmp = vec![0f32; (row_hi - row_lo) * out_w * 3];
    for (r, y) in (row_lo..row_hi).enumerate() {
        let line = &raw[y * sw * 3..(y + 1) * sw * 3];
        let out = &mut tmp[r * out_w * 3..(r + 1) * out_w * 3];
        for (ox, (s, ws)) in tx.start.iter().zip(&tx.weights).enumerate() {
            let mut acc = [0f32; 3];
            for (k, &wt) in ws.iter().enumerate() {
                let p = &line[(s + k) * 3..(s + k) * 3 + 3];
                acc[0] += wt * p[0] as f32;
                acc[1] += wt * p[1] as f32;
                acc[2] += wt * p[2] as f32;
            }
            out[ox * 3..ox * 3 + 3].copy_from_slice(&acc);
        }
    }
    let mut out = vec![0f32; out_h * out_w * 3];
    for (oy, (s, ws)) in ty.start.iter().zip(&ty.weights).enumerate() {
        let dst = &mut out[oy * out_w * 3..(oy + 1) * out_w * 3];
        for (k, &wt) in ws.iter().enumerate() {
            let r = s + k - row_lo;
            let line = &tmp[r * out_w * 3..(r + 1) * out_w * 3];
            dst.iter_mut().zip(line).for_each(|(d, v)| *d += wt * v);
        }
        // Bicubic overshoots near edges; PIL clips to the 8-bit range.
        dst.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn img(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)))
    }

    #[test]
    fn same_size_is_identity_for_both_filters() {
        let src = img(7, 5, |x, y| [(x * 30) as u8, (y * 40) as u8, ((x * y) % 256) as u8]);
        for interp in [Interp::Bilinear, Interp::Bicubic] {
            let out = resize_rgb(&src, (0.0, 0.0, 7.0, 5.0), 7, 5, interp);
            let want: Vec<f32> = src.as_raw().iter().map(|&v| v as f32).collect();
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-3, "{interp:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn constant_images_stay_constant_up_and_down() {
        let src = img(9, 6, |_, _| [10, 120, 250]);
        for interp in [Interp::Bilinear, Interp::Bicubic] {
            for (ow, oh) in [(3, 2), (20, 17), (9, 1)] {
                let out = resize_rgb(&src, (0.0, 0.0, 9.0, 6.0), ow, oh, interp);
                for px in out.chunks(3) {
                    assert!(
                        (px[0] - 10.0).abs() < 1e-3 && (px[1] - 120.0).abs() < 1e-3 && (px[2] - 250.0).abs() < 1e-2
                    );
                }
            }
        }
    }

    #[test]
    fn bilinear_upscale_matches_pil_values() {
        // PIL: Image.fromarray([[0, 100]]).resize((4, 1), BILINEAR) -> [0, 25, 75, 100].
        let src = img(2, 1, |x, _| [(x * 100) as u8; 3]);
        let out = resize_rgb(&src, (0.0, 0.0, 2.0, 1.0), 4, 1, Interp::Bilinear);
        let row: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(row, vec![0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn downscale_antialiases_instead_of_skipping() {
        // Alternating black/white columns shrunk by 2: a point sampler would return all-black or
        // all-white; the widened filter averages to mid-grey away from the borders.
        let src = img(16, 4, |x, _| [if x % 2 == 0 { 0 } else { 255 }; 3]);
        for interp in [Interp::Bilinear, Interp::Bicubic] {
            let out = resize_rgb(&src, (0.0, 0.0, 16.0, 4.0), 8, 2, interp);
            let mid = out[(4) * 3];
            assert!((mid - 127.5).abs() < 1.0, "{interp:?}: {mid}");
        }
    }

    #[test]
    fn box_selects_the_region_and_bicubic_is_clamped() {
        // Left half black, right half white: resampling only the right half gives white.
        let src = img(8, 8, |x, _| [if x < 4 { 0 } else { 255 }; 3]);
        let out = resize_rgb(&src, (4.0, 0.0, 4.0, 8.0), 4, 4, Interp::Bicubic);
        assert!(out.iter().all(|&v| (v - 255.0).abs() < 1e-3));
        // A hard edge upscaled with bicubic overshoots before clamping; the output stays in range.
        let out = resize_rgb(&src, (0.0, 0.0, 8.0, 8.0), 32, 32, Interp::Bicubic);
        assert!(out.iter().all(|&v| (0.0..=255.0).contains(&v)));
        assert!(out.contains(&255.0) && out.contains(&0.0));
    }
}
