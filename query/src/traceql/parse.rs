//! Parses TraceQL into [`Query`].
//!
//! ```text
//! query      := spansets ("|" stage)*
//! spansets   := or
//! or         := and ("||" and)*
//! and        := chain ("&&" chain)*
//! chain      := spanset ((">>" | ">" | "~") spanset)*     structural: descendant, child, sibling
//! spanset    := "{" condition? "}" | "(" spansets ")"
//! condition  := c_or;  c_or := c_and ("||" c_and)*;  c_and := c_not ("&&" c_not)*
//! c_not      := "!" c_not | "(" condition ")" | field op value | field      (a bare boolean field)
//! field      := span.x | resource.x | .x | span."a b" | name | status | kind | duration
//!             | statusMessage | rootName | rootServiceName | traceDuration
//!             | span:name | span:status | span:kind | span:duration | span:statusMessage
//!             | trace:rootName | trace:rootService | trace:duration
//! op         := = != > >= < <= =~ !~
//! value      := "string" | int | float | true | false | duration (100ms, 1.5s)
//!             | error | ok | unset | server | client | producer | consumer | internal | unspecified | nil
//! stage      := count() op number | (avg|min|max|sum) "(" field ")" op (number | duration)
//!             | by "(" field ("," field)* ")" | select "(" field ("," field)* ")"
//! ```
//!
//! Errors carry the 1-based character position where parsing failed.

use std::fmt;

use crate::syntax::{Cursor, SyntaxError, read_quoted};

/// A parsed TraceQL query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub spansets: Spansets,
    pub stages: Vec<Stage>,
}

/// Spanset expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum Spansets {
    /// `{ condition }`; `None` for `{}` (every span).
    Filter(Option<Condition>),
    And(Box<Spansets>, Box<Spansets>),
    Or(Box<Spansets>, Box<Spansets>),
    /// `left >> right`: right spans with an ancestor in left.
    Descendant(Box<Spansets>, Box<Spansets>),
    /// `left > right`: right spans whose parent is in left.
    Child(Box<Spansets>, Box<Spansets>),
    /// `left ~ right`: right spans with a sibling in left.
    Sibling(Box<Spansets>, Box<Spansets>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    Compare {
        field: Field,
        op: Operator,
        value: Value,
    },
    /// A field on its own: true when it is a true boolean.
    Truthy(Field),
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Span,
    Resource,
    /// `.x`: span first, then resource.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsic {
    Name,
    Status,
    Kind,
    Duration,
    StatusMessage,
    RootName,
    RootServiceName,
    TraceDuration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Attribute { scope: Scope, name: String },
    Intrinsic(Intrinsic),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Regex,
    NotRegex,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    /// `error`, `ok`, `unset`.
    Status(String),
    /// `server`, `client`, ...
    Kind(String),
    Nil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Count {
        op: Operator,
        value: f64,
    },
    Aggregate {
        aggregate: Aggregate,
        field: Field,
        op: Operator,
        value: Value,
    },
    By(Vec<Field>),
    Select(Vec<Field>),
}

/// Why a query did not parse, and where (1-based character).
pub type TraceqlError = SyntaxError;

/// The language errors name.
const LANGUAGE: &str = "TraceQL";

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 4_000;
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
    Op(Operator),
    AndAnd,
    OrOr,
    Not,
    Descendant,
    Sibling,
    Pipe,
    LeftBrace,
    RightBrace,
    LeftParen,
    RightParen,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Word(word) => write!(f, "{word:?}"),
            Self::Text(text) => write!(f, "string {text:?}"),
            Self::Number(number) => write!(f, "number {number}"),
            Self::Op(_) => f.write_str("an operator"),
            Self::AndAnd => f.write_str("\"&&\""),
            Self::OrOr => f.write_str("\"||\""),
            Self::Not => f.write_str("\"!\""),
            Self::Descendant => f.write_str("\">>\""),
            Self::Sibling => f.write_str("\"~\""),
            Self::Pipe => f.write_str("\"|\""),
            Self::LeftBrace => f.write_str("\"{\""),
            Self::RightBrace => f.write_str("\"}\""),
            Self::LeftParen => f.write_str("\"(\""),
            Self::RightParen => f.write_str("\")\""),
            Self::Comma => f.write_str("\",\""),
        }
    }
}

fn error(position: usize, message: impl Into<String>) -> TraceqlError {
    SyntaxError {
        language: LANGUAGE,
        position,
        message: message.into(),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '/')
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, TraceqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let position = index + 1;
        let current = chars[index];
        let next = chars.get(index + 1).copied();
        if current.is_whitespace() {
            index += 1;
            continue;
        }
        let (token, length) = match (current, next) {
            ('{', _) => (Token::LeftBrace, 1),
            ('}', _) => (Token::RightBrace, 1),
            ('(', _) => (Token::LeftParen, 1),
            (')', _) => (Token::RightParen, 1),
            (',', _) => (Token::Comma, 1),
            ('&', Some('&')) => (Token::AndAnd, 2),
            ('|', Some('|')) => (Token::OrOr, 2),
            ('|', _) => (Token::Pipe, 1),
            ('=', Some('~')) => (Token::Op(Operator::Regex), 2),
            ('!', Some('~')) => (Token::Op(Operator::NotRegex), 2),
            ('!', Some('=')) => (Token::Op(Operator::Ne), 2),
            ('!', _) => (Token::Not, 1),
            ('=', _) => (Token::Op(Operator::Eq), 1),
            ('>', Some('>')) => (Token::Descendant, 2),
            ('>', Some('=')) => (Token::Op(Operator::Ge), 2),
            ('>', _) => (Token::Op(Operator::Gt), 1),
            ('<', Some('=')) => (Token::Op(Operator::Le), 2),
            ('<', _) => (Token::Op(Operator::Lt), 1),
            ('~', _) => (Token::Sibling, 1),
            ('"', _) | ('`', _) => {
                // Backquoted strings are raw: no escapes.
                let (value, end) = read_quoted(&chars, index, current == '"')
                    .ok_or_else(|| error(position, "unterminated string"))?;
                (Token::Text(value), end - index)
            }
            (c, _)
                if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) =>
            {
                let mut end = index + 1;
                while chars
                    .get(end)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == 'µ')
                {
                    end += 1;
                }
                (
                    Token::Number(chars[index..end].iter().collect()),
                    end - index,
                )
            }
            (c, _) if is_word_char(c) => {
                let mut end = index + 1;
                while chars.get(end).is_some_and(|c| is_word_char(*c)) {
                    end += 1;
                }
                // `span."quoted name"`: the quoted part belongs to the word.
                let mut word: String = chars[index..end].iter().collect();
                if word.ends_with('.') && chars.get(end) == Some(&'"') {
                    let (quoted, close) = read_quoted(&chars, end, true)
                        .ok_or_else(|| error(end + 1, "unterminated attribute name"))?;
                    word.push_str(&quoted);
                    end = close;
                }
                (Token::Word(word), end - index)
            }
            (other, _) => return Err(error(position, format!("unexpected character {other:?}"))),
        };
        tokens.push((position, token));
        index += length;
    }
    Ok(tokens)
}

/// A number or duration literal.
fn number_value(text: &str) -> Option<Value> {
    if let Ok(int) = text.parse::<i64>() {
        return Some(Value::Int(int));
    }
    if let Ok(float) = text.parse::<f64>()
        && float.is_finite()
    {
        return Some(Value::Float(float));
    }
    crate::units::parse_duration_nanos(text).map(Value::Duration)
}

fn intrinsic(word: &str) -> Option<Intrinsic> {
    Some(match word {
        "name" | "span:name" => Intrinsic::Name,
        "status" | "span:status" => Intrinsic::Status,
        "kind" | "span:kind" => Intrinsic::Kind,
        "duration" | "span:duration" => Intrinsic::Duration,
        "statusMessage" | "span:statusMessage" => Intrinsic::StatusMessage,
        "rootName" | "trace:rootName" => Intrinsic::RootName,
        "rootServiceName" | "trace:rootService" => Intrinsic::RootServiceName,
        "traceDuration" | "trace:duration" => Intrinsic::TraceDuration,
        _ => return None,
    })
}

/// A field as TraceQL writes it outside quotes (`span.x`, `resource.x`,
/// `.x`, an intrinsic), as the tag endpoints name them.
pub fn parse_field(word: &str) -> Option<Field> {
    field(word)
}

fn field(word: &str) -> Option<Field> {
    if let Some(intrinsic) = intrinsic(word) {
        return Some(Field::Intrinsic(intrinsic));
    }
    let (scope, name) = if let Some(name) = word.strip_prefix("span.") {
        (Scope::Span, name)
    } else if let Some(name) = word.strip_prefix("resource.") {
        (Scope::Resource, name)
    } else if let Some(name) = word.strip_prefix('.') {
        (Scope::Any, name)
    } else {
        return None;
    };
    (!name.is_empty()).then(|| Field::Attribute {
        scope,
        name: name.to_string(),
    })
}

/// Parses a TraceQL query.
pub fn parse(text: &str) -> Result<Query, TraceqlError> {
    let length = text.chars().count();
    if length > MAX_QUERY_CHARS {
        return Err(error(
            MAX_QUERY_CHARS + 1,
            format!("queries are limited to {MAX_QUERY_CHARS} characters"),
        ));
    }
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(error(1, "empty query"));
    }
    let mut parser = Parser {
        cursor: Cursor::new(tokens, length + 1, MAX_DEPTH, LANGUAGE),
    };
    let spansets = parser.spansets()?;
    let mut stages = Vec::new();
    while let Some((_, Token::Pipe)) = parser.cursor.peek() {
        parser.cursor.advance();
        stages.push(parser.stage()?);
    }
    if let Some((position, token)) = parser.cursor.peek() {
        return Err(error(position, format!("unexpected {token}")));
    }
    Ok(Query { spansets, stages })
}

struct Parser {
    cursor: Cursor<Token>,
}

impl Parser {
    fn nested<T>(
        &mut self,
        position: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, TraceqlError>,
    ) -> Result<T, TraceqlError> {
        self.cursor.enter(position)?;
        let parsed = parse(self);
        self.cursor.leave();
        parsed
    }

    fn spansets(&mut self) -> Result<Spansets, TraceqlError> {
        let mut left = self.spanset_and()?;
        while let Some((_, Token::OrOr)) = self.cursor.peek() {
            self.cursor.advance();
            left = Spansets::Or(Box::new(left), Box::new(self.spanset_and()?));
        }
        Ok(left)
    }

    fn spanset_and(&mut self) -> Result<Spansets, TraceqlError> {
        let mut left = self.chain()?;
        while let Some((_, Token::AndAnd)) = self.cursor.peek() {
            self.cursor.advance();
            left = Spansets::And(Box::new(left), Box::new(self.chain()?));
        }
        Ok(left)
    }

    fn chain(&mut self) -> Result<Spansets, TraceqlError> {
        let mut left = self.spanset()?;
        loop {
            let combine: fn(Box<Spansets>, Box<Spansets>) -> Spansets = match self.cursor.peek() {
                Some((_, Token::Descendant)) => Spansets::Descendant,
                Some((_, Token::Op(Operator::Gt))) => Spansets::Child,
                Some((_, Token::Sibling)) => Spansets::Sibling,
                _ => return Ok(left),
            };
            self.cursor.advance();
            left = combine(Box::new(left), Box::new(self.spanset()?));
        }
    }

    fn spanset(&mut self) -> Result<Spansets, TraceqlError> {
        let (position, token) = self.cursor.take("a spanset \"{ ... }\"")?;
        match token {
            Token::LeftBrace => {
                if let Some((_, Token::RightBrace)) = self.cursor.peek() {
                    self.cursor.advance();
                    return Ok(Spansets::Filter(None));
                }
                let condition = self.nested(position, Self::condition)?;
                self.cursor.expect(Token::RightBrace, "\"}\"")?;
                Ok(Spansets::Filter(Some(condition)))
            }
            Token::LeftParen => {
                let inner = self.nested(position, Self::spansets)?;
                self.cursor.expect(Token::RightParen, "\")\"")?;
                Ok(inner)
            }
            other => Err(error(
                position,
                format!("expected a spanset \"{{ ... }}\", found {other}"),
            )),
        }
    }

    fn condition(&mut self) -> Result<Condition, TraceqlError> {
        let mut left = self.condition_and()?;
        while let Some((_, Token::OrOr)) = self.cursor.peek() {
            self.cursor.advance();
            left = Condition::Or(Box::new(left), Box::new(self.condition_and()?));
        }
        Ok(left)
    }

    fn condition_and(&mut self) -> Result<Condition, TraceqlError> {
        let mut left = self.condition_not()?;
        while let Some((_, Token::AndAnd)) = self.cursor.peek() {
            self.cursor.advance();
            left = Condition::And(Box::new(left), Box::new(self.condition_not()?));
        }
        Ok(left)
    }

    fn condition_not(&mut self) -> Result<Condition, TraceqlError> {
        let (position, token) = self.cursor.take("a condition")?;
        match token {
            Token::Not => {
                let inner = self.nested(position, Self::condition_not)?;
                Ok(Condition::Not(Box::new(inner)))
            }
            Token::LeftParen => {
                let inner = self.nested(position, Self::condition)?;
                self.cursor.expect(Token::RightParen, "\")\"")?;
                Ok(inner)
            }
            Token::Word(word) => {
                let field = field(&word).ok_or_else(|| {
                    error(
                        position,
                        format!(
                            "unknown field {word:?}: use span.x, resource.x, .x or an intrinsic (name, status, kind, duration, ...)"
                        ),
                    )
                })?;
                let Some((_, Token::Op(op))) = self.cursor.peek() else {
                    return Ok(Condition::Truthy(field));
                };
                self.cursor.advance();
                let value = self.value()?;
                Ok(Condition::Compare { field, op, value })
            }
            other => Err(error(
                position,
                format!("expected a condition, found {other}"),
            )),
        }
    }

    fn value(&mut self) -> Result<Value, TraceqlError> {
        let (position, token) = self.cursor.take("a value")?;
        match token {
            Token::Text(text) => Ok(Value::Text(text)),
            Token::Number(text) => number_value(&text)
                .ok_or_else(|| error(position, format!("{text:?} is not a number or duration"))),
            Token::Word(word) => match word.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "nil" => Ok(Value::Nil),
                "error" | "ok" | "unset" => Ok(Value::Status(word)),
                "server" | "client" | "producer" | "consumer" | "internal" | "unspecified" => {
                    Ok(Value::Kind(word))
                }
                _ => Err(error(
                    position,
                    format!("expected a value, found {word:?} (strings need double quotes)"),
                )),
            },
            other => Err(error(position, format!("expected a value, found {other}"))),
        }
    }

    fn fields(&mut self) -> Result<Vec<Field>, TraceqlError> {
        self.cursor.expect(Token::LeftParen, "\"(\"")?;
        let mut fields = Vec::new();
        loop {
            let (position, token) = self.cursor.take("a field")?;
            let Token::Word(word) = token else {
                return Err(error(position, format!("expected a field, found {token}")));
            };
            fields.push(
                field(&word).ok_or_else(|| error(position, format!("unknown field {word:?}")))?,
            );
            match self.cursor.take("\",\" or \")\"")? {
                (_, Token::Comma) => continue,
                (_, Token::RightParen) => return Ok(fields),
                (other_position, other) => {
                    return Err(error(
                        other_position,
                        format!("expected \",\" or \")\", found {other}"),
                    ));
                }
            }
        }
    }

    fn comparison(&mut self, after: &str) -> Result<Operator, TraceqlError> {
        let (position, token) = self.cursor.take("a comparison")?;
        match token {
            Token::Op(op) if !matches!(op, Operator::Regex | Operator::NotRegex) => Ok(op),
            other => Err(error(
                position,
                format!("expected a comparison after {after}, found {other}"),
            )),
        }
    }

    fn stage(&mut self) -> Result<Stage, TraceqlError> {
        let (position, token) = self.cursor.take("a pipeline stage")?;
        let Token::Word(word) = token else {
            return Err(error(
                position,
                format!("expected a pipeline stage, found {token}"),
            ));
        };
        match word.as_str() {
            "count" => {
                self.cursor.expect(Token::LeftParen, "\"(\"")?;
                self.cursor.expect(Token::RightParen, "\")\"")?;
                let op = self.comparison("count()")?;
                let (value_position, value) = self.cursor.take("a number")?;
                let number = match value {
                    Token::Number(text) => text.parse::<f64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| error(value_position, "count() compares with a number"))?;
                Ok(Stage::Count { op, value: number })
            }
            "avg" | "min" | "max" | "sum" => {
                let aggregate = match word.as_str() {
                    "avg" => Aggregate::Avg,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    _ => Aggregate::Sum,
                };
                let mut fields = self.fields()?;
                if fields.len() != 1 {
                    return Err(error(position, format!("{word}() takes one field")));
                }
                let field = fields.remove(0);
                let op = self.comparison(&format!("{word}()"))?;
                let value = self.value()?;
                if !matches!(value, Value::Int(_) | Value::Float(_) | Value::Duration(_)) {
                    return Err(error(
                        position,
                        format!("{word}() compares with a number or duration"),
                    ));
                }
                Ok(Stage::Aggregate {
                    aggregate,
                    field,
                    op,
                    value,
                })
            }
            "by" => Ok(Stage::By(self.fields()?)),
            "select" => Ok(Stage::Select(self.fields()?)),
            other => Err(error(
                position,
                format!(
                    "unknown pipeline stage {other:?}: use count(), avg/min/max/sum(), by() or select()"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(scope: Scope, name: &str) -> Field {
        Field::Attribute {
            scope,
            name: name.into(),
        }
    }

    fn compare(field: Field, op: Operator, value: Value) -> Condition {
        Condition::Compare { field, op, value }
    }

    fn filter(condition: Condition) -> Spansets {
        Spansets::Filter(Some(condition))
    }

    #[test]
    fn parses_what_grafana_and_people_write() {
        let cases: Vec<(&str, Query)> = vec![
            (
                "{}",
                Query {
                    spansets: Spansets::Filter(None),
                    stages: vec![],
                },
            ),
            (
                r#"{resource.service.name="orders" && duration > 500ms}"#,
                Query {
                    spansets: filter(Condition::And(
                        Box::new(compare(
                            attribute(Scope::Resource, "service.name"),
                            Operator::Eq,
                            Value::Text("orders".into()),
                        )),
                        Box::new(compare(
                            Field::Intrinsic(Intrinsic::Duration),
                            Operator::Gt,
                            Value::Duration(500_000_000),
                        )),
                    )),
                    stages: vec![],
                },
            ),
            (
                r#"{ span.http.status_code >= 500 || status = error } | count() > 2"#,
                Query {
                    spansets: filter(Condition::Or(
                        Box::new(compare(
                            attribute(Scope::Span, "http.status_code"),
                            Operator::Ge,
                            Value::Int(500),
                        )),
                        Box::new(compare(
                            Field::Intrinsic(Intrinsic::Status),
                            Operator::Eq,
                            Value::Status("error".into()),
                        )),
                    )),
                    stages: vec![Stage::Count {
                        op: Operator::Gt,
                        value: 2.0,
                    }],
                },
            ),
            (
                r#"{ .region =~ "us-.*" && kind = server && span."my key" != nil }"#,
                Query {
                    spansets: filter(Condition::And(
                        Box::new(Condition::And(
                            Box::new(compare(
                                attribute(Scope::Any, "region"),
                                Operator::Regex,
                                Value::Text("us-.*".into()),
                            )),
                            Box::new(compare(
                                Field::Intrinsic(Intrinsic::Kind),
                                Operator::Eq,
                                Value::Kind("server".into()),
                            )),
                        )),
                        Box::new(compare(
                            attribute(Scope::Span, "my key"),
                            Operator::Ne,
                            Value::Nil,
                        )),
                    )),
                    stages: vec![],
                },
            ),
            (
                r#"{ resource.service.name = "frontend" } >> { span:name = "SELECT" } | avg(duration) > 1.5s | by(resource.service.name) | select(span.db.statement, traceDuration)"#,
                Query {
                    spansets: Spansets::Descendant(
                        Box::new(filter(compare(
                            attribute(Scope::Resource, "service.name"),
                            Operator::Eq,
                            Value::Text("frontend".into()),
                        ))),
                        Box::new(filter(compare(
                            Field::Intrinsic(Intrinsic::Name),
                            Operator::Eq,
                            Value::Text("SELECT".into()),
                        ))),
                    ),
                    stages: vec![
                        Stage::Aggregate {
                            aggregate: Aggregate::Avg,
                            field: Field::Intrinsic(Intrinsic::Duration),
                            op: Operator::Gt,
                            value: Value::Duration(1_500_000_000),
                        },
                        Stage::By(vec![attribute(Scope::Resource, "service.name")]),
                        Stage::Select(vec![
                            attribute(Scope::Span, "db.statement"),
                            Field::Intrinsic(Intrinsic::TraceDuration),
                        ]),
                    ],
                },
            ),
            (
                "({ kind = client } > { kind = server }) || { } ~ { !span.cached }",
                Query {
                    spansets: Spansets::Or(
                        Box::new(Spansets::Child(
                            Box::new(filter(compare(
                                Field::Intrinsic(Intrinsic::Kind),
                                Operator::Eq,
                                Value::Kind("client".into()),
                            ))),
                            Box::new(filter(compare(
                                Field::Intrinsic(Intrinsic::Kind),
                                Operator::Eq,
                                Value::Kind("server".into()),
                            ))),
                        )),
                        Box::new(Spansets::Sibling(
                            Box::new(Spansets::Filter(None)),
                            Box::new(filter(Condition::Not(Box::new(Condition::Truthy(
                                attribute(Scope::Span, "cached"),
                            ))))),
                        )),
                    ),
                    stages: vec![],
                },
            ),
            (
                "{ trace:rootService = `api` && trace:duration < 2m && span.retries = -1 && .ratio >= 0.5 }",
                Query {
                    spansets: filter(Condition::And(
                        Box::new(Condition::And(
                            Box::new(Condition::And(
                                Box::new(compare(
                                    Field::Intrinsic(Intrinsic::RootServiceName),
                                    Operator::Eq,
                                    Value::Text("api".into()),
                                )),
                                Box::new(compare(
                                    Field::Intrinsic(Intrinsic::TraceDuration),
                                    Operator::Lt,
                                    Value::Duration(120_000_000_000),
                                )),
                            )),
                            Box::new(compare(
                                attribute(Scope::Span, "retries"),
                                Operator::Eq,
                                Value::Int(-1),
                            )),
                        )),
                        Box::new(compare(
                            attribute(Scope::Any, "ratio"),
                            Operator::Ge,
                            Value::Float(0.5),
                        )),
                    )),
                    stages: vec![],
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn errors_point_at_the_position() {
        let cases = [
            ("", 1, "empty"),
            ("{", 2, "found the end"),
            ("{ duration > }", 14, "expected a value"),
            ("{ foo = 1 }", 3, "unknown field"),
            ("{ .a = orders }", 8, "double quotes"),
            ("{ .a = \"x }", 8, "unterminated"),
            ("{ .a = 1 } |", 13, "pipeline stage"),
            ("{ .a = 1 } | count() > \"x\"", 24, "number"),
            ("{ .a = 1 } | rate()", 14, "unknown pipeline stage"),
            ("{ .a = 1 } }", 12, "unexpected"),
            ("{ .a = 5xs }", 8, "not a number"),
            ("{ .a # 1 }", 6, "unexpected character"),
            ("duration > 1s", 1, "spanset"),
            ("{ .a = 1 } && ", 15, "found the end"),
        ];
        for (text, position, needle) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.position, position, "{text}: {error}");
            assert!(error.message.contains(needle), "{text}: {error}");
        }
        let deep = format!("{}{{}}{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_traceql_shaped_text(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "{", "}", "(", ")", "&&", "||", "!", ">>", ">", "~", "|", "=", "!=", "=~",
                    ".a", "span.b", "resource.c", "duration", "status", "error", "\"x\"",
                    "1", "1.5s", "-2", "count()", "avg(duration)", "by(.a)", "nil", ",",
                ]),
                0..24,
            )
        ) {
            let _ = parse(&parts.join(" "));
        }
    }
}
