//! spark: SparK masked-image pretraining on top of spark-nn and spark-sparse.

pub mod checkpoint;
pub mod data;
pub mod decoder;
pub mod densify;
pub mod loss;
pub mod mask;
pub mod model;
pub mod optim;
pub mod probe;
pub mod recon;
pub mod st_io;
pub mod train;
pub mod zoo;

pub use model::{EncoderMode, SparK, SparkConfig, SparkOutput};
pub use train::{BatchSource, StepMetrics, StopReason, TrainConfig, Trainer};
