//! spark-sparse: submanifold sparse convolution over active pixels (filled by the sparse issue).
