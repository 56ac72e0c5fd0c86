//! OTLP metrics ingest through the server path minus the socket: protobuf
//! decode, validation and conversion to `metrics` rows, then storage (WAL
//! append with `fsync = always` and head insert). Requests of 100 points
//! (10 resources, each a monotonic sum and a 10-bucket histogram of 5
//! points), sequential and 16 in flight, as many SDKs exporting would send.
//!
//! cargo bench -p tracelake-collector --bench metrics_ingest

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tracelake_collector::metrics_ingest::MetricsIngest;
use tracelake_collector::receiver_stats::ReceiverStats;
use tracelake_storage::{Storage, StorageConfig, local_store};

const T0: u64 = 1_767_225_600_000_000_000;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// One request of 100 points, its times after `seed`'s.
fn request(seed: u64) -> ExportMetricsServiceRequest {
    let time = T0 + seed * 1_000_000;
    let resource_metrics = (0..10)
        .map(|resource| {
            let points = |kind: &str| -> Vec<Vec<KeyValue>> {
                (0..5)
                    .map(|series| vec![attribute("route", &format!("/{kind}/{series}"))])
                    .collect()
            };
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        attribute("service.name", &format!("service-{resource}")),
                        attribute("host.name", "bench-host"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "requests".into(),
                            data: Some(Data::Sum(Sum {
                                data_points: points("sum")
                                    .into_iter()
                                    .map(|attributes| NumberDataPoint {
                                        attributes,
                                        start_time_unix_nano: T0,
                                        time_unix_nano: time,
                                        value: Some(number_data_point::Value::AsInt(seed as i64)),
                                        ..Default::default()
                                    })
                                    .collect(),
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "request.duration".into(),
                            unit: "ms".into(),
                            data: Some(Data::Histogram(Histogram {
                                data_points: points("histogram")
                                    .into_iter()
                                    .map(|attributes| HistogramDataPoint {
                                        attributes,
                                        start_time_unix_nano: T0,
                                        time_unix_nano: time,
                                        count: 10,
                                        sum: Some(123.0),
                                        bucket_counts: vec![1; 11],
                                        explicit_bounds: (1..=10)
                                            .map(|bound| f64::from(bound) * 10.0)
                                            .collect(),
                                        ..Default::default()
                                    })
                                    .collect(),
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn metrics_ingest(c: &mut Criterion) {
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
    // The server's flusher runs beside the ingest, as in `tracelake serve`.
    let (stop_flusher, flusher_stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher_storage = storage.clone();
    let flusher = runtime.spawn(async move {
        flusher_storage
            .run_flusher(Duration::from_millis(250), async {
                let _ = flusher_stopped.await;
            })
            .await
    });
    let ingest = MetricsIngest::new(
        Arc::new(storage.clone()),
        Arc::new(ReceiverStats::default()),
    );
    let mut next_seed = 0u64;
    let mut encoded_request = move || {
        next_seed += 1;
        request(next_seed).encode_to_vec()
    };
    let one = |ingest: MetricsIngest, encoded: Vec<u8>| async move {
        let request = ExportMetricsServiceRequest::decode(encoded.as_slice()).unwrap();
        loop {
            match ingest.ingest("t", request.resource_metrics.clone()).await {
                Err(tracelake_collector::IngestError::Overloaded(_)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                outcome => {
                    assert_eq!(outcome.unwrap().accepted, 100);
                    break;
                }
            }
        }
    };
    let mut group = c.benchmark_group("otlp_metrics_ingest_fsync_always");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(100));
    group.bench_function("sequential_100_point_requests", |b| {
        b.iter_batched(
            &mut encoded_request,
            |encoded| runtime.block_on(one(ingest.clone(), encoded)),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1_600));
    group.bench_function("16_concurrent_100_point_requests", |b| {
        b.iter_batched(
            || (0..16).map(|_| encoded_request()).collect::<Vec<_>>(),
            |requests| {
                runtime.block_on(async {
                    let tasks: Vec<_> = requests
                        .into_iter()
                        .map(|encoded| tokio::spawn(one(ingest.clone(), encoded)))
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
    let _ = stop_flusher.send(());
    runtime.block_on(flusher).unwrap();
    runtime.block_on(storage.flush()).unwrap();
    let files = walk(&dir.path().join("tenants"));
    eprintln!("after the last flush: {files} files under tenants/");
}

/// Files under `dir`, recursively.
fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}

criterion_group!(benches, metrics_ingest);
criterion_main!(benches);
