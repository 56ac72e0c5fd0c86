//! tracelake storage: everything that keeps spans (and OTLP metric points,
//! which take the spans' path). What a span is, and how it converts to and
//! from Arrow, is the model's (`tracelake_model`); storage keeps the rows.
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
//! `tenants/{t}/metric_blocks/` (see `engine` for the diagram).
//!
//! The compactor merges an hour's small blocks and applies per-tenant
//! retention ([`Storage::compact`]).
//!
//! The query crate never sees the WAL or the head's internals: it asks a
//! [`SpanReader`] for the blocks and head batches that may hold the rows it
//! wants, pruned by tenant, time range and trace id.

mod api;
mod blob_cache;
mod block;
mod bloom;
mod catalog;
mod changes;
mod cluster;
mod compact;
mod config;
mod counting_store;
mod derived;
mod engine;
mod exposition;
mod head;
pub mod layout;
mod memory;
mod remote;
mod signal;
mod wal;

// Storage's surface: what keeps spans, how it is configured and shared,
// and the two views the other crates see (writers, the reader).
pub use api::{
    BlockRef, DerivedWriter, MetricWriter, SpanFilter, SpanReader, SpanSnapshot, SpanWriter,
};
pub use blob_cache::{BlobCache, BlobCacheStats};
pub use cluster::{
    Claim, Coordination, LEASES_REFUSED, Lease, Leases, Sharing, conditional_writes_honoured,
};
pub use config::{FsyncPolicy, Retention, StorageConfig};
pub use derived::{DerivedCatalog, DerivedTable};
pub use engine::{
    FlushStats, OpenStats, RefreshStats, Storage, StorageStats, local_store, run_every,
};
pub use exposition::StorageMetrics;
pub use head::HeadRows;
pub use remote::{S3Settings, StoreLocation, open_bucket, open_store};
pub use signal::Signal;

/// Pieces of the write path for this crate's benchmarks and tests and the
/// workspace's (they time or break one stage alone). Not an API: nothing
/// outside a benchmark or a test may use them.
#[doc(hidden)]
pub mod internals {
    pub use crate::block::{encode_block, encode_head, put_block};
    pub use crate::counting_store::CountingStore;
    pub use crate::head::HeadBatch;
    pub use crate::wal::{ReplayStats, Wal, WalRecord, encode_payload, pending};
}

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
    #[error(transparent)]
    InvalidTenant(#[from] tracelake_model::InvalidTenant),
    #[error(transparent)]
    Model(#[from] tracelake_model::ModelError),
    #[error("storage is shutting down")]
    ShuttingDown,
    /// The head holds `max_head_bytes` or more, waiting for flushes to
    /// catch up, or the process is over its memory limit
    /// (`memory`): new spans are refused (retry later) rather
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

/// Checks a tenant id before it becomes part of an object path (the
/// model's rule, as a storage error).
pub(crate) fn validate_tenant(tenant: &str) -> Result<()> {
    Ok(tracelake_model::validate_tenant(tenant)?)
}
