//! Where finished segments go, off the request path.
//!
//! [`UdpEmitter`] sends to the X-Ray daemon port (tracelake's collector
//! listens there) in the daemon's framing, `{"format":"json","version":1}`
//! then a newline then the document, one datagram per document. Emitting
//! never blocks a request: documents go into a bounded queue a background
//! task drains; when the queue is full the document is dropped and
//! counted ([`EmitterStats::dropped`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The daemon's datagram header.
pub const DAEMON_HEADER: &str = "{\"format\":\"json\",\"version\":1}\n";
/// Largest document sent in one datagram (the daemon takes 64 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 62 * 1024;
/// Documents waiting to be sent before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 4_096;

/// Takes finished documents (JSON text, one (sub)segment each).
pub trait SegmentSink: Send + Sync + std::fmt::Debug {
    /// Queues `document`; never blocks.
    fn emit(&self, document: String);

    /// What was sent and dropped so far.
    fn stats(&self) -> EmitterStats;
}

/// Counts of an emitter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmitterStats {
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EmitterStats {
        EmitterStats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Sends documents over UDP to a daemon address.
#[derive(Debug)]
pub struct UdpEmitter {
    queue: mpsc::Sender<String>,
    counters: Arc<Counters>,
}

impl UdpEmitter {
    /// Binds an ephemeral local socket and starts the sending task on the
    /// current runtime.
    pub async fn start(daemon: SocketAddr) -> std::io::Result<Self> {
        let local: SocketAddr = if daemon.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let socket = UdpSocket::bind(local).await?;
        let (queue, mut documents) = mpsc::channel::<String>(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let task_counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut datagram = Vec::with_capacity(MAX_DOCUMENT_BYTES + DAEMON_HEADER.len());
            while let Some(document) = documents.recv().await {
                datagram.clear();
                datagram.extend_from_slice(DAEMON_HEADER.as_bytes());
                datagram.extend_from_slice(document.as_bytes());
                match socket.send_to(&datagram, daemon).await {
                    Ok(_) => task_counters.sent.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        tracing::debug!(%error, "sending a segment failed");
                        task_counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
        Ok(Self { queue, counters })
    }
}

impl SegmentSink for UdpEmitter {
    fn emit(&self, document: String) {
        if self.queue.try_send(document).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> EmitterStats {
        self.counters.snapshot()
    }
}

/// Keeps documents in memory (tests, and the demo's own inspection).
#[derive(Debug, Default)]
pub struct MemorySink {
    documents: Mutex<Vec<String>>,
}

impl MemorySink {
    /// Every document emitted so far, parsed.
    pub fn documents(&self) -> Vec<serde_json::Value> {
        self.documents
            .lock()
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect()
    }
}

impl SegmentSink for MemorySink {
    fn emit(&self, document: String) {
        self.documents.lock().push(document);
    }

    fn stats(&self) -> EmitterStats {
        EmitterStats {
            sent: self.documents.lock().len() as u64,
            ..EmitterStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_carry_the_daemon_header_and_a_full_queue_drops() {
        let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let emitter = UdpEmitter::start(daemon.local_addr().unwrap())
            .await
            .unwrap();
        emitter.emit("{\"name\":\"a\"}".into());
        let mut buffer = vec![0u8; 65_536];
        let (length, _) = daemon.recv_from(&mut buffer).await.unwrap();
        let text = std::str::from_utf8(&buffer[..length]).unwrap();
        assert_eq!(text, format!("{DAEMON_HEADER}{{\"name\":\"a\"}}"));

        // More than the queue holds, emitted at once from this task (the
        // sender cannot run in between on this single-threaded runtime).
        for _ in 0..QUEUE_CAPACITY + 10 {
            emitter.emit("{}".into());
        }
        assert_eq!(emitter.stats().dropped, 10);
    }
}
