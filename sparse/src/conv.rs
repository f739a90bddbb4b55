//! Sparse 2-D convolution: submanifold (stride 1, output sites = input sites), strided (output
//! sites from the context) and depthwise, as differentiable engine ops.
//!
//! Semantics equal SparK's dense simulation: a dense conv on the zero-filled input, then the
//! output multiplied by the output mask. Inactive inputs contribute nothing and inactive outputs
//! are not stored; active outputs get the bias even when no input in their window is active.

use crate::conv_fused as fused;
use crate::conv_kernels::{self as k, ConvDims};
use crate::conv_winograd as winograd;
use crate::{KernelGeom, KernelMap, SparseContext, SparseTensor};
use spark_engine::{as_f32, with_float, Conv2dParams, DType, Error, Float, Op, Result, Tensor};
use std::sync::Arc;

/// How a groups == 1 convolution is computed. Both forms give the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// Chosen by measured speed (see `docs/benchmarks.md`): the implicit GEMM.
    Auto,
    /// Classic rulebook: per kernel offset gather, GEMM `[P_k, Cin] x [Cin, Cout]`, scatter-add.
    PerOffset,
    /// Gather `[N_out, K*Cin]` along the neighbour table, one GEMM with `[K*Cin, Cout]`. In f32
    /// the gather is fused into the GEMM's packing (`conv_fused`); f64 materialises it.
    ImplicitGemm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PerOffset,
    Implicit,
    Depthwise,
}

/// Sparse conv with PyTorch `Conv2d` semantics on the active sites. `weight` is
/// `[Cout, Cin/groups, kh, kw]`, `bias` `[Cout]`. Stride 1 with "same" output size keeps the
/// input sites (submanifold); anything else takes its output sites from `ctx`.
pub fn sparse_conv2d(
    x: &SparseTensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    ctx: &mut SparseContext,
) -> Result<SparseTensor> {
    sparse_conv2d_with(x, weight, bias, params, ctx, ConvAlgo::Auto)
}

/// `sparse_conv2d` with an explicit algorithm for groups == 1 (benches and tests compare them).
pub fn sparse_conv2d_with(
    x: &SparseTensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
    ctx: &mut SparseContext,
    algo: ConvAlgo,
) -> Result<SparseTensor> {
    let geom = check_conv(x, weight, bias, &params)?;
    let out_set = ctx.output_set(&x.active, geom)?;
    let map = ctx.kernel_map(&x.active, &out_set, geom)?;
    let features = conv_features(&x.features, weight, bias, &map, params.groups, algo)?;
    Ok(SparseTensor { features, active: out_set })
}

fn check_conv(x: &SparseTensor, weight: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<KernelGeom> {
    let op = "sparse_conv2d";
    let cin = x.channels();
    let &[cout, cig, kh, kw] = weight.dims() else {
        return Err(Error::Shape {
            op,
            msg: format!("weight must be [Cout, Cin/groups, kh, kw], got {:?}", weight.dims()),
        });
    };
    let groups = p.groups;
    if groups == 0 || !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) || cig * groups != cin {
        return Err(Error::Shape {
            op,
            msg: format!("input has {cin} channels, weight {:?} with groups {groups} does not fit", weight.dims()),
        });
    }
    if let Some(b) = bias {
        if b.dims() != [cout] {
            return Err(Error::Shape { op, msg: format!("bias must be [{cout}], got {:?}", b.dims()) });
        }
        if b.dtype() != x.features.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.features.dtype(), rhs: b.dtype() });
        }
    }
    if weight.dtype() != x.features.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: x.features.dtype(), rhs: weight.dtype() });
    }
    let geom = KernelGeom::conv([kh, kw], p);
    geom.out_size(op, x.active.h(), x.active.w())?;
    Ok(geom)
}

/// The conv on a feature matrix over a prebuilt kernel map: `x` `[map.n_in(), Cin]` ->
/// `[map.n_out(), Cout]`. Lower level than `sparse_conv2d` (no context), for benches.
pub fn conv_features(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    map: &Arc<KernelMap>,
    groups: usize,
    algo: ConvAlgo,
) -> Result<Tensor> {
    let op = "sparse_conv2d";
    let &[cout, cig, kh, kw] = weight.dims() else {
        return Err(Error::Shape { op, msg: format!("weight must be 4-D, got {:?}", weight.dims()) });
    };
    let cin = cig * groups;
    if x.dims() != [map.n_in(), cin] || kh * kw != map.volume() || groups == 0 || !cout.is_multiple_of(groups) {
        return Err(Error::Shape {
            op,
            msg: format!(
                "features {:?} / weight {:?} (groups {groups}) do not fit a kernel map of {} offsets over {} input rows",
                x.dims(),
                weight.dims(),
                map.volume(),
                map.n_in()
            ),
        });
    }
    let d = ConvDims { cin, cout, groups, kvol: kh * kw };
    let kind = if groups > 1 && groups == cin && cout == cin {
        Kind::Depthwise
    } else if groups > 1 {
        Kind::Implicit
    } else {
        match algo {
            // The measured choice for groups == 1 (docs/benchmarks.md, section "sparse"): the implicit
            // GEMM. In f32 it packs its operands straight from the feature rows with the channels as GEMM
            // rows (`conv_fused`), which beat the per-offset rulebook on every ResNet / ConvNeXt shape
            // (3x3 64->64 at 56x56, mask 0.6: 32 vs 55 ms fwd+bwd); an identity 1x1 map is one plain GEMM
            // on the features either way. The per-offset form stays as the classic reference.
            ConvAlgo::Auto | ConvAlgo::ImplicitGemm => Kind::Implicit,
            ConvAlgo::PerOffset => Kind::PerOffset,
        }
    };
    let mut inputs = vec![x.clone(), weight.clone()];
    if let Some(b) = bias {
        inputs.push(b.clone());
    }
    let n_out = map.n_out();
    // f32 forward: channel-major fused GEMM, also for identity 1x1 maps, whose plain GEMM would
    // have Cout (often 64) as its column dimension and leave a third of the tiles empty.
    if kind == Kind::Implicit && x.dtype() == DType::F32 {
        let b = bias.map(|b| b.to_vec::<f32>()).transpose()?;
        let y = weight.with_slice(|w: &[f32]| {
            x.with_slice(|xs: &[f32]| match winograd_tiles(map, d) {
                Some(tiles) => winograd::forward(xs, w, b.as_deref(), tiles, d.cin, d.cout),
                None => fused::forward(xs, w, b.as_deref(), map, d),
            })
        })??;
        return Ok(Tensor::from_vec_op(y, &[n_out, cout], inputs, ConvOp { map: map.clone(), d, kind }));
    }
    with_float!(x.dtype(), op, |T| {
        let w = weight.to_vec::<T>()?;
        let b = bias.map(|b| b.to_vec::<T>()).transpose()?;
        let y = x.with_slice(|xs: &[T]| match kind {
            Kind::PerOffset => k::per_offset_forward(xs, &w, b.as_deref(), map, d),
            Kind::Implicit => k::implicit_forward(xs, &w, b.as_deref(), map, d),
            Kind::Depthwise => k::depthwise_forward(xs, &w, b.as_deref(), map, cin),
        })?;
        Ok(Tensor::from_vec_op(y, &[n_out, cout], inputs, ConvOp { map: map.clone(), d, kind }))
    })
}

struct ConvOp {
    map: Arc<KernelMap>,
    d: ConvDims,
    kind: Kind,
}

impl Op for ConvOp {
    fn name(&self) -> &'static str {
        "sparse_conv2d"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, weight) = (&inputs[0], &inputs[1]);
        let want_dx = x.requires_grad();
        let want_dw = weight.requires_grad();
        let want_db = inputs.len() > 2 && inputs[2].requires_grad();
        let (map, d) = (&*self.map, self.d);
        with_float!(g.dtype(), "sparse_conv2d backward", |T| {
            let g = g.contiguous()?;
            let (dx, dw, db) = weight.with_slice(|w: &[T]| {
                g.with_slice(|dy: &[T]| {
                    x.with_slice(|xs: &[T]| {
                        let (dx, dw) = match self.kind {
                            Kind::PerOffset => k::per_offset_backward(xs, w, dy, map, d, want_dx, want_dw),
                            Kind::Implicit => (
                                if want_dx { implicit_grad_input(dy, w, map, d) } else { Vec::new() },
                                if want_dw { implicit_grad_weight(xs, dy, map, d) } else { Vec::new() },
                            ),
                            Kind::Depthwise => (
                                if want_dx { k::depthwise_grad_input(dy, w, map, d.cin) } else { Vec::new() },
                                if want_dw { k::depthwise_grad_weight(xs, dy, map, d.cin) } else { Vec::new() },
                            ),
                        };
                        let db = if want_db { k::column_sums(dy, d.cout) } else { Vec::new() };
                        (dx, dw, db)
                    })
                })
            })???;
            let mut grads = vec![
                if want_dx { Some(Tensor::from_vec(dx, x.dims())?) } else { None },
                if want_dw { Some(Tensor::from_vec(dw, weight.dims())?) } else { None },
            ];
            if inputs.len() > 2 {
                grads.push(if want_db { Some(Tensor::from_vec(db, inputs[2].dims())?) } else { None });
            }
            Ok(grads)
        })
    }
}

/// The Winograd tiles when this conv runs on them: a 3x3 submanifold map, one group, enough
/// channels (`conv_winograd::pays_off`), and tiles that are mostly active (scattered sites, or
/// odd 3x3 maps, would pay for up to four outputs per kept one).
fn winograd_tiles(map: &KernelMap, d: ConvDims) -> Option<&winograd::WinogradTiles> {
    map.winograd_tiles()
        .filter(|t| d.groups == 1 && winograd::pays_off(d.cin, d.cout) && t.len() * 4 * 5 <= map.n_out() * 7)
}

/// A fused kernel's f32 result as `Vec<T>`; only reached when `T` is f32.
fn from_f32<T: Float>(v: Vec<f32>) -> Vec<T> {
    assert_eq!(T::DTYPE, DType::F32, "fused sparse conv kernels are f32 only");
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is f32 (checked above; `Float` is sealed, so the dtype names the type), so
    // pointer, length and capacity describe a valid Vec<T>.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// Implicit-GEMM input gradient: fused f32 kernel for stride-1 maps that gather, else the generic
/// one (an identity 1x1 map is a plain GEMM on the features there).
fn implicit_grad_input<T: Float>(dy: &[T], w: &[T], map: &KernelMap, d: ConvDims) -> Vec<T> {
    match (as_f32(dy), as_f32(w), map.geom().stride == [1, 1] && !map.is_identity()) {
        (Some(dy), Some(w), true) => from_f32(match winograd_tiles(map, d) {
            Some(tiles) => winograd::grad_input(dy, w, tiles, d.cin, d.cout),
            None => fused::grad_input_stride1(dy, w, map, d),
        }),
        _ => k::implicit_grad_input(dy, w, map, d),
    }
}

/// Implicit-GEMM weight gradient in f32: tile-sparse Winograd where the forward takes it and
/// the conv has the work to amortise it, else
/// the fused kernel (for an identity 1x1 map one GEMM `dY^T · X` with Cout as rows); the generic
/// one otherwise.
fn implicit_grad_weight<T: Float>(x: &[T], dy: &[T], map: &KernelMap, d: ConvDims) -> Vec<T> {
    match (as_f32(x), as_f32(dy)) {
        (Some(x), Some(dy)) => from_f32(match winograd_tiles(map, d) {
            Some(tiles) if winograd::weight_grad_pays_off(tiles, d.cin, d.cout) => {
                winograd::grad_weight(x, dy, tiles, d.cin, d.cout)
            }
            _ => fused::grad_weight(x, dy, map, d),
        }),
        _ => k::implicit_grad_weight(x, dy, map, d),
    }
}
