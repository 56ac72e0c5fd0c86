//! `tracelake loadgen`: sends a workload of `--shape` (the reference one by
//! default, [`tracelake_workload`]) to a collector over OTLP gRPC, OTLP
//! HTTP or X-Ray UDP, at a target rate or as fast as it is accepted.
//!
//! Each of `--connections` workers generates its own share of the workload
//! (seed + worker index), encodes a request of `--batch` spans and sends
//! it; a shared token bucket holds the total to `--rate` spans per second.
//! It stops after `--spans` spans or `--duration`. While running it prints
//! a progress line to stderr every second; at the end, a summary (and with
//! `--json`, one JSON line on stdout):
//!
//! - `sent`: spans in requests sent; `acked`: spans the collector accepted
//!   (OTLP: the request succeeded, minus `partial_success.rejected_spans`);
//!   `rejected`: refused spans (partial success, or an error answer such as
//!   429 / `RESOURCE_EXHAUSTED`; with `--retry`, overload and
//!   unavailability answers are resent after a backoff instead and counted
//!   in `retried_requests`); X-Ray UDP has no acknowledgement, so only
//!   `sent` counts there (tracelake's `/metrics` has what it accepted);
//! - the achieved rate, and the latency of acknowledgements (p50, p99,
//!   max) per request;
//! - `otlp_protobuf_bytes`: the OTLP protobuf size of everything generated
//!   (the reference for storage size ratios).
//!
//! With `--pool N` (OTLP only), each worker generates and encodes `N`
//! requests up front and then resends them in turn, the trace ids re-keyed
//! on every send (their last 8 bytes XORed with the round number, at
//! offsets found once), so sending costs a copy instead of generating: for
//! offering load well beyond what the server can take. Replayed spans keep
//! their template's timestamps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use parking_lot::Mutex;
use prost::Message;
use tracelake_model::xray::traces_to_documents;
use tracelake_workload::{Shape, Workload};

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    OtlpGrpc,
    OtlpHttp,
    XrayUdp,
}

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct LoadgenOptions {
    pub(crate) protocol: Protocol,
    pub(crate) endpoint: String,
    pub(crate) spans: Option<u64>,
    pub(crate) duration: Option<Duration>,
    /// Spans per second; `None`: as fast as accepted.
    pub(crate) rate: Option<f64>,
    pub(crate) connections: usize,
    pub(crate) seed: u64,
    pub(crate) shape: Shape,
    pub(crate) trace_spacing_ns: u64,
    /// Spans per request.
    pub(crate) batch: usize,
    pub(crate) json: bool,
    pub(crate) tenant: Option<String>,
    /// API key sent as `Authorization: Bearer` (OTLP).
    pub(crate) api_key: Option<String>,
    /// Resend a request refused as overload or unavailability (gRPC
    /// `RESOURCE_EXHAUSTED`/`UNAVAILABLE`, HTTP 429/503) after a backoff,
    /// as OTLP exporters do, instead of counting its spans rejected.
    pub(crate) retry: bool,
    /// Requests per worker generated once and replayed re-keyed.
    pub(crate) pool: Option<usize>,
}

/// One request as sent: OTLP protobuf bytes, or (X-Ray UDP) the spans to
/// turn into segment documents.
#[derive(Debug, Clone)]
enum Payload {
    Otlp { body: bytes::Bytes, spans: u64 },
    Udp(ExportTraceServiceRequest),
}

impl Payload {
    fn spans(&self) -> u64 {
        match self {
            Self::Otlp { spans, .. } => *spans,
            Self::Udp(request) => span_count(request),
        }
    }

    /// The OTLP protobuf size.
    fn otlp_bytes(&self) -> u64 {
        match self {
            Self::Otlp { body, .. } => body.len() as u64,
            Self::Udp(request) => request.encoded_len() as u64,
        }
    }
}

/// A request encoded once and replayed with fresh trace ids (`--pool`).
struct Template {
    body: Vec<u8>,
    spans: u64,
    /// Where each trace id (of a span or a link) starts in `body`.
    trace_id_offsets: Vec<usize>,
}

impl Template {
    fn new(request: &ExportTraceServiceRequest) -> Self {
        let body = request.encode_to_vec();
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| &scope.spans);
        let trace_ids: std::collections::HashSet<&[u8]> = spans
            .flat_map(|span| {
                std::iter::once(span.trace_id.as_slice())
                    .chain(span.links.iter().map(|link| link.trace_id.as_slice()))
            })
            .filter(|id| id.len() == 16)
            .collect();
        let trace_id_offsets = (0..body.len().saturating_sub(15))
            .filter(|&offset| trace_ids.contains(&body[offset..offset + 16]))
            .collect();
        Self {
            spans: span_count(request),
            body,
            trace_id_offsets,
        }
    }

    /// The body with every trace id's last 8 bytes XORed with `round`
    /// (round 0: as generated).
    fn render(&self, round: u64) -> Payload {
        let mut body = self.body.clone();
        let key = round.to_le_bytes();
        for &offset in &self.trace_id_offsets {
            for (byte, key) in body[offset + 8..offset + 16].iter_mut().zip(key) {
                *byte ^= key;
            }
        }
        Payload::Otlp {
            body: body.into(),
            spans: self.spans,
        }
    }
}

/// Sends pre-encoded `ExportTraceServiceRequest` bytes over gRPC (the
/// generated client would take the message and encode it again).
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

impl tonic::codec::Codec for EncodedCodec {
    type Encode = bytes::Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl tonic::codec::Encoder for EncodedCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for EncodedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A failed request: its message, and whether a client should retry it.
type SendError = (String, bool);

/// Sends of one request with `retry` (backoff 100 ms doubling to 2 s).
const MAX_ATTEMPTS: u32 = 30;

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    /// OTLP protobuf bytes of the requests (the workload's encoded size,
    /// whatever the protocol).
    bytes: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    failed_requests: AtomicU64,
    /// Requests resent after a retryable refusal (`retry`).
    retries: AtomicU64,
}

/// A token bucket of spans shared by the workers.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            // Starts empty: the first request waits for its spans' worth,
            // so no run bursts above `--rate` at the start.
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Waits until `spans` may be sent.
    async fn take(&self, spans: f64) {
        loop {
            let wait = {
                let mut state = self.state.lock();
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
                state.0 = (state.0 + elapsed * self.rate).min(self.rate.max(spans));
                state.1 = now;
                if state.0 >= spans {
                    state.0 -= spans;
                    return;
                }
                (spans - state.0) / self.rate
            };
            tokio::time::sleep(Duration::from_secs_f64(wait.min(1.0))).await;
        }
    }
}

fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len() as u64)
        .sum()
}

/// The daemon's datagram header.
const DAEMON_HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

enum Sender {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http(reqwest::Client, String),
    Udp(tokio::net::UdpSocket, SocketAddr),
}

impl Sender {
    async fn connect(options: &LoadgenOptions) -> anyhow::Result<Self> {
        let with_scheme = |endpoint: &str| {
            if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("http://{endpoint}")
            }
        };
        Ok(match options.protocol {
            Protocol::OtlpGrpc => {
                let channel =
                    tonic::transport::Channel::from_shared(with_scheme(&options.endpoint))
                        .with_context(|| format!("endpoint {}", options.endpoint))?
                        .connect()
                        .await
                        .with_context(|| format!("connecting to {}", options.endpoint))?;
                Self::Grpc(
                    tonic::client::Grpc::new(channel)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20),
                )
            }
            Protocol::OtlpHttp => Self::Http(
                reqwest::Client::new(),
                format!(
                    "{}/v1/traces",
                    with_scheme(&options.endpoint).trim_end_matches('/')
                ),
            ),
            Protocol::XrayUdp => {
                let target: SocketAddr = tokio::net::lookup_host(&options.endpoint)
                    .await
                    .with_context(|| format!("resolving {}", options.endpoint))?
                    .next()
                    .with_context(|| format!("{} resolves to nothing", options.endpoint))?;
                let local = if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                Self::Udp(tokio::net::UdpSocket::bind(local).await?, target)
            }
        })
    }

    /// Sends one request: `(acked, rejected)` spans, or the error.
    async fn send(
        &mut self,
        payload: &Payload,
        tenant: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<(u64, u64), SendError> {
        let authorization = api_key.map(|key| format!("Bearer {key}"));
        let spans = payload.spans();
        match (self, payload) {
            (Self::Grpc(client), Payload::Otlp { body, .. }) => {
                let mut message = tonic::Request::new(body.clone());
                if let Some(tenant) = tenant
                    && let Ok(value) = tenant.parse()
                {
                    message.metadata_mut().insert("x-scope-orgid", value);
                }
                if let Some(value) = authorization
                    .as_deref()
                    .and_then(|value| value.parse().ok())
                {
                    message.metadata_mut().insert("authorization", value);
                }
                let unavailable = |status: tonic::Status| {
                    let retryable = matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    );
                    (
                        format!("{}: {}", status.code(), status.message()),
                        retryable,
                    )
                };
                client
                    .ready()
                    .await
                    .map_err(|error| (error.to_string(), true))?;
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                let response = client
                    .unary(message, path, EncodedCodec)
                    .await
                    .map_err(unavailable)?;
                let rejected = response
                    .into_inner()
                    .partial_success
                    .map_or(0, |partial| partial.rejected_spans.max(0) as u64);
                Ok((spans.saturating_sub(rejected), rejected))
            }
            (Self::Http(client, url), Payload::Otlp { body, .. }) => {
                let mut builder = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone());
                if let Some(tenant) = tenant {
                    builder = builder.header("X-Scope-OrgID", tenant);
                }
                if let Some(authorization) = &authorization {
                    builder = builder.header("authorization", authorization);
                }
                let response = builder
                    .send()
                    .await
                    .map_err(|error| (error.to_string(), false))?;
                if !response.status().is_success() {
                    let retryable = matches!(response.status().as_u16(), 429 | 503);
                    return Err((response.status().to_string(), retryable));
                }
                let body = response
                    .bytes()
                    .await
                    .map_err(|error| (error.to_string(), false))?;
                let rejected = ExportTraceServiceResponse::decode(body)
                    .ok()
                    .and_then(|response| response.partial_success)
                    .map_or(0, |partial| partial.rejected_spans.max(0) as u64);
                Ok((spans.saturating_sub(rejected), rejected))
            }
            (Self::Udp(socket, target), Payload::Udp(request)) => {
                let traces = TracesData {
                    resource_spans: request.resource_spans.clone(),
                };
                let mut datagram = Vec::with_capacity(4096);
                for document in traces_to_documents(&traces) {
                    datagram.clear();
                    datagram.extend_from_slice(DAEMON_HEADER);
                    serde_json::to_writer(&mut datagram, &document)
                        .map_err(|error| (error.to_string(), false))?;
                    socket
                        .send_to(&datagram, *target)
                        .await
                        .map_err(|error| (error.to_string(), false))?;
                }
                // No acknowledgement over UDP.
                Ok((0, 0))
            }
            _ => Err(("payload does not match the protocol".into(), false)),
        }
    }
}

fn percentile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

pub(crate) async fn loadgen(options: LoadgenOptions) -> anyhow::Result<()> {
    if options.spans.is_none() && options.duration.is_none() {
        anyhow::bail!("give --spans N or --duration D");
    }
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?,
    ));
    let pacer = options.rate.map(|rate| Arc::new(Pacer::new(rate)));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    let start_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    for worker in 0..options.connections.max(1) {
        let mut sender = Sender::connect(&options).await?;
        let (counters, latencies, pacer, stop, errors, options) = (
            Arc::clone(&counters),
            Arc::clone(&latencies),
            pacer.clone(),
            Arc::clone(&stop),
            Arc::clone(&errors),
            options.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut workload = Workload::with_shape(
                options.shape,
                options.seed.wrapping_add(worker as u64),
                start_ns,
                options.trace_spacing_ns,
            );
            let mut next_request = || ExportTraceServiceRequest {
                resource_spans: workload.batch(options.batch),
            };
            let templates: Vec<Template> = (0..options.pool.unwrap_or(0))
                .map(|_| Template::new(&next_request()))
                .collect();
            for sent in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let payload = if !templates.is_empty() {
                    let count = templates.len() as u64;
                    templates[(sent % count) as usize].render(sent / count)
                } else if options.protocol == Protocol::XrayUdp {
                    Payload::Udp(next_request())
                } else {
                    let request = next_request();
                    Payload::Otlp {
                        spans: span_count(&request),
                        body: request.encode_to_vec().into(),
                    }
                };
                let spans = payload.spans();
                if let Some(limit) = options.spans {
                    let before = counters.sent.fetch_add(spans, Ordering::Relaxed);
                    if before >= limit {
                        counters.sent.fetch_sub(spans, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                } else {
                    counters.sent.fetch_add(spans, Ordering::Relaxed);
                }
                counters
                    .bytes
                    .fetch_add(payload.otlp_bytes(), Ordering::Relaxed);
                if let Some(pacer) = &pacer {
                    pacer.take(spans as f64).await;
                }
                let mut backoff = Duration::from_millis(100);
                let mut attempts = 1;
                let (outcome, micros) = loop {
                    let sent_at = Instant::now();
                    let outcome = sender
                        .send(
                            &payload,
                            options.tenant.as_deref(),
                            options.api_key.as_deref(),
                        )
                        .await;
                    let micros = sent_at.elapsed().as_micros() as u64;
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        // Up to MAX_ATTEMPTS, even once the run is ending:
                        // an exporter's queue is drained on shutdown too.
                        Err((_, true)) if options.retry && attempts < MAX_ATTEMPTS => {
                            attempts += 1;
                            counters.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                        outcome => break (outcome, micros),
                    }
                };
                match outcome {
                    Ok((acked, rejected)) => {
                        counters.acked.fetch_add(acked, Ordering::Relaxed);
                        counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                        let _ = latencies.lock().record(micros.max(1));
                    }
                    Err((error, _)) => {
                        counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                        counters.rejected.fetch_add(spans, Ordering::Relaxed);
                        let mut errors = errors.lock();
                        if errors.len() < 5 {
                            errors.push(error);
                        }
                    }
                }
            }
        }));
    }
    // Progress, and the duration limit.
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(duration) = options.duration
            && started.elapsed() >= duration
        {
            stop.store(true, Ordering::Relaxed);
        }
        if workers.iter().all(tokio::task::JoinHandle::is_finished) {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let sent = counters.sent.load(Ordering::Relaxed);
            eprint!(
                "\rloadgen: {sent} spans sent ({:.0}/s), {} acked, {} rejected   ",
                sent as f64 / started.elapsed().as_secs_f64(),
                counters.acked.load(Ordering::Relaxed),
                counters.rejected.load(Ordering::Relaxed),
            );
        }
    }
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = latencies.lock();
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = counters.acked.load(Ordering::Relaxed);
    let rejected = counters.rejected.load(Ordering::Relaxed);
    let udp = options.protocol == Protocol::XrayUdp;
    eprintln!(
        "\rloadgen: {sent} spans sent in {elapsed:.2} s ({:.0} spans/s), {} acked, {rejected} rejected, {} requests ({} failed); ack latency p50 {:.2} ms, p99 {:.2} ms{}",
        sent as f64 / elapsed,
        if udp {
            "-".to_string()
        } else {
            acked.to_string()
        },
        counters.requests.load(Ordering::Relaxed),
        counters.failed_requests.load(Ordering::Relaxed),
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
        if udp {
            " (UDP: no acknowledgements)"
        } else {
            ""
        },
    );
    for error in errors.lock().iter() {
        eprintln!("loadgen: error: {error}");
    }
    if options.json {
        let summary = serde_json::json!({
            "protocol": format!("{:?}", options.protocol),
            "sent_spans": sent,
            "otlp_protobuf_bytes": counters.bytes.load(Ordering::Relaxed),
            "acked_spans": if udp { serde_json::Value::Null } else { serde_json::json!(acked) },
            "rejected_spans": rejected,
            "requests": counters.requests.load(Ordering::Relaxed),
            "failed_requests": counters.failed_requests.load(Ordering::Relaxed),
            "retried_requests": counters.retries.load(Ordering::Relaxed),
            "elapsed_s": elapsed,
            "rate_spans_per_s": sent as f64 / elapsed,
            "ack_latency_ms": {
                "p50": percentile_ms(&latencies, 0.5),
                "p99": percentile_ms(&latencies, 0.99),
                "max": latencies.max() as f64 / 1_000.0,
            },
        });
        println!("{summary}");
    }
    Ok(())
}
