//! Data pipeline: datasets (ImageNet-style class folders, flat unlabelled folders, IDX / IDX.gz
//! files, the built-in photographs), augmentation (RandomResizedCrop, flip, normalisation, the
//! eval resize + centre crop) and a threaded loader that decodes and augments ahead of the
//! training step.
//!
//! Determinism: every random choice (epoch order, crop, flip) comes from an `Rng` derived from
//! (seed, epoch, position), never from thread timing, so two runs with one seed see identical
//! batches whatever the number of workers.

mod builtin;
mod dataset;
mod idx;
mod image_io;
mod loader;
mod resample;
mod subset;
mod transform;

pub use builtin::{builtin_dataset, BuiltinSplit, BUILTIN_PHOTOS};
pub use dataset::{Dataset, DatasetKind, Sample, SampleSource};
pub use idx::{read_idx, IdxArray};
pub use image_io::{decode_image, load_image, IMAGE_EXTENSIONS};
pub use loader::{Batch, Loader, LoaderConfig, SkipLog};
pub use resample::{resize_rgb, Interp};
pub use transform::{
    normalize_to_chw, EvalTransform, Normalize, RandomResizedCrop, TrainTransform, Transform, IMAGENET_MEAN,
    IMAGENET_STD,
};

/// Derives an independent seed from a base seed and a few integers (splitmix64 mixing), so that
/// per-epoch and per-sample generators do not depend on how work was split between threads.
pub(crate) fn mix_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut h = seed ^ 0x5851_F42D_4C95_7F2D;
    for &p in parts {
        h ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2);
        let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

#[cfg(test)]
pub(crate) mod testutil;
