//! safetensors save/load of a module's state (parameters, BN running stats and
//! num_batches_tracked as I64) with PyTorch's key names, so files move both ways between this
//! crate and torchvision / the official ConvNeXt code. Loading also accepts timm's newer
//! ConvNeXt names by remapping them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use spark_engine::{with_float, DType, Error, Result, Tensor};

use crate::module::{Kind, Module};

fn is_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

fn st_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Msg(format!("safetensors file {}: {what}", path.display()))
}

/// Little-endian bytes of `t` in its own dtype, or as I64 for BN counters.
fn tensor_bytes(name: &str, t: &Tensor) -> Result<(StDtype, Vec<u8>)> {
    if is_counter(name) {
        let v: Vec<u8> = t.to_vec_f64()?.iter().flat_map(|&x| (x.round() as i64).to_le_bytes()).collect();
        return Ok((StDtype::I64, v));
    }
    let t = t.contiguous()?;
    match t.dtype() {
        DType::F32 => Ok((StDtype::F32, t.to_vec::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect())),
        DType::F64 => Ok((StDtype::F64, t.to_vec::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect())),
        _ => {
            let v = t.to_dtype(DType::F32)?.to_vec::<f32>()?;
            Ok((StDtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        }
    }
}

/// Writes the module's `state_dict` to `path` (atomically: a temporary file, then rename; a
/// failure removes the temporary file).
pub fn save_safetensors(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut entries = Vec::new();
    for (name, t, _) in module.state_dict() {
        let (dt, bytes) = tensor_bytes(&name, &t)?;
        entries.push((name, dt, t.shape(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes).map(|v| (n.clone(), v)).map_err(|e| st_err(path, e))
        })
        .collect::<Result<_>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    let written = safetensors::serialize_to_file(views, &None, &tmp)
        .map_err(|e| st_err(path, e))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| st_err(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A key whose stored shape does not fit the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

/// What a load did (PyTorch's `load_state_dict` result, plus shape mismatches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// Module keys absent from the file.
    pub missing: Vec<String>,
    /// File keys (after remapping) that the module does not have.
    pub unexpected: Vec<String>,
    pub mismatched: Vec<ShapeMismatch>,
    /// File keys that were renamed (timm → official), as (file key, module key).
    pub remapped: Vec<(String, String)>,
    /// Known-deprecated file keys ([`DEPRECATED_KEYS`]) the module does not have: skipped, and
    /// not counted as unexpected even by a strict load.
    pub deprecated: Vec<String>,
}

/// File keys that official checkpoints carry but no model uses: the official SparK model's
/// buffers `imn_m` / `imn_s` (ImageNet mean and std) and `norm_black` (a normalised black image),
/// which its code marks deprecated. A load skips them (listing them in
/// [`LoadReport::deprecated`]) when the module has no such key, so an official SparK state dict
/// loads strictly, every other key still checked.
pub const DEPRECATED_KEYS: &[&str] = &["imn_m", "imn_s", "norm_black"];

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
    fn describe(&self) -> String {
        let mut s = Vec::new();
        if !self.missing.is_empty() {
            s.push(format!("missing keys: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            s.push(format!("unexpected keys: {}", self.unexpected.join(", ")));
        }
        for m in &self.mismatched {
            s.push(format!("size mismatch for {}: module {:?}, file {:?}", m.name, m.expected, m.found));
        }
        s.join("; ")
    }
}

/// timm's newer ConvNeXt key → the official name (None when `k` is not a timm ConvNeXt key).
pub fn timm_convnext_key(k: &str) -> Option<String> {
    if let Some(r) = k.strip_prefix("stem.") {
        return Some(format!("downsample_layers.0.{r}"));
    }
    if let Some(r) = k.strip_prefix("head.norm.") {
        return Some(format!("norm.{r}"));
    }
    if let Some(r) = k.strip_prefix("head.fc.") {
        return Some(format!("head.{r}"));
    }
    let rest = k.strip_prefix("stages.")?;
    let (s, rest) = rest.split_once('.')?;
    s.parse::<usize>().ok()?;
    if let Some(r) = rest.strip_prefix("downsample.") {
        return Some(format!("downsample_layers.{s}.{r}"));
    }
    let rest = rest.strip_prefix("blocks.")?;
    let (b, r) = rest.split_once('.')?;
    b.parse::<usize>().ok()?;
    let r = if let Some(t) = r.strip_prefix("conv_dw.") {
        format!("dwconv.{t}")
    } else if let Some(t) = r.strip_prefix("mlp.fc1.") {
        format!("pwconv1.{t}")
    } else if let Some(t) = r.strip_prefix("mlp.fc2.") {
        format!("pwconv2.{t}")
    } else if r == "mlp.grn.weight" {
        "grn.gamma".to_string()
    } else if r == "mlp.grn.bias" {
        "grn.beta".to_string()
    } else {
        r.to_string() // norm.*, gamma
    };
    Some(format!("stages.{s}.{b}.{r}"))
}

/// Same elements up to leading/trailing 1-sized dims (timm GRN `[C]` vs official `[1,1,1,C]`).
fn same_squeezed(a: &[usize], b: &[usize]) -> bool {
    let sq = |v: &[usize]| v.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    sq(a) == sq(b) && a.iter().product::<usize>() == b.iter().product::<usize>()
}

fn view_to_f64(name: &str, v: &TensorView<'_>, path: &Path) -> Result<Vec<f64>> {
    let d = v.data();
    let conv = |sz: usize, f: &dyn Fn(&[u8]) -> f64| -> Vec<f64> { d.chunks_exact(sz).map(f).collect() };
    let out = match v.dtype() {
        StDtype::F32 => conv(4, &|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f64),
        StDtype::F64 => conv(8, &|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
        StDtype::F16 => conv(2, &|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()),
        StDtype::BF16 => conv(2, &|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()),
        StDtype::I64 => conv(8, &|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64),
        StDtype::I32 => conv(4, &|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f64),
        dt => return Err(st_err(path, format!("tensor {name}: unsupported dtype {dt:?}"))),
    };
    Ok(out)
}

/// Loads `path` into `module` in place. `strict`: any missing, unexpected or mis-shaped key is
/// an error naming them (nothing is written then). Non-strict: loads what fits and reports the
/// rest. Either way, known-deprecated keys the module lacks ([`DEPRECATED_KEYS`]) are skipped
/// and listed in [`LoadReport::deprecated`]. A truncated or corrupt file is an error naming the
/// file.
pub fn load_safetensors(module: &dyn Module, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| st_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| st_err(path, format!("corrupt or truncated ({e})")))?;
    let mut targets: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut order = Vec::new();
    module.visit("", &mut |n, t, _k: Kind| {
        targets.insert(n.to_string(), t.clone());
        order.push(n.to_string());
    });
    let mut report = LoadReport::default();
    let mut found: HashMap<String, (String, TensorView<'_>)> = HashMap::new();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    for file_key in names {
        let view = st.tensor(&file_key).map_err(|e| st_err(path, e))?;
        let key = if targets.contains_key(&file_key) {
            file_key.clone()
        } else if DEPRECATED_KEYS.contains(&file_key.as_str()) {
            report.deprecated.push(file_key);
            continue;
        } else {
            match timm_convnext_key(&file_key) {
                Some(k) if targets.contains_key(&k) => {
                    report.remapped.push((file_key.clone(), k.clone()));
                    k
                }
                _ => {
                    report.unexpected.push(file_key.clone());
                    continue;
                }
            }
        };
        let t = &targets[&key];
        if !same_squeezed(t.dims(), view.shape()) {
            report.mismatched.push(ShapeMismatch { name: key, expected: t.shape(), found: view.shape().to_vec() });
            continue;
        }
        found.insert(key, (file_key, view));
    }
    report.missing = order.iter().filter(|n| !found.contains_key(*n)).cloned().collect();
    report.missing.retain(|n| !report.mismatched.iter().any(|m| &m.name == n));
    if strict && !report.is_clean() {
        return Err(st_err(path, format!("does not match the module ({})", report.describe())));
    }
    for name in &order {
        let Some((file_key, view)) = found.get(name) else { continue };
        let vals = view_to_f64(file_key, view, path)?;
        let t = &targets[name];
        with_float!(t.dtype(), "load_safetensors", |T| {
            t.update::<T>(|d| d.iter_mut().zip(&vals).for_each(|(o, &v)| *o = <T>::from_f64(v)))
        })
        .map_err(|e| st_err(path, format!("tensor {name}: {e}")))?;
        report.loaded.push(name.clone());
    }
    Ok(report)
}
