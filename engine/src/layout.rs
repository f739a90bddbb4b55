//! Shape, strides and offset of a tensor view. Views (reshape of contiguous data, permute,
//! narrow, expand) only build a new `Layout`; no data moves until a kernel needs contiguous input.

use crate::{shape_err, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shape: Vec<usize>,
    /// Element strides; 0 for broadcast (expanded) dimensions.
    pub strides: Vec<usize>,
    pub offset: usize,
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i];
    }
    strides
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// True when the view reads a dense row-major block starting at `offset`.
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 && self.strides[i] != acc {
                return false;
            }
            acc *= self.shape[i];
        }
        true
    }

    /// Storage offsets of every element in row-major order of the view.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if dims.len() != r || dims.iter().any(|&d| d >= r || std::mem::replace(&mut seen[d], true)) {
            return shape_err(
                "permute",
                format!("dims {dims:?} is not a permutation of rank {r} (shape {:?})", self.shape),
            );
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return shape_err(
                "narrow",
                format!("dim {dim} start {start} len {len} out of range for shape {:?}", self.shape),
            );
        }
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        Ok(l)
    }

    /// Broadcasts to `shape` (numpy rules, aligned at the trailing dimension).
    pub fn expand(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            return shape_err("expand", format!("cannot expand {:?} to fewer dims {shape:?}", self.shape));
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (s, t) = (self.shape[i], shape[lead + i]);
            if s == t {
                strides[lead + i] = self.strides[i];
            } else if s == 1 {
                strides[lead + i] = 0;
            } else {
                return shape_err("expand", format!("cannot expand {:?} to {shape:?}", self.shape));
            }
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return shape_err(op, format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// Iterator over the storage offsets of a strided view, in row-major order.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: usize,
    remaining: usize,
}

impl<'a> StridedOffsets<'a> {
    fn new(layout: &'a Layout) -> Self {
        StridedOffsets { layout, index: vec![0; layout.rank()], next: layout.offset, remaining: layout.numel() }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let cur = self.next;
        // Advance the multi-index like an odometer.
        let l = self.layout;
        for d in (0..l.rank()).rev() {
            self.index[d] += 1;
            if self.index[d] < l.shape[d] {
                self.next += l.strides[d];
                break;
            }
            self.next -= (l.shape[d] - 1) * l.strides[d];
            self.index[d] = 0;
        }
        Some(cur)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Normalises a possibly negative dimension index.
pub fn norm_dim(op: &'static str, dim: isize, rank: usize) -> Result<usize> {
    let d = if dim < 0 { dim + rank as isize } else { dim };
    if d < 0 || d as usize >= rank {
        return shape_err(op, format!("dim {dim} out of range for rank {rank}"));
    }
    Ok(d as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn strided_offsets_of_permuted_view() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap();
        let offs: Vec<usize> = l.offsets().collect();
        assert_eq!(offs, vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
    }
    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shape("t", &[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
        let e = Layout::contiguous(&[3, 1]).expand(&[2, 3, 4]).unwrap();
        assert_eq!(e.strides, vec![0, 1, 0]);
    }
}
