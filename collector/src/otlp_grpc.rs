//! OTLP/gRPC `TraceService/Export` and `MetricsService/Export` (port 4317).
//!
//! gzip in and out, an explicit max message size (over it: tonic answers
//! `OUT_OF_RANGE`/`RESOURCE_EXHAUSTED`), rejected spans in `partial_success`,
//! storage failures as `UNAVAILABLE` so exporters retry, overload as
//! `RESOURCE_EXHAUSTED` (checked once tonic has decoded the message, before
//! its spans are converted or stored).

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracelake_model::{DEFAULT_TENANT, TENANT_HEADER};

use crate::metrics_ingest::MetricsIngest;
use crate::receiver_stats::Receiver;
use crate::{IngestError, OtlpLimits, Pipeline};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

#[derive(Debug, Clone)]
pub struct OtlpTraceService {
    pipeline: Pipeline,
}

/// The gRPC methods this receiver serves (the route label of their
/// request metrics).
pub const METHODS: &[&str] = &[
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
];

/// The tonic service, ready to add to a server.
pub fn trace_service(
    pipeline: Pipeline,
    limits: OtlpLimits,
) -> InterceptedService<TraceServiceServer<OtlpTraceService>, CapacityCheck> {
    let server = TraceServiceServer::new(OtlpTraceService {
        pipeline: pipeline.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limits.max_message_bytes);
    InterceptedService::new(server, CapacityCheck { pipeline })
}

/// Refuses an export with `RESOURCE_EXHAUSTED` before its message is
/// decoded while storage is over a limit: under overload, a refusal costs
/// no decoding. (The handler checks again: capacity may run out meanwhile.)
#[derive(Debug, Clone)]
pub struct CapacityCheck {
    pipeline: Pipeline,
}

impl Interceptor for CapacityCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.pipeline.check_capacity().map_err(|error| {
            self.pipeline
                .receiver_stats()
                .record_failure(Receiver::OtlpGrpcTraces);
            ingest_error_status(error)
        })?;
        Ok(request)
    }
}

fn ingest_error_status(error: IngestError) -> Status {
    match error {
        IngestError::InvalidTenant(error) => Status::invalid_argument(error.to_string()),
        IngestError::Unavailable(error) => Status::unavailable(error.to_string()),
        IngestError::Overloaded(error) => Status::resource_exhausted(error.to_string()),
        IngestError::Internal(message) => {
            Status::internal(tracelake_routes::internal_error("export failed", &message))
        }
    }
}

fn tenant<T>(request: &Request<T>) -> Result<String, Status> {
    match request.metadata().get(TENANT_HEADER) {
        Some(value) => Ok(value
            .to_str()
            .map_err(|_| Status::invalid_argument("x-scope-orgid is not ascii"))?
            .to_string()),
        None => Ok(DEFAULT_TENANT.to_string()),
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = tenant(&request)?;
        let stats = self.pipeline.receiver_stats();
        stats.record_bytes(Receiver::OtlpGrpcTraces, request.get_ref().encoded_len());
        let _admitted = self
            .pipeline
            .admit(&tenant, request.get_ref().encoded_len())
            .map_err(|error| {
                stats.record_failure(Receiver::OtlpGrpcTraces);
                ingest_error_status(error)
            })?;
        let outcome = self
            .pipeline
            .ingest_otlp(&tenant, request.into_inner().resource_spans)
            .await
            .map_err(|error| {
                stats.record_failure(Receiver::OtlpGrpcTraces);
                ingest_error_status(error)
            })?;
        stats.record(
            Receiver::OtlpGrpcTraces,
            &tenant,
            outcome.accepted,
            outcome.rejected,
        );
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: outcome.partial_success(),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct OtlpMetricsService {
    ingest: MetricsIngest,
}

/// The metrics tonic service, ready to add to a server.
pub fn metrics_service(
    ingest: MetricsIngest,
    limits: OtlpLimits,
) -> MetricsServiceServer<OtlpMetricsService> {
    MetricsServiceServer::new(OtlpMetricsService { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits.max_message_bytes)
}

#[tonic::async_trait]
impl MetricsService for OtlpMetricsService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let tenant = tenant(&request)?;
        let stats = self.ingest.receiver_stats();
        stats.record_bytes(Receiver::OtlpGrpcMetrics, request.get_ref().encoded_len());
        let outcome = self
            .ingest
            .ingest(&tenant, request.into_inner().resource_metrics)
            .await
            .map_err(|error| {
                stats.record_failure(Receiver::OtlpGrpcMetrics);
                ingest_error_status(error)
            })?;
        stats.record(
            Receiver::OtlpGrpcMetrics,
            &tenant,
            outcome.accepted,
            outcome.rejected,
        );
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: outcome.partial_success(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_resource_exhausted_and_unavailability_unavailable() {
        let overloaded = IngestError::from_append(tracelake_storage::StorageError::Overloaded {
            what: "spans waiting for a flush",
            used: 10,
            limit: 5,
        });
        let status = ingest_error_status(overloaded);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("retry later"));
        let unavailable = IngestError::from_append(tracelake_storage::StorageError::WalClosed);
        assert_eq!(
            ingest_error_status(unavailable).code(),
            tonic::Code::Unavailable
        );
    }
}
