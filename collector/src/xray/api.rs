//! The ingest side of the X-Ray API (REST-JSON, all POST), as boto3 and the
//! X-Ray daemon call it:
//!
//! - `/TraceSegments` (PutTraceSegments): `{"TraceSegmentDocuments": ["...", ...]}`
//!   -> `{"UnprocessedTraceSegments": [{"Id", "ErrorCode", "Message"}]}`.
//!   Each entry is the text of a segment, an independent subsegment, or an
//!   array of subsegments; one bad entry does not cost the others.
//! - `/TelemetryRecords` (PutTelemetryRecords): checked and answered `{}`.
//!
//! This router does not look at `Authorization`: SigV4 signatures are
//! verified in front of it, by the server's API-key layer, when keys are
//! configured (without keys they are accepted unverified). The tenant is
//! the `X-Scope-OrgID` header, as on every tracelake API; with keys, that
//! layer has set it to the key's tenant. Errors are shaped as
//! AWS shapes them: the status, `x-amzn-errortype`, and
//! `{"__type", "message"}`, which botocore turns into a `ClientError`.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tracelake_routes::{Access, Routes};

use super::XrayIngest;
use crate::IngestError;
use crate::receiver_stats::Receiver;

pub use tracelake_sampler::aws_error::{AwsError, MAX_REQUEST_BYTES};
use tracelake_sampler::aws_error::{json_body, json_response, tenant_of};

#[derive(Debug, Clone)]
struct ApiState {
    ingest: XrayIngest,
}

/// The `/TraceSegments` and `/TelemetryRecords` routes.
pub fn router(ingest: XrayIngest) -> Router {
    routes(ingest).into_router()
}

/// The `/TraceSegments` and `/TelemetryRecords` routes, for `ingest` keys.
pub fn routes(ingest: XrayIngest) -> Routes {
    Routes::new()
        .route("/TraceSegments", post(put_trace_segments), Access::INGEST)
        .route(
            "/TelemetryRecords",
            post(put_telemetry_records),
            Access::INGEST,
        )
        // Bodies are read with an explicit limit so the error is AWS-shaped.
        .layer(DefaultBodyLimit::disable())
        .with_state(ApiState { ingest })
}

fn ingest_error(error: IngestError) -> AwsError {
    match error {
        IngestError::InvalidTenant(_) => AwsError::invalid_request(error.to_string()),
        IngestError::Unavailable(_) => AwsError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "ServiceUnavailableException",
            message: error.to_string(),
        },
        IngestError::Overloaded(_) => AwsError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error_type: "ThrottledException",
            message: error.to_string(),
        },
        IngestError::Internal(detail) => AwsError::internal(detail),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutTraceSegmentsRequest {
    trace_segment_documents: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutTraceSegmentsResult {
    unprocessed_trace_segments: Vec<UnprocessedTraceSegment>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UnprocessedTraceSegment {
    id: String,
    error_code: String,
    message: String,
}

async fn put_trace_segments(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: PutTraceSegmentsRequest = json_body(body).await?;
    let documents: Vec<bytes::Bytes> = request
        .trace_segment_documents
        .into_iter()
        .map(bytes::Bytes::from)
        .collect();
    let stats = state.ingest.receiver_stats();
    stats.record_bytes(
        Receiver::XrayApi,
        documents.iter().map(bytes::Bytes::len).sum(),
    );
    let outcome = state
        .ingest
        .ingest(&tenant, documents)
        .await
        .map_err(|error| {
            stats.record_failure(Receiver::XrayApi);
            ingest_error(error)
        })?;
    stats.record(
        Receiver::XrayApi,
        &tenant,
        outcome.accepted_documents,
        outcome.unprocessed.len(),
    );
    let unprocessed = outcome
        .unprocessed
        .into_iter()
        .map(|unprocessed| UnprocessedTraceSegment {
            id: unprocessed.id,
            error_code: unprocessed.error_code.error_code().to_string(),
            message: unprocessed.message,
        })
        .collect();
    Ok(json_response(&PutTraceSegmentsResult {
        unprocessed_trace_segments: unprocessed,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutTelemetryRecordsRequest {
    telemetry_records: Vec<serde_json::Value>,
}

async fn put_telemetry_records(headers: HeaderMap, body: Body) -> Result<Response, AwsError> {
    tenant_of(&headers)?;
    let request: PutTelemetryRecordsRequest = json_body(body).await?;
    tracing::debug!(
        records = request.telemetry_records.len(),
        "x-ray telemetry records"
    );
    Ok(json_response(&serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;
    use tracelake_storage::{SpanWriter, Storage, StorageConfig, local_store};

    use crate::Pipeline;

    async fn app(dir: &std::path::Path) -> (Router, Storage) {
        app_with(dir, StorageConfig::default().max_head_bytes).await
    }

    async fn app_with(dir: &std::path::Path, max_head_bytes: u64) -> (Router, Storage) {
        let config = StorageConfig {
            data_dir: dir.to_path_buf(),
            max_head_bytes,
            ..Default::default()
        };
        let (storage, _) = Storage::open(config, local_store(dir).unwrap())
            .await
            .unwrap();
        let writer: Arc<dyn SpanWriter> = Arc::new(storage.clone());
        (router(XrayIngest::new(Pipeline::new(writer))), storage)
    }

    async fn post_json(
        app: &Router,
        path: &str,
        body: &str,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app
            .clone()
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20261129/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=abc")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn put_trace_segments_reports_each_bad_document() {
        let dir = tempfile::tempdir().unwrap();
        let (app, storage) = app(dir.path()).await;
        let good = r#"{"id":"70de5b6f19ff9a0a","name":"shop","trace_id":"1-581cf771-a006649127e371903a2de979","start_time":1764424242.1,"end_time":1764424242.2}"#;
        let bad_trace = r#"{"id":"1111111111111111","name":"shop","trace_id":"nope","start_time":1764424242.1,"end_time":1764424242.2}"#;
        let request = serde_json::json!({"TraceSegmentDocuments": [good, bad_trace, "{not json", "x".repeat(70_000)]});
        let (status, _, body) = post_json(&app, "/TraceSegments", &request.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let unprocessed = body["UnprocessedTraceSegments"].as_array().unwrap();
        assert_eq!(unprocessed.len(), 3, "{body}");
        assert_eq!(unprocessed[0]["Id"], "1111111111111111");
        assert_eq!(unprocessed[0]["ErrorCode"], "InvalidDocument");
        assert!(
            unprocessed[0]["Message"]
                .as_str()
                .unwrap()
                .contains("trace_id")
        );
        let codes: Vec<&str> = unprocessed
            .iter()
            .map(|entry| entry["ErrorCode"].as_str().unwrap())
            .collect();
        assert!(
            codes.contains(&"MalformedDocument") && codes.contains(&"DocumentTooLarge"),
            "{codes:?}"
        );
        assert_eq!(storage.stats().appended_spans, 1);
    }

    #[tokio::test]
    async fn over_the_memory_limit_segments_are_throttled_until_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        // One byte: the first accepted segment fills the head.
        let (app, storage) = app_with(dir.path(), 1).await;
        let segment = |id: &str| {
            serde_json::json!({"TraceSegmentDocuments": [format!(
                r#"{{"id":"{id}","name":"shop","trace_id":"1-581cf771-a006649127e371903a2de979","start_time":1764424242.1,"end_time":1764424242.2}}"#
            )]})
            .to_string()
        };
        let (status, _, _) = post_json(&app, "/TraceSegments", &segment("70de5b6f19ff9a0a")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, headers, body) =
            post_json(&app, "/TraceSegments", &segment("70de5b6f19ff9a0b")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(headers["x-amzn-errortype"], "ThrottledException");
        assert!(
            body["message"].as_str().unwrap().contains("retry later"),
            "{body}"
        );
        assert_eq!(storage.stats().appended_spans, 1);
        assert!(storage.stats().refused_appends >= 1);
        // Once flushed, the head has room again.
        storage.flush().await.unwrap();
        let (status, _, _) = post_json(&app, "/TraceSegments", &segment("70de5b6f19ff9a0b")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(storage.stats().appended_spans, 2);
    }

    #[tokio::test]
    async fn errors_are_aws_shaped() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _storage) = app(dir.path()).await;
        for body in ["{", "{}", r#"{"TraceSegmentDocuments": "x"}"#] {
            let (status, headers, json) = post_json(&app, "/TraceSegments", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(headers["x-amzn-errortype"], "InvalidRequestException");
            assert_eq!(json["__type"], "InvalidRequestException");
            assert!(
                json["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("request body"),
                "{json}"
            );
        }
        let (status, _, json) = post_json(
            &app,
            "/TelemetryRecords",
            r#"{"TelemetryRecords": [{"Timestamp": 1}], "Hostname": "h"}"#,
        )
        .await;
        assert_eq!((status, json), (StatusCode::OK, serde_json::json!({})));
        let (status, _, _) = post_json(&app, "/TelemetryRecords", "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let huge = format!(
            "{{\"TraceSegmentDocuments\": [\"{}\"]}}",
            "x".repeat(MAX_REQUEST_BYTES)
        );
        let (status, headers, json) = post_json(&app, "/TraceSegments", &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers["x-amzn-errortype"], "InvalidRequestException");
        assert!(json["message"].as_str().unwrap().contains("larger than"));
    }
}
