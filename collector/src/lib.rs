//! tracelake collector: receivers and the ingest pipeline.
//!
//! ```text
//!  OTLP gRPC :4317 --+
//!  OTLP HTTP :4318 --+--> Pipeline: decode -> validate/convert (blocking pool)
//!  X-Ray UDP :2000 --+        -> SpanWriter::append (WAL, durable) -> ack
//!  X-Ray API :2000 --+   (X-Ray documents are mapped to OTLP spans first: `xray`)
//! ```
//!
//! Receivers only frame and decode; the pipeline owns validation and
//! storage (and, when enabled, holds explicitly unsampled OTLP spans for
//! tail sampling: [`tail`]). A request is acknowledged only after its accepted spans are in
//! the WAL per the fsync policy; rejected spans are reported in OTLP
//! `partial_success` while the good spans of the same request are kept.

pub mod aggregate;
pub mod limits;
pub mod metrics_ingest;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod pipeline;
pub mod prometheus;
pub mod receiver_stats;
pub mod tail;
pub mod xray;

pub use pipeline::{IngestError, IngestOutcome, Pipeline};

/// Size limits of the OTLP receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtlpLimits {
    /// Largest request body / gRPC message accepted, after decompression.
    pub max_message_bytes: usize,
}

impl Default for OtlpLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The collector's own counters (X-Ray UDP, tail sampling, the service-map
/// aggregation, every receiver) as one collector of the process's
/// registry.
pub struct CollectorMetrics {
    pub udp: std::sync::Arc<xray::udp::UdpStats>,
    pub tail: Option<std::sync::Arc<tail::TailStage>>,
    pub aggregator: std::sync::Arc<aggregate::Aggregator>,
    pub receivers: std::sync::Arc<receiver_stats::ReceiverStats>,
}

impl std::fmt::Debug for CollectorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorMetrics").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for CollectorMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        self.udp.encode(&mut encoder)?;
        if let Some(tail) = &self.tail {
            tail.encode(&mut encoder)?;
        }
        self.aggregator.encode(&mut encoder)?;
        self.receivers.encode(encoder)
    }
}
