//! spark: SparK pretraining (filled by the pretraining issue).
