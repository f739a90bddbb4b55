//! Row index-select / index-add and their middle-axis versions (gather / scatter_add) against
//! `Tensor::index_select` and its autograd adjoint, with repeated and negative (padding) indices.

use super::{assert_close, gpu, uniform};
use spark_engine::Tensor;

/// Absolute tolerance of the scatter-adds: up to ~600 values of [-1, 1) land on one element
/// (the last row of the big case), added in another order by the atomics than by the CPU.
const ADD_ATOL: f64 = 2e-4;

/// `n` indices below `size`: repeats everywhere, the last entry, and every seventh one negative.
fn indices(n: usize, size: usize) -> Vec<i32> {
    (0..n)
        .map(|k| match k % 7 {
            3 => -1,
            5 => size as i32 - 1,
            _ => ((k * 31 + k / 3) % size) as i32,
        })
        .collect()
}

/// CPU index_select along `dim` with zeros where the index is negative.
fn cpu_select(x: &Tensor, dim: usize, idx: &[i32]) -> Vec<f64> {
    let clamped: Vec<usize> = idx.iter().map(|&i| i.max(0) as usize).collect();
    let mut y = x.index_select(dim as isize, &clamped).unwrap().to_vec_f64().unwrap();
    let inner: usize = x.dims()[dim + 1..].iter().product();
    for (t, v) in y.iter_mut().enumerate() {
        if idx[(t / inner) % idx.len()] < 0 {
            *v = 0.0;
        }
    }
    y
}

/// `y0` plus the CPU adjoint of index_select along `dim` applied to `src` (the slices of `src`
/// at negative indices are skipped).
fn cpu_add(y0: &Tensor, dim: usize, idx: &[i32], src: &Tensor) -> Vec<f64> {
    let pos: Vec<usize> = (0..idx.len()).filter(|&k| idx[k] >= 0).collect();
    let valid: Vec<usize> = pos.iter().map(|&k| idx[k] as usize).collect();
    let upstream = src.index_select(dim as isize, &pos).unwrap();
    let v = y0.to_variable();
    let grads = v.index_select(dim as isize, &valid).unwrap().backward_with(&upstream).unwrap();
    let g = grads.get(&v).unwrap().to_vec_f64().unwrap();
    y0.to_vec_f64().unwrap().iter().zip(g).map(|(a, b)| a + b).collect()
}

#[test]
fn index_select_and_index_add_rows_equal_the_cpu() {
    let Some(dev) = gpu("index rows") else { return };
    // The last case has more elements than the capped grid of 256-thread blocks covers at once.
    for (case, &(rows, cols, nidx)) in [(50, 300, 1000), (1, 7, 5), (300, 4100, 4200)].iter().enumerate() {
        let what = format!("[{rows}, {cols}] by {nidx} indices");
        let seed = 40 + 10 * case as u64;
        let x = Tensor::from_vec(uniform(rows * cols, -1.0, 1.0, seed), &[rows, cols]).unwrap();
        let idx = indices(nidx, rows);
        let di = dev.upload(&idx).unwrap();
        let dx = dev.upload(&x.to_vec::<f32>().unwrap()).unwrap();
        let got = dev.download(&dev.index_select_rows(&dx, &di, nidx, cols).unwrap(), nidx * cols).unwrap();
        assert_close(&format!("index_select_rows {what}"), &got, &cpu_select(&x, 0, &idx), 0.0, 0.0);

        // Added into a non-zero y: the kernel accumulates, it does not clear.
        let src = Tensor::from_vec(uniform(nidx * cols, -1.0, 1.0, seed + 1), &[nidx, cols]).unwrap();
        let y0 = Tensor::from_vec(uniform(rows * cols, -1.0, 1.0, seed + 2), &[rows, cols]).unwrap();
        let mut dy = dev.upload(&y0.to_vec::<f32>().unwrap()).unwrap();
        let dsrc = dev.upload(&src.to_vec::<f32>().unwrap()).unwrap();
        dev.index_add_rows(&mut dy, &dsrc, &di, nidx, cols).unwrap();
        let got = dev.download(&dy, rows * cols).unwrap();
        assert_close(&format!("index_add_rows {what}"), &got, &cpu_add(&y0, 0, &idx, &src), ADD_ATOL, 1e-5);
    }
}

#[test]
fn gather_and_scatter_add_along_a_middle_axis_equal_the_cpu() {
    let Some(dev) = gpu("gather / scatter_add") else { return };
    for (case, &(outer, src_dim, nidx, inner)) in
        [(6, 40, 90, 70), (1, 33, 20, 1), (9, 5, 12, 1), (3, 8, 1, 257)].iter().enumerate()
    {
        let what = format!("[{outer}, {src_dim}, {inner}] by {nidx} indices");
        let seed = 80 + 10 * case as u64;
        let x = Tensor::from_vec(uniform(outer * src_dim * inner, -1.0, 1.0, seed), &[outer, src_dim, inner]).unwrap();
        let idx = indices(nidx, src_dim);
        let di = dev.upload(&idx).unwrap();
        let dx = dev.upload(&x.to_vec::<f32>().unwrap()).unwrap();
        let got = dev.gather(&dx, &di, outer, src_dim, nidx, inner).unwrap();
        let got = dev.download(&got, outer * nidx * inner).unwrap();
        assert_close(&format!("gather {what}"), &got, &cpu_select(&x, 1, &idx), 0.0, 0.0);

        let src = Tensor::from_vec(uniform(outer * nidx * inner, -1.0, 1.0, seed + 1), &[outer, nidx, inner]).unwrap();
        let y0 =
            Tensor::from_vec(uniform(outer * src_dim * inner, -1.0, 1.0, seed + 2), &[outer, src_dim, inner]).unwrap();
        let mut dy = dev.upload(&y0.to_vec::<f32>().unwrap()).unwrap();
        let dsrc = dev.upload(&src.to_vec::<f32>().unwrap()).unwrap();
        dev.scatter_add(&mut dy, &dsrc, &di, outer, src_dim, nidx, inner).unwrap();
        let got = dev.download(&dy, outer * src_dim * inner).unwrap();
        assert_close(&format!("scatter_add {what}"), &got, &cpu_add(&y0, 1, &idx, &src), ADD_ATOL, 1e-5);
    }
}
