//! The fused AdamW and LAMB steps against f64 references written from spark/src/optim/adamw.rs,
//! lamb.rs and state.rs (spark-engine cannot depend on spark): several steps on ~100k-element
//! parameters, with and without the grad-norm clip, weight decay and bias correction.

use super::{assert_close, gpu, uniform};
use spark_engine::cuda::AdamStep;

#[derive(Clone, Copy, Debug)]
struct Hyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// The parameter's effective decay (`wd * wd_scale`).
    wd: f64,
    max_grad_norm: Option<f64>,
    /// LAMB only (AdamW always corrects).
    bias_correction: bool,
}

/// One parameter and its moments in f64, stepped as the CPU optimizers step them.
struct Reference {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

/// `1 / clip` with `clip = max(norm / max_grad_norm, 1)` over the global gradient norm (here the
/// one parameter's), as `Moments::start_step` computes it.
fn inv_clip(g: &[f32], max_grad_norm: Option<f64>) -> f64 {
    let norm = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    1.0 / max_grad_norm.map_or(1.0, |mx| (norm / mx).max(1.0))
}

impl Reference {
    fn new(p: &[f32]) -> Self {
        let n = p.len();
        Reference { p: p.iter().map(|&x| x as f64).collect(), m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    /// Counts the step and updates the moments with the clipped gradient; returns (bc1, bc2).
    fn moments(&mut self, h: &Hyper, g: &[f32], correct: bool) -> (f64, f64) {
        self.t += 1;
        let s = inv_clip(g, h.max_grad_norm);
        for ((m, v), &g) in self.m.iter_mut().zip(self.v.iter_mut()).zip(g) {
            let gi = g as f64 * s;
            *m = h.beta1 * *m + (1.0 - h.beta1) * gi;
            *v = h.beta2 * *v + (1.0 - h.beta2) * gi * gi;
        }
        if correct {
            (1.0 - h.beta1.powi(self.t), 1.0 - h.beta2.powi(self.t))
        } else {
            (1.0, 1.0)
        }
    }

    /// AdamW: `p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)`.
    fn adamw(&mut self, h: &Hyper, g: &[f32]) {
        let (bc1, bc2) = self.moments(h, g, true);
        let decay = 1.0 - h.lr * h.wd;
        for i in 0..g.len() {
            self.p[i] = self.p[i] * decay - (h.lr / bc1) * self.m[i] / (self.v[i].sqrt() / bc2.sqrt() + h.eps);
        }
    }

    /// LAMB: `u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps) + wd p`, `p -= lr r u` with the trust
    /// ratio `r = ||p|| / ||u||` (1 when either is 0) for decayed parameters, `r = 1` otherwise.
    fn lamb(&mut self, h: &Hyper, g: &[f32]) {
        let (bc1, bc2) = self.moments(h, g, h.bias_correction);
        let u: Vec<f64> = (0..g.len())
            .map(|i| (self.m[i] / bc1) / (self.v[i].sqrt() / bc2.sqrt() + h.eps) + h.wd * self.p[i])
            .collect();
        let r = if h.wd == 0.0 {
            1.0
        } else {
            let wn = self.p.iter().map(|x| x * x).sum::<f64>().sqrt();
            let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
            if wn > 0.0 && un > 0.0 {
                wn / un
            } else {
                1.0
            }
        };
        for (p, u) in self.p.iter_mut().zip(&u) {
            *p -= h.lr * r * u;
        }
    }
}

/// Element-wise relative check with an absolute floor at a millionth of the largest value.
fn check(what: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    assert_close(what, got, want, 1e-6 * scale, 1e-5);
}

/// Runs `steps` steps of AdamW (or LAMB) on the GPU and in the reference from the same start.
fn run(what: &str, lamb: bool, h: Hyper, p0: &[f32], steps: usize, seed: u64) {
    let Some(dev) = gpu(what) else { return };
    let n = p0.len();
    let mut want = Reference::new(p0);
    let mut p = dev.upload(p0).unwrap();
    let mut m = dev.upload(&vec![0.0f32; n]).unwrap();
    let mut v = dev.upload(&vec![0.0f32; n]).unwrap();
    for step in 0..steps {
        // A different gradient scale each step, so the clip factor changes.
        let scale = 0.5 + step as f32;
        let gs: Vec<f32> = uniform(n, -1.0, 1.0, seed + step as u64).iter().map(|x| x * scale).collect();
        let g = dev.upload(&gs).unwrap();
        let t = step as i32 + 1;
        let correct = !lamb || h.bias_correction;
        let (bc1, bc2) = if correct { (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t)) } else { (1.0, 1.0) };
        let s = inv_clip(&gs, h.max_grad_norm);
        let hyper = AdamStep {
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.wd,
            bias_c1: bc1,
            bias_c2: bc2,
            grad_scale: s,
        };
        if lamb {
            dev.lamb_step(&mut p, &g, &mut m, &mut v, n, &hyper).unwrap();
            want.lamb(&h, &gs);
        } else {
            dev.adamw_step(&mut p, &g, &mut m, &mut v, n, &hyper).unwrap();
            want.adamw(&h, &gs);
        }
    }
    check(&format!("{what}: m"), &dev.download(&m, n).unwrap(), &want.m);
    check(&format!("{what}: v"), &dev.download(&v, n).unwrap(), &want.v);
    check(&format!("{what}: p"), &dev.download(&p, n).unwrap(), &want.p);
}

#[test]
fn adamw_steps_equal_the_reference() {
    let base =
        Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.05, max_grad_norm: None, bias_correction: true };
    let p0 = uniform(100_003, -1.0, 1.0, 100);
    run("adamw decayed, no clip", false, base, &p0, 5, 110);
    let clipped = Hyper { lr: 2e-3, beta2: 0.95, wd: 0.0, max_grad_norm: Some(1.0), ..base };
    run("adamw no decay, clipped", false, clipped, &p0, 5, 120);
}

#[test]
fn lamb_steps_equal_the_reference() {
    let base = Hyper {
        lr: 5e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-6,
        wd: 0.04,
        max_grad_norm: Some(5.0),
        bias_correction: true,
    };
    let p0 = uniform(100_003, -1.0, 1.0, 200);
    run("lamb decayed, clipped", true, base, &p0, 5, 210);
    run("lamb no decay (no trust ratio)", true, Hyper { wd: 0.0, ..base }, &p0, 5, 220);
    // More than 1024 blocks of 256: the first pass's grid strides; no bias correction.
    let big = Hyper { beta2: 0.999, wd: 0.05, max_grad_norm: Some(1.0), bias_correction: false, ..base };
    run("lamb 300k, no bias correction", true, big, &uniform(300_007, -1.0, 1.0, 230), 5, 240);
    // ||p|| = 0 on the first step: trust ratio 1.
    run("lamb from zeros", true, base, &vec![0.0; 1000], 3, 250);
}
