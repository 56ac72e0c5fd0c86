//! The example application of `tracelake demo`: an order API.
//!
//! ```text
//! client --> orders-api/prod (gateway, API key, throttles, cache)
//!              POST /orders      -> create-order --> charge-payment (sync; 128 MB, concurrency 4)
//!                                               --> DynamoDB orders (PutItem)
//!                                               --> SQS order-events --> fulfil-order (poll-based, batches)
//!                                               --> send-receipt (async; retries, receipts-dlq)
//!              GET /orders/{id}  -> get-order --> DynamoDB orders (GetItem)   [cached 10 s]
//!                                            (1 in 5: DynamoDB payments, which its
//!                                             execution policy denies: a traced error)
//!              GET /stock/{sku}  -> inventory (an HTTP service traced by the plugin)
//!              POST /fulfilments -> order-fulfilment workflow: charge-card (retried)
//!                                   -> wait -> ship-order || notify-customer; failure -> refund-payment
//! ```
//!
//! What shapes the traces comes from the components, not from scripted
//! spans: the table's capacity throttles bursts, the gateway's method
//! throttle refuses them, charge-payment's small concurrency throttles its
//! callers and its 128 MB makes its CPU work slow, cold starts happen when
//! load rises, a declined card or a timeout is a function error, a call
//! the execution policy does not grant is an `AccessDeniedException`, and
//! failing events end in dead-letter queues. The queue's consumer runs in
//! a trace of its own linked to the producer's, so the map shows
//! create-order -> SQS -> fulfil-order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracelake_sampler::client::{Sampler, parse_local_rules, run_poller};

use crate::admin::AdminKey;
use crate::downstream::{QueueService, QueueSpec, TableService, TableSpec};
use crate::emitter::{SegmentSink, UdpEmitter};
use crate::gateway::{
    ApiKey, Gateway, GatewayConfig, Integration, MethodCache, RouteConfig, StageConfig, UsagePlan,
};
use crate::runtime::{
    Downstream, EnvValue, EventSourceMapping, FunctionConfig, HandlerError, MappingHandle,
    RetryPolicy, Runtime, export_loop, handler,
};
use crate::secrets::{MasterKey, SecretStore};
use crate::workflow::engine::ORIGIN;
use crate::workflow::{Engine, HistoryStore, RuntimeTasks, SystemClock};
use crate::{OtlpSink, TracedClient, Tracer, XRayLayer};

/// The API key the traffic uses.
pub const API_KEY: &str = "demo-key-0123456789";
/// The order-fulfilment workflow: charge (retried when the payment
/// provider times out), wait for the warehouse, then ship and notify in
/// parallel; any failure refunds.
pub const FULFILMENT: &str = r#"{
  "Comment": "Order fulfilment",
  "StartAt": "Charge",
  "TimeoutSeconds": 120,
  "States": {
    "Charge": {"Type": "Task", "Resource": "function:charge-card", "ResultPath": "$.charge",
               "Retry": [{"ErrorEquals": ["PaymentTimeout"], "IntervalSeconds": 0.2, "BackoffRate": 2, "MaxAttempts": 3}],
               "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Refund"}],
               "Next": "AwaitPickup"},
    "AwaitPickup": {"Type": "Wait", "Seconds": 2, "Next": "Fulfil"},
    "Fulfil": {"Type": "Parallel", "ResultPath": "$.fulfilment",
               "Branches": [
                 {"StartAt": "Ship", "States": {"Ship": {"Type": "Task", "Resource": "function:ship-order", "End": true}}},
                 {"StartAt": "Notify", "States": {"Notify": {"Type": "Task", "Resource": "function:notify-customer", "End": true}}}
               ],
               "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Refund"}],
               "Next": "Done"},
    "Refund": {"Type": "Task", "Resource": "function:refund-payment", "ResultPath": "$.refund", "Next": "NotFulfilled"},
    "NotFulfilled": {"Type": "Fail", "Error": "OrderNotFulfilled", "Cause": "payment or shipping failed; refunded"},
    "Done": {"Type": "Succeed"}
  }
}"#;

/// The table get-order looks payments up in, which its execution policy
/// does not grant.
pub const PAYMENTS_TABLE: &str = "payments";

/// The workflow's name.
pub const WORKFLOW: &str = "order-fulfilment";

/// The sampling rule the demo creates in tracelake.
pub const SAMPLING_RULE: &str = "tracelake-demo";

/// How the stack sends its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Export {
    /// The X-Ray daemon protocol over UDP (what the X-Ray SDKs do).
    #[default]
    Udp,
    /// OTLP spans over OTLP/HTTP.
    Otlp,
}

/// Where tracelake listens.
#[derive(Debug, Clone)]
pub struct StackSettings {
    pub export: Export,
    pub xray_udp: SocketAddr,
    pub xray_api_url: String,
    pub otlp_http_url: String,
    /// Where the demo keeps its secret store and master key.
    pub state_dir: std::path::PathBuf,
}

/// The running stack.
pub struct Stack {
    pub gateway_url: String,
    pub runtime_url: String,
    pub inventory_url: String,
    pub table_url: String,
    pub queue_url: String,
    pub workflow_url: String,
    pub engine: Engine,
    pub runtime: Runtime,
    pub queues: QueueService,
    /// Flushes the gateway's cache; vouches for the gateway to the runtime.
    pub admin_key: AdminKey,
    sink: Arc<dyn SegmentSink>,
    mapping: MappingHandle,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("gateway_url", &self.gateway_url)
            .finish_non_exhaustive()
    }
}

async fn serve(
    router: Router,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut stop = stop;
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::warn!(%error, "demo service stopped");
        }
    });
    Ok((format!("http://{address}"), task))
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Creates the demo's sampling rule (most requests traced) unless it exists.
async fn create_sampling_rule(xray_api_url: &str) {
    let rule = json!({"SamplingRule": {
        "RuleName": SAMPLING_RULE, "Priority": 100, "FixedRate": 0.5, "ReservoirSize": 25,
        "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
        "URLPath": "*", "ResourceARN": "*", "Version": 1,
    }});
    let answer = reqwest::Client::new()
        .post(format!("{xray_api_url}/CreateSamplingRule"))
        .json(&rule)
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => {
            tracing::info!(rule = SAMPLING_RULE, "sampling rule created");
        }
        Ok(response) => tracing::info!(status = %response.status(), "sampling rule kept as it was"),
        Err(error) => tracing::warn!(%error, "cannot create the demo sampling rule"),
    }
}

fn failing(every: u64) -> impl Fn() -> bool {
    let counter = AtomicU64::new(0);
    move || counter.fetch_add(1, Ordering::Relaxed) % every == every - 1
}

fn result(status: u16, body: Value) -> Value {
    json!({"statusCode": status, "headers": {"content-type": "application/json"}, "body": body.to_string()})
}

fn functions() -> Vec<FunctionConfig> {
    let mut create = FunctionConfig::new(
        "create-order",
        handler(|event: Value, context| async move {
            let body: Value = event["body"]
                .as_str()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null);
            let (Some(sku), Some(quantity)) = (body["sku"].as_str(), body["quantity"].as_u64())
            else {
                return Ok(result(
                    400,
                    json!({"message": "sku and quantity are required"}),
                ));
            };
            let id = format!("o-{:012x}", fastrand::u64(..1 << 48));
            context.trace().annotate("order_id", id.clone());
            context.compute(Duration::from_millis(2)).await;
            let charge = context
                .invoke(
                    "charge-payment",
                    json!({"order_id": id, "amount": quantity * 1250}),
                )
                .await;
            if let Err(error) = charge {
                if error.to_string().contains("PaymentDeclined") {
                    return Ok(result(402, json!({"message": "payment declined"})));
                }
                return Err(HandlerError::new("PaymentUnavailable", error.to_string()));
            }
            let item = json!({"Item": {
                "id": {"S": id}, "sku": {"S": sku}, "quantity": {"N": quantity.to_string()},
                "status": {"S": "paid"},
            }});
            context
                .table("PutItem", "orders", item)
                .await
                .map_err(|error| HandlerError::new("OrderNotStored", error.to_string()))?;
            context
                .send_message("order-events", &json!({"order_id": id}).to_string())
                .await
                .map_err(|error| HandlerError::new("EventNotSent", error.to_string()))?;
            let _ = context
                .invoke_async("send-receipt", json!({"order_id": id}))
                .await;
            Ok(result(201, json!({"id": id})))
        }),
    );
    create.memory_mb = 512;
    create.concurrency = 10;
    create.invoke_policy = vec![crate::gateway::PRINCIPAL.into()];
    create.execution_policy = vec![
        "table:orders".into(),
        "queue:order-events".into(),
        "function:charge-payment".into(),
        "function:send-receipt".into(),
    ];

    let declined = Arc::new(failing(25));
    let slow = Arc::new(failing(60));
    let mut charge = FunctionConfig::new(
        "charge-payment",
        handler(move |_event: Value, context| {
            let (declined, slow) = (Arc::clone(&declined), Arc::clone(&slow));
            async move {
                if context.env("PAYMENT_API_KEY").is_none_or(str::is_empty) {
                    return Err(HandlerError::new(
                        "ConfigurationError",
                        "no payment API key",
                    ));
                }
                // Scoring the payment: CPU work, slow at 128 MB.
                context.compute(Duration::from_millis(6)).await;
                if slow() {
                    // The payment provider hangs; the timeout ends it.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                if declined() {
                    return Err(HandlerError::new("PaymentDeclined", "card declined"));
                }
                Ok(json!({"charged": true}))
            }
        }),
    );
    charge.memory_mb = 128;
    charge.timeout = Duration::from_secs(1);
    charge.concurrency = 4;
    charge.invoke_policy = vec!["function:create-order".into()];
    charge.environment.insert(
        "PAYMENT_API_KEY".into(),
        EnvValue::Secret("payment-api-key".into()),
    );

    let with_payment = Arc::new(failing(5));
    let mut get_order = FunctionConfig::new(
        "get-order",
        handler(move |event: Value, context| {
            let with_payment = Arc::clone(&with_payment);
            async move {
                let id = event["pathParameters"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if with_payment() {
                    // The payment's status lives in a table this function's
                    // execution policy does not grant: the call is refused
                    // before it leaves (an AccessDeniedException subsegment)
                    // and the order is answered without it.
                    let payment = context
                        .table(
                            "GetItem",
                            PAYMENTS_TABLE,
                            json!({"Key": {"order_id": {"S": id.clone()}}}),
                        )
                        .await;
                    if let Err(error) = payment {
                        context
                            .trace()
                            .annotate("payment_lookup", error.to_string());
                    }
                }
                let answer = context
                    .table("GetItem", "orders", json!({"Key": {"id": {"S": id}}}))
                    .await;
                match answer {
                    Ok(found) if found.get("Item").is_some() => {
                        Ok(result(200, found["Item"].clone()))
                    }
                    Ok(_) => Ok(result(404, json!({"message": "no such order"}))),
                    Err(error) if error.is_throttle() => {
                        Ok(result(503, json!({"message": "try again"})))
                    }
                    Err(error) => Err(HandlerError::new("TableError", error.to_string())),
                }
            }
        }),
    );
    get_order.invoke_policy = vec![crate::gateway::PRINCIPAL.into()];
    // Not `table:payments`: get-order's payment lookups are denied.
    get_order.execution_policy = vec!["table:orders".into()];

    let fulfil_fails = Arc::new(failing(40));
    let mut fulfil = FunctionConfig::new(
        "fulfil-order",
        handler(move |event: Value, context| {
            let fails = Arc::clone(&fulfil_fails);
            async move {
                for record in event["Records"].as_array().into_iter().flatten() {
                    let order: Value =
                        serde_json::from_str(record["body"].as_str().unwrap_or("{}"))
                            .unwrap_or(Value::Null);
                    let id = order["order_id"].as_str().unwrap_or_default().to_string();
                    if fails() {
                        return Err(HandlerError::new(
                            "WarehouseUnavailable",
                            format!("cannot fulfil {id}"),
                        ));
                    }
                    context.compute(Duration::from_millis(1)).await;
                    context
                        .table(
                            "PutItem",
                            "orders",
                            json!({"Item": {"id": {"S": id}, "status": {"S": "fulfilled"}}}),
                        )
                        .await
                        .map_err(|error| HandlerError::new("TableError", error.to_string()))?;
                }
                Ok(Value::Null)
            }
        }),
    );
    fulfil.memory_mb = 256;
    fulfil.invoke_policy = vec![crate::runtime::SERVICE_PRINCIPAL.into()];
    fulfil.execution_policy = vec!["table:orders".into()];

    let receipt_fails = Arc::new(failing(12));
    let mut receipt = FunctionConfig::new(
        "send-receipt",
        handler(move |_event: Value, context| {
            let fails = Arc::clone(&receipt_fails);
            async move {
                context.compute(Duration::from_millis(1)).await;
                if fails() {
                    return Err(HandlerError::new(
                        "MailerRejected",
                        "mail server refused the receipt",
                    ));
                }
                Ok(Value::Null)
            }
        }),
    );
    // Only create-order: queued events are not checked again on delivery.
    receipt.invoke_policy = vec!["function:create-order".into()];
    receipt.retry = RetryPolicy {
        backoff: vec![Duration::from_millis(200), Duration::from_millis(400)],
        max_event_age: Duration::from_secs(60),
        dead_letter_queue: Some("receipts-dlq".into()),
    };
    let mut out = vec![create, charge, get_order, fulfil, receipt];
    out.extend(workflow_functions());
    out
}

/// The functions the fulfilment workflow calls.
fn workflow_functions() -> Vec<FunctionConfig> {
    let timeouts = Arc::new(failing(3));
    let mut card = FunctionConfig::new(
        "charge-card",
        handler(move |event: Value, context| {
            let timeouts = Arc::clone(&timeouts);
            async move {
                context.compute(Duration::from_millis(3)).await;
                if timeouts() {
                    return Err(HandlerError::new(
                        "PaymentTimeout",
                        "the payment provider did not answer",
                    ));
                }
                Ok(json!({"charged": event["order_id"]}))
            }
        }),
    );
    card.memory_mb = 256;
    let carrier_down = Arc::new(failing(20));
    let ship = FunctionConfig::new(
        "ship-order",
        handler(move |event: Value, context| {
            let carrier_down = Arc::clone(&carrier_down);
            async move {
                context.compute(Duration::from_millis(5)).await;
                if carrier_down() {
                    return Err(HandlerError::new(
                        "CarrierUnavailable",
                        "no carrier accepted the parcel",
                    ));
                }
                Ok(
                    json!({"tracking": format!("trk-{}", event["order_id"].as_str().unwrap_or("?"))}),
                )
            }
        }),
    );
    let notify = FunctionConfig::new(
        "notify-customer",
        handler(|_event: Value, context| async move {
            context.compute(Duration::from_millis(1)).await;
            Ok(json!({"notified": true}))
        }),
    );
    let refund = FunctionConfig::new(
        "refund-payment",
        handler(|event: Value, context| async move {
            context.compute(Duration::from_millis(2)).await;
            Ok(json!({"refunded": event["order_id"]}))
        }),
    );
    let mut out = vec![card, ship, notify, refund];
    for function in &mut out {
        function.invoke_policy = vec![crate::workflow::tasks::PRINCIPAL.into()];
    }
    out
}

/// The inventory service: a plain HTTP service traced by the plugin.
fn inventory(tracer: Tracer) -> Router {
    let stock: Arc<BTreeMap<String, u64>> = Arc::new(
        (1..=50)
            .map(|index| (format!("sku-{index}"), (index * 37) % 90))
            .collect(),
    );
    let outage = Arc::new(failing(30));
    Router::new()
        .route(
            "/stock/{sku}",
            get(move |UrlPath(sku): UrlPath<String>| {
                let (stock, outage) = (Arc::clone(&stock), Arc::clone(&outage));
                async move {
                    if outage() {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(json!({"message": "stock database unavailable"})),
                        );
                    }
                    match stock.get(&sku) {
                        Some(available) => (
                            StatusCode::OK,
                            axum::Json(json!({"sku": sku, "available": available})),
                        ),
                        None => (
                            StatusCode::NOT_FOUND,
                            axum::Json(json!({"message": "unknown sku"})),
                        ),
                    }
                }
            }),
        )
        .layer(XRayLayer::new(tracer))
}

fn route(method: Method, path: &str, integration: Integration) -> RouteConfig {
    RouteConfig {
        method,
        path: path.into(),
        integration,
        api_key_required: false,
        throttle: None,
        cache: None,
    }
}

/// Why the reference stack did not start: the component and its error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StackError(pub String);

impl Stack {
    /// Starts every component, reporting to tracelake at `settings`.
    pub async fn start(settings: StackSettings) -> Result<Self, StackError> {
        Self::start_components(settings).await.map_err(StackError)
    }

    async fn start_components(settings: StackSettings) -> Result<Self, String> {
        let (stop, stop_receiver) = watch::channel(false);
        let mut tasks = Vec::new();
        let sink: Arc<dyn SegmentSink> = match settings.export {
            Export::Udp => Arc::new(
                UdpEmitter::start(settings.xray_udp)
                    .await
                    .map_err(|error| format!("segment emitter: {error}"))?,
            ),
            Export::Otlp => Arc::new(OtlpSink::start(&settings.otlp_http_url, "orders-api")),
        };
        // Until central rules arrive: one request a second and 10 %.
        let local = parse_local_rules(
            r#"{"version": 2, "rules": [], "default": {"fixed_target": 1, "rate": 0.1}}"#,
        )
        .map_err(|error| format!("local rules: {error}"))?;
        let sampler = Sampler::new(&local);
        create_sampling_rule(&settings.xray_api_url).await;
        tasks.push(tokio::spawn(run_poller(
            sampler.clone(),
            settings.xray_api_url.clone(),
            Duration::from_secs(10),
            stopped(stop_receiver.clone()),
        )));
        let tracer = |name: &str, origin: &str| {
            Tracer::new(name, Some(origin), sampler.clone(), Arc::clone(&sink))
        };

        std::fs::create_dir_all(&settings.state_dir)
            .map_err(|error| format!("{}: {error}", settings.state_dir.display()))?;
        let master = MasterKey::load_or_create(&settings.state_dir.join("master.key"))
            .map_err(|error| error.to_string())?;
        let secrets = SecretStore::open(&settings.state_dir.join("secrets.json"), master)
            .map_err(|error| error.to_string())?;
        if secrets.get("payment-api-key").is_err() {
            secrets
                .put("payment-api-key", &format!("pk_{:016x}", fastrand::u64(..)))
                .map_err(|error| error.to_string())?;
        }

        let table = TableService::new(&[TableSpec {
            name: "orders".into(),
            key: "id".into(),
            capacity: (40.0, 30),
        }]);
        let queues = QueueService::new(&[
            QueueSpec {
                name: "order-events".into(),
                redrive: Some(("order-events-dlq".into(), 3)),
            },
            QueueSpec {
                name: "order-events-dlq".into(),
                redrive: None,
            },
            QueueSpec {
                name: "receipts-dlq".into(),
                redrive: None,
            },
        ]);
        let io = |error: std::io::Error| error.to_string();
        let (table_url, task) = serve(table.router(), stop_receiver.clone())
            .await
            .map_err(io)?;
        tasks.push(task);
        let (queue_url, task) = serve(queues.router(), stop_receiver.clone())
            .await
            .map_err(io)?;
        tasks.push(task);
        let (inventory_url, task) = serve(
            inventory(tracer("inventory", "AWS::EC2::Instance")),
            stop_receiver.clone(),
        )
        .await
        .map_err(io)?;
        tasks.push(task);

        let admin_key = AdminKey::generate();
        let runtime = Runtime::new(
            functions(),
            |name| tracer(name, "AWS::Lambda::Function"),
            Some(Arc::new(secrets)),
            Downstream {
                table_url: Some(table_url.clone()),
                queue_url: Some(queue_url.clone()),
                client: TracedClient::default(),
            },
        );
        let (runtime_url, task) = serve(
            crate::runtime::http::router(runtime.clone(), admin_key.clone()),
            stop_receiver.clone(),
        )
        .await
        .map_err(io)?;
        tasks.push(task);
        // The workflow engine: histories beside the secrets; executions a
        // previous run left unfinished resume now.
        let machine = crate::workflow::parse(FULFILMENT).map_err(|error| error.to_string())?;
        let engine = Engine::new(
            vec![(WORKFLOW.to_string(), machine)],
            HistoryStore::open(&settings.state_dir.join("workflows")).map_err(io)?,
            Arc::new(RuntimeTasks {
                runtime: runtime.clone(),
                client: reqwest::Client::new(),
            }),
            Arc::new(SystemClock),
            tracer(WORKFLOW, ORIGIN),
        );
        let resumed = engine.resume_all();
        if resumed > 0 {
            tracing::info!(resumed, "unfinished workflow executions resumed");
        }
        let (workflow_url, task) = serve(
            crate::workflow::api::router(engine.clone()),
            stop_receiver.clone(),
        )
        .await
        .map_err(io)?;
        tasks.push(task);
        let mapping = runtime.start_mapping(
            queues.clone(),
            EventSourceMapping {
                queue: "order-events".into(),
                function: "fulfil-order".into(),
                batch_size: 5,
                visibility: Duration::from_secs(10),
            },
        );
        tasks.push(tokio::spawn(export_loop(
            runtime.clone(),
            settings.otlp_http_url.clone(),
            Duration::from_secs(10),
            stopped(stop_receiver.clone()),
        )));

        let mut create = route(
            Method::POST,
            "/orders",
            Integration::Function("create-order".into()),
        );
        create.api_key_required = true;
        create.throttle = Some((15.0, 10));
        let mut read = route(
            Method::GET,
            "/orders/{id}",
            Integration::Function("get-order".into()),
        );
        read.cache = Some(MethodCache {
            ttl: Duration::from_secs(10),
            key_parameters: vec!["path.id".into()],
        });
        let stock = route(
            Method::GET,
            "/stock/{sku}",
            Integration::Http(format!("{inventory_url}/stock/{{sku}}")),
        );
        let mut fulfil = route(
            Method::POST,
            "/fulfilments",
            Integration::Workflow(WORKFLOW.into()),
        );
        fulfil.api_key_required = true;
        let gateway = Gateway::new(
            GatewayConfig {
                api_name: "orders-api".into(),
                account_throttle: (500.0, 200),
                stages: vec![StageConfig {
                    name: "prod".into(),
                    throttle: (100.0, 50),
                    cache_enabled: true,
                    routes: vec![create, read, stock, fulfil],
                }],
                usage_plans: vec![UsagePlan {
                    name: "demo".into(),
                    throttle: (200.0, 100),
                    quota: None,
                }],
                api_keys: vec![ApiKey {
                    value: API_KEY.into(),
                    name: "demo-client".into(),
                    usage_plan: "demo".into(),
                    can_invalidate_cache: true,
                }],
                runtime_url: runtime_url.clone(),
                workflow_url: Some(workflow_url.clone()),
                integration_timeout: Duration::from_secs(29),
                admin_key: admin_key.clone(),
            },
            tracer("orders-api", "AWS::ApiGateway::Stage"),
            TracedClient::default(),
        )
        .map_err(|error| error.to_string())?;
        let (gateway_url, task) = serve(gateway.router(), stop_receiver.clone())
            .await
            .map_err(io)?;
        tasks.push(task);
        Ok(Self {
            gateway_url,
            runtime_url,
            inventory_url,
            table_url,
            queue_url,
            workflow_url,
            engine,
            runtime,
            queues,
            admin_key,
            sink,
            mapping,
            stop,
            tasks,
        })
    }

    /// Segments sent and dropped so far.
    pub fn emitter_stats(&self) -> crate::emitter::EmitterStats {
        self.sink.stats()
    }

    /// Stops every component (the metrics are exported a last time).
    pub async fn stop(self) {
        self.mapping.stop();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Let the emitter send what the last requests recorded.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The directory the demo keeps its secrets in, under a data dir.
pub fn state_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("demo")
}
