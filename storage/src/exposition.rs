//! The storage engine's own series for the process's `/metrics` registry:
//! counters (appended spans, blocks flushed, compacted and expired,
//! failures, refused appends), gauges (blocks, head bytes, resident memory
//! and its limit) and the WAL append and flush latency histograms, read
//! from [`Storage::stats`] at each scrape.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::Storage;

/// Buckets of the latency histograms, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The storage counters as a collector of a `prometheus_client` registry
/// ([`Storage::metrics`]).
pub struct StorageMetrics(Storage);

impl fmt::Debug for StorageMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageMetrics")
    }
}

impl Storage {
    /// This engine's series, for the process's registry
    /// (`registry.register_collector(Box::new(storage.metrics()))`).
    pub fn metrics(&self) -> StorageMetrics {
        StorageMetrics(self.clone())
    }
}

impl Collector for StorageMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = self.0.stats();
        let counters = [
            (
                "tracelake_storage_appended_spans_total",
                "Spans appended to the WAL and head.",
                stats.appended_spans,
            ),
            (
                "tracelake_storage_flushed_blocks_total",
                "Parquet blocks written.",
                stats.flushed_blocks,
            ),
            (
                "tracelake_storage_flushed_bytes_total",
                "Bytes of Parquet blocks written.",
                stats.flushed_bytes,
            ),
            (
                "tracelake_storage_compacted_blocks_total",
                "Blocks merged away by compaction.",
                stats.compacted_blocks,
            ),
            (
                "tracelake_storage_expired_blocks_total",
                "Blocks dropped by retention.",
                stats.expired_blocks,
            ),
            (
                "tracelake_storage_compaction_failures_total",
                "Compaction passes that failed (retried on the next pass).",
                stats.compaction_failures,
            ),
            (
                "tracelake_storage_refused_appends_total",
                "Appends refused because the head was over flush.max_head_bytes or the process over memory.limit_bytes' soft limit.",
                stats.refused_appends,
            ),
            (
                "tracelake_storage_flush_failures_total",
                "Flushes that failed and will be retried.",
                stats.flush_failures,
            ),
        ];
        for (name, help, value) in counters {
            // OpenMetrics names the family without the samples' `_total`.
            let family = name.strip_suffix("_total").unwrap_or(name);
            encoder
                .encode_descriptor(family, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        let gauges = [
            (
                "tracelake_storage_blocks",
                "Blocks in the catalog.",
                stats.blocks as u64,
            ),
            (
                "tracelake_storage_head_active_bytes",
                "Arrow bytes of the head batches not yet sealed for a flush.",
                stats.head.active_bytes as u64,
            ),
            (
                "tracelake_storage_head_batches",
                "Batches in the head, active and sealed (being flushed).",
                (stats.head.active_batches + stats.head.sealed_batches) as u64,
            ),
            (
                "tracelake_storage_head_sealed_bytes",
                "Arrow bytes of the head batches being flushed.",
                stats.head.sealed_bytes as u64,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory of the process, as the memory limiter samples it.",
                stats.resident_bytes,
            ),
            (
                "tracelake_memory_limit_bytes",
                "memory.limit_bytes (0: off); appends are refused from 80% of it.",
                stats.memory_limit_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&(value as i64))?;
        }
        for (name, help, histogram) in [
            (
                "tracelake_wal_append_seconds",
                "WAL append latency (write and fsync per the policy).",
                &stats.wal_latency,
            ),
            (
                "tracelake_flush_seconds",
                "Head flush latency (seal, encode and write blocks).",
                &stats.flush_latency,
            ),
        ] {
            // Per-bucket counts, as the encoder sums them up again;
            // f64::MAX is its +Inf.
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
            let mut below = 0;
            for (bound, cumulative) in LATENCY_BUCKETS
                .iter()
                .zip(histogram.cumulative_counts(&LATENCY_BUCKETS))
            {
                buckets.push((*bound, cumulative.saturating_sub(below)));
                below = cumulative.max(below);
            }
            let count = histogram.count();
            buckets.push((f64::MAX, count.saturating_sub(below)));
            // Summed from the histogram: exact within its 1% precision.
            let sum = histogram
                .distribution_seconds()
                .iter()
                .map(|(value, count)| value * *count as f64)
                .sum();
            encoder
                .encode_descriptor(name, help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}
