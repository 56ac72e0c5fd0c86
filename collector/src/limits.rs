//! Per-tenant ingestion limits, as Tempo's overrides: a token bucket of
//! bytes per tenant, `ingestion_rate_limit_bytes` per second refilling up to
//! `ingestion_burst_size_bytes`.
//!
//! A request's bytes are taken from its tenant's bucket before its spans
//! are converted or stored: for OTLP/HTTP, the X-Ray API and UDP before the
//! body is decoded (its wire size, decompressed); for OTLP/gRPC after tonic
//! has decoded the message (tonic decodes before any handler runs; its
//! size is the message's encoded length). Without enough, it is refused as overload
//! (OTLP `RESOURCE_EXHAUSTED` / 429, X-Ray `ThrottledException`, UDP
//! datagrams shed) and the client retries. A request larger than the burst
//! can never pass and says so.
//!
//! [`TraceSizes`] caps a trace, as Tempo's `max_bytes_per_trace` (and
//! `max_spans_per_trace`): a trace's bytes are its spans' OTLP protobuf
//! sizes, whichever protocol they came in, summed while the trace is live
//! (its spans arrive within [`TRACE_IDLE`] of each other, as Tempo counts
//! a live trace). A request's spans of a trace that would pass the limit
//! are refused, each with the reason (OTLP `partial_success`, X-Ray
//! `UnprocessedTraceSegments`); its other spans are stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::Mutex;
use prost::Message;
use tracelake_model::otlp::SpanRejection;
use tracelake_sampler::bucket::{TokenBucket, seconds_since};
use tracelake_storage::StorageError;

use crate::IngestError;

/// One tenant's limits; zero turns a limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub ingestion_rate_limit_bytes: u64,
    pub ingestion_burst_size_bytes: u64,
    pub max_bytes_per_trace: u64,
    pub max_spans_per_trace: u64,
}

impl TenantLimits {
    /// Whether a trace-size limit is set.
    pub fn limits_trace_size(&self) -> bool {
        self.max_bytes_per_trace > 0 || self.max_spans_per_trace > 0
    }
}

/// Limits for every tenant: the defaults, and per-tenant overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestLimits {
    pub defaults: TenantLimits,
    pub tenants: HashMap<String, TenantLimits>,
}

impl IngestLimits {
    pub fn for_tenant(&self, tenant: &str) -> TenantLimits {
        self.tenants.get(tenant).copied().unwrap_or(self.defaults)
    }
}

/// Buckets kept at most; past it, full ones (which say nothing a fresh
/// bucket would not) are dropped, so tenant names a client invents cannot
/// grow memory without bound.
const MAX_BUCKETS: usize = 10_000;

/// The buckets, one per tenant seen.
#[derive(Debug)]
pub struct RateLimiter {
    limits: IngestLimits,
    /// The buckets' clock starts here.
    origin: Instant,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(IngestLimits::default())
    }
}

impl RateLimiter {
    pub fn new(limits: IngestLimits) -> Self {
        Self {
            limits,
            origin: Instant::now(),
            buckets: Mutex::default(),
        }
    }

    /// Takes `bytes` from `tenant`'s bucket at `now`, or refuses.
    pub fn admit_at(&self, tenant: &str, bytes: u64, now: Instant) -> Result<(), IngestError> {
        let limits = self.limits.for_tenant(tenant);
        if limits.ingestion_rate_limit_bytes == 0 {
            return Ok(());
        }
        let rate = limits.ingestion_rate_limit_bytes as f64;
        let burst = limits
            .ingestion_burst_size_bytes
            .max(limits.ingestion_rate_limit_bytes) as f64;
        let refuse = |what| {
            IngestError::Overloaded(StorageError::Overloaded {
                what,
                used: bytes,
                limit: burst as u64,
            })
        };
        if bytes as f64 > burst {
            return Err(refuse(
                "the tenant's ingestion burst (a request larger than the burst never passes)",
            ));
        }
        let now = seconds_since(self.origin, now);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(tenant) {
            buckets.retain(|_, bucket| bucket.available(rate, burst, now) < burst);
        }
        let bucket = buckets
            .entry(tenant.to_string())
            .or_insert_with(|| TokenBucket::full(burst, now));
        bucket.take(bytes as f64, rate, burst, now).map_err(|_| {
            refuse("the tenant's ingestion rate (ingestion_rate_limit_bytes per second)")
        })
    }

    pub fn admit(&self, tenant: &str, bytes: u64) -> Result<(), IngestError> {
        self.admit_at(tenant, bytes, Instant::now())
    }
}

/// A trace whose spans stop arriving for this long is no longer counted.
pub const TRACE_IDLE: Duration = Duration::from_secs(60);

/// Traces counted at most (about 64 bytes each); past it, traces not yet
/// counted are let through uncounted rather than grow memory.
const MAX_TRACKED_TRACES: usize = 1_000_000;

/// How often idle traces are dropped from the counts.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct TraceUsage {
    bytes: u64,
    spans: u64,
    last_seen: Instant,
}

/// The sizes of live traces, per tenant.
#[derive(Debug)]
pub struct TraceSizes {
    limits: IngestLimits,
    state: Mutex<TraceState>,
}

#[derive(Debug)]
struct TraceState {
    /// By tenant, then trace id; a tenant's map exists while it holds a trace.
    tenants: HashMap<String, HashMap<[u8; 16], TraceUsage>>,
    /// Traces across every tenant.
    tracked: usize,
    last_sweep: Instant,
}

impl TraceState {
    /// Drops traces idle for [`TRACE_IDLE`], and tenants left with none.
    fn sweep(&mut self, now: Instant) {
        let mut tracked = 0;
        self.tenants.retain(|_, traces| {
            traces.retain(|_, usage| now.saturating_duration_since(usage.last_seen) < TRACE_IDLE);
            tracked += traces.len();
            !traces.is_empty()
        });
        self.tracked = tracked;
        self.last_sweep = now;
    }
}

impl Default for TraceSizes {
    fn default() -> Self {
        Self::new(IngestLimits::default())
    }
}

impl TraceSizes {
    pub fn new(limits: IngestLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(TraceState {
                tenants: HashMap::new(),
                tracked: 0,
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Whether `tenant` has a trace-size limit (else [`Self::admit`] is a no-op).
    pub fn has_limits(&self, tenant: &str) -> bool {
        self.limits.for_tenant(tenant).limits_trace_size()
    }

    /// Counts the spans of `resource_spans` towards their traces at `now`
    /// and takes out those of traces that would pass `tenant`'s limits,
    /// returning a rejection for each.
    pub fn admit_at(
        &self,
        tenant: &str,
        resource_spans: &mut [ResourceSpans],
        now: Instant,
    ) -> Vec<SpanRejection> {
        let limits = self.limits.for_tenant(tenant);
        if !limits.limits_trace_size() {
            return Vec::new();
        }
        let mut offered: HashMap<[u8; 16], (u64, u64)> = HashMap::new();
        for span in spans(resource_spans) {
            // Malformed ids are for the conversion to refuse.
            if let Ok(trace_id) = <[u8; 16]>::try_from(span.trace_id.as_slice()) {
                let entry = offered.entry(trace_id).or_default();
                entry.0 += span.encoded_len() as u64;
                entry.1 += 1;
            }
        }
        let mut too_large: HashMap<[u8; 16], String> = HashMap::new();
        {
            let mut state = self.state.lock();
            if now.saturating_duration_since(state.last_sweep) >= SWEEP_EVERY {
                state.sweep(now);
            }
            let state = &mut *state;
            // Allocates the tenant's name once, when it first holds a trace.
            if !state.tenants.contains_key(tenant) {
                state.tenants.insert(tenant.to_string(), HashMap::new());
            }
            let traces = state.tenants.get_mut(tenant).expect("inserted above");
            for (trace_id, (bytes, count)) in offered {
                let usage = match traces.get_mut(&trace_id) {
                    Some(usage) => usage,
                    None if state.tracked >= MAX_TRACKED_TRACES => continue,
                    None => {
                        state.tracked += 1;
                        traces.entry(trace_id).or_insert(TraceUsage {
                            bytes: 0,
                            spans: 0,
                            last_seen: now,
                        })
                    }
                };
                usage.last_seen = now;
                let over_bytes = limits.max_bytes_per_trace > 0
                    && usage.bytes + bytes > limits.max_bytes_per_trace;
                let over_spans = limits.max_spans_per_trace > 0
                    && usage.spans + count > limits.max_spans_per_trace;
                if over_bytes || over_spans {
                    let reason = if over_bytes {
                        format!(
                            "trace {} would be {} bytes, over the tenant's max_bytes_per_trace ({})",
                            hex::encode(trace_id),
                            usage.bytes + bytes,
                            limits.max_bytes_per_trace
                        )
                    } else {
                        format!(
                            "trace {} would have {} spans, over the tenant's max_spans_per_trace ({})",
                            hex::encode(trace_id),
                            usage.spans + count,
                            limits.max_spans_per_trace
                        )
                    };
                    too_large.insert(trace_id, reason);
                } else {
                    usage.bytes += bytes;
                    usage.spans += count;
                }
            }
        }
        if too_large.is_empty() {
            return Vec::new();
        }
        let mut rejections = Vec::new();
        for resource in resource_spans.iter_mut() {
            for scope in &mut resource.scope_spans {
                scope.spans.retain(|span| {
                    let reason = <[u8; 16]>::try_from(span.trace_id.as_slice())
                        .ok()
                        .and_then(|trace_id| too_large.get(&trace_id));
                    if let Some(reason) = reason {
                        rejections.push(SpanRejection {
                            span_id_hex: hex::encode(&span.span_id),
                            reason: reason.clone(),
                        });
                    }
                    reason.is_none()
                });
            }
        }
        rejections
    }

    pub fn admit(&self, tenant: &str, resource_spans: &mut [ResourceSpans]) -> Vec<SpanRejection> {
        self.admit_at(tenant, resource_spans, Instant::now())
    }

    /// Traces counted now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.state.lock().tracked
    }
}

fn spans(
    resource_spans: &[ResourceSpans],
) -> impl Iterator<Item = &opentelemetry_proto::tonic::trace::v1::Span> {
    resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_tenant_gets_its_rate_and_burst() {
        let limits = IngestLimits {
            defaults: TenantLimits {
                ingestion_rate_limit_bytes: 1_000,
                ingestion_burst_size_bytes: 2_000,
                ..Default::default()
            },
            tenants: [("free".to_string(), TenantLimits::default())].into(),
        };
        let limiter = RateLimiter::new(limits);
        let start = Instant::now();
        // The burst, then refusals until the rate refills it.
        limiter.admit_at("a", 1_500, start).unwrap();
        limiter.admit_at("a", 500, start).unwrap();
        let refused = limiter.admit_at("a", 100, start).unwrap_err();
        assert!(refused.to_string().contains("ingestion rate"), "{refused}");
        limiter
            .admit_at("a", 400, start + Duration::from_millis(500))
            .unwrap();
        // Another tenant has its own bucket; "free" has no limit.
        limiter.admit_at("b", 2_000, start).unwrap();
        limiter.admit_at("free", 1_000_000, start).unwrap();
        // Larger than the burst: never.
        let too_big = limiter
            .admit_at("a", 2_001, start + Duration::from_secs(60))
            .unwrap_err();
        assert!(too_big.to_string().contains("burst"), "{too_big}");
        assert!(matches!(too_big, IngestError::Overloaded(_)));
    }

    fn resource(trace_ids: &[u8]) -> Vec<ResourceSpans> {
        use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
        let spans = trace_ids
            .iter()
            .enumerate()
            .map(|(index, &trace)| Span {
                trace_id: vec![trace; 16],
                span_id: vec![index as u8 + 1; 8],
                name: "x".repeat(50),
                ..Default::default()
            })
            .collect();
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn span_count(resource_spans: &[ResourceSpans]) -> usize {
        spans(resource_spans).count()
    }

    #[test]
    fn a_trace_past_its_size_is_refused_and_the_other_traces_pass() {
        let limits = IngestLimits {
            defaults: TenantLimits {
                max_spans_per_trace: 3,
                ..Default::default()
            },
            tenants: [(
                "small".to_string(),
                TenantLimits {
                    max_bytes_per_trace: 100,
                    ..Default::default()
                },
            )]
            .into(),
        };
        let sizes = TraceSizes::new(limits);
        let start = Instant::now();
        let mut first = resource(&[1, 1, 2]);
        assert!(sizes.admit_at("t", &mut first, start).is_empty());
        // Trace 1 would reach 4 spans: its spans go, trace 3's stay.
        let mut second = resource(&[1, 1, 3]);
        let rejections = sizes.admit_at("t", &mut second, start);
        assert_eq!(rejections.len(), 2);
        assert!(
            rejections[0].reason.contains("max_spans_per_trace (3)"),
            "{:?}",
            rejections[0]
        );
        assert_eq!(span_count(&second), 1);
        assert_eq!(second[0].scope_spans[0].spans[0].trace_id, vec![3; 16]);
        // The same trace id in another tenant is another trace.
        assert!(
            sizes
                .admit_at("u", &mut resource(&[1, 1, 1]), start)
                .is_empty()
        );
        // "small" counts bytes: each span is about 70 bytes.
        assert!(
            sizes
                .admit_at("small", &mut resource(&[1]), start)
                .is_empty()
        );
        let refused = sizes.admit_at("small", &mut resource(&[1]), start);
        assert!(
            refused[0].reason.contains("max_bytes_per_trace (100)"),
            "{refused:?}"
        );
        // Idle past TRACE_IDLE, a trace is forgotten and counts afresh.
        let later = start + TRACE_IDLE + SWEEP_EVERY;
        assert!(
            sizes
                .admit_at("t", &mut resource(&[1, 1]), later)
                .is_empty()
        );
        assert_eq!(sizes.tracked(), 1);
    }

    #[test]
    fn without_limits_nothing_is_counted() {
        let sizes = TraceSizes::default();
        let mut request = resource(&[1, 1, 1, 1]);
        assert!(sizes.admit("t", &mut request).is_empty());
        assert_eq!((span_count(&request), sizes.tracked()), (4, 0));
    }
}
