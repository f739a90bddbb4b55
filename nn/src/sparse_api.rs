//! The slice of spark-sparse that the layers use, in one place.
pub use spark_sparse::{
    sparse_avg_pool2d, sparse_batch_norm, sparse_conv2d, sparse_global_avg_pool, sparse_layer_norm, sparse_max_pool2d,
};
pub use spark_sparse::{SparseContext, SparseTensor};
