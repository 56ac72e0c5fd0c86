//! `tracelake import FILE...`: loads traces exported from X-Ray or another
//! backend into the data dir, through the same validation and WAL as live
//! ingest, then flushes them to blocks.
//!
//! Formats, detected per file (and per line for JSON lines):
//! - X-Ray `BatchGetTraces` output (`aws xray batch-get-traces`, boto3's
//!   `batch_get_traces`): `{"Traces": [{"Id", "Segments": [{"Id", "Document"}]}]}`;
//! - X-Ray segment documents: one object, or an array of them;
//! - OTLP JSON: an `ExportTraceServiceRequest` (`{"resourceSpans": [...]}`);
//! - OTLP protobuf: an `ExportTraceServiceRequest` (any file that is not JSON).
//!
//! The server must not be running on the same data dir (the storage lock
//! refuses it); import into a fresh dir and serve it, or stop the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use tracelake_collector::Pipeline;
use tracelake_collector::xray::XrayIngest;
use tracelake_storage::Storage;

use crate::aggregation::Aggregation;

use crate::config::Config;

/// Documents handed to X-Ray ingest at once.
const DOCUMENTS_PER_CHUNK: usize = 500;

/// What one file held and what became of it.
#[derive(Debug, Default)]
struct FileReport {
    accepted_spans: usize,
    rejected: usize,
    /// Rejection reason (without ids) -> how often.
    reasons: BTreeMap<String, usize>,
}

impl FileReport {
    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        *self.reasons.entry(reason).or_default() += 1;
    }
}

/// One unit of work found in a file.
enum Payload {
    Documents(Vec<Bytes>),
    Otlp(ExportTraceServiceRequest),
}

pub(crate) async fn import(config: Config, tenant: &str, files: &[PathBuf]) -> anyhow::Result<()> {
    tracelake_model::validate_tenant(tenant)?;
    let store = crate::roles::block_store(&config, false)?;
    // On an S3 store, import as a collector does: other processes may
    // share the bucket, so nothing of theirs is cleaned up at open and the
    // service-map rows are left to the compactor.
    let shared = config.store_location()? != tracelake_storage::StoreLocation::File;
    let (storage, _) = Storage::open(crate::roles::writer_config(&config, shared)?, store)
        .await
        .context("opening storage")?;
    let aggregation = Aggregation::start(&storage, config.service_graph.aggregate_config());
    let pipeline = Pipeline::new(Arc::clone(&aggregation.writer));
    let xray = XrayIngest::new(pipeline.clone());

    let total_bytes: u64 = files
        .iter()
        .map(|file| std::fs::metadata(file).map(|meta| meta.len()).unwrap_or(0))
        .sum();
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut unreadable = 0;
    let mut totals = FileReport::default();
    for file in files {
        progress.set_message(file.display().to_string());
        let report = match import_file(file, tenant, &pipeline, &xray).await {
            Ok(report) => report,
            Err(error) => {
                progress.suspend(|| eprintln!("{}: {error:#}", file.display()));
                unreadable += 1;
                FileReport::default()
            }
        };
        progress.inc(std::fs::metadata(file).map(|meta| meta.len()).unwrap_or(0));
        progress.suspend(|| print_report(file, &report));
        totals.accepted_spans += report.accepted_spans;
        totals.rejected += report.rejected;
        for (reason, count) in report.reasons {
            *totals.reasons.entry(reason).or_default() += count;
        }
    }
    progress.finish_and_clear();
    drop(xray);
    drop(pipeline);
    aggregation.finish().await;
    let flushed = storage
        .shutdown()
        .await
        .context("flushing imported spans")?;
    println!(
        "imported {} spans from {} files into tenant {tenant} ({} blocks); rejected {}",
        totals.accepted_spans,
        files.len() - unreadable,
        flushed.blocks,
        totals.rejected
    );
    for (reason, count) in &totals.reasons {
        println!("  {count} x {reason}");
    }
    if unreadable > 0 {
        bail!("{unreadable} of {} files could not be read", files.len());
    }
    Ok(())
}

fn print_report(file: &Path, report: &FileReport) {
    println!(
        "{}: {} spans imported, {} rejected",
        file.display(),
        report.accepted_spans,
        report.rejected
    );
}

async fn import_file(
    file: &Path,
    tenant: &str,
    pipeline: &Pipeline,
    xray: &XrayIngest,
) -> anyhow::Result<FileReport> {
    let bytes = std::fs::read(file).context("reading")?;
    let payloads = tokio::task::spawn_blocking(move || parse_file(&bytes)).await??;
    let mut report = FileReport::default();
    for payload in payloads {
        match payload {
            Payload::Documents(documents) => {
                for chunk in documents.chunks(DOCUMENTS_PER_CHUNK) {
                    let outcome = xray.ingest(tenant, chunk.to_vec()).await?;
                    report.accepted_spans += outcome.accepted_spans;
                    for unprocessed in outcome.unprocessed {
                        report.reject(format!(
                            "{}: {}",
                            unprocessed.error_code.error_code(),
                            strip_ids(&unprocessed.message)
                        ));
                    }
                }
            }
            Payload::Otlp(request) => {
                let outcome = pipeline.ingest_otlp(tenant, request.resource_spans).await?;
                report.accepted_spans += outcome.accepted;
                for rejection in outcome.rejections {
                    report.reject(format!("span: {}", rejection.reason));
                }
            }
        }
    }
    Ok(report)
}

/// Reasons are grouped without the ids that make each one unique.
fn strip_ids(message: &str) -> String {
    match message.split_once(": ") {
        Some((prefix, rest))
            if prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            rest.to_string()
        }
        _ => message.to_string(),
    }
}

fn parse_file(bytes: &[u8]) -> anyhow::Result<Vec<Payload>> {
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'[')) {
        let request = ExportTraceServiceRequest::decode(bytes)
            .context("not JSON, and not an OTLP ExportTraceServiceRequest protobuf")?;
        return Ok(vec![Payload::Otlp(request)]);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return Ok(vec![payload_of(value)?]);
    }
    // JSON lines: one export per line.
    let text = std::str::from_utf8(bytes).context("JSON file is not UTF-8")?;
    let mut payloads = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", number + 1))?;
        payloads.push(payload_of(value).with_context(|| format!("line {}", number + 1))?);
    }
    Ok(payloads)
}

fn payload_of(value: Value) -> anyhow::Result<Payload> {
    match &value {
        Value::Object(object) if object.contains_key("Traces") => {
            let traces = object["Traces"]
                .as_array()
                .context("\"Traces\" is not a list")?;
            let mut documents = Vec::new();
            for trace in traces {
                for segment in trace["Segments"].as_array().into_iter().flatten() {
                    let document = segment["Document"]
                        .as_str()
                        .context("a segment has no \"Document\" string")?;
                    documents.push(Bytes::from(document.to_string()));
                }
            }
            Ok(Payload::Documents(documents))
        }
        Value::Object(object)
            if object.contains_key("resourceSpans") || object.contains_key("resource_spans") =>
        {
            let request: ExportTraceServiceRequest = serde_json::from_value(value)
                .context("not an OTLP JSON ExportTraceServiceRequest")?;
            Ok(Payload::Otlp(request))
        }
        Value::Object(object) if object.contains_key("trace_id") || object.contains_key("id") => {
            Ok(Payload::Documents(vec![Bytes::from(value.to_string())]))
        }
        Value::Array(items) => Ok(Payload::Documents(
            items
                .iter()
                .map(|item| Bytes::from(item.to_string()))
                .collect(),
        )),
        _ => bail!(
            "JSON is neither BatchGetTraces output (\"Traces\"), OTLP JSON (\"resourceSpans\") nor X-Ray segment documents"
        ),
    }
}
