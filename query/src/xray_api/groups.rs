//! X-Ray groups: a named filter expression that GetServiceGraph,
//! GetTraceSummaries and GetTimeSeriesServiceStatistics accept as
//! `GroupName`/`GroupARN`.
//!
//! Per tenant, one document of every group kept through
//! `tracelake-settings` (`tenants/{tenant}/settings/xray-groups/`, a
//! revision per change: groups are few) and shared by every node on the
//! store: a group created through one node is known to every querier within
//! the refresh interval (`cluster.refresh_interval`), and changes made at
//! the same time through several nodes are applied one after the other,
//! none lost (see that crate's docs). Groups written by releases before
//! revisions (`tenants/{tenant}/xray/groups.json`) are read until the
//! first change.
//! The `Default` group (no filter: everything) always exists and cannot be
//! changed or deleted. Names are 1-32 of `[A-Za-z0-9_-]`; at most
//! [`MAX_GROUPS`] per tenant; the filter must parse.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracelake_aws_json::{AwsError, json_body, json_body_or_default, json_response, tenant_of};
use tracelake_settings::{Document, SettingsError, SettingsStore};

use super::trace_summaries::parse_filter;
use super::{XrayQueryState, next_token, page_offset};
use crate::xray_filter::Filter;

pub const DEFAULT_GROUP: &str = "Default";
pub const MAX_GROUPS: usize = 25;
const MAX_NAME_CHARS: usize = 32;
const PAGE_SIZE: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    name: String,
    id: String,
    filter_expression: Option<String>,
    insights_enabled: bool,
    notifications_enabled: bool,
}

/// What is persisted per tenant (also the whole of the file releases
/// before revisions wrote).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum PersistedGroups {
    #[serde(rename = "1")]
    V1 { groups: Vec<Group> },
}

/// A tenant's groups besides `Default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PersistedGroups", into = "PersistedGroups")]
struct TenantGroups {
    groups: Vec<Group>,
}

impl From<PersistedGroups> for TenantGroups {
    fn from(persisted: PersistedGroups) -> Self {
        let PersistedGroups::V1 { groups } = persisted;
        Self { groups }
    }
}

impl From<TenantGroups> for PersistedGroups {
    fn from(groups: TenantGroups) -> Self {
        PersistedGroups::V1 {
            groups: groups.groups,
        }
    }
}

impl Document for TenantGroups {
    const KIND: &'static str = "xray-groups";

    fn initial(_tenant: &str) -> Self {
        Self { groups: Vec::new() }
    }

    fn legacy_path(tenant: &str) -> Option<Path> {
        Some(Path::from(format!("tenants/{tenant}/xray/groups.json")))
    }
}

/// Why a change of groups failed: refused, or the store.
enum ChangeFailure {
    Refused(AwsError),
    Settings(SettingsError),
}

impl From<SettingsError> for ChangeFailure {
    fn from(error: SettingsError) -> Self {
        Self::Settings(error)
    }
}

fn settings_error(error: SettingsError) -> AwsError {
    match error {
        // Another node changed the groups at the same moment, every try:
        // botocore's X-Ray model lists `ThrottledException` for each group
        // operation, and the SDKs retry it.
        SettingsError::Contended { .. } => AwsError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error_type: "ThrottledException",
            message: error.to_string(),
        },
        _ => AwsError::internal(format!("groups: {error}")),
    }
}

/// The groups of every tenant, shared through the object store.
#[derive(Debug)]
pub struct GroupStore {
    settings: SettingsStore<TenantGroups>,
}

fn arn(tenant: &str, group: &Group) -> String {
    format!(
        "arn:aws:xray:tracelake:{tenant}:group/{}/{}",
        group.name, group.id
    )
}

fn default_group() -> Group {
    Group {
        name: DEFAULT_GROUP.into(),
        id: "default".into(),
        filter_expression: None,
        insights_enabled: false,
        notifications_enabled: false,
    }
}

impl GroupStore {
    /// Groups read are at most `refresh_interval` behind changes made
    /// through other nodes; this node's own changes show at once.
    pub fn new(store: Arc<dyn ObjectStore>, refresh_interval: Duration) -> Self {
        Self {
            settings: SettingsStore::new(store, refresh_interval),
        }
    }

    /// Runs `change` on the tenant's groups (without `Default`) as they
    /// are in the store, perhaps more than once (see `tracelake-settings`),
    /// and stores the result when it succeeds and changed something.
    async fn change<T>(
        &self,
        tenant: &str,
        change: impl Fn(&mut Vec<Group>) -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        self.settings
            .modify(tenant, |groups| {
                change(&mut groups.groups).map_err(ChangeFailure::Refused)
            })
            .await
            .map_err(|failure| match failure {
                ChangeFailure::Refused(error) => error,
                ChangeFailure::Settings(error) => settings_error(error),
            })
    }

    async fn all(&self, tenant: &str) -> Result<Vec<Group>, AwsError> {
        let stored = self.settings.read(tenant).await.map_err(settings_error)?;
        let mut groups = vec![default_group()];
        groups.extend(stored.groups.iter().cloned());
        Ok(groups)
    }

    /// The group a request names by name or ARN.
    async fn find(
        &self,
        tenant: &str,
        name: Option<&str>,
        group_arn: Option<&str>,
    ) -> Result<Group, AwsError> {
        let wanted = group_name(name, group_arn)?;
        self.all(tenant)
            .await?
            .into_iter()
            .find(|group| group.name == wanted)
            .ok_or_else(|| AwsError::invalid_request(format!("group {wanted:?} not found")))
    }

    /// The filter of the group a request names (none for `Default` or no
    /// group).
    pub async fn filter_of(
        &self,
        tenant: &str,
        name: Option<&str>,
        group_arn: Option<&str>,
    ) -> Result<Option<Filter>, AwsError> {
        if name.is_none() && group_arn.is_none() {
            return Ok(None);
        }
        let group = self.find(tenant, name, group_arn).await?;
        parse_filter(group.filter_expression.as_deref())
    }
}

/// Nesting of group references resolved (a group's filter may name
/// another group).
const MAX_GROUP_NESTING: usize = 4;

impl GroupStore {
    /// [`GroupStore::filter_of`] with the group references inside it
    /// resolved, ready to evaluate.
    pub async fn resolved_filter_of(
        &self,
        tenant: &str,
        name: Option<&str>,
        group_arn: Option<&str>,
    ) -> Result<Option<Filter>, AwsError> {
        match self.filter_of(tenant, name, group_arn).await? {
            Some(filter) => Ok(Some(self.resolve(tenant, filter).await?)),
            None => Ok(None),
        }
    }

    /// `filter` with every `group.name`/`group.arn` replaced by that
    /// group's filter; an unknown group is an `InvalidRequestException`.
    pub async fn resolve(&self, tenant: &str, mut filter: Filter) -> Result<Filter, AwsError> {
        for _ in 0..MAX_GROUP_NESTING {
            let referenced = filter.groups();
            if referenced.is_empty() {
                return Ok(filter);
            }
            let mut resolved = std::collections::HashMap::new();
            for reference in referenced {
                let (name, arn) = if reference.starts_with("arn:") {
                    (None, Some(reference.as_str()))
                } else {
                    (Some(reference.as_str()), None)
                };
                let group_filter = self
                    .filter_of(tenant, name, arn)
                    .await?
                    .unwrap_or(Filter::Always);
                resolved.insert(reference.clone(), group_filter);
            }
            filter = filter.substitute_groups(&|reference| {
                resolved.get(reference).cloned().unwrap_or(Filter::Always)
            });
        }
        Err(AwsError::invalid_request(format!(
            "groups refer to groups more than {MAX_GROUP_NESTING} deep"
        )))
    }
}

/// The group name a request gives, from `GroupName` or the ARN's
/// `group/{name}/{id}`.
fn group_name<'a>(name: Option<&'a str>, group_arn: Option<&'a str>) -> Result<&'a str, AwsError> {
    if let Some(name) = name.filter(|name| !name.is_empty()) {
        return Ok(name);
    }
    group_arn
        .and_then(|arn| arn.split_once(":group/"))
        .and_then(|(_, rest)| rest.split('/').next())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| AwsError::invalid_request("give GroupName or GroupARN"))
}

fn validate_name(name: &str) -> Result<(), AwsError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(AwsError::invalid_request(format!(
            "group name {name:?} must be 1-{MAX_NAME_CHARS} characters of [A-Za-z0-9_-]"
        )))
    }
}

fn group_json(tenant: &str, group: &Group) -> Value {
    let mut value = json!({
        "GroupName": group.name,
        "GroupARN": arn(tenant, group),
        "InsightsConfiguration": {
            "InsightsEnabled": group.insights_enabled,
            "NotificationsEnabled": group.notifications_enabled,
        },
    });
    if let Some(filter) = &group.filter_expression {
        value["FilterExpression"] = json!(filter);
    }
    value
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InsightsConfiguration {
    insights_enabled: Option<bool>,
    notifications_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    group_name: String,
    filter_expression: Option<String>,
    insights_configuration: Option<InsightsConfiguration>,
    #[allow(dead_code)]
    tags: Option<Value>,
}

pub(super) async fn create_group(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: CreateRequest = json_body(body).await?;
    validate_name(&request.group_name)?;
    parse_filter(request.filter_expression.as_deref())?;
    let insights = request.insights_configuration.unwrap_or_default();
    let group = Group {
        name: request.group_name.clone(),
        id: ulid::Ulid::new().to_string(),
        filter_expression: request
            .filter_expression
            .filter(|text| !text.trim().is_empty()),
        insights_enabled: insights.insights_enabled.unwrap_or(false),
        notifications_enabled: insights.notifications_enabled.unwrap_or(false),
    };
    let created = group.clone();
    state
        .groups
        .change(&tenant, |groups| {
            if group.name == DEFAULT_GROUP || groups.iter().any(|g| g.name == group.name) {
                return Err(AwsError::invalid_request(format!(
                    "a group named {:?} already exists",
                    group.name
                )));
            }
            if groups.len() >= MAX_GROUPS {
                return Err(AwsError::invalid_request(format!(
                    "at most {MAX_GROUPS} groups per account"
                )));
            }
            groups.push(group.clone());
            Ok(())
        })
        .await?;
    Ok(json_response(
        &json!({"Group": group_json(&tenant, &created)}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct GroupRef {
    group_name: Option<String>,
    #[serde(rename = "GroupARN")]
    group_arn: Option<String>,
}

pub(super) async fn get_group(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: GroupRef = json_body(body).await?;
    let group = state
        .groups
        .find(
            &tenant,
            request.group_name.as_deref(),
            request.group_arn.as_deref(),
        )
        .await?;
    Ok(json_response(
        &json!({"Group": group_json(&tenant, &group)}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    next_token: Option<String>,
}

pub(super) async fn get_groups(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: ListRequest = json_body_or_default(body).await?;
    let offset = page_offset(request.next_token.as_deref())?;
    let groups = state.groups.all(&tenant).await?;
    let page: Vec<Value> = groups
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .map(|group| group_json(&tenant, group))
        .collect();
    let mut response = json!({"Groups": page});
    if let Some(token) = next_token(offset, PAGE_SIZE, groups.len()) {
        response["NextToken"] = json!(token);
    }
    Ok(json_response(&response))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateRequest {
    group_name: Option<String>,
    #[serde(rename = "GroupARN")]
    group_arn: Option<String>,
    filter_expression: Option<String>,
    insights_configuration: Option<InsightsConfiguration>,
}

pub(super) async fn update_group(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: UpdateRequest = json_body(body).await?;
    let name = group_name(request.group_name.as_deref(), request.group_arn.as_deref())?.to_string();
    if name == DEFAULT_GROUP {
        return Err(AwsError::invalid_request(
            "the Default group cannot be changed",
        ));
    }
    parse_filter(request.filter_expression.as_deref())?;
    let updated = state
        .groups
        .change(&tenant, |groups| {
            let group = groups
                .iter_mut()
                .find(|group| group.name == name)
                .ok_or_else(|| AwsError::invalid_request(format!("group {name:?} not found")))?;
            if let Some(filter) = &request.filter_expression {
                group.filter_expression =
                    Some(filter.clone()).filter(|text| !text.trim().is_empty());
            }
            if let Some(insights) = &request.insights_configuration {
                if let Some(enabled) = insights.insights_enabled {
                    group.insights_enabled = enabled;
                }
                if let Some(enabled) = insights.notifications_enabled {
                    group.notifications_enabled = enabled;
                }
            }
            Ok(group.clone())
        })
        .await?;
    Ok(json_response(
        &json!({"Group": group_json(&tenant, &updated)}),
    ))
}

pub(super) async fn delete_group(
    State(state): State<XrayQueryState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let tenant = tenant_of(&headers)?;
    let request: GroupRef = json_body(body).await?;
    let name = group_name(request.group_name.as_deref(), request.group_arn.as_deref())?.to_string();
    if name == DEFAULT_GROUP {
        return Err(AwsError::invalid_request(
            "the Default group cannot be deleted",
        ));
    }
    state
        .groups
        .change(&tenant, |groups| {
            let before = groups.len();
            groups.retain(|group| group.name != name);
            if groups.len() == before {
                return Err(AwsError::invalid_request(format!(
                    "group {name:?} not found"
                )));
            }
            Ok(())
        })
        .await?;
    Ok(json_response(&json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    fn group(name: &str, filter: &str) -> Group {
        Group {
            name: name.into(),
            id: format!("id-{name}"),
            filter_expression: Some(filter.into()),
            insights_enabled: false,
            notifications_enabled: false,
        }
    }

    async fn names(store: &GroupStore) -> Vec<String> {
        let groups = store.all("t").await.unwrap();
        let mut names: Vec<String> = groups.into_iter().map(|group| group.name).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn groups_written_before_revisions_load_and_changes_reach_other_nodes() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // As the release before revisions wrote it.
        let legacy = br#"{"version":"1","groups":[{"name":"slow","id":"01JX0000000000000000000000","filter_expression":"responsetime > 1","insights_enabled":false,"notifications_enabled":true}]}"#;
        memory
            .put(
                &Path::from("tenants/t/xray/groups.json"),
                PutPayload::from_static(legacy),
            )
            .await
            .unwrap();
        let refresh = Duration::from_millis(200);
        let a = GroupStore::new(Arc::clone(&memory), refresh);
        let b = GroupStore::new(Arc::clone(&memory), refresh);
        assert_eq!(names(&b).await, ["Default", "slow"]);
        let slow = a.find("t", Some("slow"), None).await.unwrap();
        assert!(slow.notifications_enabled);
        assert_eq!(
            arn("t", &slow),
            "arn:aws:xray:tracelake:t:group/slow/01JX0000000000000000000000"
        );
        // Through both nodes at once: both land.
        let (first, second) = tokio::join!(
            a.change("t", |groups| {
                groups.push(group("errors", "error"));
                Ok(())
            }),
            b.change("t", |groups| {
                groups.push(group("faults", "fault"));
                Ok(())
            }),
        );
        first.unwrap();
        second.unwrap();
        tokio::time::sleep(refresh + Duration::from_millis(20)).await;
        for node in [&a, &b] {
            assert_eq!(names(node).await, ["Default", "errors", "faults", "slow"]);
        }
        let filter = a.filter_of("t", Some("faults"), None).await.unwrap();
        assert!(filter.is_some());
    }
}
