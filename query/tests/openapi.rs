//! The OpenAPI document served at `/v1/openapi.json` is valid JSON, its
//! references resolve, and every path it documents on the query port is
//! routed (and every native route the router declares is documented).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use object_store::ObjectStore;
use serde_json::Value;
use tower::ServiceExt;
use tracelake_query::http::OPENAPI;
use tracelake_storage::{SpanReader, Storage, StorageConfig, local_store};

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let document: Value = serde_json::from_str(OPENAPI).expect("valid JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let mut targets = Vec::new();
    refs(&document, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let pointer = target.strip_prefix('#').expect("local reference");
        assert!(document.pointer(pointer).is_some(), "{target} resolves");
    }

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = local_store(dir.path()).unwrap();
    let config = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = Storage::open(config, store).await.unwrap();
    let reader: Arc<dyn SpanReader> = Arc::new(storage);
    // The native routes as the router itself declares them: a route added
    // to the code and to neither list nor document cannot slip through.
    let routes = tracelake_query::http::routes_with_limits(reader, Default::default());
    let native: Vec<String> = routes
        .declared()
        .routes()
        .iter()
        .map(|(path, _)| path.clone())
        .filter(|path| path.starts_with("/v1/"))
        .collect();
    assert!(native.len() >= 8, "{native:?}");
    let router = routes.into_router();
    let paths = document["paths"].as_object().unwrap();
    for route in &native {
        assert!(paths.contains_key(route), "{route} is documented");
    }
    for (path, item) in paths {
        assert!(path.starts_with("/v1/"), "{path}");
        if item.get("servers").is_some() {
            continue; // served on another port (OTLP/HTTP)
        }
        assert!(native.contains(path), "{path} is routed");
        for (method, _) in item.as_object().unwrap() {
            // A path parameter gets a value the handler refuses (400), so
            // a 404 can only mean the route is missing.
            let uri = path.replace("{trace_id}", "not-an-id");
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(uri.as_str())
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_ne!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    }
    let request = Request::builder()
        .uri("/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
}

/// The web UI reads only documented endpoints: every `/v1/...` path in
/// its API module is in the OpenAPI document.
#[test]
fn every_path_the_web_ui_reads_is_documented() {
    let document: Value = serde_json::from_str(OPENAPI).expect("valid JSON");
    let paths = document["paths"].as_object().unwrap();
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/api.js"),
    )
    .expect("the UI's API module");
    let used: Vec<&str> = source
        .split('\'')
        .filter(|literal| literal.starts_with("/v1/"))
        .collect();
    assert!(used.len() >= 6, "the UI's paths: {used:?}");
    for path in used {
        assert!(
            paths.contains_key(path),
            "the UI reads {path}, which is not documented"
        );
    }
    // No view builds an API URL of its own.
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src");
    for entry in std::fs::read_dir(ui).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name != "api.js") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("'/v1/") && !text.contains("`/v1/") && !text.contains("fetch("),
                "{} reaches the server outside api.js",
                path.display()
            );
        }
    }
}
