//! OTLP ingest through the whole server path minus the socket: protobuf
//! decode, validation and conversion, WAL append with `fsync = always`
//! (group commit), head insert. Requests of 100 spans; sequential and 16 in
//! flight, as many exporters would send.
//!
//! cargo bench -p tracelake-collector --bench ingest

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracelake_collector::Pipeline;
use tracelake_storage::testing::sample_resource_spans;
use tracelake_storage::{Storage, StorageConfig, local_store};

const T0: u64 = 1_767_225_600_000_000_000;

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = runtime
        .block_on(Storage::open(config, local_store(dir.path()).unwrap()))
        .unwrap();
    let pipeline = Pipeline::new(Arc::new(storage.clone()));
    let request = ExportTraceServiceRequest {
        resource_spans: (0..10)
            .map(|seed| sample_resource_spans(seed, 10, T0 + seed))
            .collect(),
    };
    let encoded = request.encode_to_vec();
    let one = |pipeline: Pipeline, encoded: &[u8]| {
        let request = ExportTraceServiceRequest::decode(encoded).unwrap();
        async move {
            pipeline
                .ingest_otlp("t", request.resource_spans)
                .await
                .unwrap()
        }
    };
    let mut group = c.benchmark_group("otlp_ingest_fsync_always");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(100));
    group.bench_function("sequential_100_span_requests", |b| {
        b.iter(|| runtime.block_on(one(pipeline.clone(), &encoded)))
    });
    group.throughput(Throughput::Elements(1_600));
    group.bench_function("16_concurrent_100_span_requests", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let requests: Vec<_> = (0..16)
                    .map(|_| tokio::spawn(one(pipeline.clone(), &encoded)))
                    .collect();
                for request in requests {
                    request.await.unwrap();
                }
            })
        })
    });
    group.finish();
    let flushed = runtime.block_on(storage.flush()).unwrap();
    eprintln!(
        "after flush: {} spans in {} blocks, {} bytes, {:.1} bytes/span on disk; OTLP protobuf {:.1} bytes/span",
        flushed.spans,
        flushed.blocks,
        flushed.bytes,
        flushed.bytes as f64 / flushed.spans.max(1) as f64,
        encoded.len() as f64 / 100.0
    );
}

criterion_group!(benches, ingest);
criterion_main!(benches);
