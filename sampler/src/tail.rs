//! Tail sampling: a keep-or-drop decision per trace, taken after a wait so
//! the trace's spans have arrived, which X-Ray's head sampling cannot do.
//!
//! ```text
//!  span of an unsampled trace --> pending[trace] (bounded) --wait--> decide:
//!      any error/fault span?                 keep  (policy "error")
//!      trace longer than the threshold?      keep  (policy "latency")
//!      hash(trace id) below the share?       keep  (policy "probabilistic")
//!      then the per-service cap (traces/s, token bucket per root service)
//!      otherwise                             drop
//! ```
//!
//! Head-sampled traces never come here: what an SDK sampled is kept as
//! sent. Tail policies only rescue traces an SDK forwarded unsampled.
//! The probabilistic share hashes the trace id, so every collector keeps the
//! same traces. Pending traces are bounded by span count; a trace that
//! would exceed the bound is decided at once from what has arrived
//! (counted as `evicted`), never buffered without limit.
//!
//! This module holds the decision and the bounded buffer; the collector
//! feeds it and writes what it keeps.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tracelake_model::TraceId;

use crate::bucket::TokenBucket;

/// Tail-sampling policies. A trace is kept when any keep-policy says so,
/// subject to the per-service cap.
#[derive(Debug, Clone, PartialEq)]
pub struct TailPolicy {
    /// How long after a trace's first span it is decided.
    pub decision_wait: Duration,
    /// Keep traces with an error or fault span.
    pub keep_errors: bool,
    /// Keep traces whose span extent (first start to last end) is at least this.
    pub latency_threshold: Option<Duration>,
    /// Keep this share of the rest, chosen by trace id (0 to 1).
    pub probabilistic_share: f64,
    /// At most this many kept traces per second per root service (None: no cap).
    pub max_traces_per_service_per_second: Option<f64>,
    /// Spans held across all pending traces.
    pub max_pending_spans: usize,
}

impl Default for TailPolicy {
    fn default() -> Self {
        Self {
            decision_wait: Duration::from_secs(10),
            keep_errors: true,
            latency_threshold: Some(Duration::from_secs(1)),
            probabilistic_share: 0.0,
            max_traces_per_service_per_second: None,
            max_pending_spans: 1_000_000,
        }
    }
}

/// What the tail sampler needs to know of one span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanSummary<'a> {
    pub trace_id: TraceId,
    pub service_name: &'a str,
    pub is_root: bool,
    pub failed: bool,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// Why a trace was kept or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    KeptError,
    KeptLatency,
    KeptProbabilistic,
    Dropped,
    DroppedByServiceCap,
}

impl Verdict {
    pub fn kept(self) -> bool {
        matches!(
            self,
            Self::KeptError | Self::KeptLatency | Self::KeptProbabilistic
        )
    }
}

#[derive(Debug)]
struct PendingTrace<T> {
    root_service: Option<String>,
    any_service: String,
    failed: bool,
    start_ns: i64,
    end_ns: i64,
    items: Vec<T>,
}

/// Counters since start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TailStats {
    pub traces_kept: u64,
    pub traces_dropped: u64,
    pub spans_kept: u64,
    pub spans_dropped: u64,
    /// Traces decided early because the pending buffer was full.
    pub traces_evicted: u64,
}

/// Pending traces, each carrying the caller's items (spans in whatever form
/// the collector keeps them).
#[derive(Debug)]
pub struct TailSampler<T> {
    policy: TailPolicy,
    pending: HashMap<TraceId, PendingTrace<T>>,
    order: VecDeque<(TraceId, f64)>,
    pending_spans: usize,
    buckets: HashMap<String, TokenBucket>,
    stats: TailStats,
}

/// A decided trace: its verdict and its items.
#[derive(Debug)]
pub struct Decided<T> {
    pub trace_id: TraceId,
    pub verdict: Verdict,
    pub items: Vec<T>,
}

/// Whether `trace_id` falls in the kept `share`: its low 8 bytes as a
/// fraction of 2^64 (random for random trace ids, the same everywhere).
pub fn in_share(trace_id: &TraceId, share: f64) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.as_bytes()[8..]);
    (u64::from_be_bytes(low) as f64) < share.clamp(0.0, 1.0) * u64::MAX as f64
}

impl<T> TailSampler<T> {
    pub fn new(policy: TailPolicy) -> Self {
        Self {
            policy,
            pending: HashMap::new(),
            order: VecDeque::new(),
            pending_spans: 0,
            buckets: HashMap::new(),
            stats: TailStats::default(),
        }
    }

    pub fn stats(&self) -> TailStats {
        self.stats.clone()
    }

    pub fn pending_spans(&self) -> usize {
        self.pending_spans
    }

    /// Adds a span at `now` (epoch seconds). Returns traces decided early to
    /// stay within `max_pending_spans`.
    pub fn add(&mut self, span: SpanSummary<'_>, item: T, now: f64) -> Vec<Decided<T>> {
        let mut decided = Vec::new();
        while self.pending_spans >= self.policy.max_pending_spans {
            let Some((oldest, _)) = self.order.pop_front() else {
                break;
            };
            if let Some(trace) = self.pending.remove(&oldest) {
                self.stats.traces_evicted += 1;
                decided.push(self.decide(oldest, trace, now));
            }
        }
        let trace = self.pending.entry(span.trace_id).or_insert_with(|| {
            self.order.push_back((span.trace_id, now));
            PendingTrace {
                root_service: None,
                any_service: span.service_name.to_string(),
                failed: false,
                start_ns: span.start_ns,
                end_ns: span.end_ns,
                items: Vec::new(),
            }
        });
        if span.is_root {
            trace.root_service = Some(span.service_name.to_string());
        }
        trace.failed |= span.failed;
        trace.start_ns = trace.start_ns.min(span.start_ns);
        trace.end_ns = trace.end_ns.max(span.end_ns);
        trace.items.push(item);
        self.pending_spans += 1;
        decided
    }

    /// Decides every trace whose wait is over at `now`.
    pub fn decide_due(&mut self, now: f64) -> Vec<Decided<T>> {
        let wait = self.policy.decision_wait.as_secs_f64();
        let mut decided = Vec::new();
        while let Some((trace_id, first_seen)) = self.order.front().copied() {
            if now - first_seen < wait {
                break;
            }
            self.order.pop_front();
            if let Some(trace) = self.pending.remove(&trace_id) {
                decided.push(self.decide(trace_id, trace, now));
            }
        }
        decided
    }

    /// Decides everything pending (shutdown).
    pub fn decide_all(&mut self, now: f64) -> Vec<Decided<T>> {
        let mut decided = Vec::new();
        while let Some((trace_id, _)) = self.order.pop_front() {
            if let Some(trace) = self.pending.remove(&trace_id) {
                decided.push(self.decide(trace_id, trace, now));
            }
        }
        decided
    }

    fn decide(&mut self, trace_id: TraceId, trace: PendingTrace<T>, now: f64) -> Decided<T> {
        self.pending_spans = self.pending_spans.saturating_sub(trace.items.len());
        let duration =
            Duration::from_nanos(trace.end_ns.saturating_sub(trace.start_ns).max(0) as u64);
        let mut verdict = if self.policy.keep_errors && trace.failed {
            Verdict::KeptError
        } else if self
            .policy
            .latency_threshold
            .is_some_and(|threshold| duration >= threshold)
        {
            Verdict::KeptLatency
        } else if in_share(&trace_id, self.policy.probabilistic_share) {
            Verdict::KeptProbabilistic
        } else {
            Verdict::Dropped
        };
        if verdict.kept()
            && let Some(rate) = self.policy.max_traces_per_service_per_second
        {
            let service = trace.root_service.unwrap_or(trace.any_service);
            let burst = rate.max(1.0);
            let bucket = self
                .buckets
                .entry(service)
                .or_insert_with(|| TokenBucket::full(burst, now));
            if bucket.take(1.0, rate, burst, now).is_err() {
                verdict = Verdict::DroppedByServiceCap;
            }
        }
        let spans = trace.items.len() as u64;
        if verdict.kept() {
            self.stats.traces_kept += 1;
            self.stats.spans_kept += spans;
        } else {
            self.stats.traces_dropped += 1;
            self.stats.spans_dropped += spans;
        }
        Decided {
            trace_id,
            verdict,
            items: trace.items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_id(seed: u64) -> TraceId {
        let mut id = [0u8; 16];
        let mixed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (seed >> 7);
        id[..8].copy_from_slice(&seed.to_be_bytes());
        id[8..].copy_from_slice(&mixed.wrapping_mul(0xbf58_476d_1ce4_e5b9).to_be_bytes());
        id[0] |= 0x80; // never all zero (the high bytes play no part in shares)
        TraceId::try_from(&id[..]).unwrap()
    }

    fn span(seed: u64, failed: bool, duration_ms: i64, service: &str) -> SpanSummary<'_> {
        SpanSummary {
            trace_id: trace_id(seed),
            service_name: service,
            is_root: true,
            failed,
            start_ns: 1_000_000_000,
            end_ns: 1_000_000_000 + duration_ms * 1_000_000,
        }
    }

    fn policy() -> TailPolicy {
        TailPolicy {
            decision_wait: Duration::from_secs(5),
            keep_errors: true,
            latency_threshold: Some(Duration::from_millis(500)),
            probabilistic_share: 0.1,
            max_traces_per_service_per_second: None,
            max_pending_spans: 100_000,
        }
    }

    #[test]
    fn errors_and_slow_traces_are_always_kept_and_the_share_holds() {
        let mut sampler = TailSampler::new(policy());
        for seed in 0..20_000u64 {
            let (failed, duration) = match seed % 10 {
                0 => (true, 10),
                1 => (false, 900),
                _ => (false, 10),
            };
            assert!(
                sampler
                    .add(span(seed, failed, duration, "shop"), seed, 0.0)
                    .is_empty()
            );
        }
        assert!(
            sampler.decide_due(4.9).is_empty(),
            "nothing is due before the wait"
        );
        let decided = sampler.decide_due(5.0);
        assert_eq!(decided.len(), 20_000);
        let mut plain_kept = 0;
        for trace in &decided {
            let seed = trace.items[0];
            match seed % 10 {
                0 => assert_eq!(trace.verdict, Verdict::KeptError),
                1 => assert_eq!(trace.verdict, Verdict::KeptLatency),
                _ => plain_kept += usize::from(trace.verdict.kept()),
            }
        }
        let share = plain_kept as f64 / 16_000.0;
        assert!(
            (share - 0.1).abs() < 0.01,
            "kept {share:.3} of plain traces, wanted 0.1"
        );
        assert_eq!(sampler.pending_spans(), 0);
    }

    #[test]
    fn a_trace_collects_its_spans_and_is_decided_once() {
        let mut sampler = TailSampler::new(TailPolicy {
            probabilistic_share: 0.0,
            ..policy()
        });
        let mut child = span(7, false, 10, "db");
        child.is_root = false;
        sampler.add(span(7, false, 10, "shop"), "root", 0.0);
        child.failed = true;
        sampler.add(child, "child", 1.0);
        let decided = sampler.decide_due(6.0);
        assert_eq!(decided.len(), 1);
        assert_eq!(
            decided[0].verdict,
            Verdict::KeptError,
            "an error anywhere keeps the trace"
        );
        assert_eq!(decided[0].items, ["root", "child"]);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_open_traces() {
        let mut sampler = TailSampler::new(TailPolicy {
            max_pending_spans: 1_000,
            ..policy()
        });
        let mut evicted = 0;
        for seed in 0..100_000u64 {
            evicted += sampler
                .add(span(seed, seed % 100 == 0, 10, "shop"), seed, 0.0)
                .len();
            assert!(sampler.pending_spans() <= 1_000);
        }
        assert_eq!(evicted, 99_000);
        assert_eq!(sampler.stats().traces_evicted, 99_000);
        let errors_kept = sampler.stats().traces_kept;
        assert!(
            errors_kept >= 990,
            "evicted traces are still decided: errors kept ({errors_kept})"
        );
    }

    #[test]
    fn per_service_cap() {
        let mut sampler = TailSampler::new(TailPolicy {
            max_traces_per_service_per_second: Some(10.0),
            ..policy()
        });
        for seed in 0..100u64 {
            sampler.add(span(seed, true, 10, "shop"), seed, 0.0);
            sampler.add(span(1_000 + seed, true, 10, "cart"), seed, 0.0);
        }
        let decided = sampler.decide_due(5.0);
        let kept = |service_seeds: std::ops::Range<u64>| {
            decided
                .iter()
                .filter(|trace| service_seeds.contains(&trace.items[0]) && trace.verdict.kept())
                .count()
        };
        assert_eq!(
            kept(0..100),
            20,
            "both services: 10 tokens each, cap per service"
        );
        assert_eq!(sampler.stats().traces_kept, 20);
        assert!(
            decided
                .iter()
                .any(|trace| trace.verdict == Verdict::DroppedByServiceCap)
        );
    }
}
