//! The API gateway: throttle rate and burst, API keys and quotas, the
//! response cache (hit, miss, TTL, refresh, flush), and the proxy mapping
//! to functions, with the trace carried through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::Method;
use axum::routing::get;
use serde_json::{Value, json};
use tracelake_gateway_plugin::admin::AdminKey;
use tracelake_gateway_plugin::gateway::{
    ApiKey, Gateway, GatewayConfig, Integration, MethodCache, RouteConfig, StageConfig, UsagePlan,
};
use tracelake_gateway_plugin::runtime::{
    Downstream, FunctionConfig, HandlerError, Runtime, handler, http as runtime_http,
};
use tracelake_gateway_plugin::{MemorySink, TracedClient, Tracer};
use tracelake_sampler::client::{Sampler, parse_local_rules};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
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

struct Setup {
    url: String,
    sink: Arc<MemorySink>,
    backend_calls: Arc<AtomicUsize>,
}

const ADMIN_KEY: &str = "gateway-admin-key-0123456789";

async fn setup() -> Setup {
    let sink = Arc::new(MemorySink::default());
    let rules = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 1.0}}"#,
    )
    .unwrap();
    let sampler = Sampler::new(&rules);
    let tracer_sink = Arc::clone(&sink);
    let tracer_sampler = sampler.clone();
    let mut orders = FunctionConfig::new(
        "orders-fn",
        handler(|event: Value, _context| async move {
            if event["queryStringParameters"]["fail"] == "1" {
                return Err(HandlerError::new("Boom", "failed on purpose"));
            }
            Ok(json!({
                "statusCode": 201,
                "headers": {"content-type": "application/json", "x-order": event["pathParameters"]["id"]},
                "body": json!({
                    "id": event["pathParameters"]["id"],
                    "method": event["httpMethod"],
                    "resource": event["resource"],
                    "path": event["path"],
                    "body": event["body"],
                    "stage": event["requestContext"]["stage"],
                    "query": event["queryStringParameters"],
                }).to_string(),
            }))
        }),
    );
    // Only the gateway may invoke: its principal reaches the runtime
    // vouched for by the admin key.
    orders.invoke_policy = vec![tracelake_gateway_plugin::gateway::PRINCIPAL.into()];
    let runtime = Runtime::new(
        vec![orders],
        move |name| {
            Tracer::new(
                name,
                Some("AWS::Lambda::Function"),
                tracer_sampler.clone(),
                tracer_sink.clone(),
            )
        },
        None,
        Downstream::default(),
    );
    let admin = AdminKey::new(ADMIN_KEY).unwrap();
    let runtime_url = serve(runtime_http::router(runtime, admin.clone())).await;

    let backend_calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&backend_calls);
    let backend = Router::new().route(
        "/catalog/{id}",
        get(move |Path(id): Path<String>| {
            let calls = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move { axum::Json(json!({"id": id, "call": calls})) }
        }),
    );
    let backend_url = serve(backend).await;

    let mut items = route(
        Method::GET,
        "/items/{id}",
        Integration::Http(format!("{backend_url}/catalog/{{id}}")),
    );
    items.cache = Some(MethodCache {
        ttl: Duration::from_millis(1_000),
        key_parameters: vec!["path.id".into()],
    });
    let mut limited = route(
        Method::GET,
        "/limited",
        Integration::Http(format!("{backend_url}/catalog/x")),
    );
    limited.throttle = Some((0.5, 5));
    let mut keyed = route(
        Method::GET,
        "/keyed",
        Integration::Http(format!("{backend_url}/catalog/k")),
    );
    keyed.api_key_required = true;
    let config = GatewayConfig {
        api_name: "shop-api".into(),
        account_throttle: (10_000.0, 10_000),
        stages: vec![StageConfig {
            name: "prod".into(),
            throttle: (1_000.0, 1_000),
            cache_enabled: true,
            routes: vec![
                route(
                    Method::POST,
                    "/orders/{id}",
                    Integration::Function("orders-fn".into()),
                ),
                items,
                limited,
                keyed,
            ],
        }],
        usage_plans: vec![UsagePlan {
            name: "basic".into(),
            throttle: (1_000.0, 1_000),
            quota: Some((3, Duration::from_secs(3_600))),
        }],
        api_keys: vec![
            ApiKey {
                value: "key-basic".into(),
                name: "basic-client".into(),
                usage_plan: "basic".into(),
                can_invalidate_cache: false,
            },
            ApiKey {
                value: "key-admin".into(),
                name: "admin".into(),
                usage_plan: "basic".into(),
                can_invalidate_cache: true,
            },
        ],
        runtime_url,
        workflow_url: None,
        integration_timeout: Duration::from_secs(5),
        admin_key: admin,
    };
    let tracer = Tracer::new(
        "shop-api",
        Some("AWS::ApiGateway::Stage"),
        sampler,
        sink.clone(),
    );
    let gateway = Gateway::new(config, tracer, TracedClient::default()).unwrap();
    Setup {
        url: serve(gateway.router()).await,
        sink,
        backend_calls,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttle_holds_rate_and_burst() {
    let setup = setup().await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let response = client
            .get(format!("{}/prod/limited", setup.url))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["message"], "Too Many Requests");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    // Burst 5 at 0.5/s: the first five pass, the other fifteen are refused.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15);
    assert_eq!(&statuses[..5], &[200; 5]);
    assert_eq!(retry_after.unwrap(), "2", "one token every 2 s");
    // The refused requests are segments with a throttle.
    let throttled = setup
        .sink
        .documents()
        .into_iter()
        .filter(|segment| segment["throttle"] == true)
        .count();
    assert_eq!(throttled, 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_and_quota() {
    let setup = setup().await;
    let client = reqwest::Client::new();
    let get = |key: Option<&'static str>| {
        let mut request = client.get(format!("{}/prod/keyed", setup.url));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get(None).await, (403, json!({"message": "Forbidden"})));
    assert_eq!(
        get(Some("wrong")).await,
        (403, json!({"message": "Forbidden"}))
    );
    for _ in 0..3 {
        assert_eq!(get(Some("key-basic")).await.0, 200);
    }
    assert_eq!(
        get(Some("key-basic")).await,
        (429, json!({"message": "Limit Exceeded"}))
    );
    // Another key has its own quota.
    assert_eq!(get(Some("key-admin")).await.0, 200);
    let response = client
        .get(format!("{}/prod/nowhere", setup.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "Missing Authentication Token"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_hit_miss_expiry_refresh_and_flush() {
    let setup = setup().await;
    let client = reqwest::Client::new();
    let fetch = |id: &str, headers: Vec<(&'static str, &'static str)>| {
        let mut request = client.get(format!("{}/prod/items/{id}", setup.url));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.unwrap();
            let cache = response.headers()["x-tracelake-cache"]
                .to_str()
                .unwrap()
                .to_string();
            let body: Value = response.json().await.unwrap();
            (cache, body["call"].as_u64().unwrap())
        }
    };
    assert_eq!(fetch("1", vec![]).await, ("miss".into(), 1));
    assert_eq!(fetch("1", vec![]).await, ("hit".into(), 1));
    assert_eq!(
        fetch("2", vec![]).await,
        ("miss".into(), 2),
        "the path id is in the key"
    );
    // max-age=0 from a key that may not invalidate is ignored.
    assert_eq!(
        fetch(
            "1",
            vec![("cache-control", "max-age=0"), ("x-api-key", "key-basic")]
        )
        .await,
        ("hit".into(), 1)
    );
    assert_eq!(
        fetch(
            "1",
            vec![("cache-control", "max-age=0"), ("x-api-key", "key-admin")]
        )
        .await,
        ("refresh".into(), 3)
    );
    assert_eq!(fetch("1", vec![]).await, ("hit".into(), 3));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        fetch("1", vec![]).await,
        ("miss".into(), 4),
        "the TTL ran out"
    );
    // The flush is on the admin side: refused without the key or with a
    // wrong one (an API key is not enough), done with it.
    let flush = |key: Option<&'static str>, header: &'static str| {
        let mut request = client.delete(format!("{}/_gateway/stages/prod/cache", setup.url));
        if let Some(key) = key {
            request = request.header(header, key);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    for (key, header) in [
        (None, "x-tracelake-admin-key"),
        (
            Some("gateway-admin-key-0123456780"),
            "x-tracelake-admin-key",
        ),
        (Some("key-admin"), "x-api-key"),
    ] {
        let (status, body) = flush(key, header).await;
        assert_eq!(status, 403, "{key:?}: {body}");
        assert!(body["message"].as_str().unwrap().contains("admin key"));
    }
    assert_eq!(fetch("1", vec![]).await, ("hit".into(), 4), "not flushed");
    let (status, flushed) = flush(Some(ADMIN_KEY), "x-tracelake-admin-key").await;
    assert_eq!(status, 202);
    assert_eq!(flushed["flushed"], 2);
    assert_eq!(fetch("1", vec![]).await, ("miss".into(), 5));
    assert_eq!(setup.backend_calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn function_proxy_mapping_and_trace() {
    let setup = setup().await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!(
            "{}/prod/orders/42?x=1&note=gift%20wrap+please",
            setup.url
        ))
        .header(
            "X-Amzn-Trace-Id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .body("{\"sku\":\"a-1\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-order"], "42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": "42", "method": "POST", "resource": "/orders/{id}", "path": "/orders/42",
               "body": "{\"sku\":\"a-1\"}", "stage": "prod",
               "query": {"x": "1", "note": "gift wrap please"}})
    );
    let encoded = client
        .post(format!("{}/prod/orders/a%2Fb%20c", setup.url))
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.json::<Value>().await.unwrap()["id"], "a/b c");
    let failed = client
        .post(format!("{}/prod/orders/43?fail=1", setup.url))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    assert_eq!(
        failed.json::<Value>().await.unwrap(),
        json!({"message": "Internal server error"})
    );

    let documents = setup.sink.documents();
    let gateway = documents
        .iter()
        .find(|segment| {
            segment["name"] == "shop-api/prod" && segment["parent_id"] == "53995c3f42cd8ad8"
        })
        .expect("the gateway's segment continues the caller's trace");
    assert_eq!(gateway["origin"], "AWS::ApiGateway::Stage");
    assert_eq!(gateway["http"]["response"]["status"], 201);
    let call = &gateway["subsegments"][0];
    assert_eq!(call["name"], "Lambda");
    assert_eq!(call["aws"]["function_name"], "orders-fn");
    assert_eq!(call["aws"]["operation"], "Invoke");
    let function = documents
        .iter()
        .find(|segment| segment["name"] == "orders-fn" && segment["parent_id"] == call["id"])
        .expect("the function's segment is the child of the gateway's call");
    assert_eq!(function["trace_id"], gateway["trace_id"]);
    let failed_gateway = documents
        .iter()
        .find(|segment| segment["name"] == "shop-api/prod" && segment["fault"] == true)
        .expect("502 is a fault");
    assert_eq!(failed_gateway["http"]["response"]["status"], 502);
}
