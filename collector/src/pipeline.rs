//! The ingest pipeline shared by every receiver.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tracelake_storage::otlp::{SpanRejection, resource_spans_to_batch};
use tracelake_storage::{SpanWriter, StorageError, validate_tenant};

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
    InvalidTenant(StorageError),
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

#[derive(Debug, Clone)]
pub struct Pipeline {
    writer: Arc<dyn SpanWriter>,
    tail: Option<Arc<TailStage>>,
    receiver_stats: Arc<ReceiverStats>,
}

impl Pipeline {
    pub fn new(writer: Arc<dyn SpanWriter>) -> Self {
        Self {
            writer,
            tail: None,
            receiver_stats: Arc::default(),
        }
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
        }
    }

    /// Validates and stores OTLP spans for `tenant`; returns once the
    /// accepted spans are durable.
    pub async fn ingest_otlp(
        &self,
        tenant: &str,
        mut resource_spans: Vec<ResourceSpans>,
    ) -> Result<IngestOutcome, IngestError> {
        validate_tenant(tenant).map_err(IngestError::InvalidTenant)?;
        self.writer
            .check_capacity()
            .map_err(IngestError::from_append)?;
        let held = match &self.tail {
            Some(tail) => tail.hold_unsampled(tenant, &mut resource_spans).await,
            None => 0,
        };
        let tenant_owned = tenant.to_string();
        let converted = tokio::task::spawn_blocking(move || {
            resource_spans_to_batch(&tenant_owned, &resource_spans)
        })
        .await
        .map_err(|error| IngestError::Internal(format!("convert task: {error}")))?
        .map_err(IngestError::Unavailable)?;
        if let Some(batch) = converted.batch {
            self.writer
                .append(tenant, batch)
                .await
                .map_err(IngestError::from_append)?;
        }
        let rejected = converted.rejections.len();
        let message = if rejected == 0 {
            String::new()
        } else {
            let reasons: Vec<String> = converted
                .rejections
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
            rejections: converted.rejections,
        })
    }
}
