//! Two services behind the layer, the first calling the second through the
//! traced client: one trace, the callee's segment parented to the caller's
//! subsegment, outcomes recorded on both sides.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;
use tracelake_gateway_plugin::{Call, MemorySink, TraceContext, TracedClient, Tracer, XRayLayer};
use tracelake_sampler::client::{Sampler, parse_local_rules};

fn tracer(service: &str, sink: &Arc<MemorySink>) -> Tracer {
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
    )
    .unwrap();
    Tracer::new(service, None, Sampler::new(&rules), sink.clone())
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn segment<'a>(documents: &'a [Value], name: &str) -> &'a Value {
    documents
        .iter()
        .find(|document| document["name"] == name)
        .unwrap_or_else(|| panic!("no segment {name} in {documents:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_carry_the_trace_and_record_outcomes() {
    let sink = Arc::new(MemorySink::default());
    let backend = Router::new()
        .route(
            "/items/{id}",
            get(|Path(id): Path<u32>| async move {
                match id {
                    429 => StatusCode::TOO_MANY_REQUESTS,
                    500 => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::OK,
                }
            }),
        )
        .layer(XRayLayer::new(tracer("backend", &sink)));
    let backend_url = serve(backend).await;

    let client = TracedClient::default();
    let front = Router::new()
        .route(
            "/front/{id}",
            get(
                move |Path(id): Path<u32>, Extension(context): Extension<TraceContext>| {
                    let (client, backend_url) = (client.clone(), backend_url.clone());
                    async move {
                        let url = match id {
                            0 => "http://127.0.0.1:1/unreachable".to_string(),
                            id => format!("{backend_url}/items/{id}"),
                        };
                        let request = client.inner().get(url).build().unwrap();
                        let outcome = client
                            .send(Some(&context), Call::remote("backend"), request)
                            .await;
                        match outcome {
                            Ok(response) if response.status().is_success() => StatusCode::OK,
                            _ => StatusCode::BAD_GATEWAY,
                        }
                    }
                },
            ),
        )
        .layer(XRayLayer::new(tracer("front", &sink)));
    let front_url = serve(front).await;

    // The caller's own header is continued.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{front_url}/front/7"))
        .header(
            "X-Amzn-Trace-Id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-amzn-trace-id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    let documents = sink.documents();
    let (front, backend) = (segment(&documents, "front"), segment(&documents, "backend"));
    assert_eq!(front["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
    assert_eq!(front["parent_id"], "53995c3f42cd8ad8");
    let call = &front["subsegments"][0];
    assert_eq!(call["name"], "backend");
    assert_eq!(call["namespace"], "remote");
    assert_eq!(call["http"]["request"]["traced"], true);
    assert_eq!(call["http"]["response"]["status"], 200);
    assert_eq!(backend["trace_id"], front["trace_id"]);
    assert_eq!(backend["parent_id"], call["id"]);
    assert_eq!(backend["http"]["request"]["method"], "GET");

    // A W3C traceparent alone is continued too.
    let response = http
        .get(format!("{front_url}/front/8"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let documents = sink.documents();
    let front = documents
        .iter()
        .find(|document| document["name"] == "front" && document["parent_id"] == "b7ad6b7169203331")
        .expect("continued from traceparent");
    assert_eq!(front["trace_id"], "1-0af76519-16cd43dd8448eb211c80319c");

    // Throttle, fault and an unreachable backend.
    for (id, flag) in [(429, "throttle"), (500, "fault"), (0, "fault")] {
        let before = sink.documents().len();
        let response = http
            .get(format!("{front_url}/front/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        let documents = sink.documents();
        let front = documents[before..]
            .iter()
            .find(|document| document["name"] == "front")
            .unwrap();
        assert_eq!(front["fault"], true, "502 is a fault of the caller");
        let call = &front["subsegments"][0];
        assert_eq!(call[flag], true, "{id}: {call}");
        if id == 0 {
            assert_eq!(call["cause"]["exceptions"][0]["remote"], true);
        }
    }
}
