//! Parameter groups: which parameters get weight decay (SPARK.md 7.1 "no-decay params").

use serde::{Deserialize, Serialize};

/// Rules that exempt a parameter from weight decay. Defaults follow the official SparK code:
/// any 1-D parameter, names ending `.bias`, names containing one of `keywords`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoDecayRules {
    pub one_dim: bool,
    pub bias: bool,
    pub keywords: Vec<String>,
}

impl Default for NoDecayRules {
    fn default() -> Self {
        NoDecayRules {
            one_dim: true,
            bias: true,
            keywords: ["cls_token", "pos_embed", "mask_token", "gamma"].iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl NoDecayRules {
    /// mmpretrain's rules: bias_decay_mult 0, flat_decay_mult 0, custom key `mask_token`.
    pub fn mmpretrain() -> Self {
        NoDecayRules { one_dim: true, bias: true, keywords: vec!["mask_token".into()] }
    }

    /// True when the parameter named `name` with shape `shape` is exempt from weight decay.
    pub fn is_no_decay(&self, name: &str, shape: &[usize]) -> bool {
        (self.one_dim && shape.len() <= 1)
            || (self.bias && name.ends_with(".bias"))
            || self.keywords.iter().any(|k| name.contains(k.as_str()))
    }

    /// Weight-decay scale of a parameter: 0 for no-decay, 1 otherwise.
    pub fn wd_scale(&self, name: &str, shape: &[usize]) -> f64 {
        if self.is_no_decay(name, shape) {
            0.0
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_rules() {
        let r = NoDecayRules::default();
        assert!(r.is_no_decay("sparse_encoder.sp_cnn.bn1.weight", &[64]));
        assert!(r.is_no_decay("densify_projs.1.bias", &[384]));
        assert!(r.is_no_decay("mask_tokens.0", &[1, 2048, 1, 1]));
        assert!(r.is_no_decay("sparse_encoder.sp_cnn.stages.0.0.gamma", &[96]));
        assert!(!r.is_no_decay("sparse_encoder.sp_cnn.conv1.weight", &[64, 3, 7, 7]));
        assert!(!r.is_no_decay("dense_decoder.dec.0.up_sample.weight", &[768, 768, 4, 4]));
        assert_eq!(r.wd_scale("dense_decoder.proj.weight", &[3, 24, 1, 1]), 1.0);
        let m = NoDecayRules::mmpretrain();
        assert!(m.is_no_decay("mask_tokens.2", &[1, 512, 1, 1]));
        assert!(!m.is_no_decay("x.gamma_like", &[4, 4]));
    }
}
