//! Datasets: a list of samples (where the pixels come from + a label) and the class names.
//! Listing happens up front so an empty or missing dataset is an error before training starts;
//! decoding happens later, on the loader's worker threads.

use super::idx::{read_idx, IdxArray};
use super::image_io::{decode_image, load_image, IMAGE_EXTENSIONS};
use image::{Rgb, RgbImage};
use spark_engine::{Error, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one sample's pixels come from.
#[derive(Debug, Clone)]
pub enum SampleSource {
    /// An image file, decoded when loaded.
    File(PathBuf),
    /// Encoded bytes kept in memory (e.g. compiled into the binary).
    Encoded { name: String, bytes: &'static [u8] },
    /// A decoded image, optionally a sub-rectangle (x, y, w, h) of it, optionally mirrored.
    Pixels { name: String, image: Arc<RgbImage>, rect: Option<(u32, u32, u32, u32)>, flip: bool },
    /// Image `index` of an IDX array [N, H, W] (greyscale, replicated to RGB).
    Idx { images: Arc<IdxArray>, index: usize },
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub source: SampleSource,
    /// Class index; 0 for unlabelled datasets.
    pub label: usize,
}

impl Sample {
    /// A human-readable name for logs and errors (the path for files).
    pub fn name(&self) -> String {
        match &self.source {
            SampleSource::File(p) => p.display().to_string(),
            SampleSource::Encoded { name, .. } => name.clone(),
            SampleSource::Pixels { name, .. } => name.clone(),
            SampleSource::Idx { index, .. } => format!("idx image #{index}"),
        }
    }

    /// Decodes the sample into RGB8.
    pub fn load(&self) -> Result<RgbImage> {
        match &self.source {
            SampleSource::File(p) => load_image(p),
            SampleSource::Encoded { name, bytes } => decode_image(bytes, name),
            SampleSource::Pixels { image, rect, flip, .. } => {
                let mut img = match rect {
                    Some((x, y, w, h)) => image::imageops::crop_imm(image.as_ref(), *x, *y, *w, *h).to_image(),
                    None => image.as_ref().clone(),
                };
                if *flip {
                    image::imageops::flip_horizontal_in_place(&mut img);
                }
                Ok(img)
            }
            SampleSource::Idx { images, index } => {
                let (h, w) = (images.dims[1], images.dims[2]);
                let px = &images.data[index * h * w..(index + 1) * h * w];
                Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| Rgb([px[y as usize * w + x as usize]; 3])))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// root/class_x/*.jpg (ImageNet layout), classes sorted by name.
    ClassFolders,
    /// A flat folder of images, no labels.
    Flat,
    /// IDX image file (+ label file when found).
    Idx,
    /// The photographs compiled into the binary plus generated crops.
    Builtin,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    /// What was opened (a path, or "builtin").
    pub origin: String,
    pub samples: Vec<Sample>,
    /// Class names in label order; empty for unlabelled data.
    pub classes: Vec<String>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

fn hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).map(|n| n.starts_with('.')).unwrap_or(false)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Msg(format!("cannot list folder {}: {e}", dir.display())))?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| !hidden(p)).collect();
    v.sort();
    Ok(v)
}

/// A listing of image folders that follows symbolic links but enters each folder once: a link
/// back to the folder itself or to one of its ancestors (`self -> .`, `up -> ..`) would loop
/// forever, and a second link to a folder or file already listed would count its images twice.
/// Both are skipped and counted. Identity is the canonical path.
struct Walk {
    root: PathBuf,
    dirs: HashSet<PathBuf>,
    /// Canonical targets of the image links listed so far.
    link_targets: HashSet<PathBuf>,
    skipped: usize,
}

impl Walk {
    fn new(root: &Path) -> Walk {
        let root = canonical(root);
        Walk { dirs: HashSet::from([root.clone()]), root, link_targets: HashSet::new(), skipped: 0 }
    }

    /// True when `dir` is new: not listed yet and not the root or one of its ancestors.
    fn enter(&mut self, dir: &Path) -> bool {
        let c = canonical(dir);
        let new = !self.root.starts_with(&c) && self.dirs.insert(c);
        self.skipped += usize::from(!new);
        new
    }

    /// False for a second link to one image. Plain files need no check here: each folder is
    /// entered once, so they are unique among themselves (see [`Walk::drop_linked_duplicates`]).
    fn keep_file(&mut self, p: &Path) -> bool {
        if !is_link(p) {
            return true;
        }
        let new = self.link_targets.insert(canonical(p));
        self.skipped += usize::from(!new);
        new
    }

    /// All image files under `dir`, recursively, sorted (as torchvision's ImageFolder does per
    /// class).
    fn images_under(&mut self, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for p in read_dir_sorted(dir)? {
            if p.is_dir() {
                if self.enter(&p) {
                    self.images_under(&p, out)?;
                }
            } else if is_image(&p) && self.keep_file(&p) {
                out.push(p);
            }
        }
        Ok(())
    }

    /// Drops the samples listed through a link to an image that is also listed as a plain file
    /// (the plain one stays). Resolves every path only when some image link was listed, so the
    /// usual listing keeps no set of all its files.
    fn drop_linked_duplicates(&mut self, samples: &mut Vec<Sample>) {
        if self.link_targets.is_empty() {
            return;
        }
        let path = |s: &Sample| match &s.source {
            SampleSource::File(p) => Some(p.clone()),
            _ => None,
        };
        let plain: HashSet<PathBuf> =
            samples.iter().filter_map(path).filter(|p| !is_link(p)).map(|p| canonical(&p)).collect();
        let before = samples.len();
        samples.retain(|s| path(s).is_none_or(|p| !is_link(&p) || !plain.contains(&canonical(&p))));
        self.skipped += before - samples.len();
    }
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// The canonical path, or the path itself when it cannot be resolved (it is then listed as is and
/// any error surfaces when it is read).
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

fn is_idx_images(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).map(|n| n.contains("idx3-ubyte")).unwrap_or(false)
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    pub fn is_labelled(&self) -> bool {
        !self.classes.is_empty()
    }
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// One line for logs: "image folders data/pets: 1,200 images, 37 classes".
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            DatasetKind::ClassFolders => "image folders",
            DatasetKind::Flat => "flat image folder",
            DatasetKind::Idx => "IDX file",
            DatasetKind::Builtin => "built-in photos",
        };
        let classes = if self.is_labelled() { format!(", {} classes", self.classes.len()) } else { String::new() };
        format!("{kind} {}: {} images{classes}", self.origin, self.len())
    }

    /// The line telling the user about the links a listing skipped (from
    /// [`Dataset::open_counting`]), if it skipped any.
    pub fn skipped_links_note(&self, skipped: usize) -> Option<String> {
        (skipped > 0).then(|| {
            format!(
                "{}: skipped {skipped} symbolic link(s) that loop back to a parent folder or lead to a folder or \
                 image already listed",
                self.origin
            )
        })
    }

    /// Opens a dataset from a spec: `builtin`, `builtin:val`, a folder (class sub-folders or a
    /// flat folder of images, or a folder holding `*idx3-ubyte[.gz]` files) or an IDX image file.
    pub fn open(spec: &str) -> Result<Dataset> {
        Ok(Self::open_counting(spec)?.0)
    }

    /// [`Dataset::open`], plus the number of symbolic links that the folder listing skipped
    /// because they loop back (`self -> .`, `up -> ..`) or lead to a folder or image already
    /// listed; see [`Dataset::skipped_links_note`] for the line to show the user.
    pub fn open_counting(spec: &str) -> Result<(Dataset, usize)> {
        match spec {
            "builtin" | "builtin:train" => {
                return Ok((super::builtin::builtin_dataset(super::BuiltinSplit::Train)?, 0))
            }
            "builtin:val" => return Ok((super::builtin::builtin_dataset(super::BuiltinSplit::Val)?, 0)),
            _ => {}
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(Error::Msg(format!(
                "dataset {spec} does not exist (expected a folder of images, class sub-folders, an IDX file, or `builtin`)"
            )));
        }
        let (ds, skipped) = if path.is_file() {
            if !is_idx_images(path) {
                return Err(Error::Msg(format!(
                    "dataset {spec} is a file but not an IDX image file (*idx3-ubyte or *idx3-ubyte.gz); pass a folder for images"
                )));
            }
            (Self::open_idx(path)?, 0)
        } else {
            Self::open_folder(path)?
        };
        if ds.is_empty() {
            return Err(Error::Msg(format!(
                "dataset {spec} contains no images (looked for {} files in it and in its sub-folders)",
                IMAGE_EXTENSIONS.join("/")
            )));
        }
        Ok((ds, skipped))
    }

    /// The dataset and the number of links skipped (see [`Walk`]).
    fn open_folder(root: &Path) -> Result<(Dataset, usize)> {
        let entries = read_dir_sorted(root)?;
        let origin = root.display().to_string();
        // A folder of IDX files: use the training images (or the only images file there is).
        let idx: Vec<&PathBuf> = entries.iter().filter(|p| p.is_file() && is_idx_images(p)).collect();
        if !idx.is_empty() {
            let pick = idx
                .iter()
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("train")))
                .unwrap_or(&idx[0]);
            return Ok((Self::open_idx(pick)?, 0));
        }
        let mut walk = Walk::new(root);
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        for dir in entries.iter().filter(|p| p.is_dir()) {
            if !walk.enter(dir) {
                continue;
            }
            let mut files = Vec::new();
            walk.images_under(dir, &mut files)?;
            if files.is_empty() {
                continue; // torchvision errors here; an empty class would just be an untrainable label
            }
            let label = classes.len();
            classes.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
            samples.extend(files.into_iter().map(|p| Sample { source: SampleSource::File(p), label }));
        }
        if !classes.is_empty() {
            walk.drop_linked_duplicates(&mut samples);
            return Ok((Dataset { kind: DatasetKind::ClassFolders, origin, samples, classes }, walk.skipped));
        }
        let mut samples: Vec<Sample> = entries
            .into_iter()
            .filter(|p| p.is_file() && is_image(p) && walk.keep_file(p))
            .map(|p| Sample { source: SampleSource::File(p), label: 0 })
            .collect();
        walk.drop_linked_duplicates(&mut samples);
        Ok((Dataset { kind: DatasetKind::Flat, origin, samples, classes: Vec::new() }, walk.skipped))
    }

    /// An IDX image file [N, H, W]; labels come from the sibling file with `labels-idx1-ubyte` in
    /// place of `images-idx3-ubyte` (the MNIST naming) when it exists.
    fn open_idx(path: &Path) -> Result<Dataset> {
        let images = read_idx(path)?;
        if images.dims.len() != 3 {
            return Err(Error::Msg(format!(
                "IDX file {}: expected images of shape [N, H, W], found {:?}",
                path.display(),
                images.dims
            )));
        }
        let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::Msg(format!(
                "IDX file {} holds {n} images of {h}x{w} pixels: nothing to train on (pass an IDX file with images)",
                path.display()
            )));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let label_path = path.with_file_name(name.replace("images-idx3-ubyte", "labels-idx1-ubyte"));
        let (labels, classes) = if label_path != path && label_path.exists() {
            let l = read_idx(&label_path)?;
            if l.dims != [n] {
                return Err(Error::Msg(format!(
                    "IDX labels {} have shape {:?}, the images file has {n} images",
                    label_path.display(),
                    l.dims
                )));
            }
            let k = l.data.iter().copied().max().unwrap_or(0) as usize + 1;
            (l.data.iter().map(|&v| v as usize).collect(), (0..k).map(|c| c.to_string()).collect())
        } else {
            (vec![0; n], Vec::new())
        };
        let images = Arc::new(images);
        let samples = (0..n)
            .map(|index| Sample { source: SampleSource::Idx { images: images.clone(), index }, label: labels[index] })
            .collect();
        Ok(Dataset { kind: DatasetKind::Idx, origin: path.display().to_string(), samples, classes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;
    use image::{ImageBuffer, Luma};

    fn write_png(p: &Path, v: u8) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        RgbImage::from_fn(6, 5, |_, _| Rgb([v, v, v])).save(p).unwrap();
    }

    #[test]
    fn class_folders_are_sorted_and_labelled() {
        let dir = TempDir::new("ds_classes");
        write_png(&dir.path().join("zebra/b.png"), 1);
        write_png(&dir.path().join("zebra/a.png"), 2);
        write_png(&dir.path().join("ant/x.png"), 3);
        write_png(&dir.path().join("ant/nested/y.png"), 4);
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("ant/notes.txt"), "not an image").unwrap();
        let ds = Dataset::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(ds.kind, DatasetKind::ClassFolders);
        assert_eq!(ds.classes, vec!["ant", "zebra"]);
        let got: Vec<(String, usize)> =
            ds.samples.iter().map(|s| (s.name().rsplit('/').next().unwrap().to_string(), s.label)).collect();
        assert_eq!(got, vec![("y.png".into(), 0), ("x.png".into(), 0), ("a.png".into(), 1), ("b.png".into(), 1)]);
        assert_eq!(ds.samples[2].load().unwrap().get_pixel(0, 0).0, [2, 2, 2]);
        assert!(ds.describe().contains("4 images, 2 classes"));
    }

    #[test]
    fn flat_folder_is_unlabelled() {
        let dir = TempDir::new("ds_flat");
        write_png(&dir.path().join("1.png"), 1);
        ImageBuffer::from_fn(4, 4, |_, _| Luma([9u8])).save(dir.path().join("2.JPG")).unwrap();
        let ds = Dataset::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(ds.kind, DatasetKind::Flat);
        assert_eq!(ds.len(), 2);
        assert!(!ds.is_labelled());
    }

    #[test]
    fn missing_empty_and_wrong_file_are_clear_errors() {
        let dir = TempDir::new("ds_err");
        let missing = dir.path().join("nothing-here");
        let e = Dataset::open(missing.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("nothing-here"), "{e}");
        let e = Dataset::open(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("contains no images"), "{e}");
        std::fs::write(dir.path().join("x.csv"), "a,b").unwrap();
        let e = Dataset::open(dir.path().join("x.csv").to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("not an IDX"), "{e}");
    }

    #[test]
    fn idx_images_with_sibling_labels() {
        let dir = TempDir::new("ds_idx");
        let px: Vec<u8> = (0..3 * 2 * 2).map(|v| (v * 10) as u8).collect();
        std::fs::write(dir.path().join("train-images-idx3-ubyte"), idx_bytes(&[3, 2, 2], &px)).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[3], &[2, 0, 1])).unwrap();
        // Opening the folder picks the training images file.
        let ds = Dataset::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(ds.kind, DatasetKind::Idx);
        assert_eq!(ds.classes, vec!["0", "1", "2"]);
        assert_eq!(ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(), vec![2, 0, 1]);
        let img = ds.samples[1].load().unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert_eq!(img.get_pixel(1, 0).0, [50, 50, 50]); // image 1 = bytes 40..44; (x=1, y=0) = 50
                                                         // A label count that disagrees with the images is an error naming the file.
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[2], &[0, 1])).unwrap();
        let e = Dataset::open(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
    }

    /// IDX files with no images, or images of 0 pixels, are refused with an error naming the file.
    #[test]
    fn idx_without_images_or_pixels_is_refused() {
        let dir = TempDir::new("ds_idx_empty");
        for (name, dims) in
            [("none-idx3-ubyte", [0, 28, 28]), ("zero-idx3-ubyte", [5, 0, 0]), ("thin-idx3-ubyte", [2, 3, 0])]
        {
            let p = dir.path().join(name);
            std::fs::write(&p, idx_bytes(&dims, &[])).unwrap();
            let e = Dataset::open(p.to_str().unwrap()).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("nothing to train on"), "{e}");
        }
    }

    /// `self -> .` and `up -> ..` inside a data folder, and a second link to a class folder or an
    /// image, are skipped and counted instead of looping or counting images twice.
    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_duplicates_are_skipped_and_counted() {
        use std::os::unix::fs::symlink;
        let dir = TempDir::new("ds_links");
        let root = dir.path().join("data");
        write_png(&root.join("cat/a.png"), 1);
        write_png(&root.join("cat/b.png"), 2);
        write_png(&root.join("dog/c.png"), 3);
        symlink(".", root.join("self")).unwrap();
        symlink("..", root.join("cat/up")).unwrap();
        symlink("..", root.join("dog/up")).unwrap();
        symlink("../cat", root.join("dog/cats")).unwrap(); // the cat folder again
        symlink("a.png", root.join("cat/a-again.png")).unwrap(); // one image twice
        let (ds, skipped) = Dataset::open_counting(root.to_str().unwrap()).unwrap();
        assert_eq!(ds.classes, vec!["cat", "dog"]);
        let names: Vec<String> = ds.samples.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].ends_with("cat/a.png") && !names.iter().any(|n| n.contains("again")), "{names:?}");
        // self, cat/up, dog/up, dog/cats and cat/a-again.png.
        assert_eq!(skipped, 5);
        let note = ds.skipped_links_note(skipped).unwrap();
        assert!(note.contains("data") && note.contains("skipped 5 symbolic link"), "{note}");
        assert_eq!(ds.skipped_links_note(0), None);
        // A flat folder with a loop and a duplicate link.
        let flat = dir.path().join("flat");
        write_png(&flat.join("x.png"), 4);
        symlink(".", flat.join("self")).unwrap();
        symlink("..", flat.join("up")).unwrap();
        symlink("x.png", flat.join("y.png")).unwrap();
        let (ds, skipped) = Dataset::open_counting(flat.to_str().unwrap()).unwrap();
        assert_eq!((ds.kind, ds.len(), skipped), (DatasetKind::Flat, 1, 3));
    }
}
