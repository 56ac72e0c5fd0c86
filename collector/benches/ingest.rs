//! OTLP ingest through the whole server path minus the socket: protobuf
//! decode, validation and conversion, WAL append with `fsync = always`
//! (group commit), head insert. Requests of 100 spans; sequential and 16 in
//! flight, as many exporters would send.
//!
//! cargo bench -p tracelake-collector --bench ingest

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracelake_collector::Pipeline;
use tracelake_storage::{Storage, StorageConfig, local_store};
use tracelake_workload::samples::sample_resource_spans;

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
    // The server's flusher runs beside the ingest, as in `tracelake serve`:
    // without it the head fills (flush.max_head_bytes) and refuses.
    let (stop_flusher, flusher_stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher_storage = storage.clone();
    let flusher = runtime.spawn(async move {
        flusher_storage
            .run_flusher(Duration::from_millis(250), async {
                let _ = flusher_stopped.await;
            })
            .await
    });
    let pipeline = Pipeline::new(Arc::new(storage.clone()));
    // Every request carries new trace and span ids, as real traffic does;
    // building it is setup, not measured.
    let mut next_seed = 0u64;
    let mut encoded_request = move || {
        let request = ExportTraceServiceRequest {
            resource_spans: (0..10)
                .map(|offset| {
                    next_seed += 1;
                    sample_resource_spans(next_seed, 10, T0 + next_seed * 1_000 + offset)
                })
                .collect(),
        };
        request.encode_to_vec()
    };
    let protobuf_bytes_per_span = encoded_request().len() as f64 / 100.0;
    // Refused as overload (the head waits for the flusher): retried after a
    // pause, as exporters do; the pause counts in the measured time.
    let one = |pipeline: Pipeline, encoded: Vec<u8>| async move {
        let request = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
        loop {
            match pipeline
                .ingest_otlp("t", request.resource_spans.clone())
                .await
            {
                Err(tracelake_collector::IngestError::Overloaded(_)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                outcome => break outcome.unwrap(),
            }
        }
    };
    let mut group = c.benchmark_group("otlp_ingest_fsync_always");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(100));
    group.bench_function("sequential_100_span_requests", |b| {
        b.iter_batched(
            &mut encoded_request,
            |encoded| runtime.block_on(one(pipeline.clone(), encoded)),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1_600));
    group.bench_function("16_concurrent_100_span_requests", |b| {
        b.iter_batched(
            || (0..16).map(|_| encoded_request()).collect::<Vec<_>>(),
            |requests| {
                runtime.block_on(async {
                    let tasks: Vec<_> = requests
                        .into_iter()
                        .map(|encoded| tokio::spawn(one(pipeline.clone(), encoded)))
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // What the per-tenant trace-size limit (on by default, 5 MB) adds to a
    // request: to compare with the ingest above.
    let mut accounting = c.benchmark_group("trace_size_accounting");
    accounting.throughput(Throughput::Elements(100));
    let sizes =
        tracelake_collector::limits::TraceSizes::new(tracelake_collector::limits::IngestLimits {
            defaults: tracelake_collector::limits::TenantLimits {
                max_bytes_per_trace: 5_000_000,
                ..Default::default()
            },
            tenants: Default::default(),
        });
    accounting.bench_function("100_span_request", |b| {
        b.iter_batched(
            || ExportTraceServiceRequest::decode(encoded_request().as_slice()).unwrap(),
            |mut request| {
                assert!(sizes.admit("t", &mut request.resource_spans).is_empty());
                request
            },
            BatchSize::SmallInput,
        )
    });
    accounting.finish();
    let _ = stop_flusher.send(());
    runtime.block_on(flusher).unwrap();
    runtime.block_on(storage.flush()).unwrap();
    let stats = storage.stats();
    eprintln!(
        "after the last flush: {} distinct spans in {} blocks, {} bytes, {:.1} bytes/span on disk; OTLP protobuf {:.1} bytes/span",
        stats.appended_spans,
        stats.flushed_blocks,
        stats.flushed_bytes,
        stats.flushed_bytes as f64 / stats.appended_spans.max(1) as f64,
        protobuf_bytes_per_span
    );
}

criterion_group!(benches, ingest);
criterion_main!(benches);
