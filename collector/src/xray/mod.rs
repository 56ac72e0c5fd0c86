//! X-Ray ingest: the daemon's UDP protocol ([`udp`]), the X-Ray API's
//! `PutTraceSegments` ([`api`]), and what both share ([`XrayIngest`]):
//!
//! ```text
//!  UDP datagram --frame--> document bytes --+
//!  PutTraceSegments -----> document bytes --+--> XrayIngest (blocking pool):
//!                                                 parse -> validate -> map to spans
//!                                                 -> resolve independent subsegments
//!                                                 -> Pipeline (WAL, head) -> outcome per document
//! ```
//!
//! Documents are mapped by `tracelake_model::xray` (segment -> SERVER
//! span of its service, subsegments -> child spans, ...). A document that
//! breaks a rule is refused with the reason, alone: the other documents of
//! the same datagram burst or request are kept.
//!
//! Two X-Ray behaviours need state across documents:
//! - An independent subsegment (`"type": "subsegment"`) carries no service
//!   name; it takes its parent's resource, which the [`ResourceCache`]
//!   remembers for recently seen (sub)segment ids. When the parent has not
//!   been seen (SDKs stream subsegments before the segment completes) the
//!   span is stored with a resource that names no service, and the query
//!   side puts it back under its parent by parent id.
//! - An in-progress document followed by the complete one with the same id
//!   is stored twice; reads keep the complete one (see `tracelake_query`).

pub mod api;
pub mod udp;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::Mutex;
use tracelake_model::xray::{
    InvalidDocument, MAX_DOCUMENT_BYTES, MappedDocument, SegmentDocument, document_to_spans,
    parse_documents,
};

use crate::{IngestError, Pipeline};

/// How many (sub)segment ids the resource cache remembers.
const RESOURCE_CACHE_ENTRIES: usize = 200_000;

/// Why a document was not stored, in `UnprocessedTraceSegments` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    /// The document's `id`, or empty when it could not be read.
    pub id: String,
    pub error_code: RejectReason,
    pub message: String,
}

/// The kinds of rejection, also the `reason` label of the UDP counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Not JSON, or JSON of the wrong shape.
    MalformedDocument,
    /// Well-formed but breaks a segment rule.
    InvalidDocument,
    /// Larger than X-Ray's 64 KB per document.
    DocumentTooLarge,
    /// Storage refused a span of the document.
    SpanRejected,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        Self::MalformedDocument,
        Self::InvalidDocument,
        Self::DocumentTooLarge,
        Self::SpanRejected,
    ];

    /// The `ErrorCode` of an `UnprocessedTraceSegment`.
    pub fn error_code(self) -> &'static str {
        match self {
            Self::MalformedDocument => "MalformedDocument",
            Self::InvalidDocument => "InvalidDocument",
            Self::DocumentTooLarge => "DocumentTooLarge",
            Self::SpanRejected => "SpanRejected",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::MalformedDocument => "malformed_document",
            Self::InvalidDocument => "invalid_document",
            Self::DocumentTooLarge => "document_too_large",
            Self::SpanRejected => "span_rejected",
        }
    }
}

/// What one call to [`XrayIngest::ingest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XrayOutcome {
    /// Documents (segments or independent subsegments) stored.
    pub accepted_documents: usize,
    pub accepted_spans: usize,
    pub unprocessed: Vec<Unprocessed>,
}

/// Shared by the UDP receiver, the X-Ray API and `tracelake import`.
#[derive(Debug, Clone)]
pub struct XrayIngest {
    pipeline: Pipeline,
    resources: Arc<Mutex<ResourceCache>>,
}

impl XrayIngest {
    /// The counters of the pipeline this ingest feeds.
    pub fn receiver_stats(&self) -> &Arc<crate::receiver_stats::ReceiverStats> {
        self.pipeline.receiver_stats()
    }
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            pipeline,
            resources: Arc::new(Mutex::new(ResourceCache::new(RESOURCE_CACHE_ENTRIES))),
        }
    }

    /// Parses, validates, maps and stores `documents` (each the text of one
    /// segment, independent subsegment, or array of subsegments) for
    /// `tenant`; returns once the accepted spans are durable.
    pub async fn ingest(
        &self,
        tenant: &str,
        documents: Vec<Bytes>,
    ) -> Result<XrayOutcome, IngestError> {
        // Admitted (or refused) before parsing: shedding load costs no
        // decoding.
        let _admitted = self
            .pipeline
            .admit(tenant, documents.iter().map(Bytes::len).sum())?;
        let resources = Arc::clone(&self.resources);
        let tenant_owned = tenant.to_string();
        let mut prepared =
            tokio::task::spawn_blocking(move || prepare(&tenant_owned, &documents, &resources))
                .await
                .map_err(|error| IngestError::Internal(format!("x-ray decode task: {error}")))?;
        let mut outcome = XrayOutcome {
            unprocessed: std::mem::take(&mut prepared.unprocessed),
            ..Default::default()
        };
        if prepared.resource_spans.is_empty() {
            return Ok(outcome);
        }
        let stored = self
            .pipeline
            .ingest_otlp(tenant, std::mem::take(&mut prepared.resource_spans))
            .await?;
        let mut refused_documents: HashMap<usize, Vec<String>> = HashMap::new();
        for rejection in &stored.rejections {
            if let Some(document) = prepared.owner_of(&rejection.span_id_hex) {
                refused_documents.entry(document).or_default().push(format!(
                    "span {}: {}",
                    rejection.span_id_hex, rejection.reason
                ));
            }
        }
        for (document, reasons) in &refused_documents {
            outcome.unprocessed.push(Unprocessed {
                id: prepared.document_ids[*document].clone(),
                error_code: RejectReason::SpanRejected,
                message: reasons.join("; "),
            });
        }
        outcome.accepted_documents = prepared.document_ids.len() - refused_documents.len();
        outcome.accepted_spans = stored.accepted;
        Ok(outcome)
    }
}

struct Prepared {
    resource_spans: Vec<ResourceSpans>,
    /// Id of each mapped document, by position.
    document_ids: Vec<String>,
    /// Which document each span came from; searched only when storage
    /// refuses spans, so it is a flat list rather than a map of strings.
    span_owner: Vec<(Vec<u8>, usize)>,
    unprocessed: Vec<Unprocessed>,
}

impl Prepared {
    /// The document a refused span (hex id, as storage reports it) came from.
    fn owner_of(&self, span_id_hex: &str) -> Option<usize> {
        let span_id = hex::decode(span_id_hex).ok()?;
        self.span_owner
            .iter()
            .find(|(id, _)| *id == span_id)
            .map(|(_, document)| *document)
    }
}

/// The `id` of a document that could not be parsed, when it has one.
fn salvage_id(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|value| value.get("id")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn prepare(tenant: &str, raw_documents: &[Bytes], resources: &Mutex<ResourceCache>) -> Prepared {
    let mut unprocessed = Vec::new();
    let mut mapped: Vec<(String, MappedDocument)> = Vec::new();
    for raw in raw_documents {
        if raw.len() > MAX_DOCUMENT_BYTES {
            unprocessed.push(Unprocessed {
                id: salvage_id(raw),
                error_code: RejectReason::DocumentTooLarge,
                message: format!(
                    "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                    raw.len()
                ),
            });
            continue;
        }
        let documents = match parse_documents(raw) {
            Ok(documents) => documents,
            Err(error) => {
                unprocessed.push(Unprocessed {
                    id: salvage_id(raw),
                    error_code: RejectReason::MalformedDocument,
                    message: error.0,
                });
                continue;
            }
        };
        for document in documents {
            match validated_spans(&document) {
                Ok(spans) => mapped.push((document.id.clone(), spans)),
                Err(InvalidDocument(message)) => unprocessed.push(Unprocessed {
                    id: document.id.clone(),
                    error_code: RejectReason::InvalidDocument,
                    message,
                }),
            }
        }
    }
    let resolved = resources
        .lock()
        .resolve(tenant, mapped.iter().map(|(_, spans)| spans));
    let mut document_ids = Vec::with_capacity(mapped.len());
    let mut span_owner = Vec::new();
    let mut resource_spans = Vec::with_capacity(mapped.len());
    for ((id, document), resource) in mapped.into_iter().zip(resolved) {
        let position = document_ids.len();
        document_ids.push(id);
        for span in &document.spans {
            span_owner.push((span.span_id.clone(), position));
        }
        resource_spans.push(document.into_resource_spans(resource));
    }
    Prepared {
        resource_spans,
        document_ids,
        span_owner,
        unprocessed,
    }
}

fn validated_spans(document: &SegmentDocument) -> Result<MappedDocument, InvalidDocument> {
    document.validate()?;
    document_to_spans(document)
}

/// Recently seen (sub)segment ids and the resource of the service that
/// sent them, so independent subsegments get their service. Bounded:
/// the oldest ids are forgotten first.
#[derive(Debug)]
pub struct ResourceCache {
    capacity: usize,
    by_id: HashMap<(Arc<str>, [u8; 8]), Arc<Resource>>,
    order: VecDeque<(Arc<str>, [u8; 8])>,
}

impl ResourceCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            by_id: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn remember(&mut self, tenant: &Arc<str>, span_id: &[u8], resource: &Arc<Resource>) {
        let Ok(id) = <[u8; 8]>::try_from(span_id) else {
            return;
        };
        let key = (Arc::clone(tenant), id);
        if self
            .by_id
            .insert(key.clone(), Arc::clone(resource))
            .is_none()
        {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    /// The resource for each document: its own for segments, the parent's
    /// for independent subsegments (segments of the same batch first, so
    /// order within a batch does not matter), or one naming no service.
    pub fn resolve<'a>(
        &mut self,
        tenant: &str,
        documents: impl Iterator<Item = &'a MappedDocument> + Clone,
    ) -> Vec<Resource> {
        let tenant: Arc<str> = Arc::from(tenant);
        for document in documents.clone() {
            if let Some(resource) = &document.resource {
                let shared = Arc::new(resource.clone());
                for span in &document.spans {
                    self.remember(&tenant, &span.span_id, &shared);
                }
            }
        }
        let mut resolved = Vec::new();
        for document in documents {
            if let Some(resource) = &document.resource {
                resolved.push(resource.clone());
                continue;
            }
            let parent = document
                .spans
                .first()
                .and_then(|span| <[u8; 8]>::try_from(span.parent_span_id.as_slice()).ok())
                .and_then(|parent| self.by_id.get(&(Arc::clone(&tenant), parent)).cloned());
            match parent {
                Some(resource) => {
                    for span in &document.spans {
                        self.remember(&tenant, &span.span_id, &resource);
                    }
                    resolved.push((*resource).clone());
                }
                None => resolved.push(Resource::default()),
            }
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(document: serde_json::Value) -> MappedDocument {
        let parsed: SegmentDocument = serde_json::from_value(document).unwrap();
        parsed.validate().unwrap();
        document_to_spans(&parsed).unwrap()
    }

    fn service(resource: &Resource) -> Option<String> {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(|value| format!("{:?}", value.value))
    }

    #[test]
    fn independent_subsegments_take_their_parents_service() {
        let segment = mapped(
            json!({"id": "70de5b6f19ff9a0a", "name": "shop", "trace_id": "1-581cf771-a006649127e371903a2de979", "start_time": 10.0, "in_progress": true,
            "subsegments": [{"id": "1111111111111111", "name": "inner", "start_time": 10.1, "in_progress": true}]}),
        );
        let child = mapped(
            json!({"id": "2222222222222222", "name": "db", "type": "subsegment", "parent_id": "1111111111111111", "trace_id": "1-581cf771-a006649127e371903a2de979", "start_time": 10.2, "end_time": 10.3}),
        );
        let grandchild = mapped(
            json!({"id": "3333333333333333", "name": "q", "type": "subsegment", "parent_id": "2222222222222222", "trace_id": "1-581cf771-a006649127e371903a2de979", "start_time": 10.2, "end_time": 10.3}),
        );
        let orphan = mapped(
            json!({"id": "4444444444444444", "name": "q", "type": "subsegment", "parent_id": "9999999999999999", "trace_id": "1-581cf771-a006649127e371903a2de979", "start_time": 10.2, "end_time": 10.3}),
        );
        let mut cache = ResourceCache::new(100);
        // Subsegment before its segment in the same batch still resolves.
        let resolved = cache.resolve("t", [&child, &segment].into_iter());
        assert_eq!(service(&resolved[0]), service(&resolved[1]));
        assert!(service(&resolved[0]).unwrap().contains("shop"));
        let later = cache.resolve("t", [&grandchild, &orphan].into_iter());
        assert!(
            service(&later[0]).unwrap().contains("shop"),
            "chains resolve"
        );
        assert_eq!(service(&later[1]), None, "unknown parent names no service");
        let other_tenant = cache.resolve("u", [&grandchild].into_iter());
        assert_eq!(service(&other_tenant[0]), None, "tenants do not share ids");
    }

    #[test]
    fn cache_is_bounded() {
        let mut cache = ResourceCache::new(2);
        let resource = Arc::new(Resource::default());
        let tenant: Arc<str> = Arc::from("t");
        for id in 1..=5u8 {
            cache.remember(&tenant, &[id; 8], &resource);
        }
        assert_eq!(cache.by_id.len(), 2);
        assert!(cache.by_id.contains_key(&(Arc::clone(&tenant), [5; 8])));
        assert!(!cache.by_id.contains_key(&(tenant, [1; 8])));
    }
}
