//! spark: SparK masked-image pretraining on top of spark-nn and spark-sparse.

pub mod data;
pub mod loss;
pub mod mask;
pub mod optim;
pub mod st_io;
