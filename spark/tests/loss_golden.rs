//! The SparK loss against PyTorch golden vectors (tests/data/golden/spark_loss.safetensors).

use spark::loss::{masked_patch_loss, patch_target, patchify, unpatchify};
use spark::mask::PatchMask;
use spark::st_io;
use spark_engine::{testing::assert_close, DType, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

fn golden() -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/golden/spark_loss.safetensors");
    st_io::load(&p).unwrap().0.into_iter().collect()
}

#[test]
fn loss_grad_and_target_match_pytorch() {
    let g = golden();
    let mask = PatchMask::from_tensor(&g["active"]).unwrap();
    assert_eq!(mask.masked_count(), 4);
    for dtype in [DType::F32, DType::F64] {
        let input = g["input"].to_dtype(dtype).unwrap();
        let rec = g["rec"].to_dtype(dtype).unwrap().to_variable();
        let out = masked_patch_loss(&rec, &input, &mask, 32).unwrap();
        let tol = if dtype == DType::F64 { 1e-9 } else { 1e-5 };
        assert_close("loss", &out.loss.to_vec_f64().unwrap(), &g["loss_f64"].to_vec_f64().unwrap(), tol, tol);
        assert_close(
            "per_patch_mse",
            &out.per_patch_mse.to_vec_f64().unwrap(),
            &g["per_patch_mse_f64"].to_vec_f64().unwrap(),
            tol,
            tol,
        );
        assert_close(
            "target_norm",
            &out.target.target.to_vec_f64().unwrap(),
            &g["target_norm"].to_vec_f64().unwrap(),
            1e-5,
            1e-5,
        );
        assert_close(
            "patch_mean",
            &out.target.mean.to_vec_f64().unwrap(),
            &g["patch_mean_f64"].to_vec_f64().unwrap(),
            tol,
            tol,
        );
        assert_close(
            "patch_std",
            &out.target.std.to_vec_f64().unwrap(),
            &g["patch_std_f64"].to_vec_f64().unwrap(),
            tol,
            tol,
        );
        let grads = out.loss.backward().unwrap();
        let gr = grads.get(&rec).unwrap().to_vec_f64().unwrap();
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-9 };
        assert_close("grad_rec", &gr, &g["grad_rec_f64"].to_vec_f64().unwrap(), tol, 1e-5);
    }
}

#[test]
fn patchify_roundtrip_and_order() {
    // Element (b, c, y, x) = 1000*c + 10*y + x; patch 2 of a 4x4 image with 3 channels.
    let mut v = Vec::new();
    for c in 0..3 {
        for y in 0..4 {
            for x in 0..4 {
                v.push((1000 * c + 10 * y + x) as f64);
            }
        }
    }
    let t = Tensor::from_vec(v.clone(), &[1, 3, 4, 4]).unwrap();
    let p = patchify(&t, 2).unwrap();
    assert_eq!(p.dims(), &[1, 4, 12]);
    let pv = p.to_vec::<f64>().unwrap();
    // patch l = 1 (row 0, col 1); element (py=1, px=0, c=2) at (1*2+0)*3+2 = 8 -> y=1, x=2.
    assert_eq!(pv[12 + 8], 2000.0 + 10.0 + 2.0);
    let back = unpatchify(&p, 2, 3, 2, 2).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(back, v);
    let tg = patch_target(&t, 2).unwrap();
    assert_eq!(tg.std.dims(), &[1, 4, 1]);
}
