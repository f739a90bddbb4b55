//! Decoding image files into 8-bit RGB, whatever their colour type (greyscale, grey+alpha, RGBA,
//! 16-bit, CMYK JPEG: the `image` crate converts CMYK/YCCK JPEGs to RGB while decoding).

use image::RgbImage;
use spark_engine::{Error, Result};
use std::path::Path;

/// File extensions the folder datasets pick up (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// Decodes encoded image bytes (JPEG or PNG, detected from the content) into RGB8. `what` names
/// the source in the error message (a path, or the name of a built-in photo).
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Msg(format!("cannot decode image {what}: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Msg(format!("image {what} is empty (0 pixels)")));
    }
    // `to_rgb8` drops alpha and scales 16-bit samples to 8 bits (v >> 8 with rounding), and
    // replicates greyscale into the three channels.
    Ok(img.to_rgb8())
}

/// Reads and decodes an image file. Errors name the path.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Msg(format!("cannot read image {}: {e}", path.display())))?;
    decode_image(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    #[test]
    fn png_rgb_grey_rgba_and_16bit_become_rgb8() {
        let dir = TempDir::new("imgio");
        let rgb = ImageBuffer::from_fn(4, 3, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 7]));
        rgb.save(dir.path().join("rgb.png")).unwrap();
        let grey = ImageBuffer::from_fn(4, 3, |x, _| Luma([x as u8 * 50]));
        grey.save(dir.path().join("grey.png")).unwrap();
        let rgba = ImageBuffer::from_fn(4, 3, |_, _| Rgba([1u8, 2, 3, 0]));
        rgba.save(dir.path().join("rgba.png")).unwrap();
        let deep: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_fn(4, 3, |x, _| Rgb([x as u16 * 0x1000, 0xFFFF, 0]));
        deep.save(dir.path().join("deep.png")).unwrap();
        let grey16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(2, 2, |_, _| Luma([0x8000]));
        grey16.save(dir.path().join("grey16.png")).unwrap();

        let a = load_image(&dir.path().join("rgb.png")).unwrap();
        assert_eq!(a.dimensions(), (4, 3));
        assert_eq!(a.get_pixel(3, 2).0, [30, 40, 7]);
        let g = load_image(&dir.path().join("grey.png")).unwrap();
        assert_eq!(g.get_pixel(2, 1).0, [100, 100, 100]);
        let r = load_image(&dir.path().join("rgba.png")).unwrap();
        assert_eq!(r.get_pixel(0, 0).0, [1, 2, 3]);
        let d = load_image(&dir.path().join("deep.png")).unwrap();
        assert_eq!(d.get_pixel(1, 0).0, [0x10, 0xFF, 0]);
        let g16 = load_image(&dir.path().join("grey16.png")).unwrap();
        assert_eq!(g16.get_pixel(1, 1).0, [0x80, 0x80, 0x80]);
    }

    #[test]
    fn jpeg_and_cmyk_jpeg_decode_to_rgb() {
        let dir = TempDir::new("imgio_jpeg");
        let rgb = ImageBuffer::from_fn(16, 16, |_, _| Rgb([200u8, 100, 50]));
        rgb.save(dir.path().join("a.jpg")).unwrap();
        let a = load_image(&dir.path().join("a.jpg")).unwrap();
        let p = a.get_pixel(8, 8).0;
        assert!((p[0] as i32 - 200).abs() <= 3 && (p[1] as i32 - 100).abs() <= 3 && (p[2] as i32 - 50).abs() <= 3);

        // A hand-made 4-component (CMYK) baseline JPEG: constant C, M, Y, K planes.
        // Adobe CMYK JPEGs store inverted inks (255 = no ink), so stored (255, 0, 0, 255) is
        // "no cyan, full magenta and yellow, no black" = red.
        let cmyk = cmyk_jpeg([255, 0, 0, 255]);
        let img = decode_image(&cmyk, "cmyk.jpg").unwrap();
        assert_eq!(img.dimensions(), (8, 8));
        let p = img.get_pixel(3, 3).0;
        assert!(p[0] > 240 && p[1] < 15 && p[2] < 15, "CMYK decoded to {p:?}");
    }

    #[test]
    fn corrupt_and_missing_files_are_errors_naming_the_path() {
        let dir = TempDir::new("imgio_bad");
        let bad = dir.path().join("broken.jpg");
        std::fs::write(&bad, b"\xFF\xD8\xFF\xE0 this is not a jpeg").unwrap();
        let e = load_image(&bad).unwrap_err().to_string();
        assert!(e.contains("broken.jpg"), "{e}");
        let e = load_image(&dir.path().join("nope.png")).unwrap_err().to_string();
        assert!(e.contains("nope.png") && e.contains("cannot read"), "{e}");
    }
}
