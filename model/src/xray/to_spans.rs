//! Segment document -> OTLP spans (see the rules table in [`super`]).

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, status::StatusCode,
};
use serde_json::Value;

use super::document::{Cause, InvalidDocument, SegmentDocument, XrayException};
use super::fields::{
    AWS_RESOURCE_FIELDS, AWS_SPAN_FIELDS, HTTP_FIELDS, SERVICE_FIELDS, SQL_FIELDS, TableTarget,
    encode_object, json_text_value, json_to_any, key_value,
};
use super::{
    EXCEPTION_EVENT, ORIGIN_PLATFORMS, XRAY_SCOPE_NAME, attr, parse_xray_trace_id, seconds_to_nanos,
};
use crate::ids::SpanId;

/// One document's spans.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedDocument {
    /// The resource of the service that sent a segment; `None` for an
    /// independent subsegment, whose service is its parent's.
    pub resource: Option<Resource>,
    /// The document's own span first, then its subsegments depth first.
    pub spans: Vec<Span>,
}

impl MappedDocument {
    /// The spans under `resource` (the document's own, or its parent's for
    /// an independent subsegment) and the X-Ray instrumentation scope, as a
    /// receiver hands them to storage.
    pub fn into_resource_spans(self, resource: Resource) -> ResourceSpans {
        ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: XRAY_SCOPE_NAME.to_string(),
                    ..Default::default()
                }),
                spans: self.spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// Maps a validated top-level document (segment or independent subsegment).
pub fn document_to_spans(document: &SegmentDocument) -> Result<MappedDocument, InvalidDocument> {
    let trace_id_text = document.trace_id.as_deref().unwrap_or_default();
    let trace_id = parse_xray_trace_id(trace_id_text).ok_or_else(|| {
        InvalidDocument(format!(
            "trace_id {trace_id_text:?} is not an X-Ray trace id"
        ))
    })?;
    let is_segment = !document.is_independent_subsegment();
    let parent = match &document.parent_id {
        Some(parent_id) => Some(parse_span_id(parent_id)?),
        None => None,
    };
    let mut resource_attributes = Vec::new();
    let mut spans = Vec::with_capacity(document.entity_count());
    let mut context = MapContext {
        trace_id: trace_id.as_bytes().to_vec(),
        resource_attributes: is_segment.then_some(&mut resource_attributes),
        spans: &mut spans,
    };
    context.map_entity(document, parent, is_segment)?;
    let resource = is_segment.then(|| Resource {
        attributes: resource_attributes,
        ..Default::default()
    });
    Ok(MappedDocument { resource, spans })
}

fn parse_span_id(id: &str) -> Result<SpanId, InvalidDocument> {
    SpanId::from_hex(id).map_err(|error| InvalidDocument(format!("id {id:?}: {error}")))
}

struct MapContext<'a> {
    trace_id: Vec<u8>,
    /// Set while mapping a segment (its `aws`, `service` and `origin` go
    /// to the resource), taken after the segment itself.
    resource_attributes: Option<&'a mut Vec<KeyValue>>,
    spans: &'a mut Vec<Span>,
}

/// AWS operations that hand a message to a queue, topic or stream: their
/// subsegments are producers (as OpenTelemetry's AWS SDK instrumentation
/// marks them), so a consumer that continues the trace is reached through
/// a `messaging_system` edge.
const PRODUCER_OPERATIONS: [&str; 6] = [
    "SendMessage",
    "SendMessageBatch",
    "Publish",
    "PublishBatch",
    "PutRecord",
    "PutRecords",
];

fn is_producer_operation(entity: &SegmentDocument) -> bool {
    entity
        .aws
        .as_ref()
        .and_then(|aws| aws.get("operation"))
        .and_then(|operation| operation.as_str())
        .is_some_and(|operation| PRODUCER_OPERATIONS.contains(&operation))
}

impl MapContext<'_> {
    fn map_entity(
        &mut self,
        entity: &SegmentDocument,
        parent: Option<SpanId>,
        is_segment: bool,
    ) -> Result<(), InvalidDocument> {
        let span_id = parse_span_id(&entity.id)?;
        let start_ns = seconds_to_nanos(entity.start_time.unwrap_or_default());
        let end_ns = entity.end_time.map(seconds_to_nanos).unwrap_or(start_ns);
        let kind = if is_segment {
            SpanKind::Server
        } else if entity.namespace.as_deref() == Some("aws") && is_producer_operation(entity) {
            SpanKind::Producer
        } else if matches!(entity.namespace.as_deref(), Some("aws" | "remote"))
            || entity.http.is_some()
        {
            SpanKind::Client
        } else {
            SpanKind::Internal
        };
        let mut attributes = Vec::new();
        let resource_attributes = if is_segment {
            self.resource_attributes.take()
        } else {
            None
        };
        map_scalars(entity, &mut attributes);
        map_objects(entity, &mut attributes, resource_attributes);
        map_annotations_and_metadata(entity, &mut attributes);
        let events = map_cause(entity, end_ns, &mut attributes);
        let links = map_links(entity)?;
        let failed = entity.fault == Some(true)
            || entity.error == Some(true)
            || entity.throttle == Some(true);
        let status = failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: first_exception_message(entity).unwrap_or_default(),
        });
        self.spans.push(Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id.as_bytes().to_vec(),
            parent_span_id: parent.map(|id| id.as_bytes().to_vec()).unwrap_or_default(),
            name: entity.name.clone().unwrap_or_default(),
            kind: kind as i32,
            start_time_unix_nano: start_ns.max(0) as u64,
            end_time_unix_nano: end_ns.max(0) as u64,
            attributes,
            events,
            links,
            status,
            ..Default::default()
        });
        for subsegment in entity.subsegments.iter().flatten() {
            self.map_entity(subsegment, Some(span_id), false)?;
        }
        Ok(())
    }
}

fn push_str(attributes: &mut Vec<KeyValue>, key: &str, value: &Option<String>) {
    if let Some(text) = value {
        attributes.push(key_value(key, Value::String(text.clone())));
    }
}

fn push_bool(attributes: &mut Vec<KeyValue>, key: &str, value: Option<bool>) {
    if let Some(flag) = value {
        attributes.push(key_value(key, Value::Bool(flag)));
    }
}

fn map_scalars(entity: &SegmentDocument, attributes: &mut Vec<KeyValue>) {
    push_bool(attributes, attr::IN_PROGRESS, entity.in_progress);
    push_str(attributes, attr::NAMESPACE, &entity.namespace);
    push_str(attributes, attr::USER, &entity.user);
    push_str(attributes, attr::RESOURCE_ARN, &entity.resource_arn);
    push_bool(attributes, attr::ERROR, entity.error);
    push_bool(attributes, attr::FAULT, entity.fault);
    push_bool(attributes, attr::THROTTLE, entity.throttle);
    if let Some(precursors) = &entity.precursor_ids {
        let ids = precursors.iter().cloned().map(Value::String).collect();
        attributes.push(key_value(attr::PRECURSOR_IDS, Value::Array(ids)));
    }
    if !entity.extra.is_empty() {
        attributes.push(json_text_value(
            attr::EXTRA,
            &Value::Object(entity.extra.clone()),
        ));
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `http`, `sql`, `aws`, `service` and `origin`; the last three partly go
/// to the resource when mapping a segment.
fn map_objects(
    entity: &SegmentDocument,
    attributes: &mut Vec<KeyValue>,
    resource_attributes: Option<&mut Vec<KeyValue>>,
) {
    if let Some(http) = &entity.http {
        let mut span_side = Vec::new();
        encode_object(
            to_value(http),
            &mut [TableTarget {
                fields: HTTP_FIELDS,
                out: &mut span_side,
            }],
            attr::HTTP_REST,
            attributes,
        );
        attributes.append(&mut span_side);
    }
    if let Some(sql) = &entity.sql {
        let mut span_side = Vec::new();
        encode_object(
            Value::Object(sql.clone()),
            &mut [TableTarget {
                fields: SQL_FIELDS,
                out: &mut span_side,
            }],
            attr::SQL_REST,
            attributes,
        );
        attributes.append(&mut span_side);
    }
    let Some(resource) = resource_attributes else {
        if let Some(aws) = &entity.aws {
            let mut span_side = Vec::new();
            encode_object(
                Value::Object(aws.clone()),
                &mut [TableTarget {
                    fields: AWS_SPAN_FIELDS,
                    out: &mut span_side,
                }],
                attr::AWS_REST,
                attributes,
            );
            attributes.append(&mut span_side);
        }
        // Only segments carry these; a subsegment that has them keeps them.
        if let Some(service) = &entity.service {
            attributes.push(json_text_value(
                attr::SERVICE_REST,
                &Value::Object(service.clone()),
            ));
        }
        push_str(attributes, attr::ORIGIN, &entity.origin);
        return;
    };
    resource.push(key_value(
        attr::SERVICE_NAME,
        Value::String(entity.name.clone().unwrap_or_default()),
    ));
    if let Some(origin) = &entity.origin {
        match ORIGIN_PLATFORMS.iter().find(|(known, _)| known == origin) {
            Some((_, platform)) => {
                resource.push(key_value(attr::CLOUD_PROVIDER, Value::String("aws".into())));
                resource.push(key_value(
                    attr::CLOUD_PLATFORM,
                    Value::String((*platform).into()),
                ));
            }
            None => resource.push(key_value(attr::ORIGIN, Value::String(origin.clone()))),
        }
    }
    if let Some(service) = &entity.service {
        let mut resource_side = Vec::new();
        encode_object(
            Value::Object(service.clone()),
            &mut [TableTarget {
                fields: SERVICE_FIELDS,
                out: &mut resource_side,
            }],
            attr::SERVICE_REST,
            resource,
        );
        resource.append(&mut resource_side);
    }
    if let Some(aws) = &entity.aws {
        let mut span_side = Vec::new();
        encode_object(
            Value::Object(aws.clone()),
            &mut [
                TableTarget {
                    fields: AWS_RESOURCE_FIELDS,
                    out: resource,
                },
                TableTarget {
                    fields: AWS_SPAN_FIELDS,
                    out: &mut span_side,
                },
            ],
            attr::AWS_REST,
            attributes,
        );
        attributes.append(&mut span_side);
    }
}

fn map_annotations_and_metadata(entity: &SegmentDocument, attributes: &mut Vec<KeyValue>) {
    if let Some(annotations) = &entity.annotations {
        let mut keys = Vec::with_capacity(annotations.len());
        for (key, value) in annotations {
            attributes.push(KeyValue {
                key: key.clone(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: json_to_any(value.clone()),
                }),
                ..Default::default()
            });
            keys.push(Value::String(key.clone()));
        }
        attributes.push(key_value(attr::ANNOTATIONS, Value::Array(keys)));
    }
    if let Some(metadata) = &entity.metadata {
        for (namespace, value) in metadata {
            let key = format!("{}{namespace}", attr::METADATA_PREFIX);
            attributes.push(key_value(&key, Value::String(value.to_string())));
        }
    }
}

fn first_exception_message(entity: &SegmentDocument) -> Option<String> {
    match &entity.cause {
        Some(Cause::Details(details)) => details
            .exceptions
            .iter()
            .flatten()
            .find_map(|exception| exception.message.clone()),
        _ => None,
    }
}

/// The cause's exceptions become `exception` events at the span's end;
/// the rest of the cause object is kept as JSON.
fn map_cause(entity: &SegmentDocument, end_ns: i64, attributes: &mut Vec<KeyValue>) -> Vec<Event> {
    match &entity.cause {
        None => Vec::new(),
        Some(Cause::ExceptionId(exception_id)) => {
            attributes.push(key_value(
                attr::CAUSE_EXCEPTION_ID,
                Value::String(exception_id.clone()),
            ));
            Vec::new()
        }
        Some(Cause::Details(details)) => {
            let mut rest = details.clone();
            let exceptions = match rest.exceptions.take() {
                Some(list) if list.is_empty() => {
                    rest.exceptions = Some(list);
                    Vec::new()
                }
                Some(list) => list,
                None => Vec::new(),
            };
            attributes.push(json_text_value(attr::CAUSE, &to_value(&rest)));
            exceptions
                .iter()
                .map(|exception| exception_event(exception, end_ns))
                .collect()
        }
    }
}

fn exception_event(exception: &XrayException, time_ns: i64) -> Event {
    let mut attributes = Vec::new();
    push_str(
        &mut attributes,
        attr::EXCEPTION_TYPE,
        &exception.exception_type,
    );
    push_str(&mut attributes, attr::EXCEPTION_MESSAGE, &exception.message);
    push_str(&mut attributes, attr::EXCEPTION_ID, &exception.id);
    push_bool(&mut attributes, attr::EXCEPTION_REMOTE, exception.remote);
    if let Some(truncated) = exception.truncated {
        attributes.push(key_value(attr::EXCEPTION_TRUNCATED, Value::from(truncated)));
    }
    if let Some(skipped) = exception.skipped {
        attributes.push(key_value(attr::EXCEPTION_SKIPPED, Value::from(skipped)));
    }
    push_str(&mut attributes, attr::EXCEPTION_CAUSE, &exception.cause);
    if let Some(stack) = &exception.stack {
        attributes.push(key_value(
            attr::EXCEPTION_STACKTRACE,
            Value::String(render_stack(exception, stack)),
        ));
        attributes.push(json_text_value(attr::EXCEPTION_STACK, &to_value(stack)));
    }
    if !exception.extra.is_empty() {
        attributes.push(json_text_value(
            attr::EXCEPTION_EXTRA,
            &Value::Object(exception.extra.clone()),
        ));
    }
    Event {
        time_unix_nano: time_ns.max(0) as u64,
        name: EXCEPTION_EVENT.to_string(),
        attributes,
        dropped_attributes_count: 0,
    }
}

/// A readable stack for UIs that show `exception.stacktrace`; the exact
/// frames stay in `aws.xray.exception.stack`.
fn render_stack(exception: &XrayException, stack: &[super::document::StackFrame]) -> String {
    let mut text = format!(
        "{}: {}",
        exception.exception_type.as_deref().unwrap_or("Exception"),
        exception.message.as_deref().unwrap_or_default()
    );
    for frame in stack {
        text.push_str(&format!(
            "\n  at {} ({}:{})",
            frame.label.as_deref().unwrap_or("?"),
            frame.path.as_deref().unwrap_or("?"),
            frame.line.unwrap_or_default()
        ));
    }
    text
}

fn map_links(entity: &SegmentDocument) -> Result<Vec<Link>, InvalidDocument> {
    let mut links = Vec::new();
    for link in entity.links.iter().flatten() {
        let trace_id = parse_xray_trace_id(&link.trace_id).ok_or_else(|| {
            InvalidDocument(format!(
                "link trace_id {:?} is not an X-Ray trace id",
                link.trace_id
            ))
        })?;
        let span_id = parse_span_id(&link.id)?;
        let mut attributes: Vec<KeyValue> = link
            .attributes
            .iter()
            .flatten()
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: json_to_any(value.clone()),
                }),
                ..Default::default()
            })
            .collect();
        // Unknown link fields, and an explicitly empty `attributes`, as JSON.
        let mut rest = link.extra.clone();
        if link.attributes.as_ref().is_some_and(|map| map.is_empty()) {
            rest.insert("attributes".into(), Value::Object(Default::default()));
        }
        if !rest.is_empty() {
            attributes.push(json_text_value(attr::EXTRA, &Value::Object(rest)));
        }
        links.push(Link {
            trace_id: trace_id.as_bytes().to_vec(),
            span_id: span_id.as_bytes().to_vec(),
            attributes,
            ..Default::default()
        });
    }
    Ok(links)
}
