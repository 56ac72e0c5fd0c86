//! Tenancy and API keys: two tenants write through every ingest protocol
//! with their own keys; one tenant's key then reads through every API and
//! finds its own traces and nothing of the other's. Wrong keys get 401, a
//! key without the permission 403.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::{Value, json};

use crate::otlp::{request, span, span_id, string_attribute};
use crate::server::{TestServer, TestServerBuilder, tracelake_command};
use crate::service_map::boto3_as;

/// A key made with `tracelake new-key`: its token, and its SigV4 pair when asked.
pub(crate) struct Key {
    pub(crate) token: String,
    pub(crate) sigv4: Option<(String, String)>,
}

/// Runs `tracelake new-key` and appends its entry to `config`.
pub(crate) fn new_key(
    dir: &std::path::Path,
    config: &mut String,
    name: &str,
    tenant: &str,
    permissions: &str,
    sigv4: bool,
) -> Key {
    let mut command = tracelake_command();
    command.args([
        "new-key",
        "--name",
        name,
        "--tenant",
        tenant,
        "--permissions",
        permissions,
    ]);
    let secret_file = dir.join(format!("{name}.secret"));
    if sigv4 {
        command.arg("--sigv4-secret-file").arg(&secret_file);
    }
    let output = command.output().expect("run tracelake new-key");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|line| line.strip_prefix("# tlk_"))
        .map(|rest| format!("tlk_{rest}"))
        .expect("the token line");
    assert!(
        !text.contains(&format!("\"{token}\"")),
        "the config entry must not hold the token itself:\n{text}"
    );
    let sigv4 = sigv4.then(|| {
        let entry: toml::Value = toml::from_str(&text).unwrap();
        let id = entry["auth"]["keys"][0]["access_key_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret = std::fs::read_to_string(&secret_file).unwrap();
        (id, secret.trim().to_string())
    });
    config.push_str(&text);
    config.push('\n');
    Key { token, sigv4 }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A trace id X-Ray can name: its first four bytes are the epoch seconds.
fn trace_id(seed: u8) -> [u8; 16] {
    let mut id = [seed; 16];
    id[..4].copy_from_slice(&(now_seconds() as u32).to_be_bytes());
    id
}

fn xray_id(trace_id: &[u8; 16]) -> String {
    let hex = hex::encode(trace_id);
    format!("1-{}-{}", &hex[..8], &hex[8..])
}

/// A trace of `prefix`-front calling `prefix`-back, with a tag only this
/// tenant uses.
fn two_service_trace(
    trace: [u8; 16],
    prefix: &str,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let client_id = span_id(u64::from(trace[15]) * 2);
    let mut client: Span = span(trace, client_id, &format!("{prefix} call"));
    client.kind = SpanKind::Client as i32;
    client
        .attributes
        .push(string_attribute(&format!("{prefix}.only"), "private-value"));
    let mut server: Span = span(trace, span_id(u64::from(trace[15]) * 2 + 1), "GET /");
    server.kind = SpanKind::Server as i32;
    server.parent_span_id = client_id.to_vec();
    let mut both = request(&format!("{prefix}-front"), vec![client]);
    both.resource_spans
        .extend(request(&format!("{prefix}-back"), vec![server]).resource_spans);
    both
}

struct Reader<'a> {
    client: reqwest::Client,
    server: &'a TestServer,
    token: String,
}

impl<'a> Reader<'a> {
    fn new(server: &'a TestServer, token: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            server,
            token: token.to_string(),
        }
    }

    async fn get(&self, path_and_query: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.server.http_url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn json(&self, path_and_query: &str) -> Value {
        let (status, body) = self.get(path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path_and_query}: {body}"))
    }
}

async fn post_otlp(
    server: &TestServer,
    authorization: Option<&str>,
    body: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> (u16, Vec<u8>) {
    let mut post = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body.encode_to_vec());
    if let Some(authorization) = authorization {
        post = post.header("authorization", authorization);
    }
    let response = post.send().await.unwrap();
    (
        response.status().as_u16(),
        response.bytes().await.unwrap().to_vec(),
    )
}

async fn grpc_export(
    server: &TestServer,
    token: &str,
    body: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> Result<(), tonic::Status> {
    let mut client = TraceServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.export(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_sees_only_its_own_traces_through_every_api_and_keys_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    let a = new_key(dir.path(), &mut config, "a", "team-a", "ingest,query", true);
    let b = new_key(dir.path(), &mut config, "b", "team-b", "ingest,query", true);
    let a_ingest = new_key(
        dir.path(),
        &mut config,
        "a-ingest",
        "team-a",
        "ingest",
        false,
    );
    let a_query = new_key(dir.path(), &mut config, "a-query", "team-a", "query", false);
    let ops = new_key(dir.path(), &mut config, "ops", "ops", "admin", false);
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .flush_max_age("1s")
        .config(&config)
        .spawn();

    // Tenant A over OTLP/HTTP, tenant B over OTLP/gRPC and boto3's SigV4 PutTraceSegments.
    let (trace_a, trace_b, trace_b_xray) = (trace_id(0xa1), trace_id(0xb1), trace_id(0xb2));
    let a_bearer = format!("Bearer {}", a.token);
    let (status, body) = post_otlp(
        &server,
        Some(&a_bearer),
        &two_service_trace(trace_a, "alpha"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    grpc_export(&server, &b.token, two_service_trace(trace_b, "beta"))
        .await
        .expect("tenant B's gRPC export");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let b_segment = json!({
        "name": "beta-xray", "id": "70de5b6f19ff9a0b", "trace_id": xray_id(&trace_b_xray),
        "start_time": now - 2.0, "end_time": now - 1.0,
        "annotations": {"beta_secret": "private-value"},
    })
    .to_string();
    let (b_id, b_secret) = b.sigv4.clone().unwrap();
    let put = boto3_as(
        &server,
        &json!([{"call": "put_trace_segments", "args": {"TraceSegmentDocuments": [b_segment]}}]),
        (&b_id, &b_secret),
    );
    assert_eq!(put[0]["UnprocessedTraceSegments"], json!([]), "{put:?}");

    // `tracelake loadgen --api-key` writes as tenant B too; a wrong key writes nothing.
    let grpc_endpoint = server.otlp_grpc.to_string();
    let mut loadgen_acked = 0;
    for key in [b.token.as_str(), "tlk_wrong"] {
        let (ok, summary, stderr) = crate::loadgen::loadgen(&[
            "--protocol",
            "otlp-grpc",
            "--endpoint",
            &grpc_endpoint,
            "--spans",
            "500",
            "--batch",
            "100",
            "--connections",
            "1",
            "--api-key",
            key,
        ]);
        assert!(ok, "{stderr}");
        let (sent, acked) = (&summary["sent_spans"], &summary["acked_spans"]);
        if key == "tlk_wrong" {
            assert_eq!(acked, 0, "{summary}");
            assert!(stderr.contains("API key is not valid"), "{stderr}");
        } else {
            assert_eq!(acked, sent, "{summary}");
            loadgen_acked = acked.as_u64().unwrap();
        }
    }

    // Wrong or missing keys: 401 on every listener, a key's missing permission: 403.
    let (status, _) = post_otlp(&server, None, &two_service_trace(trace_id(0xc1), "gamma")).await;
    assert_eq!(status, 401);
    let (status, body) = post_otlp(
        &server,
        Some("Bearer tlk_wrong"),
        &two_service_trace(trace_id(0xc1), "gamma"),
    )
    .await;
    assert_eq!(status, 401);
    // A google.rpc.Status: the message is there as plain bytes.
    let refusal = String::from_utf8_lossy(&body);
    assert!(refusal.contains("not valid"), "{refusal}");
    let (status, _) = post_otlp(
        &server,
        Some(&format!("Bearer {}", a_query.token)),
        &two_service_trace(trace_id(0xc1), "gamma"),
    )
    .await;
    assert_eq!(status, 403, "a query-only key may not ingest");
    let (status, _) = post_otlp(
        &server,
        Some(&format!("Bearer {}", a_ingest.token)),
        &two_service_trace(trace_id(0xa3), "alpha"),
    )
    .await;
    assert_eq!(status, 200, "an ingest-only key ingests");
    let grpc_wrong = grpc_export(
        &server,
        "tlk_wrong",
        two_service_trace(trace_id(0xc1), "gamma"),
    )
    .await
    .unwrap_err();
    assert_eq!(grpc_wrong.code(), tonic::Code::Unauthenticated);
    let grpc_reader = grpc_export(
        &server,
        &a_query.token,
        two_service_trace(trace_id(0xc1), "gamma"),
    )
    .await
    .unwrap_err();
    assert_eq!(grpc_reader.code(), tonic::Code::PermissionDenied);
    let xray_calls = json!([{"call": "get_service_graph", "args": {"StartTime": now - 600.0, "EndTime": now + 60.0}}]);
    let (a_id, a_secret) = a.sigv4.clone().unwrap();
    for credentials in [
        ("TLAKUNKNOWN00000", a_secret.as_str()),
        (a_id.as_str(), "wrong secret"),
    ] {
        let refused = boto3_as(&server, &xray_calls, credentials);
        assert_eq!(
            refused[0]["raised"], "UnrecognizedClientException",
            "{refused:?}"
        );
    }
    let client = reqwest::Client::new();
    // X-Ray SDKs poll sampling unsigned, as they do the daemon: served for
    // the UDP tenant, as its datagrams are; naming a tenant needs a key.
    let xray_post = |path: &str, tenant: Option<&str>| {
        let mut post = client
            .post(format!("{}{path}", server.xray_api_url()))
            .body("{}");
        if let Some(tenant) = tenant {
            post = post.header("X-Scope-OrgID", tenant);
        }
        post.send()
    };
    assert_eq!(
        xray_post("/GetSamplingRules", None).await.unwrap().status(),
        200
    );
    let named = xray_post("/GetSamplingRules", Some("team-a"))
        .await
        .unwrap();
    assert_eq!(named.status(), 401);
    let unsigned_query = xray_post("/TraceSummaries", None).await.unwrap();
    assert_eq!(unsigned_query.status(), 401);
    assert_eq!(
        unsigned_query.headers()["x-amzn-errortype"],
        "UnrecognizedClientException"
    );
    let anonymous = client
        .get(format!("{}/api/search", server.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let open = client
        .get(format!("{}/ready", server.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200, "health stays open");
    // The web UI's page is open (it holds no data); the APIs it reads are not.
    for path in ["/", "/ui/"] {
        let page = client
            .get(format!("{}{path}", server.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
    }

    let reader = Reader::new(&server, &a.token);
    let wrong = Reader::new(&server, "tlk_wrong");
    let ingest_only = Reader::new(&server, &a_ingest.token);
    for path in [
        "/api/search",
        "/jaeger/api/services",
        "/v1/sql?q=SELECT%201",
        "/v1/search",
        "/v1/traces/0123",
        "/metrics",
    ] {
        assert_eq!(wrong.get(path).await.0, 401, "{path}");
        assert_eq!(ingest_only.get(path).await.0, 403, "{path}");
    }
    // A key cannot name another tenant, by header or by parameter.
    let named_b = client
        .get(format!("{}/api/search", server.http_url()))
        .bearer_auth(&a.token)
        .header("X-Scope-OrgID", "team-b")
        .send()
        .await
        .unwrap();
    assert_eq!(named_b.status(), 403);
    for path in ["/v1/service-map?tenant=team-b", "/metrics?tenant=team-b"] {
        assert_eq!(reader.get(path).await.0, 403, "{path}");
    }

    // Both tenants' spans reach blocks (the trace-id index, the derived tables).
    let admin = Reader::new(&server, &ops.token);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, metrics) = admin.get("/metrics").await;
        assert_eq!(status, 200);
        let flushed_spans = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tracelake_storage_appended_spans_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let blocks = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tracelake_storage_flushed_blocks_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if flushed_spans >= 7.0 + loadgen_acked as f64 && blocks >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "spans never flushed:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, a_metrics) = reader.get("/metrics").await;
    assert!(
        !a_metrics.contains("tracelake_storage_appended_spans_total"),
        "counters over every tenant are for admin keys"
    );

    // Tempo: trace by id, search, tags and tag values.
    let (a_hex, b_hex, bx_hex) = (
        hex::encode(trace_a),
        hex::encode(trace_b),
        hex::encode(trace_b_xray),
    );
    assert_eq!(reader.get(&format!("/api/traces/{a_hex}")).await.0, 200);
    for id in [&b_hex, &bx_hex] {
        assert_eq!(reader.get(&format!("/api/traces/{id}")).await.0, 404);
        assert_eq!(reader.get(&format!("/api/v2/traces/{id}")).await.0, 404);
        assert_eq!(reader.get(&format!("/jaeger/api/traces/{id}")).await.0, 404);
    }
    let (start, end) = (now_seconds() - 600, now_seconds() + 60);
    let found = reader
        .json(&format!("/api/search?start={start}&end={end}&limit=100"))
        .await;
    let ids: Vec<&str> = found["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trace| trace["traceID"].as_str().unwrap())
        .collect();
    assert!(
        ids.iter()
            .any(|id| id.trim_start_matches('0') == a_hex.trim_start_matches('0')),
        "{found}"
    );
    assert_eq!(ids.len(), 2, "A's two traces only: {found}");
    let beta_search = reader
        .json(&format!(
            "/api/search?start={start}&end={end}&q=%7Bresource.service.name%3D%22beta-front%22%7D"
        ))
        .await;
    assert_eq!(beta_search["traces"], json!([]), "{beta_search}");
    for path in ["/api/search/tags", "/api/v2/search/tags?scope=span"] {
        let (status, tags) = reader.get(path).await;
        assert_eq!(status, 200);
        assert!(tags.contains("alpha.only"), "{path}: {tags}");
        assert!(!tags.contains("beta"), "{path}: {tags}");
    }
    let values = reader.get("/api/search/tag/service.name/values").await.1;
    assert!(
        values.contains("alpha-front") && !values.contains("beta"),
        "{values}"
    );

    // Jaeger: services, operations, search.
    let services = reader.json("/jaeger/api/services").await;
    assert!(
        services["data"]
            .as_array()
            .unwrap()
            .contains(&json!("alpha-front")),
        "{services}"
    );
    assert!(!services.to_string().contains("beta"), "{services}");
    let (start_us, end_us) = (start * 1_000_000, end * 1_000_000);
    let jaeger_b = reader
        .json(&format!(
            "/jaeger/api/traces?service=beta-front&start={start_us}&end={end_us}"
        ))
        .await;
    assert_eq!(jaeger_b["data"], json!([]), "{jaeger_b}");
    let jaeger_b_ops = reader
        .json("/jaeger/api/services/beta-front/operations")
        .await;
    assert!(
        !jaeger_b_ops.to_string().contains("beta call"),
        "{jaeger_b_ops}"
    );

    // The service map (native and Jaeger's dependencies) and SQL over every table.
    let deadline = Instant::now() + Duration::from_secs(60);
    let map = loop {
        let map = reader
            .json(&format!("/v1/service-map?start={start}&end={end}"))
            .await;
        if map.to_string().contains("alpha-back") || Instant::now() > deadline {
            break map;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(map.to_string().contains("alpha-back"), "{map}");
    assert!(!map.to_string().contains("beta"), "{map}");
    let dependencies = reader
        .json(&format!(
            "/jaeger/api/dependencies?endTs={}&lookback=600000",
            end * 1000
        ))
        .await;
    assert!(!dependencies.to_string().contains("beta"), "{dependencies}");
    let sql = reader
        .json("/v1/sql?q=SELECT%20DISTINCT%20service_name%2C%20tenant%20FROM%20spans")
        .await;
    assert!(sql.to_string().contains("alpha-front"), "{sql}");
    assert!(
        !sql.to_string().contains("beta") && !sql.to_string().contains("team-b"),
        "{sql}"
    );
    for table in ["edges", "span_metrics"] {
        let rows = reader
            .json(&format!("/v1/sql?q=SELECT%20*%20FROM%20{table}"))
            .await;
        assert!(!rows.to_string().contains("beta"), "{table}: {rows}");
    }

    // The X-Ray API through boto3, signed with A's key.
    let results = boto3_as(
        &server,
        &json!([
            {"call": "batch_get_traces", "args": {"TraceIds": [xray_id(&trace_a), xray_id(&trace_b), xray_id(&trace_b_xray)]}},
            {"call": "get_trace_summaries", "args": {"StartTime": now - 600.0, "EndTime": now + 60.0}},
            {"call": "get_service_graph", "args": {"StartTime": now - 600.0, "EndTime": now + 60.0}},
            {"call": "get_trace_summaries", "args": {"StartTime": now - 600.0, "EndTime": now + 60.0, "FilterExpression": "annotation.beta_secret = \"private-value\""}},
        ]),
        (&a_id, &a_secret),
    );
    let traces = results[0]["Traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{:?}", results[0]);
    assert_eq!(traces[0]["Id"], json!(xray_id(&trace_a)));
    let summaries = results[1]["TraceSummaries"].as_array().unwrap();
    assert!(!summaries.is_empty(), "{:?}", results[1]);
    assert!(!results[1].to_string().contains("beta"), "{:?}", results[1]);
    assert!(
        results[2].to_string().contains("alpha-front"),
        "{:?}",
        results[2]
    );
    assert!(!results[2].to_string().contains("beta"), "{:?}", results[2]);
    assert_eq!(results[3]["TraceSummaries"], json!([]), "{:?}", results[3]);

    // Tenant B's own key sees its traces: the absence above is scoping, not loss.
    let b_reader = Reader::new(&server, &b.token);
    assert_eq!(b_reader.get(&format!("/api/traces/{b_hex}")).await.0, 200);
    assert_eq!(b_reader.get(&format!("/api/traces/{bx_hex}")).await.0, 200);
    assert_eq!(b_reader.get(&format!("/api/traces/{a_hex}")).await.0, 404);
}

/// Walks every route the server declares on each HTTP listener (`serve
/// --print-routes`) with no key and with a key of each permission: each is
/// refused or let through exactly as it declared, the declarations that
/// guard changes and open pages are the expected ones, and a path no route
/// declared is refused even to an admin key.
#[tokio::test(flavor = "multi_thread")]
async fn every_declared_route_is_enforced_and_undeclared_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    let keys = [
        (
            "ingest",
            new_key(dir.path(), &mut config, "i", "walk", "ingest", false),
        ),
        (
            "query",
            new_key(dir.path(), &mut config, "q", "walk", "query", false),
        ),
        (
            "admin",
            new_key(dir.path(), &mut config, "a", "walk", "admin", false),
        ),
    ];
    let server = TestServerBuilder::new(&dir.path().join("data"))
        .config(&config)
        .arg("--print-routes")
        .spawn();
    let mut routes: Vec<(String, String, String)> = Vec::new();
    // Printed right after the listening lines; either side of them is read.
    let printed = server
        .early_lines
        .iter()
        .cloned()
        .chain(server.later_lines(Duration::from_secs(3)));
    for line in printed {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("route") {
            continue;
        }
        let (Some(listener), Some(access), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("malformed route line {line:?}");
        };
        routes.push((listener.into(), access.into(), path.into()));
    }
    let with = |listener: &str, access: &str| -> std::collections::BTreeSet<String> {
        routes
            .iter()
            .filter(|route| route.0 == listener && route.1 == access)
            .map(|route| route.2.clone())
            .collect()
    };
    let set = |paths: &[&str]| paths.iter().map(|path| path.to_string()).collect();
    // What is open, what SDKs may poll without a key, and what changes
    // shared settings are fixed lists: a new route joins none of them
    // without this test changing.
    assert_eq!(
        with("http", "open"),
        set(&[
            "/",
            "/api/echo",
            "/index.html",
            "/ready",
            "/ui",
            "/ui/",
            "/ui/{*path}"
        ])
    );
    assert_eq!(
        with("xray-api", "daemon|ingest|query|admin"),
        set(&["/GetSamplingRules", "/SamplingTargets"])
    );
    assert_eq!(
        with("xray-api", "admin"),
        set(&[
            "/CreateGroup",
            "/CreateSamplingRule",
            "/DeleteGroup",
            "/DeleteSamplingRule",
            "/UpdateGroup",
            "/UpdateSamplingRule",
        ])
    );
    assert_eq!(
        with("xray-api", "ingest"),
        set(&["/TelemetryRecords", "/TraceSegments"])
    );
    assert_eq!(
        with("otlp-http", "ingest"),
        set(&["/v1/metrics", "/v1/traces"])
    );
    assert!(with("http", "query").len() >= 20, "{routes:?}");
    assert!(
        routes.iter().all(|(listener, access, _)| {
            ["http", "xray-api", "otlp-http"].contains(&listener.as_str()) && !access.is_empty()
        }),
        "{routes:?}"
    );

    let client = reqwest::Client::new();
    let send = |listener: &str, path: &str, token: Option<&str>| {
        let (base, post) = match listener {
            "xray-api" => (server.xray_api_url(), true),
            "otlp-http" => (server.otlp_http_url(), true),
            _ => (server.http_url(), false),
        };
        let url = format!("{base}{path}");
        let mut request = if post {
            client.post(url).body("{}")
        } else {
            client.get(url)
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for (listener, access, pattern) in &routes {
        let path = pattern
            .replace("{*path}", "assets/x.js")
            .replace("{trace_id}", "0af7651916cd43dd8448eb211c80319c")
            .replace("{service}", "s")
            .replace("{tag}", "name");
        let allowed: Vec<&str> = access.split('|').collect();
        let anonymous = send(listener, &path, None).await;
        if allowed.contains(&"open") || allowed.contains(&"daemon") {
            assert!(
                ![401, 403].contains(&anonymous),
                "{listener} {path}: {anonymous}"
            );
        } else {
            assert_eq!(anonymous, 401, "{listener} {path} without a key");
        }
        for (permission, key) in &keys {
            let status = send(listener, &path, Some(&key.token)).await;
            let may = allowed.contains(&"open") || allowed.contains(permission);
            if may {
                assert!(
                    ![401, 403].contains(&status),
                    "{listener} {path} with a {permission} key: {status}"
                );
            } else {
                assert_eq!(status, 403, "{listener} {path} with a {permission} key");
            }
        }
    }
    // Deny by default: paths no route declared.
    let admin = &keys[2].1.token;
    let query = &keys[1].1.token;
    let ingest = &keys[0].1.token;
    assert_eq!(
        send("xray-api", "/DeleteEverything", Some(admin)).await,
        404
    );
    assert_eq!(send("http", "/v1/undeclared", Some(query)).await, 404);
    assert_eq!(send("http", "/v1/undeclared", Some(admin)).await, 404);
    assert_eq!(send("otlp-http", "/v1/logs", Some(ingest)).await, 404);
}
