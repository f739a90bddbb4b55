//! Dropout with inverted scaling: kept entries are multiplied by `1 / (1 - p)` in training so
//! that eval mode is the identity.

use crate::{with_float, Error, Result, Rng, Tensor};

impl Tensor {
    /// Zeroes each entry with probability `p` (drawn from `rng`, one draw per element in
    /// row-major order) and scales the rest by `1 / (1 - p)`. Identity when `!training` or
    /// `p == 0`. The gradient is masked and scaled the same way.
    pub fn dropout(&self, p: f64, training: bool, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Msg(format!("dropout: probability {p} is not in [0, 1] (input {:?})", self.dims())));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let mask = with_float!(self.dtype(), "dropout", |T| {
            let (keep, drop) = (T::from_f64(scale), T::ZERO);
            let v: Vec<T> = (0..self.numel()).map(|_| if rng.uniform() >= p { keep } else { drop }).collect();
            Tensor::from_vec(v, self.dims())
        })?;
        // The mask is a constant: mul's backward sends grad * mask to `self` only.
        self.mul(&mask)
    }
}
