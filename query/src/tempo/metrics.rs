//! Tempo's TraceQL metrics endpoints, `GET /api/metrics/query_range` and
//! `GET /api/metrics/query`, answered as Tempo answers them (parameters,
//! errors and JSON from Tempo's `pkg/api/http.go` and the frontend's
//! metrics handlers):
//!
//! | parameter | meaning |
//! |---|---|
//! | `q` (or `query`) | a TraceQL metrics query |
//! | `start`, `end` | unix seconds (`1700000000`, `1700000000.5`), nanoseconds (more than 10 digits) or RFC 3339; `end` defaults to now, `start` to `end - since` |
//! | `since` | a duration (`15m`, `1h`, `2d`); default `1h` |
//! | `step` | seconds (`15`, `0.5`) or a duration (`30s`); default about 240 intervals ([`default_step_ns`]); range only |
//! | `exemplars` | most exemplars answered; 0 or absent: 100 ([`DEFAULT_EXEMPLARS`]); range only |
//!
//! The JSON is protobuf JSON as Tempo's marshaller writes it: int64 as
//! strings (`timestampMs`), zero values left out (a sample of 0 has no
//! `value`), labels as OTLP `KeyValue`s.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value as Json, json};

use tracelake_storage::SpanReader;

use super::{TempoState, attribute_json, now_ns};
use crate::QueryError;
use crate::api::{ApiError, tenant};
use crate::traceql::{
    self, DEFAULT_EXEMPLARS, Exemplar, MAX_INTERVALS, MetricsOutcome, MetricsRequest, Series,
    default_step_ns, go_duration,
};

const SECOND_NS: i64 = 1_000_000_000;
const DEFAULT_SINCE_NS: i64 = 3600 * SECOND_NS;

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// A time as Tempo reads it (module docs), in nanoseconds.
fn timestamp(name: &str, text: &str) -> Result<i64, ApiError> {
    let refuse = || {
        ApiError::BadRequest(format!(
            "could not parse '{name}' parameter: {text:?} is not unix seconds, nanoseconds or RFC 3339"
        ))
    };
    if text.contains('.') && !text.contains('T') {
        let seconds: f64 = text.parse().map_err(|_| refuse())?;
        let millis = (seconds * 1000.0).round();
        if !millis.is_finite() || millis.abs() > 9.2e15 {
            return Err(refuse());
        }
        return (millis as i64).checked_mul(1_000_000).ok_or_else(refuse);
    }
    if let Ok(number) = text.parse::<i64>() {
        return if text.trim_start_matches('-').len() <= 10 {
            number.checked_mul(SECOND_NS).ok_or_else(refuse)
        } else {
            Ok(number)
        };
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|time| time.timestamp_nanos_opt())
        .ok_or_else(refuse)
}

/// A duration as seconds (`15`, `0.5`) or with units (`30s`, `1m30s`).
fn seconds_or_duration(name: &str, text: &str) -> Result<i64, ApiError> {
    let nanos = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => Some((seconds * 1e9).round() as i64),
        _ => traceql::duration_nanos(text),
    };
    let nanos = nanos.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "could not parse '{name}' parameter: {text:?} is not seconds or a duration like 30s"
        ))
    })?;
    if nanos < 0 {
        return Err(ApiError::BadRequest(format!(
            "cannot parse {text:?}: {name} must be positive"
        )));
    }
    Ok(nanos)
}

/// `start`/`end` (Tempo's `determineBounds`), validated.
fn bounds(
    params: &HashMap<String, String>,
    max: std::time::Duration,
) -> Result<(i64, i64), ApiError> {
    let end = match param(params, "end") {
        Some(text) => timestamp("end", text)?,
        None => now_ns(),
    };
    let start = match param(params, "start") {
        Some(text) => timestamp("start", text)?,
        None => {
            let since = match param(params, "since") {
                Some(text) => traceql::duration_nanos(text)
                    .filter(|nanos| *nanos >= 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "could not parse 'since' parameter: {text:?} is not a duration like 15m"
                        ))
                    })?,
                None => DEFAULT_SINCE_NS,
            };
            end.min(now_ns()).saturating_sub(since)
        }
    };
    if start >= end {
        return Err(ApiError::BadRequest(
            "end must be greater than start".into(),
        ));
    }
    let range = u128::try_from(end - start).unwrap_or(0);
    if !max.is_zero() && range > max.as_nanos() {
        return Err(ApiError::BadRequest(format!(
            "metrics query time range exceeds the maximum allowed duration of {} (query.max_search_duration)",
            go_duration(i64::try_from(max.as_nanos()).unwrap_or(i64::MAX))
        )));
    }
    Ok((start, end))
}

/// The query text, parsed and checked, which must be a metrics query.
fn metrics_query(params: &HashMap<String, String>) -> Result<traceql::Checked, ApiError> {
    let text = param(params, "q")
        .or_else(|| param(params, "query"))
        .ok_or_else(|| ApiError::BadRequest("missing query: give q".into()))?;
    let checked =
        traceql::prepare(text).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    if checked.metrics().is_none() {
        return Err(ApiError::BadRequest(
            "not a metrics query: add a metrics function, as in {} | rate()".into(),
        ));
    }
    Ok(checked)
}

async fn run(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    checked: traceql::Checked,
    request: MetricsRequest,
) -> Result<MetricsOutcome, ApiError> {
    let run = traceql::query_range(reader, tenant, Arc::new(checked), request);
    crate::api::within_query_timeout(run)
        .await?
        .map_err(|error| match error {
            QueryError::TooLarge(message) => ApiError::BadRequest(message),
            other => ApiError::Internal(other),
        })
}

/// A number as protobuf JSON writes a double (NaN and infinities as
/// strings).
fn double(value: f64) -> Json {
    if value.is_nan() {
        json!("NaN")
    } else if value == f64::INFINITY {
        json!("Infinity")
    } else if value == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(value)
    }
}

/// Sets `value` on `out` unless it is 0, which protobuf JSON leaves out.
fn set_value(out: &mut Json, value: f64) {
    if value != 0.0 {
        out["value"] = double(value);
    }
}

fn labels_json(series: &Series) -> Vec<Json> {
    series
        .labels
        .iter()
        .map(|(key, value)| attribute_json(key, value))
        .collect()
}

fn metrics_json(outcome: &MetricsOutcome) -> Json {
    let mut metrics = serde_json::Map::new();
    if outcome.inspected_traces > 0 {
        metrics.insert("inspectedTraces".into(), json!(outcome.inspected_traces));
    }
    if outcome.inspected_bytes > 0 {
        metrics.insert(
            "inspectedBytes".into(),
            json!(outcome.inspected_bytes.to_string()),
        );
    }
    if outcome.inspected_spans > 0 {
        metrics.insert(
            "inspectedSpans".into(),
            json!(outcome.inspected_spans.to_string()),
        );
    }
    metrics.insert("completedJobs".into(), json!(1));
    metrics.insert("totalJobs".into(), json!(1));
    Json::Object(metrics)
}

/// `GET /api/metrics/query_range`.
pub(crate) async fn query_range(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let body = range_body(state.reader, state.max_search_duration, &tenant, &params).await?;
    Ok(axum::Json(body).into_response())
}

/// The answer of a range request (module docs), for Tempo's path and the
/// native one the web UI reads.
pub(crate) async fn range_body(
    reader: Arc<dyn SpanReader>,
    max_duration: std::time::Duration,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<RangeAnswer, ApiError> {
    let checked = metrics_query(params)?;
    let (start_ns, end_ns) = bounds(params, max_duration)?;
    let step_ns = match param(params, "step") {
        Some(text) => seconds_or_duration("step", text)?,
        None => default_step_ns(start_ns, end_ns),
    };
    let minimum_step = (end_ns - start_ns) / MAX_INTERVALS;
    if step_ns <= 0 || (end_ns - start_ns) / step_ns > MAX_INTERVALS {
        return Err(ApiError::BadRequest(format!(
            "step of {} is too small, minimum step for given range is {}",
            go_duration(step_ns),
            go_duration(minimum_step.max(1))
        )));
    }
    let exemplars = match param(params, "exemplars").map(str::parse::<usize>) {
        Some(Ok(count)) if count > 0 => count.min(DEFAULT_EXEMPLARS),
        _ => DEFAULT_EXEMPLARS,
    };
    let exemplars = match checked.query.hints.get("exemplars") {
        Some(traceql::Value::Bool(false)) => 0,
        Some(traceql::Value::Int(count)) => usize::try_from(*count).unwrap_or(0).min(exemplars),
        _ => exemplars,
    };
    let request = MetricsRequest {
        start_ns,
        end_ns,
        step_ns,
        exemplars,
        instant: false,
    };
    let outcome = run(reader, tenant, checked, request).await?;
    Ok(RangeAnswer(outcome))
}

/// A range request's answer, written straight from its series as Tempo's
/// marshaller orders the fields (`series`, `metrics`; per series `labels`,
/// `samples`, `exemplars`). A long range by a busy label holds hundreds of
/// thousands of samples: no JSON tree is built for them.
pub(crate) struct RangeAnswer(MetricsOutcome);

impl Serialize for RangeAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("series", &Many(&self.0.series, SeriesJson))?;
        map.serialize_entry("metrics", &metrics_json(&self.0))?;
        map.end()
    }
}

/// Items written as a JSON array, each as `F` wraps it.
struct Many<'a, T, F>(&'a [T], F);

impl<'a, T, F, R> Serialize for Many<'a, T, F>
where
    F: Fn(&'a T) -> R,
    R: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(&self.1))
    }
}

/// One series: its labels, every sample, and its exemplars when it has any.
struct SeriesJson<'a>(&'a Series);

impl Serialize for SeriesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let series = self.0;
        let exemplars = !series.exemplars.is_empty();
        let mut map = serializer.serialize_map(Some(2 + usize::from(exemplars)))?;
        map.serialize_entry("labels", &labels_json(series))?;
        map.serialize_entry(
            "samples",
            &Many(&series.samples, |(timestamp_ms, value): &(i64, f64)| {
                Sample {
                    timestamp_ms: *timestamp_ms,
                    value: *value,
                }
            }),
        )?;
        if exemplars {
            let exemplars: Vec<Json> = series.exemplars.iter().map(exemplar_json).collect();
            map.serialize_entry("exemplars", &exemplars)?;
        }
        map.end()
    }
}

/// A sample as protobuf JSON writes it: the timestamp as a string, no
/// `value` when it is 0.
struct Sample {
    timestamp_ms: i64,
    value: f64,
}

impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let valued = self.value != 0.0;
        let mut map = serializer.serialize_map(Some(1 + usize::from(valued)))?;
        map.serialize_entry("timestampMs", &AsString(self.timestamp_ms))?;
        if valued {
            map.serialize_entry("value", &double(self.value))?;
        }
        map.end()
    }
}

/// A value written as the string its `Display` makes (int64 in protobuf
/// JSON).
struct AsString<T>(T);

impl<T: std::fmt::Display> Serialize for AsString<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

fn exemplar_json(exemplar: &Exemplar) -> Json {
    let labels: Vec<Json> = exemplar
        .labels
        .iter()
        .map(|(key, value)| attribute_json(key, value))
        .collect();
    let mut out = json!({"labels": labels});
    set_value(&mut out, exemplar.value);
    out["timestampMs"] = json!(exemplar.timestamp_ms.to_string());
    out
}

/// `GET /api/metrics/query`: the range as one interval, one value per
/// series.
pub(crate) async fn query_instant(
    State(state): State<TempoState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&headers)?;
    let checked = metrics_query(&params)?;
    let (start_ns, end_ns) = bounds(&params, state.max_search_duration)?;
    let request = MetricsRequest {
        start_ns,
        end_ns,
        step_ns: end_ns - start_ns,
        exemplars: 0,
        instant: true,
    };
    let outcome = run(state.reader, &tenant, checked, request).await?;
    let series: Vec<Json> = outcome
        .series
        .iter()
        .filter_map(|series| {
            let (_, value) = series.samples.first()?;
            let mut out = json!({"labels": labels_json(series)});
            set_value(&mut out, *value);
            Some(out)
        })
        .collect();
    let mut body = json!({"metrics": metrics_json(&outcome)});
    if !series.is_empty() {
        body["series"] = Json::Array(series);
    }
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traceql::AttrValue;

    #[test]
    fn range_answers_are_written_as_protobuf_json() {
        let service = || {
            (
                "resource.service.name".to_string(),
                AttrValue::Text("api".into()),
            )
        };
        let outcome = MetricsOutcome {
            series: vec![
                Series {
                    labels: vec![service()],
                    samples: vec![(1000, 0.0), (2000, 1.5), (3000, f64::NAN), (4000, 2.0)],
                    exemplars: vec![Exemplar {
                        labels: vec![
                            ("trace:id".into(), AttrValue::Text("0af7".into())),
                            service(),
                        ],
                        value: 0.25,
                        timestamp_ms: 1500,
                    }],
                },
                Series {
                    labels: vec![("p".into(), AttrValue::Float(0.9))],
                    samples: vec![(1000, f64::INFINITY)],
                    exemplars: Vec::new(),
                },
            ],
            inspected_spans: 7,
            ..MetricsOutcome::default()
        };
        let written = serde_json::to_value(RangeAnswer(outcome)).unwrap();
        let api = json!({"key": "resource.service.name", "value": {"stringValue": "api"}});
        assert_eq!(
            written,
            json!({
                "series": [
                    {
                        "labels": [api],
                        "samples": [
                            {"timestampMs": "1000"},
                            {"timestampMs": "2000", "value": 1.5},
                            {"timestampMs": "3000", "value": "NaN"},
                            {"timestampMs": "4000", "value": 2.0},
                        ],
                        "exemplars": [{
                            "labels": [
                                {"key": "trace:id", "value": {"stringValue": "0af7"}},
                                api,
                            ],
                            "value": 0.25,
                            "timestampMs": "1500",
                        }],
                    },
                    {
                        "labels": [{"key": "p", "value": {"doubleValue": 0.9}}],
                        "samples": [{"timestampMs": "1000", "value": "Infinity"}],
                    },
                ],
                "metrics": {"inspectedSpans": "7", "completedJobs": 1, "totalJobs": 1},
            })
        );
        // Written as text, the fields come in Tempo's order.
        let text = serde_json::to_string(&RangeAnswer(MetricsOutcome {
            series: vec![Series {
                labels: vec![service()],
                samples: vec![(1000, 3.0)],
                exemplars: Vec::new(),
            }],
            ..MetricsOutcome::default()
        }))
        .unwrap();
        assert!(
            text.starts_with(r#"{"series":[{"labels":[{"#)
                && text.contains(r#""samples":[{"timestampMs":"1000","value":3.0}]}],"metrics":{"#),
            "{text}"
        );
    }
}
