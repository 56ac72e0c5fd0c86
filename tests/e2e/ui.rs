//! The web UI in a real browser: `tracelake demo` runs, and
//! `ui/tests/browser.mjs` drives headless Chromium (Debian's `chromium`,
//! through `playwright-core`) against it: the map shows the demo's nodes
//! and edges, search finds a trace this test found through the Tempo API,
//! its waterfall has every span, the histograms render. Screenshots land
//! in `ui/test-artifacts/` (or `TRACELAKE_UI_ARTIFACTS`).
//!
//! Needs Node.js, `ui/node_modules` (`npm ci` in `ui/`) and Chromium
//! (`TRACELAKE_TEST_CHROMIUM`, default `/usr/bin/chromium`); the test
//! script installs all three.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::demo::{DEMO_LISTENERS, EXPECTED_EDGES, EXPECTED_NODES, complete_map, get_json};
use crate::jaeger::url_encode;
use crate::server::TestServerBuilder;

/// How long the browser script may take in all.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("TRACELAKE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh (it installs Debian's chromium) or set TRACELAKE_TEST_CHROMIUM",
        path.display()
    );
    path
}

fn node() -> String {
    let node = std::env::var("TRACELAKE_TEST_NODE").unwrap_or_else(|_| "node".into());
    let playwright = repo().join("ui/node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "{} missing: run scripts/test.sh (it runs npm ci in ui/)",
        playwright.display()
    );
    node
}

/// Runs the browser script; its output is printed either way.
fn run_browser(input: &Value) -> bool {
    let mut child = Command::new(node())
        .arg(repo().join("ui/tests/browser.mjs"))
        .current_dir(repo().join("ui"))
        .env("TRACELAKE_UI_TEST", input.to_string())
        .env("TRACELAKE_TEST_CHROMIUM", chromium())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser test ran past {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The UI's own logic (`ui/tests/unit.test.mjs`, Node's test runner): the
/// queries the search form writes, the waterfall's order, histogram bins.
#[test]
fn the_web_ui_logic_passes_its_node_tests() {
    let output = Command::new(node())
        .args(["--test", "tests/"])
        .current_dir(repo().join("ui"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("# fail 0") && !report.contains("# pass 0"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_shows_the_demo_in_a_real_browser() {
    // Fail fast, before the demo runs, when the browser is not set up.
    chromium();
    node();
    let dir = tempfile::tempdir().unwrap();
    let mut demo = TestServerBuilder::new(dir.path())
        .subcommand("demo", DEMO_LISTENERS)
        .arg("--duration")
        .arg("240s")
        .arg("--rate")
        .arg("25")
        .spawn();
    let base = demo.http_url();
    let client = reqwest::Client::new();
    complete_map(&client, &base).await;

    // A known trace, found through the Tempo API: from the gateway to the
    // function that queues the order (its consumer runs in a trace of its
    // own, linked to this one, as X-Ray draws SQS).
    let service = "create-order";
    let query = format!(
        r#"{{ resource.service.name = "orders-api/prod" }} >> {{ resource.service.name = "{service}" }}"#
    );
    let found = get_json(
        &client,
        format!("{base}/api/search?q={}&limit=5", url_encode(&query)),
    )
    .await;
    let trace_id = found["traces"][0]["traceID"]
        .as_str()
        .expect("a trace from the gateway to the queueing function")
        .to_string();
    let trace = get_json(&client, format!("{base}/v1/traces/{trace_id}")).await;
    let start_ns: i64 = trace["start_unix_nano"].as_str().unwrap().parse().unwrap();

    // A trace with a fault and its exception: a payment that timed out.
    let faulty = r#"service("charge-payment") { fault }"#;
    let deadline = Instant::now() + Duration::from_secs(90);
    let fault_trace_id = loop {
        let found = get_json(
            &client,
            format!(
                "{base}/v1/search?q={}&limit=1&start={}&end={}",
                url_encode(faulty),
                start_ns / 1_000_000_000 - 600,
                start_ns / 1_000_000_000 + 600
            ),
        )
        .await;
        if let Some(id) = found["traces"][0]["trace_id"].as_str() {
            break id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no timed-out payment traced: {found}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };

    let artifacts = std::env::var_os("TRACELAKE_UI_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("ui/test-artifacts"));
    let input = json!({
        "url": base,
        "nodes": EXPECTED_NODES,
        "edges": EXPECTED_EDGES.iter().map(|(client, server, _)| [client, server]).collect::<Vec<_>>(),
        "trace_id": trace_id,
        "trace_start": start_ns as f64 / 1e9,
        "fault_trace_id": fault_trace_id,
        "search_service": service,
        "artifacts": artifacts,
    });
    let passed = tokio::task::spawn_blocking(move || run_browser(&input))
        .await
        .unwrap();
    assert!(
        passed,
        "the browser checks failed (output above; screenshots in {})",
        artifacts.display()
    );
    assert!(artifacts.join("map.png").exists());
    assert!(artifacts.join("trace.png").exists());
    assert!(artifacts.join("histogram.png").exists());
    assert!(demo.stop().success());
}
