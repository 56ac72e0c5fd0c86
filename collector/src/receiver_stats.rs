//! What each receiver accepted and refused, for `/metrics`
//! (`tracelake_receiver_accepted_total`, `..._rejected_total`,
//! `..._failed_requests_total`, labelled by receiver and signal). The X-Ray
//! UDP receiver keeps its own, finer counters ([`crate::xray::udp`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::prometheus::{labels, write_counter};

/// A receiver and the signal it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    OtlpGrpcTraces,
    OtlpHttpTraces,
    OtlpGrpcMetrics,
    OtlpHttpMetrics,
    XrayApi,
}

impl Receiver {
    const ALL: [Self; 5] = [
        Self::OtlpGrpcTraces,
        Self::OtlpHttpTraces,
        Self::OtlpGrpcMetrics,
        Self::OtlpHttpMetrics,
        Self::XrayApi,
    ];

    /// `(receiver, signal)` labels.
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::OtlpGrpcTraces => ("otlp_grpc", "traces"),
            Self::OtlpHttpTraces => ("otlp_http", "traces"),
            Self::OtlpGrpcMetrics => ("otlp_grpc", "metrics"),
            Self::OtlpHttpMetrics => ("otlp_http", "metrics"),
            Self::XrayApi => ("xray_api", "traces"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed_requests: AtomicU64,
}

/// Counters per [`Receiver`]: spans (or metric points, or X-Ray
/// documents) accepted and rejected, and requests that failed whole.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    counts: [Counts; 5],
}

impl ReceiverStats {
    fn of(&self, receiver: Receiver) -> &Counts {
        let index = Receiver::ALL
            .iter()
            .position(|candidate| *candidate == receiver)
            .unwrap_or(0);
        &self.counts[index]
    }

    pub fn record(&self, receiver: Receiver, accepted: usize, rejected: usize) {
        let counts = self.of(receiver);
        counts
            .accepted
            .fetch_add(accepted as u64, Ordering::Relaxed);
        counts
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
    }

    pub fn record_failure(&self, receiver: Receiver) {
        self.of(receiver)
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn render_prometheus(&self, out: &mut String) {
        let series = |pick: fn(&Counts) -> &AtomicU64| -> Vec<(String, u64)> {
            Receiver::ALL
                .iter()
                .map(|receiver| {
                    let (name, signal) = receiver.labels();
                    (
                        labels(&[("receiver", name), ("signal", signal)]),
                        pick(self.of(*receiver)).load(Ordering::Relaxed),
                    )
                })
                .collect()
        };
        write_counter(
            out,
            "tracelake_receiver_accepted_total",
            "Spans, metric points or X-Ray documents accepted, by receiver.",
            &series(|counts| &counts.accepted),
        );
        write_counter(
            out,
            "tracelake_receiver_rejected_total",
            "Spans, metric points or X-Ray documents refused as invalid, by receiver.",
            &series(|counts| &counts.rejected),
        );
        write_counter(
            out,
            "tracelake_receiver_failed_requests_total",
            "Requests that failed whole (storage unavailable, bad tenant), by receiver.",
            &series(|counts| &counts.failed_requests),
        );
    }
}
