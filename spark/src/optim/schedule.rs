//! Per-iteration learning-rate and weight-decay schedules (SPARK.md 7.1, `lr_wd_annealing`).

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Where the cosine phase reaches its end value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CosineEnd {
    /// At the last iteration `T-1` (official SparK: denominator `T-1-W`, resp. `T-1`).
    LastIter,
    /// At `T` (mmengine CosineAnnealing: denominator `T-W`, resp. `T`).
    Total,
}

/// Linear warmup from `warmup_start_factor * peak` then cosine decay to `min_factor * peak`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_iters: usize,
    pub total_iters: usize,
    pub warmup_start_factor: f64,
    pub min_factor: f64,
    pub cosine_end: CosineEnd,
}

impl LrSchedule {
    /// The official SparK curve: 0.005·peak → peak over `warmup`, cosine to 0.001·peak at `T-1`.
    pub fn official(peak: f64, warmup_iters: usize, total_iters: usize) -> Self {
        LrSchedule {
            peak,
            warmup_iters,
            total_iters,
            warmup_start_factor: 0.005,
            min_factor: 0.001,
            cosine_end: CosineEnd::LastIter,
        }
    }

    /// Learning rate before iteration `it` (0-based global iteration).
    pub fn lr(&self, it: usize) -> f64 {
        let (w, t) = (self.warmup_iters as f64, self.total_iters as f64);
        let it = it as f64;
        if it < w {
            return self.peak * (self.warmup_start_factor + (1.0 - self.warmup_start_factor) * it / w);
        }
        let span = match self.cosine_end {
            CosineEnd::LastIter => t - 1.0 - w,
            CosineEnd::Total => t - w,
        };
        let frac = if span > 0.0 { ((it - w) / span).min(1.0) } else { 1.0 };
        self.peak * (self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + (PI * frac).cos()))
    }
}

/// Cosine weight-decay change from `start` (it = 0) to `end` (it = T-1 or T).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WdSchedule {
    pub start: f64,
    pub end: f64,
    pub total_iters: usize,
    pub cosine_end: CosineEnd,
}

impl WdSchedule {
    pub fn official(total_iters: usize) -> Self {
        WdSchedule { start: 0.04, end: 0.2, total_iters, cosine_end: CosineEnd::LastIter }
    }

    pub fn wd(&self, it: usize) -> f64 {
        let t = self.total_iters as f64;
        let span = match self.cosine_end {
            CosineEnd::LastIter => t - 1.0,
            CosineEnd::Total => t,
        };
        let frac = if span > 0.0 { (it as f64 / span).min(1.0) } else { 1.0 };
        self.end + (self.start - self.end) * 0.5 * (1.0 + (PI * frac).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn official_lr_key_points() {
        // 100 iterations, 10 warmup, peak 1.0.
        let s = LrSchedule::official(1.0, 10, 100);
        close(s.lr(0), 0.005);
        close(s.lr(5), 0.005 + 0.995 * 0.5);
        close(s.lr(9), 0.005 + 0.995 * 0.9);
        close(s.lr(10), 1.0); // cos(0) = 1
                              // Halfway through the cosine span (T-1-W = 89): it = 10 + 44.5 is not an integer; use the formula.
        close(s.lr(50), 0.001 + 0.999 * 0.5 * (1.0 + (PI * 40.0 / 89.0).cos()));
        close(s.lr(99), 0.001); // ends exactly at 0.001·peak
                                // ImageNet numbers: 313 it/epoch, 40 warmup epochs -> W = 12,520, T = 500,800, peak 3.2e-3.
        let s = LrSchedule::official(3.2e-3, 12_520, 500_800);
        close(s.lr(0), 1.6e-5);
        close(s.lr(12_520), 3.2e-3);
        close(s.lr(500_799), 3.2e-6);
    }

    #[test]
    fn official_wd_key_points() {
        let s = WdSchedule::official(101);
        close(s.wd(0), 0.04);
        close(s.wd(50), 0.12); // halfway: cos(pi/2) = 0
        close(s.wd(100), 0.2);
        close(s.wd(25), 0.2 + (0.04 - 0.2) * 0.5 * (1.0 + (PI / 4.0).cos()));
    }

    #[test]
    fn mmpretrain_style_schedule() {
        let s = LrSchedule {
            peak: 1.6e-3,
            warmup_iters: 4,
            total_iters: 12,
            warmup_start_factor: 1e-4,
            min_factor: 0.0,
            cosine_end: CosineEnd::Total,
        };
        close(s.lr(0), 1.6e-7);
        close(s.lr(2), 1.6e-3 * (1e-4 + (1.0 - 1e-4) * 0.5));
        close(s.lr(4), 1.6e-3);
        close(s.lr(8), 0.8e-3);
        let w = WdSchedule { start: 0.04, end: 0.2, total_iters: 12, cosine_end: CosineEnd::Total };
        close(w.wd(6), 0.12);
    }
}
