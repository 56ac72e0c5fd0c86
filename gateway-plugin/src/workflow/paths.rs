//! Amazon States Language input and output processing: the JSONPath subset
//! reference paths use (`$`, `$.a.b`, `$.a[0]`, `$['a b']`), `Parameters`
//! and `ResultSelector` templates (`"key.$": "$.path"`, `$$.` for the
//! context object), and `ResultPath` merging.

use serde_json::{Map, Value};

/// Why a path could not be applied (`States.Runtime` at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

/// Parses a reference path into steps.
fn steps(path: &str) -> Result<Vec<Step>, PathError> {
    let bad = |why: &str| PathError(format!("invalid path {path:?}: {why}"));
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| bad("must start with $"))?;
    let chars: Vec<char> = rest.chars().collect();
    let mut out = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        match chars[index] {
            '.' => {
                let start = index + 1;
                let mut end = start;
                while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                    end += 1;
                }
                if end == start {
                    return Err(bad("empty field name"));
                }
                out.push(Step::Field(chars[start..end].iter().collect()));
                index = end;
            }
            '[' => {
                let close = chars[index..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|offset| index + offset)
                    .ok_or_else(|| bad("unclosed ["))?;
                let inside: String = chars[index + 1..close].iter().collect();
                let quoted = inside
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match quoted {
                    Some(name) => out.push(Step::Field(name.to_string())),
                    None => out.push(Step::Index(
                        inside
                            .trim()
                            .parse()
                            .map_err(|_| bad("index must be a number or a quoted name"))?,
                    )),
                }
                index = close + 1;
            }
            _ => return Err(bad("expected . or [")),
        }
    }
    Ok(out)
}

/// Checks a path's syntax (for definition validation).
pub fn validate(path: &str) -> Result<(), PathError> {
    steps(path).map(|_| ())
}

/// The value `path` selects in `value`.
pub fn select(value: &Value, path: &str) -> Result<Value, PathError> {
    let mut current = value;
    for step in steps(path)? {
        current = match (&step, current) {
            (Step::Field(name), Value::Object(map)) => map.get(name),
            (Step::Index(index), Value::Array(items)) => items.get(*index),
            _ => None,
        }
        .ok_or_else(|| PathError(format!("the path {path:?} matches nothing in the input")))?;
    }
    Ok(current.clone())
}

/// `InputPath`/`OutputPath`: `None` (JSON null) gives `{}`; absent gives the whole value.
pub fn filter(value: &Value, path: Option<&Option<String>>) -> Result<Value, PathError> {
    match path {
        None => Ok(value.clone()),
        Some(None) => Ok(Value::Object(Map::new())),
        Some(Some(path)) => select(value, path),
    }
}

/// Applies a `Parameters`/`ResultSelector` template: keys ending in `.$`
/// take the value their path selects from `input` (`$$.` paths from
/// `context`); nested objects and arrays are templates too.
pub fn template(template: &Value, input: &Value, context: &Value) -> Result<Value, PathError> {
    match template {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match (key.strip_suffix(".$"), value) {
                    (Some(name), Value::String(path)) => {
                        let selected = match path.strip_prefix("$$") {
                            Some(rest) => select(context, &format!("${rest}"))?,
                            None => select(input, path)?,
                        };
                        out.insert(name.to_string(), selected);
                    }
                    (Some(name), _) => {
                        return Err(PathError(format!(
                            "the value of {name}.$ must be a path string"
                        )));
                    }
                    (None, value) => {
                        out.insert(key.clone(), template_value(value, input, context)?);
                    }
                }
            }
            Ok(Value::Object(out))
        }
        other => template_value(other, input, context),
    }
}

fn template_value(value: &Value, input: &Value, context: &Value) -> Result<Value, PathError> {
    match value {
        Value::Object(_) => template(value, input, context),
        Value::Array(items) => items
            .iter()
            .map(|item| template_value(item, input, context))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// `ResultPath`: `None` (absent) replaces the input with the result, JSON
/// null discards the result, a path sets the result there in the input.
pub fn merge(
    input: &Value,
    result: Value,
    path: Option<&Option<String>>,
) -> Result<Value, PathError> {
    let path = match path {
        None => return Ok(result),
        Some(None) => return Ok(input.clone()),
        Some(Some(path)) => path,
    };
    let steps = steps(path)?;
    if steps.is_empty() {
        return Ok(result);
    }
    let mut output = input.clone();
    let mut current = &mut output;
    for (position, step) in steps.iter().enumerate() {
        let last = position + 1 == steps.len();
        let Step::Field(name) = step else {
            return Err(PathError(format!(
                "ResultPath {path:?} may only name fields"
            )));
        };
        if !current.is_object() {
            if current.is_null() {
                *current = Value::Object(Map::new());
            } else {
                return Err(PathError(format!(
                    "ResultPath {path:?} goes through a value that is not an object"
                )));
            }
        }
        let map = current.as_object_mut().expect("made an object above");
        if last {
            map.insert(name.clone(), result);
            break;
        }
        current = map.entry(name.clone()).or_insert(Value::Object(Map::new()));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_select_and_merge() {
        let input =
            json!({"order": {"id": "o-1", "items": [{"sku": "a"}, {"sku": "b"}]}, "odd key": 1});
        assert_eq!(select(&input, "$").unwrap(), input);
        assert_eq!(select(&input, "$.order.id").unwrap(), json!("o-1"));
        assert_eq!(select(&input, "$.order.items[1].sku").unwrap(), json!("b"));
        assert_eq!(select(&input, "$['odd key']").unwrap(), json!(1));
        assert!(
            select(&input, "$.order.missing")
                .unwrap_err()
                .0
                .contains("matches nothing")
        );
        assert!(validate("order.id").is_err());
        assert!(validate("$.a[x]").is_err());
        assert!(validate("$..a").is_err());

        assert_eq!(filter(&input, None).unwrap(), input);
        assert_eq!(filter(&input, Some(&None)).unwrap(), json!({}));
        assert_eq!(
            filter(&input, Some(&Some("$.order.id".into()))).unwrap(),
            json!("o-1")
        );

        let context = json!({"Execution": {"Id": "e-1"}, "Map": {"Item": {"Index": 2}}});
        let parameters = json!({"id.$": "$.order.id", "execution.$": "$$.Execution.Id", "fixed": {"n": 1, "list": [{"x.$": "$.odd key"}]}});
        assert_eq!(
            template(&parameters, &input, &context).unwrap(),
            json!({"id": "o-1", "execution": "e-1", "fixed": {"n": 1, "list": [{"x": 1}]}})
        );
        assert!(template(&json!({"id.$": 5}), &input, &context).is_err());

        let state = json!({"a": 1});
        assert_eq!(merge(&state, json!(2), None).unwrap(), json!(2));
        assert_eq!(merge(&state, json!(2), Some(&None)).unwrap(), state);
        assert_eq!(
            merge(&state, json!(2), Some(&Some("$.result.value".into()))).unwrap(),
            json!({"a": 1, "result": {"value": 2}})
        );
        assert_eq!(
            merge(&state, json!(2), Some(&Some("$".into()))).unwrap(),
            json!(2)
        );
        assert!(merge(&json!({"a": 1}), json!(2), Some(&Some("$.a.b".into()))).is_err());
    }
}
