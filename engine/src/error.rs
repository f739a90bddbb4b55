//! Typed errors. Every message names the op and the shapes involved, so a user can tell which
//! call went wrong without a backtrace.

use crate::{DType, Device};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Shapes that do not fit the op (`op` names it, `msg` says what was expected).
    Shape { op: &'static str, msg: String },
    /// Two operands of one op live on different devices.
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },
    /// Two operands of one op have different dtypes.
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },
    /// The op is not implemented for this dtype (for example f16 compute on CPU).
    UnsupportedDType { op: &'static str, dtype: DType },
    /// The device is not available (for example CUDA on a machine without a GPU).
    DeviceUnavailable { device: Device, msg: String },
    /// Backward was asked for through a graph that cannot provide it.
    Autograd(String),
    /// Anything else, with a message that says what and where.
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg } => write!(f, "{op}: shape error: {msg}"),
            Error::DeviceMismatch { op, lhs, rhs } => {
                write!(f, "{op}: operands are on different devices ({lhs} vs {rhs})")
            }
            Error::DTypeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: operands have different dtypes ({lhs:?} vs {rhs:?})")
            }
            Error::UnsupportedDType { op, dtype } => {
                write!(f, "{op}: dtype {dtype:?} is not supported by this op on this device")
            }
            Error::DeviceUnavailable { device, msg } => write!(f, "device {device} unavailable: {msg}"),
            Error::Autograd(m) => write!(f, "autograd: {m}"),
            Error::Msg(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for a shape error.
pub fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, msg: msg.into() })
}

/// Returns a shape error unless `cond` holds.
#[macro_export]
macro_rules! ensure_shape {
    ($cond:expr, $op:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Error::Shape { op: $op, msg: format!($($fmt)+) });
        }
    };
}
