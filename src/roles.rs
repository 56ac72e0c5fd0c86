//! The roles of a multi-node deployment on one S3-compatible store
//! (`serve --role`): what a querier and a compactor run. A collector is
//! `serve` without the query routes and the compactor ([`crate::serve`]).
//!
//! ```text
//!  clients --> collector A --+                      +--> querier(s): query APIs,
//!  clients --> collector B --+--> s3://bucket/... --+    catalog re-read every
//!              (WAL, head,         (blocks, metas,  |    refresh_interval
//!               flush often)        leases, marks)  +--> compactor(s): merge,
//!                                                        retention, service-map rows
//! ```
//!
//! Freshness: queriers read blocks, not collectors' heads. A span is
//! queryable once its collector flushed it (`flush.max_age`, 10 s in the
//! example configs) and the querier re-read the catalog
//! (`cluster.refresh_interval`), so within the sum of the two.

use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use tracelake_collector::aggregate::Aggregator;
use tracelake_collector::metrics_ingest::MetricsIngest;
use tracelake_collector::receiver_stats::ReceiverStats;
use tracelake_collector::xray::{api as xray_api, udp as xray_udp};
use tracelake_routes::{Access, Routes};
use tracelake_sampler::api::SamplingService;
use tracelake_sampler::store::RulesStore;
use tracelake_storage::BlobCache;
use tracelake_storage::{Coordination, LEASES_REFUSED, Leases, Sharing};
use tracelake_storage::{SpanReader, Storage};
use tracelake_storage::{StoreLocation, open_store};

use crate::config::{CompactorCoordination, Config, Role};
use crate::listen::{StopSignal, announce, authenticated, bind, keys_and_tls, serve_http};
use crate::metrics::MetricSources;
use tracelake_auth::Listener;
use tracelake_collector::CollectorMetrics;
use tracelake_routes::timing::RequestMetrics;

/// The block store of `config`; reads of an S3 store go through the
/// bounded block cache when `cached`.
pub(crate) fn block_store(config: &Config, cached: bool) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let location = config.store_location()?;
    let store = open_store(&location, &config.data_dir, &config.s3)
        .with_context(|| format!("opening storage {}", config.storage))?;
    if location == StoreLocation::File || !cached || config.cluster.block_cache_bytes == 0 {
        return Ok(store);
    }
    Ok(Arc::new(BlobCache::new(
        store,
        config.cluster.block_cache_bytes,
    )))
}

/// This process's node id: `cluster.node_id`, or one generated at the
/// first start and kept in `{data_dir}/node-id` (so a restarted collector
/// finds its own uncommitted flushes).
pub(crate) fn node_id(config: &Config) -> anyhow::Result<String> {
    if !config.cluster.node_id.is_empty() {
        return Ok(config.cluster.node_id.clone());
    }
    let path = config.data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let id = format!("node-{}", ulid::Ulid::new().to_string().to_lowercase());
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The storage settings of a process with a WAL: `shared` when other
/// processes use the store too (a collector; `import` into a bucket).
pub(crate) fn writer_config(
    config: &Config,
    shared: bool,
) -> anyhow::Result<tracelake_storage::StorageConfig> {
    let mut storage_config = config.storage_config();
    if shared {
        storage_config.sharing = Sharing::Shared {
            node_id: node_id(config)?,
        };
    }
    Ok(storage_config)
}

/// The registry and `/metrics` of a role without receivers: the request
/// metrics, the storage counters, and empty receiver and aggregation
/// series.
fn metrics_routes(storage: &Storage) -> (Routes, RequestMetrics) {
    let receivers = Arc::new(ReceiverStats::default());
    let aggregator = Aggregator::new(Default::default());
    let (registry, requests) = crate::metrics::registry(
        storage,
        CollectorMetrics {
            udp: Arc::new(xray_udp::UdpStats::default()),
            tail: None,
            aggregator: Arc::clone(&aggregator),
            receivers: Arc::clone(&receivers),
        },
    );
    let routes = crate::metrics::routes(MetricSources {
        registry: Arc::new(registry),
        aggregator,
        otlp_metrics: MetricsIngest::new(Arc::new(storage.clone()), receivers).exposition(),
    });
    (routes, requests)
}

/// Refuses ingest on a node that has no WAL, saying where spans go.
fn not_a_collector(role: Role) -> Routes {
    let message = format!(
        "this tracelake node has role {}: send spans to a collector",
        role.name()
    );
    let segments_message = message.clone();
    Routes::new()
        .route(
            "/TraceSegments",
            axum::routing::post(move || {
                let message = segments_message.clone();
                async move { xray_api::AwsError::invalid_request(&message) }
            }),
            Access::INGEST,
        )
        .route(
            "/TelemetryRecords",
            axum::routing::post(move || {
                let message = message.clone();
                async move { xray_api::AwsError::invalid_request(&message) }
            }),
            Access::INGEST,
        )
}

/// Opens the store read-only with the catalog loaded.
async fn open_reader(config: &Config, sharing: Sharing) -> anyhow::Result<Storage> {
    let store = block_store(config, true)?;
    let mut storage_config = config.storage_config();
    storage_config.sharing = sharing;
    let (storage, _stats) = Storage::open_reader(storage_config, store)
        .await
        .context("opening storage")?;
    Ok(storage)
}

/// `serve --role query`: the query APIs on xray-api and http over the
/// shared store, re-reading its catalog every `cluster.refresh_interval`.
pub(crate) async fn serve_query(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (keys, tls) = keys_and_tls(&config)?;
    let tls_for = |name: &str| tls.clone().filter(|_| config.tls.covers(name));
    let storage = open_reader(&config, Sharing::Exclusive).await?;
    let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
    let sampling = Arc::new(SamplingService::new(RulesStore::new(
        storage.object_store(),
        config.cluster.refresh_interval,
    )));
    let xray_api_listener = bind("xray-api", &config.listen.xray_api).await?;
    let http_listener = bind("http", &config.listen.http).await?;
    announce("xray-api", xray_api_listener.local_addr()?)?;
    announce("http", http_listener.local_addr()?)?;

    let stop = StopSignal::new();
    let xray_routes = tracelake_query::http::limit_concurrency(
        tracelake_query::xray_api::routes(Arc::clone(&reader), config.cluster.refresh_interval),
        config.query.limits(),
    )
    .merge(tracelake_sampler::api::routes(sampling))
    .merge(not_a_collector(Role::Query))
    .fallback(|uri: axum::http::Uri| async move {
        xray_api::AwsError::unknown_operation(uri.path())
    });
    let (metrics, requests) = metrics_routes(&storage);
    let xray = serve_http(
        xray_api_listener,
        authenticated(xray_routes, &keys, Listener::XrayApi, &requests),
        tls_for("xray-api"),
        "xray-api",
        stop.stopped(),
    )?;
    let http_routes =
        tracelake_query::http::routes_with_limits(reader, config.query.limits()).merge(metrics);
    let http = serve_http(
        http_listener,
        authenticated(http_routes, &keys, Listener::Http, &requests),
        tls_for("http"),
        "http",
        stop.stopped(),
    )?;
    let refresher = {
        let storage = storage.clone();
        let every = config.cluster.refresh_interval;
        let stop = stop.stopped();
        tokio::spawn(async move { storage.run_refresher(every, false, stop).await })
    };
    let servers = tokio::spawn(async move {
        let (xray, http) = tokio::join!(xray, http);
        xray.context("xray-api server")?;
        http.context("http server")
    });
    shutdown.await;
    stop.stop();
    let _ = refresher.await;
    servers.await.context("server task")??;
    Ok(())
}

/// How this compactor claims windows: leases when the store honours
/// conditional writes, the static assignment otherwise (or when asked).
async fn coordination(
    config: &Config,
    store: &Arc<dyn ObjectStore>,
    node_id: &str,
) -> anyhow::Result<Coordination> {
    let cluster = &config.cluster;
    let fixed = Coordination::Static {
        shard: cluster.compactor_shard,
        shards: cluster.compactor_shards,
    };
    let announce_mode = |line: &str| -> anyhow::Result<()> {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        Ok(())
    };
    if cluster.compactor_coordination == CompactorCoordination::Static {
        announce_mode(&format!(
            "compactor coordination static shard {} of {}",
            cluster.compactor_shard, cluster.compactor_shards
        ))?;
        return Ok(fixed);
    }
    let honoured = tracelake_storage::conditional_writes_honoured(store)
        .await
        .context("probing the object store for conditional writes")?;
    if honoured {
        announce_mode("compactor coordination lease")?;
        return Ok(Coordination::Leases(Leases::new(
            Arc::clone(store),
            node_id,
            cluster.lease_ttl,
        )));
    }
    if cluster.compactor_coordination == CompactorCoordination::Lease {
        anyhow::bail!(
            "{LEASES_REFUSED}; set cluster.compactor_coordination = \"static\" with compactor_shard/compactor_shards per compactor"
        );
    }
    tracing::warn!(
        shard = cluster.compactor_shard,
        shards = cluster.compactor_shards,
        "{LEASES_REFUSED}; using the static assignment"
    );
    announce_mode(&format!(
        "compactor coordination static shard {} of {} ({LEASES_REFUSED})",
        cluster.compactor_shard, cluster.compactor_shards
    ))?;
    Ok(fixed)
}

/// `serve --role compactor`: merges small blocks (one compactor per window
/// at a time), applies retention, computes the service-map rows from the
/// stored spans, and deletes what compaction replaced; `/metrics` and
/// `/ready` on http.
pub(crate) async fn serve_compactor(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (keys, tls) = keys_and_tls(&config)?;
    let node_id = node_id(&config)?;
    let storage = open_reader(
        &config,
        Sharing::Shared {
            node_id: node_id.clone(),
        },
    )
    .await?;
    let coordination = coordination(&config, &storage.object_store(), &node_id).await?;
    let http_listener = bind("http", &config.listen.http).await?;
    announce("http", http_listener.local_addr()?)?;
    let stop = StopSignal::new();
    let (metrics, requests) = metrics_routes(&storage);
    let http = serve_http(
        http_listener,
        authenticated(
            tracelake_query::http::health_routes().merge(metrics),
            &keys,
            Listener::Http,
            &requests,
        ),
        tls.filter(|_| config.tls.covers("http")),
        "http",
        stop.stopped(),
    )?;
    let refresher = {
        let storage = storage.clone();
        let every = config.cluster.refresh_interval;
        let stop = stop.stopped();
        tokio::spawn(async move { storage.run_refresher(every, true, stop).await })
    };
    let compactor = {
        let storage = storage.clone();
        let coordination = coordination.clone();
        let stop = stop.stopped();
        tokio::spawn(async move { storage.run_compactor_with(coordination, stop).await })
    };
    let materializer = {
        let storage = storage.clone();
        let settle = config.cluster.derived_settle;
        let every = config.cluster.refresh_interval;
        let stop = stop.stopped();
        tokio::spawn(async move {
            crate::materialize::run(storage, coordination, settle, every, stop).await
        })
    };
    let server = tokio::spawn(http);
    shutdown.await;
    stop.stop();
    let _ = refresher.await;
    let _ = compactor.await;
    let _ = materializer.await;
    server.await.context("server task")??;
    Ok(())
}
