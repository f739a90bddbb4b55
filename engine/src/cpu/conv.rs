//! (filled by the engine kernels work)
