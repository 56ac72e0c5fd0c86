//! tracelake query: a DataFusion session over storage and the HTTP APIs.
//!
//! ```text
//!  HTTP :3200 --> router --> trace service --> SessionContext (per request)
//!                                                 |  table `spans`
//!                                                 v
//!                                          SpansTable (TableProvider)
//!                                                 |  SpanReader::snapshot(tenant, filter)
//!                                   +-------------+-------------+
//!                                   v                           v
//!                      Parquet blocks (pruned by       head batches (memory)
//!                      time range + trace-id filter)
//! ```
//!
//! This crate depends on storage's narrow read side ([`SpanReader`]) only.
//!
//! [`SpanReader`]: tracelake_storage::SpanReader

mod api;
mod block_layout;
pub mod derived_rows;
pub mod derived_table;
mod exprs;
pub mod filters;
pub mod http;
pub mod jaeger;
pub mod latency_udf;
pub mod search;
pub mod service_map;
pub mod session;
pub mod spans_table;
pub mod sql;
pub mod syntax;
pub mod tempo;
pub mod trace;
pub mod trace_view;
pub mod traceql;
pub mod ui;
pub mod units;
pub mod xray_api;
pub mod xray_filter;

pub use http::{QueryLimits, router, router_with_limits};
pub use session::session_for_tenant;

/// Errors of the query side.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("storage: {0}")]
    Storage(#[from] tracelake_storage::StorageError),
    /// A stored row that does not convert (said as storage did before the
    /// model had its own crate).
    #[error("storage: {0}")]
    Model(#[from] tracelake_model::ModelError),
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The query would read more than the server allows; the message says
    /// how to narrow it.
    #[error("{0}")]
    TooLarge(String),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Runs CPU work (row decoding, histogram merging, trace assembly, filter
/// evaluation) on the blocking pool, off the async reactor.
pub(crate) async fn off_reactor<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        QueryError::DataFusion(datafusion::error::DataFusionError::External(Box::new(
            error,
        )))
    })?
}
