//! The AWS X-Ray SDK for Node.js (`aws-xray-sdk-core`, installed from
//! tests/node/package-lock.json by scripts/test.sh) samples by the rules
//! tracelake serves: they load on its first GetSamplingRules poll, a
//! FixedRate 0 / ReservoirSize 0 rule silences its path, another path is
//! sampled under `Default`, and an UpdateSamplingRule reaches the SDK
//! through SamplingTargets. The SDK keeps a rule only when it carries
//! `"Attributes": {}`, as X-Ray sends it; without it the SDK falls back to
//! its local rules (1/s + 5%) and every one of these checks fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::otlp::fetch_trace;
use crate::server::{TestServer, TestServerBuilder};
use crate::xray::{wait_for_trace, xray_hex};

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The app of tests/node, fed commands on stdin, answering JSON lines.
struct NodeApp {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl NodeApp {
    fn spawn(server: &TestServer) -> Self {
        let dir = node_dir();
        assert!(
            dir.join("node_modules/aws-xray-sdk-core").exists(),
            "{} has no node_modules: run scripts/test.sh (it runs npm ci there)",
            dir.display()
        );
        let node = std::env::var_os("TRACELAKE_TEST_NODE").unwrap_or_else(|| "node".into());
        let mut child = Command::new(node)
            .arg(dir.join("sampling_app.js"))
            .current_dir(&dir)
            .env(
                "AWS_XRAY_DAEMON_ADDRESS",
                format!("tcp:{} udp:{}", server.xray_api, server.xray_udp),
            )
            .env("TRACELAKE_TARGET_POLL_MS", "1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("run node (set TRACELAKE_TEST_NODE or put node on PATH)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn next_line(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the node app answers within 30 s (TEST_LOG=1 shows its errors)");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    fn send(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the node app");
        self.stdin.flush().expect("flush");
        let answer = self.next_line();
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer
    }

    /// The SDK's decisions for `count` requests to `path`: the rule name
    /// that sampled each, `true` when its local fallback did, or `false`.
    fn decide(&mut self, path: &str, count: usize) -> (Vec<Value>, Vec<String>) {
        let answer = self.send(json!({"cmd": "decide", "path": path, "count": count}));
        let decisions = answer["decisions"].as_array().unwrap().clone();
        let trace_ids = answer["trace_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_string())
            .collect();
        (decisions, trace_ids)
    }
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn xray_call(server: &TestServer, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.xray_api_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

fn rule_names(rules: &Value) -> Vec<&str> {
    rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn node_sdk_samples_by_the_rules_tracelake_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    xray_call(
        &server,
        "/CreateSamplingRule",
        json!({"SamplingRule": {
            "RuleName": "health", "Priority": 1, "FixedRate": 0.0, "ReservoirSize": 0,
            "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
            "URLPath": "/health", "ResourceARN": "*", "Version": 1,
        }}),
    )
    .await;

    // The rules load on the SDK's first poll, not its local fallback.
    let mut app = NodeApp::spawn(&server);
    let started = app.next_line();
    assert_eq!(started["event"], "started", "{started}");
    assert_eq!(
        rule_names(&started),
        ["health", "Default"],
        "the SDK kept none of tracelake's rules and samples by its local fallback: {started}"
    );

    // FixedRate 0, ReservoirSize 0: /health is never sampled.
    let (health, health_traces) = app.decide("/health", 20);
    assert!(
        health.iter().all(|decision| *decision == json!(false)),
        "/health sampled despite its rule: {health:?}"
    );

    // Another path falls under Default (a reservoir of 1/s, then 5%): its
    // first request is sampled, by the rule named Default.
    let (control, control_traces) = app.decide("/orders/42", 10);
    assert_eq!(control[0], json!("Default"), "{control:?}");
    assert!(
        control
            .iter()
            .all(|decision| *decision == json!("Default") || *decision == json!(false)),
        "a decision not taken by the Default rule: {control:?}"
    );
    // The sampled request's segment arrives over UDP; the unsampled do not.
    let arrived = wait_for_trace(&server, &xray_hex(&control_traces[0]), 1).await;
    assert!(!arrived.resource_spans.is_empty());
    let client = reqwest::Client::new();
    for trace_id in health_traces.iter().take(3) {
        assert!(
            fetch_trace(&client, &server.http_url(), &xray_hex(trace_id))
                .await
                .is_none(),
            "unsampled {trace_id} arrived"
        );
    }

    // UpdateSamplingRule: the SDK polls rules every 5 minutes, so the new
    // rate can only reach it through its SamplingTargets poll (every second
    // here, while the rule has requests to report).
    xray_call(
        &server,
        "/UpdateSamplingRule",
        json!({"SamplingRuleUpdate": {"RuleName": "health", "FixedRate": 1.0}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rounds = 0;
    loop {
        let (decisions, _) = app.decide("/health", 5);
        if decisions
            .iter()
            .all(|decision| *decision == json!("health"))
        {
            break;
        }
        rounds += 1;
        assert!(
            Instant::now() < deadline,
            "the updated rate never reached the SDK: {decisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rules = app.send(json!({"cmd": "rules"}));
    assert_eq!(rules["rules"][0]["name"], "health", "{rules}");
    assert_eq!(rules["rules"][0]["rate"], 1.0, "{rules}");
    assert_eq!(
        rules["last_updated"], started["last_updated"],
        "the rules were fetched again, so the change did not come through SamplingTargets: {rules}"
    );
    eprintln!("the update reached the SDK after {rounds} rounds of 200 ms");
}
