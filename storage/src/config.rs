//! Storage settings, part of the server's `tracelake.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When the WAL fsyncs, and so what "acked" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Every append is fsynced before it is acked (group commit: appends
    /// that arrive together share one fsync). Acked spans survive `kill -9`
    /// and power loss.
    #[default]
    Always,
    /// Appends are acked once written to the OS and fsynced every
    /// `fsync_interval`. Acked spans survive `kill -9` of the process, not a
    /// power loss inside the interval.
    Interval,
}

/// A `wal_fsync` value that names no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy {0:?}: use always or interval")]
pub struct UnknownFsyncPolicy(pub String);

impl std::str::FromStr for FsyncPolicy {
    type Err = UnknownFsyncPolicy;

    fn from_str(text: &str) -> Result<Self, UnknownFsyncPolicy> {
        match text {
            "always" => Ok(Self::Always),
            "interval" => Ok(Self::Interval),
            other => Err(UnknownFsyncPolicy(other.to_string())),
        }
    }
}

/// Settings of the storage engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Local directory for the WAL (always local) and, with the `file`
    /// backend, the blocks.
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`, the longest an acked append stays unsynced.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// A WAL segment is closed and a new one started past this size.
    pub wal_segment_bytes: u64,
    /// The head is flushed to blocks once it holds this many bytes...
    pub flush_max_bytes: u64,
    /// ...or once its oldest span has waited this long.
    #[serde(with = "humantime_serde")]
    pub flush_max_age: Duration,
    /// Appends are refused ([`crate::StorageError::Overloaded`]) while the
    /// head (active and being flushed) holds this many bytes: when spans
    /// arrive faster than flushes write them, clients are told to retry
    /// instead of memory growing without bound.
    pub max_head_bytes: u64,
    /// Process memory limit in bytes (`memory`); 0 turns it off.
    pub memory_limit_bytes: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// How often small blocks are merged (`compact`); zero: never.
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// Largest block compaction writes, in spans (the merge holds a whole
    /// block in memory: about 1 KB per span).
    pub compaction_max_block_spans: u64,
    /// How long a compacted block's sources stay readable for queries that
    /// snapshotted them.
    #[serde(with = "humantime_serde")]
    pub compaction_delete_delay: Duration,
    /// How long each tenant's spans and derived rows are kept.
    #[serde(skip)]
    pub retention: Retention,
    /// Whether other processes share the store (`cluster`).
    #[serde(skip)]
    pub sharing: crate::cluster::Sharing,
    /// A reader on a shared store lists the whole store this often; in
    /// between it reads the change log (`changes`).
    #[serde(skip)]
    pub full_listing_interval: Duration,
}

/// How long data is kept, per tenant; applied by the compactor (see
/// [`crate::Storage::compact`]) a whole block or derived file at a time,
/// once everything in it is older than the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// For tenants without their own period; zero keeps data forever.
    pub default: Duration,
    /// Per-tenant periods (zero: forever), as Tempo's per-tenant overrides.
    pub tenants: std::collections::BTreeMap<String, Duration>,
}

impl Retention {
    /// `tenant`'s period, `None` when its data is kept forever.
    pub fn period(&self, tenant: &str) -> Option<Duration> {
        let period = self.tenants.get(tenant).copied().unwrap_or(self.default);
        (!period.is_zero()).then_some(period)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tracelake-data"),
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(100),
            wal_segment_bytes: 128 * 1024 * 1024,
            // Small flushes cost no more CPU per span than large ones and
            // halve the peak memory of a fast ingest (1 M spans as fast as
            // accepted, four workload shapes: 1.16-1.24 GB at 256/512 MiB,
            // 0.56-0.63 GB at 32/128 MiB); compaction merges the blocks.
            flush_max_bytes: 32 * 1024 * 1024,
            flush_max_age: Duration::from_secs(5 * 60),
            max_head_bytes: 128 * 1024 * 1024,
            memory_limit_bytes: 2 * 1024 * 1024 * 1024,
            row_group_rows: 64 * 1024,
            compaction_interval: Duration::from_secs(60),
            compaction_max_block_spans: 1_000_000,
            compaction_delete_delay: Duration::from_secs(5 * 60),
            retention: Retention::default(),
            sharing: crate::cluster::Sharing::Exclusive,
            full_listing_interval: Duration::from_secs(5 * 60),
        }
    }
}
