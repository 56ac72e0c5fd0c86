//! Configuration: defaults < `tracelake.toml` < `TRACELAKE_*` environment < flags.
//!
//! Every key is optional and unknown keys are refused. The environment and
//! flags are read by clap (each flag names its variable), so the merge is:
//! start from the defaults, overlay the file, overlay what clap found.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tracelake_storage::{FsyncPolicy, StorageConfig};

/// The whole effective configuration, as `--print-config` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Local directory: WAL always, blocks with `storage = "file"`.
    pub(crate) data_dir: PathBuf,
    /// `file` (blocks under `data_dir`) or `s3://bucket/prefix`.
    pub(crate) storage: String,
    /// What this process does: `all` (one node), or one role of a
    /// multi-node deployment on a shared `s3://` store.
    pub(crate) role: Role,
    /// S3 endpoint, region and credentials (unset: the AWS environment).
    pub(crate) s3: tracelake_storage::S3Settings,
    /// Several processes on one store.
    pub(crate) cluster: ClusterConfig,
    pub(crate) listen: ListenConfig,
    pub(crate) wal: WalConfig,
    pub(crate) flush: FlushConfig,
    pub(crate) compaction: CompactionConfig,
    pub(crate) retention: RetentionConfig,
    pub(crate) overrides: OverridesConfig,
    pub(crate) query: QueryConfig,
    pub(crate) memory: MemoryConfig,
    pub(crate) otlp: OtlpConfig,
    pub(crate) xray: XrayConfig,
    pub(crate) sampling: SamplingConfig,
    pub(crate) tail_sampling: TailSamplingConfig,
    pub(crate) service_graph: ServiceGraphConfig,
    /// API keys per tenant; none: no authentication (see the `auth` module).
    pub(crate) auth: tracelake_auth::AuthConfig,
    /// TLS on the TCP listeners; off without a certificate.
    pub(crate) tls: tracelake_auth::tls::TlsConfig,
}

/// What a `tracelake serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Everything in one process (the embedded default).
    #[default]
    All,
    /// Receivers, sampling, WAL and head; writes blocks to the shared store.
    Collector,
    /// Stateless: the query APIs over the blocks in the shared store.
    Query,
    /// Compaction, retention and the derived service-map rows.
    Compactor,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Collector => "collector",
            Self::Query => "query",
            Self::Compactor => "compactor",
        }
    }
}

/// How compactors share the windows of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CompactorCoordination {
    /// Leases when the store honours conditional writes, else the static
    /// assignment (logging why).
    Auto,
    /// Leases only: start-up fails on a store that ignores conditional writes.
    Lease,
    /// `compactor_shard` of `compactor_shards`, no store coordination.
    Static,
}

/// A multi-node deployment (the storage crate's `cluster` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterConfig {
    /// Names this process in its blocks, flush mark and leases; empty: an
    /// id generated once and kept in `{data_dir}/node-id`.
    pub(crate) node_id: String,
    /// How often queriers and compactors catch up with the store: the
    /// change log's new records (a querier), the whole listing (a compactor);
    /// and how far behind the store every node's sampling rules and X-Ray
    /// groups may be (changes made through other nodes).
    #[serde(with = "humantime_serde")]
    pub(crate) refresh_interval: Duration,
    /// How often a querier lists the whole store instead of the change log
    /// (the safety net for a change a crash kept from being recorded).
    #[serde(with = "humantime_serde")]
    pub(crate) full_listing_interval: Duration,
    pub(crate) compactor_coordination: CompactorCoordination,
    /// How long a compaction lease lasts unless released.
    #[serde(with = "humantime_serde")]
    pub(crate) lease_ttl: Duration,
    /// The static assignment: this compactor's shard, of `compactor_shards`.
    pub(crate) compactor_shard: u32,
    pub(crate) compactor_shards: u32,
    /// How old a minute must be before the compactor computes its
    /// service-map rows from the stored spans (every collector has flushed
    /// it by then: keep it above the collectors' `flush.max_age`).
    #[serde(with = "humantime_serde")]
    pub(crate) derived_settle: Duration,
    /// Blocks kept in memory by queriers and compactors on an S3 store.
    pub(crate) block_cache_bytes: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            refresh_interval: Duration::from_secs(10),
            full_listing_interval: Duration::from_secs(5 * 60),
            compactor_coordination: CompactorCoordination::Auto,
            lease_ttl: Duration::from_secs(5 * 60),
            compactor_shard: 0,
            compactor_shards: 1,
            derived_settle: Duration::from_secs(2 * 60),
            block_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The streaming aggregation of service-map edges and span metrics (the
/// collector's `aggregate` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServiceGraphConfig {
    /// How long one side of a call waits for the other before the call
    /// counts as unanswered (an inferred node) or unpaired.
    #[serde(with = "humantime_serde")]
    pub(crate) wait: Duration,
    /// Spans waiting for their other side; beyond it the oldest are expired early.
    pub(crate) max_pending: usize,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        let defaults = tracelake_collector::aggregate::AggregateConfig::default();
        Self {
            wait: defaults.wait,
            max_pending: defaults.max_pending,
        }
    }
}

impl ServiceGraphConfig {
    pub(crate) fn aggregate_config(&self) -> tracelake_collector::aggregate::AggregateConfig {
        tracelake_collector::aggregate::AggregateConfig {
            wait: self.wait,
            max_pending: self.max_pending,
            ..Default::default()
        }
    }
}

/// Listener addresses, `host:port`; port 0 picks a free port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ListenConfig {
    pub(crate) xray_udp: String,
    pub(crate) xray_api: String,
    pub(crate) otlp_grpc: String,
    pub(crate) otlp_http: String,
    pub(crate) http: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WalConfig {
    /// `always`: fsync before every ack (group commit). `interval`: ack
    /// after the write, fsync every `fsync_interval`.
    pub(crate) fsync: FsyncPolicy,
    #[serde(with = "humantime_serde")]
    pub(crate) fsync_interval: Duration,
    pub(crate) segment_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FlushConfig {
    /// Flush the head to blocks once its oldest span is this old...
    #[serde(with = "humantime_serde")]
    pub(crate) max_age: Duration,
    /// ...or once it holds this many bytes.
    pub(crate) max_bytes: u64,
    /// Spans are refused (RESOURCE_EXHAUSTED / 429 / ThrottledException)
    /// while the head, flushing included, holds this many bytes.
    pub(crate) max_head_bytes: u64,
    pub(crate) row_group_rows: usize,
}

/// Merging of small blocks (the storage crate's `compact` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CompactionConfig {
    /// How often small blocks of an hour are merged; `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub(crate) interval: Duration,
    /// Largest merged block, in spans (a merge holds it in memory).
    pub(crate) max_block_spans: u64,
    /// How long merged blocks' sources stay for queries already reading them.
    #[serde(with = "humantime_serde")]
    pub(crate) delete_delay: Duration,
}

/// How long data is kept (the storage crate's `Retention`), applied by the
/// compactor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetentionConfig {
    /// For every tenant without its own period; `0s` keeps data forever.
    #[serde(with = "humantime_serde")]
    pub(crate) period: Duration,
    /// Per-tenant periods, e.g. `"team-a" = "72h"` (`0s`: forever).
    pub(crate) tenants: std::collections::BTreeMap<String, String>,
}

impl RetentionConfig {
    fn to_retention(&self) -> anyhow::Result<tracelake_storage::Retention> {
        let mut tenants = std::collections::BTreeMap::new();
        for (tenant, period) in &self.tenants {
            tracelake_model::validate_tenant(tenant)
                .map_err(|error| anyhow::anyhow!("retention.tenants: {error}"))?;
            let period = humantime::parse_duration(period).with_context(|| {
                format!("retention.tenants.{tenant}: {period:?} is not a duration (e.g. 72h)")
            })?;
            tenants.insert(tenant.clone(), period);
        }
        Ok(tracelake_storage::Retention {
            default: self.period,
            tenants,
        })
    }
}

/// Per-tenant ingestion limits (the collector's `limits` module), as
/// Tempo's overrides; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OverridesConfig {
    /// Bytes per second (decompressed OTLP / X-Ray document bytes) per tenant.
    pub(crate) ingestion_rate_limit_bytes: u64,
    /// Bytes a tenant may send at once; at least the rate.
    pub(crate) ingestion_burst_size_bytes: u64,
    /// Largest live trace, in OTLP protobuf bytes of its spans (Tempo's
    /// default, 5 MB); spans past it are refused, the rest stored.
    pub(crate) max_bytes_per_trace: u64,
    /// Most spans of a live trace.
    pub(crate) max_spans_per_trace: u64,
    /// Per-tenant values; a key left out keeps the value above.
    pub(crate) tenants: std::collections::BTreeMap<String, TenantOverrides>,
}

impl Default for OverridesConfig {
    fn default() -> Self {
        Self {
            ingestion_rate_limit_bytes: 0,
            ingestion_burst_size_bytes: 0,
            max_bytes_per_trace: 5_000_000,
            max_spans_per_trace: 0,
            tenants: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TenantOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ingestion_rate_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ingestion_burst_size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_bytes_per_trace: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_spans_per_trace: Option<u64>,
}

impl OverridesConfig {
    pub(crate) fn ingest_limits(&self) -> tracelake_collector::limits::IngestLimits {
        let defaults = tracelake_collector::limits::TenantLimits {
            ingestion_rate_limit_bytes: self.ingestion_rate_limit_bytes,
            ingestion_burst_size_bytes: self.ingestion_burst_size_bytes,
            max_bytes_per_trace: self.max_bytes_per_trace,
            max_spans_per_trace: self.max_spans_per_trace,
        };
        tracelake_collector::limits::IngestLimits {
            defaults,
            tenants: self
                .tenants
                .iter()
                .map(|(tenant, values)| {
                    let limits = tracelake_collector::limits::TenantLimits {
                        ingestion_rate_limit_bytes: values
                            .ingestion_rate_limit_bytes
                            .unwrap_or(defaults.ingestion_rate_limit_bytes),
                        ingestion_burst_size_bytes: values
                            .ingestion_burst_size_bytes
                            .unwrap_or(defaults.ingestion_burst_size_bytes),
                        max_bytes_per_trace: values
                            .max_bytes_per_trace
                            .unwrap_or(defaults.max_bytes_per_trace),
                        max_spans_per_trace: values
                            .max_spans_per_trace
                            .unwrap_or(defaults.max_spans_per_trace),
                    };
                    (tenant.clone(), limits)
                })
                .collect(),
        }
    }
}

/// Limits on queries (the query crate's `http` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QueryConfig {
    /// Queries running at once on the query port (and, apart, on the X-Ray
    /// API's query operations).
    pub(crate) max_concurrent: usize,
    /// How long a query waits for a turn before it gets 429.
    #[serde(with = "humantime_serde")]
    pub(crate) queue_wait: Duration,
    /// Longest time range of a Tempo search (400 beyond); `0s`: any.
    #[serde(with = "humantime_serde")]
    pub(crate) max_search_duration: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let limits = tracelake_query::QueryLimits::default();
        Self {
            max_concurrent: limits.max_concurrent,
            queue_wait: limits.queue_wait,
            max_search_duration: limits.max_search_duration,
        }
    }
}

impl QueryConfig {
    pub(crate) fn limits(&self) -> tracelake_query::QueryLimits {
        tracelake_query::QueryLimits {
            max_concurrent: self.max_concurrent,
            queue_wait: self.queue_wait,
            max_search_duration: self.max_search_duration,
        }
    }
}

/// The process memory limiter (the storage crate's `memory` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MemoryConfig {
    /// Resident memory the server keeps under: from 80% of it, spans are
    /// refused (RESOURCE_EXHAUSTED / 429 / ThrottledException) and the head
    /// is flushed early. 0 turns the limiter off.
    pub(crate) limit_bytes: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            limit_bytes: StorageConfig::default().memory_limit_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OtlpConfig {
    /// Largest OTLP message (gRPC) or body (HTTP, after gzip) accepted.
    pub(crate) max_message_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct XrayConfig {
    /// Tenant that X-Ray daemon datagrams are stored under (the UDP
    /// protocol carries none; the X-Ray API uses `X-Scope-OrgID`).
    pub(crate) udp_tenant: String,
    /// Bytes of datagrams waiting to be decoded before new ones are dropped.
    pub(crate) udp_queue_bytes: usize,
    /// Socket receive buffer asked of the kernel (capped by `net.core.rmem_max`).
    pub(crate) udp_receive_buffer_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SamplingConfig {
    /// Sampling rules loaded into the store at start-up (created, or
    /// updated by name): TOML `[[rules]]`, JSON `SamplingRule`s, or the
    /// X-Ray SDK local rules format (version 1 or 2). Empty: none.
    pub(crate) rules_file: Option<PathBuf>,
    /// Tenant the rules file is loaded for (default `single-tenant`).
    pub(crate) rules_tenant: Option<String>,
}

/// Tail sampling of spans SDKs sent explicitly unsampled (see the
/// collector's `tail` module); off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TailSamplingConfig {
    pub(crate) enabled: bool,
    /// How long after a trace's first span it is decided.
    #[serde(with = "humantime_serde")]
    pub(crate) decision_wait: Duration,
    /// Keep traces with an error or fault span.
    pub(crate) keep_errors: bool,
    /// Keep traces at least this long; 0s turns the policy off.
    #[serde(with = "humantime_serde")]
    pub(crate) latency_threshold: Duration,
    /// Keep this share (0-1) of the other traces, by trace id.
    pub(crate) probabilistic_share: f64,
    /// Cap on kept traces per second per root service; 0 means no cap.
    pub(crate) max_traces_per_service_per_second: f64,
    /// Spans held across pending traces; beyond it the oldest are decided early.
    pub(crate) max_pending_spans: usize,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        let policy = tracelake_sampler::tail::TailPolicy::default();
        Self {
            enabled: false,
            decision_wait: policy.decision_wait,
            keep_errors: policy.keep_errors,
            latency_threshold: policy.latency_threshold.unwrap_or_default(),
            probabilistic_share: policy.probabilistic_share,
            max_traces_per_service_per_second: 0.0,
            max_pending_spans: policy.max_pending_spans,
        }
    }
}

impl TailSamplingConfig {
    pub(crate) fn policy(&self) -> tracelake_sampler::tail::TailPolicy {
        tracelake_sampler::tail::TailPolicy {
            decision_wait: self.decision_wait,
            keep_errors: self.keep_errors,
            latency_threshold: (!self.latency_threshold.is_zero())
                .then_some(self.latency_threshold),
            probabilistic_share: self.probabilistic_share,
            max_traces_per_service_per_second: (self.max_traces_per_service_per_second > 0.0)
                .then_some(self.max_traces_per_service_per_second),
            max_pending_spans: self.max_pending_spans,
        }
    }
}

impl Default for XrayConfig {
    fn default() -> Self {
        let udp = tracelake_collector::xray::udp::UdpConfig::default();
        Self {
            udp_tenant: udp.tenant,
            udp_queue_bytes: udp.queue_bytes,
            udp_receive_buffer_bytes: udp.socket_receive_buffer,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let storage = StorageConfig::default();
        Self {
            data_dir: storage.data_dir,
            storage: "file".into(),
            role: Role::All,
            s3: Default::default(),
            cluster: ClusterConfig::default(),
            listen: ListenConfig::default(),
            wal: WalConfig {
                fsync: storage.fsync,
                fsync_interval: storage.fsync_interval,
                segment_bytes: storage.wal_segment_bytes,
            },
            flush: FlushConfig {
                max_age: storage.flush_max_age,
                max_bytes: storage.flush_max_bytes,
                max_head_bytes: storage.max_head_bytes,
                row_group_rows: storage.row_group_rows,
            },
            compaction: CompactionConfig {
                interval: storage.compaction_interval,
                max_block_spans: storage.compaction_max_block_spans,
                delete_delay: storage.compaction_delete_delay,
            },
            retention: RetentionConfig::default(),
            overrides: OverridesConfig::default(),
            query: QueryConfig::default(),
            memory: MemoryConfig::default(),
            otlp: OtlpConfig {
                max_message_bytes: tracelake_collector::OtlpLimits::default().max_message_bytes,
            },
            xray: XrayConfig::default(),
            sampling: SamplingConfig::default(),
            tail_sampling: TailSamplingConfig::default(),
            service_graph: ServiceGraphConfig::default(),
            auth: tracelake_auth::AuthConfig::default(),
            tls: tracelake_auth::tls::TlsConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            xray_udp: "127.0.0.1:2000".into(),
            xray_api: "127.0.0.1:2000".into(),
            otlp_grpc: "0.0.0.0:4317".into(),
            otlp_http: "0.0.0.0:4318".into(),
            http: "0.0.0.0:3200".into(),
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        Config::default().wal
    }
}

impl Default for FlushConfig {
    fn default() -> Self {
        Config::default().flush
    }
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Config::default().compaction
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Config::default().otlp
    }
}

/// Values from the environment or flags; `None` leaves the file's value.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Overrides {
    /// Local data directory (WAL, and blocks with the file backend).
    #[arg(long, env = "TRACELAKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Block storage: `file` (under the data dir) or `s3://bucket/prefix`.
    #[arg(long, env = "TRACELAKE_STORAGE")]
    storage: Option<String>,
    /// What this process does: all, collector, query or compactor.
    #[arg(long, env = "TRACELAKE_ROLE")]
    role: Option<Role>,
    /// S3 endpoint (self-hosted stores), e.g. http://127.0.0.1:3900.
    #[arg(long, env = "TRACELAKE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// This process's name in a multi-node deployment.
    #[arg(long, env = "TRACELAKE_NODE_ID")]
    node_id: Option<String>,
    /// X-Ray daemon UDP listener, host:port.
    #[arg(long, env = "TRACELAKE_LISTEN_XRAY_UDP")]
    listen_xray_udp: Option<String>,
    /// X-Ray API listener, host:port.
    #[arg(long, env = "TRACELAKE_LISTEN_XRAY_API")]
    listen_xray_api: Option<String>,
    /// OTLP gRPC listener, host:port.
    #[arg(long, env = "TRACELAKE_LISTEN_OTLP_GRPC")]
    listen_otlp_grpc: Option<String>,
    /// OTLP HTTP listener, host:port.
    #[arg(long, env = "TRACELAKE_LISTEN_OTLP_HTTP")]
    listen_otlp_http: Option<String>,
    /// Query HTTP listener (Tempo API, /ready), host:port.
    #[arg(long, env = "TRACELAKE_LISTEN_HTTP")]
    listen_http: Option<String>,
    /// WAL fsync policy: always or interval.
    #[arg(long, env = "TRACELAKE_WAL_FSYNC")]
    wal_fsync: Option<FsyncPolicy>,
    /// With --wal-fsync interval, the longest an ack waits for its fsync (e.g. 100ms).
    #[arg(long, env = "TRACELAKE_WAL_FSYNC_INTERVAL")]
    wal_fsync_interval: Option<humantime::Duration>,
    /// Flush the head to blocks once its oldest span is this old (e.g. 5m).
    #[arg(long, env = "TRACELAKE_FLUSH_MAX_AGE")]
    flush_max_age: Option<humantime::Duration>,
    /// Flush the head to blocks once it holds this many bytes.
    #[arg(long, env = "TRACELAKE_FLUSH_MAX_BYTES")]
    flush_max_bytes: Option<u64>,
    /// Refuse spans while the head (flushing included) holds this many bytes.
    #[arg(long, env = "TRACELAKE_FLUSH_MAX_HEAD_BYTES")]
    flush_max_head_bytes: Option<u64>,
    /// How often small blocks are merged (e.g. 1m; 0s turns compaction off).
    #[arg(long, env = "TRACELAKE_COMPACTION_INTERVAL")]
    compaction_interval: Option<humantime::Duration>,
    /// How long merged blocks' sources stay readable before they are deleted.
    #[arg(long, env = "TRACELAKE_COMPACTION_DELETE_DELAY")]
    compaction_delete_delay: Option<humantime::Duration>,
    /// How long every tenant's data is kept (e.g. 336h; 0s: forever); per-tenant periods in the file.
    #[arg(long, env = "TRACELAKE_RETENTION_PERIOD")]
    retention_period: Option<humantime::Duration>,
    /// Resident memory to stay under (spans are refused from 80% of it); 0: no limit.
    #[arg(long, env = "TRACELAKE_MEMORY_LIMIT_BYTES")]
    memory_limit_bytes: Option<u64>,
    /// Largest OTLP message or body accepted, in bytes.
    #[arg(long, env = "TRACELAKE_OTLP_MAX_MESSAGE_BYTES")]
    otlp_max_message_bytes: Option<usize>,
    /// Sampling rules file loaded at start-up (TOML, JSON, or X-Ray SDK local rules).
    #[arg(long, env = "TRACELAKE_SAMPLING_RULES_FILE")]
    sampling_rules_file: Option<PathBuf>,
}

impl Config {
    /// Defaults, overlaid by `file` (if any), overlaid by `overrides`.
    pub(crate) fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                target.clone_from(value);
            }
        };
        if let Some(data_dir) = &overrides.data_dir {
            config.data_dir.clone_from(data_dir);
        }
        set(&mut config.storage, &overrides.storage);
        if let Some(role) = overrides.role {
            config.role = role;
        }
        if let Some(endpoint) = &overrides.s3_endpoint {
            config.s3.endpoint = Some(endpoint.clone());
        }
        set(&mut config.cluster.node_id, &overrides.node_id);
        set(&mut config.listen.xray_udp, &overrides.listen_xray_udp);
        set(&mut config.listen.xray_api, &overrides.listen_xray_api);
        set(&mut config.listen.otlp_grpc, &overrides.listen_otlp_grpc);
        set(&mut config.listen.otlp_http, &overrides.listen_otlp_http);
        set(&mut config.listen.http, &overrides.listen_http);
        if let Some(fsync) = overrides.wal_fsync {
            config.wal.fsync = fsync;
        }
        if let Some(interval) = overrides.wal_fsync_interval {
            config.wal.fsync_interval = interval.into();
        }
        if let Some(max_age) = overrides.flush_max_age {
            config.flush.max_age = max_age.into();
        }
        if let Some(max_bytes) = overrides.flush_max_bytes {
            config.flush.max_bytes = max_bytes;
        }
        if let Some(max_head_bytes) = overrides.flush_max_head_bytes {
            config.flush.max_head_bytes = max_head_bytes;
        }
        if let Some(interval) = overrides.compaction_interval {
            config.compaction.interval = interval.into();
        }
        if let Some(delay) = overrides.compaction_delete_delay {
            config.compaction.delete_delay = delay.into();
        }
        if let Some(period) = overrides.retention_period {
            config.retention.period = period.into();
        }
        if let Some(limit) = overrides.memory_limit_bytes {
            config.memory.limit_bytes = limit;
        }
        if let Some(max_message_bytes) = overrides.otlp_max_message_bytes {
            config.otlp.max_message_bytes = max_message_bytes;
        }
        if let Some(rules_file) = &overrides.sampling_rules_file {
            config.sampling.rules_file = Some(rules_file.clone());
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let location = self.store_location()?;
        if self.role != Role::All && location == tracelake_storage::StoreLocation::File {
            bail!(
                "role {} shares its store with other processes: set storage = \"s3://bucket/prefix\" (the file backend is one process's)",
                self.role.name()
            );
        }
        if self.cluster.compactor_shards == 0
            || self.cluster.compactor_shard >= self.cluster.compactor_shards
        {
            bail!(
                "cluster.compactor_shard ({}) must be below cluster.compactor_shards ({})",
                self.cluster.compactor_shard,
                self.cluster.compactor_shards
            );
        }
        if self.cluster.refresh_interval.is_zero() || self.cluster.lease_ttl.is_zero() {
            bail!("cluster.refresh_interval and cluster.lease_ttl must be above 0s");
        }
        if !self.cluster.node_id.is_empty() {
            tracelake_model::validate_tenant(&self.cluster.node_id).map_err(|_| {
                anyhow::anyhow!(
                    "cluster.node_id {:?}: use 1-128 characters of [A-Za-z0-9_.-]",
                    self.cluster.node_id
                )
            })?;
        }
        if self.otlp.max_message_bytes == 0 {
            bail!("otlp.max_message_bytes must be positive");
        }
        if self.flush.max_head_bytes < self.flush.max_bytes {
            bail!(
                "flush.max_head_bytes ({}) must be at least flush.max_bytes ({}): the head fills to max_bytes before a flush starts",
                self.flush.max_head_bytes,
                self.flush.max_bytes
            );
        }
        if self.memory.limit_bytes != 0 && self.memory.limit_bytes < 2 * self.flush.max_head_bytes {
            bail!(
                "memory.limit_bytes ({}) must be 0 (off) or at least twice flush.max_head_bytes ({}): a full head is flushed while new spans arrive",
                self.memory.limit_bytes,
                self.flush.max_head_bytes
            );
        }
        for tenant in self.overrides.tenants.keys() {
            tracelake_model::validate_tenant(tenant)
                .map_err(|error| anyhow::anyhow!("overrides.tenants: {error}"))?;
        }
        let retention = self.retention.to_retention()?;
        let keeps_forever =
            retention.default.is_zero() && retention.tenants.values().all(Duration::is_zero);
        if !keeps_forever && self.compaction.interval.is_zero() {
            bail!("retention is applied by the compactor: set compaction.interval above 0s");
        }
        if self.query.max_concurrent == 0 {
            bail!("query.max_concurrent must be positive");
        }
        if self.flush.row_group_rows == 0 {
            bail!("flush.row_group_rows must be positive");
        }
        if self.compaction.max_block_spans < 2 {
            bail!("compaction.max_block_spans must be at least 2");
        }
        if !(0.0..=1.0).contains(&self.tail_sampling.probabilistic_share) {
            bail!("tail_sampling.probabilistic_share must be between 0 and 1");
        }
        if self.service_graph.max_pending == 0 {
            bail!("service_graph.max_pending must be positive");
        }
        if self.tail_sampling.max_pending_spans == 0 {
            bail!("tail_sampling.max_pending_spans must be positive");
        }
        tracelake_model::validate_tenant(&self.xray.udp_tenant)
            .map_err(|error| anyhow::anyhow!("xray.udp_tenant: {error}"))?;
        Ok(())
    }

    pub(crate) fn udp_config(&self) -> tracelake_collector::xray::udp::UdpConfig {
        tracelake_collector::xray::udp::UdpConfig {
            tenant: self.xray.udp_tenant.clone(),
            queue_bytes: self.xray.udp_queue_bytes,
            socket_receive_buffer: self.xray.udp_receive_buffer_bytes,
        }
    }

    pub(crate) fn store_location(&self) -> anyhow::Result<tracelake_storage::StoreLocation> {
        tracelake_storage::StoreLocation::parse(&self.storage).map_err(anyhow::Error::msg)
    }

    pub(crate) fn storage_config(&self) -> StorageConfig {
        StorageConfig {
            data_dir: self.data_dir.clone(),
            fsync: self.wal.fsync,
            fsync_interval: self.wal.fsync_interval,
            wal_segment_bytes: self.wal.segment_bytes,
            flush_max_bytes: self.flush.max_bytes,
            max_head_bytes: self.flush.max_head_bytes,
            memory_limit_bytes: self.memory.limit_bytes,
            flush_max_age: self.flush.max_age,
            row_group_rows: self.flush.row_group_rows,
            compaction_interval: self.compaction.interval,
            compaction_max_block_spans: self.compaction.max_block_spans,
            compaction_delete_delay: self.compaction.delete_delay,
            // Validated at load.
            retention: self.retention.to_retention().unwrap_or_default(),
            sharing: Default::default(),
            full_listing_interval: self.cluster.full_listing_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracelake.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/t\"\n[listen]\nhttp = \"127.0.0.1:9\"\n[wal]\nfsync = \"interval\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            listen_http: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let config = Config::load(Some(&path), &overrides).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/t"));
        assert_eq!(config.listen.http, "127.0.0.1:0");
        assert_eq!(config.listen.otlp_grpc, "0.0.0.0:4317");
        assert_eq!(config.wal.fsync, FsyncPolicy::Interval);
        let printed = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&printed).unwrap(), config);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracelake.toml");
        for bad in [
            "datadir = \"x\"",
            "[listen]\nhttpp = \"x\"",
            "[wal]\nfsync = \"sometimes\"",
            "storage = \"s4://x\"",
            "role = \"collector\"",
            "storage = \"s3://b-1\"\n[cluster]\ncompactor_shard = 2\ncompactor_shards = 2",
            "storage = \"s3://b-1\"\n[cluster]\nnode_id = \"a/b\"",
            "[retention.tenants]\nteam-a = \"three days\"",
            "[retention.tenants]\n\"a/b\" = \"72h\"",
            "[retention]\nperiod = \"24h\"\n[compaction]\ninterval = \"0s\"",
            "[memory]\nlimit_bytes = 1000",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                Config::load(Some(&path), &Overrides::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn retention_periods_reach_storage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracelake.toml");
        std::fs::write(
            &path,
            "[retention]\nperiod = \"336h\"\n[retention.tenants]\nteam-a = \"72h\"\nteam-b = \"0s\"\n",
        )
        .unwrap();
        let retention = Config::load(Some(&path), &Overrides::default())
            .unwrap()
            .storage_config()
            .retention;
        let hours = |hours: u64| Some(Duration::from_secs(hours * 3600));
        assert_eq!(retention.period("team-a"), hours(72));
        assert_eq!(retention.period("team-b"), None);
        assert_eq!(retention.period("anyone-else"), hours(336));
    }
}
