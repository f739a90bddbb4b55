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
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        bias_c1: f64,
        bias_c2: f64,
        grad_scale: f64,
    ) -> Result<()> {
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
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        bias_c1: f64,
        bias_c2: f64,
        grad_scale: f64,
    ) -> Result<()> {
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
