//! Golden vectors from PyTorch (tests/data/golden, see its README): SparK's masked conv
//! (stride 1 and 2), sparse BatchNorm and sparse LayerNorm, computed by our sparse ops from the
//! same inputs and the same patch mask.

mod common;

use common::assert_rel;
use safetensors::{Dtype, SafeTensors};
use spark_engine::{Conv2dParams, DType, Tensor};
use spark_sparse::{sparse_batch_norm, sparse_conv2d, sparse_layer_norm, SparseContext, SparseTensor};

struct Golden(Vec<u8>);

impl Golden {
    fn open(name: &str) -> Golden {
        let path = format!("{}/../tests/data/golden/{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
        Golden(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.0).unwrap()
    }
    fn f32(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = match t.dtype() {
            Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        (v, t.shape().to_vec())
    }
    fn tensor(&self, name: &str) -> Tensor {
        let (v, s) = self.f32(name);
        Tensor::from_vec(v, &s).unwrap().to_dtype(DType::F32).unwrap()
    }
    /// The `[N, 1, 2, 2]` u8 patch mask as bools.
    fn active(&self) -> Vec<bool> {
        let st = self.st();
        let t = st.tensor("active").unwrap();
        assert_eq!(t.shape(), [2, 1, 2, 2]);
        t.data().iter().map(|&b| b != 0).collect()
    }
}

fn vec(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Only the active pixels of a dense NCHW vector (`mask` is `[B, H*W]` flattened).
fn at_active(v: &[f64], mask: &[bool], c: usize, hw: usize) -> Vec<f64> {
    v.iter().enumerate().filter(|(i, _)| mask[(i / (c * hw)) * hw + i % hw]).map(|(_, &x)| x).collect()
}

fn check_conv(name: &str, stride: usize, in_hw: usize) {
    let g = Golden::open(name);
    let mut ctx = SparseContext::hierarchical(&g.active(), 2, 2, 2).unwrap();
    let set = ctx.active_set(2, in_hw, in_hw).unwrap();
    let input = g.tensor("input").to_variable();
    let x = SparseTensor::from_dense(&input, set.clone()).unwrap();
    let w = g.tensor("weight").to_variable();
    let b = g.tensor("bias").to_variable();
    let y = sparse_conv2d(&x, &w, Some(&b), Conv2dParams::new(stride, 1), &mut ctx).unwrap();
    let dense = y.to_dense().unwrap();
    assert_rel(&format!("{name} output_masked"), &vec(&dense), &g.f32("output_masked").0, 2e-5);
    let grads = dense.mul(&g.tensor("grad_out")).unwrap().sum_all().unwrap().backward().unwrap();
    // sp_grad_input is also non-zero in a 1-pixel halo of INACTIVE pixels around each active
    // block (the dense conv reads them); a sparse tensor carries no rows there, and upstream
    // those pixels are zeros produced by a masked layer, so we compare at active pixels only.
    let mask = set.mask();
    let hw = in_hw * in_hw;
    let gi = vec(grads.get(&input).unwrap());
    let want = g.f32("sp_grad_input").0;
    assert_rel(&format!("{name} sp_grad_input"), &at_active(&gi, &mask, 8, hw), &at_active(&want, &mask, 8, hw), 2e-5);
    assert_rel(&format!("{name} sp_grad_weight"), &vec(grads.get(&w).unwrap()), &g.f32("sp_grad_weight_f64").0, 2e-5);
    assert_rel(&format!("{name} sp_grad_bias"), &vec(grads.get(&b).unwrap()), &g.f32("sp_grad_bias_f64").0, 2e-5);
}

#[test]
fn golden_conv3x3_s1_masked() {
    check_conv("conv3x3_s1_masked", 1, 64);
}

#[test]
fn golden_conv3x3_s2_masked() {
    check_conv("conv3x3_s2_masked", 2, 32);
}

#[test]
fn golden_batchnorm_sparse() {
    let g = Golden::open("batchnorm_sparse");
    let mut ctx = SparseContext::hierarchical(&g.active(), 2, 2, 2).unwrap();
    let set = ctx.active_set(2, 16, 16).unwrap();
    assert_eq!(set.len(), 256, "n_active");
    // The input has random values at inactive positions too: from_dense must ignore them.
    let input = g.tensor("input").to_variable();
    let x = SparseTensor::from_dense(&input, set).unwrap();
    let (w, b) = (g.tensor("weight").to_variable(), g.tensor("bias").to_variable());
    let rm = Tensor::zeros(&[16], DType::F32, Default::default()).unwrap();
    let rv = Tensor::ones(&[16], DType::F32, Default::default()).unwrap();
    let y = sparse_batch_norm(&x, Some(&w), Some(&b), Some(&rm), Some(&rv), true, 0.1, 1e-5).unwrap();
    let dense = y.to_dense().unwrap();
    assert_rel("bn output", &vec(&dense), &g.f32("output_f64").0, 1e-5);
    assert_rel("bn running_mean", &vec(&rm), &g.f32("running_mean_f64").0, 1e-5);
    assert_rel("bn running_var", &vec(&rv), &g.f32("running_var_f64").0, 1e-5);
    let grads = dense.mul(&g.tensor("grad_out")).unwrap().sum_all().unwrap().backward().unwrap();
    assert_rel("bn grad_input", &vec(grads.get(&input).unwrap()), &g.f32("grad_input_f64").0, 1e-5);
    assert_rel("bn grad_weight", &vec(grads.get(&w).unwrap()), &g.f32("grad_weight_f64").0, 1e-5);
    assert_rel("bn grad_bias", &vec(grads.get(&b).unwrap()), &g.f32("grad_bias_f64").0, 1e-5);
}

#[test]
fn golden_layernorm_sparse() {
    let g = Golden::open("layernorm_sparse");
    let mut ctx = SparseContext::hierarchical(&g.active(), 2, 2, 2).unwrap();
    let set = ctx.active_set(2, 16, 16).unwrap();
    // Channels-first copies (cf_*) are the same data permuted to NCHW.
    let input = g.tensor("cf_input").to_variable();
    let x = SparseTensor::from_dense(&input, set).unwrap();
    let (w, b) = (g.tensor("weight").to_variable(), g.tensor("bias").to_variable());
    let y = sparse_layer_norm(&x, Some(&w), Some(&b), 1e-6).unwrap();
    let dense = y.to_dense().unwrap();
    assert_rel("ln output", &vec(&dense), &g.f32("cf_output").0, 1e-5);
    let grads = dense.mul(&g.tensor("cf_grad_out")).unwrap().sum_all().unwrap().backward().unwrap();
    assert_rel("ln grad_input", &vec(grads.get(&input).unwrap()), &g.f32("cf_grad_input").0, 1e-5);
    assert_rel("ln grad_weight", &vec(grads.get(&w).unwrap()), &g.f32("grad_weight_f64").0, 1e-5);
    assert_rel("ln grad_bias", &vec(grads.get(&b).unwrap()), &g.f32("grad_bias_f64").0, 1e-5);
}
