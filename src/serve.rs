//! `tracelake serve`: binds every listener, prints `listening <name> <addr>`
//! for each, and runs until SIGINT/SIGTERM, then stops accepting, lets
//! requests in flight finish and flushes the head to blocks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use futures::TryFutureExt;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tracelake_collector::metrics_ingest::MetricsIngest;
use tracelake_collector::tail::TailStage;
use tracelake_collector::xray::{XrayIngest, api as xray_api, udp as xray_udp};
use tracelake_collector::{OtlpLimits, Pipeline, otlp_grpc, otlp_http};
use tracelake_sampler::api::SamplingService;
use tracelake_sampler::store::RulesStore;
use tracelake_storage::{SpanReader, Storage};

use tonic::service::interceptor::InterceptedService;

use crate::aggregation::Aggregation;
use crate::config::{Config, Role};
use crate::listen::{
    ServerFuture, StopSignal, announce, authenticated, bind, keys_and_tls, serve_http,
    shutdown_signal,
};
use crate::metrics::MetricSources;
use tracelake_auth::Listener;

/// How often the flusher checks whether the head is due.
/// `memory.limit_bytes / this` bounds the wire bytes of requests in flight.
const INFLIGHT_SHARE_OF_MEMORY: u64 = 64;
const FLUSH_CHECK: Duration = Duration::from_millis(250);
/// How long a stop waits for requests in flight before flushing regardless.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses the listeners were bound to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) xray_udp: std::net::SocketAddr,
    pub(crate) xray_api: std::net::SocketAddr,
    pub(crate) otlp_http: std::net::SocketAddr,
    pub(crate) http: std::net::SocketAddr,
}

pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    serve_until(config, shutdown_signal(), |_| {}).await
}

/// Serves until `shutdown` resolves, then drains and flushes; `ready` gets
/// the bound addresses once every listener is up.
pub(crate) async fn serve_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    match config.role {
        Role::All | Role::Collector => serve_node(config, shutdown, ready).await,
        Role::Query => crate::roles::serve_query(config, shutdown).await,
        Role::Compactor => crate::roles::serve_compactor(config, shutdown).await,
    }
}

/// `all` (everything in one process) or `collector` (receivers, sampling,
/// WAL and head on a shared store: no query routes, no compaction).
async fn serve_node(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    let collector = config.role == Role::Collector;
    let (keys, tls) = keys_and_tls(&config)?;
    let tls_for = |name: &str| tls.clone().filter(|_| config.tls.covers(name));
    let store = crate::roles::block_store(&config, !collector)?;
    // Rules (and the query side's groups) changed through other nodes on a
    // shared store are seen within `cluster.refresh_interval`.
    let sampling = Arc::new(SamplingService::new(RulesStore::new(
        Arc::clone(&store),
        config.cluster.refresh_interval,
    )));
    load_rules_file(&config, &sampling).await?;
    let (storage, _open_stats) =
        Storage::open(crate::roles::writer_config(&config, collector)?, store)
            .await
            .context("opening storage")?;
    let limits = OtlpLimits {
        max_message_bytes: config.otlp.max_message_bytes,
    };
    let IngestPath {
        aggregation,
        tail,
        pipeline,
    } = IngestPath::start(&config, &storage);
    let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
    let receiver_stats = Arc::clone(pipeline.receiver_stats());
    let xray_ingest = XrayIngest::new(pipeline.clone());
    let udp_stats = Arc::new(xray_udp::UdpStats::default());

    let listeners = Listeners::bind(&config).await?;
    ready(listeners.bound()?);

    let stop = StopSignal::new();

    let metrics_ingest = MetricsIngest::new(
        Arc::new(storage.clone()),
        Arc::clone(pipeline.receiver_stats()),
    );
    let (registry, requests) = crate::metrics::registry(
        &storage,
        tracelake_collector::CollectorMetrics {
            udp: Arc::clone(&udp_stats),
            tail: tail.clone(),
            aggregator: Arc::clone(&aggregation.aggregator),
            receivers: Arc::clone(&receiver_stats),
        },
    );
    let registry = Arc::new(registry);
    let grpc = grpc_server(
        listeners.grpc,
        GrpcServices {
            pipeline: pipeline.clone(),
            metrics: metrics_ingest.clone(),
            limits,
        },
        &keys,
        &requests,
        tls_for("otlp-grpc"),
        stop.stopped(),
    );
    let otlp_http = serve_http(
        listeners.otlp_http,
        authenticated(
            otlp_http::routes(pipeline, metrics_ingest.clone(), limits),
            &keys,
            Listener::OtlpHttp,
            &requests,
        ),
        tls_for("otlp-http"),
        "otlp-http",
        stop.stopped(),
    )?;
    let mut xray_api_routes =
        xray_api::routes(xray_ingest.clone()).merge(tracelake_sampler::api::routes(sampling));
    if !collector {
        xray_api_routes = xray_api_routes.merge(tracelake_query::http::limit_concurrency(
            tracelake_query::xray_api::routes(Arc::clone(&reader), config.cluster.refresh_interval),
            config.query.limits(),
        ));
    }
    let xray_api_routes = xray_api_routes.fallback(|uri: axum::http::Uri| async move {
        xray_api::AwsError::unknown_operation(uri.path())
    });
    let xray_api_routes = authenticated(xray_api_routes, &keys, Listener::XrayApi, &requests);
    let xray_api = serve_http(
        listeners.xray_api,
        xray_api_routes,
        tls_for("xray-api"),
        "xray-api",
        stop.stopped(),
    )?;
    let query_routes = if collector {
        tracelake_query::http::health_routes()
    } else {
        tracelake_query::http::routes_with_limits(reader, config.query.limits())
    };
    let http_routes = query_routes.merge(crate::metrics::routes(MetricSources {
        registry,
        aggregator: Arc::clone(&aggregation.aggregator),
        otlp_metrics: metrics_ingest.exposition(),
    }));
    let http_routes = authenticated(http_routes, &keys, Listener::Http, &requests);
    let http = serve_http(
        listeners.http,
        http_routes,
        tls_for("http"),
        "http",
        stop.stopped(),
    )?;
    let udp = xray_udp::run(
        listeners.udp,
        xray_ingest,
        config.udp_config(),
        udp_stats,
        stop.stopped(),
    );
    let background = Background::spawn(tail, aggregation, &storage, !collector, &stop);

    let servers = tokio::spawn(async move {
        let (grpc, otlp_http, xray_api, http, ()) =
            tokio::join!(grpc, otlp_http, xray_api, http, udp);
        grpc.context("otlp-grpc server")?;
        otlp_http.context("otlp-http server")?;
        xray_api.context("xray-api server")?;
        http.context("http server")?;
        anyhow::Ok(())
    });

    shutdown.await;
    stop_node(stop, servers, background, &storage).await
}

/// The path a span takes to storage on this node.
struct IngestPath {
    /// Every stored batch also feeds the service-map aggregation.
    aggregation: Aggregation,
    tail: Option<Arc<TailStage>>,
    pipeline: Pipeline,
}

impl IngestPath {
    /// The aggregation over storage's writer, tail sampling before it when
    /// configured, and the pipeline with its limits in front.
    fn start(config: &Config, storage: &Storage) -> Self {
        let aggregation = Aggregation::start(storage, config.service_graph.aggregate_config());
        let writer = Arc::clone(&aggregation.writer);
        let tail = config.tail_sampling.enabled.then(|| {
            Arc::new(TailStage::new(
                config.tail_sampling.policy(),
                Arc::clone(&writer),
            ))
        });
        let pipeline = match &tail {
            Some(stage) => Pipeline::with_tail_sampling(writer, Arc::clone(stage)),
            None => Pipeline::new(writer),
        }
        // Requests being decoded and stored, in wire bytes: they expand about
        // eightfold (owned protobuf structs, Arrow, the WAL record), so this is
        // about an eighth of the limit once expanded, inside the spike
        // allowance (a fifth).
        .with_inflight_limit(config.memory.limit_bytes / INFLIGHT_SHARE_OF_MEMORY)
        .with_ingest_limits(config.overrides.ingest_limits());
        Self {
            aggregation,
            tail,
            pipeline,
        }
    }
}

/// The node's tasks beside its servers, stopped in order after them.
struct Background {
    tail: Option<tokio::task::JoinHandle<()>>,
    aggregation: Aggregation,
    flusher: tokio::task::JoinHandle<()>,
    compactor: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Tail sampling's clock, the flusher, and (`compacts`: not on a
    /// collector of a shared store, where compactors do it) the compactor.
    fn spawn(
        tail: Option<Arc<TailStage>>,
        aggregation: Aggregation,
        storage: &Storage,
        compacts: bool,
        stop: &StopSignal,
    ) -> Self {
        let tail =
            tail.map(|stage| tokio::spawn(stage.run(Duration::from_secs(1), stop.stopped())));
        let flusher_storage = storage.clone();
        let flusher_stop = stop.stopped();
        let flusher =
            tokio::spawn(
                async move { flusher_storage.run_flusher(FLUSH_CHECK, flusher_stop).await },
            );
        let compactor_storage = storage.clone();
        let compactor_stop = stop.stopped();
        let compactor = tokio::spawn(async move {
            if compacts {
                compactor_storage.run_compactor(compactor_stop).await;
            }
        });
        Self {
            tail,
            aggregation,
            flusher,
            compactor,
        }
    }
}

/// Stops accepting, lets requests in flight finish (up to
/// [`DRAIN_TIMEOUT`]), decides pending traces, writes held rows, then
/// flushes the head: nothing acked is left only in the WAL.
async fn stop_node(
    stop: StopSignal,
    servers: tokio::task::JoinHandle<anyhow::Result<()>>,
    background: Background,
    storage: &Storage,
) -> anyhow::Result<()> {
    tracing::info!("shutting down: draining requests, then flushing the head");
    stop.stop();
    // Clients that keep connections open must not keep the head from disk.
    match tokio::time::timeout(DRAIN_TIMEOUT, servers).await {
        Ok(joined) => joined.context("server task")??,
        Err(_) => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still in flight after the drain timeout; flushing anyway")
        }
    }
    if let Some(task) = background.tail {
        // Pending traces are decided, and kept ones written, before the flush.
        let _ = task.await;
    }
    // Stored spans are counted, and every held row written, before the flush.
    background.aggregation.finish().await;
    let _ = background.flusher.await;
    let _ = background.compactor.await;
    let flushed = storage.shutdown().await.context("final flush")?;
    tracing::info!(?flushed, "stopped");
    Ok(())
}

/// Every listener of an `all` or `collector` node, bound and announced.
struct Listeners {
    udp: tokio::net::UdpSocket,
    xray_api: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    otlp_http: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds each listener (and the X-Ray UDP socket with its receive
    /// buffer), then prints its `listening <name> <addr>` line.
    async fn bind(config: &Config) -> anyhow::Result<Self> {
        let udp_address: std::net::SocketAddr = tokio::net::lookup_host(&config.listen.xray_udp)
            .await
            .with_context(|| format!("resolving xray-udp address {}", config.listen.xray_udp))?
            .next()
            .with_context(|| {
                format!(
                    "xray-udp address {} resolves to nothing",
                    config.listen.xray_udp
                )
            })?;
        let udp = xray_udp::bind(udp_address, config.xray.udp_receive_buffer_bytes)
            .with_context(|| format!("binding xray-udp on {udp_address}"))?;
        let listeners = Self {
            udp,
            xray_api: bind("xray-api", &config.listen.xray_api).await?,
            grpc: bind("otlp-grpc", &config.listen.otlp_grpc).await?,
            otlp_http: bind("otlp-http", &config.listen.otlp_http).await?,
            http: bind("http", &config.listen.http).await?,
        };
        announce("xray-udp", listeners.udp.local_addr()?)?;
        announce("xray-api", listeners.xray_api.local_addr()?)?;
        announce("otlp-grpc", listeners.grpc.local_addr()?)?;
        announce("otlp-http", listeners.otlp_http.local_addr()?)?;
        announce("http", listeners.http.local_addr()?)?;
        Ok(listeners)
    }

    fn bound(&self) -> anyhow::Result<Bound> {
        Ok(Bound {
            xray_udp: self.udp.local_addr()?,
            xray_api: self.xray_api.local_addr()?,
            otlp_http: self.otlp_http.local_addr()?,
            http: self.http.local_addr()?,
        })
    }
}

/// What the OTLP gRPC listener serves.
struct GrpcServices {
    pipeline: Pipeline,
    metrics: MetricsIngest,
    limits: OtlpLimits,
}

/// The OTLP gRPC server (traces and metrics) behind the key check and
/// request timing, over TLS when `tls` is set.
fn grpc_server(
    listener: tokio::net::TcpListener,
    services: GrpcServices,
    keys: &Option<Arc<tracelake_auth::Keys>>,
    requests: &tracelake_routes::timing::RequestMetrics,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> ServerFuture {
    let grpc_auth = tracelake_auth::GrpcAuth { keys: keys.clone() };
    let grpc = tonic::transport::Server::builder()
        .layer(requests.grpc_layer("otlp-grpc", otlp_grpc::METHODS))
        .add_service(InterceptedService::new(
            otlp_grpc::trace_service(services.pipeline, services.limits),
            grpc_auth.clone(),
        ))
        .add_service(InterceptedService::new(
            otlp_grpc::metrics_service(services.metrics, services.limits),
            grpc_auth,
        ));
    match tls {
        None => Box::pin(
            grpc.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                .map_err(anyhow::Error::from),
        ),
        Some(acceptor) => {
            let connections =
                ReceiverStream::new(tracelake_auth::tls::accept(listener, acceptor, "otlp-grpc"))
                    .map(|(connection, _)| Ok::<_, std::io::Error>(connection));
            Box::pin(
                grpc.serve_with_incoming_shutdown(connections, stop)
                    .map_err(anyhow::Error::from),
            )
        }
    }
}

/// Loads `[sampling] rules_file`, if set, into the rules store.
async fn load_rules_file(config: &Config, sampling: &SamplingService) -> anyhow::Result<()> {
    let Some(path) = &config.sampling.rules_file else {
        return Ok(());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading sampling rules file {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|extension| extension == "toml");
    let rules = tracelake_sampler::client::parse_rules_file(&text, is_toml)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let tenant = config
        .sampling
        .rules_tenant
        .as_deref()
        .unwrap_or(tracelake_model::DEFAULT_TENANT);
    let loaded = sampling
        .store()
        .import(tenant, &rules)
        .await
        .with_context(|| format!("loading sampling rules from {}", path.display()))?;
    tracing::info!(loaded, tenant, file = %path.display(), "sampling rules loaded");
    Ok(())
}
