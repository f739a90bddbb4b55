//! The metrics log: one JSON object per line (step, loss, lr, wd, images/s, grad norm), written
//! beside the checkpoints and flushed every line so a crash loses nothing.

use crate::error::{CliError, CliResult, Context};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    pub images_per_s: f64,
    pub grad_norm: f64,
    pub elapsed_s: f64,
}

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for a run. `keep_up_to = None` starts a new log (an existing one is
    /// replaced); `Some(s)` (a resume from step s) keeps the lines of steps < s byte for byte and
    /// drops the rest (steps the checkpoint does not hold, a line cut by a crash), so the log
    /// continues exactly where the checkpoint was taken. Kept lines are never re-serialised:
    /// the log of a resumed run is the first run's log plus new lines.
    pub fn open(path: &Path, keep_up_to: Option<usize>) -> CliResult<MetricsLog> {
        let file = match keep_up_to {
            None => std::fs::File::create(path).ctx(|| format!("cannot create {}", path.display()))?,
            Some(s) => open_kept(path, s)?,
        };
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    pub fn log(&mut self, r: &Record) -> CliResult<()> {
        let line = serde_json::to_string(r).ctx(|| "cannot serialise a metrics record".into())?;
        writeln!(self.file, "{line}").ctx(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush().ctx(|| format!("cannot write {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the log for appending after keeping its lines of steps < `step`: when they are a prefix
/// of the file (the usual case) the rest is cut off in place; otherwise (a malformed line among
/// them) the kept lines are written back atomically, unchanged.
fn open_kept(path: &Path, step: usize) -> CliResult<std::fs::File> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(CliError::runtime(format!("cannot read {}: {e}", path.display()))),
    };
    let (kept, is_prefix) = kept_lines(&text, step);
    if !is_prefix {
        crate::output::write_atomic(path, &kept)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ctx(|| format!("cannot open {}", path.display()))?;
    if is_prefix {
        file.set_len(kept.len() as u64).ctx(|| format!("cannot truncate {}", path.display()))?;
    }
    Ok(file)
}

/// The complete lines of `text` that parse as records of steps < `step`, as their original bytes,
/// and whether those bytes are a prefix of `text` (then truncating the file keeps exactly them).
fn kept_lines(text: &[u8], step: usize) -> (Vec<u8>, bool) {
    let keep = |l: &[u8]| l.ends_with(b"\n") && serde_json::from_slice::<Record>(l).is_ok_and(|r| r.step < step);
    let kept: Vec<u8> = text.split_inclusive(|&b| b == b'\n').filter(|l| keep(l)).flatten().copied().collect();
    let is_prefix = text.starts_with(&kept);
    (kept, is_prefix)
}

/// Reads a metrics log; malformed lines are ignored (a line cut by a crash).
pub fn read_records(path: &Path) -> CliResult<Vec<Record>> {
    let f = std::fs::File::open(path).ctx(|| format!("cannot open {}", path.display()))?;
    Ok(std::io::BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(step: usize, loss: f64) -> String {
        let r = Record { step, epoch: 0, loss, lr: 0.1, wd: 0.0, images_per_s: 1.0, grad_norm: 1.0, elapsed_s: 0.5 };
        format!("{}\n", serde_json::to_string(&r).unwrap())
    }

    #[test]
    fn resume_keeps_earlier_lines_byte_for_byte_and_appends() {
        let dir = std::env::temp_dir().join(format!("spark-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        // Hand-written numbers that a re-serialisation would spell differently.
        let first = "{\"step\":0,\"epoch\":0,\"loss\":1.00000000000000000001,\"lr\":1e-3,\"wd\":0.0,\
                     \"images_per_s\":1.0,\"grad_norm\":1.0,\"elapsed_s\":0.5}\n";
        let text = format!("{first}{}{}{{\"step\":3,\"cut", line(1, 0.9), line(2, 0.8));
        std::fs::write(&p, &text).unwrap();
        let mut log = MetricsLog::open(&p, Some(2)).unwrap();
        let kept = format!("{first}{}", line(1, 0.9));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), kept);
        log.log(&serde_json::from_str(line(2, 0.7).trim()).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{kept}{}", line(2, 0.7)));
        // A malformed line among the kept ones: dropped, the others kept unchanged.
        std::fs::write(&p, format!("{first}garbage\n{}{}", line(1, 0.9), line(5, 0.1))).unwrap();
        drop(MetricsLog::open(&p, Some(2)).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), kept);
        // No log yet: an empty one.
        std::fs::remove_file(&p).unwrap();
        drop(MetricsLog::open(&p, Some(2)).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
