//! X-Ray segment documents: the JSON the X-Ray SDKs send to the daemon and
//! to `PutTraceSegments`, and that `BatchGetTraces` returns.
//!
//! Every field X-Ray documents has a typed home here; fields this model does
//! not know are kept in `extra` maps (at every level) so a document that goes
//! through tracelake comes back with them. Parsing is two steps: serde reads
//! the shape ([`SegmentDocument::from_json`]), then [`SegmentDocument::validate`]
//! checks the rules X-Ray enforces and names the first one broken.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest segment document X-Ray accepts (64 KB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Longest (sub)segment name X-Ray accepts.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest annotation key.
pub const MAX_ANNOTATION_KEY_CHARS: usize = 500;
/// Longest string annotation value.
pub const MAX_ANNOTATION_VALUE_CHARS: usize = 1000;

/// A segment, a nested subsegment, or an independent subsegment
/// (`"type": "subsegment"` with `trace_id` and `parent_id`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SegmentDocument {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `subsegment` for an independent subsegment; absent for a segment.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub document_type: Option<String>,
    /// `aws` or `remote` for a call out of the service; the Python SDK also
    /// sends `local` for work inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The service's platform, `AWS::EC2::Instance`, `AWS::Lambda::Function`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `{"version": ...}` and whatever else the SDK reports (runtime, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// Segment: account_id, ec2, ecs, elastic_beanstalk, xray (the SDK), ...
    /// Subsegment: operation, region, request_id, table_name, queue_url,
    /// resource_names, retries, and service-specific keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Indexed key-value pairs: string, number or boolean values only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Namespaced objects of any JSON; not indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// url, sanitized_query, database_type, database_version, driver_version, user, preparation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precursor_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<SegmentLink>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsegments: Option<Vec<SegmentDocument>>,
    /// Fields this model does not name, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Http {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HttpRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_forwarded_for: Option<bool>,
    /// Subsegments: the downstream call was traced too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traced: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a (sub)segment failed: the id of an exception recorded in another
/// subsegment, or the exceptions themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cause {
    ExceptionId(String),
    Details(CauseDetails),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CauseDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<Vec<XrayException>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct XrayException {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub exception_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<i64>,
    /// Id of the exception that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<StackFrame>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StackFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A span link in X-Ray form.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SegmentLink {
    #[serde(default)]
    pub trace_id: String,
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a document was refused; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDocument(pub String);

fn invalid(message: impl Into<String>) -> InvalidDocument {
    InvalidDocument(message.into())
}

fn is_hex_of(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// 16 hex digits, not all zero.
pub fn is_valid_segment_id(id: &str) -> bool {
    is_hex_of(id, 16) && id.bytes().any(|byte| byte != b'0')
}

/// `1-{8 hex}-{24 hex}`, not all zero.
pub fn is_valid_trace_id(trace_id: &str) -> bool {
    let mut parts = trace_id.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("1"), Some(epoch), Some(unique), None)
            if is_hex_of(epoch, 8) && is_hex_of(unique, 24)
                && (epoch.bytes().chain(unique.bytes())).any(|byte| byte != b'0')
    )
}

/// Unicode letters, digits and whitespace, and `_ . : / % & # = + \ - @`,
/// the characters X-Ray allows in names.
fn is_name_char(character: char) -> bool {
    character.is_alphanumeric()
        || character.is_whitespace()
        || matches!(
            character,
            '_' | '.' | ':' | '/' | '%' | '&' | '#' | '=' | '+' | '\\' | '-' | '@'
        )
}

/// Letters, digits and underscore: what X-Ray filter expressions can name.
fn is_annotation_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= MAX_ANNOTATION_KEY_CHARS
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

impl SegmentDocument {
    /// Reads one document (not yet validated).
    pub fn from_json(bytes: &[u8]) -> Result<Self, InvalidDocument> {
        read_json(bytes, "document")
    }

    /// Whether this is an independent subsegment (sent on its own, with
    /// `"type": "subsegment"`).
    pub fn is_independent_subsegment(&self) -> bool {
        self.document_type.as_deref() == Some("subsegment")
    }

    /// Checks a top-level document: a segment or an independent subsegment.
    pub fn validate(&self) -> Result<(), InvalidDocument> {
        let trace_id = self
            .trace_id
            .as_deref()
            .ok_or_else(|| invalid("trace_id is missing"))?;
        if !is_valid_trace_id(trace_id) {
            return Err(invalid(format!(
                "trace_id {trace_id:?} is not 1-<8 hex digits>-<24 hex digits>"
            )));
        }
        match self.document_type.as_deref() {
            None => {}
            Some("subsegment") if self.parent_id.is_none() => {
                return Err(invalid("independent subsegment has no parent_id"));
            }
            Some("subsegment") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "type {other:?} is not \"subsegment\" (segments have no type)"
                )));
            }
        }
        self.validate_entity()
    }

    /// Rules every segment and subsegment obeys.
    fn validate_entity(&self) -> Result<(), InvalidDocument> {
        let id = &self.id;
        if !is_valid_segment_id(id) {
            return Err(invalid(format!("id {id:?} is not 16 hex digits, non-zero")));
        }
        let context = |message: String| invalid(format!("{id}: {message}"));
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| context("name is missing".into()))?;
        let name_chars = name.chars().count();
        if name_chars == 0 || name_chars > MAX_NAME_CHARS {
            return Err(context(format!(
                "name must be 1 to {MAX_NAME_CHARS} characters, got {name_chars}"
            )));
        }
        if let Some(bad) = name.chars().find(|character| !is_name_char(*character)) {
            return Err(context(format!(
                "name {name:?} has {bad:?}; names allow letters, digits, whitespace and _ . : / % & # = + \\ - @"
            )));
        }
        let start_time = self
            .start_time
            .ok_or_else(|| context("start_time is missing".into()))?;
        if !start_time.is_finite() || start_time <= 0.0 || start_time >= 9.2e9 {
            return Err(context(format!(
                "start_time {start_time} is not epoch seconds"
            )));
        }
        match (self.end_time, self.in_progress) {
            (None, Some(true)) => {}
            (None, _) => {
                return Err(context(
                    "end_time is missing and in_progress is not true".into(),
                ));
            }
            (Some(end_time), _) => {
                if !end_time.is_finite() || end_time <= 0.0 || end_time >= 9.2e9 {
                    return Err(context(format!("end_time {end_time} is not epoch seconds")));
                }
            }
        }
        if let Some(parent_id) = &self.parent_id
            && !is_valid_segment_id(parent_id)
        {
            return Err(context(format!(
                "parent_id {parent_id:?} is not 16 hex digits, non-zero"
            )));
        }
        if let Some(namespace) = self.namespace.as_deref()
            && !matches!(namespace, "aws" | "remote" | "local")
        {
            return Err(context(format!(
                "namespace {namespace:?} is not \"aws\", \"remote\" or \"local\""
            )));
        }
        if let Some(annotations) = &self.annotations {
            for (key, value) in annotations {
                if !is_annotation_key(key) {
                    return Err(context(format!(
                        "annotation key {key:?} must be 1 to {MAX_ANNOTATION_KEY_CHARS} letters, digits or underscores"
                    )));
                }
                match value {
                    Value::String(text) if text.chars().count() > MAX_ANNOTATION_VALUE_CHARS => {
                        return Err(context(format!(
                            "annotation {key:?} is longer than {MAX_ANNOTATION_VALUE_CHARS} characters"
                        )));
                    }
                    Value::String(_) | Value::Bool(_) => {}
                    Value::Number(number) if number.is_i64() || number.is_f64() => {}
                    Value::Number(number) => {
                        return Err(context(format!(
                            "annotation {key:?} = {number} is beyond the signed 64-bit range"
                        )));
                    }
                    other => {
                        return Err(context(format!(
                            "annotation {key:?} is {}; annotations are strings, numbers or booleans",
                            json_type_name(other)
                        )));
                    }
                }
            }
        }
        if let Some(status) = self
            .http
            .as_ref()
            .and_then(|http| http.response.as_ref())
            .and_then(|response| response.status)
            && !(100..=999).contains(&status)
        {
            return Err(context(format!(
                "http.response.status {status} is not an HTTP status"
            )));
        }
        for precursor in self.precursor_ids.iter().flatten() {
            if !is_valid_segment_id(precursor) {
                return Err(context(format!(
                    "precursor_ids entry {precursor:?} is not 16 hex digits, non-zero"
                )));
            }
        }
        for link in self.links.iter().flatten() {
            if !is_valid_trace_id(&link.trace_id) {
                return Err(context(format!(
                    "link trace_id {:?} is not an X-Ray trace id",
                    link.trace_id
                )));
            }
            if !is_valid_segment_id(&link.id) {
                return Err(context(format!(
                    "link id {:?} is not 16 hex digits, non-zero",
                    link.id
                )));
            }
        }
        if let Some(Cause::ExceptionId(exception_id)) = &self.cause
            && !is_valid_segment_id(exception_id)
        {
            return Err(context(format!(
                "cause {exception_id:?} is neither an exception id nor a cause object"
            )));
        }
        for subsegment in self.subsegments.iter().flatten() {
            if subsegment.document_type.is_some()
                && subsegment.document_type.as_deref() != Some("subsegment")
            {
                return Err(context(format!(
                    "subsegment {} has type {:?}",
                    subsegment.id, subsegment.document_type
                )));
            }
            subsegment.validate_entity()?;
        }
        Ok(())
    }

    /// This document as it reads back after the trip through spans (see
    /// the module docs of [`crate::xray`]): nested subsegments without
    /// `trace_id`, `parent_id` and `type`, no `end_time` while in progress,
    /// no empty `metadata` or `subsegments`.
    pub fn canonical(&self) -> SegmentDocument {
        self.canonical_at(false)
    }

    fn canonical_at(&self, nested: bool) -> SegmentDocument {
        let mut copy = self.clone();
        if nested {
            copy.trace_id = None;
            copy.parent_id = None;
            copy.document_type = None;
        }
        if copy.in_progress == Some(true) {
            copy.end_time = None;
        }
        if copy.metadata.as_ref().is_some_and(Map::is_empty) {
            copy.metadata = None;
        }
        copy.subsegments = self
            .subsegments
            .as_ref()
            .filter(|list| !list.is_empty())
            .map(|list| list.iter().map(|child| child.canonical_at(true)).collect());
        copy
    }

    /// Every (sub)segment in this document, depth first, the document first.
    pub fn entity_count(&self) -> usize {
        1 + self
            .subsegments
            .iter()
            .flatten()
            .map(SegmentDocument::entity_count)
            .sum::<usize>()
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserializes; on failure, deserializes again tracking the path so the
/// message names the offending field
/// (`malformed document: subsegments[0].start_time: invalid type: ...`)
/// without slowing down the common, valid case.
fn read_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, InvalidDocument> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || path.is_empty() {
            invalid(format!("malformed {what}: {inner}"))
        } else {
            invalid(format!("malformed {what}: {path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| invalid(format!("malformed {what}: {error}")))?;
    Ok(value)
}

/// Reads what one `PutTraceSegments` entry or one daemon datagram body
/// holds: a segment, an independent subsegment, or an array of
/// subsegments (as the X-Ray API allows).
pub fn parse_documents(bytes: &[u8]) -> Result<Vec<SegmentDocument>, InvalidDocument> {
    let first = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .ok_or_else(|| invalid("document is empty"))?;
    if *first == b'[' {
        read_json(bytes, "document array")
    } else {
        Ok(vec![SegmentDocument::from_json(bytes)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "id": "70de5b6f19ff9a0a",
            "name": "checkout",
            "trace_id": "1-581cf771-a006649127e371903a2de979",
            "start_time": 1478293361.271,
            "end_time": 1478293361.449
        })
    }

    fn with(changes: &[(&str, Value)]) -> Value {
        let mut document = base();
        for (key, value) in changes {
            let object = document.as_object_mut().unwrap();
            if value.is_null() {
                object.remove(*key);
            } else {
                object.insert(key.to_string(), value.clone());
            }
        }
        document
    }

    fn check(document: &Value) -> Result<(), String> {
        let bytes = serde_json::to_vec(document).unwrap();
        let parsed = SegmentDocument::from_json(&bytes).map_err(|error| error.0)?;
        parsed.validate().map_err(|error| error.0)
    }

    #[test]
    fn validation_rules_table() {
        let subsegment = |changes: &[(&str, Value)]| {
            let mut child = json!({"id": "53995c3f42cd8ad8", "name": "db", "start_time": 1478293361.3, "end_time": 1478293361.4});
            for (key, value) in changes {
                child
                    .as_object_mut()
                    .unwrap()
                    .insert(key.to_string(), value.clone());
            }
            child
        };
        // (case, document, None = valid or Some(fragment of the reason))
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            ("minimal segment", base(), None),
            (
                "in progress without end",
                with(&[("end_time", Value::Null), ("in_progress", json!(true))]),
                None,
            ),
            (
                "no end, not in progress",
                with(&[("end_time", Value::Null)]),
                Some("end_time is missing"),
            ),
            (
                "missing id",
                with(&[("id", Value::Null)]),
                Some("id \"\" is not 16 hex"),
            ),
            (
                "short id",
                with(&[("id", json!("70de5b6f"))]),
                Some("is not 16 hex"),
            ),
            (
                "zero id",
                with(&[("id", json!("0000000000000000"))]),
                Some("is not 16 hex"),
            ),
            (
                "missing name",
                with(&[("name", Value::Null)]),
                Some("name is missing"),
            ),
            (
                "empty name",
                with(&[("name", json!(""))]),
                Some("name must be 1 to 200"),
            ),
            (
                "long name",
                with(&[("name", json!("a".repeat(201)))]),
                Some("name must be 1 to 200"),
            ),
            (
                "bad name char",
                with(&[("name", json!("a<b"))]),
                Some("has '<'"),
            ),
            (
                "unicode name",
                with(&[("name", json!("Grüße service #2"))]),
                None,
            ),
            (
                "missing trace id",
                with(&[("trace_id", Value::Null)]),
                Some("trace_id is missing"),
            ),
            (
                "bad trace id",
                with(&[("trace_id", json!("1-581cf771-a006649127e37190"))]),
                Some("is not 1-<8 hex"),
            ),
            (
                "trace id version 2",
                with(&[("trace_id", json!("2-581cf771-a006649127e371903a2de979"))]),
                Some("is not 1-<8 hex"),
            ),
            (
                "missing start",
                with(&[("start_time", Value::Null)]),
                Some("start_time is missing"),
            ),
            (
                "start as string",
                with(&[("start_time", json!("yesterday"))]),
                Some("malformed document"),
            ),
            (
                "start in ms",
                with(&[("start_time", json!(1478293361271000.0))]),
                Some("not epoch seconds"),
            ),
            (
                "negative end",
                with(&[("end_time", json!(-1.0))]),
                Some("end_time -1 is not epoch seconds"),
            ),
            (
                "bad parent",
                with(&[("parent_id", json!("xyz"))]),
                Some("parent_id \"xyz\""),
            ),
            (
                "bad type",
                with(&[("type", json!("segment"))]),
                Some("type \"segment\""),
            ),
            (
                "independent without parent",
                with(&[("type", json!("subsegment"))]),
                Some("has no parent_id"),
            ),
            (
                "independent subsegment",
                with(&[
                    ("type", json!("subsegment")),
                    ("parent_id", json!("53995c3f42cd8ad8")),
                ]),
                None,
            ),
            (
                "bad namespace",
                with(&[("namespace", json!("outside"))]),
                Some("namespace \"outside\""),
            ),
            (
                "local namespace",
                with(&[("namespace", json!("local"))]),
                None,
            ),
            (
                "annotation beyond i64",
                with(&[("annotations", json!({"big": 18446744073709551615u64}))]),
                Some("beyond the signed 64-bit"),
            ),
            (
                "good annotations",
                with(&[(
                    "annotations",
                    json!({"a_1": "x", "n": 3, "f": 1.5, "b": true}),
                )]),
                None,
            ),
            (
                "annotation key with dash",
                with(&[("annotations", json!({"a-b": "x"}))]),
                Some("annotation key \"a-b\""),
            ),
            (
                "annotation key empty",
                with(&[("annotations", json!({"": "x"}))]),
                Some("annotation key \"\""),
            ),
            (
                "annotation object",
                with(&[("annotations", json!({"a": {"b": 1}}))]),
                Some("is an object"),
            ),
            (
                "annotation null",
                with(&[("annotations", json!({"a": null}))]),
                Some("is null"),
            ),
            (
                "annotation too long",
                with(&[("annotations", json!({"a": "x".repeat(1001)}))]),
                Some("longer than 1000"),
            ),
            (
                "metadata any json",
                with(&[(
                    "metadata",
                    json!({"default": {"a": [1, {"b": null}]}, "ns": 5}),
                )]),
                None,
            ),
            (
                "metadata not object",
                with(&[("metadata", json!([1]))]),
                Some("malformed document"),
            ),
            (
                "http status out of range",
                with(&[("http", json!({"response": {"status": 42}}))]),
                Some("is not an HTTP status"),
            ),
            (
                "http status as string",
                with(&[("http", json!({"response": {"status": "200"}}))]),
                Some("malformed document"),
            ),
            (
                "bad precursor",
                with(&[("precursor_ids", json!(["nope"]))]),
                Some("precursor_ids entry"),
            ),
            (
                "bad link",
                with(&[(
                    "links",
                    json!([{"trace_id": "1-581cf771-a006649127e371903a2de979", "id": "x"}]),
                )]),
                Some("link id"),
            ),
            (
                "cause id",
                with(&[("cause", json!("4fd5d1e5a8b0d04c"))]),
                None,
            ),
            (
                "cause garbage id",
                with(&[("cause", json!("boom"))]),
                Some("neither an exception id"),
            ),
            (
                "cause object",
                with(&[(
                    "cause",
                    json!({"working_directory": "/app", "exceptions": [{"id": "4fd5d1e5a8b0d04c", "message": "x", "stack": [{"path": "a.py", "line": 3, "label": "f"}]}]}),
                )]),
                None,
            ),
            (
                "nested ok",
                with(&[(
                    "subsegments",
                    json!([subsegment(&[(
                        "subsegments",
                        json!([subsegment(&[("id", json!("1111111111111111"))])])
                    )])]),
                )]),
                None,
            ),
            (
                "nested bad id",
                with(&[("subsegments", json!([subsegment(&[("id", json!("1"))])]))]),
                Some("id \"1\""),
            ),
            (
                "nested missing name",
                with(&[(
                    "subsegments",
                    json!([{"id": "53995c3f42cd8ad8", "start_time": 1.0, "end_time": 2.0}]),
                )]),
                Some("53995c3f42cd8ad8: name is missing"),
            ),
            (
                "nested in progress",
                with(&[(
                    "subsegments",
                    json!([subsegment(&[("in_progress", json!(true))])]),
                )]),
                None,
            ),
            (
                "unknown fields kept",
                with(&[("sampled", json!(true)), ("custom", json!({"a": 1}))]),
                None,
            ),
            (
                "not an object",
                json!("segment"),
                Some("malformed document"),
            ),
        ];
        for (case, document, expected) in cases {
            let result = check(&document);
            match expected {
                None => assert!(result.is_ok(), "{case}: {result:?}"),
                Some(fragment) => {
                    let message = result.expect_err(case);
                    assert!(
                        message.contains(fragment),
                        "{case}: {message:?} lacks {fragment:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn parses_arrays_of_subsegments() {
        let array = br#"[{"id":"53995c3f42cd8ad8","name":"a","type":"subsegment","parent_id":"70de5b6f19ff9a0a","trace_id":"1-581cf771-a006649127e371903a2de979","start_time":1.5,"end_time":2.5}]"#;
        let documents = parse_documents(array).unwrap();
        assert_eq!(documents.len(), 1);
        assert!(documents[0].is_independent_subsegment());
        assert!(parse_documents(b"  ").is_err());
        assert!(parse_documents(b"[1,2]").is_err());
    }

    #[test]
    fn unknown_fields_survive_serialization() {
        let text = r#"{"id":"70de5b6f19ff9a0a","name":"a","trace_id":"1-581cf771-a006649127e371903a2de979","start_time":1.5,"end_time":2.5,"custom":{"z":[1,2]},"http":{"request":{"method":"GET","x":1},"y":true}}"#;
        let document = SegmentDocument::from_json(text.as_bytes()).unwrap();
        let again: Value = serde_json::to_value(&document).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(text).unwrap());
    }
}
