//! Hot paths of storage: OTLP -> Arrow conversion, WAL append (both fsync
//! policies), and Parquet block encoding. Also prints the encoded block's
//! bytes per span, the storage-size figure.
//!
//! cargo bench -p tracelake-storage --bench storage

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tracelake_model::otlp::resource_spans_to_batch;
use tracelake_storage::FsyncPolicy;
use tracelake_storage::HeadRows;
use tracelake_storage::internals::{Wal, encode_payload};
use tracelake_storage::internals::{encode_block, encode_head};
use tracelake_workload::samples::sample_resource_spans;

const T0: u64 = 1_767_225_600_000_000_000;

fn traces(
    count: u64,
    spans_per_trace: u64,
) -> Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans> {
    (0..count)
        .map(|seed| sample_resource_spans(seed, spans_per_trace, T0 + seed * 1_000_000))
        .collect()
}

fn convert(c: &mut Criterion) {
    let input = traces(10, 10);
    let mut group = c.benchmark_group("otlp_to_arrow");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100_spans", |b| {
        b.iter(|| resource_spans_to_batch("t", &input).unwrap())
    });
    group.finish();
}

fn wal_append(c: &mut Criterion) {
    let batch = resource_spans_to_batch("t", &traces(10, 10))
        .unwrap()
        .batch
        .unwrap();
    let payload = encode_payload("t", &batch).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("wal_append");
    group.throughput(Throughput::Elements(100));
    group.measurement_time(Duration::from_secs(5));
    for (name, policy) in [
        ("fsync_always_100_spans", FsyncPolicy::Always),
        ("fsync_interval_100_spans", FsyncPolicy::Interval),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) =
            Wal::open(dir.path(), policy, Duration::from_millis(100), 64 << 20).unwrap();
        group.bench_function(name, |b| {
            b.iter_batched(
                || payload.clone(),
                |payload| runtime.block_on(wal.append(payload)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        // Group commit: 16 appends in flight share fsyncs.
        group.throughput(Throughput::Elements(1_600));
        group.bench_function(format!("{name}_x16_concurrent"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let appends = (0..16).map(|_| wal.append(payload.clone()));
                    for result in futures::future::join_all(appends).await {
                        result.unwrap();
                    }
                })
            })
        });
        group.throughput(Throughput::Elements(100));
    }
    group.finish();
}

fn block_write(c: &mut Criterion) {
    let batch = resource_spans_to_batch("t", &traces(1_000, 10))
        .unwrap()
        .batch
        .unwrap();
    let (bytes, meta) = encode_block("t", 0, &batch, 64 * 1024).unwrap();
    eprintln!(
        "parquet block: {} spans, {} bytes, {:.1} bytes/span (fixture spans carry 8 attributes, 1 event)",
        meta.span_count,
        bytes.len(),
        bytes.len() as f64 / meta.span_count as f64
    );
    let mut group = c.benchmark_group("parquet_block_write");
    group.throughput(Throughput::Elements(batch.num_rows() as u64));
    group.sample_size(10);
    group.bench_function("10k_spans", |b| {
        b.iter(|| encode_block("t", 0, &batch, 64 * 1024).unwrap())
    });
    // The reference workload (tracelake_workload), as a flush sees
    // it: many request batches in the head, in arrival order.
    let reference = tracelake_workload::Workload::new(1, 1_767_225_600_000_000_000, 100_000);
    let mut generator = reference;
    let parts: Vec<_> = (0..20)
        .map(|_| {
            tracelake_model::otlp::resource_spans_to_batch("t", &generator.batch(1_000))
                .unwrap()
                .batch
                .unwrap()
        })
        .collect();
    let spans: usize = parts.iter().map(|part| part.num_rows()).sum();
    let head: Vec<HeadRows> = parts.into_iter().map(HeadRows::new).collect();
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function("20k_reference_spans", |b| {
        b.iter(|| encode_head("t", &head, 64 * 1024).unwrap())
    });
    group.finish();
}

criterion_group!(benches, convert, wal_append, block_write);
criterion_main!(benches);
