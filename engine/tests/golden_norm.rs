//! PyTorch golden vectors for the dense batch_norm and layer_norm ops.
//!
//! The stored cases are SparK's sparse norms (statistics over the active positions only). A
//! dense norm over exactly the active positions is the same computation, so each test gathers
//! the active positions into a dense tensor, runs the dense op, and compares with the golden
//! values at those positions. f64 runs are compared with the `_f64` references tightly; f32
//! runs with tolerances a little above the README's PyTorch-f32 deviations.

use safetensors::{Dtype, SafeTensors};
use spark_engine::testing::assert_close;
use spark_engine::{DType, Device, Tensor};

fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/data/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A stored tensor as f64 values and its shape.
fn get(st: &SafeTensors, name: &str) -> (Vec<f64>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    let v = match t.dtype() {
        Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        Dtype::F64 => t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        d => panic!("tensor {name}: unexpected dtype {d:?}"),
    };
    (v, t.shape().to_vec())
}

fn meta(st_bytes: &[u8], key: &str) -> f64 {
    let (_, m) = SafeTensors::read_metadata(st_bytes).unwrap();
    m.metadata().as_ref().and_then(|h| h.get(key)).unwrap_or_else(|| panic!("metadata {key}")).parse().unwrap()
}

/// Active (n, h, w) positions of a `[N, 1, H, W]` 0/1 mask, row-major.
fn active_positions(mask: &(Vec<f64>, Vec<usize>)) -> Vec<(usize, usize, usize)> {
    let (v, s) = mask;
    let (n, h, w) = (s[0], s[2], s[3]);
    let mut out = Vec::new();
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                if v[(i * h + y) * w + x] != 0.0 {
                    out.push((i, y, x));
                }
            }
        }
    }
    out
}

/// `[K, C]` rows: row k holds the channels of active position k, read from an NCHW array.
fn rows_from_nchw(v: &[f64], s: &[usize], pos: &[(usize, usize, usize)]) -> Vec<f64> {
    let (c, h, w) = (s[1], s[2], s[3]);
    pos.iter().flat_map(|&(i, y, x)| (0..c).map(move |ch| v[((i * c + ch) * h + y) * w + x])).collect()
}

/// `[K, C]` rows read from an NHWC array.
fn rows_from_nhwc(v: &[f64], s: &[usize], pos: &[(usize, usize, usize)]) -> Vec<f64> {
    let (h, w, c) = (s[1], s[2], s[3]);
    pos.iter().flat_map(|&(i, y, x)| v[((i * h + y) * w + x) * c..][..c].to_vec()).collect()
}

fn tensor(v: &[f64], shape: &[usize], dt: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap().to_dtype(dt).unwrap()
}

/// `[K, C]` values -> `[1, C, K]` (positions as one long spatial axis).
fn to_channels_first(rows: &[f64], k: usize, c: usize) -> Vec<f64> {
    (0..c).flat_map(|ch| (0..k).map(move |p| rows[p * c + ch])).collect()
}

/// (atol, rtol) for output/grad_input and for the summed weight/bias gradients.
fn tolerances(dt: DType) -> ((f64, f64), (f64, f64)) {
    match dt {
        DType::F64 => ((1e-10, 1e-10), (1e-9, 1e-10)),
        _ => ((3e-6, 1e-5), (1e-4, 1e-5)),
    }
}

#[test]
fn batch_norm_matches_pytorch_over_active_positions() {
    let bytes = golden("batchnorm_sparse.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (eps, momentum) = (meta(&bytes, "eps"), meta(&bytes, "momentum"));
    let pos = active_positions(&get(&st, "mask"));
    assert_eq!(pos.len() as f64, meta(&bytes, "n_active"));
    let (input, ishape) = get(&st, "input");
    let c = ishape[1];
    let k = pos.len();
    let x_rows = rows_from_nchw(&input, &ishape, &pos);
    let g_rows = rows_from_nchw(&get(&st, "grad_out").0, &ishape, &pos);
    let want_out = rows_from_nchw(&get(&st, "output_f64").0, &ishape, &pos);
    let want_gx = rows_from_nchw(&get(&st, "grad_input_f64").0, &ishape, &pos);
    // The golden output is exactly 0 off the active set: confirms how the mask is read.
    let out_all = get(&st, "output").0;
    assert_eq!(out_all.iter().filter(|&&v| v != 0.0).count(), k * c);

    for dt in [DType::F64, DType::F32] {
        let ((atol, rtol), (atol_s, rtol_s)) = tolerances(dt);
        // [K, C] rows (short-segment path) and [1, C, K] (channel-parallel path, K >= 64).
        for channels_first in [false, true] {
            let what = format!("bn {dt:?} channels_first={channels_first}");
            let (xv, gv, shape) = if channels_first {
                (to_channels_first(&x_rows, k, c), to_channels_first(&g_rows, k, c), vec![1, c, k])
            } else {
                (x_rows.clone(), g_rows.clone(), vec![k, c])
            };
            let x = tensor(&xv, &shape, dt).to_variable();
            let w = tensor(&get(&st, "weight").0, &[c], dt).to_variable();
            let b = tensor(&get(&st, "bias").0, &[c], dt).to_variable();
            let rm = Tensor::zeros(&[c], dt, Device::Cpu).unwrap();
            let rv = Tensor::ones(&[c], dt, Device::Cpu).unwrap();
            let y = x.batch_norm(Some(&w), Some(&b), Some(&rm), Some(&rv), true, momentum, eps).unwrap();
            let grads = y.backward_with(&tensor(&gv, &shape, dt)).unwrap();
            let (mut yv, mut gx) = (y.to_vec_f64().unwrap(), grads.get(&x).unwrap().to_vec_f64().unwrap());
            if channels_first {
                yv = to_channels_first(&yv, c, k);
                gx = to_channels_first(&gx, c, k);
            }
            assert_close(&format!("{what} output"), &yv, &want_out, atol, rtol);
            assert_close(&format!("{what} grad_input"), &gx, &want_gx, atol, rtol);
            let gw = grads.get(&w).unwrap().to_vec_f64().unwrap();
            let gb = grads.get(&b).unwrap().to_vec_f64().unwrap();
            assert_close(&format!("{what} grad_weight"), &gw, &get(&st, "grad_weight_f64").0, atol_s, rtol_s);
            assert_close(&format!("{what} grad_bias"), &gb, &get(&st, "grad_bias_f64").0, atol_s, rtol_s);
            let (rmv, rvv) = (rm.to_vec_f64().unwrap(), rv.to_vec_f64().unwrap());
            assert_close(&format!("{what} running_mean"), &rmv, &get(&st, "running_mean_f64").0, atol, rtol);
            assert_close(&format!("{what} running_var"), &rvv, &get(&st, "running_var_f64").0, atol, rtol);
        }
    }
}

#[test]
fn layer_norm_matches_pytorch_over_active_positions() {
    let bytes = golden("layernorm_sparse.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let eps = meta(&bytes, "eps");
    let pos = active_positions(&get(&st, "mask"));
    assert_eq!(pos.len() as f64, meta(&bytes, "n_active"));
    let (input, ishape) = get(&st, "input"); // NHWC
    let c = ishape[3];
    let k = pos.len();
    let x_rows = rows_from_nhwc(&input, &ishape, &pos);
    let g_rows = rows_from_nhwc(&get(&st, "grad_out").0, &ishape, &pos);
    let want_out = rows_from_nhwc(&get(&st, "output_f64").0, &ishape, &pos);
    let want_gx = rows_from_nhwc(&get(&st, "grad_input_f64").0, &ishape, &pos);
    let (want_gw, want_gb) = (get(&st, "grad_weight_f64").0, get(&st, "grad_bias_f64").0);

    for dt in [DType::F64, DType::F32] {
        let ((atol, rtol), (atol_s, rtol_s)) = tolerances(dt);
        let w = tensor(&get(&st, "weight").0, &[c], dt).to_variable();
        let b = tensor(&get(&st, "bias").0, &[c], dt).to_variable();
        let check = |what: &str, y: &[f64], gx: &[f64], grads: &spark_engine::GradStore| {
            assert_close(&format!("{what} {dt:?} output"), y, &want_out, atol, rtol);
            assert_close(&format!("{what} {dt:?} grad_input"), gx, &want_gx, atol, rtol);
            let gw = grads.get(&w).unwrap().to_vec_f64().unwrap();
            let gb = grads.get(&b).unwrap().to_vec_f64().unwrap();
            assert_close(&format!("{what} {dt:?} grad_weight"), &gw, &want_gw, atol_s, rtol_s);
            assert_close(&format!("{what} {dt:?} grad_bias"), &gb, &want_gb, atol_s, rtol_s);
        };

        // channels-last rows [K, C]
        let x = tensor(&x_rows, &[k, c], dt).to_variable();
        let y = x.layer_norm(1, Some(&w), Some(&b), eps).unwrap();
        let grads = y.backward_with(&tensor(&g_rows, &[k, c], dt)).unwrap();
        let gx = grads.get(&x).unwrap().to_vec_f64().unwrap();
        check("layer_norm", &y.to_vec_f64().unwrap(), &gx, &grads);

        // channels-first from the stored NCHW tensors: as [1, C, K] and as [K, C, 1, 1]
        let (cf_in, cf_shape) = get(&st, "cf_input");
        let cf_rows = rows_from_nchw(&cf_in, &cf_shape, &pos);
        let cf_g = rows_from_nchw(&get(&st, "cf_grad_out").0, &cf_shape, &pos);
        assert_eq!(cf_rows, x_rows, "cf_input is input permuted");
        let cf_out_golden = rows_from_nchw(&get(&st, "cf_output").0, &cf_shape, &pos);
        for (shape, long) in [(vec![1, c, k], true), (vec![k, c, 1, 1], false)] {
            let (xv, gv) = if long {
                (to_channels_first(&cf_rows, k, c), to_channels_first(&cf_g, k, c))
            } else {
                (cf_rows.clone(), cf_g.clone())
            };
            let x = tensor(&xv, &shape, dt).to_variable();
            let y = x.layer_norm_channels_first(Some(&w), Some(&b), eps).unwrap();
            let grads = y.backward_with(&tensor(&gv, &shape, dt)).unwrap();
            let (mut yv, mut gx) = (y.to_vec_f64().unwrap(), grads.get(&x).unwrap().to_vec_f64().unwrap());
            if long {
                yv = to_channels_first(&yv, c, k);
                gx = to_channels_first(&gx, c, k);
            }
            check(&format!("layer_norm_channels_first {shape:?}"), &yv, &gx, &grads);
            assert_close("cf_output (f32 golden)", &yv, &cf_out_golden, 3e-6, 1e-5);
        }
    }
}
