//! Data pipeline (filled by the data/CLI work).
