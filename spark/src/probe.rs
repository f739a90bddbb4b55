//! Linear probing: a softmax classifier trained on frozen, pooled encoder features, the usual
//! measure of what a self-supervised encoder learned without changing it. The features are
//! standardised per dimension with the training set's mean and std (MAE's parameter-free
//! BatchNorm before the head does the same), then a linear layer is trained with AdamW on a
//! cosine schedule.

use crate::optim::{optim_params, AdamW, AdamWConfig, CosineEnd, LrSchedule, NoDecayRules, Optimizer};
use spark_engine::{no_grad, DType, Device, Error, Result, Rng, Tensor};

/// Settings of `train_linear_probe`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    pub weight_decay: f64,
    /// Seeds the minibatch order.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { epochs: 30, batch_size: 256, lr: 1e-3, weight_decay: 0.0, seed: 0 }
    }
}

/// A trained probe: standardisation of the features, then `x W + b`.
#[derive(Debug)]
pub struct LinearProbe {
    mean: Tensor,
    std: Tensor,
    weight: Tensor,
    bias: Tensor,
    /// The cross-entropy of the last epoch's minibatches (mean).
    pub final_loss: f64,
}

/// Trains a probe on features `[N, C]` (f32, host) with labels in `0..classes`.
pub fn train_linear_probe(
    features: &Tensor,
    labels: &[usize],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<LinearProbe> {
    let (n, c) = match features.dims() {
        &[n, c] => (n, c),
        d => return Err(Error::Msg(format!("linear probe: features must be [N, C], got {d:?}"))),
    };
    if n != labels.len() || n == 0 {
        return Err(Error::Msg(format!("linear probe: {n} feature rows for {} labels", labels.len())));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::Msg(format!("linear probe: label {bad} outside 0..{classes}")));
    }
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::Msg("linear probe: epochs and batch size must be at least 1".into()));
    }
    let mean = features.mean(&[0], true)?;
    let std = features.var(&[0], true, false)?.add_scalar(1e-6)?.sqrt()?;
    let x = features.sub(&mean)?.div(&std)?;
    let weight = Tensor::zeros(&[c, classes], DType::F32, Device::Cpu)?.to_variable();
    let bias = Tensor::zeros(&[classes], DType::F32, Device::Cpu)?.to_variable();
    let named = vec![("head.weight".to_string(), weight.clone()), ("head.bias".to_string(), bias.clone())];
    let params = optim_params(&named, &NoDecayRules::default());
    let mut opt = AdamW::new(AdamWConfig::default());
    let batch = cfg.batch_size.min(n);
    let steps_per_epoch = n.div_ceil(batch);
    let total = cfg.epochs * steps_per_epoch;
    let schedule = LrSchedule {
        peak: cfg.lr,
        warmup_iters: steps_per_epoch.min(total / 10),
        total_iters: total,
        warmup_start_factor: 0.01,
        min_factor: 0.0,
        cosine_end: CosineEnd::LastIter,
    };
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut final_loss = 0.0;
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for (i, rows) in order.chunks(batch).enumerate() {
            let xb = x.index_select(0, rows)?;
            let yb: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
            let loss = xb.matmul(&weight)?.add(&bias)?.cross_entropy(&yb, 0.0)?;
            sum += loss.to_scalar()?;
            let grads = loss.backward()?;
            opt.step(&params, &grads, schedule.lr(epoch * steps_per_epoch + i), cfg.weight_decay)?;
        }
        final_loss = sum / steps_per_epoch as f64;
    }
    Ok(LinearProbe { mean, std, weight: weight.detach(), bias: bias.detach(), final_loss })
}

impl LinearProbe {
    /// Logits `[N, classes]` of features `[N, C]`.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        no_grad(|| features.sub(&self.mean)?.div(&self.std)?.matmul(&self.weight)?.add(&self.bias))
    }

    /// Top-1 accuracy on features `[N, C]` with `labels`.
    pub fn accuracy(&self, features: &Tensor, labels: &[usize]) -> Result<f64> {
        let logits = self.logits(features)?;
        let k = logits.dims()[1];
        let v = logits.to_vec_f32()?;
        let correct = labels
            .iter()
            .enumerate()
            .filter(|&(i, &l)| {
                let row = &v[i * k..(i + 1) * k];
                (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(l)
            })
            .count();
        Ok(correct as f64 / labels.len().max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian clusters in 8-D, far apart in dims 0-2, offset and scaled so that the
    /// standardisation matters.
    fn clusters(n: usize, seed: u64) -> (Tensor, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let (mut v, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let label = i % 3;
            for d in 0..8 {
                let centre = if d == label { 3.0 } else { 0.0 };
                v.push((100.0 + 50.0 * (centre + rng.normal())) as f32);
            }
            y.push(label);
        }
        (Tensor::from_vec(v, &[n, 8]).unwrap(), y)
    }

    #[test]
    fn separates_clusters_and_generalises() {
        let (x, y) = clusters(300, 1);
        let probe =
            train_linear_probe(&x, &y, 3, &ProbeConfig { epochs: 20, batch_size: 32, lr: 1e-2, ..Default::default() })
                .unwrap();
        let (xt, yt) = clusters(150, 2);
        let acc = probe.accuracy(&xt, &yt).unwrap();
        assert!(acc > 0.9, "test accuracy {acc}");
        // Chance is ln 3 = 1.10; the clusters overlap a little, so the loss stays above 0.
        assert!(probe.final_loss < 0.6, "loss {}", probe.final_loss);
    }

    #[test]
    fn shape_and_label_errors() {
        let (x, y) = clusters(30, 1);
        let cfg = ProbeConfig::default();
        assert!(train_linear_probe(&x, &y[..10], 3, &cfg).is_err());
        assert!(train_linear_probe(&x, &y, 2, &cfg).unwrap_err().to_string().contains("label 2"));
        assert!(train_linear_probe(&x.reshape(&[30, 2, 4]).unwrap(), &y, 3, &cfg).is_err());
    }
}
