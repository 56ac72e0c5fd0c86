//! Span table rows -> OTLP `TracesData`, regrouped by resource and scope.

use datafusion::arrow::array::{
    Array, FixedSizeBinaryArray, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray, UInt32Array,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, TracesData};

use super::{kind_from_str, status_from_str};
use crate::attributes::{child, read_attributes};
use crate::schema::col;
use crate::xray;
use crate::{ModelError, Result};

/// Rebuilds OTLP `TracesData` from span table batches (all columns, in
/// [`crate::schema::span_schema`] order or any order: columns are found by name).
///
/// Spans that share a resource (and schema URL) are grouped under one
/// `ResourceSpans`, and within it by scope, keeping first-seen order.
pub fn batches_to_traces_data(batches: &[RecordBatch]) -> Result<TracesData> {
    let mut grouped: Vec<ResourceSpans> = Vec::new();
    for batch in batches {
        let columns = Columns::new(batch)?;
        for row in 0..batch.num_rows() {
            let (resource, resource_schema_url) = columns.resource(row);
            let (scope, scope_schema_url) = columns.scope(row);
            let span = columns.span(row);
            let resource_spans = match grouped.iter_mut().position(|existing| {
                existing.resource.as_ref() == Some(&resource)
                    && existing.schema_url == resource_schema_url
            }) {
                Some(index) => &mut grouped[index],
                None => {
                    grouped.push(ResourceSpans {
                        resource: Some(resource),
                        scope_spans: Vec::new(),
                        schema_url: resource_schema_url,
                    });
                    grouped.last_mut().expect("just pushed")
                }
            };
            let scope_spans = match resource_spans.scope_spans.iter_mut().position(|existing| {
                existing.scope.as_ref() == Some(&scope) && existing.schema_url == scope_schema_url
            }) {
                Some(index) => &mut resource_spans.scope_spans[index],
                None => {
                    resource_spans.scope_spans.push(ScopeSpans {
                        scope: Some(scope),
                        spans: Vec::new(),
                        schema_url: scope_schema_url,
                    });
                    resource_spans.scope_spans.last_mut().expect("just pushed")
                }
            };
            scope_spans.spans.push(span);
        }
    }
    Ok(TracesData {
        resource_spans: grouped,
    })
}

/// Typed views of the columns one batch needs.
struct Columns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent_span_id: &'a FixedSizeBinaryArray,
    trace_state: &'a StringArray,
    name: &'a StringArray,
    kind: &'a StringArray,
    start_time: &'a TimestampNanosecondArray,
    end_time: &'a TimestampNanosecondArray,
    status_code: &'a StringArray,
    status_message: &'a StringArray,
    flags: &'a UInt32Array,
    dropped_attributes_count: &'a UInt32Array,
    dropped_events_count: &'a UInt32Array,
    dropped_links_count: &'a UInt32Array,
    resource_attributes: &'a MapArray,
    resource_dropped_attributes_count: &'a UInt32Array,
    resource_schema_url: &'a StringArray,
    scope_name: &'a StringArray,
    scope_version: &'a StringArray,
    scope_attributes: &'a MapArray,
    scope_schema_url: &'a StringArray,
    attributes: &'a MapArray,
    events: &'a ListArray,
    links: &'a ListArray,
    /// Optional so a projection without it still reads.
    xray_metadata: Option<&'a StringArray>,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|array| array.as_any().downcast_ref::<T>())
        .ok_or_else(|| ModelError::Corrupt(format!("span column {name} missing or mistyped")))
}

fn text(array: &StringArray, row: usize) -> String {
    if array.is_valid(row) {
        array.value(row).to_string()
    } else {
        String::new()
    }
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            trace_id: column(batch, col::TRACE_ID)?,
            span_id: column(batch, col::SPAN_ID)?,
            parent_span_id: column(batch, col::PARENT_SPAN_ID)?,
            trace_state: column(batch, col::TRACE_STATE)?,
            name: column(batch, col::NAME)?,
            kind: column(batch, col::KIND)?,
            start_time: column(batch, col::START_TIME)?,
            end_time: column(batch, col::END_TIME)?,
            status_code: column(batch, col::STATUS_CODE)?,
            status_message: column(batch, col::STATUS_MESSAGE)?,
            flags: column(batch, col::FLAGS)?,
            dropped_attributes_count: column(batch, col::DROPPED_ATTRIBUTES_COUNT)?,
            dropped_events_count: column(batch, col::DROPPED_EVENTS_COUNT)?,
            dropped_links_count: column(batch, col::DROPPED_LINKS_COUNT)?,
            resource_attributes: column(batch, col::RESOURCE_ATTRIBUTES)?,
            resource_dropped_attributes_count: column(
                batch,
                col::RESOURCE_DROPPED_ATTRIBUTES_COUNT,
            )?,
            resource_schema_url: column(batch, col::RESOURCE_SCHEMA_URL)?,
            scope_name: column(batch, col::SCOPE_NAME)?,
            scope_version: column(batch, col::SCOPE_VERSION)?,
            scope_attributes: column(batch, col::SCOPE_ATTRIBUTES)?,
            scope_schema_url: column(batch, col::SCOPE_SCHEMA_URL)?,
            attributes: column(batch, col::ATTRIBUTES)?,
            events: column(batch, col::EVENTS)?,
            links: column(batch, col::LINKS)?,
            xray_metadata: column(batch, col::XRAY_METADATA).ok(),
        })
    }

    fn resource(&self, row: usize) -> (Resource, String) {
        let resource = Resource {
            attributes: read_attributes(self.resource_attributes, row),
            dropped_attributes_count: self.resource_dropped_attributes_count.value(row),
            ..Default::default()
        };
        (resource, text(self.resource_schema_url, row))
    }

    fn scope(&self, row: usize) -> (InstrumentationScope, String) {
        let scope = InstrumentationScope {
            name: text(self.scope_name, row),
            version: text(self.scope_version, row),
            attributes: read_attributes(self.scope_attributes, row),
            ..Default::default()
        };
        (scope, text(self.scope_schema_url, row))
    }

    fn span(&self, row: usize) -> Span {
        let parent_span_id = if self.parent_span_id.is_valid(row) {
            self.parent_span_id.value(row).to_vec()
        } else {
            Vec::new()
        };
        // Always present: an absent status and an unset one read the same.
        let status = Some(Status {
            message: text(self.status_message, row),
            code: status_from_str(self.status_code.value(row)),
        });
        Span {
            trace_id: self.trace_id.value(row).to_vec(),
            span_id: self.span_id.value(row).to_vec(),
            trace_state: text(self.trace_state, row),
            parent_span_id,
            flags: self.flags.value(row),
            name: self.name.value(row).to_string(),
            kind: kind_from_str(self.kind.value(row)) as i32,
            start_time_unix_nano: self.start_time.value(row).max(0) as u64,
            end_time_unix_nano: self.end_time.value(row).max(0) as u64,
            attributes: self.span_attributes(row),
            dropped_attributes_count: self.dropped_attributes_count.value(row),
            events: read_events(self.events, row),
            dropped_events_count: self.dropped_events_count.value(row),
            links: read_links(self.links, row),
            dropped_links_count: self.dropped_links_count.value(row),
            status,
        }
    }
}

impl Columns<'_> {
    /// The span's attributes with its X-Ray metadata put back as the
    /// `aws.xray.metadata.{namespace}` attributes it was taken from.
    fn span_attributes(&self, row: usize) -> Vec<KeyValue> {
        let mut attributes = read_attributes(self.attributes, row);
        let Some(metadata) = self.xray_metadata.filter(|array| array.is_valid(row)) else {
            return attributes;
        };
        if let Ok(serde_json::Value::Object(namespaces)) =
            serde_json::from_str::<serde_json::Value>(metadata.value(row))
        {
            for (namespace, value) in namespaces {
                attributes.push(KeyValue {
                    key: format!("{}{namespace}", xray::attr::METADATA_PREFIX),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(value.to_string())),
                    }),
                    ..Default::default()
                });
            }
        }
        attributes
    }
}

fn read_events(events: &ListArray, row: usize) -> Vec<Event> {
    let items = events.value(row);
    let Some(items) = items.as_any().downcast_ref::<StructArray>() else {
        return Vec::new();
    };
    let (Some(time), Some(name), Some(attributes), Some(dropped)) = (
        child::<TimestampNanosecondArray>(items, "time"),
        child::<StringArray>(items, "name"),
        child::<MapArray>(items, "attributes"),
        child::<UInt32Array>(items, "dropped_attributes_count"),
    ) else {
        return Vec::new();
    };
    (0..items.len())
        .map(|index| Event {
            time_unix_nano: time.value(index).max(0) as u64,
            name: name.value(index).to_string(),
            attributes: read_attributes(attributes, index),
            dropped_attributes_count: dropped.value(index),
        })
        .collect()
}

fn read_links(links: &ListArray, row: usize) -> Vec<Link> {
    let items = links.value(row);
    let Some(items) = items.as_any().downcast_ref::<StructArray>() else {
        return Vec::new();
    };
    let (
        Some(trace_id),
        Some(span_id),
        Some(trace_state),
        Some(attributes),
        Some(dropped),
        Some(flags),
    ) = (
        child::<FixedSizeBinaryArray>(items, "trace_id"),
        child::<FixedSizeBinaryArray>(items, "span_id"),
        child::<StringArray>(items, "trace_state"),
        child::<MapArray>(items, "attributes"),
        child::<UInt32Array>(items, "dropped_attributes_count"),
        child::<UInt32Array>(items, "flags"),
    )
    else {
        return Vec::new();
    };
    (0..items.len())
        .map(|index| Link {
            trace_id: trace_id.value(index).to_vec(),
            span_id: span_id.value(index).to_vec(),
            trace_state: text(trace_state, index),
            attributes: read_attributes(attributes, index),
            dropped_attributes_count: dropped.value(index),
            flags: flags.value(index),
        })
        .collect()
}
