//! Without a usable GPU every CUDA request is a typed error, never a panic.

use spark_engine::cuda;
use spark_engine::{DType, Device, Error, Tensor};

#[test]
fn cuda_requests_without_a_gpu_are_typed_errors() {
    if cuda::cuda_missing_reason().is_none() {
        eprintln!("skipped: this machine has CUDA; see bad_ordinal_is_a_typed_error");
        return;
    }
    let e = Tensor::zeros(&[2], DType::F32, Device::Cuda(0)).unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable { device: Device::Cuda(0), .. }), "{e:?}");
    let cpu = Tensor::ones(&[3], DType::F32, Device::Cpu).unwrap();
    let e = cpu.to_device(Device::Cuda(1)).unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable { device: Device::Cuda(1), .. }), "{e:?}");
    assert!(e.to_string().contains("cuda:1"), "{e}");
    assert!(cuda::device_count().is_err());
    assert_eq!(Device::parse("auto").unwrap(), Device::Cpu, "auto falls back to the CPU");
}

#[test]
fn bad_ordinal_is_a_typed_error() {
    let e = cuda::device(4096).unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable { device: Device::Cuda(4096), .. }), "{e:?}");
}
