//! Tempo's tag endpoints: names (`/api/search/tags`, `/api/v2/search/tags`)
//! and values (`/api/search/tag/{tag}/values`, `/api/v2/search/tag/{tag}/values`)
//! of span, resource, event, link and instrumentation attributes and of
//! the intrinsics, over the window's spans narrowed by `q`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_nested::expr_fn::map_keys;
use datafusion::prelude::{DataFrame, Expr, col, lit};
use serde_json::{Value as Json, json};
use tracelake_model::schema::col as span_col;

use super::{MAX_TAG_VALUES, TempoState, window};
use crate::api::{ApiError, tenant};
use crate::exprs::starts_within;
use crate::traceql::{self, AttrValue, Field, Intrinsic, Scope};

/// The intrinsics `/api/v2/search/tags` lists, as Tempo lists them
/// (nested-set numbers and `span:childCount` left out).
const INTRINSICS: [&str; 25] = [
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "link:spanID",
    "link:traceID",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

/// Where attribute names and values are read from.
#[derive(Debug, Clone, Copy)]
enum AttributeSource {
    Span,
    Resource,
    Instrumentation,
    /// The `attributes` of each item of the `events` list.
    Event,
    Link,
}

impl AttributeSource {
    fn of(scope: Scope) -> Self {
        match scope {
            Scope::Span | Scope::Any => Self::Span,
            Scope::Resource => Self::Resource,
            Scope::Instrumentation => Self::Instrumentation,
            Scope::Event => Self::Event,
            Scope::Link => Self::Link,
        }
    }

    /// The list column whose items hold the attributes, for events and
    /// links.
    fn list(self) -> Option<&'static str> {
        match self {
            Self::Event => Some(span_col::EVENTS),
            Self::Link => Some(span_col::LINKS),
            _ => None,
        }
    }

    fn map(self) -> &'static str {
        match self {
            Self::Span => span_col::ATTRIBUTES,
            Self::Resource => span_col::RESOURCE_ATTRIBUTES,
            Self::Instrumentation => span_col::SCOPE_ATTRIBUTES,
            Self::Event | Self::Link => "attributes",
        }
    }
}

/// The column list items are unnested into.
const ITEM: &str = "item";

/// `frame` with one row per event (link) as column [`ITEM`] when the
/// source is a list, else as it is.
fn items(frame: DataFrame, source: AttributeSource) -> datafusion::error::Result<DataFrame> {
    match source.list() {
        Some(list) => frame
            .select(vec![col(list).alias(ITEM)])?
            .unnest_columns(&[ITEM]),
        None => Ok(frame),
    }
}

/// The attribute map of `source` in a frame from [`items`].
fn attribute_map(source: AttributeSource) -> Expr {
    match source.list() {
        Some(_) => get_field(col(ITEM), source.map()),
        None => col(source.map()),
    }
}

/// The spans whose tags and values a tag request lists: those starting in
/// the window, narrowed by `q` when it parses and checks.
fn tag_spans(params: &HashMap<String, String>) -> Result<Expr, ApiError> {
    let (from, to) = window(params)?;
    let mut condition = starts_within(from, to);
    let narrowing = params
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .and_then(|text| traceql::prepare(text).ok()?.span_predicate());
    if let Some(predicate) = narrowing {
        condition = condition.and(predicate);
    }
    Ok(condition)
}

/// Runs `plan` (built from the tenant's `spans`) within the query timeout.
async fn tag_rows<F>(
    state: &TempoState,
    tenant: &str,
    plan: F,
) -> Result<Vec<RecordBatch>, ApiError>
where
    F: FnOnce(DataFrame) -> datafusion::error::Result<DataFrame>,
{
    let run = crate::session::spans_rows(Arc::clone(&state.reader), tenant, plan);
    crate::api::within_query_timeout(run)
        .await?
        .map_err(ApiError::Internal)
}

fn first_column_strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        if let Some(array) = batch.column(0).as_string_opt::<i32>() {
            out.extend(
                (0..array.len())
                    .filter(|row| array.is_valid(*row))
                    .map(|row| array.value(row).to_string()),
            );
        }
    }
    out
}

/// Attribute names of `source` on the window's spans.
async fn attribute_names(
    state: &TempoState,
    tenant: &str,
    source: AttributeSource,
    params: &HashMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    let spans = tag_spans(params)?;
    let batches = tag_rows(state, tenant, move |frame| {
        items(frame.filter(spans)?, source)?
            .select(vec![map_keys(attribute_map(source)).alias(TAG)])?
            .unnest_columns(&[TAG])?
            .aggregate(vec![col(TAG)], vec![])?
            .sort(vec![col(TAG).sort(true, false)])?
            .limit(0, Some(MAX_TAG_VALUES))
    })
    .await?;
    Ok(first_column_strings(&batches))
}

/// The column tag names and values are answered in.
const TAG: &str = "tag";

pub(super) async fn tags_v1(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    for source in [AttributeSource::Span, AttributeSource::Resource] {
        names.extend(attribute_names(&state, &tenant, source, &params).await?);
    }
    Ok(axum::Json(json!({"tagNames": names})).into_response())
}

pub(super) async fn tags_v2(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    const ALL: [&str; 6] = [
        "resource",
        "span",
        "event",
        "link",
        "instrumentation",
        "intrinsic",
    ];
    let wanted: &[&str] = match params.get("scope").map(String::as_str) {
        None | Some("" | "all" | "none") => &ALL,
        Some("trace") => &[],
        Some(scope) => match ALL.iter().find(|known| **known == scope) {
            Some(known) => std::slice::from_ref(known),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "invalid scope: {scope} (use resource, span, event, link, instrumentation, intrinsic or none)"
                )));
            }
        },
    };
    let mut scopes = Vec::new();
    for scope in wanted {
        let source = match *scope {
            "span" => Some(AttributeSource::Span),
            "resource" => Some(AttributeSource::Resource),
            "event" => Some(AttributeSource::Event),
            "link" => Some(AttributeSource::Link),
            "instrumentation" => Some(AttributeSource::Instrumentation),
            _ => None,
        };
        let tags = match source {
            Some(source) => attribute_names(&state, &tenant, source, &params).await?,
            None => INTRINSICS.iter().map(|name| name.to_string()).collect(),
        };
        scopes.push(json!({"name": scope, "tags": tags}));
    }
    Ok(axum::Json(json!({"scopes": scopes})).into_response())
}

/// A tag value with its Tempo type name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TagValue {
    kind: &'static str,
    value: String,
}

fn typed(value: &AttrValue) -> TagValue {
    let kind = match value {
        AttrValue::Text(_) => "string",
        AttrValue::Int(_) => "int",
        AttrValue::Float(_) => "float",
        AttrValue::Bool(_) => "bool",
        AttrValue::Duration(_) => "duration",
    };
    TagValue {
        kind,
        value: value.render(),
    }
}

/// Distinct values of `field` on the window's spans (narrowed by `q`).
async fn values_of(
    state: &TempoState,
    tenant: &str,
    field: &Field,
    params: &HashMap<String, String>,
) -> Result<Vec<TagValue>, ApiError> {
    let keywords = |values: &[&str]| {
        values
            .iter()
            .map(|value| TagValue {
                kind: "keyword",
                value: value.to_string(),
            })
            .collect()
    };
    let not_root = || col(span_col::PARENT_SPAN_ID).is_null();
    let (value, only) = match field {
        Field::Intrinsic(Intrinsic::Status) => return Ok(keywords(&["error", "ok", "unset"])),
        Field::Intrinsic(Intrinsic::Kind) => {
            return Ok(keywords(&[
                "client",
                "consumer",
                "internal",
                "producer",
                "server",
                "unspecified",
            ]));
        }
        Field::Intrinsic(Intrinsic::InstrumentationName) => (col(span_col::SCOPE_NAME), None),
        Field::Intrinsic(Intrinsic::InstrumentationVersion) => (col(span_col::SCOPE_VERSION), None),
        Field::Intrinsic(Intrinsic::EventName) => {
            return list_values(state, tenant, AttributeSource::Event, "name", params).await;
        }
        Field::Attribute {
            scope: scope @ (Scope::Event | Scope::Link),
            name,
        } => {
            let source = AttributeSource::of(*scope);
            return list_values(state, tenant, source, name, params).await;
        }
        Field::Intrinsic(Intrinsic::Name) => (col(span_col::NAME), None),
        Field::Intrinsic(Intrinsic::StatusMessage) => (
            col(span_col::STATUS_MESSAGE),
            Some(col(span_col::STATUS_MESSAGE).not_eq(lit(""))),
        ),
        Field::Intrinsic(Intrinsic::RootName) => (col(span_col::NAME), Some(not_root())),
        Field::Intrinsic(Intrinsic::RootServiceName) => {
            (col(span_col::SERVICE_NAME), Some(not_root()))
        }
        Field::Attribute { scope, name }
            if *scope != Scope::Span && name == traceql::SERVICE_NAME =>
        {
            (col(span_col::SERVICE_NAME), None)
        }
        Field::Attribute { scope, name } => (traceql::attribute_value(*scope, name), None),
        // Durations, ids and numbering: too many values to list, as in
        // Tempo.
        Field::Intrinsic(_) => return Ok(Vec::new()),
    };
    let batches = {
        let mut spans = tag_spans(params)?.and(value.clone().is_not_null());
        if let Some(only) = only {
            spans = spans.and(only);
        }
        tag_rows(state, tenant, move |frame| {
            frame
                .filter(spans)?
                .aggregate(vec![value.alias(TAG)], vec![])?
                .limit(0, Some(MAX_TAG_VALUES))
        })
        .await?
    };
    Ok(tag_values(&batches))
}

/// Distinct values of an event's (link's) `name`: the event name, or an
/// attribute of the events (links).
async fn list_values(
    state: &TempoState,
    tenant: &str,
    source: AttributeSource,
    name: &str,
    params: &HashMap<String, String>,
) -> Result<Vec<TagValue>, ApiError> {
    let spans = tag_spans(params)?;
    let value = if matches!(source, AttributeSource::Event) && name == "name" {
        get_field(col(ITEM), "name")
    } else {
        get_field(attribute_map(source), name)
    };
    let batches = tag_rows(state, tenant, move |frame| {
        items(frame.filter(spans)?, source)?
            .select(vec![value.alias(TAG)])?
            .filter(col(TAG).is_not_null())?
            .aggregate(vec![col(TAG)], vec![])?
            .limit(0, Some(MAX_TAG_VALUES))
    })
    .await?;
    Ok(tag_values(&batches))
}

/// Typed, distinct tag values from the first column of `batches`.
fn tag_values(batches: &[RecordBatch]) -> Vec<TagValue> {
    let mut values = BTreeSet::new();
    for batch in batches {
        let column = batch.column(0);
        if let Some(strings) = column.as_string_opt::<i32>() {
            values.extend(
                (0..strings.len())
                    .filter(|row| strings.is_valid(*row))
                    .map(|row| TagValue {
                        kind: "string",
                        value: strings.value(row).to_string(),
                    }),
            );
        } else if let Some(structs) = column.as_struct_opt() {
            values
                .extend((0..structs.len()).filter_map(|row| {
                    traceql::attr_value(structs, row).map(|value| typed(&value))
                }));
        }
    }
    values.into_iter().take(MAX_TAG_VALUES).collect()
}

fn tag_field(tag: &str) -> Result<Field, ApiError> {
    traceql::parse_field(tag).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown tag {tag:?}: use span.x, resource.x, .x or an intrinsic (name, status, kind, ...)"
        ))
    })
}

pub(super) async fn tag_values_v1(
    State(state): State<TempoState>,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let field = Field::Attribute {
        scope: Scope::Any,
        name: tag,
    };
    let values: Vec<String> = values_of(&state, &tenant, &field, &params)
        .await?
        .into_iter()
        .map(|value| value.value)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(axum::Json(json!({"tagValues": values})).into_response())
}

pub(super) async fn tag_values_v2(
    State(state): State<TempoState>,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let field = tag_field(&tag)?;
    let values: Vec<Json> = values_of(&state, &tenant, &field, &params)
        .await?
        .into_iter()
        .map(|value| json!({"type": value.kind, "value": value.value}))
        .collect();
    Ok(axum::Json(json!({"tagValues": values})).into_response())
}
