//! The sampling routes of the X-Ray API (REST-JSON, all POST, shapes as in
//! botocore's `xray` model), served on the X-Ray API port:
//!
//! | route | operation |
//! |---|---|
//! | `/GetSamplingRules` | rules in the order they are tried, paged with `NextToken` |
//! | `/CreateSamplingRule`, `/UpdateSamplingRule`, `/DeleteSamplingRule` | manage rules (`Default` can be updated, not deleted) |
//! | `/SamplingTargets` | GetSamplingTargets: statistics in, quotas out (see [`crate::quota`]) |
//! | `/SamplingStatisticSummaries` | per rule, what clients reported in the current window |
//!
//! Timestamps are epoch seconds. The tenant is `X-Scope-OrgID`.

use std::collections::HashMap;
use std::sync::Arc;
use tracelake_routes::{Access, Permission, Routes};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::aws_error::{AwsError, json_body, json_body_or_default, json_response, tenant_of};
use crate::quota::{INTERVAL_SECONDS, Report, RuleQuotas};
use crate::rules::{SamplingRule, SamplingRuleUpdate};
use crate::store::{RuleRecord, RulesError, RulesStore, now_seconds};
use tracelake_settings::SettingsError;

/// Rules per `GetSamplingRules` page.
const RULES_PAGE: usize = 100;
/// Statistics documents per `GetSamplingTargets` call (botocore's limit).
const MAX_STATISTICS: usize = 25;

/// Shared by the sampling routes.
#[derive(Debug)]
pub struct SamplingService {
    store: RulesStore,
    quotas: Mutex<HashMap<(String, String), RuleQuotas>>,
    summaries: Mutex<HashMap<(String, String), Summary>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    window_start: f64,
    request_count: i64,
    borrow_count: i64,
    sampled_count: i64,
}

impl SamplingService {
    pub fn new(store: RulesStore) -> Self {
        Self {
            store,
            quotas: Mutex::new(HashMap::new()),
            summaries: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &RulesStore {
        &self.store
    }
}

/// The sampling routes.
pub fn router(service: Arc<SamplingService>) -> Router {
    routes(service).into_router()
}

/// What SDKs poll (any key, or none from the daemon's address); consoles
/// read them too.
const POLL: Access =
    Access::AnyOfOrDaemon(&[Permission::Ingest, Permission::Query, Permission::Admin]);

/// The sampling routes with the access each needs: SDK polls for any key
/// (or none, as the daemon's tenant), statistics for readers, rule changes
/// for `admin` keys.
pub fn routes(service: Arc<SamplingService>) -> Routes {
    Routes::new()
        .route("/GetSamplingRules", post(get_sampling_rules), POLL)
        .route(
            "/CreateSamplingRule",
            post(create_sampling_rule),
            Access::ADMIN,
        )
        .route(
            "/UpdateSamplingRule",
            post(update_sampling_rule),
            Access::ADMIN,
        )
        .route(
            "/DeleteSamplingRule",
            post(delete_sampling_rule),
            Access::ADMIN,
        )
        .route("/SamplingTargets", post(get_sampling_targets), POLL)
        .route(
            "/SamplingStatisticSummaries",
            post(get_statistic_summaries),
            Access::AnyOf(&[Permission::Query, Permission::Admin]),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(service)
}

impl From<RulesError> for AwsError {
    fn from(error: RulesError) -> Self {
        match error {
            RulesError::LimitExceeded => AwsError {
                status: StatusCode::BAD_REQUEST,
                error_type: "RuleLimitExceededException",
                message: error.to_string(),
            },
            // Another node changed the rules at the same moment, every
            // try: botocore's X-Ray model lists `ThrottledException` for
            // each rules operation, and the SDKs retry it.
            RulesError::Settings(SettingsError::Contended { .. }) => AwsError {
                status: StatusCode::TOO_MANY_REQUESTS,
                error_type: "ThrottledException",
                message: error.to_string(),
            },
            RulesError::Settings(_) => AwsError::internal(error.to_string()),
            RulesError::Invalid(_)
            | RulesError::NotFound(_)
            | RulesError::Duplicate(_)
            | RulesError::DeleteDefault => AwsError::invalid_request(error.to_string()),
        }
    }
}

type ServiceState = State<Arc<SamplingService>>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PageRequest {
    next_token: Option<String>,
}

fn page_start(token: Option<&str>) -> Result<usize, AwsError> {
    match token {
        None | Some("") => Ok(0),
        Some(token) => token.parse().map_err(|_| {
            AwsError::invalid_request(format!("NextToken {token:?} is not one this server gave"))
        }),
    }
}

async fn get_sampling_rules(
    State(service): ServiceState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: PageRequest = json_body_or_default(body).await?;
    let start = page_start(request.next_token.as_deref())?;
    let rules = service.store.rules(&tenant).await?;
    let page: Vec<&RuleRecord> = rules.records.iter().skip(start).take(RULES_PAGE).collect();
    let next = start + page.len();
    let mut response = serde_json::json!({ "SamplingRuleRecords": page });
    if next < rules.records.len() {
        response["NextToken"] = serde_json::Value::String(next.to_string());
    }
    Ok(json_response(&response))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    sampling_rule: SamplingRule,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RecordResponse {
    sampling_rule_record: RuleRecord,
}

async fn create_sampling_rule(
    State(service): ServiceState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: CreateRequest = json_body(body).await?;
    let record = service.store.create(&tenant, request.sampling_rule).await?;
    Ok(json_response(&RecordResponse {
        sampling_rule_record: record,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateRequest {
    sampling_rule_update: SamplingRuleUpdate,
}

async fn update_sampling_rule(
    State(service): ServiceState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: UpdateRequest = json_body(body).await?;
    let update = request.sampling_rule_update;
    if update.rule_name.is_none() && update.rule_arn.is_none() {
        return Err(AwsError::invalid_request(
            "SamplingRuleUpdate needs RuleName or RuleARN",
        ));
    }
    let record = service.store.update(&tenant, &update).await?;
    Ok(json_response(&RecordResponse {
        sampling_rule_record: record,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteRequest {
    rule_name: Option<String>,
    #[serde(rename = "RuleARN")]
    rule_arn: Option<String>,
}

async fn delete_sampling_rule(
    State(service): ServiceState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: DeleteRequest = json_body(body).await?;
    if request.rule_name.is_none() && request.rule_arn.is_none() {
        return Err(AwsError::invalid_request(
            "DeleteSamplingRule needs RuleName or RuleARN",
        ));
    }
    let record = service
        .store
        .delete(
            &tenant,
            request.rule_name.as_deref(),
            request.rule_arn.as_deref(),
        )
        .await?;
    Ok(json_response(&RecordResponse {
        sampling_rule_record: record,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetsRequest {
    sampling_statistics_documents: Vec<StatisticsDocument>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatisticsDocument {
    rule_name: String,
    #[serde(rename = "ClientID")]
    client_id: String,
    timestamp: f64,
    request_count: i64,
    sampled_count: i64,
    #[serde(default)]
    borrow_count: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TargetDocument {
    rule_name: String,
    fixed_rate: f64,
    reservoir_quota: i64,
    #[serde(rename = "ReservoirQuotaTTL")]
    reservoir_quota_ttl: f64,
    interval: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UnprocessedStatistics {
    rule_name: String,
    error_code: String,
    message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TargetsResponse {
    sampling_target_documents: Vec<TargetDocument>,
    last_rule_modification: f64,
    unprocessed_statistics: Vec<UnprocessedStatistics>,
    /// Sampling boosts are not offered, so never a boost statistic to
    /// refuse; present (empty) as every list of the model.
    unprocessed_boost_statistics: Vec<UnprocessedStatistics>,
}

fn is_client_id(client_id: &str) -> bool {
    client_id.len() == 24 && client_id.bytes().all(|byte| byte.is_ascii_hexdigit())
}

async fn get_sampling_targets(
    State(service): ServiceState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: TargetsRequest = json_body(body).await?;
    if request.sampling_statistics_documents.len() > MAX_STATISTICS {
        return Err(AwsError::invalid_request(format!(
            "at most {MAX_STATISTICS} SamplingStatisticsDocuments per call, got {}",
            request.sampling_statistics_documents.len()
        )));
    }
    let rules = service.store.rules(&tenant).await?;
    let response = targets(
        &service,
        &tenant,
        &rules.records,
        rules.last_modification,
        &request.sampling_statistics_documents,
        now_seconds(),
    );
    Ok(json_response(&response))
}

fn targets(
    service: &SamplingService,
    tenant: &str,
    rules: &[RuleRecord],
    last_modification: f64,
    documents: &[StatisticsDocument],
    now: f64,
) -> TargetsResponse {
    let mut response = TargetsResponse {
        sampling_target_documents: Vec::new(),
        last_rule_modification: last_modification,
        unprocessed_statistics: Vec::new(),
        unprocessed_boost_statistics: Vec::new(),
    };
    let mut quotas = service.quotas.lock();
    let mut summaries = service.summaries.lock();
    for document in documents {
        let unprocessed = |message: String| UnprocessedStatistics {
            rule_name: document.rule_name.clone(),
            error_code: "400".into(),
            message,
        };
        if !is_client_id(&document.client_id) {
            response.unprocessed_statistics.push(unprocessed(format!(
                "ClientID {:?} is not 24 hex characters",
                document.client_id
            )));
            continue;
        }
        if document.request_count < 0
            || document.sampled_count < 0
            || document.borrow_count < 0
            || !document.timestamp.is_finite()
        {
            response.unprocessed_statistics.push(unprocessed(
                "counts must be non-negative and Timestamp epoch seconds".into(),
            ));
            continue;
        }
        let Some(rule) = rules
            .iter()
            .find(|record| record.sampling_rule.name() == document.rule_name)
        else {
            response.unprocessed_statistics.push(unprocessed(format!(
                "sampling rule {:?} does not exist",
                document.rule_name
            )));
            continue;
        };
        let key = (tenant.to_string(), document.rule_name.clone());
        let grant = quotas.entry(key.clone()).or_default().allocate(
            Report {
                client_id: &document.client_id,
                now,
                request_count: document.request_count,
            },
            rule.sampling_rule.reservoir_size,
        );
        let summary = summaries.entry(key).or_default();
        if now - summary.window_start >= INTERVAL_SECONDS as f64 {
            *summary = Summary {
                window_start: now,
                ..Summary::default()
            };
        }
        summary.request_count += document.request_count;
        summary.sampled_count += document.sampled_count;
        summary.borrow_count += document.borrow_count;
        response.sampling_target_documents.push(TargetDocument {
            rule_name: document.rule_name.clone(),
            fixed_rate: rule.sampling_rule.fixed_rate,
            reservoir_quota: grant.quota,
            reservoir_quota_ttl: grant.quota_expires,
            interval: INTERVAL_SECONDS,
        });
    }
    response
}

async fn get_statistic_summaries(
    State(service): ServiceState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: PageRequest = json_body_or_default(body).await?;
    page_start(request.next_token.as_deref())?;
    let summaries: Vec<serde_json::Value> = {
        let summaries = service.summaries.lock();
        let mut rows: Vec<_> = summaries
            .iter()
            .filter(|((owner, _), _)| owner == tenant.as_str())
            .map(|((_, rule), summary)| {
                serde_json::json!({
                    "RuleName": rule,
                    "Timestamp": summary.window_start,
                    "RequestCount": summary.request_count,
                    "BorrowCount": summary.borrow_count,
                    "SampledCount": summary.sampled_count,
                })
            })
            .collect();
        rows.sort_by(|a, b| a["RuleName"].as_str().cmp(&b["RuleName"].as_str()));
        rows
    };
    Ok(json_response(
        &serde_json::json!({ "SamplingStatisticSummaries": summaries }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn statistics(rule: &str, client: usize, requests: i64) -> StatisticsDocument {
        StatisticsDocument {
            rule_name: rule.into(),
            client_id: format!("{client:024x}"),
            timestamp: 0.0,
            request_count: requests,
            sampled_count: 0,
            borrow_count: 0,
        }
    }

    #[tokio::test]
    async fn targets_report_unknown_rules_and_bad_clients() {
        let service = SamplingService::new(RulesStore::new(
            Arc::new(InMemory::new()),
            std::time::Duration::from_secs(10),
        ));
        let rules = service.store.rules("t").await.unwrap();
        let mut bad_client = statistics("Default", 1, 10);
        bad_client.client_id = "short".into();
        let documents = vec![
            statistics("Default", 1, 10),
            statistics("nope", 2, 10),
            bad_client,
        ];
        let response = targets(
            &service,
            "t",
            &rules.records,
            rules.last_modification,
            &documents,
            100.0,
        );
        assert_eq!(response.sampling_target_documents.len(), 1);
        let target = &response.sampling_target_documents[0];
        assert_eq!(
            (target.reservoir_quota, target.fixed_rate, target.interval),
            (1, 0.05, 10)
        );
        assert_eq!(target.reservoir_quota_ttl, 110.0);
        assert_eq!(response.unprocessed_statistics.len(), 2);
        assert!(
            response.unprocessed_statistics[0]
                .message
                .contains("does not exist")
        );
        assert!(
            response.unprocessed_statistics[1]
                .message
                .contains("ClientID")
        );
    }

    /// A simulated fleet: 20 clients with uneven traffic, each following
    /// the SDK's decision (quota, else borrow 1/s, then FixedRate) and
    /// reporting every interval, for 5 minutes. The fleet's sampled rate
    /// must come out close to reservoir + FixedRate x the rest.
    #[tokio::test]
    async fn fleet_samples_the_reservoir_plus_the_fixed_rate() {
        let service = SamplingService::new(RulesStore::new(
            Arc::new(InMemory::new()),
            std::time::Duration::from_secs(10),
        ));
        let mut rule = SamplingRule::default_rule("t");
        rule.rule_name = Some("fleet".into());
        rule.priority = 1;
        rule.reservoir_size = 50;
        rule.fixed_rate = 0.1;
        service.store.create("t", rule).await.unwrap();
        let records = service.store.rules("t").await.unwrap();
        let clients = 20usize;
        let per_second: Vec<i64> = (0..clients)
            .map(|index| 5 + (index as i64 % 7) * 10)
            .collect();
        let total_per_second: i64 = per_second.iter().sum();
        let mut quota = vec![(0i64, 0.0f64); clients];
        let mut counts = vec![0i64; clients];
        let mut sampled_total = 0i64;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let seconds = 300;
        for second in 0..seconds {
            let now = 1_000.0 + second as f64;
            for client in 0..clients {
                let (client_quota, ttl) = quota[client];
                let reservoir = if ttl > now { client_quota } else { 1 };
                let mut used = 0;
                for _ in 0..per_second[client] {
                    let sampled = if used < reservoir {
                        used += 1;
                        true
                    } else {
                        random() < 0.1
                    };
                    if sampled {
                        sampled_total += 1;
                    }
                }
                counts[client] += per_second[client];
                if second % INTERVAL_SECONDS as usize == client % INTERVAL_SECONDS as usize {
                    let documents = vec![statistics("fleet", client, counts[client])];
                    counts[client] = 0;
                    let response = targets(
                        &service,
                        "t",
                        &records.records,
                        records.last_modification,
                        &documents,
                        now,
                    );
                    let target = &response.sampling_target_documents[0];
                    quota[client] = (target.reservoir_quota, target.reservoir_quota_ttl);
                    let outstanding = service.quotas.lock()
                        [&("t".to_string(), "fleet".to_string())]
                        .outstanding(now);
                    assert!(
                        outstanding <= 50,
                        "outstanding quotas {outstanding} exceed the reservoir"
                    );
                }
            }
        }
        let expected = 50.0 + 0.1 * (total_per_second as f64 - 50.0);
        let observed = sampled_total as f64 / seconds as f64;
        assert!(
            (observed - expected).abs() / expected < 0.15,
            "observed {observed:.1}/s, expected about {expected:.1}/s"
        );
    }
}
