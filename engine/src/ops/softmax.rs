//! (filled by the engine ops work)
