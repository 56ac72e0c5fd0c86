//! The per-request sampling decision with 100 rules (goal: <= 200 ns), and
//! GetSamplingTargets for a rule shared by 1,000 clients (quota allocation
//! alone, and the whole HTTP handler with JSON in and out).
//!
//! cargo bench -p tracelake-sampler --bench sampling

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use object_store::memory::InMemory;
use tower::ServiceExt;
use tracelake_sampler::api::{SamplingService, router};
use tracelake_sampler::client::Sampler;
use tracelake_sampler::quota::{Report, RuleQuotas};
use tracelake_sampler::rules::{RequestProperties, SamplingRule};
use tracelake_sampler::store::RulesStore;

fn hundred_rules() -> Vec<SamplingRule> {
    let mut rules: Vec<SamplingRule> = (0..99)
        .map(|index| {
            let mut rule = SamplingRule::default_rule("t");
            rule.rule_name = Some(format!("rule-{index}"));
            rule.priority = index + 1;
            rule.service_name = format!("service-{}", index % 10);
            rule.http_method = if index % 2 == 0 {
                "GET".into()
            } else {
                "*".into()
            };
            rule.url_path = format!("/api/v{}/resource-{index}/*", index % 3);
            rule
        })
        .collect();
    rules.push(SamplingRule::default_rule("t"));
    rules
}

fn decision(c: &mut Criterion) {
    let sampler = Sampler::new(&[]);
    sampler.set_central_rules(&hundred_rules(), 1.0);
    let last_rule = RequestProperties {
        service_name: "service-8",
        service_type: "AWS::EC2::Instance",
        host: "api.example.com",
        http_method: "GET",
        url_path: "/api/v2/resource-98/items/42",
        attributes: &[],
    };
    let no_rule = RequestProperties {
        url_path: "/health",
        ..last_rule
    };
    let mut group = c.benchmark_group("sampling_decision_100_rules");
    group.bench_function("matches_rule_99", |b| {
        b.iter(|| sampler.decide_at(std::hint::black_box(&last_rule), 1_000.5, 0.5))
    });
    group.bench_function("falls_through_to_default", |b| {
        b.iter(|| sampler.decide_at(std::hint::black_box(&no_rule), 1_000.5, 0.5))
    });
    group.finish();
}

fn client_id(index: usize) -> String {
    format!("{index:024x}")
}

fn targets(c: &mut Criterion) {
    let mut group = c.benchmark_group("sampling_targets_1000_clients");
    let mut quotas = RuleQuotas::default();
    for index in 0..1000 {
        quotas.allocate(
            Report {
                client_id: &client_id(index),
                now: 100.0,
                request_count: 50 + index as i64 % 20,
            },
            500,
        );
    }
    let mut next = 0usize;
    group.bench_function("allocate_one_report", |b| {
        b.iter(|| {
            next = (next + 1) % 1000;
            quotas.allocate(
                Report {
                    client_id: &client_id(next),
                    now: 105.0,
                    request_count: 60,
                },
                500,
            )
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = Arc::new(SamplingService::new(RulesStore::new(
        Arc::new(InMemory::new()),
        std::time::Duration::from_secs(10),
    )));
    let app = router(Arc::clone(&service));
    let mut rule = SamplingRule::default_rule("single-tenant");
    rule.rule_name = Some("shared".into());
    rule.priority = 1;
    rule.reservoir_size = 500;
    runtime
        .block_on(service.store().create("single-tenant", rule))
        .unwrap();
    let body = |index: usize| {
        serde_json::json!({"SamplingStatisticsDocuments": [{
            "RuleName": "shared", "ClientID": client_id(index), "Timestamp": 1.0,
            "RequestCount": 100, "SampledCount": 10, "BorrowCount": 0
        }]})
        .to_string()
    };
    let call = |index: usize| {
        let app = app.clone();
        let request = Request::post("/SamplingTargets")
            .body(Body::from(body(index)))
            .unwrap();
        async move { app.oneshot(request).await.unwrap().status() }
    };
    for index in 0..1000 {
        runtime.block_on(call(index));
    }
    let mut next = 0usize;
    group.bench_function("http_handler_one_report", |b| {
        b.iter(|| {
            next = (next + 1) % 1000;
            runtime.block_on(call(next))
        })
    });
    group.finish();
}

criterion_group!(benches, decision, targets);
criterion_main!(benches);
