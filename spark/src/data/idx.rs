//! IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte; the only type those datasets use),
//! the number of dimensions, each dimension as a big-endian u32, then the data in C order.

use flate2::read::GzDecoder;
use spark_engine::{Error, Result};
use std::io::Read;
use std::path::Path;

/// A u8 IDX array: `dims` (e.g. [60000, 28, 28] for images, [60000] for labels) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Parses IDX bytes (already decompressed). `what` names the source in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<IdxArray> {
        let bad = |m: String| Error::Msg(format!("IDX file {what}: {m}"));
        if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
            return Err(bad("not an IDX file (the first two bytes must be zero)".into()));
        }
        if bytes[2] != 0x08 {
            return Err(bad(format!(
                "element type 0x{:02x} is not supported (only 0x08 = unsigned byte, as MNIST uses)",
                bytes[2]
            )));
        }
        let nd = bytes[3] as usize;
        if nd == 0 || bytes.len() < 4 + 4 * nd {
            return Err(bad(format!("truncated header ({nd} dimensions)")));
        }
        let dims: Vec<usize> =
            (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
        let body = &bytes[4 + 4 * nd..];
        // A forged header's product can overflow; it cannot match the body then.
        let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if n != Some(body.len()) {
            let n = n.map_or("more than usize::MAX".to_string(), |n| n.to_string());
            return Err(bad(format!("header says {dims:?} = {n} bytes of data, the file has {}", body.len())));
        }
        Ok(IdxArray { dims, data: body.to_vec() })
    }
}

/// Reads an IDX file; gzip is detected from its magic bytes (so `.gz` naming is not required).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::Msg(format!("cannot read IDX file {}: {e}", path.display())))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Msg(format!("cannot gunzip IDX file {}: {e}", path.display())))?;
        out
    } else {
        raw
    };
    IdxArray::parse(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzip_idx() {
        let dir = TempDir::new("idx");
        let data: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8).collect();
        let bytes = idx_bytes(&[2, 3, 4], &data);
        std::fs::write(dir.path().join("a-idx3-ubyte"), &bytes).unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&bytes).unwrap();
        std::fs::write(dir.path().join("a-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
        for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
            let a = read_idx(&dir.path().join(name)).unwrap();
            assert_eq!(a.dims, vec![2, 3, 4]);
            assert_eq!(a.data, data);
        }
    }

    #[test]
    fn rejects_bad_headers_and_truncation() {
        let e = IdxArray::parse(&[1, 0, 8, 1, 0, 0, 0, 1, 5], "x").unwrap_err().to_string();
        assert!(e.contains("not an IDX"), "{e}");
        let e = IdxArray::parse(&[0, 0, 0x0D, 1, 0, 0, 0, 1, 5], "x").unwrap_err().to_string();
        assert!(e.contains("0x0d"), "{e}");
        let e = IdxArray::parse(&idx_bytes(&[3], &[1, 2]), "short.idx").unwrap_err().to_string();
        assert!(e.contains("short.idx") && e.contains("3 bytes"), "{e}");
        // A header whose dimensions multiply past usize::MAX is an error, not an overflow.
        let e = IdxArray::parse(&idx_bytes(&[u32::MAX; 5], &[1]), "huge.idx").unwrap_err().to_string();
        assert!(e.contains("huge.idx") && e.contains("more than"), "{e}");
    }
}
