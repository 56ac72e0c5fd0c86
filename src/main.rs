//! The `tracelake` command line: wires the crates together.

mod aggregation;
#[cfg(feature = "ballista")]
mod ballista;
mod config;
mod demo;
mod import;
mod listen;
mod loadgen;
mod materialize;
mod metrics;
mod roles;
mod serve;
mod sql;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Tracing and span-metrics backend: X-Ray and OTLP ingest, Parquet
/// storage, DataFusion queries.
#[derive(Debug, Parser)]
#[command(name = "tracelake", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded defaults: ./tracelake-data on local disk).
    Serve(ServeArgs),
    /// Load traces from files: X-Ray BatchGetTraces output or segment
    /// documents, OTLP JSON (one request per file or per line) or OTLP
    /// protobuf. The server must not be running on the same data dir.
    Import(ImportArgs),
    /// Run tracelake with the reference stack (an API gateway, functions,
    /// a table and a queue) serving an order API under steady traffic, and
    /// print where to look. Same listeners and storage as `serve`.
    Demo(DemoArgs),
    /// Send the reference workload to a collector (OTLP gRPC, OTLP HTTP or
    /// X-Ray UDP) and report what was accepted, the rate and ack latency.
    Loadgen(LoadgenArgs),
    /// Run a read-only SQL query over the data dir (tables spans, edges,
    /// span_metrics, metrics) and print the rows. The server must not be
    /// running on the same data dir (use its /v1/sql then).
    Sql(SqlArgs),
    /// Make an API key for `[[auth.keys]]`: prints the token once and the
    /// config entry, which holds only its SHA-256. With
    /// `--sigv4-secret-file`, also an access key id for SigV4 clients
    /// (boto3), its secret written to that file (mode 0600).
    NewKey(NewKeyArgs),
}

#[derive(Debug, clap::Args)]
struct NewKeyArgs {
    /// The key's name, shown in logs and errors.
    #[arg(long)]
    name: String,
    /// The tenant the key reads and writes.
    #[arg(long)]
    tenant: String,
    /// Comma-separated: ingest, query, admin.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_permission)]
    permissions: Vec<tracelake_auth::Permission>,
    /// Also make a SigV4 key pair; its secret goes to this new file.
    #[arg(long)]
    sigv4_secret_file: Option<PathBuf>,
}

fn parse_permission(text: &str) -> Result<tracelake_auth::Permission, String> {
    match text.trim() {
        "ingest" => Ok(tracelake_auth::Permission::Ingest),
        "query" => Ok(tracelake_auth::Permission::Query),
        "admin" => Ok(tracelake_auth::Permission::Admin),
        other => Err(format!(
            "{other:?} is not a permission (ingest, query, admin)"
        )),
    }
}

/// `tracelake new-key`: the token as a TOML comment, then the entry.
fn new_key(args: NewKeyArgs) -> anyhow::Result<()> {
    tracelake_model::validate_tenant(&args.tenant)?;
    let token = tracelake_auth::new_token()?;
    let mut entry = tracelake_auth::KeyConfig {
        name: args.name,
        tenant: args.tenant,
        permissions: args.permissions,
        token_sha256: Some(tracelake_auth::token_sha256(&token)),
        access_key_id: None,
        secret_access_key_file: None,
    };
    let mut access = None;
    if let Some(path) = args.sigv4_secret_file {
        let (id, secret) = tracelake_auth::new_access_key()?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| anyhow::anyhow!("creating {}: {error}", path.display()))?;
        writeln!(file, "{secret}")?;
        entry.access_key_id = Some(id.clone());
        entry.secret_access_key_file = Some(path.clone());
        access = Some((id, path));
    }
    #[derive(serde::Serialize)]
    struct Entry {
        auth: AuthEntry,
    }
    #[derive(serde::Serialize)]
    struct AuthEntry {
        keys: Vec<tracelake_auth::KeyConfig>,
    }
    println!("# token (shown once; send as Authorization: Bearer <token>):");
    println!("# {token}");
    if let Some((id, path)) = access {
        println!(
            "# SigV4: aws_access_key_id = {id}, aws_secret_access_key = the content of {}",
            path.display()
        );
    }
    print!(
        "{}",
        toml::to_string(&Entry {
            auth: AuthEntry { keys: vec![entry] }
        })?
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
struct SqlArgs {
    /// The query, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1".
    query: String,
    /// Tenant whose tables the query sees.
    #[arg(long, env = "TRACELAKE_SQL_TENANT", default_value = tracelake_model::DEFAULT_TENANT)]
    tenant: String,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    json: bool,
    /// Run on Apache DataFusion Ballista (standalone) over the store's
    /// Parquet files (built with `--features ballista`).
    #[cfg(feature = "ballista")]
    #[arg(long)]
    ballista: bool,
    /// Config file (TOML); every key optional, unknown keys refused.
    #[arg(long, env = "TRACELAKE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: config::Overrides,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// Files to load.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Tenant to store the spans under.
    #[arg(long, env = "TRACELAKE_IMPORT_TENANT", default_value = tracelake_model::DEFAULT_TENANT)]
    tenant: String,
    /// Config file (TOML); every key optional, unknown keys refused.
    #[arg(long, env = "TRACELAKE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: config::Overrides,
}

#[derive(Debug, clap::Args)]
struct LoadgenArgs {
    /// Wire protocol.
    #[arg(long, value_enum)]
    protocol: loadgen::Protocol,
    /// Where to send: host:port (OTLP HTTP also takes a URL).
    #[arg(long)]
    endpoint: String,
    /// Stop once this many spans were sent (the last request may carry a few more).
    #[arg(long, required_unless_present = "duration")]
    spans: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Target spans per second (default: as fast as accepted).
    #[arg(long)]
    rate: Option<f64>,
    /// Connections (workers) sending at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Workload seed (the same seed sends the same spans).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Workload shape: `reference` (the demo's topology), `api`, `serverless`
    /// or `mesh` (see the workload crate's docs).
    #[arg(long, default_value = "reference")]
    shape: tracelake_workload::Shape,
    /// Time between the starts of consecutive traces of one connection (the
    /// spans' own timestamps; e.g. 10ms spreads 1 M reference spans over
    /// about two hours of span time).
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    trace_spacing: std::time::Duration,
    /// Spans per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Tenant (X-Scope-OrgID) for OTLP.
    #[arg(long)]
    tenant: Option<String>,
    /// API key for a server with `[[auth.keys]]` (OTLP, sent as a bearer token).
    #[arg(long, env = "TRACELAKE_API_KEY")]
    api_key: Option<String>,
    /// End with one JSON summary line on stdout.
    #[arg(long)]
    json: bool,
    /// Resend requests refused as overload or unavailability (RESOURCE_EXHAUSTED,
    /// UNAVAILABLE, HTTP 429/503) after a backoff, as OTLP exporters do.
    #[arg(long)]
    retry: bool,
    /// Generate this many requests per connection once, then resend them in
    /// turn with re-keyed trace ids (OTLP): offers load beyond generation speed.
    #[arg(long)]
    pool: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Stop after this long (e.g. 5m); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Requests per second the demo's client sends (bursts reach 4x).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How the stack sends its segments: `udp` (the X-Ray daemon protocol)
    /// or `otlp` (OTLP/HTTP).
    #[arg(long, default_value = "udp", value_parser = ["udp", "otlp"])]
    export: String,
    /// Config file (TOML); every key optional, unknown keys refused.
    #[arg(long, env = "TRACELAKE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: config::Overrides,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (TOML); every key optional, unknown keys refused.
    #[arg(long, env = "TRACELAKE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Print every route of the HTTP listeners with who may call it
    /// (`route <listener> <access> <path>`), after the `listening` lines.
    #[arg(long, env = "TRACELAKE_PRINT_ROUTES")]
    print_routes: bool,
    #[command(flatten)]
    overrides: config::Overrides,
}

/// Keeps glibc's malloc from holding on to freed memory.
///
/// Rust's allocations go to jemalloc ([`ALLOCATOR`]); glibc's malloc now
/// serves only C code that calls it directly (zstd's compression contexts
/// among them), on whichever blocking-pool thread runs a flush or a
/// compaction. By default glibc gives every thread an arena (up to 8 per
/// core) and raises its mmap threshold after each large free, so large
/// buffers are reused from arenas that never shrink. A fixed 128 KiB mmap
/// threshold hands them back to the kernel when they are freed, and two
/// arenas per core bound the rest.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let arenas = libc::c_int::try_from(cores * 2).unwrap_or(16);
        // SAFETY: mallopt only sets allocator parameters; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// jemalloc in place of the system allocator (see README, "Benchmarks").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options:
/// - a background thread returns freed pages to the system after a second
///   (the default keeps them ten), so memory a flush freed is not counted
///   against the process for long;
/// - one arena per CPU, used by whichever thread runs there
///   (`percpu_arena`), not four per CPU each tied to a thread: the request,
///   conversion and flush threads outnumber the cores, and with arenas of
///   their own each kept its own free pages. Peak memory ingesting 1M spans
///   fell 8-11% on every workload shape, at equal or lower CPU (README,
///   "Benchmarks").
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,percpu_arena:percpu\0";

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = config::Config::load(args.config.as_deref(), &args.overrides)?;
            if args.print_config {
                print!("{}", toml::to_string(&config)?);
                return Ok(());
            }
            listen::PRINT_ROUTES.store(args.print_routes, std::sync::atomic::Ordering::Relaxed);
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve::serve(config))
        }
        Command::Demo(args) => {
            if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
                anyhow::bail!("--rate must be between 0 and 10000 requests per second");
            }
            let config = config::Config::load(args.config.as_deref(), &args.overrides)?;
            init_logging_at("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let export = if args.export == "otlp" {
                tracelake_gateway_plugin::demo::Export::Otlp
            } else {
                tracelake_gateway_plugin::demo::Export::Udp
            };
            runtime.block_on(demo::demo(config, args.duration, args.rate, export))
        }
        Command::Loadgen(args) => {
            if args
                .rate
                .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
            {
                anyhow::bail!("--rate must be a positive number of spans per second");
            }
            if !(1..=100_000).contains(&args.batch) || !(1..=1_024).contains(&args.connections) {
                anyhow::bail!("--batch must be 1..=100000 and --connections 1..=1024");
            }
            if let Some(pool) = args.pool {
                if !(1..=10_000).contains(&pool) {
                    anyhow::bail!("--pool must be 1..=10000 requests per connection");
                }
                if args.protocol == loadgen::Protocol::XrayUdp {
                    anyhow::bail!("--pool replays OTLP requests: use otlp-grpc or otlp-http");
                }
            }
            init_logging_at("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(loadgen::loadgen(loadgen::LoadgenOptions {
                protocol: args.protocol,
                endpoint: args.endpoint,
                spans: args.spans,
                duration: args.duration,
                rate: args.rate,
                connections: args.connections,
                seed: args.seed,
                shape: args.shape,
                trace_spacing_ns: u64::try_from(args.trace_spacing.as_nanos()).unwrap_or(u64::MAX),
                batch: args.batch,
                json: args.json,
                tenant: args.tenant,
                api_key: args.api_key,
                retry: args.retry,
                pool: args.pool,
            }))
        }
        Command::Import(args) => {
            let config = config::Config::load(args.config.as_deref(), &args.overrides)?;
            init_logging_at("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(import::import(config, &args.tenant, &args.files))
        }
        Command::Sql(args) => {
            let config = config::Config::load(args.config.as_deref(), &args.overrides)?;
            init_logging_at("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            #[cfg(feature = "ballista")]
            if args.ballista {
                return runtime.block_on(async {
                    let batches = ballista::run(&config, &args.tenant, &args.query).await?;
                    println!(
                        "{}",
                        datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                    );
                    anyhow::Ok(())
                });
            }
            runtime.block_on(sql::sql(config, &args.tenant, &args.query, args.json))
        }
        Command::NewKey(args) => new_key(args),
    }
}

/// Logs go to stderr (stdout carries the `listening` lines); level from
/// `TRACELAKE_LOG`, default `info`.
fn init_logging() {
    init_logging_at("info");
}

fn init_logging_at(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRACELAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
