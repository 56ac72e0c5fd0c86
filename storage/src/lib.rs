//! tracelake storage: the span model and everything that keeps spans (and
//! OTLP metric points, which take the spans' path).
//!
//! ```text
//!  append(tenant, batch)
//!        |
//!        v
//!  +-----------+  group commit, CRC per record, fsync per policy
//!  |    WAL    |  (local disk, replayed on start)
//!  +-----------+
//!        |  durable -> acked
//!        v
//!  +-----------+  queryable at once; resource maps shared per request;
//!  |   head    |  bounded (max_head_bytes, and the process memory limit)
//!  +-----------+
//!        |  flush by size or age (and on shutdown, or early under memory
//!        |  pressure); committed by wal/FLUSHED before segments go
//!        v
//!  +-----------------------------------------------+  object_store
//!  | tenants/{t}/spans/{yyyy-mm-dd}/{hh}/{ulid}.parquet |  (local dir or S3)
//!  |                          {ulid}.meta.json (last)    |
//!  +-----------------------------------------------+
//!        |  catalog: metas in memory, time range + trace-id filter
//!        v
//!   SpanReader (the query side's narrow view)
//! ```
//!
//! OTLP metric points take the same path as a second [`Signal`]: WAL
//! records of their own kind, a head of their own, blocks under
//! `tenants/{t}/metric_blocks/` (see [`engine`] for the diagram).
//!
//! The compactor merges an hour's small blocks and applies per-tenant
//! retention ([`Storage::compact`]).
//!
//! The query crate never sees the WAL or the head's internals: it asks a
//! [`SpanReader`] for the blocks and head batches that may hold the rows it
//! wants, pruned by tenant, time range and trace id.

pub mod api;
mod attributes;
pub mod blob_cache;
pub mod block;
pub mod bloom;
pub mod catalog;
pub mod changes;
pub mod cluster;
pub mod compact;
pub mod config;
pub mod counting_store;
pub mod derived;
pub mod engine;
pub mod head;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod otlp;
pub mod remote;
pub mod schema;
pub mod signal;
pub mod take;
#[doc(hidden)]
pub mod testing;
pub mod wal;
pub mod workload;
pub mod xray;

pub use api::{
    BlockRef, DerivedWriter, MetricWriter, SpanFilter, SpanReader, SpanSnapshot, SpanWriter,
};
pub use config::{FsyncPolicy, Retention, StorageConfig};
pub use engine::{FlushStats, OpenStats, Storage, StorageStats, local_store};
pub use ids::{IdError, SpanId, TraceId};
pub use signal::Signal;

/// The tenant used when a request names none (Tempo's convention).
pub const DEFAULT_TENANT: &str = "single-tenant";

/// The header (HTTP) or metadata key (gRPC) naming the tenant, lowercase as
/// HTTP/2 and tonic metadata require (Tempo's `X-Scope-OrgID`).
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("wal i/o on {path}: {source}")]
    WalIo {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("wal writer stopped")]
    WalClosed,
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("invalid tenant {0:?}: use 1-128 characters of [A-Za-z0-9_.-]")]
    InvalidTenant(String),
    #[error("storage is shutting down")]
    ShuttingDown,
    /// The head holds `max_head_bytes` or more, waiting for flushes to
    /// catch up, or the process is over its memory limit
    /// ([`crate::memory`]): new spans are refused (retry later) rather
    /// than buffered.
    #[error("over the limit of {what}: {used} bytes (limit {limit}); retry later")]
    Overloaded {
        what: &'static str,
        used: u64,
        limit: u64,
    },
    /// A querier or compactor opened the store without a WAL.
    #[error("storage is read-only here (query or compactor role): spans go to a collector")]
    ReadOnly,
    #[error("data dir {0} is in use by another tracelake process")]
    Locked(std::path::PathBuf),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Checks a tenant id before it becomes part of an object path.
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let valid = !tenant.is_empty()
        && tenant.len() <= 128
        && tenant != "."
        && tenant != ".."
        && tenant
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidTenant(
            tenant.chars().take(140).collect(),
        ))
    }
}
