//! The X-Ray daemon's UDP protocol: one datagram = the header line
//! `{"format": "json", "version": 1}` + `\n` + one segment document.
//!
//! ```text
//!  socket (large SO_RCVBUF) --recv loop--> frame (header check, no JSON of the body)
//!     |                                      |  body bytes, counted against a byte budget
//!     | drops counted when the budget or     v
//!     | the queue is full           bounded queue --> worker: batches of datagrams
//!                                                      -> XrayIngest (blocking pool) -> WAL
//! ```
//!
//! The receive loop only frames; decoding happens off it, so a burst is
//! absorbed by the socket buffer and the queue instead of being lost while a
//! batch is parsed. UDP has no acknowledgement: what the queue cannot take
//! is dropped and counted, never waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{RejectReason, XrayIngest};
use crate::IngestError;
use crate::prometheus::Labels;
use crate::receiver_stats::Receiver;

/// A datagram can be at most this large (IPv4 UDP payload limit is 65,507).
pub const MAX_DATAGRAM_BYTES: usize = 64 * 1024;
/// The most datagrams one batch hands to the decoder.
const BATCH_DATAGRAMS: usize = 2048;

/// Why a datagram was not framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No `\n` after the header.
    NoNewline,
    /// The header is not `{"format": "json", "version": 1}`.
    BadHeader,
    /// Nothing after the header.
    EmptyBody,
}

impl FrameError {
    pub const ALL: [FrameError; 3] = [Self::NoNewline, Self::BadHeader, Self::EmptyBody];

    pub fn label(self) -> &'static str {
        match self {
            Self::NoNewline => "no_header",
            Self::BadHeader => "bad_header",
            Self::EmptyBody => "empty_body",
        }
    }
}

#[derive(serde::Deserialize)]
struct Header {
    format: String,
    version: i64,
}

/// Splits a datagram into its body after checking the header as the daemon
/// does: a JSON object whose `format` is `json` and `version` is 1.
pub fn frame(datagram: &[u8]) -> Result<&[u8], FrameError> {
    let newline = datagram
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or(FrameError::NoNewline)?;
    let (header, rest) = datagram.split_at(newline);
    let header: Header = serde_json::from_slice(header).map_err(|_| FrameError::BadHeader)?;
    if header.format != "json" || header.version != 1 {
        return Err(FrameError::BadHeader);
    }
    let body = &rest[1..];
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(FrameError::EmptyBody);
    }
    Ok(body)
}

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Tenant the datagrams are stored under (the protocol names none).
    pub tenant: String,
    /// Bytes of datagram bodies waiting to be decoded before new ones are
    /// dropped.
    pub queue_bytes: usize,
    /// `SO_RCVBUF` asked of the kernel (it may grant less).
    pub socket_receive_buffer: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            tenant: tracelake_model::DEFAULT_TENANT.to_string(),
            queue_bytes: 64 * 1024 * 1024,
            socket_receive_buffer: 16 * 1024 * 1024,
        }
    }
}

/// Counters of the UDP receiver, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct UdpStats {
    pub datagrams_received: AtomicU64,
    /// Framing failures, by [`FrameError::ALL`] position.
    frame_errors: [AtomicU64; 3],
    /// Document rejections, by [`RejectReason::ALL`] position.
    document_errors: [AtomicU64; 4],
    /// Datagrams dropped because the queue was full.
    pub datagrams_dropped: AtomicU64,
    pub documents_accepted: AtomicU64,
    pub spans_accepted: AtomicU64,
    /// Batches that storage could not take (every datagram in them lost).
    pub storage_failures: AtomicU64,
    /// Datagrams in batches refused because storage was over its memory
    /// limit (load shed; also counted in `storage_failures`).
    pub datagrams_shed: AtomicU64,
}

impl UdpStats {
    pub fn frame_errors(&self, error: FrameError) -> u64 {
        let position = FrameError::ALL
            .iter()
            .position(|known| *known == error)
            .unwrap_or(0);
        self.frame_errors[position].load(Ordering::Relaxed)
    }

    pub fn document_errors(&self, reason: RejectReason) -> u64 {
        let position = RejectReason::ALL
            .iter()
            .position(|known| *known == reason)
            .unwrap_or(0);
        self.document_errors[position].load(Ordering::Relaxed)
    }

    fn count_frame_error(&self, error: FrameError) {
        if let Some(position) = FrameError::ALL.iter().position(|known| *known == error) {
            self.frame_errors[position].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_document_error(&self, reason: RejectReason) {
        if let Some(position) = RejectReason::ALL.iter().position(|known| *known == reason) {
            self.document_errors[position].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every datagram rejected, for any reason.
    pub fn rejected(&self) -> u64 {
        let framing: u64 = self
            .frame_errors
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum();
        let documents: u64 = self
            .document_errors
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum();
        framing + documents
    }

    /// These counters, for `/metrics`.
    pub fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, samples: &[(Labels<'_>, u64)]| {
            crate::prometheus::encode_counter(encoder, name, help, samples)
        };
        let rejected: Vec<(Labels<'_>, u64)> = FrameError::ALL
            .iter()
            .map(|error| (error.label(), self.frame_errors(*error)))
            .chain(
                RejectReason::ALL
                    .iter()
                    .map(|reason| (reason.label(), self.document_errors(*reason))),
            )
            .map(|(reason, value)| (vec![("reason", reason)], value))
            .collect();
        let plain = |value: u64| [(Vec::new(), value)];
        counter(
            "tracelake_xray_udp_datagrams_received_total",
            "X-Ray daemon datagrams received.",
            &plain(load(&self.datagrams_received)),
        )?;
        counter(
            "tracelake_xray_udp_datagrams_rejected_total",
            "X-Ray datagrams or documents refused, by reason.",
            &rejected,
        )?;
        counter(
            "tracelake_xray_udp_datagrams_dropped_total",
            "X-Ray datagrams dropped because the decode queue was full.",
            &plain(load(&self.datagrams_dropped)),
        )?;
        counter(
            "tracelake_xray_udp_documents_accepted_total",
            "X-Ray documents stored from UDP.",
            &plain(load(&self.documents_accepted)),
        )?;
        counter(
            "tracelake_xray_udp_spans_accepted_total",
            "Spans stored from X-Ray UDP documents.",
            &plain(load(&self.spans_accepted)),
        )?;
        counter(
            "tracelake_xray_udp_storage_failures_total",
            "Batches of X-Ray datagrams storage could not take.",
            &plain(load(&self.storage_failures)),
        )?;
        counter(
            "tracelake_xray_udp_datagrams_shed_total",
            "X-Ray datagrams dropped because storage was over its memory limit.",
            &plain(load(&self.datagrams_shed)),
        )?;
        Ok(())
    }
}

/// Binds `address` with a large receive buffer.
pub fn bind(address: SocketAddr, receive_buffer: usize) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(receive_buffer) {
        tracing::warn!(%error, receive_buffer, "could not enlarge the X-Ray UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    let granted = socket.recv_buffer_size().unwrap_or_default();
    tracing::debug!(asked = receive_buffer, granted, "x-ray udp receive buffer");
    UdpSocket::from_std(socket.into())
}

struct Datagram {
    body: Bytes,
    /// Returned to the byte budget when the datagram is decoded.
    _budget: OwnedSemaphorePermit,
}

/// Receives datagrams until `shutdown` resolves, then decodes and stores
/// what is queued and returns.
pub async fn run(
    socket: UdpSocket,
    ingest: XrayIngest,
    config: UdpConfig,
    stats: Arc<UdpStats>,
    shutdown: impl Future<Output = ()>,
) {
    let budget_bytes = config.queue_bytes.max(MAX_DATAGRAM_BYTES);
    let budget = Arc::new(Semaphore::new(budget_bytes));
    // Every queued datagram holds at least one permit, so the byte budget
    // also bounds the queue length.
    let (sender, receiver) = mpsc::channel::<Datagram>(budget_bytes / 64 + 1);
    let receivers = Arc::clone(ingest.receiver_stats());
    let worker = tokio::spawn(decode_worker(
        receiver,
        ingest,
        config.tenant.clone(),
        Arc::clone(&stats),
    ));
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    tokio::pin!(shutdown);
    loop {
        let length = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok((length, _peer)) => length,
                Err(error) => {
                    // ICMP errors and the like: not fatal for a UDP server.
                    tracing::debug!(%error, "x-ray udp receive error");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
        receivers.record_bytes(Receiver::XrayUdp, length);
        let body = match frame(&buffer[..length]) {
            Ok(body) => body,
            Err(error) => {
                stats.count_frame_error(error);
                continue;
            }
        };
        let permits = u32::try_from(body.len().max(1)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&budget).try_acquire_many_owned(permits) else {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let datagram = Datagram {
            body: Bytes::copy_from_slice(body),
            _budget: permit,
        };
        if sender.try_send(datagram).is_err() {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(sender);
    if let Err(error) = worker.await {
        tracing::error!(%error, "x-ray udp decode worker failed");
    }
}

async fn decode_worker(
    mut receiver: mpsc::Receiver<Datagram>,
    ingest: XrayIngest,
    tenant: String,
    stats: Arc<UdpStats>,
) {
    let receivers = Arc::clone(ingest.receiver_stats());
    let mut batch = Vec::with_capacity(BATCH_DATAGRAMS);
    while receiver.recv_many(&mut batch, BATCH_DATAGRAMS).await > 0 {
        let datagrams = std::mem::take(&mut batch);
        let bodies: Vec<Bytes> = datagrams
            .iter()
            .map(|datagram| datagram.body.clone())
            .collect();
        match ingest.ingest(&tenant, bodies).await {
            Ok(outcome) => {
                receivers.record(
                    Receiver::XrayUdp,
                    &tenant,
                    outcome.accepted_documents,
                    outcome.unprocessed.len(),
                );
                stats
                    .documents_accepted
                    .fetch_add(outcome.accepted_documents as u64, Ordering::Relaxed);
                stats
                    .spans_accepted
                    .fetch_add(outcome.accepted_spans as u64, Ordering::Relaxed);
                for unprocessed in &outcome.unprocessed {
                    stats.count_document_error(unprocessed.error_code);
                    tracing::debug!(id = %unprocessed.id, reason = %unprocessed.message, "x-ray udp document refused");
                }
            }
            Err(IngestError::Overloaded(error)) => {
                // Sustained under overload: counted, not logged per batch.
                stats.storage_failures.fetch_add(1, Ordering::Relaxed);
                stats
                    .datagrams_shed
                    .fetch_add(datagrams.len() as u64, Ordering::Relaxed);
                tracing::debug!(%error, datagrams = datagrams.len(), "x-ray udp batch shed");
            }
            Err(error) => {
                receivers.record_failure(Receiver::XrayUdp);
                stats.storage_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, datagrams = datagrams.len(), "x-ray udp batch lost: storage refused it");
            }
        }
        drop(datagrams);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_as_the_daemon_does() {
        type Case<'a> = (&'a [u8], Result<&'a [u8], FrameError>);
        let cases: &[Case<'_>] = &[
            (
                b"{\"format\": \"json\", \"version\": 1}\n{\"id\":1}",
                Ok(b"{\"id\":1}"),
            ),
            (b"{\"format\":\"json\",\"version\":1}\n{}", Ok(b"{}")),
            (
                b"{\"version\":1,\"format\":\"json\",\"extra\":true}\n[]",
                Ok(b"[]"),
            ),
            (
                b"{\"format\":\"json\",\"version\":1}{\"id\":1}",
                Err(FrameError::NoNewline),
            ),
            (b"", Err(FrameError::NoNewline)),
            (
                b"{\"format\":\"json\",\"version\":2}\n{}",
                Err(FrameError::BadHeader),
            ),
            (
                b"{\"format\":\"xml\",\"version\":1}\n{}",
                Err(FrameError::BadHeader),
            ),
            (b"{\"format\":\"json\"}\n{}", Err(FrameError::BadHeader)),
            (b"hello\n{}", Err(FrameError::BadHeader)),
            (b"\xff\xfe\n{}", Err(FrameError::BadHeader)),
            (
                b"{\"format\":\"json\",\"version\":1}\n",
                Err(FrameError::EmptyBody),
            ),
            (
                b"{\"format\":\"json\",\"version\":1}\n  \n",
                Err(FrameError::EmptyBody),
            ),
        ];
        for (datagram, expected) in cases {
            assert_eq!(
                frame(datagram),
                *expected,
                "{}",
                String::from_utf8_lossy(datagram)
            );
        }
    }
}
