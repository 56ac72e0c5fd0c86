//! Errors as the AWS REST-JSON protocol spells them: the status,
//! `x-amzn-errortype`, and `{"__type", "message"}`, which botocore turns
//! into the modeled exception (`client.exceptions.InvalidRequestException`).
//! Every X-Ray API route uses this, whichever crate serves it (collector,
//! sampler, query): a leaf crate of its own, so the sampler and the query
//! side share it without depending on each other.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracelake_model::{TENANT_HEADER, TenantId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "InvalidRequestException",
            message: message.into(),
        }
    }

    /// A failure the caller cannot fix: `detail` goes to the server log
    /// under an error id, the caller gets the id (see
    /// [`tracelake_routes::internal_error`]).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "InternalFailure",
            message: tracelake_routes::internal_error("the request failed", &detail),
        }
    }

    /// For paths the X-Ray API port does not serve.
    pub fn unknown_operation(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error_type: "UnknownOperationException",
            message: format!("no X-Ray operation at {path}"),
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"__type": self.error_type, "message": self.message});
        (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static("x-amzn-errortype"),
                    self.error_type,
                ),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

/// Largest X-Ray API request body read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Reads at most [`MAX_REQUEST_BYTES`] of `body` and parses it as JSON.
pub async fn json_body<T: for<'de> serde::Deserialize<'de>>(
    body: axum::body::Body,
) -> Result<T, AwsError> {
    let bytes = read_body(body).await?;
    parse_json(&bytes)
}

/// As [`json_body`], with an empty body read as `T::default()` (SDKs send
/// `GetSamplingRules` without one).
pub async fn json_body_or_default<T: for<'de> serde::Deserialize<'de> + Default>(
    body: axum::body::Body,
) -> Result<T, AwsError> {
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, AwsError> {
    axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| AwsError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error_type: "InvalidRequestException",
            message: format!("request body is larger than {MAX_REQUEST_BYTES} bytes"),
        })
}

fn parse_json<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8]) -> Result<T, AwsError> {
    serde_json::from_slice(bytes)
        .map_err(|error| AwsError::invalid_request(format!("request body: {error}")))
}

/// A JSON 200 response.
pub fn json_response<T: serde::Serialize>(value: &T) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(value).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

/// The tenant a request names (`X-Scope-OrgID`), default `single-tenant`,
/// by the model's rule ([`TenantId`]).
pub fn tenant_of(headers: &axum::http::HeaderMap) -> Result<TenantId, AwsError> {
    let value = headers
        .get(TENANT_HEADER)
        .map(|value| value.to_str().unwrap_or_default());
    TenantId::from_header(value).map_err(|_| {
        AwsError::invalid_request("X-Scope-OrgID must be 1-128 characters of [A-Za-z0-9_.-]")
    })
}
