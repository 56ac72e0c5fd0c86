//! The function runtime: cold and warm starts, the concurrency throttle,
//! timeouts, asynchronous retries then the dead-letter queue, poll-based
//! batches, secrets in the environment, and both policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use serde_json::{Value, json};
use tracelake_gateway_plugin::downstream::{QueueService, QueueSpec, TableService, TableSpec};
use tracelake_gateway_plugin::runtime::{
    Caller, Downstream, EnvValue, EventSourceMapping, FunctionConfig, HandlerError, InvokeError,
    RetryPolicy, Runtime, handler,
};
use tracelake_gateway_plugin::secrets::{MasterKey, SecretStore};
use tracelake_gateway_plugin::{MemorySink, Tracer};
use tracelake_sampler::TraceHeader;
use tracelake_sampler::client::{Sampler, parse_local_rules};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

struct Stack {
    runtime: Runtime,
    sink: Arc<MemorySink>,
    queues: QueueService,
    table: TableService,
    _dir: tempfile::TempDir,
}

const SECRET: &str = "s3cr3t-value-that-must-not-leak";

async fn stack(functions: Vec<FunctionConfig>) -> Stack {
    let sink = Arc::new(MemorySink::default());
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
    )
    .unwrap();
    let sampler = Sampler::new(&rules);
    let queues = QueueService::new(&[
        QueueSpec {
            name: "jobs".into(),
            redrive: Some(("jobs-dlq".into(), 3)),
        },
        QueueSpec {
            name: "jobs-dlq".into(),
            redrive: None,
        },
        QueueSpec {
            name: "failed-events".into(),
            redrive: None,
        },
    ]);
    let table = TableService::new(&[TableSpec {
        name: "orders".into(),
        key: "id".into(),
        capacity: (1_000.0, 1_000),
    }]);
    let downstream = Downstream {
        table_url: Some(serve(table.router()).await),
        queue_url: Some(serve(queues.router()).await),
        ..Downstream::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets =
        SecretStore::open(&dir.path().join("secrets.json"), MasterKey::generate()).unwrap();
    secrets.put("db-password", SECRET).unwrap();
    let tracer_sink = Arc::clone(&sink);
    let runtime = Runtime::new(
        functions,
        move |name| {
            Tracer::new(
                name,
                Some("AWS::Lambda::Function"),
                sampler.clone(),
                tracer_sink.clone(),
            )
        },
        Some(Arc::new(secrets)),
        downstream,
    );
    Stack {
        runtime,
        sink,
        queues,
        table,
        _dir: dir,
    }
}

fn echo(name: &str) -> FunctionConfig {
    FunctionConfig::new(
        name,
        handler(|event: Value, context| async move {
            context.compute(Duration::from_millis(5)).await;
            Ok(json!({"echo": event, "request_id": context.request_id()}))
        }),
    )
}

fn anyone() -> Caller {
    Caller::default()
}

fn segments<'a>(documents: &'a [Value], name: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|document| document["name"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_then_warm_and_idle_instances_expire() {
    let mut config = echo("echo");
    config.idle_ttl = Duration::from_millis(300);
    config.bootstrap_work = Duration::from_millis(20);
    let stack = stack(vec![config]).await;
    let first = stack
        .runtime
        .invoke("echo", json!(1), &anyone())
        .await
        .unwrap();
    assert!(first.report.cold());
    assert!(
        first.report.init.unwrap() >= Duration::from_millis(20) * 13,
        "128 MB: ~13.8x slower CPU"
    );
    let second = stack
        .runtime
        .invoke("echo", json!(2), &anyone())
        .await
        .unwrap();
    assert!(!second.report.cold());
    assert_eq!(
        second.report.instance, first.report.instance,
        "the warm instance is reused"
    );
    assert_eq!(second.result.unwrap()["echo"], 2);
    // Billed: the duration rounded up to the millisecond.
    let duration_ms = second.report.duration.as_secs_f64() * 1e3;
    assert_eq!(second.report.billed_ms, duration_ms.ceil() as u64);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = stack
        .runtime
        .invoke("echo", json!(3), &anyone())
        .await
        .unwrap();
    assert!(third.report.cold(), "the idle instance was reclaimed");

    let documents = stack.sink.documents();
    let echo_segments = segments(&documents, "echo");
    assert_eq!(echo_segments.len(), 3);
    let cold = echo_segments[0];
    assert_eq!(cold["origin"], "AWS::Lambda::Function");
    assert_eq!(cold["subsegments"][0]["name"], "Initialization");
    assert_eq!(cold["annotations"]["cold_start"], true);
    assert!(
        echo_segments[1].get("subsegments").is_none(),
        "no init when warm"
    );
    let metrics = stack.runtime.metrics("echo").unwrap();
    assert_eq!((metrics.invocations, metrics.cold_starts), (3, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limit_throttles_and_timeouts_discard_the_instance() {
    let mut slow = FunctionConfig::new(
        "slow",
        handler(|event: Value, _context| async move {
            let millis = event["sleep_ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok(json!("done"))
        }),
    );
    slow.concurrency = 2;
    slow.timeout = Duration::from_millis(300);
    let stack = stack(vec![slow]).await;
    let runtime = stack.runtime.clone();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                runtime
                    .invoke("slow", json!({"sleep_ms": 150}), &Caller::default())
                    .await
            })
        })
        .collect();
    let mut throttled = 0;
    let mut done = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(invocation) => {
                assert_eq!(invocation.result.unwrap(), "done");
                done += 1;
            }
            Err(InvokeError::Throttled(message)) => {
                assert!(message.contains("ReservedFunctionConcurrentInvocationLimitExceeded"));
                throttled += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((done, throttled), (2, 3));
    assert_eq!(stack.runtime.metrics("slow").unwrap().throttles, 3);

    let timed_out = runtime
        .invoke("slow", json!({"sleep_ms": 2_000}), &anyone())
        .await
        .unwrap();
    let error = timed_out.result.unwrap_err();
    assert_eq!(error.kind, "Sandbox.Timedout");
    assert!(error.message.contains("Task timed out after 0.30 seconds"));
    assert!(timed_out.report.duration < Duration::from_millis(1_000));
    // Two warm instances were left; the timed-out one is gone, one remains.
    let next = runtime.invoke("slow", json!({}), &anyone()).await.unwrap();
    assert!(!next.report.cold());
    let after = runtime.invoke("slow", json!({}), &anyone()).await.unwrap();
    assert!(!after.report.cold());
    let documents = stack.sink.documents();
    let faulted = segments(&documents, "slow")
        .into_iter()
        .find(|segment| segment["fault"] == true)
        .expect("the timed-out invocation's segment");
    assert_eq!(
        faulted["cause"]["exceptions"][0]["type"],
        "Sandbox.Timedout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn asynchronous_events_are_retried_then_dead_lettered() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let mut flaky = FunctionConfig::new(
        "flaky",
        handler(move |event: Value, _context| {
            let attempts = Arc::clone(&counted);
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                if event["fail"] == true {
                    Err(HandlerError::new("PaymentDeclined", "card declined"))
                } else {
                    Ok(json!("ok"))
                }
            }
        }),
    );
    flaky.retry = RetryPolicy {
        backoff: vec![Duration::from_millis(20), Duration::from_millis(40)],
        max_event_age: Duration::from_secs(5),
        dead_letter_queue: Some("failed-events".into()),
    };
    let stack = stack(vec![flaky]).await;
    let header = TraceHeader::parse(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    )
    .unwrap();
    let caller = Caller {
        principal: String::new(),
        trace: Some(header),
    };
    stack
        .runtime
        .invoke_async("flaky", json!({"fail": false}), &caller)
        .unwrap();
    stack
        .runtime
        .invoke_async("flaky", json!({"fail": true}), &caller)
        .unwrap();
    let dead = stack
        .queues
        .receive(
            "failed-events",
            10,
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&dead[0].body).unwrap(),
        json!({"fail": true})
    );
    assert_eq!(
        dead[0].trace_header.as_deref(),
        Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
    );
    // One success, and the failing event tried three times (two retries).
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    let metrics = stack.runtime.metrics("flaky").unwrap();
    assert_eq!(
        (metrics.invocations, metrics.errors, metrics.dlq_errors),
        (4, 3, 0)
    );
    // Each attempt is a segment of the caller's trace.
    let documents = stack.sink.documents();
    let flaky_segments = segments(&documents, "flaky");
    assert_eq!(flaky_segments.len(), 4);
    assert!(
        flaky_segments
            .iter()
            .all(|segment| segment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poller_invokes_with_batches_and_reports_iterator_age() {
    let batches = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = Arc::clone(&batches);
    let consumer = FunctionConfig::new(
        "consumer",
        handler(move |event: Value, _context| {
            let seen = Arc::clone(&seen);
            async move {
                let bodies: Vec<String> = event["Records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|record| record["body"].as_str().unwrap().to_string())
                    .collect();
                seen.lock().push(bodies);
                Ok(Value::Null)
            }
        }),
    );
    let stack = stack(vec![consumer]).await;
    for index in 0..25 {
        let header = (index == 0).then(|| {
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".to_string()
        });
        stack
            .queues
            .send("jobs", format!("job-{index}"), header)
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mapping = stack.runtime.start_mapping(
        stack.queues.clone(),
        EventSourceMapping {
            queue: "jobs".into(),
            function: "consumer".into(),
            batch_size: 10,
            visibility: Duration::from_secs(30),
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while batches.lock().iter().map(Vec::len).sum::<usize>() < 25 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            batches.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mapping.stop();
    let sizes: Vec<usize> = batches.lock().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(
        stack.queues.depth("jobs").unwrap(),
        (0, 0),
        "deleted after success"
    );
    assert!(stack.runtime.metrics("consumer").unwrap().iterator_age_ms >= 150);
    // The first batch runs in a trace of its own, linked to the
    // producer's call (as Lambda links SQS consumers), sampled as the
    // producer was.
    let documents = stack.sink.documents();
    let first = segments(&documents, "consumer")[0];
    assert_ne!(first["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
    assert!(first.get("parent_id").is_none(), "{first}");
    assert_eq!(
        first["links"],
        json!([{"trace_id": "1-5759e988-bd862e3fe1be46a994272793", "id": "53995c3f42cd8ad8"}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_policies_and_downstream_calls() {
    let mut app = FunctionConfig::new(
        "app",
        handler(|event: Value, context| async move {
            let password = context.env("DB_PASSWORD").unwrap_or_default().to_string();
            let id = event["id"].as_str().unwrap_or("1").to_string();
            context
                .table("PutItem", "orders", json!({"Item": {"id": {"S": id}}}))
                .await
                .map_err(|error| HandlerError::new("TableError", error.to_string()))?;
            let sent = context.send_message("jobs", "new order").await;
            let denied = context
                .table("GetItem", "payments", json!({"Key": {"id": {"S": "x"}}}))
                .await;
            Ok(json!({
                "password_length": password.len(),
                "region": context.env("REGION"),
                "queued": sent.is_ok(),
                "denied": denied.unwrap_err().to_string(),
                "log_group": context.log_group(),
            }))
        }),
    );
    app.environment
        .insert("DB_PASSWORD".into(), EnvValue::Secret("db-password".into()));
    app.environment
        .insert("REGION".into(), EnvValue::Plain("local".into()));
    app.execution_policy = vec!["table:orders".into(), "queue:jobs".into()];
    app.invoke_policy = vec!["gateway".into()];
    let stack = stack(vec![app]).await;

    let denied = stack
        .runtime
        .invoke("app", json!({}), &anyone())
        .await
        .unwrap_err();
    assert!(matches!(denied, InvokeError::AccessDenied(_)), "{denied:?}");
    assert_eq!(denied.kind(), ("AccessDeniedException", 403));
    let caller = Caller {
        principal: "gateway".into(),
        trace: None,
    };
    let invocation = stack
        .runtime
        .invoke("app", json!({"id": "7"}), &caller)
        .await
        .unwrap();
    let answer = invocation.result.unwrap();
    assert_eq!(answer["password_length"], SECRET.len());
    assert_eq!(answer["region"], "local");
    assert_eq!(answer["queued"], true);
    assert!(
        answer["denied"]
            .as_str()
            .unwrap()
            .contains("not authorized to access table:payments")
    );
    assert_eq!(answer["log_group"], "/aws/lambda/app");
    assert_eq!(stack.table.len("orders"), 1);
    assert_eq!(stack.queues.depth("jobs").unwrap().0, 1);

    // The calls are aws subsegments; the denied one is an error; the
    // secret appears nowhere in what was traced.
    let documents = stack.sink.documents();
    let segment = segments(&documents, "app")[0];
    let calls = segment["subsegments"].as_array().unwrap();
    let put = calls
        .iter()
        .find(|call| call["aws"]["operation"] == "PutItem")
        .unwrap();
    assert_eq!(put["namespace"], "aws");
    assert_eq!(put["aws"]["table_name"], "orders");
    assert_eq!(put["http"]["response"]["status"], 200);
    let send = calls.iter().find(|call| call["name"] == "SQS").unwrap();
    assert_eq!(send["aws"]["operation"], "SendMessage");
    let refused = calls
        .iter()
        .find(|call| call["aws"]["table_name"] == "payments")
        .unwrap();
    assert_eq!(refused["error"], true);
    assert_eq!(
        refused["cause"]["exceptions"][0]["type"],
        "AccessDeniedException"
    );
    let everything = serde_json::to_string(&documents).unwrap();
    assert!(!everything.contains(SECRET));
    // The queued message carries the trace, parented to the SQS call.
    let message = stack
        .queues
        .receive("jobs", 1, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let header = TraceHeader::parse(message.trace_header.as_deref().unwrap()).unwrap();
    assert_eq!(header.root, segment["trace_id"].as_str().unwrap());
    assert_eq!(header.parent.as_deref(), send["id"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_api_answers_as_lambda_does() {
    let mut slow = echo("echo");
    slow.concurrency = 1;
    let mut private = echo("private");
    private.invoke_policy = vec!["gateway".into()];
    let stack = stack(vec![slow, private]).await;
    let admin = tracelake_gateway_plugin::admin::AdminKey::new("runtime-admin-key-0123").unwrap();
    let url = serve(tracelake_gateway_plugin::runtime::http::router(
        stack.runtime.clone(),
        admin,
    ))
    .await;
    let client = reqwest::Client::new();
    let invoke = |function: &str, body: &str, headers: Vec<(&'static str, &'static str)>| {
        let mut request = client
            .post(format!("{url}/2015-03-31/functions/{function}/invocations"))
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("x-amzn-errortype")
                .map(|value| value.to_str().unwrap().to_string());
            let cold = response
                .headers()
                .get("x-tracelake-cold-start")
                .map(|value| value.to_str().unwrap().to_string());
            (status, kind, cold, response.text().await.unwrap())
        }
    };
    let (status, _, cold, body) = invoke("echo", r#"{"a": 1}"#, vec![]).await;
    assert_eq!((status, cold.as_deref()), (200, Some("true")));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["echo"]["a"],
        1
    );
    let (status, ..) = invoke("echo", "{}", vec![("x-amz-invocation-type", "Event")]).await;
    assert_eq!(status, 202);
    let (status, kind, ..) = invoke("echo", "not json", vec![]).await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("InvalidRequestContentException"))
    );
    let (status, kind, ..) = invoke("nope", "{}", vec![]).await;
    assert_eq!(
        (status, kind.as_deref()),
        (404, Some("ResourceNotFoundException"))
    );
    let (status, kind, ..) = invoke("private", "{}", vec![]).await;
    assert_eq!(
        (status, kind.as_deref()),
        (403, Some("AccessDeniedException"))
    );
    // A principal is honoured only with the admin key.
    let (status, kind, ..) =
        invoke("private", "{}", vec![("x-tracelake-principal", "gateway")]).await;
    assert_eq!(
        (status, kind.as_deref()),
        (403, Some("AccessDeniedException")),
        "a client cannot claim an identity"
    );
    let (status, kind, ..) = invoke(
        "private",
        "{}",
        vec![
            ("x-tracelake-principal", "gateway"),
            ("x-tracelake-admin-key", "runtime-admin-key-0124"),
        ],
    )
    .await;
    assert_eq!(
        (status, kind.as_deref()),
        (403, Some("AccessDeniedException"))
    );
    let (status, ..) = invoke(
        "private",
        "{}",
        vec![
            ("x-tracelake-principal", "gateway"),
            ("x-tracelake-admin-key", "runtime-admin-key-0123"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (status, kind, ..) =
        invoke("echo", "{}", vec![("x-amz-invocation-type", "Sometimes")]).await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("InvalidParameterValueException"))
    );
    // The table and queue refuse malformed requests the AWS way.
    let downstream = stack.runtime.downstream().clone();
    let table = client
        .post(downstream.table_url.unwrap())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(table.status(), 400);
    assert_eq!(
        table.headers()["x-amzn-errortype"],
        "UnknownOperationException"
    );
    let queue = client
        .post(downstream.queue_url.unwrap())
        .header("x-amz-target", "AmazonSQS.SendMessage")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 400);
}
