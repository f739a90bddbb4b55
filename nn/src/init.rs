//! Seeded parameter creation with PyTorch/timm initialisers. A `Builder` in shape-only mode makes
//! zero-stride broadcast views instead of allocating, so parameter counts of large models are
//! computed by the very constructors that build the runnable models.

use spark_engine::{DType, Device, Result, Rng, Tensor};

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Const(f64),
    /// U(-bound, bound).
    Uniform(f64),
    /// N(0, std).
    Normal(f64),
    /// N(0, std) truncated to the absolute bounds [-2, 2] (timm `trunc_normal_` defaults).
    TruncNormal(f64),
}

impl Init {
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")` for a conv weight `[cout, cin/g, kh, kw]`.
    pub fn kaiming_normal_fan_out(shape: &[usize]) -> Init {
        let fan_out = shape[0] * shape[2..].iter().product::<usize>();
        Init::Normal((2.0 / fan_out as f64).sqrt())
    }
    /// PyTorch's default for Conv2d/Linear weights (`kaiming_uniform_(a=sqrt(5))`) and biases:
    /// both are U(±1/sqrt(fan_in)), fan_in = cin/g * kh * kw (or in_features).
    pub fn torch_default(fan_in: usize) -> Init {
        Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt())
    }
}

/// Makes parameters and buffers: seeded, in a chosen dtype, or shape-only.
pub struct Builder {
    pub rng: Rng,
    pub dtype: DType,
    pub device: Device,
    shape_only: bool,
}

impl Builder {
    pub fn new(seed: u64, dtype: DType) -> Builder {
        Builder { rng: Rng::new(seed), dtype, device: Device::Cpu, shape_only: false }
    }
    pub fn from_rng(rng: Rng, dtype: DType) -> Builder {
        Builder { rng, dtype, device: Device::Cpu, shape_only: false }
    }
    /// Tensors get their shapes but no memory (a broadcast view of one zero); such a model can
    /// be counted and its names listed, not run.
    pub fn shape_only() -> Builder {
        Builder { rng: Rng::new(0), dtype: DType::F32, device: Device::Cpu, shape_only: true }
    }
    pub fn is_shape_only(&self) -> bool {
        self.shape_only
    }

    fn tensor(&mut self, shape: &[usize], init: Init) -> Result<Tensor> {
        if self.shape_only {
            return Tensor::zeros(&vec![1; shape.len()], self.dtype, self.device)?.expand(shape);
        }
        let (dt, dev) = (self.dtype, self.device);
        match init {
            Init::Zeros => Tensor::zeros(shape, dt, dev),
            Init::Ones => Tensor::ones(shape, dt, dev),
            Init::Const(v) => Tensor::full(v, shape, dt, dev),
            Init::Uniform(b) => Tensor::rand(shape, -b, b, &mut self.rng, dt, dev),
            Init::Normal(s) => Tensor::randn(shape, 0.0, s, &mut self.rng, dt, dev),
            Init::TruncNormal(s) => Tensor::trunc_normal(shape, 0.0, s, -2.0, 2.0, &mut self.rng, dt, dev),
        }
    }
    /// A trainable leaf.
    pub fn param(&mut self, shape: &[usize], init: Init) -> Result<Tensor> {
        Ok(self.tensor(shape, init)?.to_variable())
    }
    /// A non-trainable buffer.
    pub fn buffer(&mut self, shape: &[usize], init: Init) -> Result<Tensor> {
        self.tensor(shape, init)
    }
}
