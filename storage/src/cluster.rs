//! Several tracelake processes on one object store: who may delete what,
//! which flushes are committed, and which compactor works on a window.
//!
//! ```text
//!  collector A --blocks (writer = A)--+            +--> querier (lists the store,
//!  collector B --blocks (writer = B)--+--> store --+     reads metas, no WAL)
//!      |  nodes/{A,B}/flushed.json    |            +--> compactor (lease per window,
//!      +------------------------------+                 merges committed blocks)
//! ```
//!
//! There is no cluster protocol: every process coordinates through the
//! store alone.
//!
//! - Each collector's blocks name it (`writer`). A collector neither lists
//!   the store nor keeps a catalog: before writing a block it notes it in
//!   its WAL directory (`wal/PENDING`), and at start it deletes the noted
//!   blocks of a flush that never committed (its WAL replays their spans),
//!   recording the removal in the change log (`changes`). After
//!   each commit it publishes its WAL's flushed mark to
//!   `nodes/{node_id}/flushed.json`; a compactor merges a collector's block
//!   only once the mark covers it, so a replay never doubles a span that
//!   compaction already kept.
//! - Compaction of a window (tenant + hour) is claimed per [`Coordination`]:
//!   a lease object when the store honours conditional writes, or a static
//!   split of the windows among the compactors in the config. The store
//!   is probed at start-up ([`conditional_writes_honoured`]): a store that
//!   ignores `If-None-Match` (Garage 2.5 does) would let two compactors
//!   both "win", so the lease mode is refused on it.
//!
//! Leases use create-only writes (`PutMode::Create`, S3 `If-None-Match:
//! *`), never a read-modify-write: a lease is the series of objects
//! `leases/{name}/{epoch:020}.json`, and taking it means creating the next
//! epoch, which exactly one contender can do. An epoch is live until its
//! `expires_unix_ms` (the holder's clock; the TTL is minutes, far above
//! clock skew); release writes a next epoch that is already expired.
//! Epochs are never reused: only epochs below the newest are deleted, and
//! a contender that created an epoch checks by listing that no later one
//! exists (one it read too early could have been deleted).

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

/// How this process shares its store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sharing {
    /// The only process on the store (the embedded default, `--role all`):
    /// start-up cleans up whatever an interrupted flush or compaction left.
    #[default]
    Exclusive,
    /// One of several processes; `node_id` names this one in the blocks it
    /// writes, its committed mark and its leases.
    Shared { node_id: String },
}

impl Sharing {
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Self::Exclusive => None,
            Self::Shared { node_id } => Some(node_id),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum FlushedMarkFile {
    #[serde(rename = "1")]
    V1 { wal_flushed: u64 },
}

fn flushed_mark_path(node_id: &str) -> Path {
    Path::from(format!("nodes/{node_id}/flushed.json"))
}

/// Publishes a collector's WAL flushed mark (see the module docs).
pub(crate) async fn publish_flushed_mark(
    store: &Arc<dyn ObjectStore>,
    node_id: &str,
    wal_flushed: u64,
) -> Result<()> {
    let bytes = serde_json::to_vec(&FlushedMarkFile::V1 { wal_flushed })
        .map_err(|error| StorageError::Corrupt(format!("flushed mark: {error}")))?;
    store
        .put(&flushed_mark_path(node_id), PutPayload::from(bytes))
        .await?;
    Ok(())
}

/// Every collector's published flushed mark, by node id.
pub(crate) async fn read_flushed_marks(
    store: &Arc<dyn ObjectStore>,
) -> Result<std::collections::HashMap<String, u64>> {
    let objects: Vec<_> = store.list(Some(&Path::from("nodes"))).try_collect().await?;
    let mut marks = std::collections::HashMap::new();
    for object in objects {
        let parts: Vec<&str> = object.location.as_ref().split('/').collect();
        let ["nodes", node_id, "flushed.json"] = parts.as_slice() else {
            continue;
        };
        let bytes = store.get(&object.location).await?.bytes().await?;
        match serde_json::from_slice::<FlushedMarkFile>(&bytes) {
            Ok(FlushedMarkFile::V1 { wal_flushed }) => {
                marks.insert((*node_id).to_string(), wal_flushed);
            }
            Err(error) => {
                tracing::warn!(node = node_id, %error, "unreadable flushed mark; that collector's blocks wait")
            }
        }
    }
    Ok(marks)
}

/// Whether the store refuses a second create of one object (S3
/// `If-None-Match: *`, `object_store`'s `PutMode::Create`). Writes a probe
/// object twice under `leases/probe/` and removes it.
pub async fn conditional_writes_honoured(store: &Arc<dyn ObjectStore>) -> Result<bool> {
    let probe = Path::from(format!("leases/probe/{}", ulid::Ulid::new()));
    let create = || PutOptions::from(PutMode::Create);
    store
        .put_opts(&probe, PutPayload::from_static(b"first"), create())
        .await?;
    let second = store
        .put_opts(&probe, PutPayload::from_static(b"second"), create())
        .await;
    let _ = store.delete(&probe).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
        // Stores that cannot express the condition at all.
        Err(object_store::Error::NotImplemented { .. }) => Ok(false),
        Ok(_) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The refusal logged (or returned) when the store ignores conditional
/// writes.
pub const LEASES_REFUSED: &str = "the object store ignores conditional writes (a second PUT with If-None-Match: * overwrote the first): compaction leases would not be exclusive, so lease mode is refused";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum LeaseFile {
    #[serde(rename = "1")]
    V1 {
        holder: String,
        expires_unix_ms: i64,
    },
}

/// Leases on the store, held by `holder` for `ttl` at a time.
#[derive(Debug, Clone)]
pub struct Leases {
    store: Arc<dyn ObjectStore>,
    holder: String,
    ttl: Duration,
}

/// A lease taken by [`Leases::try_acquire`]; valid until `valid_until`
/// (monotonic, from before the create, so a little early).
#[derive(Debug)]
pub struct Lease {
    name: String,
    epoch: u64,
    valid_until: std::time::Instant,
}

impl Lease {
    /// Whether there is still `margin` left: work commits only then.
    pub fn holds_for(&self, margin: Duration) -> bool {
        std::time::Instant::now() + margin < self.valid_until
    }
}

fn now_unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Leases {
    pub fn new(store: Arc<dyn ObjectStore>, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            store,
            holder: holder.into(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn prefix(name: &str) -> Path {
        Path::from(format!("leases/{name}"))
    }

    /// The epochs of `name`'s lease, ascending.
    async fn epochs(&self, name: &str) -> Result<Vec<u64>> {
        let objects: Vec<_> = self
            .store
            .list(Some(&Self::prefix(name)))
            .try_collect()
            .await?;
        let mut epochs: Vec<u64> = objects
            .iter()
            .filter_map(|object| {
                object
                    .location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    fn epoch_path(name: &str, epoch: u64) -> Path {
        Path::from(format!("leases/{name}/{epoch:020}.json"))
    }

    /// Takes `name`'s lease if no one holds it: `None` when another holder's
    /// lease is live or another contender won the race.
    pub async fn try_acquire(&self, name: &str) -> Result<Option<Lease>> {
        let started = std::time::Instant::now();
        let epochs = self.epochs(name).await?;
        let newest = epochs.last().copied();
        if let Some(epoch) = newest {
            let bytes = match self.store.get(&Self::epoch_path(name, epoch)).await {
                Ok(found) => found.bytes().await?,
                // Deleted since the listing: a later epoch exists.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(error.into()),
            };
            let live = match serde_json::from_slice::<LeaseFile>(&bytes) {
                Ok(LeaseFile::V1 {
                    expires_unix_ms, ..
                }) => expires_unix_ms > now_unix_ms(),
                // An unreadable epoch is treated as live until its TTL
                // could have passed: never steal on a parse error.
                Err(_) => true,
            };
            if live {
                return Ok(None);
            }
        }
        let epoch = newest.map_or(1, |epoch| epoch + 1);
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let created = self
            .create(name, epoch, now_unix_ms().saturating_add(ttl_ms))
            .await?;
        if !created {
            return Ok(None);
        }
        // A later epoch means this one was read too late (see module docs).
        if self.epochs(name).await?.last().copied() != Some(epoch) {
            let _ = self.store.delete(&Self::epoch_path(name, epoch)).await;
            return Ok(None);
        }
        for old in epochs {
            let _ = self.store.delete(&Self::epoch_path(name, old)).await;
        }
        tracing::info!(lease = name, epoch, holder = %self.holder, "lease acquired");
        Ok(Some(Lease {
            name: name.to_string(),
            epoch,
            valid_until: started + self.ttl,
        }))
    }

    /// Creates `epoch`; false when it already exists.
    async fn create(&self, name: &str, epoch: u64, expires_unix_ms: i64) -> Result<bool> {
        let file = LeaseFile::V1 {
            holder: self.holder.clone(),
            expires_unix_ms,
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|error| StorageError::Corrupt(format!("lease: {error}")))?;
        match self
            .store
            .put_opts(
                &Self::epoch_path(name, epoch),
                PutPayload::from(bytes),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Gives the lease up at once: the next epoch, already expired.
    pub async fn release(&self, lease: Lease) -> Result<()> {
        tracing::info!(lease = %lease.name, epoch = lease.epoch, holder = %self.holder, "lease released");
        if self.create(&lease.name, lease.epoch + 1, 0).await? {
            let _ = self
                .store
                .delete(&Self::epoch_path(&lease.name, lease.epoch))
                .await;
        }
        Ok(())
    }
}

/// How a compactor claims a window before compacting it.
#[derive(Debug, Clone)]
pub enum Coordination {
    /// The only compactor on the store.
    Alone,
    /// Windows split by a hash of their name: this compactor takes those
    /// whose hash modulo `shards` is `shard` (`[cluster]` in the config).
    Static { shard: u32, shards: u32 },
    /// A lease per window, on a store that honours conditional writes.
    Leases(Leases),
}

/// A claimed window; give it back with [`Coordination::release`].
#[derive(Debug)]
pub enum Claim {
    Owned,
    Leased(Lease),
}

impl Claim {
    /// Whether the claim still holds with `margin` to spare.
    pub fn holds_for(&self, margin: Duration) -> bool {
        match self {
            Self::Owned => true,
            Self::Leased(lease) => lease.holds_for(margin),
        }
    }
}

impl Coordination {
    /// Claims window `name`: `None` when another compactor has it.
    pub async fn claim(&self, name: &str) -> Result<Option<Claim>> {
        match self {
            Self::Alone => Ok(Some(Claim::Owned)),
            Self::Static { shard, shards } => {
                let owner = crc32fast::hash(name.as_bytes()) % (*shards).max(1);
                Ok((owner == *shard).then_some(Claim::Owned))
            }
            Self::Leases(leases) => Ok(leases.try_acquire(name).await?.map(Claim::Leased)),
        }
    }

    pub async fn release(&self, claim: Claim) -> Result<()> {
        match (self, claim) {
            (Self::Leases(leases), Claim::Leased(lease)) => leases.release(lease).await,
            _ => Ok(()),
        }
    }

    /// How long a claim may be worked on before its commit must be skipped.
    pub fn ttl(&self) -> Option<Duration> {
        match self {
            Self::Leases(leases) => Some(leases.ttl()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::local_store(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_release_or_expiry() {
        let (_dir, store) = store();
        assert!(conditional_writes_honoured(&store).await.unwrap());
        let a = Leases::new(Arc::clone(&store), "a", Duration::from_secs(60));
        let b = Leases::new(Arc::clone(&store), "b", Duration::from_secs(60));
        let held = a.try_acquire("compaction/t/1").await.unwrap().unwrap();
        assert!(held.holds_for(Duration::from_secs(30)));
        assert!(b.try_acquire("compaction/t/1").await.unwrap().is_none());
        assert!(a.try_acquire("compaction/t/1").await.unwrap().is_none());
        // Another window is free.
        let other = b.try_acquire("compaction/t/2").await.unwrap().unwrap();
        a.release(held).await.unwrap();
        let taken = b.try_acquire("compaction/t/1").await.unwrap().unwrap();
        assert_eq!(taken.epoch, 3, "epochs are never reused");
        b.release(taken).await.unwrap();
        b.release(other).await.unwrap();
        // An expired lease is taken over without a release.
        let short = Leases::new(Arc::clone(&store), "c", Duration::from_millis(1));
        let _abandoned = short.try_acquire("compaction/t/3").await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(a.try_acquire("compaction/t/3").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn racing_contenders_get_one_lease() {
        let (_dir, store) = store();
        let contenders: Vec<_> = (0..8)
            .map(|index| {
                Leases::new(
                    Arc::clone(&store),
                    format!("c{index}"),
                    Duration::from_secs(60),
                )
            })
            .collect();
        let attempts = contenders
            .iter()
            .map(|leases| leases.try_acquire("compaction/t/9"));
        let won = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|outcome| matches!(outcome, Ok(Some(_))))
            .count();
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn static_shards_split_windows() {
        let names: Vec<String> = (0..64).map(|hour| format!("compaction/t/{hour}")).collect();
        let mut owners = vec![0; names.len()];
        for shard in 0..3 {
            let coordination = Coordination::Static { shard, shards: 3 };
            for (index, name) in names.iter().enumerate() {
                if coordination.claim(name).await.unwrap().is_some() {
                    owners[index] += 1;
                }
            }
        }
        assert!(owners.iter().all(|count| *count == 1));
    }

    #[tokio::test]
    async fn flushed_marks_round_trip() {
        let (_dir, store) = store();
        publish_flushed_mark(&store, "a", 7).await.unwrap();
        publish_flushed_mark(&store, "b", 3).await.unwrap();
        publish_flushed_mark(&store, "a", 9).await.unwrap();
        let marks = read_flushed_marks(&store).await.unwrap();
        assert_eq!(marks.get("a"), Some(&9));
        assert_eq!(marks.get("b"), Some(&3));
    }
}
