//! The bridge between `Tensor` and device buffers: moving tensors between host and device,
//! reading a CUDA tensor's f32 buffer (compacting strided views on the device), and wrapping a
//! kernel's output as a tensor.

use super::elementwise::{Strided, MAX_DIMS};
use super::launch::int;
use super::storage::{CudaData, CudaStorage};
use super::{device, CudaDevice};
use crate::autograd::Op;
use crate::layout::Layout;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Result, Tensor};
use cudarc::driver::CudaSlice;
use std::sync::Arc;

/// The CUDA kernels compute in f32: any other dtype is `UnsupportedDType` naming `op`.
pub(crate) fn f32_only(t: &Tensor, op: &'static str) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype() });
    }
    Ok(())
}

/// The device of a CUDA tensor.
pub(crate) fn device_of(t: &Tensor) -> Result<Arc<CudaDevice>> {
    match t.device() {
        Device::Cuda(i) => device(i),
        Device::Cpu => Err(Error::Msg("expected a tensor on a CUDA device".into())),
    }
}

/// A tensor over a fresh f32 device buffer of `numel(shape)` elements.
pub(crate) fn from_f32(dev: &Arc<CudaDevice>, data: CudaSlice<f32>, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_storage(Storage::Cuda(CudaStorage::f32(dev.clone(), data, n)), shape)
}

/// Calls `f` with the f32 buffer holding `t`'s elements in row-major order from index 0: the
/// tensor's own buffer when it is a whole contiguous storage, else a compacted copy.
pub(crate) fn with_f32<R>(
    t: &Tensor,
    op: &'static str,
    f: impl FnOnce(&Arc<CudaDevice>, &CudaSlice<f32>) -> Result<R>,
) -> Result<R> {
    let dev = device_of(t)?;
    let guard = t.storage();
    let storage = guard.cuda(op)?;
    let buf = storage.as_f32(op)?;
    let l = t.layout();
    if l.is_compact() {
        return f(&dev, buf);
    }
    let compact = dev.strided_copy(buf, strided(l, op)?, l.numel())?;
    f(&dev, &compact)
}

/// `t` as a whole row-major f32 buffer from index 0 (itself when it already is one).
pub(crate) fn compact(t: &Tensor) -> Result<Tensor> {
    let l = t.layout();
    if l.is_compact() {
        return Ok(t.clone());
    }
    contiguous(t)
}

/// The device address of a compact f32 CUDA tensor, or 0 (a null pointer) for `None`: for
/// kernels whose optional arguments may be null. The tensor keeps the buffer alive, and the one
/// stream orders its later free after the kernel.
pub(crate) fn address(t: Option<&Tensor>, op: &'static str) -> Result<u64> {
    let Some(t) = t else { return Ok(0) };
    let l = t.layout();
    if !l.is_compact() {
        return Err(Error::Msg(format!("{op}: internal: address of a strided view (compact it first)")));
    }
    let dev = device_of(t)?;
    let guard = t.storage();
    let buf = guard.cuda(op)?.as_f32(op)?;
    let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(buf, dev.stream());
    Ok(ptr)
}

/// Overwrites the whole f32 storage of `dst` with `src`'s values (same shape, same device): the
/// device form of `Tensor::copy_from` (running statistics, weight loading).
pub(crate) fn copy_into(dst: &Tensor, src: &Tensor) -> Result<()> {
    const OP: &str = "copy_from";
    let l = dst.layout();
    let n = dst.numel();
    let src = compact(src)?;
    let dev = device_of(dst)?;
    if !l.is_compact() {
        return Err(Error::Msg(format!("{OP}: tensor of shape {:?} is a view, not a whole storage", l.shape)));
    }
    if src.same_storage(dst) {
        return Ok(());
    }
    let sg = src.storage();
    let from = sg.cuda(OP)?.as_f32(OP)?;
    let mut dg = dst.storage_mut();
    let to = dg.cuda_mut(OP)?.as_f32_mut(OP)?;
    if n > 0 {
        dev.stream().memcpy_dtod(&from.slice(..n), &mut to.slice_mut(..n)).map_err(|e| dev.driver_err(OP, e))?;
    }
    Ok(())
}

/// A row-major copy of a strided f32 view.
pub(crate) fn contiguous(t: &Tensor) -> Result<Tensor> {
    let dev = device_of(t)?;
    let guard = t.storage();
    let buf = guard.cuda("contiguous")?.as_f32("contiguous")?;
    let y = dev.strided_copy(buf, strided(t.layout(), "contiguous")?, t.numel())?;
    Ok(from_f32(&dev, y, t.dims()))
}

/// The view `l` as the strided-copy kernel's argument: size-1 dims dropped, dims that continue
/// each other merged, at most `MAX_DIMS` left.
pub(crate) fn strided(l: &Layout, op: &'static str) -> Result<Strided> {
    let (dims, st) = l.merged_dims();
    if dims.len() > MAX_DIMS {
        return Err(Error::Msg(format!(
            "{op}: a strided view of {} dims is beyond the CUDA kernels' {MAX_DIMS}",
            dims.len()
        )));
    }
    let mut s = Strided { ndim: dims.len() as i32, off: int(l.offset, op)?, ..Default::default() };
    for (i, (&d, &t)) in dims.iter().zip(&st).enumerate() {
        s.dims[i] = int(d, op)?;
        s.st[i] = int(t, op)?;
    }
    Ok(s)
}

/// Copies `t` to `target` (host <-> device, or device to device through the host).
pub(crate) fn to_device(t: &Tensor, target: Device) -> Result<Tensor> {
    let src = t.device();
    let moved = match (src, target) {
        (Device::Cpu, Device::Cuda(i)) => upload(t, &device(i)?)?,
        (Device::Cuda(_), Device::Cpu) => download(t)?,
        (Device::Cuda(_), Device::Cuda(j)) => upload(&download(t)?, &device(j)?)?,
        (Device::Cpu, Device::Cpu) => return Ok(t.clone()),
    };
    Ok(moved.attach_op(vec![t.clone()], ToDeviceOp { from: src }))
}

fn upload(t: &Tensor, dev: &Arc<CudaDevice>) -> Result<Tensor> {
    let n = t.numel();
    let data = match t.dtype() {
        DType::F32 => CudaData::F32(dev.upload(&t.to_vec::<f32>()?)?),
        DType::BF16 => {
            let v = t.contiguous()?;
            let guard = v.storage();
            let CpuStorage::BF16(all) = guard.cpu() else { unreachable!("dtype is bf16") };
            let l = v.layout();
            let bits: &[u16] = bytemuck::cast_slice(&all[l.offset..l.offset + n]);
            CudaData::BF16(dev.upload(bits)?)
        }
        d => {
            return Err(Error::UnsupportedDType {
                op: "to_device(cuda): the CUDA backend stores f32 and bf16",
                dtype: d,
            })
        }
    };
    Ok(Tensor::from_storage(Storage::Cuda(CudaStorage::new(dev.clone(), data, n)), t.dims()))
}

fn download(t: &Tensor) -> Result<Tensor> {
    let n = t.numel();
    if t.dtype() == DType::BF16 {
        let dev = device_of(t)?;
        let guard = t.storage();
        let CudaData::BF16(buf) = &guard.cuda("to_device")?.data else { unreachable!("dtype is bf16") };
        if !t.layout().is_compact() {
            return Err(Error::Msg(
                "to_device: strided bf16 views on CUDA are not supported; cast to f32 first".into(),
            ));
        }
        let bits = dev.download(buf, n)?;
        let v: Vec<half::bf16> = bits.into_iter().map(half::bf16::from_bits).collect();
        return Ok(Tensor::from_storage(Storage::Cpu(CpuStorage::BF16(v)), t.dims()));
    }
    let host = with_f32(t, "to_device", |dev, buf| dev.download(buf, n))?;
    Tensor::from_vec(host, t.dims())
}

/// f32 <-> bf16 on the device.
pub(crate) fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    let dev = device_of(t)?;
    let n = t.numel();
    let out = match (t.dtype(), dtype) {
        (DType::F32, DType::BF16) => {
            let bits = with_f32(t, "to_dtype", |dev, x| dev.cast_to_bf16(&x.slice(..), n))?;
            CudaData::BF16(bits)
        }
        (DType::BF16, DType::F32) => {
            let guard = t.storage();
            let CudaData::BF16(buf) = &guard.cuda("to_dtype")?.data else { unreachable!("dtype is bf16") };
            if !t.layout().is_compact() {
                return Err(Error::Msg("to_dtype: strided bf16 views on CUDA are not supported".into()));
            }
            CudaData::F32(dev.cast_to_f32(buf, n)?)
        }
        (from, to) => {
            return Err(Error::Msg(format!(
                "to_dtype on CUDA converts between f32 and bf16 only, not {from:?} -> {to:?}"
            )))
        }
    };
    Ok(Tensor::from_storage(Storage::Cuda(CudaStorage::new(dev, out, n)), t.dims()))
}

/// A tensor of `value` on the device (f32, or bf16 through a cast).
pub(crate) fn full(value: f64, shape: &[usize], dtype: DType, ordinal: usize) -> Result<Tensor> {
    let dev = device(ordinal)?;
    let n = shape.iter().product();
    let mut buf = dev.alloc::<f32>(n)?;
    dev.fill(&mut buf, value as f32, n)?;
    let t = from_f32(&dev, buf, shape);
    match dtype {
        DType::F32 => Ok(t),
        DType::BF16 => cast(&t, DType::BF16),
        d => Err(Error::UnsupportedDType { op: "full(cuda): the CUDA backend stores f32 and bf16", dtype: d }),
    }
}

struct ToDeviceOp {
    from: Device,
}
impl Op for ToDeviceOp {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(self.from)?)])
    }
}
