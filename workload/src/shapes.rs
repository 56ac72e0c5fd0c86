//! Workloads shaped unlike the reference one, for measuring storage and
//! ingest on data the project was not tuned on. Each is seeded: the same
//! seed and start give the same spans.
//!
//! | shape | what it is | spans per trace | what makes it hard |
//! |---|---|---|---|
//! | `api` | five services behind a web frontend, DynamoDB and a payment provider | 4-9 | routes with ids in `url.full` and `http.target`, a fresh request id per call, 200,000 users, DynamoDB capacity as doubles |
//! | `serverless` | Lambda functions and ECS tasks, SQS and S3, two instrumentation scopes per service | 6-11 | about 400 bytes of OTLP per span: per-instance resources (log streams, task ARNs, container ids), S3 keys and message ids, exception events with stack traces on 4 % of traces |
//! | `mesh` | gRPC microservices on Kubernetes with Postgres, Redis and Kafka | 30-135 | deep traces, pod-level resources, SQL statements, Kafka offsets and partitions, code locations on internal spans |

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::{MS, Spread, boolean, double, int, latency_ns, new_trace_id, text, uuid};

/// Which generator a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The reference workload (the demo's topology); see the crate docs.
    Reference,
    Api,
    Serverless,
    Mesh,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Reference, Shape::Api, Shape::Serverless, Shape::Mesh];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Reference => "reference",
            Shape::Api => "api",
            Shape::Serverless => "serverless",
            Shape::Mesh => "mesh",
        }
    }
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Shape::ALL
            .into_iter()
            .find(|shape| shape.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Shape::ALL.iter().map(|shape| shape.name()).collect();
                format!("unknown shape {text:?}: one of {}", names.join(", "))
            })
    }
}

/// Builds one trace of a shape: spans grouped by (resource, scope).
pub(crate) struct Trace<'a> {
    rng: &'a mut fastrand::Rng,
    trace_id: Vec<u8>,
    out: Vec<ResourceSpans>,
}

/// A span's identity in the trace, to parent others on.
type SpanId = Vec<u8>;

/// What a span is, before its ids and times.
struct Spec<'a> {
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    error: bool,
    events: Vec<Event>,
    resource: &'a Resource,
    scope: &'a InstrumentationScope,
}

impl<'a> Spec<'a> {
    /// A span of `resource` by `scope`: not failed, no events.
    fn new(
        resource: &'a Resource,
        scope: &'a InstrumentationScope,
        name: impl Into<String>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            attributes,
            error: false,
            events: Vec::new(),
            resource,
            scope,
        }
    }

    fn failed(mut self, error: bool) -> Self {
        self.error = error;
        self
    }

    fn with_events(mut self, events: Vec<Event>) -> Self {
        self.events = events;
        self
    }
}

impl<'a> Trace<'a> {
    pub(crate) fn new(rng: &'a mut fastrand::Rng) -> Self {
        let trace_id = new_trace_id(rng);
        Self {
            rng,
            trace_id,
            out: Vec::new(),
        }
    }

    pub(crate) fn finish(self) -> Vec<ResourceSpans> {
        self.out
    }

    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from_digit(self.rng.u32(..16), 16).unwrap_or('0'))
            .collect()
    }

    fn uuid(&mut self) -> String {
        uuid(self.rng)
    }

    /// A duration around `median_ms`: log-normal (sigma 0.6), one in fifty
    /// 4-15x longer: wider than the reference workload's.
    fn latency(&mut self, median_ms: f64) -> u64 {
        const SHAPES_SPREAD: Spread = Spread {
            sigma: 0.6,
            tail_one_in: 50,
            tail: 4.0..15.0,
            floor_ms: 0.02,
        };
        latency_ns(self.rng, median_ms, &SHAPES_SPREAD)
    }

    fn add(&mut self, spec: Spec<'_>, parent: Option<&[u8]>, start_ns: u64, end_ns: u64) -> SpanId {
        let span_id = self.rng.u64(1..).to_be_bytes().to_vec();
        let span = Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            name: spec.name,
            kind: spec.kind as i32,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: end_ns.max(start_ns),
            attributes: spec.attributes,
            events: spec.events,
            status: Some(Status {
                code: if spec.error {
                    StatusCode::Error as i32
                } else {
                    StatusCode::Unset as i32
                },
                ..Status::default()
            }),
            flags: 0x100,
            ..Span::default()
        };
        let resource_index = match self
            .out
            .iter()
            .position(|group| group.resource.as_ref() == Some(spec.resource))
        {
            Some(index) => index,
            None => {
                self.out.push(ResourceSpans {
                    resource: Some(spec.resource.clone()),
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    ..ResourceSpans::default()
                });
                self.out.len() - 1
            }
        };
        let scopes = &mut self.out[resource_index].scope_spans;
        match scopes
            .iter_mut()
            .find(|scope| scope.scope.as_ref() == Some(spec.scope))
        {
            Some(scope) => scope.spans.push(span),
            None => scopes.push(ScopeSpans {
                scope: Some(spec.scope.clone()),
                spans: vec![span],
                ..ScopeSpans::default()
            }),
        }
        span_id
    }
}

/// Merges `group` into `into`: same resource and scope share one entry.
pub(crate) fn merge(into: &mut Vec<ResourceSpans>, group: ResourceSpans) {
    let Some(existing) = into
        .iter_mut()
        .find(|existing| existing.resource == group.resource)
    else {
        into.push(group);
        return;
    };
    for scope_spans in group.scope_spans {
        match existing
            .scope_spans
            .iter_mut()
            .find(|scope| scope.scope == scope_spans.scope)
        {
            Some(scope) => scope.spans.extend(scope_spans.spans),
            None => existing.scope_spans.push(scope_spans),
        }
    }
}

fn scope(name: &str, version: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.into(),
        version: version.into(),
        ..InstrumentationScope::default()
    }
}

fn resource(attributes: Vec<KeyValue>) -> Resource {
    Resource {
        attributes,
        ..Resource::default()
    }
}

fn sdk(language: &str, version: &str) -> [KeyValue; 3] {
    [
        text("telemetry.sdk.name", "opentelemetry"),
        text("telemetry.sdk.language", language),
        text("telemetry.sdk.version", version),
    ]
}

fn exception(time_ns: u64, kind: &str, message: String, frames: &[&str]) -> Event {
    let mut stack = format!("{kind}: {message}");
    for frame in frames {
        stack.push_str("\n    at ");
        stack.push_str(frame);
    }
    Event {
        time_unix_nano: time_ns,
        name: "exception".into(),
        attributes: vec![
            text("exception.type", kind),
            text("exception.message", message),
            text("exception.stacktrace", stack),
            boolean("exception.escaped", false),
        ],
        ..Event::default()
    }
}

// ---------------------------------------------------------------- api

const API_SERVICES: [&str; 5] = ["web-frontend", "accounts", "catalog", "cart", "payments"];

/// `api`: the frontend serves one of five routes, each calling one or two
/// services, which call DynamoDB and (payments) a provider over HTTPS.
pub(crate) fn api_trace(rng: &mut fastrand::Rng, start_ns: u64) -> Vec<ResourceSpans> {
    let hosts: Vec<Resource> = API_SERVICES
        .iter()
        .map(|service| {
            let host = rng.u32(..4);
            let mut attributes = vec![
                text("service.name", *service),
                text("service.version", "2.31.0"),
                text("deployment.environment", "prod"),
                text(
                    "host.name",
                    format!("ip-10-0-{}-{}.ec2.internal", host, 10 + host),
                ),
                text("cloud.provider", "aws"),
                text("cloud.region", "us-east-1"),
                text("os.type", "linux"),
            ];
            attributes.extend(sdk("java", "1.42.1"));
            resource(attributes)
        })
        .collect();
    let server_scope = scope("io.opentelemetry.tomcat-10.0", "2.8.0-alpha");
    let client_scope = scope("io.opentelemetry.aws-sdk-2.2", "2.8.0-alpha");
    let http_scope = scope("io.opentelemetry.java-http-client", "2.8.0-alpha");
    let mut trace = Trace::new(rng);
    let user = trace.rng.u32(..200_000);
    let request_id = trace.uuid();
    let failed = trace.rng.u32(..100) < 3;
    let (route, target, services): (&str, String, &[usize]) = match trace.rng.u32(..5) {
        0 => ("/api/users/{id}", format!("/api/users/{user}"), &[1]),
        1 => (
            "/api/products/{sku}",
            format!("/api/products/SKU-{:06}?ref=home", trace.rng.u32(..40_000)),
            &[2],
        ),
        2 => (
            "/api/users/{id}/cart",
            format!("/api/users/{user}/cart"),
            &[3, 2],
        ),
        3 => (
            "/api/users/{id}/cart/items/{sku}",
            format!(
                "/api/users/{user}/cart/items/SKU-{:06}",
                trace.rng.u32(..40_000)
            ),
            &[3],
        ),
        _ => (
            "/api/orders/{id}/checkout",
            format!("/api/orders/{}/checkout", trace.uuid()),
            &[3, 4],
        ),
    };
    let path = target.split('?').next().unwrap_or_default();
    let method = if route.ends_with("checkout") || route.contains("items") {
        "POST"
    } else {
        "GET"
    };
    let total = trace.latency(40.0);
    let status = if failed { 500 } else { 200 };
    let root = trace.add(
        Spec::new(
            &hosts[0],
            &server_scope,
            format!("{method} {route}"),
            SpanKind::Server,
            vec![
                text("http.request.method", method),
                text("http.route", route),
                text("url.path", path),
                text("url.full", format!("https://shop.example.com{target}")),
                text("url.scheme", "https"),
                int("http.response.status_code", status),
                text(
                    "user_agent.original",
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
                ),
                text(
                    "client.address",
                    format!("203.0.{}.{}", user % 250, user % 199),
                ),
                text("enduser.id", format!("u{user}")),
                text("http.request.header.x-request-id", request_id.clone()),
                text("network.protocol.version", "1.1"),
            ],
        )
        .failed(failed),
        None,
        start_ns,
        start_ns + total + 2 * MS,
    );
    let mut at = start_ns + MS / 2;
    for (index, &service) in services.iter().enumerate() {
        let name = API_SERVICES[service];
        let call = trace.latency(12.0);
        let call_failed = failed && index + 1 == services.len();
        let client = trace.add(
            Spec::new(
                &hosts[0],
                &http_scope,
                format!("{method} {name}"),
                SpanKind::Client,
                vec![
                    text("http.request.method", method),
                    text("url.full", format!("http://{name}.internal:8080{target}")),
                    text("server.address", format!("{name}.internal")),
                    int("server.port", 8080),
                    int(
                        "http.response.status_code",
                        if call_failed { 500 } else { 200 },
                    ),
                    text("peer.service", name),
                ],
            )
            .failed(call_failed),
            Some(&root),
            at,
            at + call + MS,
        );
        let server = trace.add(
            Spec::new(
                &hosts[service],
                &server_scope,
                format!("{method} {route}"),
                SpanKind::Server,
                vec![
                    text("http.request.method", method),
                    text("http.route", route),
                    text("url.path", path),
                    int(
                        "http.response.status_code",
                        if call_failed { 500 } else { 200 },
                    ),
                    text("enduser.id", format!("u{user}")),
                    text("http.request.header.x-request-id", request_id.clone()),
                ],
            )
            .failed(call_failed),
            Some(&client),
            at + MS / 4,
            at + call + MS / 2,
        );
        let mut inner = at + MS / 2;
        let operations: &[&str] = match service {
            2 => &["BatchGetItem"],
            3 => &["GetItem", "UpdateItem"],
            4 => &["PutItem"],
            _ => &["GetItem"],
        };
        for operation in operations {
            let duration = trace.latency(3.0);
            let table = match service {
                1 => "accounts",
                2 => "products",
                3 => "carts",
                _ => "payments",
            };
            let request = format!(
                "{}{}",
                trace.hex(8).to_uppercase(),
                trace.hex(44).to_uppercase()
            );
            let capacity = 0.5 * f64::from(trace.rng.u32(1..9));
            trace.add(
                Spec::new(
                    &hosts[service],
                    &client_scope,
                    format!("DynamoDB.{operation}"),
                    SpanKind::Client,
                    vec![
                        text("rpc.system", "aws-api"),
                        text("rpc.service", "DynamoDB"),
                        text("rpc.method", *operation),
                        text("db.system", "dynamodb"),
                        text("aws.dynamodb.table_names", table),
                        double("aws.dynamodb.consumed_capacity", capacity),
                        text("aws.request_id", request),
                        text("server.address", "dynamodb.us-east-1.amazonaws.com"),
                        int("http.response.status_code", 200),
                    ],
                ),
                Some(&server),
                inner,
                inner + duration,
            );
            inner += duration + MS / 10;
        }
        if service == 4 {
            let duration = trace.latency(180.0);
            let charge = format!("ch_{}", trace.hex(24));
            trace.add(
                Spec::new(
                    &hosts[service],
                    &http_scope,
                    "POST",
                    SpanKind::Client,
                    vec![
                        text("http.request.method", "POST"),
                        text(
                            "url.full",
                            format!("https://api.stripe.com/v1/charges/{charge}/capture"),
                        ),
                        text("server.address", "api.stripe.com"),
                        int("server.port", 443),
                        int(
                            "http.response.status_code",
                            if call_failed { 402 } else { 200 },
                        ),
                    ],
                )
                .failed(call_failed),
                Some(&server),
                inner,
                inner + duration,
            );
        }
        at += call + 2 * MS;
    }
    trace.finish()
}

// ---------------------------------------------------------- serverless

const FUNCTIONS: [(&str, i64); 4] = [
    ("ingest-upload", 1024),
    ("resize-image", 2048),
    ("index-document", 512),
    ("notify-owner", 128),
];

fn lambda_resource(rng: &mut fastrand::Rng, function: &str, memory: i64) -> Resource {
    // Warm instances are reused: eight log streams per function.
    let instance = rng.u32(..8);
    let mut attributes = vec![
        text("service.name", function),
        text("cloud.provider", "aws"),
        text("cloud.platform", "aws_lambda"),
        text("cloud.region", "eu-central-1"),
        text("cloud.account.id", "210987654321"),
        text("faas.name", function),
        text("faas.version", "$LATEST"),
        text(
            "faas.instance",
            format!(
                "2026/12/06/[$LATEST]{:032x}",
                u128::from(instance) * 0x9e37_79b9_7f4a_7c15 + function.len() as u128
            ),
        ),
        int("faas.max_memory", memory * 1024 * 1024),
        text("aws.log.group.names", format!("/aws/lambda/{function}")),
        text("process.runtime.name", "CPython"),
        text("process.runtime.version", "3.12.7"),
    ];
    attributes.extend(sdk("python", "1.27.0"));
    resource(attributes)
}

fn ecs_resource(rng: &mut fastrand::Rng) -> Resource {
    let task = rng.u32(..6);
    let mut attributes = vec![
        text("service.name", "upload-api"),
        text("service.version", "7.2.0"),
        text("cloud.provider", "aws"),
        text("cloud.platform", "aws_ecs"),
        text("cloud.region", "eu-central-1"),
        text(
            "aws.ecs.cluster.arn",
            "arn:aws:ecs:eu-central-1:210987654321:cluster/media",
        ),
        text("aws.ecs.launchtype", "fargate"),
        text(
            "aws.ecs.task.arn",
            format!(
                "arn:aws:ecs:eu-central-1:210987654321:task/media/{:032x}",
                u128::from(task) * 0x5851_f42d_4c95_7f2d
            ),
        ),
        text("aws.ecs.task.family", "upload-api"),
        text("aws.ecs.task.revision", "41"),
        text(
            "container.id",
            format!("{:064x}", u128::from(task) * 0x2545_f491_4f6c_dd1d),
        ),
        text("container.name", "upload-api"),
    ];
    attributes.extend(sdk("nodejs", "1.26.0"));
    resource(attributes)
}

/// `serverless`: an upload API on ECS puts an object in S3 and a message
/// in SQS; Lambda functions resize, index and notify, each a handler span
/// with AWS SDK calls under it (a second instrumentation scope).
pub(crate) fn serverless_trace(rng: &mut fastrand::Rng, start_ns: u64) -> Vec<ResourceSpans> {
    let api = ecs_resource(rng);
    let lambdas: Vec<Resource> = FUNCTIONS
        .iter()
        .map(|(function, memory)| lambda_resource(rng, function, *memory))
        .collect();
    let http_scope = scope("@opentelemetry/instrumentation-http", "0.53.0");
    let sdk_scope = scope("@opentelemetry/instrumentation-aws-sdk", "0.44.0");
    let handler_scope = scope("opentelemetry.instrumentation.aws_lambda", "0.48b0");
    let boto_scope = scope("opentelemetry.instrumentation.botocore", "0.48b0");
    let mut trace = Trace::new(rng);
    let failed = trace.rng.u32(..100) < 4;
    let owner = format!("acct-{:07}", trace.rng.u32(..2_000_000));
    let object = format!(
        "uploads/{owner}/2026/12/06/{}.{}",
        trace.uuid(),
        ["jpg", "png", "pdf", "heic"][trace.rng.usize(..4)]
    );
    let size = i64::from(trace.rng.u32(20_000..25_000_000));
    let total = trace.latency(120.0);
    let root = trace.add(
        Spec::new(
            &api,
            &http_scope,
            "POST /v2/uploads",
            SpanKind::Server,
            vec![
                text("http.request.method", "POST"),
                text("http.route", "/v2/uploads"),
                text(
                    "url.full",
                    format!("https://media.example.net/v2/uploads?owner={owner}"),
                ),
                int("http.response.status_code", 201),
                int("http.request.body.size", size),
                text("user_agent.original", "okhttp/4.12.0"),
                text("enduser.id", owner.clone()),
                text("net.host.name", "media.example.net"),
            ],
        ),
        None,
        start_ns,
        start_ns + total + 5 * MS,
    );
    let put = trace.latency(60.0);
    let put_request = trace.hex(16).to_uppercase();
    trace.add(
        Spec::new(
            &api,
            &sdk_scope,
            "S3.PutObject",
            SpanKind::Client,
            vec![
                text("rpc.system", "aws-api"),
                text("rpc.service", "S3"),
                text("rpc.method", "PutObject"),
                text("aws.s3.bucket", "media-uploads-prod"),
                text("aws.s3.key", object.clone()),
                text("aws.request_id", put_request),
                int("http.response.status_code", 200),
            ],
        ),
        Some(&root),
        start_ns + MS,
        start_ns + MS + put,
    );
    let message = trace.uuid();
    let send_at = start_ns + 2 * MS + put;
    let send_request = trace.uuid();
    let send_duration = trace.latency(8.0);
    let send = trace.add(
        Spec::new(
            &api,
            &sdk_scope,
            "media-events send",
            SpanKind::Producer,
            vec![
                text("rpc.system", "aws-api"),
                text("rpc.service", "SQS"),
                text("rpc.method", "SendMessage"),
                text("messaging.system", "aws_sqs"),
                text("messaging.destination.name", "media-events"),
                text("messaging.message.id", message.clone()),
                text(
                    "messaging.url",
                    "https://sqs.eu-central-1.amazonaws.com/210987654321/media-events",
                ),
                text("aws.request_id", send_request),
            ],
        ),
        Some(&root),
        send_at,
        send_at + send_duration,
    );
    // The consumers: resize and index always, notify when both succeed.
    let mut at = send_at + 30 * MS;
    let steps: &[usize] = if trace.rng.bool() {
        &[1, 2, 3]
    } else {
        &[1, 3]
    };
    for (step, &function) in steps.iter().enumerate() {
        let (name, _) = FUNCTIONS[function];
        let step_failed = failed && step == 0;
        let run = trace.latency(if function == 1 { 400.0 } else { 90.0 });
        let request = trace.uuid();
        let mut events = Vec::new();
        if step_failed {
            events.push(exception(
                at + run - MS,
                "PIL.UnidentifiedImageError",
                format!(
                    "cannot identify image file '/tmp/{}'",
                    object.replace('/', "_")
                ),
                &[
                    "File \"/var/task/handler.py\", line 48, in handle",
                    "File \"/var/task/resize.py\", line 112, in resize",
                    "File \"/opt/python/PIL/Image.py\", line 3498, in open",
                ],
            ));
        }
        let cold = trace.rng.u32(..100) < 5;
        let handler = trace.add(
            Spec::new(
                &lambdas[function],
                &handler_scope,
                name,
                SpanKind::Consumer,
                vec![
                    text("faas.trigger", "pubsub"),
                    text("faas.invocation_id", request.clone()),
                    boolean("faas.coldstart", cold),
                    text(
                        "cloud.resource_id",
                        format!("arn:aws:lambda:eu-central-1:210987654321:function:{name}"),
                    ),
                    text("messaging.system", "aws_sqs"),
                    text("messaging.operation", "process"),
                    text("messaging.message.id", message.clone()),
                    text("aws.s3.key", object.clone()),
                ],
            )
            .failed(step_failed)
            .with_events(events),
            Some(&send),
            at,
            at + run,
        );
        let calls: &[(&str, &str)] = match function {
            1 => &[("S3", "GetObject"), ("S3", "PutObject")],
            2 => &[("S3", "GetObject"), ("DynamoDB", "PutItem")],
            _ => &[("SNS", "Publish")],
        };
        let mut inner = at + MS;
        for (service, method) in calls {
            let duration = trace.latency(25.0);
            let mut attributes = vec![
                text("rpc.system", "aws-api"),
                text("rpc.service", *service),
                text("rpc.method", *method),
                text("aws.request_id", trace.hex(16).to_uppercase()),
                int("http.response.status_code", 200),
                int("retry_attempts", 0),
            ];
            match *service {
                "S3" => {
                    attributes.push(text("aws.s3.bucket", "media-uploads-prod"));
                    attributes.push(text(
                        "aws.s3.key",
                        if *method == "PutObject" {
                            object.replace("uploads/", "thumbnails/")
                        } else {
                            object.clone()
                        },
                    ));
                }
                "DynamoDB" => {
                    attributes.push(text("aws.dynamodb.table_names", "media-index"));
                    attributes.push(double("aws.dynamodb.consumed_capacity", 1.0));
                }
                _ => attributes.push(text(
                    "messaging.destination.name",
                    "arn:aws:sns:eu-central-1:210987654321:owner-notifications",
                )),
            }
            trace.add(
                Spec::new(
                    &lambdas[function],
                    &boto_scope,
                    format!("{service}.{method}"),
                    SpanKind::Client,
                    attributes,
                ),
                Some(&handler),
                inner,
                inner + duration,
            );
            inner += duration + MS / 2;
        }
        if step_failed {
            break;
        }
        at += run + 5 * MS;
    }
    trace.finish()
}

// ---------------------------------------------------------------- mesh

const MESH_SERVICES: [(&str, &str); 8] = [
    ("edge-gateway", "go"),
    ("checkout", "go"),
    ("pricing", "java"),
    ("inventory", "java"),
    ("ledger", "go"),
    ("recommendations", "python"),
    ("fraud", "python"),
    ("shipping-quotes", "java"),
];

fn pod_resource(rng: &mut fastrand::Rng, service: &str, language: &str) -> Resource {
    let pod = rng.u32(..12);
    let hash = u32::try_from(service.len() * 7_919 % 100_000).unwrap_or(0);
    let mut attributes = vec![
        text("service.name", service),
        text("service.namespace", "shop"),
        text("service.version", format!("2026.12.{}", service.len())),
        text(
            "service.instance.id",
            format!("{service}-{hash:05x}-{pod:02}"),
        ),
        text("k8s.namespace.name", "shop-prod"),
        text("k8s.deployment.name", service),
        text(
            "k8s.pod.name",
            format!("{service}-7f9c{hash:05x}-p{pod:02}x"),
        ),
        text(
            "k8s.node.name",
            format!("gke-prod-pool-{:02}", (pod * 3 + hash) % 16),
        ),
        text("k8s.cluster.name", "prod-eu"),
        text("container.id", format!("{:016x}{:016x}", hash, pod + 1)),
    ];
    attributes.extend(sdk(language, "1.30.0"));
    resource(attributes)
}

/// `mesh`: the gateway calls checkout, which fans out over gRPC to
/// pricing, inventory, fraud, recommendations and shipping quotes; each
/// does internal work, Postgres queries and Redis lookups; checkout writes
/// the ledger through Kafka.
pub(crate) fn mesh_trace(rng: &mut fastrand::Rng, start_ns: u64) -> Vec<ResourceSpans> {
    let pods: Vec<Resource> = MESH_SERVICES
        .iter()
        .map(|(service, language)| pod_resource(rng, service, language))
        .collect();
    let grpc_scope = scope(
        "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        "0.56.0",
    );
    let db_scope = scope("github.com/jackc/pgx/v5", "5.7.1");
    let kafka_scope = scope("github.com/IBM/sarama", "1.43.3");
    let internal_scope = scope("shop/internal", "1.0.0");
    let mut trace = Trace::new(rng);
    let failed = trace.rng.u32(..100) < 2;
    let cart = trace.rng.u32(..1 << 30);
    let items = trace.rng.u32(1..9);
    let total = trace.latency(250.0);
    let root = trace.add(
        Spec::new(
            &pods[0],
            &grpc_scope,
            "POST /checkout",
            SpanKind::Server,
            vec![
                text("http.request.method", "POST"),
                text("http.route", "/checkout"),
                text("url.path", "/checkout"),
                int("http.response.status_code", if failed { 503 } else { 200 }),
                text(
                    "client.address",
                    format!("10.{}.{}.{}", cart % 200, cart % 97, cart % 251),
                ),
                int("cart.items", i64::from(items)),
            ],
        )
        .failed(failed),
        None,
        start_ns,
        start_ns + total + 20 * MS,
    );
    let checkout = grpc_call(
        &mut trace,
        &pods,
        0,
        1,
        "shop.Checkout/PlaceOrder",
        &root,
        start_ns + MS,
        total,
        failed,
        &grpc_scope,
    );
    let mut at = start_ns + 2 * MS;
    for (callee, method) in [
        (2, "shop.Pricing/Quote"),
        (3, "shop.Inventory/Reserve"),
        (6, "shop.Fraud/Score"),
        (5, "shop.Recommendations/ForCart"),
        (7, "shop.ShippingQuotes/Quote"),
    ] {
        let duration = trace.latency(25.0);
        let server = grpc_call(
            &mut trace,
            &pods,
            1,
            callee,
            method,
            &checkout,
            at,
            duration,
            false,
            &grpc_scope,
        );
        // Per item work on the callee: an internal span, a Redis lookup
        // and a Postgres query each.
        let mut inner = at + MS / 2;
        let per_item = duration / u64::from(items + 1);
        for item in 0..items {
            let sku = trace.rng.u32(..250_000);
            let work = trace.add(
                Spec::new(
                    &pods[callee],
                    &internal_scope,
                    format!("{}.item", method.rsplit('/').next().unwrap_or(method)),
                    SpanKind::Internal,
                    vec![
                        text("code.function", "handleItem"),
                        text(
                            "code.filepath",
                            format!("/src/{}/item.go", MESH_SERVICES[callee].0),
                        ),
                        int("code.lineno", 40 + i64::from(callee as u32 * 13)),
                        int("item.index", i64::from(item)),
                        text("item.sku", format!("{sku:08}")),
                    ],
                ),
                Some(&server),
                inner,
                inner + per_item,
            );
            let redis = per_item / 5;
            trace.add(
                Spec::new(
                    &pods[callee],
                    &db_scope,
                    "GET",
                    SpanKind::Client,
                    vec![
                        text("db.system", "redis"),
                        text("db.operation", "GET"),
                        text("db.statement", format!("GET sku:{sku:08}")),
                        text("server.address", "redis-master.shop-prod.svc"),
                        int("server.port", 6379),
                    ],
                ),
                Some(&work),
                inner + MS / 20,
                inner + MS / 20 + redis,
            );
            let table = ["prices", "stock", "scores", "similar", "rates"][callee % 5];
            let rows = i64::from(trace.rng.u32(..50));
            trace.add(
                Spec::new(
                    &pods[callee],
                    &db_scope,
                    format!("SELECT shop.{table}"),
                    SpanKind::Client,
                    vec![
                        text("db.system", "postgresql"),
                        text("db.name", "shop"),
                        text("db.operation", "SELECT"),
                        text("db.sql.table", table),
                        text(
                            "db.statement",
                            format!(
                                "SELECT * FROM {table} WHERE sku = $1 AND region = $2 LIMIT 50"
                            ),
                        ),
                        text("server.address", "pg-primary.shop-prod.svc"),
                        int("server.port", 5432),
                        int("db.rows_returned", rows),
                    ],
                ),
                Some(&work),
                inner + redis + MS / 10,
                inner + per_item - MS / 20,
            );
            inner += per_item;
        }
        at += duration / 3;
    }
    // The ledger entry, through Kafka.
    let partition = trace.rng.u32(..24);
    let offset = (start_ns / 1_000_000) as i64 % 10_000_000 + i64::from(partition) * 10_000_000;
    let produce_duration = trace.latency(2.0);
    let consume_at = at + trace.latency(15.0);
    let consume_duration = trace.latency(6.0);
    let produce = trace.add(
        Spec::new(
            &pods[1],
            &kafka_scope,
            "ledger-entries publish",
            SpanKind::Producer,
            vec![
                text("messaging.system", "kafka"),
                text("messaging.operation", "publish"),
                text("messaging.destination.name", "ledger-entries"),
                int(
                    "messaging.kafka.destination.partition",
                    i64::from(partition),
                ),
                int("messaging.kafka.message.offset", offset),
                text("messaging.kafka.message.key", format!("cart-{cart}")),
            ],
        ),
        Some(&checkout),
        at,
        at + produce_duration,
    );
    trace.add(
        Spec::new(
            &pods[4],
            &kafka_scope,
            "ledger-entries process",
            SpanKind::Consumer,
            vec![
                text("messaging.system", "kafka"),
                text("messaging.operation", "process"),
                text("messaging.destination.name", "ledger-entries"),
                text("messaging.kafka.consumer.group", "ledger-writer"),
                int(
                    "messaging.kafka.destination.partition",
                    i64::from(partition),
                ),
                int("messaging.kafka.message.offset", offset),
            ],
        ),
        Some(&produce),
        consume_at,
        consume_at + consume_duration,
    );
    trace.finish()
}

/// A gRPC call from `caller` to `callee`: the client span and the server
/// span under it; the server span's id.
#[allow(clippy::too_many_arguments)]
fn grpc_call(
    trace: &mut Trace<'_>,
    pods: &[Resource],
    caller: usize,
    callee: usize,
    method: &str,
    parent: &[u8],
    at: u64,
    duration: u64,
    failed: bool,
    scope: &InstrumentationScope,
) -> SpanId {
    let (service, rpc_method) = method.split_once('/').unwrap_or((method, ""));
    let code = if failed { 14 } else { 0 };
    let client = trace.add(
        Spec::new(
            &pods[caller],
            scope,
            method,
            SpanKind::Client,
            vec![
                text("rpc.system", "grpc"),
                text("rpc.service", service),
                text("rpc.method", rpc_method),
                int("rpc.grpc.status_code", code),
                text(
                    "server.address",
                    format!("{}.shop-prod.svc", MESH_SERVICES[callee].0),
                ),
                int("server.port", 50051),
            ],
        )
        .failed(failed),
        Some(parent),
        at,
        at + duration,
    );
    trace.add(
        Spec::new(
            &pods[callee],
            scope,
            method,
            SpanKind::Server,
            vec![
                text("rpc.system", "grpc"),
                text("rpc.service", service),
                text("rpc.method", rpc_method),
                int("rpc.grpc.status_code", code),
                text(
                    "client.address",
                    format!("10.4.{}.{}", caller * 3, callee * 7),
                ),
            ],
        )
        .failed(failed),
        Some(&client),
        at + MS / 5,
        at + duration - MS / 10,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message;

    use super::*;
    use crate::Workload;
    use crate::tests::spans;

    /// Each shape makes whole traces (one root, every parent present) of
    /// its documented size, the same for the same seed.
    #[test]
    fn shapes_make_whole_traces_of_their_documented_size() {
        for (shape, sizes) in [
            (Shape::Api, 4..=9),
            (Shape::Serverless, 6..=11),
            (Shape::Mesh, 30..=135),
        ] {
            let mut workload = Workload::with_shape(shape, 7, 1_767_225_600_000_000_000, 1_000);
            let mut seen_sizes = HashSet::new();
            for _ in 0..300 {
                let trace = workload.next_trace();
                let spans = spans(&trace);
                assert!(sizes.contains(&spans.len()), "{shape:?}: {}", spans.len());
                seen_sizes.insert(spans.len());
                let ids: HashSet<&[u8]> = spans.iter().map(|span| &span.span_id[..]).collect();
                assert_eq!(ids.len(), spans.len(), "{shape:?}: span ids repeat");
                let roots = spans.iter().filter(|span| span.parent_span_id.is_empty());
                assert_eq!(roots.count(), 1, "{shape:?}");
                for span in &spans {
                    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
                    assert_eq!(span.trace_id, spans[0].trace_id);
                    assert!(
                        span.parent_span_id.is_empty() || ids.contains(&span.parent_span_id[..]),
                        "{shape:?}: {} has no parent in the trace",
                        span.name
                    );
                }
            }
            assert!(seen_sizes.len() > 1, "{shape:?}: every trace is alike");
            let again =
                Workload::with_shape(shape, 7, 1_767_225_600_000_000_000, 1_000).next_trace();
            let first =
                Workload::with_shape(shape, 7, 1_767_225_600_000_000_000, 1_000).next_trace();
            assert_eq!(again, first);
        }
    }

    /// `serverless` is the heavy shape (about 400 bytes of OTLP per span,
    /// two scopes per function, exception events); a batch merges equal
    /// resources and scopes.
    #[test]
    fn serverless_spans_are_heavy_and_batches_merge_equal_resources() {
        let mut workload =
            Workload::with_shape(Shape::Serverless, 3, 1_767_225_600_000_000_000, 1_000);
        let batch = workload.batch(20_000);
        let count = spans(&batch).len();
        let bytes: usize = batch.iter().map(Message::encoded_len).sum();
        let per_span = bytes / count;
        assert!((300..=550).contains(&per_span), "{per_span} bytes per span");
        let resources: Vec<&Option<Resource>> = batch.iter().map(|group| &group.resource).collect();
        let distinct: HashSet<String> = resources.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(distinct.len(), resources.len(), "a resource appears twice");
        assert!(batch.iter().any(|group| group.scope_spans.len() == 2));
        assert!(
            spans(&batch)
                .iter()
                .any(|span| span.events.iter().any(|event| event.name == "exception"))
        );
    }

    #[test]
    fn shapes_are_named() {
        for shape in Shape::ALL {
            assert_eq!(shape.name().parse::<Shape>(), Ok(shape));
        }
        assert!(
            "nope"
                .parse::<Shape>()
                .unwrap_err()
                .contains("api, serverless")
        );
    }
}
