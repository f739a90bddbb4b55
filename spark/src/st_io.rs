//! Reading and writing named tensors as safetensors (atomic write: temp file + rename).

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use spark_engine::{DType, Error, Result, Tensor};
use std::collections::HashMap;
use std::path::Path;

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}: {what}: {e}", path.display()))
}

/// Writes `tensors` (f32 / f64; stored in their own dtype) with string `metadata` to `path`
/// through `path.tmp` and a rename, so a crash never leaves a half-written file; a failed write
/// or rename removes the `.tmp` (a full disk does not stay full).
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (dt, bytes) = match t.dtype() {
            DType::F32 => (Dtype::F32, t.to_vec::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::F64 => (Dtype::F64, t.to_vec::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect()),
            d => return Err(Error::UnsupportedDType { op: "safetensors save", dtype: d }),
        };
        bufs.push((name.clone(), dt, t.dims().to_vec(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, dt, s, b)| TensorView::new(*dt, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| io_err(path, "tensor view", e))?;
    let bytes = safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| io_err(path, "serialize", e))?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", e))?;
        }
    }
    let tmp = path.with_extension("safetensors.tmp");
    let written = std::fs::write(&tmp, &bytes)
        .map_err(|e| io_err(&tmp, "write", e))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| io_err(path, "rename into place", e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Named tensors (sorted by name) and metadata of a safetensors file. f32/f64 keep their dtype;
/// integer and bf16/f16 tensors are converted to f32.
pub fn load(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, "read", e))?;
    // The safetensors crate's own errors ("MetadataIncompleteBuffer") mean nothing to a user.
    let damaged = |_| {
        Error::Msg(format!(
            "{}: the file is truncated or not a safetensors checkpoint ({} bytes)",
            path.display(),
            bytes.len()
        ))
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(damaged)?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(damaged)?;
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let shape = v.shape().to_vec();
        let d = v.data();
        let t = match v.dtype() {
            Dtype::F32 => Tensor::from_vec(
                d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                &shape,
            )?,
            Dtype::F64 => Tensor::from_vec(
                d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                &shape,
            )?,
            Dtype::U8 => Tensor::from_vec(d.iter().map(|&x| x as f32).collect(), &shape)?,
            Dtype::I64 => Tensor::from_vec(
                d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                &shape,
            )?,
            other => return Err(io_err(path, &format!("tensor `{name}`"), format!("unsupported dtype {other:?}"))),
        };
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        // The target is a non-empty folder: the write succeeds, the rename into place fails.
        let dir = std::env::temp_dir().join(format!("spark_st_io_{}", std::process::id()));
        let target = dir.join("out.safetensors");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let e = save(&target, &[("w".into(), t)], HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("rename into place"), "{e}");
        assert!(!target.with_extension("safetensors.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
