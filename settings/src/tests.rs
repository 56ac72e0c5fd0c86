use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    PutMultipartOptions, PutResult,
};

use super::*;

/// A test document: named counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
enum Counters {
    #[serde(rename = "1")]
    V1 { counts: BTreeMap<String, u64> },
}

impl Counters {
    fn counts(&self) -> &BTreeMap<String, u64> {
        let Counters::V1 { counts } = self;
        counts
    }

    fn bump(&mut self, name: &str) -> u64 {
        let Counters::V1 { counts } = self;
        let count = counts.entry(name.to_string()).or_default();
        *count += 1;
        *count
    }
}

impl Document for Counters {
    const KIND: &'static str = "counters";

    fn initial(_tenant: &str) -> Self {
        Counters::V1 {
            counts: BTreeMap::new(),
        }
    }

    fn legacy_path(tenant: &str) -> Option<Path> {
        Some(Path::from(format!("tenants/{tenant}/old/counters.json")))
    }
}

/// A store that ignores `PutMode::Create` (overwrites, as Garage 2.5
/// does) and takes a random moment over every put and listing, so racing
/// writers interleave.
#[derive(Debug)]
struct IgnoresConditionalWrites(Arc<dyn ObjectStore>);

impl fmt::Display for IgnoresConditionalWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IgnoresConditionalWrites({})", self.0)
    }
}

async fn jitter() {
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
}

#[async_trait]
impl ObjectStore for IgnoresConditionalWrites {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        jitter().await;
        opts.mode = PutMode::Overwrite;
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.0.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = Arc::clone(&self.0);
        let prefix = prefix.cloned();
        Box::pin(
            futures::stream::once(async move {
                jitter().await;
                inner.list(prefix.as_ref())
            })
            .flatten(),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

use futures::StreamExt;

fn stores() -> Vec<(
    &'static str,
    Arc<dyn ObjectStore>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    vec![
        ("in-memory", Arc::new(InMemory::new()), None),
        ("local", Arc::new(local), Some(dir)),
        (
            "ignores conditional writes",
            Arc::new(IgnoresConditionalWrites(Arc::new(InMemory::new()))),
            None,
        ),
    ]
}

fn node(store: &Arc<dyn ObjectStore>, refresh: Duration) -> Arc<SettingsStore<Counters>> {
    let mut settings = SettingsStore::new(Arc::clone(store), refresh);
    // Many racing writers in one test: more tries than a real fleet needs.
    settings.timing.attempts = 40;
    settings.timing.backoff = Duration::from_millis(5);
    Arc::new(settings)
}

async fn objects(store: &Arc<dyn ObjectStore>, under: &str) -> Vec<String> {
    let listed: Vec<_> = store
        .list(Some(&Path::from(under)))
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<String> = listed
        .into_iter()
        .map(|object| object.location.to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_change_through_one_node_reaches_another_within_the_refresh_interval() {
    for (name, store, _dir) in stores() {
        let refresh = Duration::from_millis(300);
        let a = node(&store, refresh);
        let b = node(&store, refresh);
        assert!(b.read("t").await.unwrap().counts().is_empty(), "{name}");
        let count = a
            .modify("t", |counters| Ok::<_, SettingsError>(counters.bump("x")))
            .await
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            a.read("t").await.unwrap().counts().get("x"),
            Some(&1),
            "{name}: the writer sees its change at once"
        );
        assert!(
            b.read("t").await.unwrap().counts().is_empty(),
            "{name}: within the interval, the other node's copy may lag"
        );
        tokio::time::sleep(refresh + Duration::from_millis(50)).await;
        assert_eq!(
            b.read("t").await.unwrap().counts().get("x"),
            Some(&1),
            "{name}: after the interval, the other node has it"
        );
        // Its next change starts from the first node's, not its stale copy.
        b.modify("t", |counters| Ok::<_, SettingsError>(counters.bump("y")))
            .await
            .unwrap();
        let fresh = node(&store, refresh);
        let seen = fresh.read("t").await.unwrap();
        assert_eq!(seen.counts().get("x"), Some(&1), "{name}");
        assert_eq!(seen.counts().get("y"), Some(&1), "{name}");
        assert!(
            fresh.read("u").await.unwrap().counts().is_empty(),
            "{name}: tenants are apart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_changes_through_several_nodes_all_land_or_are_refused() {
    for (name, store, _dir) in stores() {
        let nodes: Vec<_> = (0..3)
            .map(|_| node(&store, Duration::from_secs(60)))
            .collect();
        let mut tasks = Vec::new();
        for (index, settings) in nodes.iter().enumerate() {
            for change in 0..6 {
                let settings = Arc::clone(settings);
                tasks.push(tokio::spawn(async move {
                    // Half create their own entry, half update one shared entry.
                    let key = if change % 2 == 0 {
                        format!("node{index}-change{change}")
                    } else {
                        "shared".to_string()
                    };
                    let outcome = settings
                        .modify("t", |counters| Ok::<_, SettingsError>(counters.bump(&key)))
                        .await;
                    (key, outcome)
                }));
            }
        }
        let mut acked_shared = 0;
        let mut acked_own = Vec::new();
        let mut refused = 0;
        for task in tasks {
            let (key, outcome) = task.await.unwrap();
            match outcome {
                Ok(_) if key == "shared" => acked_shared += 1,
                Ok(_) => acked_own.push(key),
                Err(SettingsError::Contended { .. }) => refused += 1,
                Err(error) => panic!("{name}: {error}"),
            }
        }
        let after = node(&store, Duration::from_secs(60));
        let counts = after.read("t").await.unwrap().counts().clone();
        assert_eq!(
            counts.get("shared").copied().unwrap_or(0),
            acked_shared,
            "{name}: every acknowledged update of the shared entry, once ({refused} refused)"
        );
        let mut stored_own: Vec<String> = counts
            .keys()
            .filter(|key| *key != "shared")
            .cloned()
            .collect();
        stored_own.sort();
        acked_own.sort();
        assert_eq!(stored_own, acked_own, "{name}");
        assert!(
            acked_shared as usize + acked_own.len() >= 15,
            "{name}: {refused} of 18 refused"
        );
        // Claims are cleaned up and old revisions pruned.
        let left = objects(&store, "tenants/t/settings/counters").await;
        assert!(
            left.iter().all(|path| !path.contains("/claim/")),
            "{name}: {left:?}"
        );
        assert!(left.len() as u64 <= KEPT_REVISIONS + 1, "{name}: {left:?}");
    }
}

#[tokio::test]
async fn a_claim_in_progress_holds_changes_back_until_abandoned() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut settings = SettingsStore::<Counters>::new(Arc::clone(&store), Duration::ZERO);
    settings.timing.attempts = 3;
    settings.timing.backoff = Duration::from_millis(1);
    settings.timing.abandoned_after = Duration::from_secs(60);
    settings
        .modify("t", |counters| Ok::<_, SettingsError>(counters.bump("x")))
        .await
        .unwrap();
    // Another writer claimed revision 2 a moment ago and has not written it.
    let fresh = SettingsStore::<Counters>::claim_path("t", 2, unix_ms(), "OTHER");
    store
        .put(&fresh, PutPayload::from_static(b"{}"))
        .await
        .unwrap();
    let refused = settings
        .modify("t", |counters| Ok::<_, SettingsError>(counters.bump("y")))
        .await;
    assert!(
        matches!(refused, Err(SettingsError::Contended { attempts: 3, .. })),
        "{refused:?}"
    );
    assert!(
        settings
            .read("t")
            .await
            .unwrap()
            .counts()
            .get("y")
            .is_none(),
        "a refused change is not applied"
    );
    // Its writer died: once the claim is old enough it is skipped.
    store.delete(&fresh).await.unwrap();
    let dead = SettingsStore::<Counters>::claim_path("t", 2, unix_ms() - 61_000, "DEAD");
    store
        .put(&dead, PutPayload::from_static(b"{}"))
        .await
        .unwrap();
    settings
        .modify("t", |counters| Ok::<_, SettingsError>(counters.bump("y")))
        .await
        .unwrap();
    let left = objects(&store, "tenants/t/settings/counters").await;
    assert_eq!(
        left,
        [
            "tenants/t/settings/counters/rev/00000000000000000001.json",
            "tenants/t/settings/counters/rev/00000000000000000003.json"
        ]
    );
}

#[tokio::test]
async fn a_document_from_before_revisions_is_read_and_carried_into_the_first() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let legacy = Path::from("tenants/t/old/counters.json");
    store
        .put(
            &legacy,
            PutPayload::from_static(br#"{"version":"1","counts":{"old":4}}"#),
        )
        .await
        .unwrap();
    let a = node(&store, Duration::ZERO);
    assert_eq!(a.read("t").await.unwrap().counts().get("old"), Some(&4));
    a.modify("t", |counters| Ok::<_, SettingsError>(counters.bump("new")))
        .await
        .unwrap();
    let b = node(&store, Duration::ZERO);
    let read = b.read("t").await.unwrap();
    assert_eq!(read.counts().get("old"), Some(&4));
    assert_eq!(read.counts().get("new"), Some(&1));
    assert!(store.head(&legacy).await.is_ok(), "left in place");
}

#[tokio::test]
async fn unreadable_documents_are_errors_and_a_cached_copy_outlives_them() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let reader = node(&store, Duration::ZERO);
    assert!(reader.read("t").await.unwrap().counts().is_empty());
    let head = SettingsStore::<Counters>::revision_path("t", 1);
    store
        .put(&head, PutPayload::from_static(b"{\"version\":\"9\"}"))
        .await
        .unwrap();
    // A node with a copy keeps serving it.
    assert!(reader.read("t").await.unwrap().counts().is_empty());
    // One without says what is wrong.
    let error = node(&store, Duration::ZERO).read("t").await.unwrap_err();
    assert!(
        matches!(&error, SettingsError::Corrupt { path, .. } if path.ends_with("00000000000000000001.json")),
        "{error}"
    );
    // Changes refuse to build on it too.
    let refused = reader
        .modify("t", |counters| Ok::<_, SettingsError>(counters.bump("x")))
        .await;
    assert!(matches!(refused, Err(SettingsError::Corrupt { .. })));
}

#[tokio::test]
async fn an_unchanged_document_or_a_refused_change_writes_nothing() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let settings = node(&store, Duration::ZERO);
    let answer = settings
        .modify("t", |counters| {
            Ok::<_, SettingsError>(counters.counts().len())
        })
        .await
        .unwrap();
    assert_eq!(answer, 0);
    let refused: Result<(), SettingsError> = settings
        .modify("t", |counters| {
            counters.bump("x");
            Err(SettingsError::TooSlow {
                kind: "counters",
                tenant: "t".into(),
            })
        })
        .await;
    assert!(refused.is_err());
    assert!(objects(&store, "tenants").await.is_empty());
}
