//! spark: SparK masked-image pretraining on top of spark-nn and spark-sparse.

pub mod data;
pub mod decoder;
pub mod densify;
pub mod loss;
pub mod mask;
pub mod model;
pub mod optim;
pub mod st_io;

pub use model::{EncoderMode, SparK, SparkConfig, SparkOutput};
