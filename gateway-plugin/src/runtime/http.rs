//! The runtime's HTTP API, Lambda's `Invoke`:
//! `POST /2015-03-31/functions/{name}/invocations` with the event as body.
//!
//! - `X-Amz-Invocation-Type`: `RequestResponse` (default; 200 with the
//!   result, or with `X-Amz-Function-Error: Unhandled` and
//!   `{"errorType", "errorMessage"}` when the function failed) or `Event`
//!   (202, queued).
//! - `X-Amzn-Trace-Id`: the caller's trace; the function's segment is its
//!   child.
//! - `X-Tracelake-Principal`: who calls, for the function policy (stands
//!   in for the SigV4 identity Lambda checks). Honoured only beside the
//!   admin key ([`crate::admin`]), as only IAM can vouch for an identity:
//!   a request naming a principal without the key, or offering a wrong
//!   key, is refused (403 `AccessDeniedException`); one naming none is
//!   anonymous, allowed only by functions whose policy says `*`.
//! - Refusals as Lambda answers them: 404 `ResourceNotFoundException`, 403
//!   `AccessDeniedException`, 429 `TooManyRequestsException`, 400
//!   `InvalidRequestContentException` for a body that is not JSON.
//! - The response carries `X-Amz-Executed-Version`, `X-Amzn-RequestId`
//!   (for `Event` too: the id the queued invocation runs with), and
//!   tracelake's `X-Tracelake-Billed-Duration-Ms` and
//!   `X-Tracelake-Cold-Start`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tracelake_aws_json::AwsError;
use tracelake_sampler::TraceHeader;
use tracelake_sampler::trace_header::HEADER_NAME;

use super::{Caller, InvokeError, Runtime};
use crate::admin::{ADMIN_KEY_HEADER, AdminKey};

/// The header naming the calling principal.
pub const PRINCIPAL_HEADER: &str = "x-tracelake-principal";
/// The header carrying the request id, as Lambda names it.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

#[derive(Debug, Clone)]
struct ApiState {
    runtime: Runtime,
    admin: AdminKey,
}

/// The invoke route; `admin` vouches for callers that name a principal.
pub fn router(runtime: Runtime, admin: AdminKey) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .with_state(ApiState { runtime, admin })
}

/// The calling principal: named by the header, vouched for by the admin
/// key; anonymous without either.
fn principal(headers: &HeaderMap, admin: &AdminKey) -> Result<String, AwsError> {
    let named = headers.get(PRINCIPAL_HEADER);
    let offers_key = headers.contains_key(ADMIN_KEY_HEADER);
    if named.is_none() && !offers_key {
        return Ok(String::new());
    }
    if !admin.admits(headers) {
        return Err(AwsError {
            status: StatusCode::FORBIDDEN,
            error_type: "AccessDeniedException",
            message: format!(
                "{PRINCIPAL_HEADER} is honoured only with the runtime's admin key ({ADMIN_KEY_HEADER}); the key is missing or wrong"
            ),
        });
    }
    match named.map(|value| value.to_str()) {
        None => Ok(String::new()),
        Some(Ok(principal)) => Ok(principal.to_string()),
        Some(Err(_)) => Err(AwsError {
            status: StatusCode::BAD_REQUEST,
            error_type: "InvalidParameterValueException",
            message: format!("{PRINCIPAL_HEADER} is not visible ASCII"),
        }),
    }
}

fn refusal(error: &InvokeError) -> Response {
    let (kind, status) = error.kind();
    AwsError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        error_type: kind,
        message: error.message().to_string(),
    }
    .into_response()
}

async fn invoke(
    State(ApiState { runtime, admin }): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let event: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(event) => event,
            Err(error) => {
                return AwsError {
                    status: StatusCode::BAD_REQUEST,
                    error_type: "InvalidRequestContentException",
                    message: format!("Could not parse request body into json: {error}"),
                }
                .into_response();
            }
        }
    };
    let principal = match principal(&headers, &admin) {
        Ok(principal) => principal,
        Err(refusal) => return refusal.into_response(),
    };
    let caller = Caller {
        principal,
        trace: header(HEADER_NAME).and_then(|value| TraceHeader::parse(value).ok()),
    };
    match header("x-amz-invocation-type").unwrap_or("RequestResponse") {
        "Event" => match runtime.invoke_async(&name, event, &caller) {
            Ok(request_id) => {
                (StatusCode::ACCEPTED, [(REQUEST_ID_HEADER, request_id)]).into_response()
            }
            Err(error) => refusal(&error),
        },
        "RequestResponse" => match runtime.invoke(&name, event, &caller).await {
            Err(error) => refusal(&error),
            Ok(invocation) => {
                let report = &invocation.report;
                let mut response = match &invocation.result {
                    Ok(value) => axum::Json(value.clone()).into_response(),
                    Err(error) => {
                        let mut response = axum::Json(json!({
                            "errorType": error.kind,
                            "errorMessage": error.message,
                        }))
                        .into_response();
                        response
                            .headers_mut()
                            .insert("x-amz-function-error", "Unhandled".parse().expect("static"));
                        response
                    }
                };
                let headers = response.headers_mut();
                for (key, value) in [
                    ("x-amz-executed-version", "$LATEST".to_string()),
                    (REQUEST_ID_HEADER, report.request_id.clone()),
                    (
                        "x-tracelake-billed-duration-ms",
                        report.billed_ms.to_string(),
                    ),
                    ("x-tracelake-cold-start", report.cold().to_string()),
                ] {
                    if let Ok(value) = value.parse() {
                        headers.insert(key, value);
                    }
                }
                response
            }
        },
        other => AwsError {
            status: StatusCode::BAD_REQUEST,
            error_type: "InvalidParameterValueException",
            message: format!("X-Amz-Invocation-Type {other:?} is not RequestResponse or Event"),
        }
        .into_response(),
    }
}
