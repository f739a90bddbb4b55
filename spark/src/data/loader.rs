//! A threaded batch loader. Worker k builds the batches of global steps start+k, start+k+W,
//! start+k+2W, ... and sends each through its own bounded channel (`sync_channel(prefetch)`);
//! the consumer reads step s from worker (s - start) mod W. So batches arrive in step order,
//! at most W x prefetch batches are decoded ahead of the training step, and every random draw is
//! keyed by (seed, epoch / step, slot): the output does not depend on thread timing or on W.
//!
//! Epoch e visits the dataset in the order of a permutation seeded by (seed, e). With `wrap` (for
//! training) every batch is full: an epoch has ceil(N / B) steps and the last one continues from
//! the start of the permutation, like SparK's sampler. Without `wrap` (evaluation) the last batch
//! is short. Unreadable images are skipped, reported once per path and counted.

use super::dataset::Dataset;
use super::mix_seed;
use super::transform::Transform;
use spark_engine::{Error, Result, Rng, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Fill the last batch of an epoch by wrapping around (training) instead of a short batch.
    pub wrap: bool,
    /// Decoding threads (at least 1).
    pub workers: usize,
    /// Batches each worker may hold ready ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
}

impl LoaderConfig {
    pub fn train(batch_size: usize, workers: usize, seed: u64) -> Self {
        LoaderConfig { batch_size, shuffle: true, wrap: true, workers, prefetch: 2, seed }
    }
    pub fn eval(batch_size: usize, workers: usize) -> Self {
        LoaderConfig { batch_size, shuffle: false, wrap: false, workers, prefetch: 2, seed: 0 }
    }
}

/// Unreadable samples seen so far: path -> reason (first occurrence), plus the number of times a
/// sample was skipped (a bad file is skipped again every epoch).
#[derive(Debug, Default)]
pub struct SkipLog {
    first: Mutex<BTreeMap<String, String>>,
    count: AtomicUsize,
}

impl SkipLog {
    /// Records a skip; returns true the first time this name is seen.
    fn record(&self, name: &str, reason: &str) -> bool {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut m = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(name) {
            return false;
        }
        m.insert(name.to_string(), reason.to_string());
        true
    }
    /// Total skips (counting repeats across epochs).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
    /// The distinct unreadable samples with their first error.
    pub fn distinct(&self) -> Vec<(String, String)> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(a, b)| (a.clone(), b.clone())).collect()
    }
}

/// One batch: images [B, 3, S, S] f32 (normalised), labels and dataset indices per row.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<usize>,
    pub indices: Vec<usize>,
    /// Global step (0-based) and the epoch it belongs to.
    pub step: usize,
    pub epoch: usize,
    /// Samples of this batch that could not be read and were left out: (name, reason), only the
    /// first occurrence of each name (later epochs skip silently but still count).
    pub newly_skipped: Vec<(String, String)>,
}

struct RawBatch {
    step: usize,
    pixels: Vec<f32>,
    labels: Vec<usize>,
    indices: Vec<usize>,
    newly_skipped: Vec<(String, String)>,
}

pub struct Loader {
    dataset: Arc<Dataset>,
    transform: Arc<Transform>,
    cfg: LoaderConfig,
    skips: Arc<SkipLog>,
}

impl Loader {
    /// Checks the configuration and that the dataset is not empty (before any training starts).
    pub fn new(dataset: Arc<Dataset>, transform: Transform, cfg: LoaderConfig) -> Result<Loader> {
        if dataset.is_empty() {
            return Err(Error::Msg(format!("dataset {} is empty: nothing to load", dataset.origin)));
        }
        if cfg.batch_size == 0 {
            return Err(Error::Msg("loader: batch size must be at least 1".into()));
        }
        transform.validate()?;
        let cfg = LoaderConfig { workers: cfg.workers.max(1), prefetch: cfg.prefetch.max(1), ..cfg };
        Ok(Loader { dataset, transform: Arc::new(transform), cfg, skips: Arc::new(SkipLog::default()) })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }
    pub fn skips(&self) -> &SkipLog {
        &self.skips
    }

    /// Steps (batches) per epoch: ceil(N / B).
    pub fn steps_per_epoch(&self) -> usize {
        self.dataset.len().div_ceil(self.cfg.batch_size)
    }

    /// Batches for global steps `start..end` (end = None: endless), decoded ahead on workers.
    pub fn stream(&self, start: usize, end: Option<usize>) -> BatchStream {
        let w = self.cfg.workers;
        let mut rxs = Vec::with_capacity(w);
        let mut handles = Vec::with_capacity(w);
        for k in 0..w {
            let (tx, rx) = sync_channel(self.cfg.prefetch);
            let job = Job {
                dataset: self.dataset.clone(),
                transform: self.transform.clone(),
                cfg: self.cfg.clone(),
                skips: self.skips.clone(),
                first: start + k,
                stride: w,
                end,
            };
            let h = std::thread::Builder::new().name(format!("spark-data-{k}")).spawn(move || job.run(tx));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => return BatchStream::failed(format!("cannot start data worker thread: {e}")),
            }
            rxs.push(rx);
        }
        BatchStream {
            rxs,
            handles,
            next: start,
            start,
            end,
            size: self.transform.size(),
            spe: self.steps_per_epoch(),
            empty_run: 0,
            empty_error: None,
            error: None,
        }
    }

    /// The batches of one epoch.
    pub fn epoch(&self, epoch: usize) -> BatchStream {
        let spe = self.steps_per_epoch();
        self.stream(epoch * spe, Some((epoch + 1) * spe))
    }
}

struct Job {
    dataset: Arc<Dataset>,
    transform: Arc<Transform>,
    cfg: LoaderConfig,
    skips: Arc<SkipLog>,
    first: usize,
    stride: usize,
    end: Option<usize>,
}

impl Job {
    fn run(self, tx: SyncSender<RawBatch>) {
        let n = self.dataset.len();
        let b = self.cfg.batch_size;
        let spe = n.div_ceil(b);
        let mut order: Vec<usize> = Vec::new();
        let mut order_epoch = usize::MAX;
        let mut step = self.first;
        while self.end.is_none_or(|e| step < e) {
            let (epoch, pos) = (step / spe, step % spe);
            if epoch != order_epoch {
                order = (0..n).collect();
                if self.cfg.shuffle {
                    Rng::new(mix_seed(self.cfg.seed, &[1, epoch as u64])).shuffle(&mut order);
                }
                order_epoch = epoch;
            }
            let slots: Vec<usize> = if self.cfg.wrap {
                (0..b).map(|j| order[(pos * b + j) % n]).collect()
            } else {
                order[pos * b..((pos + 1) * b).min(n)].to_vec()
            };
            let raw = self.build(step, &slots);
            if tx.send(raw).is_err() {
                return; // the consumer is gone
            }
            step += self.stride;
        }
    }

    fn build(&self, step: usize, slots: &[usize]) -> RawBatch {
        let s = self.transform.size();
        let mut raw = RawBatch {
            step,
            pixels: Vec::with_capacity(slots.len() * 3 * s * s),
            labels: Vec::new(),
            indices: Vec::new(),
            newly_skipped: Vec::new(),
        };
        for (j, &i) in slots.iter().enumerate() {
            self.add(&mut raw, i, j);
        }
        if self.cfg.wrap {
            self.refill(&mut raw, slots.len());
        }
        raw
    }

    /// Training batches stay full when some of their images are unreadable (batch norm needs at
    /// least 2, and a batch short by chance would stop a run): the missing rows are drawn from the
    /// whole dataset with an RNG keyed by (seed, step), so the batch is the same on every run and
    /// after a resume. The number of draws is bounded; a dataset with almost no readable image
    /// still ends in the loader's "no readable image" error instead of a long search.
    fn refill(&self, raw: &mut RawBatch, b: usize) {
        let n = self.dataset.len();
        let mut rng = Rng::new(mix_seed(self.cfg.seed, &[3, raw.step as u64]));
        let max_draws = 4 * b;
        for draw in 0..max_draws {
            if raw.labels.len() >= b {
                break;
            }
            // Slot numbers past the batch keep the augmentation draws distinct from the originals'.
            self.add(raw, rng.below(n), b + draw);
        }
    }

    /// Loads sample `i`, transforms it with the RNG of (step, slot `j`) and appends it to `raw`;
    /// an unreadable sample is recorded in the skip log instead.
    fn add(&self, raw: &mut RawBatch, i: usize, j: usize) {
        let sample = &self.dataset.samples[i];
        // A decoder panic on a malformed file must not take the run down: treat it as unreadable.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sample.load()))
            .unwrap_or_else(|_| Err(Error::Msg(format!("image decoder panicked on {}", sample.name()))));
        match loaded {
            Ok(img) => {
                let mut rng = Rng::new(mix_seed(self.cfg.seed, &[2, raw.step as u64, j as u64]));
                raw.pixels.extend(self.transform.apply(&img, &mut rng));
                raw.labels.push(sample.label);
                raw.indices.push(i);
            }
            Err(e) => {
                let name = sample.name();
                let reason = e.to_string();
                if self.skips.record(&name, &reason) {
                    raw.newly_skipped.push((name, reason));
                }
            }
        }
    }
}

/// Iterator over batches in step order. Dropping it stops the workers.
pub struct BatchStream {
    rxs: Vec<Receiver<RawBatch>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    start: usize,
    end: Option<usize>,
    size: usize,
    spe: usize,
    empty_run: usize,
    /// The first unreadable file reported during the current run of empty batches.
    empty_error: Option<String>,
    error: Option<String>,
}

impl BatchStream {
    fn failed(msg: String) -> BatchStream {
        BatchStream {
            rxs: Vec::new(),
            handles: Vec::new(),
            next: 0,
            start: 0,
            end: Some(1),
            size: 0,
            spe: 1,
            empty_run: 0,
            empty_error: None,
            error: Some(msg),
        }
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.error.take() {
            self.end = Some(0);
            return Some(Err(Error::Msg(e)));
        }
        loop {
            if self.end.is_some_and(|e| self.next >= e) {
                return None;
            }
            let k = (self.next - self.start) % self.rxs.len();
            let raw = match self.rxs[k].recv() {
                Ok(r) => r,
                Err(_) => {
                    self.end = Some(0);
                    return Some(Err(Error::Msg(format!(
                        "data worker {k} stopped unexpectedly at step {}",
                        self.next
                    ))));
                }
            };
            debug_assert_eq!(raw.step, self.next);
            self.next += 1;
            if raw.labels.is_empty() {
                // Every image of this batch was unreadable: skip it, unless that keeps happening
                // for a whole epoch (then the data is unusable and training must stop).
                self.empty_run += 1;
                if self.empty_error.is_none() {
                    self.empty_error = raw.newly_skipped.first().map(|(n, r)| format!("{n}: {r}"));
                }
                if self.empty_run >= self.spe {
                    self.end = Some(0);
                    return Some(Err(Error::Msg(format!(
                        "no readable image in {} consecutive batches; first error: {}",
                        self.empty_run,
                        self.empty_error.take().unwrap_or_else(|| "(see above)".into())
                    ))));
                }
                continue;
            }
            self.empty_run = 0;
            self.empty_error = None;
            let b = raw.labels.len();
            let images = match Tensor::from_vec(raw.pixels, &[b, 3, self.size, self.size]) {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            };
            return Some(Ok(Batch {
                images,
                labels: raw.labels,
                indices: raw.indices,
                step: raw.step,
                epoch: raw.step / self.spe,
                newly_skipped: raw.newly_skipped,
            }));
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Closing the receivers makes each worker's next send fail; it then returns.
        self.rxs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;
    use crate::data::{Dataset, DatasetKind, Sample, SampleSource};
    use image::{Rgb, RgbImage};
    use std::path::Path;

    /// A flat folder of `n` PNGs whose pixels all equal the file number, plus `bad` corrupt files.
    fn folder(dir: &Path, n: usize, bad: usize) -> Arc<Dataset> {
        for i in 0..n {
            RgbImage::from_fn(12, 10, |_, _| Rgb([i as u8; 3])).save(dir.join(format!("img{i:03}.png"))).unwrap();
        }
        for i in 0..bad {
            std::fs::write(dir.join(format!("zz_corrupt{i}.jpg")), b"\xFF\xD8garbage").unwrap();
        }
        Arc::new(Dataset::open(dir.to_str().unwrap()).unwrap())
    }

    fn collect(loader: &Loader, start: usize, end: usize) -> Vec<(Vec<usize>, Vec<f32>)> {
        loader
            .stream(start, Some(end))
            .map(|b| {
                let b = b.unwrap();
                (b.indices, b.images.to_vec::<f32>().unwrap())
            })
            .collect()
    }

    #[test]
    fn deterministic_regardless_of_worker_count_and_resumable() {
        let dir = TempDir::new("loader_det");
        let ds = folder(dir.path(), 10, 0);
        let mk = |workers| {
            Loader::new(ds.clone(), Transform::train(8, (0.3, 1.0)), LoaderConfig::train(4, workers, 42)).unwrap()
        };
        let one = collect(&mk(1), 0, 9);
        let three = collect(&mk(3), 0, 9);
        assert_eq!(one, three);
        // Resuming at step 5 gives exactly steps 5.. of the uninterrupted run.
        let resumed = collect(&mk(2), 5, 9);
        assert_eq!(&one[5..], &resumed[..]);
        // A different seed gives a different order.
        let other = collect(
            &Loader::new(ds.clone(), Transform::train(8, (0.3, 1.0)), LoaderConfig::train(4, 2, 7)).unwrap(),
            0,
            3,
        );
        assert_ne!(one[..3].iter().map(|x| &x.0).collect::<Vec<_>>(), other.iter().map(|x| &x.0).collect::<Vec<_>>());
    }

    #[test]
    fn epochs_are_permutations_and_wrap_fills_the_last_batch() {
        let dir = TempDir::new("loader_epoch");
        let ds = folder(dir.path(), 10, 0);
        let loader = Loader::new(ds, Transform::eval(8), LoaderConfig::train(4, 2, 1)).unwrap();
        assert_eq!(loader.steps_per_epoch(), 3);
        let mut e0: Vec<Vec<usize>> = Vec::new();
        for b in loader.epoch(0) {
            let b = b.unwrap();
            assert_eq!(b.images.dims(), &[4, 3, 8, 8]);
            assert_eq!(b.epoch, 0);
            // Pixel values identify the file: index i holds grey level i.
            let px = b.images.to_vec::<f32>().unwrap();
            for (row, &i) in b.indices.iter().enumerate() {
                let want = (i as f32 / 255.0 - 0.485) / 0.229;
                assert!((px[row * 192] - want).abs() < 1e-4);
            }
            e0.push(b.indices);
        }
        let flat: Vec<usize> = e0.concat();
        let mut first10 = flat[..10].to_vec();
        first10.sort();
        assert_eq!(first10, (0..10).collect::<Vec<_>>());
        assert_eq!(&flat[10..], &flat[..2]); // wrapped
        let e1: Vec<usize> = loader.epoch(1).flat_map(|b| b.unwrap().indices).collect();
        assert_ne!(e1, flat, "epoch 1 must be reshuffled");
    }

    #[test]
    fn eval_order_is_sequential_with_a_short_last_batch() {
        let dir = TempDir::new("loader_eval");
        let ds = folder(dir.path(), 5, 0);
        let loader = Loader::new(ds, Transform::eval(8), LoaderConfig::eval(2, 2)).unwrap();
        let got: Vec<Vec<usize>> = loader.epoch(0).map(|b| b.unwrap().indices).collect();
        assert_eq!(got, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn corrupt_files_are_skipped_reported_once_and_counted() {
        let dir = TempDir::new("loader_bad");
        let ds = folder(dir.path(), 6, 2);
        assert_eq!(ds.len(), 8);
        let loader = Loader::new(ds, Transform::train(8, (0.5, 1.0)), LoaderConfig::train(4, 2, 3)).unwrap();
        let mut reported = Vec::new();
        let mut images = 0;
        for b in loader.stream(0, Some(4)) {
            let b = b.unwrap();
            images += b.labels.len();
            reported.extend(b.newly_skipped.into_iter().map(|(n, _)| n));
        }
        // Two epochs of 8 slots: the two corrupt files are met twice each (more if a refill draws
        // them), reported once each; their rows are refilled, so every batch is full.
        assert_eq!(images, 16);
        assert!(loader.skips().count() >= 4);
        reported.sort();
        assert_eq!(reported.len(), 2);
        assert!(reported[0].ends_with("zz_corrupt0.jpg") && reported[1].ends_with("zz_corrupt1.jpg"));
        assert!(loader.skips().distinct()[0].1.contains("cannot decode"));
    }

    /// `--batch-size 2` on readable images plus a zero-byte `.jpg`: every training batch is
    /// refilled to 2 readable images, the same ones whatever the worker count or resume point.
    #[test]
    fn training_batches_are_refilled_deterministically() {
        let dir = TempDir::new("loader_refill");
        folder(dir.path(), 5, 0);
        std::fs::write(dir.path().join("empty.jpg"), b"").unwrap();
        let ds = Arc::new(Dataset::open(dir.path().to_str().unwrap()).unwrap());
        assert_eq!(ds.len(), 6);
        let mk = |workers| Loader::new(ds.clone(), Transform::eval(8), LoaderConfig::train(2, workers, 5)).unwrap();
        let one = collect(&mk(1), 0, 30);
        assert!(one.iter().all(|(idx, _)| idx.len() == 2), "a batch was short");
        assert_eq!(collect(&mk(3), 0, 30), one);
        assert_eq!(collect(&mk(2), 17, 30), one[17..]);
        // Evaluation batches are not refilled: the unreadable image is left out.
        let eval = Loader::new(ds.clone(), Transform::eval(8), LoaderConfig::eval(6, 1)).unwrap();
        let rows: usize = eval.epoch(0).map(|b| b.unwrap().labels.len()).sum();
        assert_eq!(rows, 5);
    }

    #[test]
    fn all_unreadable_is_an_error_not_a_hang_and_empty_is_refused() {
        let dir = TempDir::new("loader_allbad");
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("bad{i}.png")), b"nope").unwrap();
        }
        let ds = Arc::new(Dataset::open(dir.path().to_str().unwrap()).unwrap());
        let loader = Loader::new(ds, Transform::eval(8), LoaderConfig::train(2, 1, 0)).unwrap();
        let first = loader.stream(0, None).next().unwrap();
        let e = first.unwrap_err().to_string();
        assert!(e.contains("no readable image") && e.contains("bad"), "{e}");

        let empty = Arc::new(Dataset { kind: DatasetKind::Flat, origin: "x".into(), samples: vec![], classes: vec![] });
        assert!(Loader::new(empty, Transform::eval(8), LoaderConfig::eval(2, 1)).is_err());
        let one = Arc::new(Dataset {
            kind: DatasetKind::Flat,
            origin: "x".into(),
            samples: vec![Sample { source: SampleSource::File("/nonexistent/a.png".into()), label: 0 }],
            classes: vec![],
        });
        assert!(Loader::new(one, Transform::eval(8), LoaderConfig::eval(0, 1)).is_err());
    }

    #[test]
    fn dropping_an_endless_stream_stops_the_workers() {
        let dir = TempDir::new("loader_drop");
        let ds = folder(dir.path(), 3, 0);
        let loader = Loader::new(ds, Transform::eval(8), LoaderConfig::train(2, 3, 0)).unwrap();
        let mut s = loader.stream(0, None);
        assert!(s.next().unwrap().is_ok());
        drop(s); // joins the workers; the test would hang if they kept running
    }
}
