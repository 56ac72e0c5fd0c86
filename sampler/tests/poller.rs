//! The SDK-side sampler against the real sampling routes over HTTP: it
//! fetches central rules, reports statistics, takes its quota, and refetches
//! rules when they change.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use tracelake_sampler::api::{SamplingService, router};
use tracelake_sampler::client::{Sampler, parse_local_rules, run_poller};
use tracelake_sampler::rules::{RequestProperties, SamplingRule, SamplingRuleUpdate};
use tracelake_sampler::store::{RulesStore, now_seconds};

fn request(path: &'static str) -> RequestProperties<'static> {
    RequestProperties {
        service_name: "shop",
        service_type: "*",
        host: "shop.example.com",
        http_method: "GET",
        url_path: path,
        attributes: &[],
    }
}

async fn eventually(mut check: impl FnMut() -> bool, what: &str) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn sampler_follows_the_collector() {
    let service = Arc::new(SamplingService::new(RulesStore::new(
        Arc::new(InMemory::new()),
        std::time::Duration::from_secs(10),
    )));
    let mut orders = SamplingRule::default_rule("single-tenant");
    orders.rule_name = Some("orders".into());
    orders.priority = 1;
    orders.url_path = "/orders/*".into();
    orders.reservoir_size = 3;
    orders.fixed_rate = 0.0;
    service
        .store()
        .create("single-tenant", orders)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(Arc::clone(&service))).await });

    let local = parse_local_rules(
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 0}}"#,
    )
    .unwrap();
    let sampler = Sampler::new(&local);
    assert_eq!(
        sampler
            .decide_at(&request("/orders/1"), now_seconds(), 0.5)
            .rule
            .as_deref(),
        Some("Default")
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run_poller(
        sampler.clone(),
        endpoint.clone(),
        Duration::from_millis(100),
        async {
            let _ = stopped.await;
        },
    ));
    eventually(
        || {
            sampler
                .decide_at(&request("/orders/1"), now_seconds(), 0.99)
                .rule
                .as_deref()
                == Some("orders")
        },
        "central rules",
    )
    .await;
    // After a report, the quota (3 per second) replaces borrowing (1 per second).
    let mut attempt = 0u32;
    eventually(
        || {
            // A fresh second each attempt, inside the quota's 10 s TTL.
            attempt += 1;
            let second = now_seconds().floor() + 2.5 + f64::from(attempt % 5);
            let sampled = (0..5)
                .filter(|_| {
                    sampler
                        .decide_at(&request("/orders/2"), second, 0.99)
                        .sampled
                })
                .count();
            sampled == 3
        },
        "the quota from SamplingTargets",
    )
    .await;

    // A rule change reaches the sampler through LastRuleModification.
    let client = reqwest::Client::new();
    let update = SamplingRuleUpdate {
        rule_name: Some("orders".into()),
        url_path: Some("/carts/*".into()),
        ..Default::default()
    };
    let response = client
        .post(format!("{endpoint}/UpdateSamplingRule"))
        .json(&serde_json::json!({ "SamplingRuleUpdate": update }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    eventually(
        || {
            sampler
                .decide_at(&request("/carts/1"), now_seconds(), 0.99)
                .rule
                .as_deref()
                == Some("orders")
        },
        "the updated rule",
    )
    .await;
    let _ = stop.send(());
}
