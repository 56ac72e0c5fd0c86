//! OTLP/gRPC `TraceService/Export` (port 4317).
//!
//! gzip in and out, an explicit max message size (over it: tonic answers
//! `OUT_OF_RANGE`/`RESOURCE_EXHAUSTED`), rejected spans in `partial_success`,
//! storage failures as `UNAVAILABLE` so exporters retry.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tracelake_storage::{DEFAULT_TENANT, TENANT_HEADER};

use crate::{IngestError, OtlpLimits, Pipeline};

#[derive(Debug, Clone)]
pub struct OtlpTraceService {
    pipeline: Pipeline,
}

/// The tonic service, ready to add to a server.
pub fn trace_service(
    pipeline: Pipeline,
    limits: OtlpLimits,
) -> TraceServiceServer<OtlpTraceService> {
    TraceServiceServer::new(OtlpTraceService { pipeline })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits.max_message_bytes)
}

fn ingest_error_status(error: IngestError) -> Status {
    match error {
        IngestError::InvalidTenant(error) => Status::invalid_argument(error.to_string()),
        IngestError::Unavailable(error) => Status::unavailable(error.to_string()),
        IngestError::Internal(message) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = match request.metadata().get(TENANT_HEADER) {
            Some(value) => value
                .to_str()
                .map_err(|_| Status::invalid_argument("x-scope-orgid is not ascii"))?
                .to_string(),
            None => DEFAULT_TENANT.to_string(),
        };
        let outcome = self
            .pipeline
            .ingest_otlp(&tenant, request.into_inner().resource_spans)
            .await
            .map_err(ingest_error_status)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: outcome.partial_success(),
        }))
    }
}
