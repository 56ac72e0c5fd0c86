//! OTLP/HTTP `POST /v1/traces` and `POST /v1/metrics` (port 4318).
//!
//! Bodies are protobuf (`application/x-protobuf`) or JSON
//! (`application/json`), optionally gzip (`Content-Encoding: gzip`). The
//! response uses the request's encoding. Errors follow the OTLP/HTTP spec:
//! a `google.rpc.Status` body with 400 (bad body), 413 (over the size limit,
//! compressed or not), 415 (other content types), 503 (storage unavailable,
//! retryable).

use std::io::Read;
use tracelake_routes::{Access, Routes};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tracelake_model::{DEFAULT_TENANT, TENANT_HEADER};

use crate::metrics_ingest::MetricsIngest;
use crate::receiver_stats::Receiver;
use crate::{IngestError, OtlpLimits, Pipeline};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Debug, Clone)]
struct HttpState {
    pipeline: Pipeline,
    metrics: MetricsIngest,
    limits: OtlpLimits,
}

/// The OTLP/HTTP routes.
pub fn router(pipeline: Pipeline, metrics: MetricsIngest, limits: OtlpLimits) -> Router {
    routes(pipeline, metrics, limits).into_router()
}

/// The OTLP/HTTP routes, for `ingest` keys.
pub fn routes(pipeline: Pipeline, metrics: MetricsIngest, limits: OtlpLimits) -> Routes {
    Routes::new()
        .route("/v1/traces", post(export_traces), Access::INGEST)
        .route("/v1/metrics", post(export_metrics), Access::INGEST)
        .layer(DefaultBodyLimit::max(limits.max_message_bytes))
        .with_state(HttpState {
            pipeline,
            metrics,
            limits,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        }
    }
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An OTLP/HTTP error: status + `google.rpc.Status` body.
#[derive(Debug)]
struct OtlpHttpError {
    status: StatusCode,
    grpc_code: tonic::Code,
    message: String,
    encoding: Encoding,
}

impl OtlpHttpError {
    fn new(
        status: StatusCode,
        grpc_code: tonic::Code,
        message: impl Into<String>,
        encoding: Encoding,
    ) -> Self {
        Self {
            status,
            grpc_code,
            message: message.into(),
            encoding,
        }
    }
}

impl IntoResponse for OtlpHttpError {
    fn into_response(self) -> Response {
        let body = RpcStatus {
            code: self.grpc_code as i32,
            message: self.message,
        };
        let bytes = match self.encoding {
            Encoding::Protobuf => body.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&body).unwrap_or_default(),
        };
        let mut response = (self.status, bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.encoding.content_type()),
        );
        // OTLP/HTTP clients retry 429 and 503 after Retry-After.
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// An OTLP/HTTP error response for a request refused before this router
/// saw it (authentication): `status` with a `google.rpc.Status` body in the
/// request's encoding (JSON when it names none this router accepts).
pub fn error_response(
    request_headers: &HeaderMap,
    status: StatusCode,
    grpc_code: tonic::Code,
    message: impl Into<String>,
) -> Response {
    let encoding = request_encoding(request_headers).unwrap_or(Encoding::Json);
    OtlpHttpError::new(status, grpc_code, message, encoding).into_response()
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, OtlpHttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        PROTOBUF | "application/protobuf" => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(OtlpHttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            format!(
                "unsupported content type {content_type:?}: use application/x-protobuf or application/json"
            ),
            Encoding::Json,
        )),
    }
}

/// Undoes `Content-Encoding`, never producing more than `limit` bytes.
fn decode_content(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
    encoding: Encoding,
) -> Result<Bytes, OtlpHttpError> {
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match content_encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut decompressed = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(&body[..]).take(limit as u64 + 1);
            reader.read_to_end(&mut decompressed).map_err(|error| {
                OtlpHttpError::new(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    format!("body is not valid gzip: {error}"),
                    encoding,
                )
            })?;
            if decompressed.len() > limit {
                return Err(OtlpHttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    tonic::Code::ResourceExhausted,
                    format!("decompressed body exceeds the limit of {limit} bytes"),
                    encoding,
                ));
            }
            Ok(Bytes::from(decompressed))
        }
        other => Err(OtlpHttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            format!("unsupported content encoding {other:?}: use gzip or none"),
            encoding,
        )),
    }
}

fn tenant(headers: &HeaderMap, encoding: Encoding) -> Result<String, OtlpHttpError> {
    match headers.get(TENANT_HEADER) {
        None => Ok(DEFAULT_TENANT.to_string()),
        Some(value) => value.to_str().map(str::to_string).map_err(|_| {
            OtlpHttpError::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "x-scope-orgid is not ascii",
                encoding,
            )
        }),
    }
}

/// Reads a request body: content type, encoding, size, `admit` with the
/// decompressed size (its guard is returned), then decoding off the
/// reactor.
async fn read_request<T, G>(
    state: &HttpState,
    headers: &HeaderMap,
    body: Bytes,
    what: &'static str,
    admit: impl FnOnce(&str, usize, Encoding) -> Result<G, OtlpHttpError>,
) -> Result<(String, Encoding, T, G), OtlpHttpError>
where
    T: Message + Default + serde::de::DeserializeOwned + Send + 'static,
{
    let encoding = request_encoding(headers)?;
    let tenant = tenant(headers, encoding)?;
    let limit = state.limits.max_message_bytes;
    let raw = decode_content(headers, body, limit, encoding)?;
    let admitted = admit(&tenant, raw.len(), encoding)?;
    let request = tokio::task::spawn_blocking(move || decode_request::<T>(&raw, encoding, what))
        .await
        .map_err(|error| {
            OtlpHttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                format!("decode task failed: {error}"),
                encoding,
            )
        })??;
    Ok((tenant, encoding, request, admitted))
}

fn ingest_error(error: IngestError, encoding: Encoding) -> OtlpHttpError {
    let (status, code) = match &error {
        IngestError::InvalidTenant(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
        IngestError::Overloaded(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
        ),
        IngestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    };
    let message = match &error {
        IngestError::Internal(detail) => tracelake_routes::internal_error("export failed", detail),
        _ => error.to_string(),
    };
    OtlpHttpError::new(status, code, message, encoding)
}

fn respond<T: Message + serde::Serialize>(response: &T, encoding: Encoding) -> Response {
    let bytes = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(response).unwrap_or_default(),
    };
    ([(header::CONTENT_TYPE, encoding.content_type())], bytes).into_response()
}

async fn export_traces(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpHttpError> {
    let stats = state.pipeline.receiver_stats();
    stats.record_bytes(Receiver::OtlpHttpTraces, body.len());
    // Admitted (or refused) before decoding: shedding load costs no decoding.
    let (tenant, encoding, request, _admitted) = read_request::<ExportTraceServiceRequest, _>(
        &state,
        &headers,
        body,
        "ExportTraceServiceRequest",
        |tenant, bytes, encoding| {
            state.pipeline.admit(tenant, bytes).map_err(|error| {
                stats.record_failure(Receiver::OtlpHttpTraces);
                ingest_error(error, encoding)
            })
        },
    )
    .await?;
    let outcome = state
        .pipeline
        .ingest_otlp(&tenant, request.resource_spans)
        .await
        .map_err(|error| {
            stats.record_failure(Receiver::OtlpHttpTraces);
            ingest_error(error, encoding)
        })?;
    stats.record(
        Receiver::OtlpHttpTraces,
        &tenant,
        outcome.accepted,
        outcome.rejected,
    );
    let response = ExportTraceServiceResponse {
        partial_success: outcome.partial_success(),
    };
    Ok(respond(&response, encoding))
}

async fn export_metrics(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OtlpHttpError> {
    state
        .metrics
        .receiver_stats()
        .record_bytes(Receiver::OtlpHttpMetrics, body.len());
    let (tenant, encoding, request, ()) = read_request::<ExportMetricsServiceRequest, _>(
        &state,
        &headers,
        body,
        "ExportMetricsServiceRequest",
        |_, _, _| Ok(()),
    )
    .await?;
    let stats = state.metrics.receiver_stats();
    let outcome = state
        .metrics
        .ingest(&tenant, request.resource_metrics)
        .await
        .map_err(|error| {
            stats.record_failure(Receiver::OtlpHttpMetrics);
            ingest_error(error, encoding)
        })?;
    stats.record(
        Receiver::OtlpHttpMetrics,
        &tenant,
        outcome.accepted,
        outcome.rejected,
    );
    let response = ExportMetricsServiceResponse {
        partial_success: outcome.partial_success(),
    };
    Ok(respond(&response, encoding))
}

fn decode_request<T: Message + Default + serde::de::DeserializeOwned>(
    raw: &[u8],
    encoding: Encoding,
    what: &str,
) -> Result<T, OtlpHttpError> {
    let invalid = |message: String| {
        OtlpHttpError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            message,
            encoding,
        )
    };
    match encoding {
        Encoding::Protobuf => T::decode(raw)
            .map_err(|error| invalid(format!("body is not an OTLP {what} protobuf: {error}"))),
        Encoding::Json => serde_json::from_slice(raw)
            .map_err(|error| invalid(format!("body is not OTLP JSON: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_429_with_retry_after() {
        let overloaded = IngestError::from_append(tracelake_storage::StorageError::Overloaded {
            what: "spans waiting for a flush",
            used: 10,
            limit: 5,
        });
        let response = ingest_error(overloaded, Encoding::Json).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
