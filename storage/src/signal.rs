//! What a WAL record, a head and a block hold: spans or OTLP metric points.
//!
//! Both take one path (WAL -> head -> blocks per tenant and hour ->
//! compaction and retention); the signal picks the schema, the store
//! directory and how rows are ordered in a block.

use datafusion::arrow::datatypes::SchemaRef;

/// The kinds of rows the engine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// One row per span ([`tracelake_model::schema::span_schema`]).
    Spans,
    /// One row per OTLP metric data point ([`tracelake_model::otlp_metrics::metrics_schema`]).
    Metrics,
}

impl Signal {
    pub const ALL: [Self; 2] = [Self::Spans, Self::Metrics];

    /// The directory under `tenants/{tenant}/` holding this signal's blocks.
    ///
    /// Metric blocks are not under `metrics/`: that directory holds the
    /// files written one per export request before metric points took the
    /// WAL path, which are still read as they are (`derived`).
    pub fn directory(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::Metrics => "metric_blocks",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Self::Spans => tracelake_model::schema::span_schema(),
            Self::Metrics => tracelake_model::otlp_metrics::metrics_schema(),
        }
    }

    /// The signal of a block at `tenants/{tenant}/{directory}/...`.
    pub fn of_path(path: &str) -> Option<Self> {
        let directory = path.split('/').nth(2)?;
        Self::ALL
            .into_iter()
            .find(|signal| signal.directory() == directory)
    }
}
