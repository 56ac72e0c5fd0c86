//! The span table's Arrow schema: one row per span, flat.
//!
//! Columns every query needs are dedicated; everything else stays in typed
//! attribute maps so an OTLP span round-trips without loss.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `tenant` | Utf8 | tenant that owns the span (`X-Scope-OrgID`, default `single-tenant`) |
//! | `trace_id` | FixedSizeBinary(16) | trace id, never all zero |
//! | `span_id` | FixedSizeBinary(8) | span id, never all zero |
//! | `parent_span_id` | FixedSizeBinary(8), null | parent span id; null for a root span |
//! | `trace_state` | Utf8, null | W3C tracestate |
//! | `name` | Utf8 | span name (X-Ray: segment/subsegment name) |
//! | `kind` | Utf8 | `unspecified`, `internal`, `server`, `client`, `producer`, `consumer` |
//! | `service_name` | Utf8 | resource `service.name`, `unknown_service` when absent |
//! | `service_namespace` | Utf8, null | resource `service.namespace` |
//! | `service_type` | Utf8, null | X-Ray origin (`AWS::Lambda::Function`, ...): resource `aws.xray.origin`, or the origin resource `cloud.platform` stands for |
//! | `start_time` | Timestamp(ns, UTC) | start, nanoseconds since the epoch |
//! | `end_time` | Timestamp(ns, UTC) | end, nanoseconds since the epoch |
//! | `duration_ns` | Int64 | `end_time - start_time`, clamped at 0 |
//! | `status_code` | Utf8 | `unset`, `ok`, `error` |
//! | `status_message` | Utf8, null | status description |
//! | `xray_error` | Boolean | client error: X-Ray's `error` flag (`aws.xray.error`), else HTTP 4xx |
//! | `xray_fault` | Boolean | server error: X-Ray's `fault` flag, else HTTP 5xx or error status |
//! | `xray_throttle` | Boolean | throttled: X-Ray's `throttle` flag, else HTTP 429 |
//! | `http_method` | Utf8, null | `http.request.method` / `http.method` |
//! | `http_url` | Utf8, null | `url.full` / `http.url` |
//! | `http_route` | Utf8, null | `http.route` |
//! | `http_status_code` | Int32, null | `http.response.status_code` / `http.status_code` |
//! | `peer_service` | Utf8, null | `peer.service` (the called service, for inferred nodes) |
//! | `db_system` | Utf8, null | `db.system.name` / `db.system` |
//! | `remote_namespace` | Utf8, null | X-Ray subsegment namespace (`remote`, `aws`; `aws.xray.namespace`), else `aws`/`remote` for client and producer spans |
//! | `user` | Utf8, null | X-Ray `user` / `enduser.id` |
//! | `flags` | UInt32 | OTLP span flags |
//! | `dropped_attributes_count`, `dropped_events_count`, `dropped_links_count` | UInt32 | as sent |
//! | `resource_attributes` | Map(Utf8, AnyValue) | every resource attribute, `service.name` included |
//! | `resource_dropped_attributes_count` | UInt32 | as sent |
//! | `resource_schema_url` | Utf8, null | as sent |
//! | `scope_name`, `scope_version` | Utf8, null | instrumentation scope |
//! | `scope_attributes` | Map(Utf8, AnyValue) | instrumentation scope attributes |
//! | `scope_schema_url` | Utf8, null | as sent |
//! | `attributes` | Map(Utf8, AnyValue) | span attributes (X-Ray annotations included) |
//! | `events` | List(Struct) | `time` (ns), `name`, `attributes`, `dropped_attributes_count` |
//! | `links` | List(Struct) | `trace_id`, `span_id`, `trace_state`, `attributes`, `dropped_attributes_count`, `flags` |
//! | `xray_metadata` | Utf8, null | X-Ray `metadata` object, as JSON: the `aws.xray.metadata.{namespace}` span attributes (JSON text) move here and read back as those attributes |
//! | `sampling_rule` | Utf8, null | name of the sampling rule that kept the span |
//!
//! `AnyValue` is a struct with one child per OTLP value type; exactly one is
//! set (none for an empty value): `str` (Utf8), `int` (Int64), `double`
//! (Float64), `bool` (Boolean), `bytes` (Binary), `json` (Utf8: arrays and
//! key-value lists in OTLP JSON form). SQL reads an attribute as
//! `attributes['http.route']['str']`.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Column names, so code never spells them twice.
pub mod col {
    pub const TENANT: &str = "tenant";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const SERVICE_NAME: &str = "service_name";
    pub const SERVICE_NAMESPACE: &str = "service_namespace";
    pub const SERVICE_TYPE: &str = "service_type";
    pub const START_TIME: &str = "start_time";
    pub const END_TIME: &str = "end_time";
    pub const DURATION_NS: &str = "duration_ns";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const XRAY_ERROR: &str = "xray_error";
    pub const XRAY_FAULT: &str = "xray_fault";
    pub const XRAY_THROTTLE: &str = "xray_throttle";
    pub const HTTP_METHOD: &str = "http_method";
    pub const HTTP_URL: &str = "http_url";
    pub const HTTP_ROUTE: &str = "http_route";
    pub const HTTP_STATUS_CODE: &str = "http_status_code";
    pub const PEER_SERVICE: &str = "peer_service";
    pub const DB_SYSTEM: &str = "db_system";
    pub const REMOTE_NAMESPACE: &str = "remote_namespace";
    pub const USER: &str = "user";
    pub const FLAGS: &str = "flags";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
    pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
    pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
    pub const ATTRIBUTES: &str = "attributes";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";
    pub const XRAY_METADATA: &str = "xray_metadata";
    pub const SAMPLING_RULE: &str = "sampling_rule";
}

/// Child names of the `AnyValue` struct.
pub mod any_value {
    pub const STR: &str = "str";
    pub const INT: &str = "int";
    pub const DOUBLE: &str = "double";
    pub const BOOL: &str = "bool";
    pub const BYTES: &str = "bytes";
    pub const JSON: &str = "json";
}

/// `Timestamp(ns, UTC)`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The struct children of an attribute value.
pub fn any_value_fields() -> Fields {
    Fields::from(vec![
        Field::new(any_value::STR, DataType::Utf8, true),
        Field::new(any_value::INT, DataType::Int64, true),
        Field::new(any_value::DOUBLE, DataType::Float64, true),
        Field::new(any_value::BOOL, DataType::Boolean, true),
        Field::new(any_value::BYTES, DataType::Binary, true),
        Field::new(any_value::JSON, DataType::Utf8, true),
    ])
}

/// The `entries` field of an attribute map: key (non-null) and value struct.
pub fn attribute_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Struct(any_value_fields()), true),
        ])),
        false,
    ))
}

/// `Map(Utf8, AnyValue)`.
pub fn attributes_type() -> DataType {
    DataType::Map(attribute_entries_field(), false)
}

/// The struct children of one span event.
pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", attributes_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

/// The struct children of one span link.
pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attributes_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
        Field::new("flags", DataType::UInt32, false),
    ])
}

/// The list item field of `events`.
pub fn event_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(event_fields()), false))
}

/// The list item field of `links`.
pub fn link_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(link_fields()), false))
}

static SPAN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u32_field = |name: &str| Field::new(name, DataType::UInt32, false);
    let flag = |name: &str| Field::new(name, DataType::Boolean, false);
    Arc::new(Schema::new(vec![
        utf8(col::TENANT, false),
        Field::new(col::TRACE_ID, DataType::FixedSizeBinary(16), false),
        Field::new(col::SPAN_ID, DataType::FixedSizeBinary(8), false),
        Field::new(col::PARENT_SPAN_ID, DataType::FixedSizeBinary(8), true),
        utf8(col::TRACE_STATE, true),
        utf8(col::NAME, false),
        utf8(col::KIND, false),
        utf8(col::SERVICE_NAME, false),
        utf8(col::SERVICE_NAMESPACE, true),
        utf8(col::SERVICE_TYPE, true),
        Field::new(col::START_TIME, timestamp_type(), false),
        Field::new(col::END_TIME, timestamp_type(), false),
        Field::new(col::DURATION_NS, DataType::Int64, false),
        utf8(col::STATUS_CODE, false),
        utf8(col::STATUS_MESSAGE, true),
        flag(col::XRAY_ERROR),
        flag(col::XRAY_FAULT),
        flag(col::XRAY_THROTTLE),
        utf8(col::HTTP_METHOD, true),
        utf8(col::HTTP_URL, true),
        utf8(col::HTTP_ROUTE, true),
        Field::new(col::HTTP_STATUS_CODE, DataType::Int32, true),
        utf8(col::PEER_SERVICE, true),
        utf8(col::DB_SYSTEM, true),
        utf8(col::REMOTE_NAMESPACE, true),
        utf8(col::USER, true),
        u32_field(col::FLAGS),
        u32_field(col::DROPPED_ATTRIBUTES_COUNT),
        u32_field(col::DROPPED_EVENTS_COUNT),
        u32_field(col::DROPPED_LINKS_COUNT),
        Field::new(col::RESOURCE_ATTRIBUTES, attributes_type(), false),
        u32_field(col::RESOURCE_DROPPED_ATTRIBUTES_COUNT),
        utf8(col::RESOURCE_SCHEMA_URL, true),
        utf8(col::SCOPE_NAME, true),
        utf8(col::SCOPE_VERSION, true),
        Field::new(col::SCOPE_ATTRIBUTES, attributes_type(), false),
        utf8(col::SCOPE_SCHEMA_URL, true),
        Field::new(col::ATTRIBUTES, attributes_type(), false),
        Field::new(col::EVENTS, DataType::List(event_item_field()), false),
        Field::new(col::LINKS, DataType::List(link_item_field()), false),
        utf8(col::XRAY_METADATA, true),
        utf8(col::SAMPLING_RULE, true),
    ]))
});

/// The schema of the `spans` table, shared by the WAL, the head buffer, the
/// Parquet blocks and the query side.
pub fn span_schema() -> SchemaRef {
    Arc::clone(&SPAN_SCHEMA)
}
