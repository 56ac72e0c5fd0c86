//! Write-ahead log: append-only segment files on local disk.
//!
//! ```text
//! segment  {seq:020}.wal = header record*
//! header   "TLWAL\0" + version u16 LE                       (8 bytes)
//! record   payload_len u32 LE + crc32(payload) u32 LE + payload
//! payload  v1: kind u8 + tenant_len u16 LE + tenant
//!              + one Arrow IPC stream holding the batch
//! kind     1 = span batch (span schema)
//!          2 = metric batch (metrics schema), since metric points take
//!              the WAL path; segments holding only kind 1 (every segment
//!              written before) read as they always did
//! ```
//!
//! A kind is added without a new segment version: a reader checks each
//! record's kind and schema, so old segments stay readable. A reader that
//! predates a kind skips those records as undecodable (counted, logged).
//!
//! One writer thread owns the files. Appends that arrive while it is busy
//! are written together and share one fsync (group commit), so `always`
//! costs one fsync per burst, not per request. Replay on open reads every
//! segment in order; a record that is cut short or fails its CRC ends that
//! segment: the file is truncated there and the record counted, never a
//! start-up failure. Segments are deleted once the head they fed has been
//! flushed to blocks ([`Wal::remove_through`]).
//!
//! Replay is idempotent: before deleting segments, the highest one whose
//! records are all in blocks is recorded in `FLUSHED` (written to a
//! temporary file, fsynced and renamed). Replay skips (and deletes) the
//! segments at or below it, so a crash between a flush's blocks becoming
//! durable and its segments' deletion does not store their spans twice.
//! Blocks of a flush that crashed before `FLUSHED` was written carry a
//! higher `wal_through` and are removed at start (`catalog`):
//! their spans come back from the replay instead.

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::config::FsyncPolicy;
use crate::signal::Signal;
use crate::{Result, StorageError};

const MAGIC: &[u8; 6] = b"TLWAL\0";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 8;
const RECORD_HEADER_LEN: usize = 8;
/// A length beyond this is a torn or corrupt record, not an allocation.
const MAX_RECORD_BYTES: usize = 512 * 1024 * 1024;
const KIND_SPAN_BATCH: u8 = 1;
const KIND_METRIC_BATCH: u8 = 2;
/// Appends waiting for the writer; senders wait (backpressure) beyond it.
const QUEUE_DEPTH: usize = 1024;

/// One replayed record.
#[derive(Debug)]
pub struct WalRecord {
    pub segment: u64,
    /// Which head the batch goes back to.
    pub signal: Signal,
    pub tenant: String,
    pub batch: RecordBatch,
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: usize,
    pub records: usize,
    /// Records cut short or failing their CRC; each truncated its segment.
    pub torn_records: usize,
    /// Records whose CRC held but whose payload did not decode (skipped).
    pub undecodable_records: usize,
    pub truncated_bytes: u64,
    /// Segments already flushed to blocks (at or below `FLUSHED`), deleted
    /// instead of replayed.
    pub flushed_segments_removed: usize,
}

enum Command {
    Append {
        payload: Vec<u8>,
        done: oneshot::Sender<Result<u64>>,
    },
    Rotate {
        done: oneshot::Sender<Result<u64>>,
    },
    RemoveThrough {
        segment: u64,
        done: oneshot::Sender<Result<()>>,
    },
    Sync,
}

/// Handle to the WAL writer thread.
#[derive(Debug)]
pub struct Wal {
    sender: mpsc::Sender<Command>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The file holding the highest segment whose records are all in blocks.
const FLUSHED_FILE: &str = "FLUSHED";

/// The highest segment of `dir` recorded as flushed to blocks; 0 when none.
pub(crate) fn read_flushed(dir: &Path) -> Result<u64> {
    let path = dir.join(FLUSHED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            StorageError::Corrupt(format!(
                "{}: not a segment number: {text:?}",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StorageError::WalIo { path, source }),
    }
}

/// The blocks a flush is writing, before it commits (`wal/PENDING`, one
/// `{wal_through} {block path}` line per block, fsynced before the block is
/// put). A collector on a shared store removes, at start, the blocks of a
/// flush that never committed from this file instead of listing the store
/// for them (see `cluster`); the commit removes the file.
pub mod pending {
    use std::io::Write;
    use std::path::Path;

    use super::{io_error, sync_dir};
    use crate::{Result, StorageError};

    const FILE: &str = "PENDING";

    /// Notes that the block at `block_path` of a flush through `wal_through`
    /// is about to be written.
    pub fn append(dir: &Path, wal_through: u64, block_path: &str) -> Result<()> {
        let path = dir.join(FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(format!("{wal_through} {block_path}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io_error(&path))?;
        sync_dir(dir)
    }

    /// The noted blocks, `(wal_through, path)`.
    pub fn read(dir: &Path) -> Result<Vec<(u64, String)>> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StorageError::WalIo { path, source }),
        };
        let mut blocks = Vec::new();
        for line in text.lines() {
            // A torn last line (a crash mid-append) names no block yet written.
            let Some((through, block)) = line.split_once(' ') else {
                continue;
            };
            if let Ok(through) = through.parse() {
                blocks.push((through, block.to_string()));
            }
        }
        Ok(blocks)
    }

    /// Forgets every noted block (after the commit, or after recovery).
    pub fn clear(dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StorageError::WalIo { path, source }),
        }
    }
}

/// Records `segment` as flushed, atomically and durably.
fn write_flushed(dir: &Path, segment: u64) -> Result<()> {
    let path = dir.join(FLUSHED_FILE);
    let temporary = dir.join(format!("{FLUSHED_FILE}.tmp"));
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(format!("{segment}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::WalIo {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// Encodes one span batch of `tenant` as a record payload.
pub fn encode_payload(tenant: &str, batch: &RecordBatch) -> Result<Vec<u8>> {
    encode_signal_payload(Signal::Spans, tenant, batch)
}

fn kind_of(signal: Signal) -> u8 {
    match signal {
        Signal::Spans => KIND_SPAN_BATCH,
        Signal::Metrics => KIND_METRIC_BATCH,
    }
}

/// Encodes one batch of `signal` rows of `tenant` as a record payload.
pub(crate) fn encode_signal_payload(
    signal: Signal,
    tenant: &str,
    batch: &RecordBatch,
) -> Result<Vec<u8>> {
    let tenant_len = u16::try_from(tenant.len()).map_err(|_| {
        StorageError::InvalidTenant(tracelake_model::InvalidTenant(
            tenant.chars().take(140).collect(),
        ))
    })?;
    let mut payload = Vec::with_capacity(batch.get_array_memory_size() / 2 + 64);
    payload.push(kind_of(signal));
    payload.extend_from_slice(&tenant_len.to_le_bytes());
    payload.extend_from_slice(tenant.as_bytes());
    let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(payload)
}

fn decode_payload(payload: &[u8]) -> Result<(Signal, String, Vec<RecordBatch>)> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("wal payload: {what}"));
    let (&kind, rest) = payload.split_first().ok_or_else(|| corrupt("empty"))?;
    let signal = match kind {
        KIND_SPAN_BATCH => Signal::Spans,
        KIND_METRIC_BATCH => Signal::Metrics,
        _ => return Err(corrupt(&format!("unknown record kind {kind}"))),
    };
    let len_bytes: [u8; 2] = rest
        .get(..2)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| corrupt("short tenant length"))?;
    let tenant_len = usize::from(u16::from_le_bytes(len_bytes));
    let tenant_bytes = rest
        .get(2..2 + tenant_len)
        .ok_or_else(|| corrupt("short tenant"))?;
    let tenant = std::str::from_utf8(tenant_bytes)
        .map_err(|_| corrupt("tenant is not utf-8"))?
        .to_string();
    let ipc = &rest[2 + tenant_len..];
    let reader = StreamReader::try_new(Cursor::new(ipc), None)?;
    if reader.schema() != signal.schema() {
        return Err(corrupt(&format!(
            "record kind {kind} holds a batch without its schema"
        )));
    }
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((signal, tenant, batches))
}

/// Reads one segment, truncating it at the first torn record.
fn replay_segment(
    path: &Path,
    segment: u64,
    records: &mut Vec<WalRecord>,
    stats: &mut ReplayStats,
) -> Result<()> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    if bytes.len() < HEADER_LEN {
        // Created but the header never made it: nothing was acked from it.
        stats.torn_records += usize::from(!bytes.is_empty());
        stats.truncated_bytes += bytes.len() as u64;
        std::fs::remove_file(path).map_err(io_error(path))?;
        return Ok(());
    }
    if &bytes[..6] != MAGIC || u16::from_le_bytes([bytes[6], bytes[7]]) != VERSION {
        let aside = path.with_extension("unreadable");
        tracing::error!(path = %path.display(), aside = %aside.display(), "wal segment has a foreign header, moved aside");
        std::fs::rename(path, &aside).map_err(io_error(path))?;
        return Ok(());
    }
    stats.segments += 1;
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        let Some(record) = read_record(&bytes[offset..]) else {
            stats.torn_records += 1;
            stats.truncated_bytes += (bytes.len() - offset) as u64;
            tracing::warn!(path = %path.display(), offset, "torn wal record, truncating segment");
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error(path))?;
            file.set_len(offset as u64).map_err(io_error(path))?;
            file.sync_all().map_err(io_error(path))?;
            break;
        };
        offset += RECORD_HEADER_LEN + record.len();
        match decode_payload(record) {
            Ok((signal, tenant, batches)) => {
                stats.records += 1;
                for batch in batches {
                    records.push(WalRecord {
                        segment,
                        signal,
                        tenant: tenant.clone(),
                        batch,
                    });
                }
            }
            Err(error) => {
                stats.undecodable_records += 1;
                tracing::error!(path = %path.display(), offset, %error, "skipping undecodable wal record");
            }
        }
    }
    Ok(())
}

/// The payload of the record at the start of `bytes`, or `None` when it is
/// cut short or fails its CRC.
fn read_record(bytes: &[u8]) -> Option<&[u8]> {
    let header = bytes.get(..RECORD_HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("wal") {
            continue;
        }
        let Some(segment) = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((segment, path));
    }
    segments.sort();
    Ok(segments)
}

impl Wal {
    /// Replays `dir` (segments after the one recorded in `FLUSHED`; those
    /// at or below it are deleted) and starts a writer on a fresh segment
    /// after both.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        fsync_interval: Duration,
        segment_bytes: u64,
    ) -> Result<(Self, Vec<WalRecord>, ReplayStats)> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut records = Vec::new();
        let mut stats = ReplayStats::default();
        let flushed = read_flushed(dir)?;
        let segments = list_segments(dir)?;
        for (segment, path) in &segments {
            if *segment <= flushed {
                // Its spans are in blocks: the flush crashed before deleting it.
                std::fs::remove_file(path).map_err(io_error(path))?;
                stats.flushed_segments_removed += 1;
                continue;
            }
            replay_segment(path, *segment, &mut records, &mut stats)?;
        }
        let next_segment = segments
            .last()
            .map(|(segment, _)| segment + 1)
            .unwrap_or(1)
            .max(flushed + 1);
        let writer = SegmentWriter::create(dir.to_path_buf(), next_segment, policy, segment_bytes)?;
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let mut threads = vec![
            std::thread::Builder::new()
                .name("wal-writer".into())
                .spawn(move || writer.run(receiver))
                .map_err(io_error(dir))?,
        ];
        if policy == FsyncPolicy::Interval {
            let weak = sender.downgrade();
            let ticker = std::thread::Builder::new()
                .name("wal-fsync-ticker".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(fsync_interval);
                        let Some(sender) = weak.upgrade() else { return };
                        if sender.blocking_send(Command::Sync).is_err() {
                            return;
                        }
                    }
                })
                .map_err(io_error(dir))?;
            threads.push(ticker);
        }
        let wal = Self {
            sender,
            threads: Mutex::new(threads),
        };
        Ok((wal, records, stats))
    }

    /// Sends one command to the writer thread and waits for its answer.
    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(command(done))
            .await
            .map_err(|_| StorageError::WalClosed)?;
        wait.await.map_err(|_| StorageError::WalClosed)?
    }

    /// Appends one record; returns the segment it went to once it is
    /// durable per the fsync policy.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64> {
        self.request(|done| Command::Append { payload, done }).await
    }

    /// Closes the current segment (fsynced) and starts the next; returns the
    /// closed segment. Every record acked before the call is in a segment
    /// at or below the one returned.
    pub async fn rotate(&self) -> Result<u64> {
        self.request(|done| Command::Rotate { done }).await
    }

    /// Records the closed segments numbered `segment` and below as flushed
    /// (`FLUSHED`), then deletes them. Once this returns, a restart does not
    /// replay them.
    pub async fn remove_through(&self, segment: u64) -> Result<()> {
        self.request(|done| Command::RemoveThrough { segment, done })
            .await
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel stops the writer after it has written what is queued.
        let (closed_sender, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.sender, closed_sender));
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state: the open segment.
struct SegmentWriter {
    dir: PathBuf,
    segment: u64,
    file: File,
    written: u64,
    unsynced: bool,
    /// A write failed part-way: the segment ends in a torn record, and
    /// nothing may be written after it.
    torn: bool,
    policy: FsyncPolicy,
    segment_bytes: u64,
}

type PendingAck = (oneshot::Sender<Result<u64>>, Result<u64>);

impl SegmentWriter {
    fn create(dir: PathBuf, segment: u64, policy: FsyncPolicy, segment_bytes: u64) -> Result<Self> {
        let path = segment_path(&dir, segment);
        // A file already there is an earlier attempt at this same segment
        // that failed (a full disk): it holds no record, so it is rewritten.
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut header = [0u8; HEADER_LEN];
        header[..6].copy_from_slice(MAGIC);
        header[6..].copy_from_slice(&VERSION.to_le_bytes());
        file.write_all(&header).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        sync_dir(&dir)?;
        Ok(Self {
            dir,
            segment,
            file,
            written: HEADER_LEN as u64,
            unsynced: false,
            torn: false,
            policy,
            segment_bytes,
        })
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.segment)
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut pending: Vec<PendingAck> = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut next = Some(first);
            // Take everything already queued: one write burst, one fsync.
            while let Some(command) = next {
                self.handle(command, &mut pending);
                next = if pending.len() < QUEUE_DEPTH {
                    receiver.try_recv().ok()
                } else {
                    None
                };
            }
            self.complete(&mut pending);
        }
        self.complete(&mut pending);
        if self.unsynced {
            let _ = self.file.sync_data();
        }
    }

    fn handle(&mut self, command: Command, pending: &mut Vec<PendingAck>) {
        match command {
            Command::Append { payload, done } => {
                let result = self.write_record(&payload).map(|()| self.segment);
                pending.push((done, result));
                if self.written >= self.segment_bytes {
                    self.complete(pending);
                    if let Err(error) = self.start_next_segment() {
                        tracing::error!(%error, "wal segment rotation failed");
                    }
                }
            }
            Command::Rotate { done } => {
                self.complete(pending);
                let sealed = self.segment;
                let _ = done.send(self.start_next_segment().map(|()| sealed));
            }
            Command::RemoveThrough { segment, done } => {
                let _ = done.send(self.remove_through(segment));
            }
            Command::Sync => {
                if self.unsynced {
                    self.sync();
                }
            }
        }
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<()> {
        if self.torn {
            // Nothing may follow a torn record: a fresh segment first, or
            // no write at all (the disk is still full, say).
            self.start_next_segment()?;
        }
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| (*len as usize) <= MAX_RECORD_BYTES)
            .ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "wal record of {} bytes is too large",
                    payload.len()
                ))
            })?;
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let path = self.path();
        let written = self
            .file
            .write_all(&header)
            .and_then(|()| self.file.write_all(payload));
        if let Err(source) = written {
            // A partial record would hide every later one from replay:
            // continue in a fresh segment.
            tracing::error!(path = %path.display(), %source, "wal write failed");
            self.torn = true;
            if let Err(error) = self.start_next_segment() {
                tracing::error!(%error, "wal segment rotation after a failed write failed");
            }
            return Err(StorageError::WalIo { path, source });
        }
        self.written += (RECORD_HEADER_LEN + payload.len()) as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Makes the pending appends durable per the policy and acks them.
    fn complete(&mut self, pending: &mut Vec<PendingAck>) {
        if pending.is_empty() {
            return;
        }
        let must_sync = match self.policy {
            FsyncPolicy::Always => self.unsynced,
            FsyncPolicy::Interval => false,
        };
        let sync_error = if must_sync { self.sync() } else { None };
        for (done, result) in pending.drain(..) {
            let result = match (&sync_error, result) {
                (Some(message), Ok(_)) => Err(StorageError::WalIo {
                    path: self.path(),
                    source: std::io::Error::other(message.clone()),
                }),
                (_, result) => result,
            };
            let _ = done.send(result);
        }
    }

    /// fsyncs the open segment; returns the error text on failure.
    fn sync(&mut self) -> Option<String> {
        match self.file.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                None
            }
            Err(error) => {
                tracing::error!(path = %self.path().display(), %error, "wal fsync failed");
                Some(error.to_string())
            }
        }
    }

    fn start_next_segment(&mut self) -> Result<()> {
        if self.unsynced {
            self.file.sync_data().map_err(io_error(&self.path()))?;
        }
        let next = Self::create(
            self.dir.clone(),
            self.segment + 1,
            self.policy,
            self.segment_bytes,
        )?;
        *self = next;
        Ok(())
    }

    fn remove_through(&mut self, segment: u64) -> Result<()> {
        let segment = segment.min(self.segment.saturating_sub(1));
        if segment > read_flushed(&self.dir)? {
            write_flushed(&self.dir, segment)?;
        }
        for (number, path) in list_segments(&self.dir)? {
            if number <= segment && number < self.segment {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        sync_dir(&self.dir)
    }
}
