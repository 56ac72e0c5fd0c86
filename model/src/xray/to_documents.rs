//! OTLP spans -> segment documents: the inverse of [`super::to_spans`] for
//! spans that came from X-Ray, and the `awsxrayexporter` conventions for
//! any other span.
//!
//! Documents are assembled by parent id: a span whose parent is in the same
//! set and the same service becomes a nested subsegment of it; that is also
//! how independent subsegments streamed by an SDK are put back under the
//! segment they belong to.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData, status::StatusCode};
use serde_json::{Map, Value};

use super::document::{
    Cause, CauseDetails, Http, SegmentDocument, SegmentLink, StackFrame, XrayException,
};
use super::fields::{
    AWS_RESOURCE_FIELDS, AWS_SPAN_FIELDS, Field, HTTP_FIELDS, HTTP_LEGACY_FIELDS, SERVICE_FIELDS,
    SQL_FIELDS, any_to_json, decode_object, find, find_bool, find_int, find_json, find_str,
    string_array,
};
use super::{
    EXCEPTION_EVENT, ORIGIN_PLATFORMS, XRAY_SCOPE_NAME, attr, format_xray_trace_id,
    nanos_to_seconds,
};
use crate::ids::{SpanId, TraceId};

/// One span with what it needs from its `ResourceSpans` and `ScopeSpans`.
#[derive(Debug, Clone, Copy)]
pub struct SpanWithResource<'a> {
    pub resource: &'a [KeyValue],
    pub scope_name: &'a str,
    pub span: &'a Span,
}

impl SpanWithResource<'_> {
    fn came_from_xray(&self) -> bool {
        self.scope_name == XRAY_SCOPE_NAME
    }

    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    fn service_name(&self) -> Option<&str> {
        find_str(self.resource, attr::SERVICE_NAME)
    }

    /// A span that stands as a segment of its own.
    fn is_segment(&self) -> bool {
        let kind = self.kind();
        if self.came_from_xray() {
            return kind == SpanKind::Server;
        }
        matches!(kind, SpanKind::Server | SpanKind::Consumer) || self.span.parent_span_id.is_empty()
    }
}

/// Builds the documents of every span in `traces` (usually one trace).
pub fn traces_to_documents(traces: &TracesData) -> Vec<SegmentDocument> {
    let mut flat = Vec::new();
    for resource_spans in &traces.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let scope_name = scope_spans
                .scope
                .as_ref()
                .map(|scope| scope.name.as_str())
                .unwrap_or_default();
            for span in &scope_spans.spans {
                flat.push(SpanWithResource {
                    resource,
                    scope_name,
                    span,
                });
            }
        }
    }
    spans_to_documents(&flat)
}

/// Builds the documents of a set of spans (usually one trace), in the order
/// their first span appears.
pub fn spans_to_documents(spans: &[SpanWithResource<'_>]) -> Vec<SegmentDocument> {
    let index_by_id: HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(index, item)| (item.span.span_id.as_slice(), index))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (index, item) in spans.iter().enumerate() {
        let parent = index_by_id
            .get(item.span.parent_span_id.as_slice())
            .copied()
            .filter(|parent| *parent != index);
        let nested_under = parent.filter(|parent| {
            let parent_item = &spans[*parent];
            !item.is_segment()
                && (item.service_name().is_none()
                    || item.service_name() == parent_item.service_name())
        });
        match nested_under {
            Some(parent) => children[parent].push(index),
            None => roots.push(index),
        }
    }
    let mut documents = Vec::with_capacity(roots.len());
    let mut pending: std::collections::VecDeque<usize> = roots.into();
    while let Some(root) = pending.pop_front() {
        let mut too_deep = Vec::new();
        documents.push(build(spans, &children, root, 0, &mut too_deep));
        pending.extend(too_deep);
    }
    documents
}

/// Deeper subsegments than this start documents of their own, so a
/// pathological parent chain cannot exhaust the stack (X-Ray's own SDKs
/// nest a handful of levels).
const MAX_NESTING: usize = 64;

fn build(
    spans: &[SpanWithResource<'_>],
    children: &[Vec<usize>],
    index: usize,
    depth: usize,
    too_deep: &mut Vec<usize>,
) -> SegmentDocument {
    let item = &spans[index];
    let mut document = entity(item, depth == 0);
    if depth >= MAX_NESTING {
        too_deep.extend(&children[index]);
        return document;
    }
    let subsegments: Vec<SegmentDocument> = children[index]
        .iter()
        .map(|child| build(spans, children, *child, depth + 1, too_deep))
        .collect();
    if !subsegments.is_empty() {
        document.subsegments = Some(subsegments);
    }
    document
}

fn hex_id(bytes: &[u8]) -> Option<String> {
    SpanId::try_from(bytes).ok().map(|id| id.to_hex())
}

fn entity(item: &SpanWithResource<'_>, top_level: bool) -> SegmentDocument {
    let span = item.span;
    let attributes = span.attributes.as_slice();
    let from_xray = item.came_from_xray();
    let is_segment = top_level && item.is_segment();
    let in_progress = find_bool(attributes, attr::IN_PROGRESS);
    let mut document = SegmentDocument {
        id: hex_id(&span.span_id).unwrap_or_default(),
        name: Some(entity_name(item, is_segment)),
        start_time: Some(nanos_to_seconds(span.start_time_unix_nano as i64)),
        end_time: (in_progress != Some(true))
            .then(|| nanos_to_seconds(span.end_time_unix_nano as i64)),
        in_progress,
        user: find_str(attributes, attr::USER).map(str::to_string),
        resource_arn: find_str(attributes, attr::RESOURCE_ARN).map(str::to_string),
        ..Default::default()
    };
    if top_level {
        document.trace_id = TraceId::try_from(span.trace_id.as_slice())
            .ok()
            .map(|trace_id| format_xray_trace_id(&trace_id));
        document.parent_id = hex_id(&span.parent_span_id);
        if !is_segment {
            document.document_type = Some("subsegment".to_string());
        }
    }
    document.namespace = match find_str(attributes, attr::NAMESPACE) {
        Some(namespace) => Some(namespace.to_string()),
        None if from_xray => None,
        None => derived_namespace(item),
    };
    let http_sources: Vec<(&'static [Field], &[KeyValue])> = if from_xray {
        vec![(HTTP_FIELDS, attributes)]
    } else {
        vec![(HTTP_LEGACY_FIELDS, attributes), (HTTP_FIELDS, attributes)]
    };
    document.http = decode_object(&http_sources, attr::HTTP_REST, attributes)
        .and_then(|value| serde_json::from_value::<Http>(value).ok());
    document.sql =
        decode_object(&[(SQL_FIELDS, attributes)], attr::SQL_REST, attributes).and_then(into_map);
    let aws_sources: Vec<(&'static [Field], &[KeyValue])> = if is_segment {
        vec![
            (AWS_RESOURCE_FIELDS, item.resource),
            (AWS_SPAN_FIELDS, attributes),
        ]
    } else {
        vec![(AWS_SPAN_FIELDS, attributes)]
    };
    document.aws = decode_object(&aws_sources, attr::AWS_REST, attributes).and_then(into_map);
    if is_segment {
        document.service = decode_object(
            &[(SERVICE_FIELDS, item.resource)],
            attr::SERVICE_REST,
            item.resource,
        )
        .and_then(into_map);
        document.origin = origin(item.resource);
    } else {
        document.service = find_json(attributes, attr::SERVICE_REST).and_then(into_map);
        document.origin = find_str(attributes, attr::ORIGIN).map(str::to_string);
    }
    if from_xray {
        document.error = find_bool(attributes, attr::ERROR);
        document.fault = find_bool(attributes, attr::FAULT);
        document.throttle = find_bool(attributes, attr::THROTTLE);
    } else {
        derive_flags(span, &mut document);
    }
    document.cause = cause(span);
    document.annotations = annotations(attributes);
    document.metadata = metadata(attributes, from_xray, document.annotations.as_ref());
    document.precursor_ids = match find(attributes, attr::PRECURSOR_IDS) {
        Some(any_value::Value::ArrayValue(array)) => string_array(array),
        _ => None,
    };
    let links: Vec<SegmentLink> = span.links.iter().filter_map(segment_link).collect();
    if !links.is_empty() {
        document.links = Some(links);
    }
    document.extra = find_json(attributes, attr::EXTRA)
        .and_then(into_map)
        .unwrap_or_default();
    document
}

fn into_map(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// X-Ray names a segment after its service; other spans keep their name,
/// except OTLP client calls, named after what they call as the exporter does.
fn entity_name(item: &SpanWithResource<'_>, is_segment: bool) -> String {
    if item.came_from_xray() {
        return item.span.name.clone();
    }
    if is_segment {
        return item.service_name().unwrap_or("unknown_service").to_string();
    }
    let attributes = item.span.attributes.as_slice();
    [
        "peer.service",
        "server.address",
        "net.peer.name",
        "db.name",
        "rpc.service",
    ]
    .iter()
    .find_map(|key| find_str(attributes, key))
    .unwrap_or(&item.span.name)
    .to_string()
}

fn derived_namespace(item: &SpanWithResource<'_>) -> Option<String> {
    if !matches!(item.kind(), SpanKind::Client | SpanKind::Producer) {
        return None;
    }
    let is_aws = find_str(&item.span.attributes, "rpc.system") == Some("aws-api");
    Some(if is_aws { "aws" } else { "remote" }.to_string())
}

fn origin(resource: &[KeyValue]) -> Option<String> {
    if let Some(origin) = find_str(resource, attr::ORIGIN) {
        return Some(origin.to_string());
    }
    let platform = find_str(resource, attr::CLOUD_PLATFORM)?;
    ORIGIN_PLATFORMS
        .iter()
        .find(|(_, known)| *known == platform)
        .map(|(origin, _)| (*origin).to_string())
}

/// As the exporter: 429 is a throttled client error, other 4xx client
/// errors, 5xx or an ERROR status without a 4xx a fault.
fn derive_flags(span: &Span, document: &mut SegmentDocument) {
    let status = find_int(&span.attributes, "http.response.status_code")
        .or_else(|| find_int(&span.attributes, "http.status_code"));
    let failed = span
        .status
        .as_ref()
        .is_some_and(|status| status.code == StatusCode::Error as i32);
    match status {
        Some(429) => {
            document.error = Some(true);
            document.throttle = Some(true);
        }
        Some(400..=499) => document.error = Some(true),
        Some(500..=599) => document.fault = Some(true),
        _ if failed => document.fault = Some(true),
        _ => {}
    }
}

fn cause(span: &Span) -> Option<Cause> {
    let attributes = span.attributes.as_slice();
    if let Some(exception_id) = find_str(attributes, attr::CAUSE_EXCEPTION_ID) {
        return Some(Cause::ExceptionId(exception_id.to_string()));
    }
    let exceptions: Vec<XrayException> = span
        .events
        .iter()
        .filter(|event| event.name == EXCEPTION_EVENT)
        .map(exception)
        .collect();
    let mut details = match find_json(attributes, attr::CAUSE) {
        Some(value) => serde_json::from_value::<CauseDetails>(value).unwrap_or_default(),
        None if exceptions.is_empty() => return None,
        None => CauseDetails::default(),
    };
    if !exceptions.is_empty() {
        details.exceptions = Some(exceptions);
    }
    Some(Cause::Details(details))
}

fn exception(event: &Event) -> XrayException {
    let attributes = event.attributes.as_slice();
    let text = |key: &str| find_str(attributes, key).map(str::to_string);
    XrayException {
        id: text(attr::EXCEPTION_ID),
        message: text(attr::EXCEPTION_MESSAGE),
        exception_type: text(attr::EXCEPTION_TYPE),
        remote: find_bool(attributes, attr::EXCEPTION_REMOTE),
        truncated: find_int(attributes, attr::EXCEPTION_TRUNCATED),
        skipped: find_int(attributes, attr::EXCEPTION_SKIPPED),
        cause: text(attr::EXCEPTION_CAUSE),
        stack: find_json(attributes, attr::EXCEPTION_STACK)
            .and_then(|value| serde_json::from_value::<Vec<StackFrame>>(value).ok()),
        extra: find_json(attributes, attr::EXCEPTION_EXTRA)
            .and_then(into_map)
            .unwrap_or_default(),
    }
}

/// A span's X-Ray annotations: the attributes `aws.xray.annotations`
/// names, as JSON; `None` when the span carries no such list.
pub fn annotations(attributes: &[KeyValue]) -> Option<Map<String, Value>> {
    let Some(any_value::Value::ArrayValue(keys)) = find(attributes, attr::ANNOTATIONS) else {
        return None;
    };
    let keys = string_array(keys)?;
    let mut annotations = Map::new();
    for key in keys {
        if let Some(value) = find(attributes, &key) {
            annotations.insert(key, any_to_json(value));
        }
    }
    Some(annotations)
}

/// Attributes every (sub)segment field maps to; for spans that did not come
/// from X-Ray, every other attribute goes to `metadata.default`.
fn is_mapped_key(key: &str) -> bool {
    key.starts_with("aws.xray.")
        || [HTTP_FIELDS, HTTP_LEGACY_FIELDS, SQL_FIELDS, AWS_SPAN_FIELDS]
            .iter()
            .any(|fields| fields.iter().any(|field| field.key == key))
        || key == attr::USER
}

/// A span's X-Ray metadata: each `aws.xray.metadata.{namespace}` attribute
/// under its namespace, its JSON text parsed (kept as text when it is not
/// JSON).
pub fn metadata_namespaces(attributes: &[KeyValue]) -> Map<String, Value> {
    let mut metadata = Map::new();
    for key_value in attributes {
        let Some(namespace) = key_value.key.strip_prefix(attr::METADATA_PREFIX) else {
            continue;
        };
        let Some(value) = key_value.value.as_ref().and_then(|any| any.value.as_ref()) else {
            continue;
        };
        let parsed = match value {
            any_value::Value::StringValue(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            other => any_to_json(other),
        };
        metadata.insert(namespace.to_string(), parsed);
    }
    metadata
}

fn metadata(
    attributes: &[KeyValue],
    from_xray: bool,
    annotations: Option<&Map<String, Value>>,
) -> Option<Map<String, Value>> {
    let mut metadata = metadata_namespaces(attributes);
    let mut default_namespace = Map::new();
    for key_value in attributes {
        let Some(value) = key_value.value.as_ref().and_then(|any| any.value.as_ref()) else {
            continue;
        };
        // `aws.xray.metadata.*` keys are mapped (`aws.xray.` prefix).
        let is_annotation = annotations.is_some_and(|map| map.contains_key(&key_value.key));
        if !from_xray && !is_annotation && !is_mapped_key(&key_value.key) {
            default_namespace.insert(key_value.key.clone(), any_to_json(value));
        }
    }
    if !default_namespace.is_empty() {
        let entry = metadata
            .entry("default")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(existing) = entry {
            existing.extend(default_namespace);
        }
    }
    (!metadata.is_empty()).then_some(metadata)
}

fn segment_link(link: &opentelemetry_proto::tonic::trace::v1::span::Link) -> Option<SegmentLink> {
    let trace_id = TraceId::try_from(link.trace_id.as_slice()).ok()?;
    let mut extra = find_json(&link.attributes, attr::EXTRA)
        .and_then(into_map)
        .unwrap_or_default();
    let explicit_empty = extra.remove("attributes").is_some();
    let attributes: Map<String, Value> = link
        .attributes
        .iter()
        .filter(|key_value| key_value.key != attr::EXTRA)
        .map(|key_value| {
            let value = key_value
                .value
                .as_ref()
                .and_then(|any| any.value.as_ref())
                .map(any_to_json)
                .unwrap_or(Value::Null);
            (key_value.key.clone(), value)
        })
        .collect();
    Some(SegmentLink {
        trace_id: format_xray_trace_id(&trace_id),
        id: hex_id(&link.span_id)?,
        attributes: (explicit_empty || !attributes.is_empty()).then_some(attributes),
        extra,
    })
}
