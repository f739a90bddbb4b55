//! The `Tensor` handle: a cheap clone (`Arc`) of storage + layout + dtype + device, and, when it
//! takes part in autograd, the node that made it.

use crate::autograd::{self, GradStore, Node, Op};
use crate::layout::{numel, Layout};
use crate::storage::{CpuStorage, Storage};
use crate::{is_grad_enabled, DType, Device, Error, Float, Result, Rng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Unique identity of a tensor handle (gradients are keyed by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

fn next_id() -> TensorId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    node: Option<Arc<Node>>,
    /// A leaf that gradients are computed for (a parameter or an input under test).
    is_variable: bool,
}

#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}, {}", self.dims(), self.dtype().name(), self.device())?;
        if self.requires_grad() {
            write!(f, ", grad")?;
        }
        write!(f, "]")
    }
}

/// Dispatches on a float dtype: binds the type alias `$T` to f32 or f64 in `$body`.
#[macro_export]
macro_rules! with_float {
    ($dtype:expr, $op:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                #[allow(unused_imports)]
                use $crate::Float as _;
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                #[allow(unused_imports)]
                use $crate::Float as _;
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            d => Err($crate::Error::UnsupportedDType { op: $op, dtype: d }),
        }
    };
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    fn make(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        dtype: DType,
        device: Device,
        node: Option<Arc<Node>>,
    ) -> Tensor {
        Tensor(Arc::new(TensorInner { id: next_id(), storage, layout, dtype, device, node, is_variable: false }))
    }

    /// A tensor over fresh storage (no autograd history).
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        let (dtype, device) = (storage.dtype(), storage.device());
        Self::make(Arc::new(RwLock::new(storage)), Layout::contiguous(shape), dtype, device, None)
    }

    /// A CPU tensor from a vector; errors if the length does not match the shape.
    pub fn from_vec<T: Float>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Shape {
                op: "from_vec",
                msg: format!("{} elements do not fill shape {shape:?} ({} elements)", data.len(), numel(shape)),
            });
        }
        Ok(Self::from_storage(Storage::Cpu(T::into_storage(data)), shape))
    }

    pub fn from_slice<T: Float>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// The output of a differentiable op: records the graph when gradients are enabled and any
    /// input requires grad.
    pub fn from_op(storage: Storage, shape: &[usize], inputs: Vec<Tensor>, op: impl Op + 'static) -> Tensor {
        let t = Self::from_storage(storage, shape);
        t.with_node(inputs, op)
    }

    /// Shorthand for `from_op` over a CPU vector.
    pub fn from_vec_op<T: Float>(data: Vec<T>, shape: &[usize], inputs: Vec<Tensor>, op: impl Op + 'static) -> Tensor {
        debug_assert_eq!(data.len(), numel(shape));
        Self::from_op(Storage::Cpu(T::into_storage(data)), shape, inputs, op)
    }

    /// Records `op` (with `inputs`) as the maker of this freshly built tensor.
    pub fn attach_op(self, inputs: Vec<Tensor>, op: impl Op + 'static) -> Tensor {
        self.with_node(inputs, op)
    }

    fn with_node(self, inputs: Vec<Tensor>, op: impl Op + 'static) -> Tensor {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        // A shared handle is copied under a fresh id: keeping the old id would make the op's
        // output and its input (often that same handle) one graph node, losing its gradient.
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|a| TensorInner { id: next_id(), ..clone_inner(&a) });
        Tensor(Arc::new(TensorInner { node: Some(Arc::new(Node { op: Box::new(op), inputs })), ..inner }))
    }

    /// A view sharing this tensor's storage with another layout, recorded as `op`.
    pub fn view_op(&self, layout: Layout, op: impl Op + 'static) -> Tensor {
        let t = Self::make(self.0.storage.clone(), layout, self.dtype(), self.device(), None);
        t.with_node(vec![self.clone()], op)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(0.0, shape, dtype, device)
    }
    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(1.0, shape, dtype, device)
    }
    pub fn full(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        if let Device::Cuda(i) = device {
            return crate::cuda::tensor::full(value, shape, dtype, i);
        }
        let n = numel(shape);
        let cpu = match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::F16 => CpuStorage::F16(vec![half::f16::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f64(value); n]),
        };
        Ok(Self::from_storage(Storage::Cpu(cpu), shape))
    }
    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.dims(), self.dtype(), self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        Self::ones(self.dims(), self.dtype(), self.device())
    }
    pub fn full_like(&self, v: f64) -> Result<Tensor> {
        Self::full(v, self.dims(), self.dtype(), self.device())
    }
    /// A 0-d tensor.
    pub fn scalar(v: f64, dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(v, &[], dtype, device)
    }
    /// `start, start+step, ...` below `end` (1-D).
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: Device) -> Result<Tensor> {
        if step == 0.0 || (end - start) / step < 0.0 {
            return Err(Error::Msg(format!("arange: empty or infinite range {start}..{end} step {step}")));
        }
        let n = ((end - start) / step).ceil() as usize;
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Self::from_vec(v, &[n])?.to_dtype(dtype)?.to_device(device)
    }
    /// Uniform in [lo, hi).
    pub fn rand(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng, dtype: DType, device: Device) -> Result<Tensor> {
        let v: Vec<f64> = (0..numel(shape)).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        Self::from_vec(v, shape)?.to_dtype(dtype)?.to_device(device)
    }
    /// Normal(mean, std).
    pub fn randn(shape: &[usize], mean: f64, std: f64, rng: &mut Rng, dtype: DType, device: Device) -> Result<Tensor> {
        let v: Vec<f64> = (0..numel(shape)).map(|_| mean + std * rng.normal()).collect();
        Self::from_vec(v, shape)?.to_dtype(dtype)?.to_device(device)
    }
    /// Normal(mean, std) truncated to [lo, hi] (absolute bounds, as `torch.nn.init.trunc_normal_`).
    #[allow(clippy::too_many_arguments)]
    pub fn trunc_normal(
        shape: &[usize],
        mean: f64,
        std: f64,
        lo: f64,
        hi: f64,
        rng: &mut Rng,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let v: Vec<f64> = (0..numel(shape)).map(|_| rng.trunc_normal(mean, std, lo, hi)).collect();
        Self::from_vec(v, shape)?.to_dtype(dtype)?.to_device(device)
    }

    // ---------------------------------------------------------------- accessors

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn dims(&self) -> &[usize] {
        &self.0.layout.shape
    }
    /// Same as `dims`, as an owned vector.
    pub fn shape(&self) -> Vec<usize> {
        self.0.layout.shape.clone()
    }
    pub fn dim(&self, d: isize) -> Result<usize> {
        let i = crate::layout::norm_dim("dim", d, self.rank())?;
        Ok(self.dims()[i])
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        self.0.device
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }
    /// True for variables and for results of recorded ops.
    pub fn requires_grad(&self) -> bool {
        self.0.is_variable || self.0.node.is_some()
    }
    pub fn is_variable(&self) -> bool {
        self.0.is_variable
    }
    /// Name of the op that made this tensor, if recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.node.as_ref().map(|n| n.op.name())
    }
    /// True when both handles read the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// A leaf variable over the same storage (a new id): gradients will be computed for it.
    pub fn to_variable(&self) -> Tensor {
        Tensor(Arc::new(TensorInner { id: next_id(), node: None, is_variable: true, ..clone_inner(&self.0) }))
    }
    /// The same data without autograd history (a new id, shared storage).
    pub fn detach(&self) -> Tensor {
        Tensor(Arc::new(TensorInner { id: next_id(), node: None, is_variable: false, ..clone_inner(&self.0) }))
    }

    // ---------------------------------------------------------------- data access

    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }
    pub fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f` with the elements in row-major order: a borrow when the view is contiguous, a
    /// gathered copy otherwise.
    pub fn with_slice<T: Float, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        check_cpu(self.device(), "with_slice")?;
        let guard = self.storage();
        let all =
            T::slice(guard.cpu()).ok_or(Error::DTypeMismatch { op: "with_slice", lhs: self.dtype(), rhs: T::DTYPE })?;
        let l = self.layout();
        if l.is_contiguous() {
            Ok(f(&all[l.offset..l.offset + l.numel()]))
        } else {
            let v: Vec<T> = l.gather(all);
            Ok(f(&v))
        }
    }

    /// The elements in row-major order as a vector of `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Float>(&self) -> Result<Vec<T>> {
        if !self.device().is_cpu() {
            return self.detach().to_device(Device::Cpu)?.to_vec();
        }
        self.with_slice(|s: &[T]| s.to_vec())
    }
    /// Any dtype, converted to f64 (for tests and reports).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        self.detach().to_device(Device::Cpu)?.to_dtype(DType::F64)?.to_vec::<f64>()
    }
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.detach().to_device(Device::Cpu)?.to_dtype(DType::F32)?.to_vec::<f32>()
    }
    /// The single element of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::Shape {
                op: "to_scalar",
                msg: format!("tensor of shape {:?} is not a single element", self.dims()),
            });
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// Overwrites the whole storage in place (optimizer updates, weight loading). The tensor must
    /// own a contiguous storage of exactly its size; no graph is recorded.
    pub fn update<T: Float>(&self, f: impl FnOnce(&mut [T])) -> Result<()> {
        check_cpu(self.device(), "update")?;
        let l = self.layout();
        let mut guard = self.storage_mut();
        let cpu = guard.cpu_mut();
        let len = cpu.len();
        let dtype = cpu.dtype();
        let all = T::slice_mut(cpu).ok_or(Error::DTypeMismatch { op: "update", lhs: dtype, rhs: T::DTYPE })?;
        if !l.is_contiguous() || l.offset != 0 || l.numel() != len {
            return Err(Error::Msg(format!("update: tensor of shape {:?} is a view, not a whole storage", l.shape)));
        }
        f(all);
        Ok(())
    }

    /// Copies `src`'s values into this tensor's storage (same shape; dtype converted).
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.dims() != self.dims() {
            return Err(Error::Shape {
                op: "copy_from",
                msg: format!("source shape {:?} != destination shape {:?}", src.dims(), self.dims()),
            });
        }
        let src = src.to_dtype(self.dtype())?;
        if !self.device().is_cpu() {
            return crate::cuda::tensor::copy_into(self, &src.detach().to_device(self.device())?);
        }
        with_float!(self.dtype(), "copy_from", |T| {
            let v = src.to_vec::<T>()?;
            self.update::<T>(|d| d.copy_from_slice(&v))
        })
    }

    // ---------------------------------------------------------------- conversions

    /// Converts the dtype (differentiable between float dtypes).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if !self.device().is_cpu() {
            let out = crate::cuda::tensor::cast(self, dtype)?;
            return Ok(out.attach_op(vec![self.clone()], CastOp { from: self.dtype() }));
        }
        let src = self.contiguous()?;
        let guard = src.storage();
        let l = src.layout();
        let range = l.offset..l.offset + l.numel();
        let as_f64: Vec<f64> = match guard.cpu() {
            CpuStorage::F32(v) => v[range].iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v[range].to_vec(),
            CpuStorage::F16(v) => v[range].iter().map(|x| x.to_f64()).collect(),
            CpuStorage::BF16(v) => v[range].iter().map(|x| x.to_f64()).collect(),
        };
        let out = match dtype {
            DType::F32 => CpuStorage::F32(as_f64.iter().map(|&x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(as_f64),
            DType::F16 => CpuStorage::F16(as_f64.iter().map(|&x| half::f16::from_f64(x)).collect()),
            DType::BF16 => CpuStorage::BF16(as_f64.iter().map(|&x| half::bf16::from_f64(x)).collect()),
        };
        Ok(Tensor::from_op(Storage::Cpu(out), self.dims(), vec![self.clone()], CastOp { from: self.dtype() }))
    }

    /// Copies to `device` (differentiable: the gradient moves back). A CUDA device that cannot
    /// be used is `Error::DeviceUnavailable`.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        crate::cuda::tensor::to_device(self, device)
    }

    /// A row-major copy unless already contiguous (differentiable).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        if !self.device().is_cpu() {
            let out = crate::cuda::tensor::contiguous(self)?;
            return Ok(out.attach_op(vec![self.clone()], IdentityOp));
        }
        let guard = self.storage();
        let l = self.layout();
        let cpu = match guard.cpu() {
            CpuStorage::F32(v) => CpuStorage::F32(gather(v, l)),
            CpuStorage::F64(v) => CpuStorage::F64(gather(v, l)),
            CpuStorage::F16(v) => CpuStorage::F16(gather(v, l)),
            CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, l)),
        };
        Ok(Tensor::from_op(Storage::Cpu(cpu), self.dims(), vec![self.clone()], IdentityOp))
    }

    // ---------------------------------------------------------------- autograd entry points

    /// Backpropagates from a one-element tensor (seed 1) and returns the leaf gradients.
    pub fn backward(&self) -> Result<GradStore> {
        let mut store = GradStore::new();
        self.backward_into(&mut store)?;
        Ok(store)
    }

    /// Like `backward`, but adds into an existing store (gradient accumulation).
    pub fn backward_into(&self, store: &mut GradStore) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward needs a one-element tensor, got shape {:?}; use backward_with(grad)",
                self.dims()
            )));
        }
        let seed = self.ones_like()?;
        autograd::backward_into(self, seed, store)
    }

    /// Backpropagates a given upstream gradient (same shape as `self`).
    pub fn backward_with(&self, grad: &Tensor) -> Result<GradStore> {
        if grad.dims() != self.dims() {
            return Err(Error::Shape {
                op: "backward_with",
                msg: format!("grad shape {:?} != tensor shape {:?}", grad.dims(), self.dims()),
            });
        }
        let mut store = GradStore::new();
        autograd::backward_into(self, grad.detach(), &mut store)?;
        Ok(store)
    }
}

fn clone_inner(a: &TensorInner) -> TensorInner {
    TensorInner {
        id: a.id,
        storage: a.storage.clone(),
        layout: a.layout.clone(),
        dtype: a.dtype,
        device: a.device,
        node: a.node.clone(),
        is_variable: a.is_variable,
    }
}

fn gather<T: Copy>(v: &[T], l: &Layout) -> Vec<T> {
    l.gather(v)
}

pub(crate) fn check_cpu(device: Device, op: &'static str) -> Result<()> {
    if device.is_cpu() {
        Ok(())
    } else {
        Err(Error::DeviceUnavailable { device, msg: format!("{op} has no kernel for this device in this build") })
    }
}

struct IdentityOp;
impl Op for IdentityOp {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

struct CastOp {
    from: DType,
}
impl Op for CastOp {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.from)?)])
    }
}
