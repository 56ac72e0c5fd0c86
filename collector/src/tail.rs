//! Tail sampling in the ingest pipeline (policies: `tracelake_sampler::tail`).
//!
//! ```text
//!  OTLP span, flags say "not sampled" --> TailStage (bounded, per trace) --wait-->
//!      kept    -> span table rows -> SpanWriter::append
//!      dropped -> counted
//!  every other span (head-sampled, no flags, X-Ray) --> stored at once, as before
//! ```
//!
//! Only spans an SDK explicitly marked unsampled are held: the OTLP `flags`
//! field says it carries W3C flags (bit 0x100) and the sampled bit (0x01) is
//! clear. What an SDK sampled is kept as sent; tail policies may only add.
//! Held spans are acknowledged on receipt and are not durable until kept:
//! they were unsampled, and a crash costs at most the pending window.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parking_lot::Mutex;
use prometheus_client::encoding::DescriptorEncoder;
use tracelake_model::TraceId;
use tracelake_model::otlp::resource_spans_to_batch;
use tracelake_sampler::store::now_seconds;
use tracelake_sampler::tail::{Decided, SpanSummary, TailPolicy, TailSampler, TailStats};
use tracelake_storage::SpanWriter;

/// W3C trace flags are present in the OTLP `flags` field.
const FLAGS_PRESENT: u32 = 0x100;
const SAMPLED: u32 = 0x01;

/// Whether an SDK sent this span explicitly unsampled.
pub fn is_unsampled(span: &Span) -> bool {
    span.flags & FLAGS_PRESENT != 0 && span.flags & SAMPLED == 0
}

/// A held span with what it needs to be written later.
#[derive(Debug)]
pub struct HeldSpan {
    tenant: Arc<str>,
    resource: Arc<Option<Resource>>,
    scope: Arc<Option<InstrumentationScope>>,
    span: Span,
}

/// The tail-sampling stage: holds unsampled traces until decided.
#[derive(Debug)]
pub struct TailStage {
    sampler: Mutex<TailSampler<HeldSpan>>,
    writer: Arc<dyn SpanWriter>,
}

fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|resource| {
            resource.attributes.iter().find_map(|attribute: &KeyValue| {
                match (
                    attribute.key.as_str(),
                    attribute.value.as_ref()?.value.as_ref()?,
                ) {
                    ("service.name", any_value::Value::StringValue(name)) => Some(name.as_str()),
                    _ => None,
                }
            })
        })
        .unwrap_or("unknown_service")
}

impl TailStage {
    pub fn new(policy: TailPolicy, writer: Arc<dyn SpanWriter>) -> Self {
        Self {
            sampler: Mutex::new(TailSampler::new(policy)),
            writer,
        }
    }

    pub fn stats(&self) -> TailStats {
        self.sampler.lock().stats()
    }

    /// The tail-sampling counters, for `/metrics`.
    pub fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let stats = self.stats();
        let counters = [
            (
                "tracelake_tail_sampling_traces_kept_total",
                "Unsampled traces kept by a tail policy.",
                stats.traces_kept,
            ),
            (
                "tracelake_tail_sampling_traces_dropped_total",
                "Unsampled traces dropped.",
                stats.traces_dropped,
            ),
            (
                "tracelake_tail_sampling_spans_dropped_total",
                "Spans of dropped traces.",
                stats.spans_dropped,
            ),
            (
                "tracelake_tail_sampling_traces_evicted_total",
                "Traces decided early because the pending buffer was full.",
                stats.traces_evicted,
            ),
        ];
        for (name, help, value) in counters {
            crate::prometheus::encode_plain_counter(encoder, name, help, value)?;
        }
        Ok(())
    }

    /// Takes the explicitly unsampled spans with valid trace ids out of
    /// `resource_spans` and holds them; returns how many were held.
    pub async fn hold_unsampled(
        &self,
        tenant: &str,
        resource_spans: &mut [ResourceSpans],
    ) -> usize {
        let tenant: Arc<str> = Arc::from(tenant);
        let now = now_seconds();
        let mut early = Vec::new();
        let mut held = 0;
        {
            let mut sampler = self.sampler.lock();
            for group in resource_spans.iter_mut() {
                let holds_any = group
                    .scope_spans
                    .iter()
                    .any(|scope_spans| scope_spans.spans.iter().any(is_unsampled));
                if !holds_any {
                    continue;
                }
                let resource = Arc::new(group.resource.clone());
                let service = service_name(group.resource.as_ref()).to_string();
                for scope_spans in group.scope_spans.iter_mut() {
                    let scope = Arc::new(scope_spans.scope.clone());
                    let mut unsampled = Vec::new();
                    for span in std::mem::take(&mut scope_spans.spans) {
                        match TraceId::try_from(span.trace_id.as_slice()) {
                            Ok(trace_id) if is_unsampled(&span) => unsampled.push((trace_id, span)),
                            // Invalid ids go on to validation, which refuses them.
                            _ => scope_spans.spans.push(span),
                        }
                    }
                    for (trace_id, span) in unsampled {
                        let summary = SpanSummary {
                            trace_id,
                            service_name: &service,
                            is_root: span.parent_span_id.is_empty(),
                            failed: span.status.as_ref().is_some_and(|status| status.code == 2),
                            start_ns: span.start_time_unix_nano as i64,
                            end_ns: span.end_time_unix_nano as i64,
                        };
                        let item = HeldSpan {
                            tenant: Arc::clone(&tenant),
                            resource: Arc::clone(&resource),
                            scope: Arc::clone(&scope),
                            span,
                        };
                        early.extend(sampler.add(summary, item, now));
                        held += 1;
                    }
                }
            }
        }
        self.write_kept(early).await;
        held
    }

    /// Writes the spans of kept traces, grouped by tenant.
    async fn write_kept(&self, decided: Vec<Decided<HeldSpan>>) {
        // Spans that arrived together share their resource and scope
        // (`Arc`s): regroup by them so each resource is converted once.
        type GroupKey = (Arc<str>, usize, usize);
        type Group = (
            Arc<Option<Resource>>,
            Arc<Option<InstrumentationScope>>,
            Vec<Span>,
        );
        let mut groups: HashMap<GroupKey, Group> = HashMap::new();
        for trace in decided.into_iter().filter(|trace| trace.verdict.kept()) {
            for held in trace.items {
                let key = (
                    Arc::clone(&held.tenant),
                    Arc::as_ptr(&held.resource) as usize,
                    Arc::as_ptr(&held.scope) as usize,
                );
                groups
                    .entry(key)
                    .or_insert_with(|| {
                        (
                            Arc::clone(&held.resource),
                            Arc::clone(&held.scope),
                            Vec::new(),
                        )
                    })
                    .2
                    .push(held.span);
            }
        }
        let mut by_tenant: HashMap<Arc<str>, Vec<ResourceSpans>> = HashMap::new();
        for ((tenant, _, _), (resource, scope, spans)) in groups {
            by_tenant.entry(tenant).or_default().push(ResourceSpans {
                resource: (*resource).clone(),
                scope_spans: vec![ScopeSpans {
                    scope: (*scope).clone(),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        for (tenant, resource_spans) in by_tenant {
            let tenant_owned = Arc::clone(&tenant);
            let converted = tokio::task::spawn_blocking(move || {
                resource_spans_to_batch(&tenant_owned, &resource_spans)
            })
            .await;
            let converted = match converted {
                Ok(Ok(converted)) => converted,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "tail-sampled spans could not be converted");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "tail-sampled conversion task failed");
                    continue;
                }
            };
            if !converted.rejections.is_empty() {
                tracing::debug!(
                    rejected = converted.rejections.len(),
                    "tail-sampled spans refused"
                );
            }
            if let Some(batch) = converted.batch
                && let Err(error) = self.writer.append(&tenant, batch).await
            {
                tracing::warn!(%error, "tail-sampled spans could not be stored");
            }
        }
    }

    /// Decides due traces every `tick` until `shutdown`, then decides and
    /// writes everything still pending.
    pub async fn run(self: Arc<Self>, tick: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {
                    let due = self.sampler.lock().decide_due(now_seconds());
                    self.write_kept(due).await;
                }
                () = &mut shutdown => break,
            }
        }
        let rest = self.sampler.lock().decide_all(now_seconds());
        self.write_kept(rest).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pipeline;
    use opentelemetry_proto::tonic::trace::v1::Status;
    use tracelake_storage::{Storage, StorageConfig, local_store};
    use tracelake_workload::samples::sample_resource_spans;

    fn with_flags(mut group: ResourceSpans, flags: u32, failed: bool) -> ResourceSpans {
        for scope in &mut group.scope_spans {
            for span in &mut scope.spans {
                span.flags = flags;
                span.status = failed.then(|| Status {
                    code: 2,
                    message: "boom".into(),
                });
            }
        }
        group
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unsampled_traces_are_kept_only_by_a_policy() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let (storage, _) = Storage::open(config, local_store(dir.path()).unwrap())
            .await
            .unwrap();
        let writer: Arc<dyn SpanWriter> = Arc::new(storage.clone());
        let policy = TailPolicy {
            decision_wait: Duration::ZERO,
            latency_threshold: None,
            ..TailPolicy::default()
        };
        let stage = Arc::new(TailStage::new(policy, Arc::clone(&writer)));
        let pipeline = Pipeline::with_tail_sampling(writer, Arc::clone(&stage));
        let t0 = 1_767_225_600_000_000_000;
        let request = vec![
            with_flags(sample_resource_spans(1, 3, t0), FLAGS_PRESENT, true),
            with_flags(sample_resource_spans(2, 3, t0), FLAGS_PRESENT, false),
            with_flags(
                sample_resource_spans(3, 3, t0),
                FLAGS_PRESENT | SAMPLED,
                false,
            ),
            with_flags(sample_resource_spans(4, 3, t0), 0, false),
        ];
        let outcome = pipeline.ingest_otlp("t", request).await.unwrap();
        assert_eq!(outcome.accepted, 12, "held spans are acknowledged");
        assert_eq!(
            storage.stats().appended_spans,
            6,
            "sampled and flagless spans are stored at once"
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(Arc::clone(&stage).run(Duration::from_millis(10), async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if stage.stats().traces_kept + stage.stats().traces_dropped == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        running.await.unwrap();
        let stats = stage.stats();
        assert_eq!(
            (stats.traces_kept, stats.traces_dropped, stats.spans_dropped),
            (1, 1, 3)
        );
        assert_eq!(
            storage.stats().appended_spans,
            9,
            "the failed trace was kept, the plain one dropped"
        );
    }
}
