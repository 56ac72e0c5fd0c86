//! The reference workload: a seeded generator of realistic traces, shaped
//! like the demo's topology, for the load generator, the benchmarks and
//! anyone reproducing their figures.
//!
//! The same `seed` and `start_ns` give the same spans, byte for byte.
//!
//! | trace | share | spans |
//! |---|---|---|
//! | `POST /orders`: gateway -> create-order (validate, charge-payment, DynamoDB PutItem, SQS send) -> fulfil-order consumer (DynamoDB UpdateItem) -> send-receipt | 45 % | 13-17 |
//! | `GET /orders/{id}`: gateway -> get-order (authorize, DynamoDB GetItem and Query, inventory over HTTP, render) | 35 % | 9-10 |
//! | `POST /fulfilments`: gateway -> order-fulfilment workflow (Charge with 1-3 attempts, Wait, Parallel: Ship with DynamoDB, Notify with SQS) | 20 % | 18-24 |
//!
//! - 9-24 spans per trace (cold starts add an `Initialization` span to
//!   a function); spans carry 10-15 attributes: `http.*`,
//!   `url.full` (with ids), `rpc.*`, `db.*`, `messaging.*`, `faas.*`,
//!   `aws.request_id` (a fresh UUID), `enduser.id` (one of 50,000 users),
//!   `client.address`, annotations (`order.id`, `customer.tier`,
//!   `order.amount`); resources carry `service.name`, `service.version`,
//!   `cloud.*`, `faas.*`, `deployment.environment`, `telemetry.sdk.*`.
//! - About 2 % of traces fail: a leaf faults (a 5xx, or a throttle) and
//!   the error propagates to the spans above it.
//! - Latency: log-normal around each operation's median with a long tail
//!   (1 % of operations take 5-20x longer); cold starts (3 %) add an
//!   `Initialization` span of 150-900 ms.
//! - Trace ids are random 128-bit; span ids random 64-bit; traces start
//!   `spacing_ns` apart from `start_ns`.

#[doc(hidden)]
pub mod samples;
mod shapes;

pub use shapes::Shape;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

const MS: u64 = 1_000_000;

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn boolean(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// The services of the topology: name, cloud platform, memory (functions).
const SERVICES: [(&str, &str, i64); 11] = [
    ("orders-api", "aws_api_gateway", 0),
    ("create-order", "aws_lambda", 512),
    ("charge-payment", "aws_lambda", 128),
    ("get-order", "aws_lambda", 128),
    ("fulfil-order", "aws_lambda", 256),
    ("send-receipt", "aws_lambda", 128),
    ("order-fulfilment", "aws_step_functions", 0),
    ("charge-card", "aws_lambda", 256),
    ("ship-order", "aws_lambda", 128),
    ("notify-customer", "aws_lambda", 128),
    ("inventory", "aws_ec2", 0),
];

fn resource(service: &str) -> Resource {
    let (name, platform, memory) = SERVICES
        .iter()
        .find(|(name, ..)| *name == service)
        .copied()
        .unwrap_or((service, "aws_ec2", 0));
    let mut attributes = vec![
        text("service.name", name),
        text("service.version", "1.4.2"),
        text("deployment.environment", "production"),
        text("cloud.provider", "aws"),
        text("cloud.region", "eu-west-1"),
        text("cloud.account.id", "123456789012"),
        text("cloud.platform", platform),
        text("telemetry.sdk.name", "opentelemetry"),
        text("telemetry.sdk.language", "rust"),
        text("telemetry.sdk.version", "0.31.0"),
    ];
    if memory > 0 {
        attributes.push(text("faas.name", name));
        attributes.push(text("faas.version", "$LATEST"));
        attributes.push(int("faas.max_memory", memory * 1024 * 1024));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// The generator.
#[derive(Debug, Clone)]
pub struct Workload {
    shape: Shape,
    rng: fastrand::Rng,
    next_start_ns: u64,
    spacing_ns: u64,
}

/// One span being built, with the service it belongs to.
struct Built {
    service: &'static str,
    span: Span,
}

/// Builds one trace.
struct TraceBuilder<'a> {
    rng: &'a mut fastrand::Rng,
    trace_id: Vec<u8>,
    spans: Vec<Built>,
    failed: bool,
    user: String,
    order: String,
}

/// A random trace id: 128 bits, never zero.
pub(crate) fn new_trace_id(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut trace_id = vec![0u8; 16];
    trace_id[..8].copy_from_slice(&rng.u64(1..).to_be_bytes());
    trace_id[8..].copy_from_slice(&rng.u64(..).to_be_bytes());
    trace_id
}

/// A random version-4 UUID, as request ids are.
pub(crate) fn uuid(rng: &mut fastrand::Rng) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        rng.u32(..),
        rng.u16(..),
        rng.u16(..0x1000),
        rng.u16(0x8000..0xc000),
        rng.u64(..1 << 48)
    )
}

/// How a generator's latencies spread around their medians: log-normal
/// with `sigma`, one in `tail_one_in` taking `tail` times longer, never
/// under `floor_ms`.
pub(crate) struct Spread {
    pub(crate) sigma: f64,
    pub(crate) tail_one_in: u32,
    pub(crate) tail: std::ops::Range<f64>,
    pub(crate) floor_ms: f64,
}

/// The reference workload's: sigma 0.5, one in a hundred 5-20x longer.
const REFERENCE_SPREAD: Spread = Spread {
    sigma: 0.5,
    tail_one_in: 100,
    tail: 5.0..20.0,
    floor_ms: 0.05,
};

/// A duration around `median_ms`, in nanoseconds.
pub(crate) fn latency_ns(rng: &mut fastrand::Rng, median_ms: f64, spread: &Spread) -> u64 {
    let (u1, u2) = (rng.f64().max(1e-12), rng.f64());
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let mut ms = median_ms * (spread.sigma * normal).exp();
    if rng.u32(..spread.tail_one_in) == 0 {
        ms *= spread.tail.start + rng.f64() * (spread.tail.end - spread.tail.start);
    }
    (ms.max(spread.floor_ms) * MS as f64) as u64
}

impl TraceBuilder<'_> {
    fn id(&mut self) -> Vec<u8> {
        self.rng.u64(1..).to_be_bytes().to_vec()
    }

    fn uuid(&mut self) -> String {
        uuid(self.rng)
    }

    fn latency(&mut self, median_ms: f64) -> u64 {
        latency_ns(self.rng, median_ms, &REFERENCE_SPREAD)
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        service: &'static str,
        name: &str,
        kind: SpanKind,
        parent: Option<&[u8]>,
        start_ns: u64,
        duration_ns: u64,
        mut attributes: Vec<KeyValue>,
    ) -> Vec<u8> {
        // Internal spans carry what instrumentation adds everywhere: code
        // location, thread, and the request's business keys.
        let filler = [
            "code.namespace",
            "code.filepath",
            "code.lineno",
            "thread.id",
            "thread.name",
            "order.id",
            "enduser.id",
            "process.runtime.name",
        ];
        for key in filler {
            if attributes.len() >= 10 {
                break;
            }
            if attributes.iter().any(|kv| kv.key == key) {
                continue;
            }
            attributes.push(match key {
                "code.namespace" => text(key, format!("{service}::handler")),
                "code.filepath" => text(key, format!("src/{}.rs", service.replace('-', "_"))),
                "code.lineno" => int(key, self.rng.i64(20..400)),
                "thread.id" => int(key, self.rng.i64(1..9)),
                "thread.name" => text(key, "tokio-runtime-worker"),
                "order.id" => text(key, self.order.clone()),
                "enduser.id" => text(key, self.user.clone()),
                _ => text(key, "rust"),
            });
        }
        let span_id = self.id();
        self.spans.push(Built {
            service,
            span: Span {
                trace_id: self.trace_id.clone(),
                span_id: span_id.clone(),
                parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
                name: name.to_string(),
                kind: kind as i32,
                start_time_unix_nano: start_ns,
                end_time_unix_nano: start_ns + duration_ns.max(1_000),
                attributes,
                status: Some(Status::default()),
                flags: 0x100,
                ..Span::default()
            },
        });
        span_id
    }

    fn fail(&mut self, span_id: &[u8], status: i64) {
        for built in self.spans.iter_mut().rev() {
            if built.span.span_id == span_id {
                built.span.status = Some(Status {
                    code: StatusCode::Error as i32,
                    message: format!("upstream answered {status}"),
                });
                built
                    .span
                    .attributes
                    .retain(|kv| kv.key != "http.response.status_code");
                built
                    .span
                    .attributes
                    .push(int("http.response.status_code", status));
            }
        }
    }

    /// A server span of a function, with its cold start when it has one.
    fn function(
        &mut self,
        service: &'static str,
        parent: &[u8],
        start_ns: u64,
        duration_ns: u64,
    ) -> (Vec<u8>, u64) {
        let cold = self.rng.u32(..100) < 3;
        let invocation = self.uuid();
        let attributes = vec![
            text("faas.trigger", "http"),
            text("faas.invocation_id", invocation.clone()),
            boolean("faas.coldstart", cold),
            text("aws.request_id", invocation),
            text(
                "cloud.resource_id",
                format!("arn:aws:lambda:eu-west-1:123456789012:function:{service}"),
            ),
            text("order.id", self.order.clone()),
            text("enduser.id", self.user.clone()),
            text(
                "customer.tier",
                ["gold", "silver", "bronze"][self.rng.usize(..3)],
            ),
            double("order.amount", (self.rng.f64() * 50_000.0).round() / 100.0),
            text("code.namespace", format!("{service}::handler")),
        ];
        let init = if cold { self.latency(350.0) } else { 0 };
        let id = self.span(
            service,
            service,
            SpanKind::Server,
            Some(parent),
            start_ns,
            duration_ns + init,
            attributes,
        );
        if cold {
            self.span(
                service,
                "Initialization",
                SpanKind::Internal,
                Some(&id),
                start_ns,
                init,
                vec![
                    text("faas.name", service),
                    int("faas.max_memory", 128 * 1024 * 1024),
                    text("code.function", "init"),
                ],
            );
        }
        (id, start_ns + init)
    }

    #[allow(clippy::too_many_arguments)]
    fn http_client(
        &mut self,
        service: &'static str,
        name: &str,
        parent: &[u8],
        start_ns: u64,
        duration_ns: u64,
        target: &str,
        method: &str,
        route: &str,
    ) -> Vec<u8> {
        let url = format!(
            "https://{target}.internal{}",
            route.replace("{id}", &self.order)
        );
        let request = self.uuid();
        self.span(
            service,
            name,
            SpanKind::Client,
            Some(parent),
            start_ns,
            duration_ns,
            vec![
                text("http.request.method", method),
                text("url.full", url),
                text("server.address", format!("{target}.internal")),
                int("server.port", 443),
                int("http.response.status_code", 200),
                text("network.protocol.version", "1.1"),
                text("aws.request_id", request),
                text("peer.service", target),
                text("http.route", route),
                text("user_agent.original", "aws-sdk-rust/1.3 os/linux lang/rust"),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn aws_call(
        &mut self,
        service: &'static str,
        rpc_service: &str,
        method: &str,
        parent: &[u8],
        start_ns: u64,
        median_ms: f64,
        extra: Vec<KeyValue>,
    ) -> (Vec<u8>, u64) {
        let duration = self.latency(median_ms);
        let request = self.uuid();
        let kind = if method == "SendMessage" {
            SpanKind::Producer
        } else {
            SpanKind::Client
        };
        let mut attributes = vec![
            text("rpc.system", "aws-api"),
            text("rpc.service", rpc_service),
            text("rpc.method", method),
            text("aws.request_id", request),
            text("cloud.region", "eu-west-1"),
            text(
                "server.address",
                format!("{}.eu-west-1.amazonaws.com", rpc_service.to_lowercase()),
            ),
            int("server.port", 443),
            int("http.response.status_code", 200),
            text("http.request.method", "POST"),
            int("aws.retries", 0),
        ];
        attributes.extend(extra);
        let id = self.span(
            service,
            &format!("{rpc_service}.{method}"),
            kind,
            Some(parent),
            start_ns,
            duration,
            attributes,
        );
        (id, duration)
    }

    fn dynamodb(
        &mut self,
        service: &'static str,
        method: &str,
        parent: &[u8],
        start_ns: u64,
    ) -> (Vec<u8>, u64) {
        let extra = vec![
            text("db.system", "dynamodb"),
            text("db.operation", method),
            text("aws.dynamodb.table_names", "orders"),
            double("aws.dynamodb.consumed_capacity", 1.0),
        ];
        self.aws_call(service, "DynamoDB", method, parent, start_ns, 6.0, extra)
    }

    fn sqs(&mut self, service: &'static str, parent: &[u8], start_ns: u64) -> (Vec<u8>, u64) {
        let message = self.uuid();
        let extra = vec![
            text("messaging.system", "aws_sqs"),
            text("messaging.destination.name", "order-events"),
            text("messaging.operation", "publish"),
            text("messaging.message.id", message),
        ];
        self.aws_call(service, "SQS", "SendMessage", parent, start_ns, 9.0, extra)
    }

    /// The gateway's server span and its call to a function: (client span, start).
    fn gateway(
        &mut self,
        start_ns: u64,
        method: &str,
        route: &str,
        total_ns: u64,
    ) -> (Vec<u8>, Vec<u8>, u64) {
        let path = route.replace("{id}", &self.order);
        let client_ip = format!(
            "{}.{}.{}.{}",
            self.rng.u8(1..224),
            self.rng.u8(..),
            self.rng.u8(..),
            self.rng.u8(1..)
        );
        let request = self.uuid();
        let root = self.span(
            "orders-api",
            &format!("{method} {route}"),
            SpanKind::Server,
            None,
            start_ns,
            total_ns,
            vec![
                text("http.request.method", method),
                text("url.full", format!("https://api.example.com/prod{path}")),
                text("url.path", format!("/prod{path}")),
                text("http.route", route.to_string()),
                int(
                    "http.response.status_code",
                    if method == "POST" { 201 } else { 200 },
                ),
                text("client.address", client_ip),
                text(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                ),
                text("enduser.id", self.user.clone()),
                text("aws.request_id", request),
                text("aws.api_gateway.stage", "prod"),
                text("network.protocol.version", "1.1"),
            ],
        );
        let call_start = start_ns + MS / 2;
        let call = self.span(
            "orders-api",
            "Lambda.Invoke",
            SpanKind::Client,
            Some(&root),
            call_start,
            total_ns.saturating_sub(MS),
            vec![
                text("rpc.system", "aws-api"),
                text("rpc.service", "Lambda"),
                text("rpc.method", "Invoke"),
                text("faas.invoked_name", "function"),
                text("faas.invoked_provider", "aws"),
                text("faas.invoked_region", "eu-west-1"),
                int("http.response.status_code", 200),
                text("http.request.method", "POST"),
                text("server.address", "lambda.eu-west-1.amazonaws.com"),
                int("server.port", 443),
            ],
        );
        (root, call, call_start + MS / 4)
    }
}

impl Workload {
    /// A generator; traces start at `start_ns`, `spacing_ns` apart.
    pub fn new(seed: u64, start_ns: u64, spacing_ns: u64) -> Self {
        Self::with_shape(Shape::Reference, seed, start_ns, spacing_ns)
    }

    /// A generator of `shape`'s traces (see [`Shape`]).
    pub fn with_shape(shape: Shape, seed: u64, start_ns: u64, spacing_ns: u64) -> Self {
        Self {
            shape,
            rng: fastrand::Rng::with_seed(seed),
            next_start_ns: start_ns,
            spacing_ns,
        }
    }

    /// The next trace, grouped by service (one `ResourceSpans` each).
    pub fn next_trace(&mut self) -> Vec<ResourceSpans> {
        let start_ns = self.next_start_ns;
        self.next_start_ns += self.spacing_ns;
        match self.shape {
            Shape::Reference => self.reference_trace(start_ns),
            Shape::Api => shapes::api_trace(&mut self.rng, start_ns),
            Shape::Serverless => shapes::serverless_trace(&mut self.rng, start_ns),
            Shape::Mesh => shapes::mesh_trace(&mut self.rng, start_ns),
        }
    }

    fn reference_trace(&mut self, start_ns: u64) -> Vec<ResourceSpans> {
        let trace_id = new_trace_id(&mut self.rng);
        let user = format!("user-{:05}", self.rng.u32(..50_000));
        let order = format!("o-{:012x}", self.rng.u64(..1 << 48));
        let failed = self.rng.u32(..100) < 2;
        let pick = self.rng.u32(..100);
        let mut builder = TraceBuilder {
            rng: &mut self.rng,
            trace_id,
            spans: Vec::new(),
            failed,
            user,
            order,
        };
        if pick < 45 {
            create_order(&mut builder, start_ns);
        } else if pick < 80 {
            get_order(&mut builder, start_ns);
        } else {
            fulfilment(&mut builder, start_ns);
        }
        group(builder.spans)
    }

    /// Traces until at least `spans` spans, merged per service.
    pub fn batch(&mut self, spans: usize) -> Vec<ResourceSpans> {
        let mut built: Vec<ResourceSpans> = Vec::new();
        let mut count = 0;
        while count < spans {
            for resource_spans in self.next_trace() {
                count += resource_spans
                    .scope_spans
                    .iter()
                    .map(|scope| scope.spans.len())
                    .sum::<usize>();
                if self.shape != Shape::Reference {
                    shapes::merge(&mut built, resource_spans);
                    continue;
                }
                let service = service_of(&resource_spans);
                match built
                    .iter_mut()
                    .find(|existing| service_of(existing) == service)
                {
                    Some(existing) => existing.scope_spans[0].spans.extend(
                        resource_spans
                            .scope_spans
                            .into_iter()
                            .flat_map(|scope| scope.spans),
                    ),
                    None => built.push(resource_spans),
                }
            }
        }
        built
    }
}

fn service_of(resource_spans: &ResourceSpans) -> Option<&str> {
    resource_spans
        .resource
        .as_ref()?
        .attributes
        .iter()
        .find_map(|kv| {
            (kv.key == "service.name").then_some(())?;
            match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(name) => Some(name.as_str()),
                _ => None,
            }
        })
}

fn group(spans: Vec<Built>) -> Vec<ResourceSpans> {
    let mut out: Vec<(&'static str, Vec<Span>)> = Vec::new();
    for built in spans {
        match out
            .iter_mut()
            .find(|(service, _)| *service == built.service)
        {
            Some((_, spans)) => spans.push(built.span),
            None => out.push((built.service, vec![built.span])),
        }
    }
    out.into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(resource(service)),
            scope_spans: vec![ScopeSpans {
                scope: Some(
                    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                        name: "tracelake-workload".into(),
                        version: "1".into(),
                        ..Default::default()
                    },
                ),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        })
        .collect()
}

fn create_order(trace: &mut TraceBuilder<'_>, start_ns: u64) {
    let total = trace.latency(180.0) + 40 * MS;
    let (root, call, at) = trace.gateway(start_ns, "POST", "/orders", total);
    let (function, mut at) = trace.function("create-order", &call, at, total - 2 * MS);
    let validate = trace.latency(1.5);
    trace.span(
        "create-order",
        "validate order",
        SpanKind::Internal,
        Some(&function),
        at,
        validate,
        vec![
            text("code.function", "validate"),
            text("order.id", trace.order.clone()),
        ],
    );
    at += validate;
    let charge_ns = trace.latency(60.0);
    let charge_call = trace.http_client(
        "create-order",
        "Lambda.Invoke charge-payment",
        &function,
        at,
        charge_ns,
        "charge-payment",
        "POST",
        "/charges/{id}",
    );
    let (charge, charge_at) = trace.function(
        "charge-payment",
        &charge_call,
        at + MS / 4,
        charge_ns - MS / 2,
    );
    let risk = (trace.rng.f64() * 100.0).round() / 100.0;
    trace.span(
        "charge-payment",
        "score payment",
        SpanKind::Internal,
        Some(&charge),
        charge_at,
        charge_ns / 2,
        vec![text("code.function", "score"), double("risk.score", risk)],
    );
    at += charge_ns;
    let (put, put_ns) = trace.dynamodb("create-order", "PutItem", &function, at);
    at += put_ns;
    let (send, send_ns) = trace.sqs("create-order", &function, at);
    at += send_ns;
    let receipt_ns = trace.latency(15.0);
    let receipt_call = trace.http_client(
        "create-order",
        "Lambda.Invoke send-receipt",
        &function,
        at,
        2 * MS,
        "send-receipt",
        "POST",
        "/receipts/{id}",
    );
    trace.function("send-receipt", &receipt_call, at + MS, receipt_ns);
    // The queue's consumer, later.
    let consume_at = at + trace.latency(40.0);
    let consumer_ns = trace.latency(20.0) + 8 * MS;
    let (consumer, consumer_at) = trace.function("fulfil-order", &send, consume_at, consumer_ns);
    trace.dynamodb("fulfil-order", "UpdateItem", &consumer, consumer_at + MS);
    if trace.failed {
        // The table throttled the order's write.
        trace.fail(&put, 400);
        trace.fail(&function, 500);
        trace.fail(&call, 502);
        trace.fail(&root, 502);
    }
}

fn get_order(trace: &mut TraceBuilder<'_>, start_ns: u64) {
    let total = trace.latency(25.0) + 8 * MS;
    let (root, call, at) = trace.gateway(start_ns, "GET", "/orders/{id}", total);
    let (function, mut at) = trace.function("get-order", &call, at, total - 2 * MS);
    let authorize_ns = trace.latency(0.4);
    trace.span(
        "get-order",
        "authorize",
        SpanKind::Internal,
        Some(&function),
        at,
        authorize_ns,
        vec![
            text("code.function", "authorize"),
            text("auth.scheme", "api-key"),
        ],
    );
    at += authorize_ns;
    let (get, get_ns) = trace.dynamodb("get-order", "GetItem", &function, at);
    at += get_ns;
    let (_, query_ns) = trace.dynamodb("get-order", "Query", &function, at);
    at += query_ns;
    let stock_ns = trace.latency(4.0) + MS;
    let stock_call = trace.http_client(
        "get-order",
        "GET /stock/{sku}",
        &function,
        at,
        stock_ns,
        "inventory",
        "GET",
        "/stock/{id}",
    );
    let sku = format!("sku-{}", trace.rng.u32(1..=500));
    trace.span(
        "inventory",
        "GET /stock/{sku}",
        SpanKind::Server,
        Some(&stock_call),
        at + MS / 4,
        stock_ns - MS / 2,
        vec![
            text("http.request.method", "GET"),
            text("url.path", format!("/stock/{sku}")),
            text("http.route", "/stock/{sku}"),
            int("http.response.status_code", 200),
            text("server.address", "inventory.internal"),
            text("net.host.name", "ip-10-0-3-17"),
            text("sku", sku),
        ],
    );
    at += stock_ns;
    let (render_ns, items) = (trace.latency(0.8), trace.rng.i64(1..8));
    trace.span(
        "get-order",
        "render order",
        SpanKind::Internal,
        Some(&function),
        at,
        render_ns,
        vec![text("code.function", "render"), int("order.items", items)],
    );
    if trace.failed {
        trace.fail(&get, 500);
        trace.fail(&function, 500);
        trace.fail(&call, 502);
        trace.fail(&root, 502);
    }
}

fn fulfilment(trace: &mut TraceBuilder<'_>, start_ns: u64) {
    let gateway_ns = trace.latency(30.0) + 5 * MS;
    let (root, call, at) = trace.gateway(start_ns, "POST", "/fulfilments", gateway_ns);
    let execution = trace.uuid();
    let workflow_start = at;
    let workflow = trace.span(
        "order-fulfilment",
        "order-fulfilment",
        SpanKind::Server,
        Some(&call),
        at,
        0,
        vec![
            text(
                "aws.step_functions.execution_arn",
                format!(
                    "arn:aws:states:eu-west-1:123456789012:execution:order-fulfilment:{execution}"
                ),
            ),
            text("order.id", trace.order.clone()),
            text("enduser.id", trace.user.clone()),
        ],
    );
    let mut at = at + MS;
    // Charge: one to three attempts.
    let attempts = 1 + usize::from(trace.rng.u32(..3) == 0) + usize::from(trace.rng.u32(..9) == 0);
    let state = trace.span(
        "order-fulfilment",
        "Charge",
        SpanKind::Internal,
        Some(&workflow),
        at,
        0,
        vec![text("state.type", "Task")],
    );
    let state_start = at;
    for attempt in 1..=attempts {
        let ns = trace.latency(30.0);
        let invoke = trace.span(
            "order-fulfilment",
            "Lambda",
            SpanKind::Client,
            Some(&state),
            at,
            ns,
            vec![
                text("rpc.system", "aws-api"),
                text("rpc.service", "Lambda"),
                text("rpc.method", "Invoke"),
                text("faas.invoked_name", "charge-card"),
                int("attempt", attempt as i64),
            ],
        );
        let (function, _) = trace.function("charge-card", &invoke, at + MS / 4, ns - MS / 2);
        if attempt < attempts {
            trace.fail(&function, 504);
            trace.fail(&invoke, 504);
        }
        at += ns + 200 * MS * (1 << (attempt - 1));
    }
    set_end(trace, &state, at - state_start);
    trace.span(
        "order-fulfilment",
        "AwaitPickup",
        SpanKind::Internal,
        Some(&workflow),
        at,
        2_000 * MS,
        vec![text("state.type", "Wait")],
    );
    at += 2_000 * MS;
    let parallel = trace.span(
        "order-fulfilment",
        "Fulfil",
        SpanKind::Internal,
        Some(&workflow),
        at,
        0,
        vec![text("state.type", "Parallel")],
    );
    let mut longest = 0;
    for (state_name, function_name) in [("Ship", "ship-order"), ("Notify", "notify-customer")] {
        let ns = trace.latency(25.0) + 5 * MS;
        let branch = trace.span(
            "order-fulfilment",
            state_name,
            SpanKind::Internal,
            Some(&parallel),
            at,
            ns,
            vec![text("state.type", "Task")],
        );
        let invoke = trace.span(
            "order-fulfilment",
            "Lambda",
            SpanKind::Client,
            Some(&branch),
            at + MS / 4,
            ns - MS / 2,
            vec![
                text("rpc.system", "aws-api"),
                text("rpc.service", "Lambda"),
                text("rpc.method", "Invoke"),
                text("faas.invoked_name", function_name),
            ],
        );
        let (function, function_at) = trace.function(
            if function_name == "ship-order" {
                "ship-order"
            } else {
                "notify-customer"
            },
            &invoke,
            at + MS / 2,
            ns - MS,
        );
        if function_name == "ship-order" {
            let (put, _) = trace.dynamodb("ship-order", "PutItem", &function, function_at + MS / 2);
            if trace.failed {
                trace.fail(&put, 503);
                trace.fail(&function, 500);
                trace.fail(&invoke, 500);
                trace.fail(&branch, 500);
                trace.fail(&workflow, 500);
            }
        } else {
            trace.sqs("notify-customer", &function, function_at + MS / 2);
        }
        longest = longest.max(ns);
    }
    set_end(trace, &parallel, longest);
    set_end(trace, &workflow, at + longest - workflow_start);
    let _ = root;
}

fn set_end(trace: &mut TraceBuilder<'_>, span_id: &[u8], duration_ns: u64) {
    for built in trace.spans.iter_mut() {
        if built.span.span_id == span_id {
            built.span.end_time_unix_nano =
                built.span.start_time_unix_nano + duration_ns.max(1_000);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// Every span of a batch or trace, in order.
    pub(crate) fn spans(trace: &[ResourceSpans]) -> Vec<&Span> {
        trace
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| &scope.spans)
            .collect()
    }

    #[test]
    fn traces_have_the_documented_shape() {
        let mut workload = Workload::new(7, 1_767_225_600_000_000_000, 1_000_000);
        let mut errors = 0;
        let mut trace_ids = BTreeSet::new();
        let mut sizes = Vec::new();
        for _ in 0..2_000 {
            let trace = workload.next_trace();
            let spans = spans(&trace);
            sizes.push(spans.len());
            assert!((8..=30).contains(&spans.len()), "{} spans", spans.len());
            for span in &spans {
                assert!(
                    (3..=15).contains(&span.attributes.len()),
                    "{}: {}",
                    span.name,
                    span.attributes.len()
                );
                assert!(span.end_time_unix_nano > span.start_time_unix_nano);
            }
            // One root; every parent is in the trace.
            let ids: BTreeSet<&[u8]> = spans.iter().map(|span| span.span_id.as_slice()).collect();
            assert_eq!(
                spans
                    .iter()
                    .filter(|span| span.parent_span_id.is_empty())
                    .count(),
                1
            );
            assert!(spans.iter().all(|span| span.parent_span_id.is_empty()
                || ids.contains(span.parent_span_id.as_slice())));
            trace_ids.insert(spans[0].trace_id.clone());
            let root = spans
                .iter()
                .find(|span| span.parent_span_id.is_empty())
                .unwrap();
            if root
                .status
                .as_ref()
                .is_some_and(|status| status.code == StatusCode::Error as i32)
            {
                errors += 1;
            }
        }
        assert_eq!(trace_ids.len(), 2_000, "random trace ids");
        assert!(
            (20..=80).contains(&errors),
            "{errors} failed traces of 2,000"
        );
        let average = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!(
            (10.0..=20.0).contains(&average),
            "{average} spans per trace"
        );

        // Seeded: the same seed gives the same bytes.
        let again: Vec<u8> = Workload::new(7, 1, 1)
            .batch(500)
            .iter()
            .flat_map(Message::encode_to_vec)
            .collect();
        let same: Vec<u8> = Workload::new(7, 1, 1)
            .batch(500)
            .iter()
            .flat_map(Message::encode_to_vec)
            .collect();
        assert_eq!(again, same);
        let batch = Workload::new(8, 1, 1).batch(1_000);
        let count: usize = batch.iter().map(|r| r.scope_spans[0].spans.len()).sum();
        assert!(count >= 1_000);
        let services: BTreeSet<_> = batch.iter().filter_map(service_of).collect();
        assert_eq!(services.len(), batch.len(), "one ResourceSpans per service");
    }
}
