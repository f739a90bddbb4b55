//! Run-time instruction-set dispatch for `#[inline(always)]` loop bodies: one body, compiled for
//! AVX-512, AVX2+FMA and the baseline target, chosen once per call from what the CPU reports.

/// Which instruction set a multiversioned body runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Base,
}

/// The best instruction set this CPU has (the detection itself is cached by std).
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Base
}

/// Defines `fn $name<T: Float>(isa: Isa, args..) -> ret` that runs the `#[inline(always)]` body
/// `$body` compiled for `isa`.
macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $crate::cpu::isa::multiversion!($name, $body, ($($arg: $ty),*) -> ());
    };
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<T: Float>(isa: $crate::cpu::isa::Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn v512<T: Float>($($arg: $ty),*) -> $ret { $body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v256<T: Float>($($arg: $ty),*) -> $ret { $body($($arg),*) }
            match isa {
                // SAFETY: `isa()` only reports features the CPU has.
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::isa::Isa::Avx512 => unsafe { v512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::isa::Isa::Avx2 => unsafe { v256($($arg),*) },
                $crate::cpu::isa::Isa::Base => $body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
