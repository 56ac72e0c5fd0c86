//! The workflow engine: each state type, Retry timing on an injected clock,
//! Catch, Map concurrency, path processing, timeouts, tracing, the HTTP
//! API, and resuming after the engine is killed between and during tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tracelake_gateway_plugin::runtime::{
    Downstream, FunctionConfig, HandlerError, Runtime, handler,
};
use tracelake_gateway_plugin::workflow::{
    Clock, Engine, Event, HistoryStore, Recorded, RecordingClock, RuntimeTasks, SystemClock, parse,
};
use tracelake_gateway_plugin::{MemorySink, Tracer};
use tracelake_sampler::client::{Sampler, parse_local_rules};

/// Completed runs per function (counted when a handler finishes).
type Completions = Arc<Mutex<HashMap<String, usize>>>;

fn sampler() -> Sampler {
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
    )
    .unwrap();
    Sampler::new(&rules)
}

/// Functions: `double` (x * 2), `flaky` (fails `Flaky` until its third
/// call), `decline` (fails `PaymentDeclined`), `slow` (sleeps `ms`),
/// `gate` (waits until the gate opens), `track` (counts how many run at
/// once), `echo`.
fn functions(
    completions: &Completions,
    gate: &Arc<tokio::sync::Notify>,
    active: &Arc<(AtomicUsize, AtomicUsize)>,
) -> Vec<FunctionConfig> {
    let done = |name: &'static str| {
        let completions = Arc::clone(completions);
        move || *completions.lock().entry(name.to_string()).or_default() += 1
    };
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let mut configs = Vec::new();
    let finished = done("double");
    configs.push(FunctionConfig::new(
        "double",
        handler(move |event: Value, _context| {
            let finished = finished.clone();
            async move {
                let x = event["x"].as_i64().unwrap_or(0);
                finished();
                Ok(json!({"value": x * 2}))
            }
        }),
    ));
    let finished = done("flaky");
    configs.push(FunctionConfig::new(
        "flaky",
        handler(move |_event: Value, _context| {
            let (calls, finished) = (Arc::clone(&flaky_calls), finished.clone());
            async move {
                finished();
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(HandlerError::new("Flaky", "try again"));
                }
                Ok(json!("charged"))
            }
        }),
    ));
    configs.push(FunctionConfig::new(
        "decline",
        handler(|_event: Value, _context| async move {
            Err::<Value, _>(HandlerError::new("PaymentDeclined", "card declined"))
        }),
    ));
    configs.push(FunctionConfig::new(
        "slow",
        handler(|event: Value, _context| async move {
            tokio::time::sleep(Duration::from_millis(event["ms"].as_u64().unwrap_or(0))).await;
            Ok(json!("slept"))
        }),
    ));
    let gate = Arc::clone(gate);
    let finished = done("gate");
    let mut gated = FunctionConfig::new(
        "gate",
        handler(move |event: Value, _context| {
            let (gate, finished) = (Arc::clone(&gate), finished.clone());
            async move {
                gate.notified().await;
                finished();
                Ok(event)
            }
        }),
    );
    gated.timeout = Duration::from_secs(60);
    configs.push(gated);
    let active = Arc::clone(active);
    configs.push(FunctionConfig::new(
        "track",
        handler(move |event: Value, _context| {
            let active = Arc::clone(&active);
            async move {
                let now = active.0.fetch_add(1, Ordering::SeqCst) + 1;
                active.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
                active.0.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({"item": event}))
            }
        }),
    ));
    let finished = done("echo");
    configs.push(FunctionConfig::new(
        "echo",
        handler(move |event: Value, _context| {
            let finished = finished.clone();
            async move {
                finished();
                Ok(event)
            }
        }),
    ));
    for config in &mut configs {
        config.bootstrap_work = Duration::ZERO;
        config.concurrency = 50;
    }
    configs
}

struct Setup {
    engine: Engine,
    sink: Arc<MemorySink>,
    clock: RecordingClock,
    completions: Completions,
}

fn build(
    machines: &[(&str, Value)],
    directory: &std::path::Path,
    clock: Arc<dyn Clock>,
    completions: Completions,
    gate: Arc<tokio::sync::Notify>,
    sink: Arc<MemorySink>,
) -> Engine {
    let active = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let sampler = sampler();
    let function_sink = Arc::clone(&sink);
    let function_sampler = sampler.clone();
    let runtime = Runtime::new(
        functions(&completions, &gate, &active),
        move |name| {
            Tracer::new(
                name,
                Some("AWS::Lambda::Function"),
                function_sampler.clone(),
                function_sink.clone(),
            )
        },
        None,
        Downstream::default(),
    );
    let machines = machines
        .iter()
        .map(|(name, definition)| (name.to_string(), parse(&definition.to_string()).unwrap()))
        .collect();
    Engine::new(
        machines,
        HistoryStore::open(directory).unwrap(),
        Arc::new(RuntimeTasks {
            runtime,
            client: reqwest::Client::new(),
        }),
        clock,
        Tracer::new("workflow", None, sampler, sink),
    )
}

fn setup(machines: &[(&str, Value)], directory: &std::path::Path) -> Setup {
    let sink = Arc::new(MemorySink::default());
    let clock = RecordingClock::default();
    let completions: Completions = Arc::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let engine = build(
        machines,
        directory,
        Arc::new(clock.clone()),
        Arc::clone(&completions),
        gate,
        Arc::clone(&sink),
    );
    Setup {
        engine,
        sink,
        clock,
        completions,
    }
}

async fn run(
    engine: &Engine,
    machine: &str,
    input: Value,
) -> tracelake_gateway_plugin::workflow::Description {
    let id = engine
        .start_execution(machine, None, input, None)
        .await
        .unwrap();
    engine.wait(&id, Duration::from_secs(20)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_state_type() {
    let dir = tempfile::tempdir().unwrap();
    let machines = [
        (
            "pass",
            json!({"StartAt": "P", "States": {
            "P": {"Type": "Pass", "Result": {"ok": true}, "ResultPath": "$.result", "Next": "Q"},
            "Q": {"Type": "Pass", "Parameters": {"copied.$": "$.result.ok", "fixed": 1}, "End": true}}}),
        ),
        (
            "task",
            json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "function:double", "End": true}}}),
        ),
        (
            "choice",
            json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Choices": [
                {"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Big"},
                {"And": [{"Variable": "$.n", "IsPresent": true}, {"Variable": "$.n", "NumericLessThan": 0}], "Next": "Negative"}
            ], "Default": "Small"},
            "Big": {"Type": "Pass", "Result": "big", "End": true},
            "Negative": {"Type": "Pass", "Result": "negative", "End": true},
            "Small": {"Type": "Pass", "Result": "small", "End": true}}}),
        ),
        (
            "nochoice",
            json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "D"}]},
            "D": {"Type": "Succeed"}}}),
        ),
        (
            "wait",
            json!({"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 30, "Next": "V"},
            "V": {"Type": "Wait", "TimestampPath": "$.at", "End": true}}}),
        ),
        (
            "parallel",
            json!({"StartAt": "Both", "States": {
            "Both": {"Type": "Parallel", "Branches": [
                {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "function:double", "End": true}}},
                {"StartAt": "E", "States": {"E": {"Type": "Pass", "Result": "other", "End": true}}}
            ], "End": true}}}),
        ),
        (
            "fail",
            json!({"StartAt": "F", "States": {
            "F": {"Type": "Fail", "Error": "OutOfStock", "Cause": "sku-9 is gone"}}}),
        ),
        (
            "succeed",
            json!({"StartAt": "S", "States": {"S": {"Type": "Succeed", "OutputPath": "$.keep"}}}),
        ),
    ];
    let setup = setup(&machines, dir.path());
    let engine = &setup.engine;

    let pass = run(engine, "pass", json!({"in": 1})).await;
    assert_eq!(pass.status, "SUCCEEDED");
    assert_eq!(pass.output, Some(json!({"copied": true, "fixed": 1})));
    assert_eq!(
        run(engine, "task", json!({"x": 21})).await.output,
        Some(json!({"value": 42}))
    );
    for (n, expected) in [
        (json!(50), "big"),
        (json!(-3), "negative"),
        (json!(5), "small"),
    ] {
        assert_eq!(
            run(engine, "choice", json!({"n": n})).await.output,
            Some(json!(expected))
        );
    }
    let none = run(engine, "nochoice", json!({"n": 2})).await;
    assert_eq!(
        (none.status.as_str(), none.error.as_deref()),
        ("FAILED", Some("States.NoChoiceMatched"))
    );
    let waited = run(engine, "wait", json!({"at": "2020-01-01T00:00:00Z"})).await;
    assert_eq!(waited.status, "SUCCEEDED");
    let sleeps = setup.clock.sleeps.lock().clone();
    assert!((sleeps[0].as_secs_f64() - 30.0).abs() < 0.5, "{sleeps:?}");
    assert_eq!(
        sleeps[1],
        Duration::ZERO,
        "a timestamp in the past waits nothing"
    );
    assert_eq!(
        run(engine, "parallel", json!({"x": 4})).await.output,
        Some(json!([{"value": 8}, "other"]))
    );
    let failed = run(engine, "fail", json!({})).await;
    assert_eq!(
        (
            failed.status.as_str(),
            failed.error.as_deref(),
            failed.cause.as_deref()
        ),
        ("FAILED", Some("OutOfStock"), Some("sku-9 is gone"))
    );
    assert_eq!(
        run(engine, "succeed", json!({"keep": [1], "drop": 2}))
            .await
            .output,
        Some(json!([1]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_backoff_catch_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let machines = [
        (
            "retry",
            json!({"StartAt": "Charge", "States": {
            "Charge": {"Type": "Task", "Resource": "function:flaky", "Retry": [
                {"ErrorEquals": ["Other"], "MaxAttempts": 5},
                {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 3, "MaxDelaySeconds": 5}
            ], "End": true}}}),
        ),
        (
            "catch",
            json!({"StartAt": "Charge", "States": {
            "Charge": {"Type": "Task", "Resource": "function:decline",
                       "Retry": [{"ErrorEquals": ["PaymentDeclined"], "IntervalSeconds": 1, "MaxAttempts": 1}],
                       "Catch": [{"ErrorEquals": ["PaymentDeclined"], "ResultPath": "$.error", "Next": "Refund"}],
                       "Next": "Done"},
            "Refund": {"Type": "Pass", "Result": "refunded", "ResultPath": "$.refund", "End": true},
            "Done": {"Type": "Succeed"}}}),
        ),
        (
            "timeout",
            json!({"StartAt": "Slow", "States": {
            "Slow": {"Type": "Task", "Resource": "function:slow", "TimeoutSeconds": 0.2,
                     "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Late"}], "End": true},
            "Late": {"Type": "Pass", "Result": "timed out", "End": true}}}),
        ),
        (
            "whole",
            json!({"StartAt": "Slow", "TimeoutSeconds": 1, "States": {
            "Slow": {"Type": "Task", "Resource": "function:slow", "End": true}}}),
        ),
    ];
    let setup = setup(&machines, dir.path());
    let retried = run(&setup.engine, "retry", json!({})).await;
    assert_eq!(retried.output, Some(json!("charged")));
    assert_eq!(
        setup.completions.lock()["flaky"],
        3,
        "two failures, then success"
    );
    // IntervalSeconds 2, BackoffRate 3: 2 s, then 6 s capped at 5 s.
    assert_eq!(
        *setup.clock.sleeps.lock(),
        [Duration::from_secs(2), Duration::from_secs(5)]
    );
    let history = setup.engine.history(&retried.execution).unwrap();
    let attempts: Vec<u32> = history
        .iter()
        .filter_map(|recorded| match recorded.event {
            Event::TaskFailed { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2]);
    // Every attempt is a subsegment of the state, each the parent of one
    // invocation of the function.
    let documents = setup.sink.documents();
    let state = documents
        .iter()
        .find(|document| document["name"] == "Charge" && document["parent_id"].is_string())
        .unwrap();
    let calls = state["subsegments"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    for call in calls {
        assert_eq!(call["aws"]["function_name"], "flaky");
        assert!(
            documents
                .iter()
                .any(|segment| segment["name"] == "flaky" && segment["parent_id"] == call["id"]),
            "the function's segment is the attempt's child"
        );
    }
    assert!(calls[0]["fault"] == true);

    let caught = run(&setup.engine, "catch", json!({"order": 7})).await;
    assert_eq!(
        caught.output,
        Some(
            json!({"order": 7, "error": {"Error": "PaymentDeclined", "Cause": "card declined"}, "refund": "refunded"})
        )
    );
    let late = run(&setup.engine, "timeout", json!({"ms": 5_000})).await;
    assert_eq!(late.output, Some(json!("timed out")));
    let whole = run(&setup.engine, "whole", json!({"ms": 5_000})).await;
    assert_eq!(
        (whole.status.as_str(), whole.error.as_deref()),
        ("TIMED_OUT", Some("States.Timeout"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn map_items_and_path_processing() {
    let dir = tempfile::tempdir().unwrap();
    let machines = [
        (
            "map",
            json!({"StartAt": "Each", "States": {
            "Each": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                     "ItemSelector": {"sku.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index"},
                     "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "function:track", "End": true}}},
                     "ResultPath": "$.results", "End": true}}}),
        ),
        (
            "paths",
            json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "function:echo",
                  "InputPath": "$.order",
                  "Parameters": {"id.$": "$.id", "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name"},
                  "ResultSelector": {"echoed.$": "$.id"},
                  "ResultPath": "$.task",
                  "OutputPath": "$.task",
                  "End": true}}}),
        ),
    ];
    let setup = setup(&machines, dir.path());
    let mapped = run(
        &setup.engine,
        "map",
        json!({"items": ["a", "b", "c", "d", "e"], "keep": 1}),
    )
    .await;
    let output = mapped.output.unwrap();
    assert_eq!(output["keep"], 1);
    let results = output["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[3],
        json!({"item": {"sku": "d", "index": 3}}),
        "in item order"
    );
    let paths = run(
        &setup.engine,
        "paths",
        json!({"order": {"id": "o-1"}, "other": true}),
    )
    .await;
    assert_eq!(paths.output, Some(json!({"echoed": "o-1"})));
    let history = setup.engine.history(&paths.execution).unwrap();
    let scheduled_input = history
        .iter()
        .find_map(|recorded| match &recorded.event {
            Event::TaskSucceeded { output, .. } => Some(output.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        scheduled_input,
        json!({"id": "o-1", "execution": paths.execution, "state": "T"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn map_respects_max_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(MemorySink::default());
    let completions: Completions = Arc::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let active = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let sampler = sampler();
    let (function_sink, function_sampler) = (Arc::clone(&sink), sampler.clone());
    let runtime = Runtime::new(
        functions(&completions, &gate, &active),
        move |name| Tracer::new(name, None, function_sampler.clone(), function_sink.clone()),
        None,
        Downstream::default(),
    );
    let machine = parse(&json!({"StartAt": "Each", "States": {
        "Each": {"Type": "Map", "MaxConcurrency": 3,
                 "Iterator": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "function:track", "End": true}}},
                 "End": true}}}).to_string()).unwrap();
    let engine = Engine::new(
        vec![("map".into(), machine)],
        HistoryStore::open(dir.path()).unwrap(),
        Arc::new(RuntimeTasks {
            runtime,
            client: reqwest::Client::new(),
        }),
        Arc::new(SystemClock),
        Tracer::new("workflow", None, sampler, sink),
    );
    let done = run(&engine, "map", json!((0..12).collect::<Vec<_>>())).await;
    assert_eq!(done.status, "SUCCEEDED");
    assert_eq!(
        active.1.load(Ordering::SeqCst),
        3,
        "at most MaxConcurrency at once, and that many"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn executions_join_the_callers_trace_and_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let machines = [(
        "order",
        json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "function:double", "End": true}}}),
    )];
    // The histories live one level down, so a file beside them is "outside".
    let setup = setup(&machines, &dir.path().join("store"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = tracelake_gateway_plugin::workflow::api::router(setup.engine.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();
    let started: Value = client
        .post(format!("{url}/executions"))
        .header("X-Amzn-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
        .json(&json!({"stateMachineArn": "arn:aws:states:local:0:stateMachine:order", "name": "first", "input": "{\"x\": 5}"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["executionArn"], "first");
    setup
        .engine
        .wait("first", Duration::from_secs(10))
        .await
        .unwrap();
    let described: Value = client
        .get(format!("{url}/executions/first"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(described["status"], "SUCCEEDED");
    assert_eq!(described["output"], "{\"value\":10}");
    assert_eq!(
        described["traceHeader"],
        "Root=1-5759e988-bd862e3fe1be46a994272793"
    );
    let history: Value = client
        .get(format!("{url}/executions/first/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ExecutionStarted",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskSucceeded",
            "TaskStateExited",
            "ExecutionSucceeded"
        ]
    );

    for (body, status, kind) in [
        (
            json!({"stateMachineArn": "nope"}),
            400,
            "StateMachineDoesNotExist",
        ),
        (
            json!({"stateMachineArn": "order", "name": "first"}),
            400,
            "ExecutionAlreadyExists",
        ),
        (
            json!({"stateMachineArn": "order", "name": "bad name!"}),
            400,
            "InvalidName",
        ),
        (
            json!({"stateMachineArn": "order", "input": "{not json"}),
            400,
            "InvalidExecutionInput",
        ),
    ] {
        let response = client
            .post(format!("{url}/executions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.headers()["x-amzn-errortype"], kind, "{body}");
    }
    let missing = client
        .get(format!("{url}/executions/ghost"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Ids never reach the file system unchecked: a history file beside the
    // store is not readable through a crafted id.
    std::fs::write(
        dir.path().join("outside.jsonl"),
        "{\"type\":\"ExecutionStarted\",\"state_machine\":\"order\"}\n",
    )
    .unwrap();
    for id in ["..%2Foutside", "a%2F..%2F..%2Foutside", "%2E%2E%2Foutside"] {
        let response = client
            .get(format!("{url}/executions/{id}/history"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{id}");
    }

    // The execution's segment continues the caller's trace; in progress
    // first, then complete; the function's segment is inside the trace.
    let documents = setup.sink.documents();
    let segments: Vec<&Value> = documents.iter().filter(|d| d["name"] == "order").collect();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0]["in_progress"], true);
    assert_eq!(segments[1]["parent_id"], "53995c3f42cd8ad8");
    assert_eq!(segments[1]["origin"], "AWS::StepFunctions::StateMachine");
    assert!(
        documents.iter().any(
            |d| d["name"] == "double" && d["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
        )
    );
}

/// Runs `work` on a fresh multi-thread runtime that is then dropped as a
/// crashed process would be: every task stops where it is.
fn crash_after<T>(work: impl std::future::Future<Output = T>) -> (tokio::runtime::Runtime, T) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let value = runtime.block_on(work);
    (runtime, value)
}

fn wait_for(engine: &Engine, id: &str, what: impl Fn(&[Value]) -> bool) {
    for _ in 0..500 {
        if what(&history_json(&engine.history(id).unwrap())) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{id} never reached the expected point: {:#?}",
        engine.history(id).unwrap()
    );
}

#[test]
fn a_killed_engine_resumes_without_rerunning_completed_tasks() {
    let dir = tempfile::tempdir().unwrap();
    // echo -> a long wait -> gate (blocks until opened) -> double.
    let machines = [(
        "order",
        json!({"StartAt": "First", "States": {
        "First": {"Type": "Task", "Resource": "function:echo", "Next": "Pause"},
        "Pause": {"Type": "Wait", "Seconds": 3600, "Next": "Held"},
        "Held": {"Type": "Task", "Resource": "function:gate", "Next": "Last"},
        "Last": {"Type": "Task", "Resource": "function:double", "InputPath": "$", "End": true}}}),
    )];
    let completions: Completions = Arc::default();
    let sink = Arc::new(MemorySink::default());

    // 1. Killed between tasks: First done, waiting in Pause (real clock).
    let (first_life, (engine, id)) = crash_after(async {
        let engine = build(
            &machines,
            dir.path(),
            Arc::new(SystemClock),
            Arc::clone(&completions),
            Arc::new(tokio::sync::Notify::new()),
            Arc::clone(&sink),
        );
        let id = engine
            .start_execution("order", Some("o-1"), json!({"x": 4}), None)
            .await
            .unwrap();
        (engine, id)
    });
    wait_for(&engine, &id, |events| {
        events.iter().any(|e| e["type"] == "WaitStateStarted")
    });
    first_life.shutdown_background();
    assert_eq!(completions.lock().get("echo"), Some(&1));

    // 2. Restarted (a clock that does not wait): Pause is over at once, Held
    //    starts and blocks on its gate; killed during that task.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (second_life, engine) = crash_after(async {
        let engine = build(
            &machines,
            dir.path(),
            Arc::new(RecordingClock::default()),
            Arc::clone(&completions),
            Arc::clone(&gate),
            Arc::clone(&sink),
        );
        assert_eq!(engine.resume_all(), 1);
        engine
    });
    wait_for(&engine, &id, |events| {
        events
            .iter()
            .any(|e| e["type"] == "TaskScheduled" && e["state"] == "Held")
    });
    second_life.shutdown_background();
    assert_eq!(
        completions.lock().get("gate"),
        None,
        "killed before it completed"
    );

    // 3. Restarted again with the gate open: the execution completes.
    let gate = Arc::new(tokio::sync::Notify::new());
    let opener = Arc::clone(&gate);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let description = runtime.block_on(async {
        let engine = build(
            &machines,
            dir.path(),
            Arc::new(RecordingClock::default()),
            Arc::clone(&completions),
            Arc::clone(&gate),
            Arc::clone(&sink),
        );
        assert_eq!(engine.resume_all(), 1);
        let open = tokio::spawn(async move {
            loop {
                opener.notify_waiters();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let description = engine.wait(&id, Duration::from_secs(20)).await.unwrap();
        open.abort();
        description
    });
    assert_eq!(description.status, "SUCCEEDED", "{description:?}");
    assert_eq!(description.output, Some(json!({"value": 8})));
    // Every completed task ran exactly once.
    let completed = completions.lock().clone();
    assert_eq!(completed.get("echo"), Some(&1));
    assert_eq!(completed.get("gate"), Some(&1));
    assert_eq!(completed.get("double"), Some(&1));

    // The history shows both gaps, and Held scheduled twice (once per life).
    let history = engine_history(dir.path(), &id);
    let resumed = history
        .iter()
        .filter(|e| e["type"] == "ExecutionResumed")
        .count();
    assert_eq!(resumed, 2);
    let held = history
        .iter()
        .filter(|e| e["type"] == "TaskScheduled" && e["state"] == "Held")
        .count();
    assert_eq!(held, 2);
    let first_runs = history
        .iter()
        .filter(|e| e["type"] == "TaskScheduled" && e["state"] == "First")
        .count();
    assert_eq!(first_runs, 1);
    assert!(
        history
            .iter()
            .all(|e| e["id"].is_number() && e["timestamp"].is_number())
    );
}

fn engine_history(directory: &std::path::Path, id: &str) -> Vec<Value> {
    history_json(&HistoryStore::open(directory).unwrap().read(id).unwrap())
}

/// A history as the `/history` route shows it.
fn history_json(history: &[Recorded]) -> Vec<Value> {
    history
        .iter()
        .map(|recorded| serde_json::to_value(recorded).unwrap())
        .collect()
}
