//! Element types. Compute kernels on CPU exist for f32 (the training dtype) and f64 (gradient
//! checks and whole-model references); f16/bf16 are storage dtypes for checkpoints and, later,
//! CUDA autocast.

use crate::storage::CpuStorage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

/// The private supertrait that seals [`Float`].
mod sealed {
    /// Implemented for exactly the types the engine's kernels are written for; being unnameable
    /// outside this crate, no other type can implement [`Float`](super::Float).
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element that CPU kernels compute with.
///
/// The trait is sealed: only `f32` and `f64` implement it. Unsafe code in the engine and the
/// crates above it relies on that (`as_f32`, `gemm`, `with_scratch` and the sparse kernels
/// reinterpret a `[T]` as `[f32]` when `T::DTYPE == DType::F32`, and assume any bit pattern is a
/// valid `T` of alignment at most 8), so a foreign implementation would be unsound:
///
/// ```compile_fail,E0277
/// use spark_engine::{CpuStorage, DType, Float};
/// # use std::ops::*;
///
/// #[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
/// struct Fake(f64); // 8 bytes, claiming to be f32
/// # macro_rules! op { ($tr:ident, $f:ident, $o:tt) => {
/// #     impl $tr for Fake { type Output = Fake; fn $f(self, o: Fake) -> Fake { Fake(self.0 $o o.0) } }
/// # } }
/// # op!(Add, add, +); op!(Sub, sub, -); op!(Mul, mul, *); op!(Div, div, /);
/// # impl Neg for Fake { type Output = Fake; fn neg(self) -> Fake { Fake(-self.0) } }
/// # impl AddAssign for Fake { fn add_assign(&mut self, o: Fake) { self.0 += o.0 } }
/// # impl MulAssign for Fake { fn mul_assign(&mut self, o: Fake) { self.0 *= o.0 } }
/// # impl std::iter::Sum for Fake { fn sum<I: Iterator<Item = Fake>>(i: I) -> Fake { Fake(i.map(|f| f.0).sum()) } }
/// impl Float for Fake {
///     const DTYPE: DType = DType::F32;
///     // ...
/// #   const ZERO: Self = Fake(0.0);
/// #   const ONE: Self = Fake(1.0);
/// #   fn from_f64(v: f64) -> Self { Fake(v) }
/// #   fn to_f64(self) -> f64 { self.0 }
/// #   fn exp(self) -> Self { Fake(self.0.exp()) }
/// #   fn ln(self) -> Self { Fake(self.0.ln()) }
/// #   fn sqrt(self) -> Self { Fake(self.0.sqrt()) }
/// #   fn tanh(self) -> Self { Fake(self.0.tanh()) }
/// #   fn abs(self) -> Self { Fake(self.0.abs()) }
/// #   fn powf(self, e: Self) -> Self { Fake(self.0.powf(e.0)) }
/// #   fn max(self, o: Self) -> Self { Fake(self.0.max(o.0)) }
/// #   fn min(self, o: Self) -> Self { Fake(self.0.min(o.0)) }
/// #   fn is_finite(self) -> bool { self.0.is_finite() }
/// #   fn into_storage(v: Vec<Self>) -> CpuStorage { unimplemented!() }
/// #   fn slice(s: &CpuStorage) -> Option<&[Self]> { None }
/// #   fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> { None }
/// }
/// ```
pub trait Float:
    sealed::Sealed
    + Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    const DTYPE: DType;
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    fn is_finite(self) -> bool;
    /// Wraps a vector of this type into CPU storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Borrows the data of CPU storage of this type, or `None` for another dtype.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! impl_float {
    ($t:ty, $dt:ident, $var:ident) => {
        impl Float for $t {
            const DTYPE: DType = DType::$dt;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$var(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$var(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_float!(f32, F32, F32);
impl_float!(f64, F64, F64);

/// The slice as `&[f32]` when `T` is f32 (kernels with an f32-only fast path), else `None`.
pub fn as_f32<T: Float>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T::DTYPE == F32 means T is f32 (`Float` is sealed: only f32 and f64 implement it).
    (T::DTYPE == DType::F32).then(|| unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) })
}

/// `as_f32` for a mutable slice.
pub fn as_f32_mut<T: Float>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (T::DTYPE == DType::F32).then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f32, s.len()) })
}
