//! Matrix multiply: `[.., m, k] x [.., k, n]` with broadcast batch dims, on the CPU GEMM.

use crate::autograd::Op;
use crate::cpu::gemm::{gemm, MatRef};
use crate::layout::broadcast_shape;
use crate::{shape_err, with_float, Error, Result, Tensor};

struct MatmulOp;
impl Op for MatmulOp {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let ga = if a.requires_grad() { Some(g.matmul(&b.t()?)?.sum_to(a.dims())?) } else { None };
        let gb = if b.requires_grad() { Some(a.t()?.matmul(g)?.sum_to(b.dims())?) } else { None };
        Ok(vec![ga, gb])
    }
}

impl Tensor {
    /// Matrix product of the last two dims; leading (batch) dims broadcast. Both operands need
    /// rank >= 2.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (a, b) = (self, rhs);
        if a.rank() < 2 || b.rank() < 2 {
            return shape_err("matmul", format!("operands need rank >= 2, got {:?} and {:?}", a.dims(), b.dims()));
        }
        if a.dtype() != b.dtype() {
            return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype() });
        }
        if a.device() != b.device() {
            return Err(Error::DeviceMismatch { op: "matmul", lhs: a.device(), rhs: b.device() });
        }
        let (m, k) = (a.dims()[a.rank() - 2], a.dims()[a.rank() - 1]);
        let (k2, n) = (b.dims()[b.rank() - 2], b.dims()[b.rank() - 1]);
        if k != k2 {
            return shape_err("matmul", format!("inner dims differ: {:?} x {:?}", a.dims(), b.dims()));
        }
        if b.rank() == 2 && a.rank() > 2 {
            // A weight shared by every matrix (`Linear` on `[N, H, W, C]`): one GEMM with the
            // batch folded into the rows. Per matrix, the CPU would run N*H tiny serial GEMMs
            // forward and a [N*H, k, n] weight gradient to sum backward (40x slower, measured).
            let lead = &a.dims()[..a.rank() - 1];
            let rows = a.reshape(&[a.numel() / k, k])?;
            return rows.matmul(b)?.reshape(&[lead, &[n]].concat());
        }
        let batch = broadcast_shape("matmul", &a.dims()[..a.rank() - 2], &b.dims()[..b.rank() - 2])?;
        if !a.device().is_cpu() {
            let out = crate::cuda::ops::matmul(a, b, &batch, m, k, n)?;
            return Ok(out.attach_op(vec![a.clone(), b.clone()], MatmulOp));
        }
        let nb: usize = batch.iter().product();
        let expand = |t: &Tensor, r: usize, c: usize| -> Result<Tensor> {
            let mut s = batch.clone();
            s.extend([r, c]);
            t.detach().expand(&s)
        };
        let (ea, eb) = (expand(a, m, k)?, expand(b, k, n)?);
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let out = with_float!(a.dtype(), "matmul", |T| {
            let sa = ea.storage();
            let sb = eb.storage();
            let (da, db) = (T::slice(sa.cpu()).unwrap(), T::slice(sb.cpu()).unwrap());
            let (la, lb) = (ea.layout(), eb.layout());
            let r = la.rank();
            let mut c = vec![T::ZERO; nb * m * n];
            for bi in 0..nb {
                // Offsets of batch `bi` in each operand (strides may be 0 for broadcast dims).
                let (mut oa, mut ob, mut rem) = (la.offset, lb.offset, bi);
                for d in (0..r - 2).rev() {
                    let i = rem % batch[d];
                    rem /= batch[d];
                    oa += i * la.strides[d];
                    ob += i * lb.strides[d];
                }
                let ma = MatRef { data: &da[oa..], rows: m, cols: k, rs: la.strides[r - 2], cs: la.strides[r - 1] };
                let mb = MatRef { data: &db[ob..], rows: k, cols: n, rs: lb.strides[r - 2], cs: lb.strides[r - 1] };
                gemm(ma, mb, &mut c[bi * m * n..(bi + 1) * m * n], n, false);
            }
            Tensor::from_vec(c, &out_shape)
        })?;
        Ok(out.attach_op(vec![a.clone(), b.clone()], MatmulOp))
    }
}
