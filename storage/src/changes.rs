//! The catalog's change log on a shared store: the small manifest that
//! spares queriers a full listing of the bucket at every refresh.
//!
//! ```text
//!  catalog/changes/{ulid}-{node}.json   {"version":"1","added_blocks":[meta paths],
//!                                        "removed_blocks":[parquet paths],
//!                                        "added_derived":[[path,size]],"removed_derived":[...]}
//! ```
//!
//! Every process that changes the set of visible files on a shared store
//! (a collector's flush, a compactor's merge, retention, derived rows)
//! writes one record after the files themselves, named by a fresh ULID. A
//! querier lists only the records after `now - OVERLAP`
//! (`list_with_offset`, S3 `StartAfter`): a record is seen even when its
//! writer's clock is behind or its PUT was slow, as long as it lands
//! within the overlap. It applies each record once; adds are idempotent
//! and a removed block is remembered, so a removal seen before its add
//! still wins. A full listing every `full_listing_interval` (and at start)
//! is the safety net for a record that was never written (a crash right
//! after a flush). Compactors delete records older than [`KEEP`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

const PREFIX: &str = "catalog/changes";

/// How far before now each incremental read starts.
pub(crate) const OVERLAP: Duration = Duration::from_secs(60);

/// How long records are kept.
pub(crate) const KEEP: Duration = Duration::from_secs(60 * 60);

/// One change to the visible files.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Change {
    /// Meta files of new blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_blocks: Vec<String>,
    /// Parquet paths of blocks no longer visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_blocks: Vec<String>,
    /// New derived files, with their sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_derived: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_derived: Vec<String>,
}

impl Change {
    pub(crate) fn is_empty(&self) -> bool {
        self.added_blocks.is_empty()
            && self.removed_blocks.is_empty()
            && self.added_derived.is_empty()
            && self.removed_derived.is_empty()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum ChangeFile {
    #[serde(rename = "1")]
    V1(Change),
}

/// Writes `change` as a new record of `writer` (nothing when empty).
pub(crate) async fn record(
    store: &Arc<dyn ObjectStore>,
    writer: &str,
    change: &Change,
) -> Result<()> {
    if change.is_empty() {
        return Ok(());
    }
    let bytes = serde_json::to_vec(&ChangeFile::V1(change.clone()))
        .map_err(|error| StorageError::Corrupt(format!("catalog change: {error}")))?;
    let key = format!("{PREFIX}/{}-{writer}.json", ulid::Ulid::new());
    store.put(&Path::from(key), PutPayload::from(bytes)).await?;
    Ok(())
}

/// The record's ULID time (unix ms), from its name.
fn record_time_ms(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let id = name.get(..26)?;
    Some(ulid::Ulid::from_string(id).ok()?.timestamp_ms())
}

/// Records named after `since_unix_ms`, oldest first, skipping `seen` keys.
pub(crate) async fn read_since(
    store: &Arc<dyn ObjectStore>,
    since_unix_ms: u64,
    seen: &HashSet<String>,
) -> Result<Vec<(String, Change)>> {
    let offset = Path::from(format!(
        "{PREFIX}/{}",
        ulid::Ulid::from_parts(since_unix_ms, 0)
    ));
    let mut objects: Vec<_> = store
        .list_with_offset(Some(&Path::from(PREFIX)), &offset)
        .try_collect()
        .await?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    let mut changes = Vec::new();
    for object in objects {
        let key = object.location.to_string();
        if seen.contains(&key) {
            continue;
        }
        let bytes = match store.get(&object.location).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(error) => return Err(error.into()),
        };
        match serde_json::from_slice::<ChangeFile>(&bytes) {
            Ok(ChangeFile::V1(change)) => changes.push((key, change)),
            Err(error) => {
                tracing::warn!(record = %key, %error, "unreadable catalog change, ignored (the next full listing covers it)")
            }
        }
    }
    Ok(changes)
}

/// Deletes records named before `before_unix_ms`; returns how many.
pub(crate) async fn prune(store: &Arc<dyn ObjectStore>, before_unix_ms: u64) -> Result<usize> {
    let objects: Vec<_> = store.list(Some(&Path::from(PREFIX))).try_collect().await?;
    let mut pruned = 0;
    for object in objects {
        if record_time_ms(object.location.as_ref()).is_some_and(|time| time < before_unix_ms) {
            match store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => pruned += 1,
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(pruned)
}

/// Whether `key`'s record is older than `before_unix_ms` (for forgetting
/// seen keys once they fall out of the overlap).
pub(crate) fn older_than(key: &str, before_unix_ms: u64) -> bool {
    record_time_ms(key).is_some_and(|time| time < before_unix_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_read_once_from_an_offset_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::local_store(dir.path()).unwrap();
        let change = |path: &str| Change {
            added_blocks: vec![path.to_string()],
            ..Change::default()
        };
        record(&store, "a", &Change::default()).await.unwrap();
        record(&store, "a", &change("x.meta.json")).await.unwrap();
        let now_ms = chrono::Utc::now().timestamp_millis() as u64;
        let all = read_since(&store, now_ms - 60_000, &HashSet::new())
            .await
            .unwrap();
        assert_eq!(all.len(), 1, "empty changes are not written");
        assert_eq!(all[0].1, change("x.meta.json"));
        // From a later offset: nothing; the seen key is skipped.
        assert!(
            read_since(&store, now_ms + 60_000, &HashSet::new())
                .await
                .unwrap()
                .is_empty()
        );
        let seen: HashSet<String> = all.iter().map(|(key, _)| key.clone()).collect();
        record(&store, "b", &change("y.meta.json")).await.unwrap();
        let fresh = read_since(&store, now_ms - 60_000, &seen).await.unwrap();
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].1, change("y.meta.json"));
        assert!(fresh[0].0.ends_with("-b.json"));
        assert!(!older_than(&fresh[0].0, now_ms - 60_000));
        assert_eq!(prune(&store, now_ms + 60_000).await.unwrap(), 2);
        assert!(
            read_since(&store, 0, &HashSet::new())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
