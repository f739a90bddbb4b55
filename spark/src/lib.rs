//! spark: SparK masked-image pretraining on top of spark-nn and spark-sparse.

pub mod data;
