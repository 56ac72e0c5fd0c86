//! X-Ray segment documents: decode + validate + map to spans (per core),
//! and that plus the conversion to span table rows, for a document shaped
//! like what aws-xray-sdk for Python sends (segment with annotations,
//! metadata, an HTTP, an AWS and a failing subsegment; about 2 KB).
//!
//! cargo bench -p tracelake-collector --bench xray

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tracelake_model::otlp::resource_spans_to_batch;
use tracelake_model::xray::{SegmentDocument, document_to_spans};

mod common;

use common::sample_document;

fn decode_and_map(bytes: &[u8]) -> ResourceSpans {
    let document = SegmentDocument::from_json(bytes).unwrap();
    document.validate().unwrap();
    let mut mapped = document_to_spans(&document).unwrap();
    let resource = mapped.resource.take().unwrap_or_default();
    mapped.into_resource_spans(resource)
}

fn xray(c: &mut Criterion) {
    let documents: Vec<Vec<u8>> = (0..1000).map(sample_document).collect();
    let mut group = c.benchmark_group("xray_segments");
    group.throughput(Throughput::Elements(documents.len() as u64));
    group.bench_function("decode_validate_map_1000", |b| {
        b.iter(|| {
            documents
                .iter()
                .map(|bytes| decode_and_map(bytes))
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("decode_validate_map_to_rows_1000", |b| {
        b.iter(|| {
            let resource_spans: Vec<ResourceSpans> = documents
                .iter()
                .map(|bytes| decode_and_map(bytes))
                .collect();
            resource_spans_to_batch("t", &resource_spans)
                .unwrap()
                .accepted
        })
    });
    group.finish();
}

criterion_group!(benches, xray);
criterion_main!(benches);
