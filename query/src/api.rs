//! What every HTTP route of the query crate shares: the error answer,
//! the tenant of a request, content negotiation, the time parameters and
//! the query timeout. A leaf: the route modules ([`crate::http`],
//! [`crate::tempo`], [`crate::tempo::metrics`], [`crate::ui`]) use it, and
//! it uses none of them.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracelake_model::{DEFAULT_TENANT, TENANT_HEADER};

use crate::QueryError;

const PROTOBUF_TYPES: [&str; 2] = ["application/protobuf", "application/x-protobuf"];

/// Every error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Timeout(String),
    #[error("query failed: {0}")]
    Internal(#[from] QueryError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Self::Timeout(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            Self::Internal(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                tracelake_routes::internal_error("query failed", &error),
            ),
        }
        .into_response()
    }
}

pub(crate) fn tenant(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get(TENANT_HEADER) {
        None => Ok(DEFAULT_TENANT.to_string()),
        Some(value) => {
            let tenant = value
                .to_str()
                .map_err(|_| ApiError::BadRequest("X-Scope-OrgID is not ascii".into()))?;
            tracelake_model::validate_tenant(tenant)
                .map_err(|error| ApiError::BadRequest(error.to_string()))?;
            Ok(tenant.to_string())
        }
    }
}

pub(crate) fn wants_protobuf(headers: &HeaderMap) -> bool {
    PROTOBUF_TYPES
        .iter()
        .any(|mime| header_lists(headers, header::ACCEPT, mime))
}

/// Whether the comma-separated list in header `name` (`Accept`,
/// `Accept-Encoding`) holds `token`, its parameters (`;q=...`) aside.
pub(crate) fn header_lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|list| {
            list.split(',')
                .any(|part| part.split(';').next().unwrap_or("").trim() == token)
        })
}

/// Refuses a search over more than `max` (zero: any), in Tempo's words.
pub(crate) fn check_search_range((from, to): (i64, i64), max: Duration) -> Result<(), ApiError> {
    let span_ns = u128::try_from(to.saturating_sub(from)).unwrap_or(0);
    if !max.is_zero() && span_ns > max.as_nanos() {
        return Err(ApiError::BadRequest(format!(
            "range specified by start and end exceeds {} (query.max_search_duration): received start={} end={}",
            humantime::format_duration(max),
            from / 1_000_000_000,
            to / 1_000_000_000
        )));
    }
    Ok(())
}

/// `run` within [`crate::sql::QUERY_TIMEOUT`]; past it, 503.
pub(crate) async fn within_query_timeout<T>(
    run: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(crate::sql::QUERY_TIMEOUT, run)
        .await
        .map_err(|_| ApiError::Timeout(QueryError::Timeout(crate::sql::QUERY_TIMEOUT).to_string()))
}

/// `start`/`end` in unix seconds, both or neither.
pub(crate) fn time_range(params: &HashMap<String, String>) -> Result<Option<(i64, i64)>, ApiError> {
    let seconds = |name: &str| -> Result<Option<i64>, ApiError> {
        match params.get(name).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(value) => value
                .parse::<i64>()
                .ok()
                .and_then(|seconds| seconds.checked_mul(1_000_000_000))
                .map(Some)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{name} must be unix seconds, got {value:?}"))
                }),
        }
    };
    match (seconds("start")?, seconds("end")?) {
        (None, None) => Ok(None),
        (Some(start), Some(end)) if start <= end => {
            Ok(Some((start, end.saturating_add(999_999_999))))
        }
        (Some(_), Some(_)) => Err(ApiError::BadRequest("start must not be after end".into())),
        _ => Err(ApiError::BadRequest(
            "give both start and end, or neither".into(),
        )),
    }
}
