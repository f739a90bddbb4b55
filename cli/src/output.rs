//! Never lose a user's work through output: terminal lines that cannot panic, files that are
//! never half-written, and outputs that never silently replace an input.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe (`spark info | head -1`) returns EPIPE,
//! which `outln!` / `errln!` turn into a panic (and, inside the panic hook, an abort). Every
//! line the commands print goes through `outln!` / `out!` / `errln!` instead: a line that cannot
//! be written is dropped and the work goes on (training continues and saves). `main.rs` denies
//! `clippy::print_stdout` / `print_stderr`, so a stray `outln!` does not come back.

/// `outln!` to stdout that drops the line when it cannot be written.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock());
    }};
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` to stdout that drops the text when it cannot be written.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `errln!` that drops the line when stderr cannot be written.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

use crate::error::{CliError, CliResult};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `<path>.tmp` beside `path` (the same folder, so the rename is atomic).
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through `<path>.tmp` (synced) and a rename: a crash leaves the old
/// file or the new one, never half of one; a failed write removes its `.tmp`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> CliResult<()> {
    let tmp = tmp_path(path);
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::runtime(format!("cannot write {}: {e}", path.display()))
    })
}

/// True when `a` and `b` name the same file (the same path, or on Unix the same inode, which
/// also catches symlinks, `./x` vs `x` and hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y),
        _ => false,
    }
}

/// A usage error when the output `out` (given as `out_flag`) is one of the inputs
/// (`spark export -c X -o X` would destroy X), naming the path.
pub fn ensure_not_input(out: &Path, out_flag: &str, inputs: &[(&str, &Path)]) -> CliResult<()> {
    for (flag, input) in inputs {
        if same_file(out, input) {
            return Err(CliError::usage(format!(
                "{out_flag} {} is also the {flag} input; writing it would destroy the input",
                out.display()
            ))
            .hint("choose another output path"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("spark-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.txt");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(!dir.join("a.txt.tmp").exists());
        // A rename onto a non-empty folder fails: the error names the path, no .tmp is left.
        std::fs::create_dir_all(dir.join("d/x")).unwrap();
        let e = write_atomic(&dir.join("d"), b"x").unwrap_err();
        assert!(e.msg.contains("cannot write") && e.msg.contains('d'), "{}", e.msg);
        assert!(!dir.join("d.tmp").exists());
        assert!(same_file(&f, &dir.join(".").join("a.txt")));
        assert!(!same_file(&f, &dir.join("b.txt")));
        let e = ensure_not_input(&f, "-o", &[("--checkpoint", &dir.join("./a.txt"))]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.msg.contains("a.txt") && e.msg.contains("--checkpoint"), "{}", e.msg);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
