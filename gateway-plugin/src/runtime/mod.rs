//! The function runtime: Rust handlers `handler(event, context)` run the
//! way Lambda runs functions, so traces show what shapes real ones.
//!
//! ```text
//!  invoke(name, event, caller) --policy?--> AccessDeniedException (403)
//!     | RequestResponse                        | Event                    | poll-based
//!     v                                        v                          v
//!  acquire an instance:                     event queue --worker-->    EventSourceMapping:
//!   idle one -> warm                         invoke; on error retry    receive a batch, invoke,
//!   none, below the limit -> cold start      with backoff, then the    delete on success,
//!     (Initialization subsegment)            dead-letter queue         iterator age
//!   at the limit -> 429 TooManyRequests
//!     |
//!     v
//!  handler under the timeout (Invocation subsegment); timed out -> the
//!  instance is discarded; report: duration, billed duration, init
//! ```
//!
//! - Memory scales the CPU share: [`Context::compute`] work takes
//!   `1769 / memory_mb` times as long below 1,769 MB (one full vCPU there,
//!   as Lambda allocates CPU in proportion to memory), unchanged above.
//! - Billed duration is the duration rounded up to the millisecond
//!   (Lambda's per-millisecond billing), init included on a cold start;
//!   cost is reported in GB-seconds.
//! - Environment variables may reference secrets of the [`SecretStore`]:
//!   decrypted at each invocation into the context only.
//! - A function policy names who may invoke it; an execution policy names
//!   the resources its calls may reach ([`Context`] checks and records a
//!   denied call as a traced error).

mod asynchronous;
mod context;
pub mod http;
mod metrics;
mod poller;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tracelake_sampler::TraceHeader;

pub use asynchronous::{
    EVENT_QUEUE_CAPACITY, MAX_DLQ_ERROR_MESSAGE_BYTES, RetryPolicy, SERVICE_PRINCIPAL,
};
pub use context::{CallError, Context, Downstream};
pub use metrics::{DURATION_BOUNDS, FunctionMetrics, MetricsSnapshot, export_loop, export_request};
pub use poller::{EventSourceMapping, MAX_LINKS, MappingHandle};

use crate::secrets::SecretStore;
use crate::tracer::{RequestInfo, Tracer};

/// Memory at which a function has one full vCPU.
pub const FULL_CPU_MB: u32 = 1_769;

/// An error a handler returns (Lambda's `errorType`, `errorMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub kind: String,
    pub message: String,
}

impl HandlerError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// What a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;
/// A handler: `handler(event, context)`.
pub type Handler = Arc<dyn Fn(Value, Context) -> HandlerFuture + Send + Sync>;
/// Per-instance initialization code, run on a cold start.
pub type InitHook = Arc<
    dyn Fn(Context) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> + Send + Sync,
>;

/// An environment variable: a value, or a secret read at invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Plain(String),
    Secret(String),
}

/// A function's settings.
#[derive(Clone)]
pub struct FunctionConfig {
    pub name: String,
    pub version: String,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// Most instances running at once (reserved concurrency).
    pub concurrency: usize,
    /// An idle instance is reclaimed after this long (the next invocation
    /// is a cold start again).
    pub idle_ttl: Duration,
    /// CPU work of bringing up the runtime and loading the code at a cold
    /// start, at one full vCPU (scaled by memory like all CPU work).
    pub bootstrap_work: Duration,
    pub environment: BTreeMap<String, EnvValue>,
    /// Principals that may invoke (`*` for anyone).
    pub invoke_policy: Vec<String>,
    /// Resources the function's calls may reach: `table:<name>`,
    /// `queue:<name>`, `function:<name>`, `http:<host>`; `*` for all.
    pub execution_policy: Vec<String>,
    /// Retries and dead-letter queue of asynchronous invocations.
    pub retry: RetryPolicy,
    pub handler: Handler,
    pub init: Option<InitHook>,
}

impl std::fmt::Debug for FunctionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionConfig")
            .field("name", &self.name)
            .field("memory_mb", &self.memory_mb)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl FunctionConfig {
    /// A function with Lambda's defaults (128 MB, 3 s, concurrency 10,
    /// invocable by anyone, calling nothing).
    pub fn new(name: &str, handler: Handler) -> Self {
        Self {
            name: name.to_string(),
            version: "$LATEST".into(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            concurrency: 10,
            idle_ttl: Duration::from_secs(300),
            bootstrap_work: Duration::from_millis(15),
            environment: BTreeMap::new(),
            invoke_policy: vec!["*".into()],
            execution_policy: Vec::new(),
            retry: RetryPolicy::default(),
            handler,
            init: None,
        }
    }

    /// How many times longer CPU work takes at this memory size.
    pub fn cpu_slowdown(&self) -> f64 {
        (f64::from(FULL_CPU_MB) / f64::from(self.memory_mb.max(1))).max(1.0)
    }
}

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(function: F) -> Handler
where
    F: Fn(Value, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    Arc::new(move |event, context| Box::pin(function(event, context)))
}

/// Why an invocation was refused (the service's errors, not the function's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    NotFound(String),
    AccessDenied(String),
    /// Over the concurrency limit (`TooManyRequestsException`).
    Throttled(String),
    /// The asynchronous event queue is full.
    QueueFull(String),
}

impl InvokeError {
    /// Lambda's error type and HTTP status.
    pub fn kind(&self) -> (&'static str, u16) {
        match self {
            Self::NotFound(_) => ("ResourceNotFoundException", 404),
            Self::AccessDenied(_) => ("AccessDeniedException", 403),
            Self::Throttled(_) => ("TooManyRequestsException", 429),
            Self::QueueFull(_) => ("TooManyRequestsException", 429),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::NotFound(message)
            | Self::AccessDenied(message)
            | Self::Throttled(message)
            | Self::QueueFull(message) => message,
        }
    }
}

/// What one invocation did (Lambda's `REPORT` line).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub request_id: String,
    pub duration: Duration,
    pub billed_ms: u64,
    /// Cold starts only.
    pub init: Option<Duration>,
    pub memory_mb: u32,
    pub instance: u64,
}

impl Report {
    pub fn cold(&self) -> bool {
        self.init.is_some()
    }

    /// GB-seconds billed.
    pub fn gb_seconds(&self) -> f64 {
        f64::from(self.memory_mb) / 1024.0 * self.billed_ms as f64 / 1000.0
    }
}

/// A finished invocation: the result or the function's error.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub result: Result<Value, HandlerError>,
    pub report: Report,
}

/// How one invocation starts: its request id (kept across the retries of
/// a queued event), the trace it continues, and the traces it links to (a
/// polled batch's messages).
#[derive(Debug, Clone)]
struct Start {
    request_id: String,
    trace: Option<TraceHeader>,
    links: Vec<crate::document::Link>,
}

/// Who invokes, and in which trace.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The principal the function policy is checked against.
    pub principal: String,
    /// The caller's trace header (Parent = its call subsegment).
    pub trace: Option<TraceHeader>,
}

#[derive(Debug)]
struct Instance {
    id: u64,
    last_used: Instant,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Instance>,
    busy: usize,
    next_id: u64,
}

struct Function {
    config: FunctionConfig,
    tracer: Tracer,
    pool: Mutex<Pool>,
    metrics: Arc<FunctionMetrics>,
    events: asynchronous::EventQueue,
}

/// The runtime: registered functions and what they share.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    functions: HashMap<String, Arc<Function>>,
    secrets: Option<Arc<SecretStore>>,
    downstream: Downstream,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.inner.functions.keys().collect();
        names.sort();
        f.debug_struct("Runtime")
            .field("functions", &names)
            .finish()
    }
}

/// How an instance was obtained.
enum Acquired {
    Warm(Instance),
    Cold(Instance),
}

impl Runtime {
    /// A runtime for `functions`, each traced by a tracer made with
    /// `tracer_for(name)` (service name = the function, origin
    /// `AWS::Lambda::Function`). Starts each function's asynchronous
    /// worker on the current tokio runtime.
    pub fn new(
        functions: Vec<FunctionConfig>,
        tracer_for: impl Fn(&str) -> Tracer,
        secrets: Option<Arc<SecretStore>>,
        downstream: Downstream,
    ) -> Self {
        let mut registered = HashMap::new();
        let mut receivers = Vec::new();
        for config in functions {
            let (events, receiver) = asynchronous::EventQueue::new();
            receivers.push((config.name.clone(), receiver));
            let function = Function {
                tracer: tracer_for(&config.name),
                pool: Mutex::new(Pool::default()),
                metrics: Arc::new(FunctionMetrics::default()),
                events,
                config,
            };
            registered.insert(function.config.name.clone(), Arc::new(function));
        }
        let runtime = Self {
            inner: Arc::new(RuntimeInner {
                functions: registered,
                secrets,
                downstream,
            }),
        };
        for (name, receiver) in receivers {
            asynchronous::spawn_worker(Arc::downgrade(&runtime.inner), name, receiver);
        }
        runtime
    }

    pub fn downstream(&self) -> &Downstream {
        &self.inner.downstream
    }

    /// Function names, sorted.
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.functions.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn metrics(&self, name: &str) -> Option<MetricsSnapshot> {
        let function = self.inner.functions.get(name)?;
        Some(function.metrics.snapshot(function.pool.lock().busy))
    }

    fn function(&self, name: &str) -> Result<&Arc<Function>, InvokeError> {
        self.inner
            .functions
            .get(name)
            .ok_or_else(|| InvokeError::NotFound(format!("Function not found: {name}")))
    }

    fn check_invoke_policy(&self, function: &Function, caller: &Caller) -> Result<(), InvokeError> {
        let allowed = function
            .config
            .invoke_policy
            .iter()
            .any(|principal| principal == "*" || *principal == caller.principal);
        if allowed {
            Ok(())
        } else {
            Err(InvokeError::AccessDenied(format!(
                "{} is not authorized to perform lambda:InvokeFunction on {}",
                if caller.principal.is_empty() {
                    "an anonymous caller"
                } else {
                    &caller.principal
                },
                function.config.name
            )))
        }
    }

    fn acquire(&self, function: &Function) -> Result<Acquired, InvokeError> {
        let now = Instant::now();
        let mut pool = function.pool.lock();
        let ttl = function.config.idle_ttl;
        pool.idle
            .retain(|instance| now.saturating_duration_since(instance.last_used) < ttl);
        if let Some(instance) = pool.idle.pop() {
            pool.busy += 1;
            return Ok(Acquired::Warm(instance));
        }
        if pool.busy >= function.config.concurrency {
            return Err(InvokeError::Throttled(format!(
                "Rate Exceeded. (Reason: ReservedFunctionConcurrentInvocationLimitExceeded, {} of {})",
                pool.busy, function.config.concurrency
            )));
        }
        pool.busy += 1;
        pool.next_id += 1;
        Ok(Acquired::Cold(Instance {
            id: pool.next_id,
            last_used: now,
        }))
    }

    fn release(&self, function: &Function, instance: Option<Instance>) {
        let mut pool = function.pool.lock();
        pool.busy = pool.busy.saturating_sub(1);
        if let Some(mut instance) = instance {
            instance.last_used = Instant::now();
            pool.idle.push(instance);
        }
    }

    /// The environment with secrets decrypted, for one invocation.
    fn environment(&self, function: &Function) -> Result<BTreeMap<String, String>, HandlerError> {
        let mut out = BTreeMap::new();
        for (key, value) in &function.config.environment {
            let value = match value {
                EnvValue::Plain(text) => text.clone(),
                EnvValue::Secret(name) => {
                    let store = self.inner.secrets.as_ref().ok_or_else(|| {
                        HandlerError::new("Runtime.SecretError", "no secret store is configured")
                    })?;
                    store.get(name).map_err(|error| {
                        HandlerError::new("Runtime.SecretError", error.to_string())
                    })?
                }
            };
            out.insert(key.clone(), value);
        }
        Ok(out)
    }

    /// Invokes `name` synchronously (`RequestResponse`).
    pub async fn invoke(
        &self,
        name: &str,
        event: Value,
        caller: &Caller,
    ) -> Result<Invocation, InvokeError> {
        let function = Arc::clone(self.function(name)?);
        self.check_invoke_policy(&function, caller)?;
        let start = Start {
            request_id: request_id(),
            trace: caller.trace.clone(),
            links: Vec::new(),
        };
        self.invoke_authorized(&function, event, start).await
    }

    /// Runs an invocation whose caller was already authorized: the
    /// service's own deliveries (queued events, polled batches) are not
    /// checked against the function policy a second time.
    async fn invoke_authorized(
        &self,
        function: &Arc<Function>,
        event: Value,
        start: Start,
    ) -> Result<Invocation, InvokeError> {
        let acquired = match self.acquire(function) {
            Ok(acquired) => acquired,
            Err(error) => {
                function.metrics.throttled();
                return Err(error);
            }
        };
        Ok(self.run(function, acquired, event, start).await)
    }

    async fn run(
        &self,
        function: &Arc<Function>,
        acquired: Acquired,
        event: Value,
        start: Start,
    ) -> Invocation {
        let config = &function.config;
        let started = Instant::now();
        let Start {
            request_id,
            trace,
            links,
        } = start;
        let trace = function
            .tracer
            .start_named(&config.name, trace, &RequestInfo::default());
        trace.with_segment(|segment| {
            segment.links = links;
            segment
                .aws
                .insert("request_id".into(), json!(request_id.clone()));
            segment.aws.insert(
                "function_arn".into(),
                json!(format!(
                    "arn:aws:lambda:local:000000000000:function:{}",
                    config.name
                )),
            );
        });
        let environment = self.environment(function);
        let context = |deadline: Instant, environment: BTreeMap<String, String>| {
            Context::new(
                context::Invocation {
                    request_id: request_id.clone(),
                    function_name: config.name.clone(),
                    function_version: config.version.clone(),
                    memory_mb: config.memory_mb,
                    deadline,
                    cpu_slowdown: config.cpu_slowdown(),
                    environment,
                    execution_policy: config.execution_policy.clone(),
                },
                trace.clone(),
                self.clone(),
            )
        };
        let (instance, cold) = match acquired {
            Acquired::Warm(instance) => (instance, false),
            Acquired::Cold(instance) => (instance, true),
        };
        let instance_id = instance.id;

        // Cold start: bootstrap and the function's init code, traced.
        let mut init = None;
        let mut init_failed = false;
        let mut outcome: Result<Value, HandlerError> = Ok(Value::Null);
        if cold {
            let init_started = Instant::now();
            let mut subsegment = trace.subsegment("Initialization");
            let deadline = Instant::now() + config.timeout;
            let init_context = context(deadline, environment.clone().unwrap_or_default());
            init_context.compute(config.bootstrap_work).await;
            if let Some(hook) = &config.init
                && let Err(error) = hook(init_context).await
            {
                subsegment
                    .record(|document| document.add_exception(&error.kind, &error.message, false));
                init_failed = true;
                outcome = Err(error);
            }
            subsegment.finish();
            init = Some(init_started.elapsed());
        }

        // The invocation under the timeout.
        let mut timed_out = false;
        if outcome.is_ok() {
            outcome = match environment {
                Err(error) => Err(error),
                Ok(environment) => {
                    let deadline = Instant::now() + config.timeout;
                    let invocation = context(deadline, environment);
                    let run = (config.handler)(event, invocation.clone());
                    match tokio::time::timeout(config.timeout, run).await {
                        Ok(result) => result,
                        Err(_) => {
                            timed_out = true;
                            Err(HandlerError::new(
                                "Sandbox.Timedout",
                                format!(
                                    "Task timed out after {:.2} seconds",
                                    config.timeout.as_secs_f64()
                                ),
                            ))
                        }
                    }
                }
            };
        }
        let duration = started.elapsed() - init.unwrap_or_default();
        // A timed-out or failed-to-initialize instance is discarded.
        let keep = !timed_out && !init_failed;
        self.release(function, keep.then_some(instance));

        if let Err(error) = &outcome {
            trace.with_segment(|segment| segment.add_exception(&error.kind, &error.message, false));
        }
        trace.annotate("cold_start", cold);
        trace.finish(None);
        let billed_ms = (duration + init.unwrap_or_default())
            .as_nanos()
            .div_ceil(1_000_000) as u64;
        let report = Report {
            request_id,
            duration,
            billed_ms,
            init,
            memory_mb: config.memory_mb,
            instance: instance_id,
        };
        function.metrics.invoked(&report, outcome.is_err());
        tracing::debug!(
            function = %config.name,
            request_id = %report.request_id,
            duration_ms = report.duration.as_secs_f64() * 1e3,
            billed_ms = report.billed_ms,
            init_ms = report.init.map(|init| init.as_secs_f64() * 1e3),
            "REPORT"
        );
        Invocation {
            result: outcome,
            report,
        }
    }
}

/// A Lambda-style request id (a UUID v4 shape).
pub fn request_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(0x8000..0xc000),
        fastrand::u64(..1 << 48)
    )
}
