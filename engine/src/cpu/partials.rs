//! Parallel sums over per-task partial buffers: weight gradients reduced over images, sites or
//! tiles, where each thread accumulates its own copy instead of sharing one accumulator.

use rayon::prelude::*;

/// Runs `fill(task, partial)` for `task in 0..tasks` in parallel, each on its own zeroed buffer
/// of `len` floats, and returns their sum, added pairwise. One task's buffer is returned as it
/// is: no zeroed identity and no extra pass. No tasks give zeros.
pub fn sum_of_partials(tasks: usize, len: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    (0..tasks)
        .into_par_iter()
        .map(|t| {
            let mut partial = vec![0.0f32; len];
            fill(t, &mut partial);
            partial
        })
        .reduce_with(|mut acc, p| {
            acc.iter_mut().zip(&p).for_each(|(a, &v)| *a += v);
            acc
        })
        .unwrap_or_else(|| vec![0.0f32; len])
}
