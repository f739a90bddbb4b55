pub mod pretrain;
pub mod reconstruct;
