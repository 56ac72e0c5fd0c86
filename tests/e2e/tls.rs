//! TLS on every TCP listener, with API keys: the OpenTelemetry SDK's gRPC
//! and HTTP exporters, boto3 and requests connect trusting only the test's
//! CA; a plain-text client or a stalled handshake harms no one.

use std::io::Write;
use std::process::Command;

use crate::python_sdk::python;
use crate::server::TestServerBuilder;
use crate::tenancy::new_key;

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key) paths.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_clients_reach_every_listener_over_tls_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let mut config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    );
    let client_key = new_key(
        dir.path(),
        &mut config,
        "sdk",
        "secure",
        "ingest,query",
        true,
    );
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .config(&config)
        .spawn();

    // A client that connects and says nothing, and one speaking plain HTTP.
    let mut stalled = std::net::TcpStream::connect(server.http).unwrap();
    let plain = reqwest::Client::new()
        .get(format!("{}/ready", server.http_url()))
        .send()
        .await;
    assert!(
        plain.map(|response| response.status().is_success()).ok() != Some(true),
        "plain HTTP must not be served on a TLS listener"
    );

    let (access_key_id, secret) = client_key.sigv4.clone().unwrap();
    let output = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/tls_clients.py"
        ))
        .arg(&cert)
        .arg(server.otlp_grpc.to_string())
        .arg(format!("https://{}", server.otlp_http))
        .arg(format!("https://{}", server.xray_api))
        .arg(format!("https://{}", server.http))
        // A CA bundle from the environment would override the exporter's
        // certificate_file (requests reads it over a session's verify).
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("AWS_CA_BUNDLE")
        .env("TRACELAKE_TEST_TOKEN", &client_key.token)
        .env("TRACELAKE_TEST_ACCESS_KEY_ID", &access_key_id)
        .env("TRACELAKE_TEST_SECRET_ACCESS_KEY", &secret)
        .output()
        .expect("run the python clients");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(result["grpc_export"], true, "{result}\n{stderr}");
    assert_eq!(result["http_export"], true, "{result}\n{stderr}");
    assert_eq!(
        result["put_trace_segments"]["UnprocessedTraceSegments"],
        serde_json::json!([]),
        "{result}"
    );
    let found = result["found"].as_object().unwrap();
    assert_eq!(found.len(), 3, "{result}");
    assert!(found.values().all(|status| status == 200), "{result}");
    let _ = stalled.write_all(b"\x16");
}

#[test]
fn a_missing_certificate_stops_the_server_with_the_files_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = TestServerBuilder::new(&dir.path().join("data"))
        .config(
            "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
        )
        .run_to_exit();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}
