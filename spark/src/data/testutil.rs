//! Test helpers: a self-deleting temp dir and small hand-made files (a CMYK JPEG, IDX files).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("spark-data-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal baseline JPEG, 8x8 pixels, four components (Adobe APP14 transform 0 = CMYK), each
/// component one constant block with the given stored 8-bit value. DC-only coding: quantiser 8
/// for every coefficient, so the quantised DC equals `value - 128`.
pub fn cmyk_jpeg(values: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    // APP14 "Adobe": version 100, flags 0, 0, transform 0 (no YCC transform: plain CMYK).
    out.extend_from_slice(&[0xFF, 0xEE, 0, 14, b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0]);
    out.extend_from_slice(&[8u8; 64]);
    out.extend_from_slice(&[0xFF, 0xC0, 0, 20, 8, 0, 8, 0, 8, 4]);
    for id in 1..=4u8 {
        out.extend_from_slice(&[id, 0x11, 0]);
    }
    // DHT: DC table 0 with the twelve categories as 4-bit codes; AC table 0 with only EOB = "0".
    out.extend_from_slice(&[0xFF, 0xC4, 0, 49, 0x00]);
    let mut bits = [0u8; 16];
    bits[3] = 12;
    out.extend_from_slice(&bits);
    out.extend(0u8..12);
    out.push(0x10);
    let mut bits = [0u8; 16];
    bits[0] = 1;
    out.extend_from_slice(&bits);
    out.push(0);
    out.extend_from_slice(&[0xFF, 0xDA, 0, 14, 4]);
    for id in 1..=4u8 {
        out.extend_from_slice(&[id, 0x00]);
    }
    out.extend_from_slice(&[0, 63, 0]);
    // Entropy-coded data: per component, DC category (4 bits) + magnitude bits, then EOB "0".
    let mut bw = BitWriter::default();
    for &v in &values {
        let diff = v as i32 - 128;
        let cat = if diff == 0 { 0 } else { 32 - diff.unsigned_abs().leading_zeros() };
        bw.put(cat, 4);
        if cat > 0 {
            let mag = if diff >= 0 { diff as u32 } else { (diff + (1 << cat) - 1) as u32 };
            bw.put(mag, cat);
        }
        bw.put(0, 1);
    }
    out.extend(bw.finish());
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, v: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((v >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.emit();
            }
        }
    }
    fn emit(&mut self) {
        let b = self.acc as u8;
        self.bytes.push(b);
        if b == 0xFF {
            self.bytes.push(0); // byte stuffing
        }
        self.acc = 0;
        self.n = 0;
    }
    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1); // pad with ones
        }
        self.bytes
    }
}

/// An IDX file: magic (0, 0, type 0x08 = u8, ndim), big-endian dims, then the bytes.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
