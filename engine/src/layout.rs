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

    /// Contiguous and starting at the storage's first element: the view reads `storage[..numel]`.
    pub fn is_compact(&self) -> bool {
        self.is_contiguous() && self.offset == 0
    }

    /// Storage offsets of every element in row-major order of the view.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    /// The same walk over fewer dims: size-1 dims dropped, and each dim merged into the previous
    /// (outer) one when the previous stride spans it exactly. Returns (shape, strides); empty for
    /// a single element.
    pub fn merged_dims(&self) -> (Vec<usize>, Vec<usize>) {
        let (mut shape, mut strides): (Vec<usize>, Vec<usize>) = (vec![], vec![]);
        for d in 0..self.rank() {
            if self.shape[d] == 1 {
                continue;
            }
            if let Some(&prev) = strides.last() {
                if prev == self.strides[d] * self.shape[d] {
                    let last = shape.len() - 1;
                    shape[last] *= self.shape[d];
                    strides[last] = self.strides[d];
                    continue;
                }
            }
            shape.push(self.shape[d]);
            strides.push(self.strides[d]);
        }
        (shape, strides)
    }

    /// Copies the viewed elements of `src` into a row-major vector. Dims that the view walks
    /// contiguously are merged first, so the inner loop copies (stride 1) or fills (stride 0,
    /// broadcast) whole runs instead of computing an offset per element.
    pub fn gather<T: Copy>(&self, src: &[T]) -> Vec<T> {
        let n = self.numel();
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let (shape, strides) = self.merged_dims();
        if shape.is_empty() {
            out.push(src[self.offset]);
            return out;
        }
        let r = shape.len();
        let (inner, inner_stride) = (shape[r - 1], strides[r - 1]);
        let mut index = vec![0usize; r - 1];
        let mut base = self.offset;
        for _ in 0..n / inner {
            match inner_stride {
                1 => out.extend_from_slice(&src[base..base + inner]),
                0 => out.extend(std::iter::repeat_n(src[base], inner)),
                s => out.extend((0..inner).map(|j| src[base + j * s])),
            }
            // Odometer over the outer dims.
            for d in (0..r - 1).rev() {
                index[d] += 1;
                base += strides[d];
                if index[d] < shape[d] {
                    break;
                }
                base -= shape[d] * strides[d];
                index[d] = 0;
            }
        }
        out
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
    fn gather_matches_per_element_offsets() {
        let src: Vec<usize> = (0..200).collect();
        let views = [
            Layout::contiguous(&[2, 3, 4]).permute(&[2, 0, 1]).unwrap(),
            Layout::contiguous(&[3, 1]).expand(&[2, 3, 5]).unwrap(),
            Layout::contiguous(&[4, 5, 6]).narrow(2, 1, 3).unwrap().narrow(0, 1, 2).unwrap(),
            Layout::contiguous(&[5, 6]).narrow(1, 2, 2).unwrap().permute(&[1, 0]).unwrap(),
            Layout::contiguous(&[1]).expand(&[3, 4]).unwrap(),
            Layout::contiguous(&[]),
            Layout::contiguous(&[2, 0, 3]),
        ];
        for l in views {
            let want: Vec<usize> = l.offsets().map(|o| src[o]).collect();
            assert_eq!(l.gather(&src), want, "{l:?}");
        }
    }
    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shape("t", &[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
        let e = Layout::contiguous(&[3, 1]).expand(&[2, 3, 4]).unwrap();
        assert_eq!(e.strides, vec![0, 1, 0]);
    }
}
