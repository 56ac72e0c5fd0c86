//! The derived tables' files on the store (the service map's `edges` and
//! the `span_metrics`, per minute, and the older per-request `metrics`
//! files), and the watermark the streaming aggregation writes. What the
//! rows mean and how they are computed is the model's
//! (`tracelake_model::derived`).

mod files;

pub use files::{DerivedCatalog, DerivedTable};
