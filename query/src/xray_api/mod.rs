//! The X-Ray query API on the X-Ray API port (REST-JSON, all POST), as
//! boto3's `xray` client and the AWS CLI call it:
//!
//! | route | operation |
//! |---|---|
//! | `/ServiceGraph` | GetServiceGraph |
//! | `/TraceSummaries` | GetTraceSummaries (filter expressions: [`crate::xray_filter`]) |
//! | `/Traces` | BatchGetTraces |
//! | `/TraceGraph` | GetTraceGraph |
//! | `/TimeSeriesServiceStatistics` | GetTimeSeriesServiceStatistics |
//! | `/CreateGroup`, `/GetGroup`, `/Groups`, `/UpdateGroup`, `/DeleteGroup` | groups ([`groups`]) |
//!
//! Times are epoch seconds (fractions allowed). Errors are AWS errors
//! (`InvalidRequestException` with a message naming the field).

pub mod groups;
mod root_causes;
mod service_graph;
mod statistics;
mod trace_summaries;
mod traces;

pub use traces::xray_trace_json;

use std::sync::Arc;
use std::time::Duration;
use tracelake_routes::{Access, Permission, Routes};

use axum::Router;
use axum::routing::post;
use tracelake_aws_json::AwsError;
use tracelake_storage::SpanReader;

use crate::QueryError;
use crate::derived_rows::{DerivedRows, Source, derived_rows, rows_of_traces};
use crate::xray_filter::{Filter, traces_in_window};

#[derive(Debug, Clone)]
struct XrayQueryState {
    reader: Arc<dyn SpanReader>,
    groups: Arc<groups::GroupStore>,
}

/// The query routes of the X-Ray API port; groups changed through other
/// nodes are seen within `settings_refresh` (`cluster.refresh_interval`).
pub fn router(reader: Arc<dyn SpanReader>, settings_refresh: Duration) -> Router {
    routes(reader, settings_refresh).into_router()
}

/// Reads X-Ray's data: a key with `query` or `admin` (the console's).
const READ: Access = Access::AnyOf(&[Permission::Query, Permission::Admin]);

/// The query routes of the X-Ray API port with the access each needs:
/// reads for `query` or `admin` keys, group changes for `admin` only.
pub fn routes(reader: Arc<dyn SpanReader>, settings_refresh: Duration) -> Routes {
    Routes::new()
        .route(
            "/ServiceGraph",
            post(service_graph::get_service_graph),
            READ,
        )
        .route(
            "/TraceSummaries",
            post(trace_summaries::get_trace_summaries),
            READ,
        )
        .route("/Traces", post(traces::batch_get_traces), READ)
        .route("/TraceGraph", post(traces::get_trace_graph), READ)
        .route(
            "/TimeSeriesServiceStatistics",
            post(statistics::get_time_series_service_statistics),
            READ,
        )
        .route("/CreateGroup", post(groups::create_group), Access::ADMIN)
        .route("/GetGroup", post(groups::get_group), READ)
        .route("/Groups", post(groups::get_groups), READ)
        .route("/UpdateGroup", post(groups::update_group), Access::ADMIN)
        .route("/DeleteGroup", post(groups::delete_group), Access::ADMIN)
        .with_state(XrayQueryState {
            groups: Arc::new(groups::GroupStore::new(
                reader.object_store(),
                settings_refresh,
            )),
            reader,
        })
}

impl From<QueryError> for AwsError {
    fn from(error: QueryError) -> Self {
        AwsError::internal(format_args!("query failed: {error}"))
    }
}

const NANOS_PER_SECOND: f64 = 1e9;

/// A request's `StartTime`/`EndTime` as an inclusive nanosecond window.
fn window(start: f64, end: f64) -> Result<(i64, i64), AwsError> {
    let valid = |seconds: f64| seconds.is_finite() && (0.0..1e11).contains(&seconds);
    if !valid(start) || !valid(end) {
        return Err(AwsError::invalid_request(
            "StartTime and EndTime must be epoch seconds",
        ));
    }
    if start > end {
        return Err(AwsError::invalid_request(
            "StartTime must not be after EndTime",
        ));
    }
    Ok((
        (start * NANOS_PER_SECOND).round() as i64,
        (end * NANOS_PER_SECOND).round() as i64,
    ))
}

/// Longest window whose traces are loaded whole (summaries, group maps),
/// so one request cannot hold a whole store in memory.
const MAX_TRACE_WINDOW_NS: i64 = 24 * 3_600_000_000_000;

fn check_trace_window((from_ns, to_ns): (i64, i64)) -> Result<(), AwsError> {
    if to_ns - from_ns > MAX_TRACE_WINDOW_NS {
        return Err(AwsError::invalid_request(
            "the time range of a trace query (summaries, a group's map) is limited to 24 hours",
        ));
    }
    Ok(())
}

/// Refuses a `NextToken` on operations that answer in one page.
fn no_next_token(token: Option<&str>) -> Result<(), AwsError> {
    match token.filter(|token| !token.is_empty()) {
        Some(_) => Err(AwsError::invalid_request("invalid NextToken")),
        None => Ok(()),
    }
}

/// The rows a window's map and statistics come from: precomputed where
/// possible, or, for a group, recomputed from its matching traces.
async fn window_rows(
    state: &XrayQueryState,
    tenant: &str,
    range: (i64, i64),
    group_filter: Option<Filter>,
) -> Result<DerivedRows, AwsError> {
    let reader = Arc::clone(&state.reader);
    Ok(match group_filter {
        None => derived_rows(reader, tenant, range, Source::Auto).await?,
        Some(filter) => {
            check_trace_window(range)?;
            let traces = traces_in_window(reader, tenant, range).await?;
            crate::off_reactor(move || {
                let matching: Vec<_> = traces
                    .into_iter()
                    .filter(|trace| trace.matches(&filter))
                    .collect();
                Ok(rows_of_traces(&matching))
            })
            .await?
        }
    })
}

/// `NextToken` as the offset it encodes; invalid tokens are refused.
fn page_offset(token: Option<&str>) -> Result<usize, AwsError> {
    match token.filter(|token| !token.is_empty()) {
        None => Ok(0),
        Some(token) => token
            .strip_prefix("offset-")
            .and_then(|offset| offset.parse().ok())
            .ok_or_else(|| AwsError::invalid_request(format!("invalid NextToken {token:?}"))),
    }
}

fn next_token(offset: usize, page: usize, total: usize) -> Option<String> {
    (offset + page < total).then(|| format!("offset-{}", offset + page))
}
