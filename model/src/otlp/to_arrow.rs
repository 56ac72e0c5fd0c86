//! OTLP `ResourceSpans` -> span table rows, validating each span.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, ListArray,
    RecordBatch, StringBuilder, StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

use super::{kind_to_str, status_to_str};
use crate::attributes::{AttributesBuilder, find_bool, find_int, find_str};
use crate::ids::{IdError, SpanId, TraceId};
use crate::schema::{event_fields, event_item_field, link_fields, link_item_field, span_schema};
use crate::xray;
use crate::{ModelError, Result};

/// Why one span of a request was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRejection {
    /// The span's id as sent, hex (may be malformed).
    pub span_id_hex: String,
    pub reason: String,
}

/// The outcome of converting a request: the accepted spans as one batch
/// (`None` when none was accepted) and a rejection per refused span.
#[derive(Debug)]
pub struct ConvertedSpans {
    pub batch: Option<RecordBatch>,
    pub accepted: usize,
    pub rejections: Vec<SpanRejection>,
}

/// Converts OTLP `ResourceSpans` for `tenant` into span table rows.
///
/// Each span is validated on its own (trace id 16 bytes and not zero, span
/// id 8 bytes and not zero, parent empty or 8 bytes, a non-zero start time
/// that fits in `i64` nanoseconds); refused spans are listed in
/// [`ConvertedSpans::rejections`] and the rest are kept. A link with
/// malformed ids is dropped and counted in `dropped_links_count` rather than
/// costing the whole span.
pub fn resource_spans_to_batch(
    tenant: &str,
    resource_spans: &[ResourceSpans],
) -> Result<ConvertedSpans> {
    let capacity: usize = resource_spans
        .iter()
        .flat_map(|resource| resource.scope_spans.iter())
        .map(|scope| scope.spans.len())
        .sum();
    let mut rows = SpanRowsBuilder::with_capacity(capacity);
    let mut rejections = Vec::new();
    for resource_span in resource_spans {
        let resource = ResourceContext::new(resource_span);
        for scope_span in &resource_span.scope_spans {
            for span in &scope_span.spans {
                let validated = match ValidSpan::try_from(span) {
                    Ok(validated) => validated,
                    Err(reason) => {
                        rejections.push(SpanRejection {
                            span_id_hex: hex::encode(&span.span_id),
                            reason: reason.to_string(),
                        });
                        continue;
                    }
                };
                rows.append(tenant, &resource, scope_span, span, &validated);
            }
        }
    }
    let accepted = rows.len;
    let batch = if accepted == 0 {
        None
    } else {
        Some(rows.finish()?)
    };
    Ok(ConvertedSpans {
        batch,
        accepted,
        rejections,
    })
}

/// What the resource contributes to every one of its spans.
struct ResourceContext<'a> {
    attributes: &'a [KeyValue],
    dropped_attributes_count: u32,
    schema_url: &'a str,
    service_name: &'a str,
    service_namespace: Option<&'a str>,
    service_type: Option<&'a str>,
}

impl<'a> ResourceContext<'a> {
    fn new(resource_spans: &'a ResourceSpans) -> Self {
        let (attributes, dropped_attributes_count) = match &resource_spans.resource {
            Some(resource) => (
                resource.attributes.as_slice(),
                resource.dropped_attributes_count,
            ),
            None => (&[][..], 0),
        };
        Self {
            attributes,
            dropped_attributes_count,
            schema_url: &resource_spans.schema_url,
            service_name: find_str(attributes, "service.name").unwrap_or("unknown_service"),
            service_namespace: find_str(attributes, "service.namespace"),
            service_type: xray_origin(attributes),
        }
    }
}

/// The X-Ray origin of a resource: as sent by X-Ray (`aws.xray.origin`), or
/// the one an OpenTelemetry `cloud.platform` stands for (the `service_type`
/// column).
pub fn xray_origin(attributes: &[KeyValue]) -> Option<&str> {
    if let Some(origin) = find_str(attributes, xray::attr::ORIGIN) {
        return Some(origin);
    }
    let platform = find_str(attributes, xray::attr::CLOUD_PLATFORM)?;
    xray::ORIGIN_PLATFORMS
        .iter()
        .find(|(_, known)| *known == platform)
        .map(|(origin, _)| *origin)
}

/// The parts of a span that must be valid before it is stored.
struct ValidSpan {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    start_ns: i64,
    end_ns: i64,
}

/// Why a span is refused (its words go into OTLP `partial_success`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum InvalidSpan {
    #[error("{0}")]
    TraceId(IdError),
    #[error("{0}")]
    SpanId(IdError),
    #[error("parent {0}")]
    ParentSpanId(IdError),
    #[error("start_time_unix_nano is zero")]
    ZeroStart,
    #[error("start_time_unix_nano is beyond year 2262")]
    StartBeyond2262,
    #[error("end_time_unix_nano is beyond year 2262")]
    EndBeyond2262,
}

impl TryFrom<&Span> for ValidSpan {
    type Error = InvalidSpan;

    fn try_from(span: &Span) -> Result<Self, InvalidSpan> {
        let trace_id = TraceId::try_from(span.trace_id.as_slice()).map_err(InvalidSpan::TraceId)?;
        let span_id = SpanId::try_from(span.span_id.as_slice()).map_err(InvalidSpan::SpanId)?;
        // An all-zero parent is how some SDKs spell "no parent".
        let parent_span_id = if span.parent_span_id.iter().all(|byte| *byte == 0)
            && matches!(span.parent_span_id.len(), 0 | 8)
        {
            None
        } else {
            Some(
                SpanId::try_from(span.parent_span_id.as_slice())
                    .map_err(InvalidSpan::ParentSpanId)?,
            )
        };
        if span.start_time_unix_nano == 0 {
            return Err(InvalidSpan::ZeroStart);
        }
        let start_ns =
            i64::try_from(span.start_time_unix_nano).map_err(|_| InvalidSpan::StartBeyond2262)?;
        let end_ns =
            i64::try_from(span.end_time_unix_nano).map_err(|_| InvalidSpan::EndBeyond2262)?;
        Ok(Self {
            trace_id,
            span_id,
            parent_span_id,
            start_ns,
            end_ns,
        })
    }
}

/// A span's X-Ray flags `(error, fault, throttle)`, as stored in the
/// `xray_error`, `xray_fault` and `xray_throttle` columns (`xray_flags`).
pub fn span_xray_flags(span: &Span) -> (bool, bool, bool) {
    let attributes = span.attributes.as_slice();
    let status_code = span.status.as_ref().map_or(0, |status| status.code);
    xray_flags(attributes, http_status(attributes), status_code)
}

/// The HTTP response status, by the current or the older convention (the
/// `http_status_code` column).
pub fn http_status(attributes: &[KeyValue]) -> Option<i64> {
    find_int(attributes, "http.response.status_code")
        .or_else(|| find_int(attributes, "http.status_code"))
}

/// The HTTP request method, by the current or the older convention (the
/// `http_method` column).
pub fn http_method(attributes: &[KeyValue]) -> Option<&str> {
    find_str(attributes, "http.request.method").or_else(|| find_str(attributes, "http.method"))
}

/// The request URL, by the current or the older convention (the `http_url`
/// column).
pub fn http_url(attributes: &[KeyValue]) -> Option<&str> {
    find_str(attributes, "url.full").or_else(|| find_str(attributes, "http.url"))
}

/// X-Ray's flags: as an X-Ray document set them (`aws.xray.error`, ...), or
/// from HTTP: `error` for 4xx, `throttle` for 429, `fault` for 5xx or an
/// error status without a 4xx.
fn xray_flags(
    attributes: &[KeyValue],
    http_status: Option<i64>,
    status_code: i32,
) -> (bool, bool, bool) {
    let client_error = matches!(http_status, Some(400..=499));
    let throttle = http_status == Some(429);
    let fault = matches!(http_status, Some(500..=599)) || (status_code == 2 && !client_error);
    let explicit = |key: &str| find_bool(attributes, key);
    let from_xray = [xray::attr::ERROR, xray::attr::FAULT, xray::attr::THROTTLE]
        .iter()
        .any(|key| explicit(key).is_some());
    if from_xray {
        return (
            explicit(xray::attr::ERROR).unwrap_or(false),
            explicit(xray::attr::FAULT).unwrap_or(false),
            explicit(xray::attr::THROTTLE).unwrap_or(false),
        );
    }
    (client_error, fault, throttle)
}

/// The X-Ray namespace of an outgoing call: as an X-Ray subsegment named it,
/// or `aws`/`remote` for OpenTelemetry client and producer spans.
fn remote_namespace(span: &Span) -> Option<&str> {
    match find_str(&span.attributes, xray::attr::NAMESPACE) {
        Some(namespace @ ("aws" | "remote")) => return Some(namespace),
        Some(_) => return None,
        None => {}
    }
    let kind = kind_to_str(span.kind);
    if kind != "client" && kind != "producer" {
        return None;
    }
    if find_str(&span.attributes, "rpc.system") == Some("aws-api") {
        Some("aws")
    } else {
        Some("remote")
    }
}

/// The `aws.xray.metadata.{namespace}` attributes whose text is JSON, by
/// attribute key: they live in the `xray_metadata` column instead of the
/// attribute map (and come back as attributes when read).
fn xray_metadata(attributes: &[KeyValue]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut metadata = std::collections::BTreeMap::new();
    for key_value in attributes {
        if !key_value.key.starts_with(xray::attr::METADATA_PREFIX) {
            continue;
        }
        let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(text)) =
            key_value.value.as_ref().and_then(|any| any.value.as_ref())
        else {
            continue;
        };
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            metadata.insert(key_value.key.clone(), value);
        }
    }
    metadata
}

/// One builder per column of [`span_schema`], in schema order.
struct SpanRowsBuilder {
    len: usize,
    tenant: StringBuilder,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    service_name: StringBuilder,
    service_namespace: StringBuilder,
    service_type: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    xray_error: BooleanBuilder,
    xray_fault: BooleanBuilder,
    xray_throttle: BooleanBuilder,
    http_method: StringBuilder,
    http_url: StringBuilder,
    http_route: StringBuilder,
    http_status_code: Int32Builder,
    peer_service: StringBuilder,
    db_system: StringBuilder,
    remote_namespace: StringBuilder,
    user: StringBuilder,
    flags: UInt32Builder,
    dropped_attributes_count: UInt32Builder,
    dropped_events_count: UInt32Builder,
    dropped_links_count: UInt32Builder,
    resource_attributes: AttributesBuilder,
    resource_dropped_attributes_count: UInt32Builder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttributesBuilder,
    scope_schema_url: StringBuilder,
    attributes: AttributesBuilder,
    events: EventsBuilder,
    links: LinksBuilder,
    xray_metadata: StringBuilder,
    sampling_rule: StringBuilder,
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl SpanRowsBuilder {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            len: 0,
            tenant: StringBuilder::new(),
            trace_id: FixedSizeBinaryBuilder::with_capacity(capacity, TraceId::LEN as i32),
            span_id: FixedSizeBinaryBuilder::with_capacity(capacity, SpanId::LEN as i32),
            parent_span_id: FixedSizeBinaryBuilder::with_capacity(capacity, SpanId::LEN as i32),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            service_name: StringBuilder::new(),
            service_namespace: StringBuilder::new(),
            service_type: StringBuilder::new(),
            start_time: TimestampNanosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            end_time: TimestampNanosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            duration_ns: Int64Builder::with_capacity(capacity),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            xray_error: BooleanBuilder::with_capacity(capacity),
            xray_fault: BooleanBuilder::with_capacity(capacity),
            xray_throttle: BooleanBuilder::with_capacity(capacity),
            http_method: StringBuilder::new(),
            http_url: StringBuilder::new(),
            http_route: StringBuilder::new(),
            http_status_code: Int32Builder::with_capacity(capacity),
            peer_service: StringBuilder::new(),
            db_system: StringBuilder::new(),
            remote_namespace: StringBuilder::new(),
            user: StringBuilder::new(),
            flags: UInt32Builder::with_capacity(capacity),
            dropped_attributes_count: UInt32Builder::with_capacity(capacity),
            dropped_events_count: UInt32Builder::with_capacity(capacity),
            dropped_links_count: UInt32Builder::with_capacity(capacity),
            resource_attributes: AttributesBuilder::new(),
            resource_dropped_attributes_count: UInt32Builder::with_capacity(capacity),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: AttributesBuilder::new(),
            scope_schema_url: StringBuilder::new(),
            attributes: AttributesBuilder::new(),
            events: EventsBuilder::new(),
            links: LinksBuilder::new(),
            xray_metadata: StringBuilder::new(),
            sampling_rule: StringBuilder::new(),
        }
    }

    fn append(
        &mut self,
        tenant: &str,
        resource: &ResourceContext<'_>,
        scope_span: &opentelemetry_proto::tonic::trace::v1::ScopeSpans,
        span: &Span,
        valid: &ValidSpan,
    ) {
        self.len += 1;
        self.tenant.append_value(tenant);
        // Ids were length-checked by `ValidSpan`; appending a checked slice cannot fail.
        let _ = self.trace_id.append_value(valid.trace_id.as_bytes());
        let _ = self.span_id.append_value(valid.span_id.as_bytes());
        match &valid.parent_span_id {
            Some(parent) => {
                let _ = self.parent_span_id.append_value(parent.as_bytes());
            }
            None => self.parent_span_id.append_null(),
        }
        self.trace_state.append_option(non_empty(&span.trace_state));
        self.name.append_value(&span.name);
        self.kind.append_value(kind_to_str(span.kind));
        self.service_name.append_value(resource.service_name);
        self.service_namespace
            .append_option(resource.service_namespace);
        self.service_type.append_option(resource.service_type);
        self.start_time.append_value(valid.start_ns);
        self.end_time.append_value(valid.end_ns);
        self.duration_ns
            .append_value(valid.end_ns.saturating_sub(valid.start_ns).max(0));

        let (status_code, status_message) = match &span.status {
            Some(status) => (status.code, non_empty(&status.message)),
            None => (0, None),
        };
        self.status_code.append_value(status_to_str(status_code));
        self.status_message.append_option(status_message);

        let attributes = span.attributes.as_slice();
        let (error, fault, throttle) = span_xray_flags(span);
        self.xray_error.append_value(error);
        self.xray_fault.append_value(fault);
        self.xray_throttle.append_value(throttle);
        self.http_method.append_option(http_method(attributes));
        self.http_url.append_option(http_url(attributes));
        self.http_route
            .append_option(find_str(attributes, "http.route"));
        self.http_status_code
            .append_option(http_status(attributes).and_then(|status| i32::try_from(status).ok()));
        self.peer_service
            .append_option(find_str(attributes, "peer.service"));
        self.db_system.append_option(
            find_str(attributes, "db.system.name").or_else(|| find_str(attributes, "db.system")),
        );
        self.remote_namespace.append_option(remote_namespace(span));
        self.user.append_option(
            find_str(attributes, "enduser.id").or_else(|| find_str(attributes, "user.id")),
        );

        self.flags.append_value(span.flags);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);
        self.dropped_events_count
            .append_value(span.dropped_events_count);
        let dropped_bad_links = self.links.append_row(&span.links);
        self.dropped_links_count
            .append_value(span.dropped_links_count.saturating_add(dropped_bad_links));

        self.resource_attributes.append_row(resource.attributes);
        self.resource_dropped_attributes_count
            .append_value(resource.dropped_attributes_count);
        self.resource_schema_url
            .append_option(non_empty(resource.schema_url));
        let scope = scope_span.scope.as_ref();
        self.scope_name
            .append_option(scope.and_then(|scope| non_empty(&scope.name)));
        self.scope_version
            .append_option(scope.and_then(|scope| non_empty(&scope.version)));
        self.scope_attributes.append_row(
            scope
                .map(|scope| scope.attributes.as_slice())
                .unwrap_or(&[]),
        );
        self.scope_schema_url
            .append_option(non_empty(&scope_span.schema_url));
        let metadata = xray_metadata(attributes);
        if metadata.is_empty() {
            self.attributes.append_row(attributes);
            self.xray_metadata.append_null();
        } else {
            self.attributes.append_row_except(attributes, |key_value| {
                metadata.contains_key(&key_value.key)
            });
            let object: serde_json::Map<String, serde_json::Value> = metadata
                .into_iter()
                .map(|(key, value)| (key[xray::attr::METADATA_PREFIX.len()..].to_string(), value))
                .collect();
            self.xray_metadata
                .append_value(serde_json::Value::Object(object).to_string());
        }
        self.events.append_row(&span.events);
        self.sampling_rule.append_null();
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.service_namespace.finish()),
            Arc::new(self.service_type.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.xray_error.finish()),
            Arc::new(self.xray_fault.finish()),
            Arc::new(self.xray_throttle.finish()),
            Arc::new(self.http_method.finish()),
            Arc::new(self.http_url.finish()),
            Arc::new(self.http_route.finish()),
            Arc::new(self.http_status_code.finish()),
            Arc::new(self.peer_service.finish()),
            Arc::new(self.db_system.finish()),
            Arc::new(self.remote_namespace.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
            Arc::new(self.dropped_events_count.finish()),
            Arc::new(self.dropped_links_count.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.resource_dropped_attributes_count.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.scope_attributes.finish()),
            Arc::new(self.scope_schema_url.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.xray_metadata.finish()),
            Arc::new(self.sampling_rule.finish()),
        ];
        // Builders grow by doubling; the head keeps these arrays until the
        // next flush, so their spare capacity (about a third) is returned.
        for column in &mut columns {
            datafusion::arrow::array::Array::shrink_to_fit(column);
        }
        RecordBatch::try_new(span_schema(), columns).map_err(ModelError::from)
    }
}

struct EventsBuilder {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttributesBuilder,
    dropped_attributes_count: UInt32Builder,
}

impl EventsBuilder {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            name: StringBuilder::new(),
            attributes: AttributesBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
        }
    }

    fn append_row(&mut self, events: &[Event]) {
        for event in events {
            // Times past i64 saturate rather than fail the span.
            self.time
                .append_value(i64::try_from(event.time_unix_nano).unwrap_or(i64::MAX));
            self.name.append_value(&event.name);
            self.attributes.append_row(&event.attributes);
            self.dropped_attributes_count
                .append_value(event.dropped_attributes_count);
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + events.len() as i32);
    }

    fn finish(mut self) -> ListArray {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
        ];
        let items = StructArray::new(event_fields(), children, None);
        ListArray::new(
            event_item_field(),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(items),
            None,
        )
    }
}

struct LinksBuilder {
    offsets: Vec<i32>,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    attributes: AttributesBuilder,
    dropped_attributes_count: UInt32Builder,
    flags: UInt32Builder,
}

impl LinksBuilder {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            trace_id: FixedSizeBinaryBuilder::new(TraceId::LEN as i32),
            span_id: FixedSizeBinaryBuilder::new(SpanId::LEN as i32),
            trace_state: StringBuilder::new(),
            attributes: AttributesBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
            flags: UInt32Builder::new(),
        }
    }

    /// Appends the valid links of one span; returns how many were dropped
    /// for malformed ids.
    fn append_row(&mut self, links: &[Link]) -> u32 {
        let mut kept = 0i32;
        let mut dropped = 0u32;
        for link in links {
            let ids = (
                TraceId::try_from(link.trace_id.as_slice()),
                SpanId::try_from(link.span_id.as_slice()),
            );
            let (Ok(trace_id), Ok(span_id)) = ids else {
                dropped += 1;
                continue;
            };
            kept += 1;
            let _ = self.trace_id.append_value(trace_id.as_bytes());
            let _ = self.span_id.append_value(span_id.as_bytes());
            self.trace_state.append_option(non_empty(&link.trace_state));
            self.attributes.append_row(&link.attributes);
            self.dropped_attributes_count
                .append_value(link.dropped_attributes_count);
            self.flags.append_value(link.flags);
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + kept);
        dropped
    }

    fn finish(mut self) -> ListArray {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
            Arc::new(self.flags.finish()),
        ];
        let items = StructArray::new(link_fields(), children, None);
        ListArray::new(
            link_item_field(),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(items),
            None,
        )
    }
}
