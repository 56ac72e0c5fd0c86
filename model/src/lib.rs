//! tracelake's span model: what a span, a trace, a tenant and the rows
//! derived from spans are, and how they convert between the wire formats
//! and Arrow. No I/O and no runtime: every other crate of ours that touches
//! a span speaks these types.
//!
//! ```text
//!  OTLP ResourceSpans --otlp::resource_spans_to_batch--> span RecordBatch (schema)
//!  X-Ray documents --xray::document_to_spans--> OTLP spans --^
//!  span RecordBatch --otlp::batches_to_traces_data--> OTLP TracesData
//!  span RecordBatch --xray::traces_to_documents--> X-Ray documents (BatchGetTraces)
//!  span RecordBatch --derived::span_facts--> SpanFacts --> EdgeSet / SpanMetricSet rows
//!  OTLP ResourceMetrics --otlp_metrics::metrics_to_batch--> metric point RecordBatch
//! ```
//!
//! The ids ([`TraceId`], [`SpanId`]) and the tenant ([`TenantId`]) need
//! neither Arrow nor OTLP: a crate that wants only them (the sampler, the
//! AWS JSON errors) turns off the default `codecs` feature.

pub mod ids;
pub mod tenant;

#[cfg(feature = "codecs")]
pub mod attributes;
#[cfg(feature = "codecs")]
pub mod derived;
#[cfg(feature = "codecs")]
pub mod otlp;
#[cfg(feature = "codecs")]
pub mod otlp_metrics;
#[cfg(feature = "codecs")]
pub mod schema;
#[cfg(feature = "codecs")]
pub mod xray;

pub use ids::{IdError, SpanId, TraceId};
pub use tenant::{DEFAULT_TENANT, InvalidTenant, TENANT_HEADER, TenantId, validate_tenant};

/// Why a batch or a stored row does not convert.
#[cfg(feature = "codecs")]
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A stored batch or histogram does not have the shape this model
    /// writes.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

#[cfg(feature = "codecs")]
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
