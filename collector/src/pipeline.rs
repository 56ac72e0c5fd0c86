//! The ingest pipeline shared by every receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tracelake_model::otlp::{SpanRejection, resource_spans_to_batch};
use tracelake_model::validate_tenant;
use tracelake_storage::{SpanWriter, StorageError};

use crate::limits::{IngestLimits, RateLimiter, TraceSizes};
use crate::receiver_stats::ReceiverStats;
use crate::tail::TailStage;

/// How many rejection reasons a response spells out; the count covers all.
const REASONS_SHOWN: usize = 5;

/// What happened to one request's spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub rejected: usize,
    /// Why spans were rejected, empty when none was.
    pub message: String,
    /// Every refused span with its reason.
    pub rejections: Vec<SpanRejection>,
}

impl IngestOutcome {
    /// The OTLP `partial_success` for this outcome: `None` when every span
    /// was accepted, as the OTLP spec asks.
    pub fn partial_success(self) -> Option<ExportTracePartialSuccess> {
        (self.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: self.rejected as i64,
            error_message: self.message,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    InvalidTenant(tracelake_model::InvalidTenant),
    /// Storage could not make the spans durable; the client should retry.
    #[error("storage unavailable: {0}")]
    Unavailable(StorageError),
    /// Spans arrive faster than they are written: refused so memory stays
    /// bounded; the client should retry after a pause (OTLP
    /// `RESOURCE_EXHAUSTED` / HTTP 429, X-Ray `ThrottledException`).
    #[error("{0}")]
    Overloaded(StorageError),
    /// A bug or a lost worker, not the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// The error of a failed append: overload or unavailability.
    pub fn from_append(error: StorageError) -> Self {
        match error {
            StorageError::Overloaded { .. } => Self::Overloaded(error),
            other => Self::Unavailable(other),
        }
    }
}

/// Bytes of requests being decoded and stored, across receivers.
///
/// Capacity is checked when a request arrives, but every request admitted
/// together grows several times its wire size while it is decoded and
/// converted: with many large requests at once that overshoots the memory
/// limit. So, as Mimir's `max_inflight_push_requests_bytes`, requests past
/// this budget are refused (retry later) instead of admitted. A request
/// alone is always admitted, however large (the message size limit bounds
/// it).
#[derive(Debug)]
pub struct InflightBytes {
    /// 0: unlimited.
    limit: u64,
    used: AtomicU64,
}

/// Holds a request's bytes in [`InflightBytes`] until dropped.
#[derive(Debug)]
pub struct InflightGuard {
    inflight: Arc<InflightBytes>,
    bytes: u64,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl InflightBytes {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    fn acquire(self: &Arc<Self>, bytes: u64) -> Result<InflightGuard, IngestError> {
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        let guard = InflightGuard {
            inflight: Arc::clone(self),
            bytes,
        };
        if self.limit != 0 && before != 0 && before + bytes > self.limit {
            // Dropping the guard gives the bytes back.
            return Err(IngestError::Overloaded(StorageError::Overloaded {
                what: "requests being decoded and stored (memory.limit_bytes / 64)",
                used: before + bytes,
                limit: self.limit,
            }));
        }
        Ok(guard)
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    writer: Arc<dyn SpanWriter>,
    tail: Option<Arc<TailStage>>,
    receiver_stats: Arc<ReceiverStats>,
    inflight: Arc<InflightBytes>,
    rate_limiter: Arc<RateLimiter>,
    trace_sizes: Arc<TraceSizes>,
}

impl Pipeline {
    pub fn new(writer: Arc<dyn SpanWriter>) -> Self {
        Self {
            writer,
            tail: None,
            receiver_stats: Arc::default(),
            inflight: InflightBytes::new(0),
            rate_limiter: Arc::default(),
            trace_sizes: Arc::default(),
        }
    }

    /// Limits each tenant's ingestion rate and trace size ([`crate::limits`]).
    pub fn with_ingest_limits(mut self, limits: IngestLimits) -> Self {
        self.trace_sizes = Arc::new(TraceSizes::new(limits.clone()));
        self.rate_limiter = Arc::new(RateLimiter::new(limits));
        self
    }

    /// Bounds the bytes of requests in flight ([`InflightBytes`]).
    pub fn with_inflight_limit(mut self, bytes: u64) -> Self {
        self.inflight = InflightBytes::new(bytes);
        self
    }

    /// Admits a request of `tenant` of `bytes` (its protobuf or JSON size):
    /// storage has room, the tenant's rate limit and the in-flight budget
    /// do too. Receivers call it before decoding when they can, and hold the
    /// guard until the request is stored.
    pub fn admit(&self, tenant: &str, bytes: usize) -> Result<InflightGuard, IngestError> {
        validate_tenant(tenant).map_err(IngestError::InvalidTenant)?;
        self.check_capacity()?;
        self.rate_limiter.admit(tenant, bytes as u64)?;
        self.inflight.acquire(bytes as u64)
    }

    /// What the receivers feeding this pipeline accepted and refused.
    pub fn receiver_stats(&self) -> &Arc<ReceiverStats> {
        &self.receiver_stats
    }

    /// A pipeline that holds explicitly unsampled spans for tail sampling
    /// (see [`crate::tail`]); the caller runs [`TailStage::run`].
    pub fn with_tail_sampling(writer: Arc<dyn SpanWriter>, tail: Arc<TailStage>) -> Self {
        Self {
            writer,
            tail: Some(tail),
            receiver_stats: Arc::default(),
            inflight: InflightBytes::new(0),
            rate_limiter: Arc::default(),
            trace_sizes: Arc::default(),
        }
    }

    /// Whether storage would take spans now ([`SpanWriter::check_capacity`]):
    /// receivers ask before decoding a request, so under overload a refusal
    /// costs no decoding.
    pub fn check_capacity(&self) -> Result<(), IngestError> {
        self.writer
            .check_capacity()
            .map_err(IngestError::from_append)
    }

    /// Runs `work` on a request's spans in a blocking task, off the
    /// reactor (the spans are dropped there too, unless `work` returns them).
    async fn blocking<T: Send + 'static>(
        &self,
        tenant: &str,
        resource_spans: Vec<ResourceSpans>,
        work: impl FnOnce(&TraceSizes, &str, Vec<ResourceSpans>) -> T + Send + 'static,
    ) -> Result<T, IngestError> {
        let (sizes, tenant) = (Arc::clone(&self.trace_sizes), tenant.to_string());
        tokio::task::spawn_blocking(move || work(&sizes, &tenant, resource_spans))
            .await
            .map_err(|error| IngestError::Internal(format!("convert task: {error}")))
    }

    /// Validates and stores OTLP spans for `tenant`; returns once the
    /// accepted spans are durable.
    pub async fn ingest_otlp(
        &self,
        tenant: &str,
        mut resource_spans: Vec<ResourceSpans>,
    ) -> Result<IngestOutcome, IngestError> {
        validate_tenant(tenant).map_err(IngestError::InvalidTenant)?;
        self.check_capacity()?;
        // Counting trace sizes reads every span: CPU work, kept off the
        // reactor (whose threads answer the other requests, refusals
        // included). It runs in the conversion's blocking task, unless tail
        // sampling must see the admitted spans first.
        let mut count_sizes = self.trace_sizes.has_limits(tenant);
        let mut rejections = Vec::new();
        let held = match &self.tail {
            Some(tail) => {
                if count_sizes {
                    (resource_spans, rejections) = self
                        .blocking(tenant, resource_spans, |sizes, tenant, mut spans| {
                            let refused = sizes.admit(tenant, &mut spans);
                            (spans, refused)
                        })
                        .await?;
                    count_sizes = false;
                }
                tail.hold_unsampled(tenant, &mut resource_spans).await
            }
            None => 0,
        };
        let (refused, converted) = self
            .blocking(tenant, resource_spans, move |sizes, tenant, mut spans| {
                let refused = if count_sizes {
                    sizes.admit(tenant, &mut spans)
                } else {
                    Vec::new()
                };
                (refused, resource_spans_to_batch(tenant, &spans))
            })
            .await?;
        let converted = converted.map_err(|error| IngestError::Unavailable(error.into()))?;
        rejections.extend(refused);
        if let Some(batch) = converted.batch {
            self.writer
                .append(tenant, batch)
                .await
                .map_err(IngestError::from_append)?;
        }
        rejections.extend(converted.rejections);
        let rejected = rejections.len();
        let message = if rejected == 0 {
            String::new()
        } else {
            let reasons: Vec<String> = rejections
                .iter()
                .take(REASONS_SHOWN)
                .map(|rejection| format!("span {:?}: {}", rejection.span_id_hex, rejection.reason))
                .collect();
            let more = rejected.saturating_sub(REASONS_SHOWN);
            let suffix = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            format!("rejected {rejected} spans: {}{suffix}", reasons.join("; "))
        };
        Ok(IngestOutcome {
            accepted: converted.accepted + held,
            rejected,
            message,
            rejections,
        })
    }
}
