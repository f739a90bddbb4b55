//! Wrappers of `kernels/optim.cu`: fused, in-place AdamW and LAMB steps on one parameter
//! tensor, as spark/src/optim/adamw.rs and lamb.rs compute them.
//!
//! Both take the same f64 scalars, formed as the CPU optimizers form them: `weight_decay` is the
//! parameter's effective decay (`wd * wd_scale`, 0 for no-decay params); `bias_c1 = 1 - beta1^t`,
//! `bias_c2 = 1 - beta2^t` (both 1 for LAMB without bias correction); `grad_scale = 1 / clip`
//! with `clip = max(global_norm / max_grad_norm, 1)` (1 without a clip). The kernels take the
//! betas as f64 (for `1 - beta`) and the rest as f32, and form their constants in f64.

use super::compile::OPTIM;
use super::launch::{self, int, launch};
use super::CudaDevice;
use crate::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// Blocks of LAMB's first pass at most (the kernel's limit; two partial sums per block).
const LAMB_BLOCKS: usize = 1024;

/// The scalars as the kernels take them.
fn to_f32<const N: usize>(v: [f64; N]) -> [f32; N] {
    v.map(|x| x as f32)
}

impl CudaDevice {
    /// One AdamW step on `p`, `g`, `m`, `v` `[n]`; `p`, `m` and `v` are updated in place:
    /// `p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)` after the moment update
    /// with the gradient `g * grad_scale`.
    pub fn adamw_step(
        &self,
        p: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        n: usize,
        h: &AdamStep,
    ) -> Result<()> {
        let AdamStep { lr, beta1, beta2, eps, weight_decay, bias_c1, bias_c2, grad_scale } = *h;
        let ni = int(n, "adamw_step")?;
        let [lr, eps, weight_decay, bias_c1, bias_c2, grad_scale] =
            to_f32([lr, eps, weight_decay, bias_c1, bias_c2, grad_scale]);
        launch!(
            self,
            OPTIM,
            "adamw_f32",
            launch::elementwise(n),
            p,
            g,
            m,
            v,
            &ni,
            &lr,
            &beta1,
            &beta2,
            &eps,
            &weight_decay,
            &bias_c1,
            &bias_c2,
            &grad_scale
        );
        Ok(())
    }

    /// One LAMB step on `p`, `g`, `m`, `v` `[n]` (same arguments as [`CudaDevice::adamw_step`]),
    /// in place. Pass 1 updates the moments and writes the direction
    /// `u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps) + wd p` with per-block sums of `p^2` and
    /// `u^2`; pass 2 applies `p -= lr r u` with the trust ratio `r = ||p|| / ||u||` (1 when
    /// either is 0, or when `weight_decay` is 0). No host synchronisation.
    pub fn lamb_step(
        &self,
        p: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        n: usize,
        h: &AdamStep,
    ) -> Result<()> {
        let AdamStep { lr, beta1, beta2, eps, weight_decay, bias_c1, bias_c2, grad_scale } = *h;
        let ni = int(n, "lamb_step")?;
        let [lr, eps, weight_decay, bias_c1, bias_c2, grad_scale] =
            to_f32([lr, eps, weight_decay, bias_c1, bias_c2, grad_scale]);
        let blocks = n.div_ceil(launch::BLOCK as usize).clamp(1, LAMB_BLOCKS);
        let nblocks = blocks as i32;
        let mut update = self.alloc::<f32>(n)?;
        let mut partial = self.alloc::<f32>(2 * blocks)?;
        let cfg =
            LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (launch::BLOCK, 1, 1), shared_mem_bytes: 0 };
        launch!(
            self,
            OPTIM,
            "lamb_stage1_f32",
            cfg,
            &*p,
            g,
            m,
            v,
            &mut update,
            &ni,
            &beta1,
            &beta2,
            &eps,
            &weight_decay,
            &bias_c1,
            &bias_c2,
            &grad_scale,
            &mut partial
        );
        launch!(
            self,
            OPTIM,
            "lamb_stage2_f32",
            launch::elementwise(n),
            p,
            &update,
            &ni,
            &lr,
            &partial,
            &nblocks,
            &weight_decay
        );
        Ok(())
    }
}

// ------------------------------------------------------------------ tensor level

/// Hyper-parameters of one fused Adam-family step on one parameter (see the module doc for how
/// each is formed).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub bias_c1: f64,
    pub bias_c2: f64,
    pub grad_scale: f64,
}

/// Which fused update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdamKind {
    AdamW,
    Lamb,
}

/// One fused AdamW or LAMB step, in place, on a parameter and its moments living on a CUDA
/// device (whole f32 storages, as optimizers create them), with gradient `g`.
pub fn fused_adam_update(
    kind: AdamKind,
    p: &crate::Tensor,
    g: &crate::Tensor,
    m: &crate::Tensor,
    v: &crate::Tensor,
    h: &AdamStep,
) -> Result<()> {
    use crate::Error;
    const OP: &str = "fused optimizer update";
    let n = p.numel();
    for (name, t) in [("gradient", g), ("first moment", m), ("second moment", v)] {
        if t.dims() != p.dims() || t.device() != p.device() {
            return Err(Error::Msg(format!(
                "{OP}: {name} {:?} on {} does not match the parameter {:?} on {}",
                t.dims(),
                t.device(),
                p.dims(),
                p.device()
            )));
        }
    }
    if ![p, m, v].iter().all(|t| t.layout().is_compact()) {
        return Err(Error::Msg(format!("{OP}: parameter and moments must be whole contiguous tensors")));
    }
    let dev = super::tensor::device_of(p)?;
    super::tensor::with_f32(g, OP, |_, gb| {
        let (mut ps, mut ms, mut vs) = (p.storage_mut(), m.storage_mut(), v.storage_mut());
        let (pb, mb, vb) =
            (ps.cuda_mut(OP)?.as_f32_mut(OP)?, ms.cuda_mut(OP)?.as_f32_mut(OP)?, vs.cuda_mut(OP)?.as_f32_mut(OP)?);
        match kind {
            AdamKind::AdamW => dev.adamw_step(pb, gb, mb, vb, n, h),
            AdamKind::Lamb => dev.lamb_step(pb, gb, mb, vb, n, h),
        }
    })
}
