//! Labelled subsets: the "1% / 10% of the labels" splits of semi-supervised evaluation.
//! Each class keeps the same fraction of its samples, drawn by a seeded shuffle, so a small
//! fraction still has every class and two runs with one seed see the same images.

use super::dataset::Dataset;
use super::mix_seed;
use spark_engine::{Error, Result, Rng};

impl Dataset {
    /// A class-balanced subset: `round(fraction * n_c)` samples of each class `c` (at least one),
    /// chosen by a shuffle seeded from `seed`; the kept samples stay in dataset order.
    /// `fraction` must be in (0, 1]; 1 returns the whole dataset.
    pub fn labelled_subset(&self, fraction: f64, seed: u64) -> Result<Dataset> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::Msg(format!("label fraction {fraction} is outside (0, 1]")));
        }
        if !self.is_labelled() {
            return Err(Error::Msg(format!("{} has no labels to take a fraction of", self.describe())));
        }
        if fraction == 1.0 {
            return Ok(self.clone());
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes()];
        for (i, s) in self.samples.iter().enumerate() {
            if let Some(list) = by_class.get_mut(s.label) {
                list.push(i);
            }
        }
        let mut keep = vec![false; self.len()];
        for (c, list) in by_class.iter_mut().enumerate() {
            if list.is_empty() {
                continue;
            }
            let n = ((fraction * list.len() as f64).round() as usize).clamp(1, list.len());
            Rng::new(mix_seed(seed, &[0x5B5E7, c as u64])).shuffle(list);
            for &i in &list[..n] {
                keep[i] = true;
            }
        }
        let mut subset = self.clone();
        subset.samples = self.samples.iter().zip(&keep).filter(|(_, &k)| k).map(|(s, _)| s.clone()).collect();
        subset.origin = format!("{} ({}% of the labels, seed {seed})", self.origin, fraction * 100.0);
        Ok(subset)
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{Dataset, DatasetKind, Sample, SampleSource};
    use std::path::PathBuf;

    /// 10 classes with 100 + 10 * c samples each, interleaved.
    fn uneven() -> Dataset {
        let mut samples = Vec::new();
        for i in 0..2000 {
            let label = i % 10;
            if i / 10 < 100 + 10 * label {
                samples.push(Sample { source: SampleSource::File(PathBuf::from(format!("{i}.png"))), label });
            }
        }
        Dataset {
            kind: DatasetKind::Flat,
            origin: "test".into(),
            samples,
            classes: (0..10).map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn keeps_the_fraction_of_every_class_deterministically() {
        let ds = uneven();
        let sub = ds.labelled_subset(0.1, 7).unwrap();
        for c in 0..10 {
            let n = sub.samples.iter().filter(|s| s.label == c).count();
            assert_eq!(n, ((100 + 10 * c) as f64 * 0.1).round() as usize, "class {c}");
        }
        let names = |d: &Dataset| d.samples.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert_eq!(names(&sub), names(&ds.labelled_subset(0.1, 7).unwrap()));
        assert_ne!(names(&sub), names(&ds.labelled_subset(0.1, 8).unwrap()));
        // A tiny fraction still keeps one sample per class.
        assert_eq!(ds.labelled_subset(1e-6, 0).unwrap().len(), 10);
        assert_eq!(ds.labelled_subset(1.0, 0).unwrap().len(), ds.len());
    }

    #[test]
    fn bad_fractions_and_unlabelled_data_are_errors() {
        let ds = uneven();
        for f in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(ds.labelled_subset(f, 0).unwrap_err().to_string().contains("label fraction"));
        }
        let flat = Dataset { classes: Vec::new(), ..ds };
        assert!(flat.labelled_subset(0.5, 0).unwrap_err().to_string().contains("no labels"));
    }
}
