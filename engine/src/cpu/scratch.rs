//! Per-thread scratch buffers for kernels (im2col columns, partial gradients). Reusing them
//! avoids page-faulting fresh multi-megabyte allocations on every call.

use crate::Float;
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a zero-initialised-once (contents unspecified) slice of `len` elements of `T`.
/// The thread's buffer is reused when free; a re-entrant call (rayon work stealing while an
/// outer task holds it) gets a fresh allocation instead.
pub fn with_scratch<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < words {
                v.resize(words, 0.0);
            }
            // SAFETY: T is f32 or f64 (`Float` is sealed): alignment <= 8, any bit pattern valid; the buffer
            // holds at least len * size_of::<T>() bytes.
            let s = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut T, len) };
            f(s)
        }
        Err(_) => {
            let mut v = vec![T::ZERO; len];
            f(&mut v)
        }
    })
}
