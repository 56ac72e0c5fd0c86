//! Per-tenant settings documents (sampling rules, X-Ray groups) that every
//! tracelake process on one object store reads and changes: a change made
//! through one node is served by every node within the refresh interval,
//! and two changes made at once through two nodes both land.
//!
//! # Why a crate of its own
//!
//! The sampler keeps rules and the query crate keeps groups, and neither
//! may depend on the other (nor the sampler on `storage`). Both need the
//! same thing, so it lives here, on `object_store`, `serde` and `tokio`
//! only, as thin as `tracelake-aws-json`, and each owner supplies its
//! document type ([`Document`]).
//!
//! # Layout
//!
//! ```text
//! tenants/{tenant}/settings/{kind}/rev/{revision:020}.json                 the document at a revision
//! tenants/{tenant}/settings/{kind}/claim/{revision:020}-{unix_ms}-{writer}.json  a writer's claim on it
//! ```
//!
//! The current document is the highest revision. A tenant with no
//! revision yet reads its document from where releases before revisions
//! kept it ([`Document::legacy_path`]: `sampling/rules.json`,
//! `xray/groups.json`), or starts from [`Document::initial`]; its first
//! change writes revision 1 from that, and from then on the old file is no
//! longer read (it is left in place).
//!
//! # Reading
//!
//! Each process caches every tenant's document. A read older than the
//! refresh interval (`cluster.refresh_interval`) lists the tenant's
//! `settings/{kind}/` prefix and fetches the head revision when it moved,
//! so an answer reflects the store as it was at most one refresh interval
//! (plus the duration of one listing) earlier. While one request
//! refreshes, others are answered from the cached copy; when the store
//! cannot be read, the cached copy keeps being served (and a warning
//! logged). A process sees its own changes at once: a write installs the
//! document it wrote. No lock is held across object-store I/O: the cache's
//! mutex guards only the swap of a snapshot.
//!
//! # Writing: claims, then the revision
//!
//! A change is a function of the current document, applied by
//! [`SettingsStore::modify`]:
//!
//! 1. list; the base is the head revision `h`. If a claim above `h` is
//!    younger than [`ABANDONED_AFTER`], another change is under way: wait
//!    and start over. Otherwise the target is one above the highest of `h`
//!    and the (abandoned) claims.
//! 2. apply the change to the base (an unchanged document writes nothing);
//! 3. create the claim `claim/{target}-{now}-{writer}` (a unique name);
//! 4. list again: the writer won only if its claim is the only one at the
//!    target, and no claim or revision above the target and no revision at
//!    it exists. A writer that lost deletes its claim, waits a random
//!    moment and starts over from 1, on the document as it is now;
//! 5. create `rev/{target}` and install it.
//!
//! Two writers at one target: whichever lists second sees the other's
//! claim (each created its claim before listing), so at most one wins; both
//! may lose, and then both retry after random waits. This needs no
//! conditional write: it holds on a store that ignores `If-None-Match`
//! (Garage 2.5, see `tracelake-storage`'s `cluster` module), given
//! read-after-write consistency of puts and listings, which S3 and Garage
//! give. Where the store honours conditional writes, the claim and the
//! revision are created with `PutMode::Create` as well, a second guard.
//!
//! A claim left by a writer that died between steps 3 and 5 holds the
//! tenant's changes back for [`ABANDONED_AFTER`] (then it is skipped). A
//! writer acknowledges only if it got through steps 3 to 5 within
//! [`WRITE_BUDGET`], far below that, so a revision is never acknowledged
//! after another writer gave its claim up for dead (clocks may disagree by
//! less than the difference, as compaction leases also assume).
//!
//! # What callers get
//!
//! Changes are serialized: each is applied to the document every earlier
//! change produced, so two updates of one rule, or two creates of
//! different groups, made at once through two nodes, both land, in some
//! order; a create of a name another node created first is refused as a
//! duplicate, as it would be on one node. A change that did not get
//! through after [`ATTEMPTS`] tries (or within the budget) fails with
//! [`SettingsError::Contended`] and changed nothing; the X-Ray routes
//! answer it as `ThrottledException` (429), which the AWS SDKs retry.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long a writer may take from its claim to its revision and still
/// acknowledge the change.
pub const WRITE_BUDGET: Duration = Duration::from_secs(10);
/// How old a claim without a revision must be before other writers treat
/// its writer as dead and skip it.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// Tries of one change before it fails as contended.
pub const ATTEMPTS: u32 = 10;
/// Revisions kept below the head, so a reader that listed just before a
/// change still finds the head it listed.
const KEPT_REVISIONS: u64 = 4;

/// A per-tenant settings document.
///
/// Its serde form is stored inside each revision; it should carry its own
/// version (`#[serde(tag = "version")]`). A document found at
/// [`Document::legacy_path`] is read with the same `Deserialize`.
pub trait Document:
    Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static
{
    /// Names the document: `tenants/{tenant}/settings/{KIND}/`.
    const KIND: &'static str;

    /// The document of a tenant that has none stored. Made once per
    /// process and tenant and kept until one is stored, so it may hold
    /// times.
    fn initial(tenant: &str) -> Self;

    /// Where the tenant's document was kept before revisions existed.
    fn legacy_path(_tenant: &str) -> Option<Path> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings store: {0}")]
    Store(#[from] object_store::Error),
    #[error("unreadable settings document {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error(
        "the {kind} of tenant {tenant:?} were being changed through another node at the same time and this change did not get through after {attempts} attempts; nothing was changed, retry"
    )]
    Contended {
        kind: &'static str,
        tenant: String,
        attempts: u32,
    },
    #[error(
        "writing the {kind} of tenant {tenant:?} took longer than {WRITE_BUDGET:?}; the change may or may not have been applied, read them again"
    )]
    TooSlow { kind: &'static str, tenant: String },
}

pub type Result<T, E = SettingsError> = std::result::Result<T, E>;

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum RevisionFile<D> {
    #[serde(rename = "1")]
    V1 {
        revision: u64,
        writer: String,
        written_unix_ms: u64,
        document: D,
    },
}

#[derive(Serialize)]
#[serde(tag = "version")]
enum ClaimFile<'a> {
    #[serde(rename = "1")]
    V1 { revision: u64, writer: &'a str },
}

/// A claim, as its name spells it.
#[derive(Debug, Clone)]
struct Claim {
    revision: u64,
    claimed_unix_ms: u64,
    writer: String,
    path: Path,
}

/// What one listing of a tenant's `settings/{kind}/` shows.
#[derive(Debug, Default)]
struct Listing {
    /// Ascending.
    revisions: Vec<u64>,
    claims: Vec<Claim>,
}

impl Listing {
    fn head(&self) -> Option<u64> {
        self.revisions.last().copied()
    }
}

/// Timing knobs; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Timing {
    write_budget: Duration,
    abandoned_after: Duration,
    attempts: u32,
    backoff: Duration,
}

const DEFAULT_TIMING: Timing = Timing {
    write_budget: WRITE_BUDGET,
    abandoned_after: ABANDONED_AFTER,
    attempts: ATTEMPTS,
    backoff: Duration::from_millis(20),
};

#[derive(Debug)]
struct Cached<D> {
    revision: u64,
    document: Arc<D>,
    /// When the listing this copy reflects started.
    fetched_at: Instant,
    refresh_started: Option<Instant>,
}

/// Every tenant's document of one kind, cached over the object store.
#[derive(Debug)]
pub struct SettingsStore<D: Document> {
    store: Arc<dyn ObjectStore>,
    refresh_interval: Duration,
    timing: Timing,
    cache: Mutex<HashMap<String, Cached<D>>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

impl<D: Document> SettingsStore<D> {
    /// A store whose reads are at most `refresh_interval` behind the
    /// object store.
    pub fn new(store: Arc<dyn ObjectStore>, refresh_interval: Duration) -> Self {
        Self {
            store,
            refresh_interval,
            timing: DEFAULT_TIMING,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn prefix(tenant: &str) -> Path {
        Path::from(format!("tenants/{tenant}/settings/{}", D::KIND))
    }

    fn revision_path(tenant: &str, revision: u64) -> Path {
        Path::from(format!(
            "tenants/{tenant}/settings/{}/rev/{revision:020}.json",
            D::KIND
        ))
    }

    fn claim_path(tenant: &str, revision: u64, unix_ms: u64, writer: &str) -> Path {
        Path::from(format!(
            "tenants/{tenant}/settings/{}/claim/{revision:020}-{unix_ms}-{writer}.json",
            D::KIND
        ))
    }

    async fn list(&self, tenant: &str) -> Result<Listing> {
        let prefix = Self::prefix(tenant);
        let objects: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut listing = Listing::default();
        for object in objects {
            let Some(parts) = object.location.prefix_match(&prefix) else {
                continue;
            };
            let parts: Vec<String> = parts.map(|part| part.as_ref().to_string()).collect();
            let [directory, file] = parts.as_slice() else {
                continue;
            };
            let Some(stem) = file.strip_suffix(".json") else {
                continue;
            };
            match directory.as_str() {
                "rev" => {
                    if let Ok(revision) = stem.parse() {
                        listing.revisions.push(revision);
                    }
                }
                "claim" => {
                    let mut fields = stem.splitn(3, '-');
                    let (Some(revision), Some(claimed), Some(writer)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        continue;
                    };
                    let (Ok(revision), Ok(claimed_unix_ms)) = (revision.parse(), claimed.parse())
                    else {
                        continue;
                    };
                    listing.claims.push(Claim {
                        revision,
                        claimed_unix_ms,
                        writer: writer.to_string(),
                        path: object.location.clone(),
                    });
                }
                _ => {}
            }
        }
        listing.revisions.sort_unstable();
        Ok(listing)
    }

    /// The document at `revision`; `None` when it was deleted since the
    /// listing that named it.
    async fn read_revision(&self, tenant: &str, revision: u64) -> Result<Option<D>> {
        let path = Self::revision_path(tenant, revision);
        let bytes = match self.store.get(&path).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        match serde_json::from_slice::<RevisionFile<D>>(&bytes) {
            Ok(RevisionFile::V1 { document, .. }) => Ok(Some(document)),
            Err(error) => Err(SettingsError::Corrupt {
                path: path.to_string(),
                reason: error.to_string(),
            }),
        }
    }

    /// The document a tenant without revisions has: the legacy file's, or
    /// the initial one (`known`'s when this process made it already).
    async fn unrevised(&self, tenant: &str, known: Option<&(u64, Arc<D>)>) -> Result<Arc<D>> {
        if let Some(path) = D::legacy_path(tenant) {
            match self.store.get(&path).await {
                Ok(found) => {
                    let bytes = found.bytes().await?;
                    return serde_json::from_slice::<D>(&bytes)
                        .map(Arc::new)
                        .map_err(|error| SettingsError::Corrupt {
                            path: path.to_string(),
                            reason: error.to_string(),
                        });
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        match known {
            Some((0, document)) => Ok(Arc::clone(document)),
            _ => Ok(Arc::new(D::initial(tenant))),
        }
    }

    /// The document at `listing`'s head, reusing `known` when it is that
    /// revision; `None` when the head was deleted since (list again).
    async fn document_at(
        &self,
        tenant: &str,
        listing: &Listing,
        known: Option<&(u64, Arc<D>)>,
    ) -> Result<Option<(u64, Arc<D>)>> {
        let Some(head) = listing.head() else {
            return Ok(Some((0, self.unrevised(tenant, known).await?)));
        };
        if let Some((revision, document)) = known
            && *revision == head
        {
            return Ok(Some((head, Arc::clone(document))));
        }
        Ok(self
            .read_revision(tenant, head)
            .await?
            .map(|document| (head, Arc::new(document))))
    }

    fn cached(&self, tenant: &str) -> Option<(u64, Arc<D>)> {
        self.cache
            .lock()
            .get(tenant)
            .map(|cached| (cached.revision, Arc::clone(&cached.document)))
    }

    /// Lists and reads the head (a few tries if heads are pruned under it).
    async fn fetch(&self, tenant: &str, known: Option<&(u64, Arc<D>)>) -> Result<(u64, Arc<D>)> {
        for _ in 0..3 {
            let listing = self.list(tenant).await?;
            if let Some(found) = self.document_at(tenant, &listing, known).await? {
                return Ok(found);
            }
        }
        Err(SettingsError::Contended {
            kind: D::KIND,
            tenant: tenant.to_string(),
            attempts: 3,
        })
    }

    /// Puts `(revision, document)` in the cache unless a later revision is
    /// there already; returns what the cache holds.
    fn install(
        &self,
        tenant: &str,
        revision: u64,
        document: Arc<D>,
        fetched_at: Instant,
    ) -> Arc<D> {
        let mut cache = self.cache.lock();
        if let Some(cached) = cache.get_mut(tenant) {
            cached.refresh_started = None;
            if cached.revision > revision {
                return Arc::clone(&cached.document);
            }
        }
        cache.insert(
            tenant.to_string(),
            Cached {
                revision,
                document: Arc::clone(&document),
                fetched_at,
                refresh_started: None,
            },
        );
        document
    }

    /// The tenant's document, at most the refresh interval behind the
    /// store (see the module docs).
    pub async fn read(&self, tenant: &str) -> Result<Arc<D>> {
        let known = {
            let mut cache = self.cache.lock();
            match cache.get_mut(tenant) {
                None => None,
                Some(cached) => {
                    let fresh = cached.fetched_at.elapsed() < self.refresh_interval;
                    let someone_refreshing = cached
                        .refresh_started
                        .is_some_and(|started| started.elapsed() < self.refresh_interval);
                    if fresh || someone_refreshing {
                        return Ok(Arc::clone(&cached.document));
                    }
                    cached.refresh_started = Some(Instant::now());
                    Some((cached.revision, Arc::clone(&cached.document)))
                }
            }
        };
        let started = Instant::now();
        match self.fetch(tenant, known.as_ref()).await {
            Ok((revision, document)) => Ok(self.install(tenant, revision, document, started)),
            Err(error) => {
                let Some((_, document)) = known else {
                    return Err(error);
                };
                tracing::warn!(kind = D::KIND, tenant, %error, "cannot refresh settings; serving the cached copy");
                if let Some(cached) = self.cache.lock().get_mut(tenant) {
                    cached.refresh_started = None;
                    // Try again after another interval, not on every request.
                    cached.fetched_at = started;
                }
                Ok(document)
            }
        }
    }

    /// Applies `change` to the tenant's current document and stores the
    /// result as the next revision (see the module docs); `change` may run
    /// several times, each time on the document as it then is. Its error
    /// ends the change with nothing written; so does a document it left
    /// unchanged.
    pub async fn modify<T, E>(
        &self,
        tenant: &str,
        change: impl Fn(&mut D) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<SettingsError>,
    {
        let timing = self.timing;
        for attempt in 0..timing.attempts {
            if attempt > 0 {
                let doubling = 1u32 << (attempt - 1).min(5);
                let wait = timing.backoff * doubling;
                let jitter = wait.mul_f64(fastrand::f64());
                tokio::time::sleep(wait / 2 + jitter).await;
            }
            match self.try_modify(tenant, &change, timing).await? {
                Attempt::Done(result) => return Ok(result),
                Attempt::Again => continue,
            }
        }
        Err(SettingsError::Contended {
            kind: D::KIND,
            tenant: tenant.to_string(),
            attempts: timing.attempts,
        }
        .into())
    }

    async fn try_modify<T, E>(
        &self,
        tenant: &str,
        change: &impl Fn(&mut D) -> std::result::Result<T, E>,
        timing: Timing,
    ) -> std::result::Result<Attempt<T>, E>
    where
        E: From<SettingsError>,
    {
        let started = Instant::now();
        let listing = self.list(tenant).await?;
        let head = listing.head().unwrap_or(0);
        let now_ms = unix_ms();
        let abandoned_ms = timing.abandoned_after.as_millis() as u64;
        let mut target = head + 1;
        for claim in listing.claims.iter().filter(|claim| claim.revision > head) {
            if now_ms.saturating_sub(claim.claimed_unix_ms) < abandoned_ms {
                // Another writer is between its claim and its revision.
                return Ok(Attempt::Again);
            }
            target = target.max(claim.revision + 1);
        }
        let known = self.cached(tenant);
        let Some((base_revision, base)) =
            self.document_at(tenant, &listing, known.as_ref()).await?
        else {
            return Ok(Attempt::Again);
        };
        let mut document = (*base).clone();
        let result = change(&mut document)?;
        if document == *base {
            self.install(tenant, base_revision, base, started);
            return Ok(Attempt::Done(result));
        }

        let writer = ulid::Ulid::new().to_string();
        let claim = Self::claim_path(tenant, target, now_ms, &writer);
        let claim_file = ClaimFile::V1 {
            revision: target,
            writer: &writer,
        };
        if !self.create(&claim, encode(&claim_file, &claim)?).await? {
            return Ok(Attempt::Again);
        }
        let check = match self.list(tenant).await {
            Ok(check) => check,
            Err(error) => {
                self.withdraw(&claim).await;
                return Err(error.into());
            }
        };
        let alone = check.claims.iter().all(|other| {
            other.revision < target || (other.revision == target && other.writer == writer)
        });
        let passed = check.revisions.iter().all(|revision| *revision < target);
        if !alone || !passed || started.elapsed() > timing.write_budget {
            self.withdraw(&claim).await;
            return Ok(Attempt::Again);
        }

        let revision_path = Self::revision_path(tenant, target);
        let file = RevisionFile::V1 {
            revision: target,
            writer,
            written_unix_ms: unix_ms(),
            document,
        };
        let bytes = encode(&file, &revision_path)?;
        let RevisionFile::V1 { document, .. } = file;
        // An error here leaves the claim: the revision may have been
        // written, so others wait until the claim is abandoned.
        if !self.create(&revision_path, bytes).await? {
            self.withdraw(&claim).await;
            return Ok(Attempt::Again);
        }
        if started.elapsed() > timing.write_budget {
            return Err(SettingsError::TooSlow {
                kind: D::KIND,
                tenant: tenant.to_string(),
            }
            .into());
        }
        self.install(tenant, target, Arc::new(document), started);
        self.prune(tenant, &check, target).await;
        tracing::info!(
            kind = D::KIND,
            tenant,
            revision = target,
            "settings changed"
        );
        Ok(Attempt::Done(result))
    }

    /// Creates `path`; false when it exists (on a store that says so).
    async fn create(&self, path: &Path, bytes: Vec<u8>) -> Result<bool> {
        match self
            .store
            .put_opts(
                path,
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

    async fn withdraw(&self, claim: &Path) {
        if let Err(error) = self.store.delete(claim).await {
            tracing::warn!(%claim, %error, "cannot delete a lost settings claim; it holds changes back until abandoned");
        }
    }

    /// Deletes the claims up to `target` (its revision decides them) and
    /// the revisions well below it; best effort.
    async fn prune(&self, tenant: &str, listing: &Listing, target: u64) {
        let claims = listing
            .claims
            .iter()
            .filter(|claim| claim.revision <= target)
            .map(|claim| claim.path.clone());
        let revisions = listing
            .revisions
            .iter()
            .filter(|revision| **revision + KEPT_REVISIONS < target)
            .map(|revision| Self::revision_path(tenant, *revision));
        for path in claims.chain(revisions) {
            if let Err(error) = self.store.delete(&path).await {
                tracing::debug!(%path, %error, "settings pruning");
            }
        }
    }
}

enum Attempt<T> {
    Done(T),
    Again,
}

fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|error| SettingsError::Corrupt {
        path: path.to_string(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests;
