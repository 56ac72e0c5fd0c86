//! The API gateway: stages of routes in front of functions and HTTP
//! backends, with API keys and usage plans, throttling, a response cache,
//! and API Gateway's proxy mapping between requests and function events.
//!
//! A request to `/{stage}/{path}` goes through, in order:
//!
//! 1. the route: method + path template (`/orders/{id}`); none: 403
//!    `{"message":"Missing Authentication Token"}` (as API Gateway answers
//!    unknown resources);
//! 2. the API key (`x-api-key`) when the route requires one: missing or
//!    unknown: 403 `{"message":"Forbidden"}`;
//! 3. throttles, token buckets at the account, the stage/method and the
//!    key's usage plan: 429 `{"message":"Too Many Requests"}` with a
//!    `Retry-After` hint (seconds);
//! 4. the usage plan's quota per period: 429 `{"message":"Limit Exceeded"}`;
//! 5. the stage cache for methods with a TTL: the key is the route and the
//!    method's cache-key parameters (`path.id`, `query.q`, `header.x-h`);
//!    `Cache-Control: max-age=0` refreshes the entry when the caller's key
//!    may invalidate, and is ignored otherwise (API Gateway's default);
//!    `DELETE /_gateway/stages/{stage}/cache` flushes the stage, for a
//!    caller with the admin key only ([`crate::admin`]; AWS puts
//!    `FlushStageCache` behind IAM): 403 otherwise;
//! 6. the integration: a function through Lambda's Invoke API (the proxy
//!    event; the result's `statusCode`/`headers`/`body` become the
//!    response; a function error is 502 `{"message":"Internal server
//!    error"}`, a function throttle 429, no answer within the integration
//!    timeout 504), or an HTTP backend (URL template with `{param}`s).
//!    The gateway invokes as `apigateway.amazonaws.com`, vouched for by
//!    the admin key, so functions may allow only the gateway.
//!
//! Each request is a segment named `{api}/{stage}` with origin
//! `AWS::ApiGateway::Stage`, continuing the caller's trace; the
//! integration call is its subsegment and carries the trace on. Responses
//! say `x-tracelake-cache: hit|miss|refresh` for cached methods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::delete;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::admin::{ADMIN_KEY_HEADER, AdminKey};
use crate::client::{Call, TracedClient};
use crate::layer::{incoming_header, request_info};
use crate::runtime::http::PRINCIPAL_HEADER;
use crate::throttle::TokenBucket;
use crate::tracer::{TraceContext, Tracer};

/// Largest request body passed on (API Gateway's payload limit).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Most responses one stage's cache holds.
pub const MAX_CACHE_ENTRIES: usize = 10_000;
/// The principal the gateway invokes functions as.
pub const PRINCIPAL: &str = "apigateway.amazonaws.com";

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integration {
    /// A function of the runtime at `runtime_url`.
    Function(String),
    /// An HTTP backend; `{name}` in the URL takes the path parameter.
    Http(String),
    /// `StartExecution` of a state machine of the workflow engine at
    /// `workflow_url`, with the request body (JSON) as input.
    Workflow(String),
}

/// A method's cache settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCache {
    pub ttl: Duration,
    /// `path.<name>`, `query.<name>`, `header.<name>`.
    pub key_parameters: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub method: Method,
    /// `/orders/{id}`.
    pub path: String,
    pub integration: Integration,
    pub api_key_required: bool,
    /// Overrides the stage's throttle for this method.
    pub throttle: Option<(f64, u32)>,
    pub cache: Option<MethodCache>,
}

#[derive(Debug, Clone)]
pub struct StageConfig {
    pub name: String,
    /// Default per-method throttle (rate, burst).
    pub throttle: (f64, u32),
    /// Whether the stage has a cache; methods opt in with a TTL.
    pub cache_enabled: bool,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct UsagePlan {
    pub name: String,
    pub throttle: (f64, u32),
    /// Requests allowed per period.
    pub quota: Option<(u64, Duration)>,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub value: String,
    pub name: String,
    pub usage_plan: String,
    /// May send `Cache-Control: max-age=0` to refresh cached answers.
    pub can_invalidate_cache: bool,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub api_name: String,
    /// Account-level throttle (rate, burst).
    pub account_throttle: (f64, u32),
    pub stages: Vec<StageConfig>,
    pub usage_plans: Vec<UsagePlan>,
    pub api_keys: Vec<ApiKey>,
    /// Lambda Invoke API base URL for function integrations.
    pub runtime_url: String,
    /// The workflow engine's API base URL, for workflow integrations.
    pub workflow_url: Option<String>,
    pub integration_timeout: Duration,
    /// Vouches for the gateway's principal to the runtime and guards the
    /// cache flush.
    pub admin_key: AdminKey,
}

struct Route {
    config: RouteConfig,
    /// Path segments; `Some(name)` for a `{name}` parameter.
    segments: Vec<(String, Option<String>)>,
    throttle: TokenBucket,
}

struct Stage {
    config: StageConfig,
    routes: Vec<Route>,
    cache: Mutex<HashMap<String, CachedResponse>>,
}

#[derive(Debug, Clone)]
struct CachedResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
}

struct KeyState {
    key: ApiKey,
    throttle: TokenBucket,
    quota: Option<(u64, Duration)>,
    /// `(period start, requests in it)`.
    used: Mutex<(Instant, u64)>,
}

struct GatewayInner {
    config: GatewayConfig,
    account: TokenBucket,
    stages: HashMap<String, Stage>,
    keys: HashMap<String, KeyState>,
    tracer: Tracer,
    client: TracedClient,
}

/// The gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("api", &self.inner.config.api_name)
            .finish_non_exhaustive()
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({"message": text}))).into_response()
}

fn parse_template(path: &str) -> Vec<(String, Option<String>)> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => (segment.to_string(), Some(name.to_string())),
                None => (segment.to_string(), None),
            },
        )
        .collect()
}

impl Route {
    fn matches(&self, method: &Method, segments: &[&str]) -> Option<BTreeMap<String, String>> {
        if self.config.method != *method || self.segments.len() != segments.len() {
            return None;
        }
        let mut parameters = BTreeMap::new();
        for ((literal, parameter), actual) in self.segments.iter().zip(segments) {
            match parameter {
                Some(name) => {
                    parameters.insert(name.clone(), percent_decode(actual, false));
                }
                None if literal == actual => {}
                None => return None,
            }
        }
        Some(parameters)
    }
}

/// A gateway configuration that names what does not exist or cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidGatewayConfig(pub String);

impl Gateway {
    /// A gateway traced by `tracer` (its sink and sampler are used; the
    /// segment name is `{api}/{stage}`).
    pub fn new(
        config: GatewayConfig,
        tracer: Tracer,
        client: TracedClient,
    ) -> Result<Self, InvalidGatewayConfig> {
        Self::build(config, tracer, client).map_err(InvalidGatewayConfig)
    }

    fn build(config: GatewayConfig, tracer: Tracer, client: TracedClient) -> Result<Self, String> {
        let plans: HashMap<&str, &UsagePlan> = config
            .usage_plans
            .iter()
            .map(|plan| (plan.name.as_str(), plan))
            .collect();
        let mut keys = HashMap::new();
        for key in &config.api_keys {
            let plan = plans.get(key.usage_plan.as_str()).ok_or_else(|| {
                format!(
                    "API key {} names usage plan {:?}, which does not exist",
                    key.name, key.usage_plan
                )
            })?;
            keys.insert(
                key.value.clone(),
                KeyState {
                    key: key.clone(),
                    throttle: TokenBucket::new(plan.throttle.0, plan.throttle.1),
                    quota: plan.quota,
                    used: Mutex::new((Instant::now(), 0)),
                },
            );
        }
        let stages = config
            .stages
            .iter()
            .map(|stage| {
                let routes = stage
                    .routes
                    .iter()
                    .map(|route| {
                        let (rate, burst) = route.throttle.unwrap_or(stage.throttle);
                        Route {
                            segments: parse_template(&route.path),
                            throttle: TokenBucket::new(rate, burst),
                            config: route.clone(),
                        }
                    })
                    .collect();
                (
                    stage.name.clone(),
                    Stage {
                        config: stage.clone(),
                        routes,
                        cache: Mutex::new(HashMap::new()),
                    },
                )
            })
            .collect();
        Ok(Self {
            inner: Arc::new(GatewayInner {
                account: TokenBucket::new(config.account_throttle.0, config.account_throttle.1),
                config,
                stages,
                keys,
                tracer,
                client,
            }),
        })
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/_gateway/stages/{stage}/cache", delete(flush_cache))
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Counts the key's request against its quota.
    fn take_quota(&self, key: &KeyState) -> bool {
        let Some((limit, period)) = key.quota else {
            return true;
        };
        let mut used = key.used.lock();
        if used.0.elapsed() >= period {
            *used = (Instant::now(), 0);
        }
        if used.1 >= limit {
            return false;
        }
        used.1 += 1;
        true
    }
}

async fn flush_cache(
    State(gateway): State<Gateway>,
    Path(stage): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !gateway.inner.config.admin_key.admits(&headers) {
        return message(
            StatusCode::FORBIDDEN,
            &format!("flushing a stage cache needs the admin key ({ADMIN_KEY_HEADER})"),
        );
    }
    match gateway.inner.stages.get(&stage) {
        Some(stage) => {
            let flushed = std::mem::take(&mut *stage.cache.lock()).len();
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"flushed": flushed})),
            )
                .into_response()
        }
        None => message(StatusCode::NOT_FOUND, "Invalid stage identifier specified"),
    }
}

fn too_many(wait_seconds: f64, text: &str) -> Response {
    let mut response = message(StatusCode::TOO_MANY_REQUESTS, text);
    let seconds = if wait_seconds.is_finite() {
        wait_seconds.ceil().max(1.0) as u64
    } else {
        60
    };
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn cache_key(
    route: &RouteConfig,
    cache: &MethodCache,
    parameters: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> String {
    let mut key = format!("{} {}", route.method, route.path);
    for parameter in &cache.key_parameters {
        let value = if let Some(name) = parameter.strip_prefix("path.") {
            parameters.get(name).cloned()
        } else if let Some(name) = parameter.strip_prefix("query.") {
            query.get(name).cloned()
        } else if let Some(name) = parameter.strip_prefix("header.") {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        } else {
            None
        };
        key.push_str(&format!("|{parameter}={}", value.unwrap_or_default()));
    }
    key
}

/// `%XX` escapes decoded (and `+` as a space in query strings); bytes
/// that are not UTF-8 afterwards are replaced.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = match bytes[index] {
            b'%' => text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match (decoded, bytes[index]) {
            (Some(byte), _) => {
                out.push(byte);
                index += 3;
            }
            (None, b'+') if plus_is_space => {
                out.push(b' ');
                index += 1;
            }
            (None, byte) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string's parameters, decoded (the last of a repeated name).
fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    let Some(stage_name) = segments.next().map(str::to_string) else {
        return message(StatusCode::FORBIDDEN, "Missing Authentication Token");
    };
    let Some(stage) = gateway.inner.stages.get(&stage_name) else {
        return message(StatusCode::FORBIDDEN, "Missing Authentication Token");
    };
    let trace = gateway.inner.tracer.start_named(
        &format!("{}/{}", gateway.inner.config.api_name, stage_name),
        incoming_header(&request),
        &request_info(&request),
    );
    let response = serve(&gateway, stage, &stage_name, request, &trace).await;
    trace.finish(Some(response.status().as_u16()));
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&trace.response_header().to_string()) {
        response
            .headers_mut()
            .insert(tracelake_sampler::trace_header::HEADER_NAME, value);
    }
    response
}

async fn serve(
    gateway: &Gateway,
    stage: &Stage,
    stage_name: &str,
    request: Request,
    trace: &TraceContext,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let resource_segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).skip(1).collect();
    let Some((route, parameters)) = stage.routes.iter().find_map(|route| {
        route
            .matches(&method, &resource_segments)
            .map(|p| (route, p))
    }) else {
        return message(StatusCode::FORBIDDEN, "Missing Authentication Token");
    };
    let headers = request.headers().clone();
    let key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| gateway.inner.keys.get(value));
    if route.config.api_key_required && key.is_none() {
        return message(StatusCode::FORBIDDEN, "Forbidden");
    }
    if let Some(key) = key {
        trace.with_segment(|segment| {
            segment
                .annotations
                .insert("api_key".into(), json!(key.key.name));
        });
    }

    // Throttles: account, stage/method, key.
    for bucket in [
        Some(&gateway.inner.account),
        Some(&route.throttle),
        key.map(|k| &k.throttle),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(wait) = bucket.try_take() {
            return too_many(wait, "Too Many Requests");
        }
    }
    if let Some(key) = key
        && !gateway.take_quota(key)
    {
        let period = key.quota.map_or(60.0, |(_, period)| period.as_secs_f64());
        return too_many(period, "Limit Exceeded");
    }

    let query = query_map(request.uri().query());
    let cache = route.config.cache.as_ref().filter(|cache| {
        stage.config.cache_enabled && !cache.ttl.is_zero() && method == Method::GET
    });
    let cache_entry =
        cache.map(|cache| cache_key(&route.config, cache, &parameters, &query, &headers));
    let refresh = headers
        .get("cache-control")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.replace(' ', "").contains("max-age=0"))
        && key.is_some_and(|key| key.key.can_invalidate_cache);
    if let Some(entry) = &cache_entry
        && !refresh
    {
        let cached = stage.cache.lock().get(entry).cloned();
        if let Some(cached) = cached.filter(|cached| cached.expires > Instant::now()) {
            trace.annotate("cache", "hit");
            let mut response = (cached.status, cached.body).into_response();
            *response.headers_mut() = cached.headers;
            response
                .headers_mut()
                .insert("x-tracelake-cache", HeaderValue::from_static("hit"));
            return response;
        }
    }

    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Too Long"),
    };
    let mut response = match &route.config.integration {
        Integration::Function(function) => {
            let event = proxy_event(
                stage_name,
                &route.config,
                &method,
                &path,
                &parameters,
                &query,
                &headers,
                &body,
                key,
            );
            invoke_function(gateway, trace, function, event).await
        }
        Integration::Http(template) => {
            forward(
                gateway,
                trace,
                template,
                &parameters,
                &method,
                &query,
                &headers,
                body,
            )
            .await
        }
        Integration::Workflow(machine) => start_execution(gateway, trace, machine, &body).await,
    };
    if let (Some(entry), Some(cache)) = (cache_entry, cache) {
        let state = if refresh { "refresh" } else { "miss" };
        trace.annotate("cache", state);
        if response.status() == StatusCode::OK {
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .unwrap_or_default();
            let mut entries = stage.cache.lock();
            if entries.len() >= MAX_CACHE_ENTRIES {
                // Expired entries go first; a cache still full stops
                // taking new entries until some expire.
                let now = Instant::now();
                entries.retain(|_, cached| cached.expires > now);
            }
            if entries.len() < MAX_CACHE_ENTRIES {
                entries.insert(
                    entry,
                    CachedResponse {
                        status: parts.status,
                        headers: parts.headers.clone(),
                        body: bytes.clone(),
                        expires: Instant::now() + cache.ttl,
                    },
                );
            }
            drop(entries);
            response = Response::from_parts(parts, Body::from(bytes));
        }
        response
            .headers_mut()
            .insert("x-tracelake-cache", HeaderValue::from_static(state));
    }
    response
}

/// API Gateway's proxy event (payload format 1.0).
#[allow(clippy::too_many_arguments)]
fn proxy_event(
    stage: &str,
    route: &RouteConfig,
    method: &Method,
    path: &str,
    parameters: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    key: Option<&KeyState>,
) -> Value {
    let header_map: Map<String, Value> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
        .collect();
    let text = std::str::from_utf8(body).ok();
    let resource_path = path
        .splitn(3, '/')
        .nth(2)
        .map(|rest| format!("/{rest}"))
        .unwrap_or_default();
    json!({
        "resource": route.path,
        "path": resource_path,
        "httpMethod": method.as_str(),
        "headers": header_map,
        "queryStringParameters": if query.is_empty() { Value::Null } else { json!(query) },
        "pathParameters": if parameters.is_empty() { Value::Null } else { json!(parameters) },
        "stageVariables": Value::Null,
        "requestContext": {
            "stage": stage,
            "requestId": crate::runtime::request_id(),
            "resourcePath": route.path,
            "httpMethod": method.as_str(),
            "identity": {"apiKey": key.map(|key| key.key.value.clone())},
        },
        "body": match (text, body.is_empty()) {
            (_, true) => Value::Null,
            (Some(text), false) => json!(text),
            (None, false) => json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body)),
        },
        "isBase64Encoded": text.is_none() && !body.is_empty(),
    })
}

async fn invoke_function(
    gateway: &Gateway,
    trace: &TraceContext,
    function: &str,
    event: Value,
) -> Response {
    let url = format!(
        "{}/2015-03-31/functions/{function}/invocations",
        gateway.inner.config.runtime_url
    );
    let request = match gateway
        .inner
        .client
        .inner()
        .post(url)
        .header(PRINCIPAL_HEADER, PRINCIPAL)
        .header(ADMIN_KEY_HEADER, gateway.inner.config.admin_key.value())
        .timeout(gateway.inner.config.integration_timeout)
        .body(event.to_string())
        .build()
    {
        Ok(request) => request,
        Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    };
    let call = Call::aws("Lambda", "Invoke", &[("function_name", function)]);
    let response = match gateway.inner.client.send(Some(trace), call, request).await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return message(StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out");
        }
        Err(_) => return message(StatusCode::BAD_GATEWAY, "Internal server error"),
    };
    let status = response.status();
    let function_error = response.headers().contains_key("x-amz-function-error");
    let payload: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return too_many(1.0, "Too Many Requests");
    }
    if !status.is_success() || function_error {
        return message(StatusCode::BAD_GATEWAY, "Internal server error");
    }
    // The proxy result: statusCode, headers, body (isBase64Encoded).
    let Some(code) = payload["statusCode"]
        .as_u64()
        .and_then(|code| StatusCode::from_u16(code as u16).ok())
    else {
        return message(StatusCode::BAD_GATEWAY, "Internal server error");
    };
    let body = match (
        payload["body"].as_str(),
        payload["isBase64Encoded"].as_bool(),
    ) {
        (Some(text), Some(true)) => {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                .map(Bytes::from)
                .unwrap_or_default()
        }
        (Some(text), _) => Bytes::from(text.to_string()),
        (None, _) => Bytes::new(),
    };
    let mut response = (code, body).into_response();
    if let Some(headers) = payload["headers"].as_object() {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                axum::http::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// Starts an execution with the body as input; answers its id.
async fn start_execution(
    gateway: &Gateway,
    trace: &TraceContext,
    machine: &str,
    body: &Bytes,
) -> Response {
    let Some(url) = &gateway.inner.config.workflow_url else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(input) => input,
            Err(_) => return message(StatusCode::BAD_REQUEST, "the body must be JSON"),
        }
    };
    let request = gateway
        .inner
        .client
        .inner()
        .post(format!("{url}/executions"))
        .timeout(gateway.inner.config.integration_timeout)
        .json(&json!({"stateMachineArn": machine, "input": input}))
        .build();
    let Ok(request) = request else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
    let call = Call::aws(
        "StepFunctions",
        "StartExecution",
        &[("state_machine", machine)],
    );
    match gateway.inner.client.send(Some(trace), call, request).await {
        Ok(response) => {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            out.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            out
        }
        Err(_) => message(StatusCode::BAD_GATEWAY, "Internal server error"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    gateway: &Gateway,
    trace: &TraceContext,
    template: &str,
    parameters: &BTreeMap<String, String>,
    method: &Method,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut url = template.to_string();
    for (name, value) in parameters {
        url = url.replace(&format!("{{{name}}}"), value);
    }
    let Ok(parsed) = reqwest::Url::parse(&url) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
    let host = parsed.host_str().unwrap_or("backend").to_string();
    let mut builder = gateway
        .inner
        .client
        .inner()
        .request(method.clone(), parsed)
        .query(query)
        .timeout(gateway.inner.config.integration_timeout)
        .body(body);
    if let Some(content_type) = headers.get("content-type") {
        builder = builder.header("content-type", content_type);
    }
    let Ok(request) = builder.build() else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
    match gateway
        .inner
        .client
        .send(Some(trace), Call::remote(&host), request)
        .await
    {
        Ok(response) => {
            let status = response.status();
            let content_type = response.headers().get("content-type").cloned();
            let bytes = response.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            if let Some(content_type) = content_type {
                out.headers_mut().insert("content-type", content_type);
            }
            out
        }
        Err(error) if error.is_timeout() => {
            message(StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out")
        }
        Err(_) => message(StatusCode::BAD_GATEWAY, "Internal server error"),
    }
}
