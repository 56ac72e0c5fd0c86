//! The recorder: a [`Tracer`] per service starts a [`TraceContext`] per
//! request (continuing the caller's trace from its header, or starting
//! one), subsegments record downstream calls, and the finished segment is
//! handed to the emitter.
//!
//! Sampling: a header that says `Sampled=1` or `Sampled=0` is obeyed
//! (upstream decided); otherwise the sampler decides with the central
//! rules fetched from the collector (local rules until then). Unsampled
//! requests still propagate the header (`Sampled=0`) but record nothing.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tracelake_sampler::client::Sampler;
use tracelake_sampler::rules::RequestProperties;
use tracelake_sampler::{SampledFlag, TraceHeader};

use crate::document::{Document, Http, TopLevel, new_segment_id, new_trace_id, now_seconds};
use crate::emitter::{MAX_DOCUMENT_BYTES, SegmentSink};

/// One instrumented service.
#[derive(Debug, Clone)]
pub struct Tracer {
    inner: Arc<TracerInner>,
}

#[derive(Debug)]
struct TracerInner {
    service: String,
    origin: Option<String>,
    sampler: Sampler,
    sink: Arc<dyn SegmentSink>,
}

/// What the sampling rules match a request on.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub method: String,
    pub host: String,
    pub path: String,
    pub url: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Tracer {
    /// `service` names the segments; `origin` is their service type
    /// (`AWS::ApiGateway::Stage`, `AWS::Lambda::Function`, ...).
    pub fn new(
        service: &str,
        origin: Option<&str>,
        sampler: Sampler,
        sink: Arc<dyn SegmentSink>,
    ) -> Self {
        Self {
            inner: Arc::new(TracerInner {
                service: service.to_string(),
                origin: origin.map(str::to_string),
                sampler,
                sink,
            }),
        }
    }

    pub fn service(&self) -> &str {
        &self.inner.service
    }

    pub fn sampler(&self) -> &Sampler {
        &self.inner.sampler
    }

    pub fn sink(&self) -> &Arc<dyn SegmentSink> {
        &self.inner.sink
    }

    /// Starts the segment of one request named after the service.
    pub fn start(&self, incoming: Option<TraceHeader>, request: &RequestInfo) -> TraceContext {
        self.start_named(&self.inner.service, incoming, request)
    }

    /// Starts a segment with its own name (a function, a workflow step).
    pub fn start_named(
        &self,
        name: &str,
        incoming: Option<TraceHeader>,
        request: &RequestInfo,
    ) -> TraceContext {
        let (trace_id, parent_id, upstream) = match incoming {
            Some(header) => (header.root, header.parent, header.sampled),
            None => (new_trace_id(), None, None),
        };
        let (sampled, rule) = match upstream {
            Some(SampledFlag::Sampled) => (true, None),
            Some(SampledFlag::NotSampled) => (false, None),
            Some(SampledFlag::Requested) | None => {
                let decision = self.inner.sampler.decide_at(
                    &RequestProperties {
                        service_name: name,
                        service_type: self.inner.origin.as_deref().unwrap_or(""),
                        host: &request.host,
                        http_method: &request.method,
                        url_path: &request.path,
                        attributes: &[],
                    },
                    now_seconds(),
                    fastrand::f64(),
                );
                (decision.sampled, decision.rule.map(|rule| rule.to_string()))
            }
        };
        let mut segment = Document::new(name, now_seconds());
        segment.origin = self.inner.origin.clone();
        if !request.method.is_empty() {
            segment.http = Some(Http {
                method: Some(request.method.clone()),
                url: Some(request.url.clone()),
                client_ip: request.client_ip.clone(),
                user_agent: request.user_agent.clone(),
                ..Http::default()
            });
        }
        TraceContext {
            inner: Arc::new(ContextInner {
                tracer: self.clone(),
                trace_id,
                parent_id,
                rule,
                sampled,
                segment_id: segment.id.clone(),
                segment: Mutex::new(Some(segment)),
                children: Arc::new(Mutex::new(Vec::new())),
            }),
        }
    }
}

/// The trace of one request in one service: cheap to clone, shared by the
/// layer and the calls made while serving the request.
#[derive(Debug, Clone)]
pub struct TraceContext {
    inner: Arc<ContextInner>,
}

#[derive(Debug)]
struct ContextInner {
    tracer: Tracer,
    trace_id: String,
    parent_id: Option<String>,
    rule: Option<String>,
    sampled: bool,
    segment_id: String,
    /// `None` once finished.
    segment: Mutex<Option<Document>>,
    children: Arc<Mutex<Vec<Document>>>,
}

impl TraceContext {
    pub fn trace_id(&self) -> &str {
        &self.inner.trace_id
    }

    pub fn segment_id(&self) -> &str {
        &self.inner.segment_id
    }

    pub fn is_sampled(&self) -> bool {
        self.inner.sampled
    }

    pub fn tracer(&self) -> &Tracer {
        &self.inner.tracer
    }

    /// The header a call made under `parent_id` carries downstream.
    pub fn header(&self, parent_id: &str) -> TraceHeader {
        let sampled = if self.inner.sampled {
            SampledFlag::Sampled
        } else {
            SampledFlag::NotSampled
        };
        TraceHeader::new(
            self.inner.trace_id.clone(),
            Some(parent_id.to_string()),
            Some(sampled),
        )
    }

    /// The header answered to the caller (`Root`, and `Sampled` as decided).
    pub fn response_header(&self) -> TraceHeader {
        let sampled = if self.inner.sampled {
            SampledFlag::Sampled
        } else {
            SampledFlag::NotSampled
        };
        TraceHeader::new(self.inner.trace_id.clone(), None, Some(sampled))
    }

    /// Changes the segment (annotations, metadata, user, flags) while it
    /// is open; nothing when the request is not sampled.
    pub fn with_segment(&self, change: impl FnOnce(&mut Document)) {
        if !self.inner.sampled {
            return;
        }
        if let Some(segment) = self.inner.segment.lock().as_mut() {
            change(segment);
        }
    }

    pub fn annotate(&self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.with_segment(|segment| {
            segment.annotations.insert(key.to_string(), value);
        });
    }

    pub fn put_metadata(&self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.with_segment(|segment| {
            segment.metadata.insert(key.to_string(), value);
        });
    }

    /// A subsegment of the segment; record it, then [`Subsegment::finish`].
    pub fn subsegment(&self, name: &str) -> Subsegment {
        Subsegment::new(self.clone(), name, Arc::clone(&self.inner.children))
    }

    /// Ends the segment with the response status (when there is one) and
    /// sends it if sampled. Later calls do nothing.
    pub fn finish(&self, status: Option<u16>) {
        let Some(mut segment) = self.inner.segment.lock().take() else {
            return;
        };
        if !self.inner.sampled {
            return;
        }
        segment.end_time = Some(now_seconds());
        if let Some(status) = status {
            segment.record_status(status);
            segment.http.get_or_insert_with(Http::default).status = Some(status);
        }
        segment.subsegments = std::mem::take(&mut *self.inner.children.lock());
        let top = TopLevel {
            trace_id: &self.inner.trace_id,
            parent_id: self.inner.parent_id.as_deref(),
            sampling_rule: self.inner.rule.as_deref(),
            subsegment: false,
        };
        for document in segment.documents(&top, MAX_DOCUMENT_BYTES) {
            self.inner.tracer.inner.sink.emit(document);
        }
    }
}

/// An open subsegment. Dropped without [`finish`](Self::finish), it is
/// recorded anyway (ended at the drop) so a `?` in the caller loses nothing.
#[derive(Debug)]
pub struct Subsegment {
    context: TraceContext,
    document: Option<Document>,
    children: Arc<Mutex<Vec<Document>>>,
    attach_to: Arc<Mutex<Vec<Document>>>,
}

impl Subsegment {
    fn new(context: TraceContext, name: &str, attach_to: Arc<Mutex<Vec<Document>>>) -> Self {
        let document = context
            .is_sampled()
            .then(|| Document::new(name, now_seconds()));
        Self {
            context,
            document,
            children: Arc::new(Mutex::new(Vec::new())),
            attach_to,
        }
    }

    /// The id a downstream call made from here names as its parent (a
    /// fresh one when not sampled, which nobody records).
    pub fn id(&self) -> String {
        self.document
            .as_ref()
            .map_or_else(new_segment_id, |document| document.id.clone())
    }

    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    /// The header for a call made inside this subsegment.
    pub fn header(&self) -> TraceHeader {
        self.context.header(&self.id())
    }

    /// Changes the open subsegment; nothing when not sampled.
    pub fn record(&mut self, change: impl FnOnce(&mut Document)) {
        if let Some(document) = self.document.as_mut() {
            change(document);
        }
    }

    /// A nested subsegment, attached to this one when it finishes.
    pub fn child(&self, name: &str) -> Subsegment {
        Subsegment::new(self.context.clone(), name, Arc::clone(&self.children))
    }

    /// Ends the subsegment and attaches it to its parent.
    pub fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(mut document) = self.document.take() {
            document.end_time = Some(now_seconds());
            document.subsegments = std::mem::take(&mut *self.children.lock());
            self.attach_to.lock().push(document);
        }
    }
}

impl Drop for Subsegment {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::MemorySink;

    fn tracer(sink: Arc<MemorySink>) -> Tracer {
        let rules = tracelake_sampler::client::parse_local_rules(
            r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
        )
        .unwrap();
        Tracer::new(
            "gateway",
            Some("AWS::ApiGateway::Stage"),
            Sampler::new(&rules),
            sink,
        )
    }

    #[test]
    fn continues_the_callers_trace_and_nests_subsegments() {
        let sink = Arc::new(MemorySink::default());
        let tracer = tracer(Arc::clone(&sink));
        let incoming = TraceHeader::parse(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        let request = RequestInfo {
            method: "GET".into(),
            url: "http://shop/orders/7".into(),
            path: "/orders/7".into(),
            ..RequestInfo::default()
        };
        let context = tracer.start(Some(incoming), &request);
        context.annotate("order", 7);
        let mut call = context.subsegment("orders-fn");
        call.record(|document| document.namespace = Some("remote"));
        let header = call.header();
        assert_eq!(header.root, "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(header.parent.as_deref(), Some(call.id().as_str()));
        let inner = call.child("Invoke");
        drop(inner); // recorded at the drop
        call.finish();
        context.finish(Some(502));
        context.finish(Some(200)); // a second finish changes nothing

        let documents = sink.documents();
        assert_eq!(documents.len(), 1);
        let segment = &documents[0];
        assert_eq!(segment["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(segment["parent_id"], "53995c3f42cd8ad8");
        assert_eq!(segment["origin"], "AWS::ApiGateway::Stage");
        assert_eq!(segment["fault"], true);
        assert_eq!(segment["http"]["response"]["status"], 502);
        assert_eq!(segment["annotations"]["order"], 7);
        assert_eq!(segment["subsegments"][0]["name"], "orders-fn");
        assert_eq!(segment["subsegments"][0]["namespace"], "remote");
        assert_eq!(
            segment["subsegments"][0]["subsegments"][0]["name"],
            "Invoke"
        );
    }

    #[test]
    fn upstream_decisions_are_obeyed_and_unsampled_requests_record_nothing() {
        let sink = Arc::new(MemorySink::default());
        let tracer = tracer(Arc::clone(&sink));
        let incoming =
            TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0").unwrap();
        let context = tracer.start(Some(incoming), &RequestInfo::default());
        assert!(!context.is_sampled());
        let call = context.subsegment("x");
        assert_eq!(call.header().sampled, Some(SampledFlag::NotSampled));
        call.finish();
        context.finish(Some(200));
        assert!(sink.documents().is_empty());

        // No header: the (local, rate 1) rules sample and name the rule.
        let context = tracer.start(None, &RequestInfo::default());
        assert!(context.is_sampled());
        context.finish(None);
        let documents = sink.documents();
        assert_eq!(documents[0]["aws"]["xray"]["sampling_rule_name"], "Default");
        assert!(documents[0].get("parent_id").is_none());
    }
}
