//! Sparse vs dense timing table (filled below).
