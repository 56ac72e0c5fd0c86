//! What each receiver accepted and refused, for `/metrics`
//! (`tracelake_receiver_accepted_total`, `..._rejected_total`,
//! `..._failed_requests_total`, `..._bytes_total`, labelled by receiver
//! and signal, and `tracelake_receiver_tenant_accepted_total` by tenant).
//! The X-Ray UDP receiver keeps its own, finer counters besides
//! ([`crate::xray::udp`]).
//!
//! The tenant label is bounded: the first [`MAX_TENANT_LABELS`] tenants
//! seen have their own series, every later one counts under `other`, so a
//! client inventing tenants cannot grow `/metrics` without end.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::prometheus::{Labels, encode_counter};

/// Tenants with a series of their own; later ones are `other`.
pub const MAX_TENANT_LABELS: usize = 100;

/// The tenant label of tenants beyond [`MAX_TENANT_LABELS`].
pub const OTHER_TENANTS: &str = "other";

/// A receiver and the signal it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    OtlpGrpcTraces,
    OtlpHttpTraces,
    OtlpGrpcMetrics,
    OtlpHttpMetrics,
    XrayApi,
    XrayUdp,
}

impl Receiver {
    const ALL: [Self; 6] = [
        Self::OtlpGrpcTraces,
        Self::OtlpHttpTraces,
        Self::OtlpGrpcMetrics,
        Self::OtlpHttpMetrics,
        Self::XrayApi,
        Self::XrayUdp,
    ];

    /// `(receiver, signal)` labels.
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::OtlpGrpcTraces => ("otlp_grpc", "traces"),
            Self::OtlpHttpTraces => ("otlp_http", "traces"),
            Self::OtlpGrpcMetrics => ("otlp_grpc", "metrics"),
            Self::OtlpHttpMetrics => ("otlp_http", "metrics"),
            Self::XrayApi => ("xray_api", "traces"),
            Self::XrayUdp => ("xray_udp", "traces"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed_requests: AtomicU64,
    bytes: AtomicU64,
}

/// Counters per [`Receiver`]: spans (or metric points, or X-Ray
/// documents) accepted and rejected, requests that failed whole, bytes
/// received; and what each tenant had accepted.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    counts: [Counts; 6],
    tenants: Mutex<HashMap<String, u64>>,
}

impl ReceiverStats {
    fn of(&self, receiver: Receiver) -> &Counts {
        let index = Receiver::ALL
            .iter()
            .position(|candidate| *candidate == receiver)
            .unwrap_or(0);
        &self.counts[index]
    }

    /// A request's outcome: `accepted` and `rejected` items of `tenant`.
    pub fn record(&self, receiver: Receiver, tenant: &str, accepted: usize, rejected: usize) {
        let counts = self.of(receiver);
        counts
            .accepted
            .fetch_add(accepted as u64, Ordering::Relaxed);
        counts
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
        if accepted > 0 {
            let mut tenants = self.tenants.lock();
            let key = if tenants.contains_key(tenant) || tenants.len() < MAX_TENANT_LABELS {
                tenant
            } else {
                OTHER_TENANTS
            };
            match tenants.get_mut(key) {
                Some(count) => *count += accepted as u64,
                None => {
                    tenants.insert(key.to_string(), accepted as u64);
                }
            }
        }
    }

    /// Bytes of a request (or datagram) as received, before decoding.
    pub fn record_bytes(&self, receiver: Receiver, bytes: usize) {
        self.of(receiver)
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn record_failure(&self, receiver: Receiver) {
        self.of(receiver)
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for ReceiverStats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let series = |pick: fn(&Counts) -> &AtomicU64| -> Vec<(Labels<'static>, u64)> {
            Receiver::ALL
                .iter()
                .map(|receiver| {
                    let (name, signal) = receiver.labels();
                    (
                        vec![("receiver", name), ("signal", signal)],
                        pick(self.of(*receiver)).load(Ordering::Relaxed),
                    )
                })
                .collect()
        };
        encode_counter(
            &mut encoder,
            "tracelake_receiver_accepted_total",
            "Spans, metric points or X-Ray documents accepted, by receiver.",
            &series(|counts| &counts.accepted),
        )?;
        encode_counter(
            &mut encoder,
            "tracelake_receiver_rejected_total",
            "Spans, metric points or X-Ray documents refused as invalid, by receiver.",
            &series(|counts| &counts.rejected),
        )?;
        encode_counter(
            &mut encoder,
            "tracelake_receiver_failed_requests_total",
            "Requests that failed whole (storage unavailable, bad tenant), by receiver.",
            &series(|counts| &counts.failed_requests),
        )?;
        encode_counter(
            &mut encoder,
            "tracelake_receiver_bytes_total",
            "Bytes received (request bodies, datagrams) before decoding, by receiver.",
            &series(|counts| &counts.bytes),
        )?;
        let tenants = self.tenants.lock();
        let mut by_tenant: Vec<(Labels<'_>, u64)> = tenants
            .iter()
            .map(|(tenant, count)| (vec![("tenant", tenant.as_str())], *count))
            .collect();
        by_tenant.sort_unstable();
        encode_counter(
            &mut encoder,
            "tracelake_receiver_tenant_accepted_total",
            "Spans, metric points or X-Ray documents accepted, by tenant (the first 100 tenants seen; later ones as `other`).",
            &by_tenant,
        )
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn page(stats: ReceiverStats) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(stats));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn tenants_beyond_the_cap_count_as_other() {
        let stats = ReceiverStats::default();
        for tenant in 0..MAX_TENANT_LABELS + 5 {
            stats.record(Receiver::OtlpHttpTraces, &format!("t{tenant}"), 2, 0);
        }
        // A tenant seen before the cap keeps its series.
        stats.record(Receiver::XrayUdp, "t0", 3, 1);
        stats.record_bytes(Receiver::XrayUdp, 100);
        let text = page(stats);
        let tenant_series = text
            .lines()
            .filter(|line| line.starts_with("tracelake_receiver_tenant_accepted_total{"))
            .count();
        assert_eq!(tenant_series, MAX_TENANT_LABELS + 1, "{text}");
        for line in [
            "tracelake_receiver_tenant_accepted_total{tenant=\"other\"} 10",
            "tracelake_receiver_tenant_accepted_total{tenant=\"t0\"} 5",
            "tracelake_receiver_accepted_total{receiver=\"otlp_http\",signal=\"traces\"} 210",
            "tracelake_receiver_rejected_total{receiver=\"xray_udp\",signal=\"traces\"} 1",
            "tracelake_receiver_bytes_total{receiver=\"xray_udp\",signal=\"traces\"} 100",
        ] {
            assert!(
                text.lines().any(|one| one == line),
                "missing {line}\n{text}"
            );
        }
    }
}
