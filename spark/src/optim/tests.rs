//! Hand-computed single steps of LAMB and AdamW.

use super::*;
use spark_engine::{DType, Device, GradStore, Tensor};

fn param(name: &str, v: Vec<f64>, shape: &[usize], wd_scale: f64) -> OptimParam {
    OptimParam { name: name.into(), tensor: Tensor::from_vec(v, shape).unwrap().to_variable(), wd_scale }
}

fn grads(ps: &[OptimParam], gs: &[Vec<f64>]) -> GradStore {
    let mut s = GradStore::new();
    for (p, g) in ps.iter().zip(gs) {
        s.insert(&p.tensor, Tensor::from_vec(g.clone(), p.tensor.dims()).unwrap());
    }
    s
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn lamb_one_step_by_hand() {
    // w (decayed) = [3, 4], g = [30, 40]; b (no decay) = [1], g = [0]. Global norm = 50 -> clip
    // factor 50/5 = 10, so g = [3, 4].
    let ps = vec![param("w", vec![3.0, 4.0], &[2], 1.0), param("b", vec![1.0], &[1], 0.0)];
    let gs = grads(&ps, &[vec![30.0, 40.0], vec![0.0]]);
    let mut opt = Lamb::new(LambConfig::default());
    let info = opt.step(&ps, &gs, 0.1, 0.5).unwrap();
    assert!((info.grad_norm - 50.0).abs() < 1e-12);
    // t = 1: m = 0.1 g, v = 0.05 g^2; m/bc1 = g; sqrt(v)/sqrt(bc2) = |g|; u = g/(|g| + 1e-6).
    let u: Vec<f64> = [3.0f64, 4.0].iter().map(|g| g / (g + 1e-6)).collect();
    // Add wd*p: u + 0.5*[3,4]; trust ratio = ||p|| / ||u'|| = 5 / ||u'||.
    let up: Vec<f64> = u.iter().zip([3.0, 4.0]).map(|(u, p)| u + 0.5 * p).collect();
    let un = (up[0] * up[0] + up[1] * up[1]).sqrt();
    let expect: Vec<f64> = up.iter().zip([3.0, 4.0]).map(|(u, p)| p - 0.1 * (5.0 / un) * u).collect();
    close(&ps[0].tensor.to_vec::<f64>().unwrap(), &expect, 1e-12);
    // Zero gradient, no decay: update 0.
    close(&ps[1].tensor.to_vec::<f64>().unwrap(), &[1.0], 1e-15);
    let m = &opt.moments().m["w"].to_vec::<f64>().unwrap();
    close(m, &[0.3, 0.4], 1e-12);
    let v = &opt.moments().v["w"].to_vec::<f64>().unwrap();
    close(v, &[0.05 * 9.0, 0.05 * 16.0], 1e-12);
}

#[test]
fn lamb_no_decay_has_no_trust_ratio_and_bias_correction_at_step_two() {
    let ps = vec![param("b", vec![2.0], &[1], 0.0)];
    let mut opt = Lamb::new(LambConfig { max_grad_norm: None, ..LambConfig::default() });
    opt.step(&ps, &grads(&ps, &[vec![1.0]]), 0.01, 0.3).unwrap();
    // step 1: u = 1/(1+1e-6) (no trust ratio since wd_scale = 0)
    let w1 = 2.0 - 0.01 / (1.0 + 1e-6);
    close(&ps[0].tensor.to_vec::<f64>().unwrap(), &[w1], 1e-12);
    opt.step(&ps, &grads(&ps, &[vec![-1.0]]), 0.01, 0.3).unwrap();
    // step 2: m = 0.9*0.1 - 0.1 = -0.01, v = 0.95*0.05 + 0.05 = 0.0975
    let (m, v) = (-0.01f64, 0.0975f64);
    let u = (m / (1.0 - 0.81)) / (v.sqrt() / (1.0 - 0.9025f64).sqrt() + 1e-6);
    close(&ps[0].tensor.to_vec::<f64>().unwrap(), &[w1 - 0.01 * u], 1e-12);
}

#[test]
fn adamw_one_step_by_hand() {
    let ps = vec![param("w", vec![1.0, -2.0], &[2], 1.0)];
    let mut opt = AdamW::new(AdamWConfig::default());
    opt.step(&ps, &grads(&ps, &[vec![0.5, -0.25]]), 0.1, 0.01).unwrap();
    // t = 1: m_hat = g, v_hat = g^2 -> step = lr * g/(|g| + eps); decay 1 - lr*wd = 0.999.
    let e: Vec<f64> =
        [(1.0, 0.5f64), (-2.0, -0.25f64)].iter().map(|&(w, g)| w * 0.999 - 0.1 * g / (g.abs() + 1e-8)).collect();
    close(&ps[0].tensor.to_vec::<f64>().unwrap(), &e, 1e-12);
}

#[test]
fn optim_params_apply_rules() {
    let t = Tensor::zeros(&[4, 3, 3, 3], DType::F32, Device::Cpu).unwrap();
    let b = Tensor::zeros(&[4], DType::F32, Device::Cpu).unwrap();
    let named = vec![("conv.weight".to_string(), t), ("conv.bias".to_string(), b)];
    let ps = optim_params(&named, &NoDecayRules::default());
    assert_eq!(ps[0].wd_scale, 1.0);
    assert_eq!(ps[1].wd_scale, 0.0);
}

#[test]
fn presets() {
    let o = Recipe::official();
    assert!((o.peak_lr() - 3.2e-3).abs() < 1e-15);
    let s = o.lr_schedule(313);
    assert_eq!(s.warmup_iters, 12_520);
    assert_eq!(s.total_iters, 500_800);
    assert_eq!(Recipe::official_convnext().beta2, 0.999);
    let m = Recipe::mmpretrain();
    assert!((m.peak_lr() - 1.6e-3).abs() < 1e-15);
    assert_eq!(m.max_grad_norm, Some(1.0));
    assert_eq!(m.decoder_width, 512);
    assert_eq!(Recipe::by_name("mmpretrain"), Some(m));
    assert!(Recipe::by_name("nope").is_none());
    // Overridable: a JSON round trip keeps every field.
    let j = serde_json::to_string(&o).unwrap();
    assert_eq!(serde_json::from_str::<Recipe>(&j).unwrap(), o);
}

/// The element-wise passes run in parallel chunks in the parameter's dtype: an f32 parameter
/// spanning several chunks, with and without decay, must match one step computed by hand (LAMB's
/// trust ratio sums over all chunks; AdamW is one pass), written as plain sequential f64.
#[test]
fn chunked_steps_match_a_sequential_reference() {
    let n = 3 * super::state::CHUNK + 123;
    let mut rng = spark_engine::Rng::new(3);
    let w0: Vec<f64> = (0..n).map(|_| rng.normal() * 0.1).collect();
    let g0: Vec<f64> = (0..n).map(|_| rng.normal() * 0.01).collect();
    for wd_scale in [1.0, 0.0] {
        for lamb in [true, false] {
            let run = |dtype: DType| {
                let p = OptimParam {
                    name: "w".into(),
                    tensor: Tensor::from_vec(w0.clone(), &[n]).unwrap().to_dtype(dtype).unwrap().to_variable(),
                    wd_scale,
                };
                let mut gs = GradStore::new();
                gs.insert(&p.tensor, Tensor::from_vec(g0.clone(), &[n]).unwrap().to_dtype(dtype).unwrap());
                let ps = [p];
                let mut opt: Box<dyn Optimizer> = if lamb {
                    Box::new(Lamb::new(LambConfig::default()))
                } else {
                    Box::new(AdamW::new(AdamWConfig::default()))
                };
                opt.step(&ps, &gs, 0.01, 0.05).unwrap();
                ps[0].tensor.to_vec_f64().unwrap()
            };
            // Sequential f64 reference of one step (t = 1, no clipping: ||g|| ~ 2.6 < 5).
            let wd = 0.05 * wd_scale;
            let expect: Vec<f64> = if lamb {
                // m/bc1 = g, sqrt(v/bc2) = |g|.
                let u: Vec<f64> = g0.iter().zip(&w0).map(|(g, w)| g / (g.abs() + 1e-6) + wd * w).collect();
                let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                let r = if wd != 0.0 { norm(&w0) / norm(&u) } else { 1.0 };
                w0.iter().zip(&u).map(|(w, u)| w - 0.01 * r * u).collect()
            } else {
                g0.iter().zip(&w0).map(|(g, w)| w * (1.0 - 0.01 * wd) - 0.01 * g / (g.abs() + 1e-8)).collect()
            };
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
                let got = run(dtype);
                let worst = got.iter().zip(&expect).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
                assert!(worst < tol, "lamb {lamb} wd_scale {wd_scale} {dtype:?}: off by {worst}");
            }
        }
    }
}

#[test]
fn a_known_gradient_norm_is_used_instead_of_recomputed() {
    // The trainer hands over the norm it already computed for its NaN check. The step must use
    // it for clipping (and report it): with a given norm of 100 and clip 1, g is divided by 100.
    let run = |norm: Option<f64>| {
        let ps = vec![param("w", vec![1.0, -2.0], &[2], 1.0)];
        let gs = grads(&ps, &[vec![3.0, 4.0]]);
        let mut opt = AdamW::new(AdamWConfig { max_grad_norm: Some(1.0), ..Default::default() });
        let info = opt.step_with_norm(&ps, &gs, 0.1, 0.0, norm).unwrap();
        (info.grad_norm, opt.moments().m["w"].to_vec::<f64>().unwrap())
    };
    let (n, m) = run(None);
    assert!((n - 5.0).abs() < 1e-12, "computed norm {n}");
    close(&m, &[0.1 * 3.0 / 5.0, 0.1 * 4.0 / 5.0], 1e-12);
    let (n, m) = run(Some(100.0));
    assert_eq!(n, 100.0);
    close(&m, &[0.1 * 3.0 / 100.0, 0.1 * 4.0 / 100.0], 1e-12);
}
