//! Tempo's legacy search parameters (`tags=` in logfmt, `minDuration=`,
//! `maxDuration=`), read into the TraceQL query they mean.

use std::collections::HashMap;

use crate::api::ApiError;
use crate::traceql::{
    BinaryOp, Body, Field, FieldExpr, Hints, Intrinsic, Pipeline, Query as TraceqlQuery, Scope,
    Spansets, Stage, Value,
};

/// Splits logfmt (`a=b c="d e"`) into pairs.
fn logfmt(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "tags must be logfmt (key=value key2=\"value 2\"), got {text:?}"
            )));
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(ApiError::BadRequest(format!(
                            "unterminated quoted value in tags {text:?}"
                        )));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

fn and(left: Option<FieldExpr>, right: FieldExpr) -> Option<FieldExpr> {
    Some(match left {
        Some(left) => FieldExpr::Binary(BinaryOp::And, Box::new(left), Box::new(right)),
        None => right,
    })
}

/// The legacy search parameters as a TraceQL query: each tag matches a
/// span or resource attribute (as text, or as the number or boolean it
/// spells), `name` the span name; `minDuration`/`maxDuration` bound the
/// span duration.
pub(super) fn legacy_query(params: &HashMap<String, String>) -> Result<TraceqlQuery, ApiError> {
    let mut condition = None;
    if let Some(tags) = params.get("tags") {
        for (key, text) in logfmt(tags)? {
            let compare = |field: Field, value: Value| {
                FieldExpr::Binary(
                    BinaryOp::Eq,
                    Box::new(FieldExpr::Field(field)),
                    Box::new(FieldExpr::Value(value)),
                )
            };
            let tag = if key == "name" {
                compare(Field::Intrinsic(Intrinsic::Name), Value::Text(text))
            } else {
                let field = Field::Attribute {
                    scope: Scope::Any,
                    name: key,
                };
                let mut tag = compare(field.clone(), Value::Text(text.clone()));
                let spelled = if let Ok(int) = text.parse::<i64>() {
                    Some(Value::Int(int))
                } else if let Ok(flag) = text.parse::<bool>() {
                    Some(Value::Bool(flag))
                } else {
                    text.parse::<f64>()
                        .ok()
                        .filter(|float| float.is_finite())
                        .map(Value::Float)
                };
                if let Some(value) = spelled {
                    tag = FieldExpr::Binary(
                        BinaryOp::Or,
                        Box::new(tag),
                        Box::new(compare(field, value)),
                    );
                }
                tag
            };
            condition = and(condition, tag);
        }
    }
    for (name, op) in [("minDuration", BinaryOp::Ge), ("maxDuration", BinaryOp::Le)] {
        if let Some(text) = params.get(name).filter(|text| !text.is_empty()) {
            let nanos = crate::units::parse_duration_nanos(text)
                .filter(|nanos| *nanos >= 0)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{name} must be a duration like 100ms or 1.5s, got {text:?}"
                    ))
                })?;
            condition = and(
                condition,
                FieldExpr::Binary(
                    op,
                    Box::new(FieldExpr::Field(Field::Intrinsic(Intrinsic::Duration))),
                    Box::new(FieldExpr::Value(Value::Duration(nanos))),
                ),
            );
        }
    }
    Ok(TraceqlQuery {
        body: Body::Search(Pipeline {
            stages: vec![Stage::Spansets(Spansets::Filter(condition))],
        }),
        hints: Hints::default(),
    })
}
