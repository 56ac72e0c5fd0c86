//! The reference stack through boto3's Lambda and SQS clients
//! (`tests/python/lambda_sqs_boto3.py`): an asynchronous invoke from the
//! one principal a function's policy allows runs, with the request id its
//! 202 carried; only the admin key vouches for a principal; the queue
//! keeps typed message attributes with SQS's MD5s; and a failed event's
//! dead-letter message carries Lambda's `RequestID`, `ErrorCode` and
//! `ErrorMessage`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tracelake_gateway_plugin::admin::AdminKey;
use tracelake_gateway_plugin::downstream::{QueueService, QueueSpec};
use tracelake_gateway_plugin::runtime::{
    Downstream, FunctionConfig, HandlerError, RetryPolicy, Runtime, handler, http,
};
use tracelake_gateway_plugin::{MemorySink, Tracer};
use tracelake_sampler::client::{Sampler, parse_local_rules};

/// The venv's Python with boto3 (scripts/test.sh sets it up and exports
/// this variable).
fn python() -> PathBuf {
    let path = std::env::var_os("TRACELAKE_TEST_PYTHON")
        .map(PathBuf::from)
        .expect("TRACELAKE_TEST_PYTHON is not set: run scripts/test.sh (it installs boto3) or point it at a Python with boto3");
    assert!(path.exists(), "{} not found", path.display());
    path
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_async_invokes_run_once_authorized_and_queues_keep_attributes() {
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&ran);
    let mut picky = FunctionConfig::new(
        "picky",
        handler(move |_event: Value, context| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().push(context.request_id().to_string());
                Ok(json!("done"))
            }
        }),
    );
    picky.invoke_policy = vec!["function:caller".into()];
    let mut fails = FunctionConfig::new(
        "picky-fails",
        handler(|_event: Value, _context| async move {
            Err(HandlerError::new("PaymentDeclined", "card declined"))
        }),
    );
    fails.invoke_policy = vec!["function:caller".into()];
    fails.retry = RetryPolicy {
        backoff: vec![Duration::from_millis(20), Duration::from_millis(20)],
        max_event_age: Duration::from_secs(5),
        dead_letter_queue: Some("failed-events".into()),
    };

    let queues = QueueService::new(&[
        QueueSpec {
            name: "jobs".into(),
            redrive: None,
        },
        QueueSpec {
            name: "failed-events".into(),
            redrive: None,
        },
    ]);
    let queue_url = serve(queues.router()).await;
    let sink = Arc::new(MemorySink::default());
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
    )
    .unwrap();
    let sampler = Sampler::new(&rules);
    let tracer_sink = Arc::clone(&sink);
    let runtime = Runtime::new(
        vec![picky, fails],
        move |name| {
            Tracer::new(
                name,
                Some("AWS::Lambda::Function"),
                sampler.clone(),
                tracer_sink.clone(),
            )
        },
        None,
        Downstream {
            queue_url: Some(queue_url.clone()),
            ..Downstream::default()
        },
    );
    let admin = AdminKey::generate();
    let runtime_url = serve(http::router(runtime.clone(), admin.clone())).await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/lambda_sqs_boto3.py"
    );
    let arguments = [runtime_url, queue_url, admin.value().to_string()];
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args(arguments)
            .output()
            .expect("run the boto3 script")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "boto3 script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");

    // The allowed caller's event ran (no second policy check as
    // lambda.amazonaws.com), with the request id its 202 answered.
    let accepted = report["picky"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ran.lock().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accepted event never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*ran.lock(), vec![accepted.clone()]);
    let documents = sink.documents();
    let segment = documents
        .iter()
        .find(|document| document["name"] == "picky")
        .expect("picky's segment");
    assert_eq!(segment["aws"]["request_id"], accepted.as_str());

    // No identity without the admin key.
    for refused in ["anonymous", "claimed_identity", "wrong_key"] {
        assert_eq!(
            report[refused],
            json!(["AccessDeniedException", 403]),
            "{refused}: {report}"
        );
    }

    // Typed message attributes, selected by name, with SQS's MD5s.
    for check in [
        "send_md5_body",
        "send_md5_attributes",
        "received_attributes_equal",
        "received_md5_attributes",
        "received_md5_body",
        "selected_attributes_equal",
        "selected_md5",
        "unrequested_attributes_absent",
    ] {
        assert_eq!(report[check], true, "{check}: {report}");
    }
    assert_eq!(report["bad_number"], json!(["InvalidParameterValue", 400]));
    assert_eq!(
        report["reserved_name"],
        json!(["InvalidParameterValue", 400])
    );

    // The dead letter: the event, and Lambda's three attributes.
    let letter = &report["dead_letter"];
    assert_eq!(letter["body"], json!({"function": "picky-fails"}));
    assert_eq!(
        letter["attributes"]["RequestID"],
        json!({"DataType": "String", "StringValue": report["picky-fails"]})
    );
    assert_eq!(
        letter["attributes"]["ErrorCode"],
        json!({"DataType": "Number", "StringValue": "200"}),
        "a function error: Invoke's status 200"
    );
    assert_eq!(letter["attributes"]["ErrorMessage"]["DataType"], "String");
    assert!(
        letter["attributes"]["ErrorMessage"]["StringValue"]
            .as_str()
            .unwrap()
            .contains("card declined"),
        "{letter}"
    );
    assert_eq!(letter["md5_ok"], true);
    // Every attempt of the failed event ran with the same request id.
    let attempts: Vec<&Value> = documents
        .iter()
        .filter(|document| document["name"] == "picky-fails")
        .map(|document| &document["aws"]["request_id"])
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(attempts.iter().all(|id| **id == report["picky-fails"]));
}
