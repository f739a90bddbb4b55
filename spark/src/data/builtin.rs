//! The built-in dataset: eleven public-domain / CC0 photographs compiled into the binary (see
//! assets/README.md for sources and licences) plus seeded random crops and flips of them, so
//! `spark pretrain` has hundreds of distinct samples with no data argument. Labels are the photo
//! a crop came from, which gives fine-tuning and evaluation a small, honest toy task.

use super::dataset::{Dataset, DatasetKind, Sample, SampleSource};
use super::image_io::decode_image;
use super::mix_seed;
use image::RgbImage;
use spark_engine::{Result, Rng};
use std::sync::{Arc, OnceLock};

macro_rules! photo {
    ($name:literal) => {
        ($name, include_bytes!(concat!("../../../assets/photos/", $name)) as &'static [u8])
    };
}

/// (file name, encoded bytes) of every built-in photograph, sorted by name.
pub const BUILTIN_PHOTOS: &[(&str, &[u8])] = &[
    photo!("astronaut.jpg"),
    photo!("brick.png"),
    photo!("camera.png"),
    photo!("chelsea.jpg"),
    photo!("coffee.jpg"),
    photo!("grass.png"),
    photo!("gravel.png"),
    photo!("hubble_deep_field.jpg"),
    photo!("ihc.jpg"),
    photo!("retina.jpg"),
    photo!("rocket.jpg"),
];

/// Which generated crops: `Train` = every photo whole plus 45 crops of each (506 samples);
/// `Val` = 10 other crops of each (110 samples; same photos, so it checks the pipeline and the
/// fit, not generalisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinSplit {
    Train,
    Val,
}

const TRAIN_CROPS: usize = 45;
const VAL_CROPS: usize = 10;

fn decoded() -> Result<&'static Vec<Arc<RgbImage>>> {
    static CELL: OnceLock<std::result::Result<Vec<Arc<RgbImage>>, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        BUILTIN_PHOTOS
            .iter()
            .map(|(name, bytes)| {
                decode_image(bytes, &format!("builtin:{name}")).map(Arc::new).map_err(|e| e.to_string())
            })
            .collect()
    })
    .as_ref()
    .map_err(|e| spark_engine::Error::Msg(e.clone()))
}

/// Builds the built-in dataset. Crops cover 15-80% of the photo's area with aspect ratio in
/// [3/4, 4/3], half of them mirrored; fixed seeds make them identical on every machine.
pub fn builtin_dataset(split: BuiltinSplit) -> Result<Dataset> {
    let photos = decoded()?;
    let (crops, seed, tag) = match split {
        BuiltinSplit::Train => (TRAIN_CROPS, 0x5EED_0001, "train"),
        BuiltinSplit::Val => (VAL_CROPS, 0x5EED_0002, "val"),
    };
    let mut samples = Vec::new();
    for (label, (img, (name, _))) in photos.iter().zip(BUILTIN_PHOTOS).enumerate() {
        let stem = name.rsplit_once('.').map(|s| s.0).unwrap_or(name);
        if split == BuiltinSplit::Train {
            samples.push(Sample {
                source: SampleSource::Pixels {
                    name: format!("builtin:{stem}"),
                    image: img.clone(),
                    rect: None,
                    flip: false,
                },
                label,
            });
        }
        let mut rng = Rng::new(mix_seed(seed, &[label as u64]));
        let (w, h) = (img.width() as f64, img.height() as f64);
        for k in 0..crops {
            let area = w * h * (0.15 + 0.65 * rng.uniform());
            let aspect = ((0.75f64).ln() + ((4.0f64 / 3.0).ln() - (0.75f64).ln()) * rng.uniform()).exp();
            let cw = ((area * aspect).sqrt().round()).clamp(8.0, w) as u32;
            let ch = ((area / aspect).sqrt().round()).clamp(8.0, h) as u32;
            let x = rng.below((img.width() - cw + 1) as usize) as u32;
            let y = rng.below((img.height() - ch + 1) as usize) as u32;
            let flip = rng.uniform() < 0.5;
            samples.push(Sample {
                source: SampleSource::Pixels {
                    name: format!("builtin:{stem}#{tag}{k}"),
                    image: img.clone(),
                    rect: Some((x, y, cw, ch)),
                    flip,
                },
                label,
            });
        }
    }
    let classes =
        BUILTIN_PHOTOS.iter().map(|(n, _)| n.rsplit_once('.').map(|s| s.0).unwrap_or(n).to_string()).collect();
    Ok(Dataset { kind: DatasetKind::Builtin, origin: format!("builtin:{tag}"), samples, classes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_photos_decode_and_splits_have_hundreds_of_distinct_samples() {
        let train = builtin_dataset(BuiltinSplit::Train).unwrap();
        assert_eq!(train.len(), 11 * (1 + TRAIN_CROPS));
        assert_eq!(train.num_classes(), 11);
        assert_eq!(train.classes[0], "astronaut");
        let val = builtin_dataset(BuiltinSplit::Val).unwrap();
        assert_eq!(val.len(), 11 * VAL_CROPS);
        // Crops are distinct rectangles, and loading one returns its size.
        let mut rects = std::collections::HashSet::new();
        for s in &train.samples {
            if let SampleSource::Pixels { rect: Some(r), .. } = &s.source {
                rects.insert((s.label, *r));
            }
        }
        assert!(rects.len() > 400, "{}", rects.len());
        let s = &train.samples[1];
        let SampleSource::Pixels { rect: Some((_, _, w, h)), .. } = &s.source else { panic!("not a crop") };
        let img = s.load().unwrap();
        assert_eq!(img.dimensions(), (*w, *h));
        // Greyscale photos come out as RGB with equal channels.
        let brick = train.samples.iter().find(|s| s.name() == "builtin:brick").unwrap().load().unwrap();
        let p = brick.get_pixel(10, 10).0;
        assert!(p[0] == p[1] && p[1] == p[2]);
        // Deterministic: opening twice gives the same crops.
        let again = builtin_dataset(BuiltinSplit::Train).unwrap();
        assert_eq!(train.samples[7].name(), again.samples[7].name());
        assert_eq!(train.samples[7].load().unwrap(), again.samples[7].load().unwrap());
    }
}
