//! Where a tensor's storage lives. Every tensor carries one; ops check that their operands agree
//! and dispatch to the kernels of that device.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal (see `crate::cuda`).
    Cuda(usize),
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when one is usable, else the CPU).
    pub fn parse(s: &str) -> crate::Result<Device> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        if s == "auto" {
            return Ok(Device::auto());
        }
        if s == "cuda" {
            return Ok(Device::Cuda(0));
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            if let Ok(i) = n.parse() {
                return Ok(Device::Cuda(i));
            }
        }
        Err(crate::Error::Msg(format!("unknown device '{s}': expected cpu, cuda, cuda:N or auto")))
    }
    /// The first CUDA device when it opens, else the CPU.
    pub fn auto() -> Device {
        match crate::cuda::device(0) {
            Ok(_) => Device::Cuda(0),
            Err(_) => Device::Cpu,
        }
    }
    pub fn is_cpu(self) -> bool {
        self == Device::Cpu
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
