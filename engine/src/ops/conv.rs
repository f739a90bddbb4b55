//! 2-D convolution (NCHW), transposed convolution, and their parameters.

/// Geometry of a 2-D convolution (PyTorch `Conv2d` semantics). Index 0 is height, 1 is width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dParams {
    /// Square stride and padding, dilation 1, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams { stride: [stride; 2], padding: [padding; 2], dilation: [1; 2], groups: 1 }
    }
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = [d; 2];
        self
    }
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Output extent along axis `a` for input extent `n` and kernel extent `k`, or `None` when
    /// the kernel does not fit.
    pub fn out_size(&self, a: usize, n: usize, k: usize) -> Option<usize> {
        let span = self.dilation[a] * (k - 1) + 1;
        (n + 2 * self.padding[a]).checked_sub(span).map(|v| v / self.stride[a] + 1)
    }
}

/// Geometry of a 2-D transposed convolution (PyTorch `ConvTranspose2d` semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvTranspose2dParams {
    pub fn new(stride: usize, padding: usize) -> Self {
        ConvTranspose2dParams {
            stride: [stride; 2],
            padding: [padding; 2],
            output_padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
    /// `(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`.
    pub fn out_size(&self, a: usize, n: usize, k: usize) -> Option<usize> {
        ((n - 1) * self.stride[a] + self.dilation[a] * (k - 1) + self.output_padding[a] + 1)
            .checked_sub(2 * self.padding[a])
    }
}
