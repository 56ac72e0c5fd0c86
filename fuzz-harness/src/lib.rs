//! What each fuzz target does with its input, as plain functions: the
//! cargo-fuzz targets under `fuzz/fuzz_targets` call them (`cd fuzz &&
//! cargo +nightly fuzz run <target>`), and `tests/corpus.rs` replays the
//! checked-in corpus (`fuzz/corpus/{target}`, crashes found included)
//! through them on every test run.
//!
//! Every function takes arbitrary bytes and must neither panic nor hang;
//! where a parse succeeds, it also checks what must then hold (a header
//! printed back parses to itself, accepted spans convert to rows).

use std::sync::{Arc, LazyLock};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracelake_storage::{SpanReader, Storage, StorageConfig, local_store};

/// What a target does with one input.
pub type Harness = fn(&[u8]);

/// The targets, by name (the corpus directory and the cargo-fuzz binary).
pub const TARGETS: &[(&str, Harness)] = &[
    ("xray_document", xray_document),
    ("xray_udp_frame", xray_udp_frame),
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("trace_header", trace_header),
    ("traceql", traceql),
    ("xray_filter", xray_filter),
    ("sql_gate", sql_gate),
];

/// X-Ray segment documents (a segment, a subsegment, or an array of them),
/// parsed and mapped to spans.
pub fn xray_document(data: &[u8]) {
    if let Ok(documents) = tracelake_model::xray::parse_documents(data) {
        for document in &documents {
            let _ = tracelake_model::xray::document_to_spans(document);
        }
    }
}

/// A daemon datagram: the header line checked, then the documents.
pub fn xray_udp_frame(data: &[u8]) {
    if let Ok(body) = tracelake_collector::xray::udp::frame(data) {
        xray_document(body);
    }
}

/// Spans of an OTLP request, converted to span table rows.
fn convert(request: &ExportTraceServiceRequest) {
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum();
    if let Ok(converted) =
        tracelake_model::otlp::resource_spans_to_batch("fuzz", &request.resource_spans)
    {
        assert_eq!(converted.accepted + converted.rejections.len(), spans);
        let rows = converted.batch.map_or(0, |batch| batch.num_rows());
        assert_eq!(rows, converted.accepted);
    }
}

/// An OTLP/gRPC or OTLP/HTTP protobuf `ExportTraceServiceRequest`.
pub fn otlp_protobuf(data: &[u8]) {
    if let Ok(request) = ExportTraceServiceRequest::decode(data) {
        convert(&request);
    }
}

/// An OTLP/HTTP JSON `ExportTraceServiceRequest`.
pub fn otlp_json(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        convert(&request);
    }
}

/// `X-Amzn-Trace-Id`: what parses prints back to a header that parses to
/// the same value.
pub fn trace_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(header) = tracelake_sampler::trace_header::TraceHeader::parse(text) {
        let printed = header.to_string();
        let again = tracelake_sampler::trace_header::TraceHeader::parse(&printed)
            .unwrap_or_else(|error| panic!("{printed:?} does not parse back: {error}"));
        assert_eq!(again, header, "{printed:?}");
    }
}

/// A TraceQL query: parsed, checked, and turned into its candidate plan.
pub fn traceql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checked) = tracelake_query::traceql::prepare(text) {
        let window = tracelake_query::traceql::SearchWindow {
            range_ns: (0, i64::MAX),
            limit: 20,
            pushdown: true,
        };
        let (runtime, reader, _) = &*EMPTY;
        let _ = runtime.block_on(async {
            let context = tracelake_query::session_for_tenant(Arc::clone(reader), "fuzz")?;
            tracelake_query::traceql::candidates(&context, &checked, &window)
                .await?
                .into_optimized_plan()
                .map_err(tracelake_query::QueryError::from)
        });
    }
}

/// An X-Ray filter expression (GetTraceSummaries' `FilterExpression`).
pub fn xray_filter(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tracelake_query::xray_filter::parse(text);
    }
}

/// A storage over an empty data dir, for planning SQL against.
static EMPTY: LazyLock<(
    tokio::runtime::Runtime,
    Arc<dyn SpanReader>,
    tempfile::TempDir,
)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let store = local_store(dir.path()).expect("store");
    let (storage, _) = runtime
        .block_on(Storage::open(config, store))
        .expect("storage");
    (runtime, Arc::new(storage), dir)
});

/// The SQL gate: a statement planned as `/v1/sql` plans it (read-only:
/// DDL, DML and other statements refused). Planning only: executing
/// arbitrary SQL is bounded by the query timeout, not by the fuzzer.
pub fn sql_gate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (runtime, reader, _) = &*EMPTY;
    let Ok(context) = tracelake_query::session_for_tenant(Arc::clone(reader), "fuzz") else {
        return;
    };
    let options = tracelake_query::sql::read_only_options();
    let _ = runtime.block_on(context.sql_with_options(text, options));
}
