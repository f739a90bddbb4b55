//! spark-nn: layers and backbones (filled by the nn issue).
