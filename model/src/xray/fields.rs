//! Field tables: which JSON fields of an X-Ray object become which
//! attributes, and the generic move (JSON -> attributes) and its inverse.
//!
//! Encoding moves every tabled field whose JSON type matches out of the
//! object into an attribute. What is left is kept as JSON under a `rest`
//! key only when decoding could not rebuild it from the attributes alone
//! (unknown keys, a field of an unexpected type, an empty `{}`), so the
//! common document costs no JSON text at all.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use serde_json::{Map, Value};

pub(crate) use crate::attributes::{find_bool, find_int, find_str, find_value as find};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Str,
    Int,
    Bool,
    StrArray,
}

/// One JSON field (by path inside its object) and its attribute.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) path: &'static [&'static str],
    pub(crate) key: &'static str,
    pub(crate) field_type: FieldType,
}

pub(crate) const fn field(
    path: &'static [&'static str],
    key: &'static str,
    field_type: FieldType,
) -> Field {
    Field {
        path,
        key,
        field_type,
    }
}

use FieldType::{Bool, Int, Str, StrArray};

pub(crate) const HTTP_FIELDS: &[Field] = &[
    field(&["request", "method"], "http.request.method", Str),
    field(&["request", "url"], "url.full", Str),
    field(&["request", "user_agent"], "user_agent.original", Str),
    field(&["request", "client_ip"], "client.address", Str),
    field(
        &["request", "x_forwarded_for"],
        "aws.xray.x_forwarded_for",
        Bool,
    ),
    field(&["request", "traced"], "aws.xray.traced", Bool),
    field(&["response", "status"], "http.response.status_code", Int),
    field(
        &["response", "content_length"],
        "http.response.body.size",
        Int,
    ),
];

/// Older OpenTelemetry HTTP names, read (never written) for spans that did
/// not come from X-Ray.
pub(crate) const HTTP_LEGACY_FIELDS: &[Field] = &[
    field(&["request", "method"], "http.method", Str),
    field(&["request", "url"], "http.url", Str),
    field(&["request", "user_agent"], "http.user_agent", Str),
    field(&["response", "status"], "http.status_code", Int),
];

pub(crate) const SQL_FIELDS: &[Field] = &[
    field(&["url"], "db.connection_string", Str),
    field(&["sanitized_query"], "db.query.text", Str),
    field(&["database_type"], "db.system.name", Str),
    field(&["user"], "db.user", Str),
];

/// `aws` fields of any (sub)segment, as span attributes.
pub(crate) const AWS_SPAN_FIELDS: &[Field] = &[
    field(&["operation"], "aws.operation", Str),
    field(&["account_id"], "aws.account_id", Str),
    field(&["region"], "aws.region", Str),
    field(&["request_id"], "aws.request_id", Str),
    field(&["queue_url"], "aws.queue_url", Str),
    field(&["table_name"], "aws.table_name", Str),
    field(&["retries"], "aws.xray.retries", Int),
    field(&["resource_names"], "aws.xray.resource_names", StrArray),
];

/// `aws` fields of a segment that describe where the service runs, as
/// resource attributes (OpenTelemetry resource semantic conventions).
pub(crate) const AWS_RESOURCE_FIELDS: &[Field] = &[
    field(&["account_id"], "cloud.account.id", Str),
    field(&["ec2", "instance_id"], "host.id", Str),
    field(&["ec2", "instance_size"], "host.type", Str),
    field(&["ec2", "ami_id"], "host.image.id", Str),
    field(
        &["ec2", "availability_zone"],
        "cloud.availability_zone",
        Str,
    ),
    field(&["ecs", "container"], "container.name", Str),
    field(&["ecs", "container_id"], "container.id", Str),
    field(&["ecs", "container_arn"], "aws.ecs.container.arn", Str),
    field(&["ecs", "cluster_arn"], "aws.ecs.cluster.arn", Str),
    field(&["ecs", "task_arn"], "aws.ecs.task.arn", Str),
    field(&["ecs", "task_family"], "aws.ecs.task.family", Str),
    field(&["ecs", "launch_type"], "aws.ecs.launchtype", Str),
    field(
        &["elastic_beanstalk", "environment_name"],
        "deployment.environment.name",
        Str,
    ),
    field(
        &["elastic_beanstalk", "version_label"],
        "aws.elastic_beanstalk.version_label",
        Str,
    ),
    field(
        &["elastic_beanstalk", "deployment_id"],
        "aws.elastic_beanstalk.deployment_id",
        Int,
    ),
    field(&["xray", "sdk"], "telemetry.sdk.name", Str),
    field(&["xray", "sdk_version"], "telemetry.sdk.version", Str),
    field(
        &["xray", "auto_instrumentation"],
        "aws.xray.auto_instrumentation",
        Bool,
    ),
];

pub(crate) const SERVICE_FIELDS: &[Field] = &[field(&["version"], "service.version", Str)];

/// A destination for one table's attributes.
pub(crate) struct TableTarget<'a> {
    pub(crate) fields: &'static [Field],
    pub(crate) out: &'a mut Vec<KeyValue>,
}

/// Moves the tabled fields of `value` into attributes; keeps the rest under
/// `rest_key` in `rest_out` when the attributes alone would not rebuild it.
pub(crate) fn encode_object(
    mut value: Value,
    targets: &mut [TableTarget<'_>],
    rest_key: &'static str,
    rest_out: &mut Vec<KeyValue>,
) {
    let mut skeleton: Option<Value> = None;
    for target in targets.iter_mut() {
        for field in target.fields {
            let Some(taken) = take_path(&mut value, field.path, field.field_type) else {
                continue;
            };
            target.out.push(key_value(field.key, taken));
            let parents = &field.path[..field.path.len() - 1];
            let skeleton_root = skeleton.get_or_insert_with(|| Value::Object(Map::new()));
            let _ = object_at(skeleton_root, parents);
        }
    }
    if skeleton.as_ref() != Some(&value) {
        rest_out.push(json_text_value(rest_key, &value));
    }
}

/// Rebuilds what [`encode_object`] took apart; `None` when the object was
/// absent.
pub(crate) fn decode_object(
    sources: &[(&'static [Field], &[KeyValue])],
    rest_key: &str,
    rest_source: &[KeyValue],
) -> Option<Value> {
    let mut value: Option<Value> = find_str(rest_source, rest_key)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_object);
    for (fields, attributes) in sources {
        for field in *fields {
            let Some(found) =
                find(attributes, field.key).and_then(|any| to_json(any, field.field_type))
            else {
                continue;
            };
            let root = value.get_or_insert_with(|| Value::Object(Map::new()));
            let (last, parents) = match field.path.split_last() {
                Some(split) => split,
                None => continue,
            };
            if let Some(parent) = object_at(root, parents) {
                parent.insert((*last).to_string(), found);
            }
        }
    }
    value
}

/// The object at `path` inside `root`, created on the way; `None` when a
/// step is not an object.
fn object_at<'a>(root: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut current = root;
    for step in path {
        let object = current.as_object_mut()?;
        current = object
            .entry((*step).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    current.as_object_mut()
}

/// Removes and returns the field at `path` when it has `field_type`.
fn take_path(value: &mut Value, path: &[&str], field_type: FieldType) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = value;
    for step in parents {
        current = current.as_object_mut()?.get_mut(*step)?;
    }
    let object = current.as_object_mut()?;
    let matches = match (object.get(*last)?, field_type) {
        (Value::String(_), Str) | (Value::Bool(_), Bool) => true,
        (Value::Number(number), Int) => number.is_i64(),
        (Value::Array(items), StrArray) => items.iter().all(Value::is_string),
        _ => false,
    };
    if matches { object.remove(*last) } else { None }
}

/// An attribute holding a JSON scalar or string array.
pub(crate) fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: json_to_any(value),
        }),
        ..Default::default()
    }
}

/// Strings, integers, doubles, booleans and string arrays map to the OTLP
/// type of the same name; anything else becomes JSON text.
pub(crate) fn json_to_any(value: Value) -> Option<any_value::Value> {
    Some(match value {
        Value::String(text) => any_value::Value::StringValue(text),
        Value::Bool(flag) => any_value::Value::BoolValue(flag),
        Value::Number(number) => match number.as_i64() {
            Some(int) => any_value::Value::IntValue(int),
            None => any_value::Value::DoubleValue(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Array(items) if items.iter().all(Value::is_string) => {
            any_value::Value::ArrayValue(ArrayValue {
                values: items
                    .into_iter()
                    .map(|item| AnyValue {
                        value: json_to_any(item),
                    })
                    .collect(),
            })
        }
        Value::Null => return None,
        other => any_value::Value::StringValue(other.to_string()),
    })
}

/// The JSON for an attribute value read as `field_type`.
fn to_json(any: &any_value::Value, field_type: FieldType) -> Option<Value> {
    match (any, field_type) {
        (any_value::Value::StringValue(text), Str) => Some(Value::String(text.clone())),
        (any_value::Value::IntValue(int), Int) => Some(Value::from(*int)),
        (any_value::Value::BoolValue(flag), Bool) => Some(Value::Bool(*flag)),
        (any_value::Value::ArrayValue(array), StrArray) => string_array(array)
            .map(|items| Value::Array(items.into_iter().map(Value::String).collect())),
        _ => None,
    }
}

/// The JSON for any attribute value (annotations, link attributes,
/// metadata fallbacks).
pub fn any_to_json(any: &any_value::Value) -> Value {
    match any {
        any_value::Value::StringValue(text) => Value::String(text.clone()),
        any_value::Value::BoolValue(flag) => Value::Bool(*flag),
        any_value::Value::IntValue(int) => Value::from(*int),
        any_value::Value::DoubleValue(double) => serde_json::Number::from_f64(*double)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        any_value::Value::ArrayValue(array) => Value::Array(
            array
                .values
                .iter()
                .map(|item| item.value.as_ref().map(any_to_json).unwrap_or(Value::Null))
                .collect(),
        ),
        any_value::Value::KvlistValue(list) => Value::Object(
            list.values
                .iter()
                .map(|entry| {
                    let value = entry
                        .value
                        .as_ref()
                        .and_then(|any| any.value.as_ref())
                        .map(any_to_json)
                        .unwrap_or(Value::Null);
                    (entry.key.clone(), value)
                })
                .collect(),
        ),
        any_value::Value::BytesValue(bytes) => Value::String(hex::encode(bytes)),
        any_value::Value::StringValueStrindex(index) => Value::from(*index),
    }
}

pub(crate) fn string_array(array: &ArrayValue) -> Option<Vec<String>> {
    array
        .values
        .iter()
        .map(|item| match &item.value {
            Some(any_value::Value::StringValue(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A string attribute holding `value` as compact JSON text.
pub(crate) fn json_text_value(key: &str, value: &Value) -> KeyValue {
    key_value(key, Value::String(value.to_string()))
}

pub(crate) fn find_json(attributes: &[KeyValue], key: &str) -> Option<Value> {
    find_str(attributes, key).and_then(|text| serde_json::from_str(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: Value) -> (Vec<KeyValue>, Option<Value>) {
        let mut attributes = Vec::new();
        let mut rest = Vec::new();
        encode_object(
            value,
            &mut [TableTarget {
                fields: HTTP_FIELDS,
                out: &mut attributes,
            }],
            "rest",
            &mut rest,
        );
        let decoded = decode_object(&[(HTTP_FIELDS, &attributes)], "rest", &rest);
        let rest_keys: Vec<String> = rest.iter().map(|kv| kv.key.clone()).collect();
        let mut all = attributes;
        all.extend(rest);
        assert!(rest_keys.len() <= 1);
        (all, decoded)
    }

    #[test]
    fn tabled_fields_need_no_json() {
        let http =
            json!({"request": {"method": "GET", "url": "http://x/y"}, "response": {"status": 200}});
        let (attributes, decoded) = round_trip(http.clone());
        assert_eq!(decoded, Some(http));
        assert!(
            attributes.iter().all(|kv| kv.key != "rest"),
            "{attributes:?}"
        );
        assert_eq!(
            find_int(&attributes, "http.response.status_code"),
            Some(200)
        );
    }

    #[test]
    fn everything_else_is_kept_as_json() {
        let cases = [
            json!({}),
            json!({"request": {}}),
            json!({"request": {"method": "GET", "custom": [1, 2]}}),
            json!({"response": {"status": 200, "content_length": "12"}}),
            json!({"request": {"method": 5}}),
            json!({"other": {"a": null}}),
        ];
        for case in cases {
            let (_, decoded) = round_trip(case.clone());
            assert_eq!(decoded, Some(case.clone()), "{case}");
        }
    }
}
