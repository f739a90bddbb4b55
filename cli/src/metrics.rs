//! The metrics log: one JSON object per line (step, loss, lr, wd, images/s, grad norm), written
//! beside the checkpoints and flushed every line so a crash loses nothing.

use crate::error::{CliResult, Context};
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
    /// Opens `path` for appending. With `keep_up_to = Some(s)` (a resume from step s), lines of
    /// steps >= s are dropped first so the log continues exactly where the checkpoint was taken.
    pub fn open(path: &Path, keep_up_to: Option<usize>) -> CliResult<MetricsLog> {
        let mut kept = Vec::new();
        if let Some(s) = keep_up_to {
            for r in read_records(path).unwrap_or_default() {
                if r.step < s {
                    kept.push(r);
                }
            }
        }
        let mut file = std::fs::File::create(path).ctx(|| format!("cannot create {}", path.display()))?;
        for r in &kept {
            writeln!(file, "{}", serde_json::to_string(r).unwrap_or_default())
                .ctx(|| format!("cannot write {}", path.display()))?;
        }
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

/// Reads a metrics log; malformed lines are ignored (a line cut by a crash).
pub fn read_records(path: &Path) -> CliResult<Vec<Record>> {
    let f = std::fs::File::open(path).ctx(|| format!("cannot open {}", path.display()))?;
    Ok(std::io::BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect())
}
