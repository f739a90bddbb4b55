//! An exclusive advisory lock on a run folder, so that two runs with the same `--out` cannot
//! interleave their checkpoints and metrics. The lock is taken on `<folder>/.lock` with the
//! operating system's file lock (flock on Unix, LockFileEx on Windows): it is held while the
//! returned [`RunLock`] lives and released by the OS when the process exits, crashes or is killed,
//! so a stale lock file never blocks a later run.

use crate::error::{CliError, CliResult, Context};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock file inside a run folder. It is left in place on exit: deleting it would let a
/// third run lock a fresh file while a second still holds the old one.
pub const LOCK_FILE: &str = ".lock";

/// Holds the lock on a run folder until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Creates `dir` if needed and locks it exclusively for this process; fails at once (it never
/// waits) with an error naming the folder when another run holds it.
pub fn lock_run_folder(dir: &Path) -> CliResult<RunLock> {
    std::fs::create_dir_all(dir).ctx(|| format!("cannot create output folder {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(CliError::runtime(format!(
            "{} is in use by another run (it holds the lock {})",
            dir.display(),
            path.display()
        ))
        .hint("another `spark` process is writing to this folder: wait for it to finish, or pass another --out")),
        Err(TryLockError::Error(e)) => Err(CliError::runtime(format!("cannot lock {}: {e}", path.display()))
            .hint("the file system may not support file locks; pass an --out on a local disk")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_fails_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("spark-run-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = lock_run_folder(&dir).unwrap();
        assert!(dir.join(LOCK_FILE).exists());
        // A second open file description conflicts even within one process.
        let err = lock_run_folder(&dir).unwrap_err();
        assert!(err.msg.contains(&dir.display().to_string()) && err.msg.contains("in use"), "{}", err.msg);
        assert!(err.hint.as_deref().unwrap_or("").contains("another"), "{:?}", err.hint);
        drop(first);
        let again = lock_run_folder(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
