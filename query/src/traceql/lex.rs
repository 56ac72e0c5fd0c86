//! TraceQL tokens, read as Tempo's lexer (`pkg/traceql/lexer.go`) reads
//! them:
//!
//! - an attribute runs from its scope (`.`, `span.`, `resource.`,
//!   `event.`, `link.`, `instrumentation.`, `parent.`) to the first space
//!   or one of `{}()=~!<>&|^,`; double-quoted parts may hold any
//!   character (`span."a b"`, with `\"` and `\\` escapes);
//! - `trace:`, `span:`, `event:`, `link:`, `instrumentation:` start a
//!   scoped intrinsic (`span:duration`);
//! - a number directly followed by a unit is a duration (`1.5s`, `1h30m`,
//!   `100ms`, `2d`);
//! - operators are the longest of `!>> &>> !~ ...` that matches.

use std::fmt;

use super::ast::{Intrinsic, Scope};
use crate::syntax::SyntaxError;

/// Why a query did not lex or parse, and where (1-based character).
pub type TraceqlError = SyntaxError;

/// The language errors name.
pub(super) const LANGUAGE: &str = "TraceQL";

/// A [`TraceqlError`] at `position` (1-based character).
pub(super) fn error(position: usize, message: impl Into<String>) -> TraceqlError {
    SyntaxError {
        language: LANGUAGE,
        position,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    LeftBrace,
    RightBrace,
    LeftParen,
    RightParen,
    Comma,
    Symbol(Symbol),
    Text(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    /// A keyword or another identifier.
    Word(String),
    Attribute {
        scope: Scope,
        name: String,
        parent: bool,
    },
    Intrinsic(Intrinsic),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Symbol {
    Eq,
    Ne,
    Regex,
    /// `!~`: not-regex in a filter, not-sibling between spansets.
    NotRegex,
    Gt,
    Ge,
    Lt,
    Le,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    And,
    Or,
    Not,
    Pipe,
    Descendant,
    Ancestor,
    Sibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    UnionSibling,
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
}

const SYMBOLS: [(&str, Symbol); 30] = [
    ("!>>", Symbol::NotDescendant),
    ("!<<", Symbol::NotAncestor),
    ("&>>", Symbol::UnionDescendant),
    ("&<<", Symbol::UnionAncestor),
    ("!=", Symbol::Ne),
    ("!~", Symbol::NotRegex),
    ("!>", Symbol::NotChild),
    ("!<", Symbol::NotParent),
    ("=~", Symbol::Regex),
    (">>", Symbol::Descendant),
    (">=", Symbol::Ge),
    ("<<", Symbol::Ancestor),
    ("<=", Symbol::Le),
    ("&&", Symbol::And),
    ("&~", Symbol::UnionSibling),
    ("&>", Symbol::UnionChild),
    ("&<", Symbol::UnionParent),
    ("||", Symbol::Or),
    ("=", Symbol::Eq),
    (">", Symbol::Gt),
    ("<", Symbol::Lt),
    ("+", Symbol::Add),
    ("-", Symbol::Sub),
    ("*", Symbol::Mul),
    ("/", Symbol::Div),
    ("%", Symbol::Mod),
    ("^", Symbol::Pow),
    ("!", Symbol::Not),
    ("|", Symbol::Pipe),
    ("~", Symbol::Sibling),
];

impl Symbol {
    pub(super) fn text(self) -> &'static str {
        SYMBOLS
            .iter()
            .find(|(_, symbol)| *symbol == self)
            .map_or("?", |(text, _)| text)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LeftBrace => f.write_str("\"{\""),
            Self::RightBrace => f.write_str("\"}\""),
            Self::LeftParen => f.write_str("\"(\""),
            Self::RightParen => f.write_str("\")\""),
            Self::Comma => f.write_str("\",\""),
            Self::Symbol(symbol) => write!(f, "\"{}\"", symbol.text()),
            Self::Text(text) => write!(f, "string {text:?}"),
            Self::Int(int) => write!(f, "number {int}"),
            Self::Float(float) => write!(f, "number {float}"),
            Self::Duration(nanos) => write!(f, "duration {nanos}ns"),
            Self::Word(word) => write!(f, "{word:?}"),
            Self::Attribute { scope, name, .. } => write!(f, "attribute {}{name}", scope.prefix()),
            Self::Intrinsic(intrinsic) => write!(f, "{}", intrinsic.name()),
        }
    }
}

/// Characters that end an unquoted attribute name.
fn ends_attribute(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ','
        )
}

/// The unscoped intrinsics (`duration`, `name`, ...).
pub(super) fn bare_intrinsic(word: &str) -> Option<Intrinsic> {
    Some(match word {
        "duration" => Intrinsic::Duration,
        "name" => Intrinsic::Name,
        "status" => Intrinsic::Status,
        "statusMessage" => Intrinsic::StatusMessage,
        "kind" => Intrinsic::Kind,
        "rootName" => Intrinsic::RootName,
        "rootServiceName" => Intrinsic::RootServiceName,
        "traceDuration" => Intrinsic::TraceDuration,
        "nestedSetLeft" => Intrinsic::NestedSetLeft,
        "nestedSetRight" => Intrinsic::NestedSetRight,
        "nestedSetParent" => Intrinsic::NestedSetParent,
        _ => return None,
    })
}

/// `trace:duration`, `span:id`, ...: the intrinsics a scope prefix names.
pub(super) fn scoped_intrinsic(scope: &str, word: &str) -> Option<Intrinsic> {
    Some(match (scope, word) {
        ("trace", "duration") => Intrinsic::TraceDuration,
        ("trace", "rootName") => Intrinsic::RootName,
        ("trace", "rootService") => Intrinsic::RootServiceName,
        ("trace", "id") => Intrinsic::TraceId,
        ("span", "duration") => Intrinsic::Duration,
        ("span", "name") => Intrinsic::Name,
        ("span", "kind") => Intrinsic::Kind,
        ("span", "status") => Intrinsic::Status,
        ("span", "statusMessage") => Intrinsic::StatusMessage,
        ("span", "id") => Intrinsic::SpanId,
        ("span", "parentID") => Intrinsic::ParentId,
        ("span", "childCount") => Intrinsic::ChildCount,
        ("event", "name") => Intrinsic::EventName,
        ("event", "timeSinceStart") => Intrinsic::EventTimeSinceStart,
        ("link", "traceID") => Intrinsic::LinkTraceId,
        ("link", "spanID") => Intrinsic::LinkSpanId,
        ("instrumentation", "name") => Intrinsic::InstrumentationName,
        ("instrumentation", "version") => Intrinsic::InstrumentationVersion,
        _ => return None,
    })
}

fn attribute_scope(word: &str) -> Option<Scope> {
    Some(match word {
        "span" => Scope::Span,
        "resource" => Scope::Resource,
        "event" => Scope::Event,
        "link" => Scope::Link,
        "instrumentation" => Scope::Instrumentation,
        _ => return None,
    })
}

/// Nanoseconds of a duration literal: number-unit pairs, Go's units and
/// Prometheus' (`ns us µs ms s m h d w y`), `1h30m` included.
pub fn duration_nanos(text: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_end == 0 {
            return None;
        }
        let amount: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "d" => 86_400e9,
            "w" => 7.0 * 86_400e9,
            "y" => 365.0 * 86_400e9,
            unit => crate::units::unit_nanos(unit)?,
        };
        rest = &rest[unit_end..];
        total += amount * scale;
    }
    (total.is_finite() && total < 9.2e18).then_some(total.round() as i64)
}

fn is_duration_char(c: char) -> bool {
    c.is_ascii_digit()
        || c == '.'
        || matches!(c, 'n' | 's' | 'u' | 'm' | 'h' | 'µ' | 'd' | 'w' | 'y')
}

/// Reads `chars[start..]` as an attribute name: unquoted runs and quoted
/// parts, up to a character that ends it. The name and where it ended.
fn attribute_name(chars: &[char], start: usize) -> Result<(String, usize), TraceqlError> {
    let mut name = String::new();
    let mut index = start;
    while let Some(&c) = chars.get(index) {
        if c == '"' {
            index += 1;
            loop {
                match chars.get(index) {
                    None => return Err(error(index + 1, "unterminated quoted attribute name")),
                    Some('"') => {
                        index += 1;
                        break;
                    }
                    Some('\\') => match chars.get(index + 1) {
                        Some(escaped @ ('"' | '\\')) => {
                            name.push(*escaped);
                            index += 2;
                        }
                        _ => return Err(error(index + 1, "invalid escape sequence")),
                    },
                    Some(other) => {
                        name.push(*other);
                        index += 1;
                    }
                }
            }
        } else if ends_attribute(c) {
            break;
        } else {
            name.push(c);
            index += 1;
        }
    }
    if name.is_empty() {
        return Err(error(start + 1, "expected an attribute name"));
    }
    Ok((name, index))
}

/// A string literal opening at `chars[open]`: `"..."` with Go's escapes,
/// or a raw `` `...` ``.
fn string_literal(chars: &[char], open: usize) -> Result<(String, usize), TraceqlError> {
    let quote = chars[open];
    let mut text = String::new();
    let mut index = open + 1;
    loop {
        let Some(&c) = chars.get(index) else {
            return Err(error(open + 1, "unterminated string"));
        };
        index += 1;
        if c == quote {
            return Ok((text, index));
        }
        if c != '\\' || quote == '`' {
            text.push(c);
            continue;
        }
        let Some(&escaped) = chars.get(index) else {
            return Err(error(open + 1, "unterminated string"));
        };
        index += 1;
        text.push(match escaped {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            'u' | 'x' | 'U' => {
                let digits = match escaped {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars
                    .get(index..index + digits)
                    .unwrap_or(&[])
                    .iter()
                    .collect();
                index += digits;
                u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == digits)
                    .and_then(char::from_u32)
                    .ok_or_else(|| error(index - digits, "invalid escape in string"))?
            }
            _ => return Err(error(index - 1, "invalid escape in string")),
        });
    }
}

/// The tokens of `text`, each with its 1-based character position.
pub(super) fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, TraceqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let position = index + 1;
        let current = chars[index];
        if current.is_whitespace() {
            index += 1;
            continue;
        }
        let single = match current {
            '{' => Some(Token::LeftBrace),
            '}' => Some(Token::RightBrace),
            '(' => Some(Token::LeftParen),
            ')' => Some(Token::RightParen),
            ',' => Some(Token::Comma),
            _ => None,
        };
        if let Some(token) = single {
            tokens.push((position, token));
            index += 1;
            continue;
        }
        if current == '"' || current == '`' {
            let (value, end) = string_literal(&chars, index)?;
            tokens.push((position, Token::Text(value)));
            index = end;
            continue;
        }
        let starts_number = current.is_ascii_digit()
            || (current == '.' && chars.get(index + 1).is_some_and(char::is_ascii_digit));
        if starts_number {
            let (token, end) = number(&chars, index)?;
            tokens.push((position, token));
            index = end;
            continue;
        }
        if current == '.' {
            let (name, end) = attribute_name(&chars, index + 1)?;
            tokens.push((
                position,
                Token::Attribute {
                    scope: Scope::Any,
                    name,
                    parent: false,
                },
            ));
            index = end;
            continue;
        }
        if current.is_alphabetic() || current == '_' {
            let mut end = index + 1;
            while chars
                .get(end)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                end += 1;
            }
            let word: String = chars[index..end].iter().collect();
            let (token, next) = word_token(&chars, word, end, position)?;
            tokens.push((position, token));
            index = next;
            continue;
        }
        let symbol = SYMBOLS.iter().find(|(text, _)| {
            text.chars()
                .enumerate()
                .all(|(offset, c)| chars.get(index + offset) == Some(&c))
        });
        match symbol {
            Some((text, symbol)) => {
                tokens.push((position, Token::Symbol(*symbol)));
                index += text.chars().count();
            }
            None => {
                return Err(error(position, format!("unexpected character {current:?}")));
            }
        }
    }
    Ok(tokens)
}

/// A word and what follows it: a scope prefix (`span.`, `span:`,
/// `parent.`) or a word on its own.
fn word_token(
    chars: &[char],
    word: String,
    end: usize,
    position: usize,
) -> Result<(Token, usize), TraceqlError> {
    match chars.get(end) {
        Some('.') if word == "parent" => {
            // `parent.x`, `parent.span.x`, `parent.resource.x`.
            let (name, next) = attribute_name(chars, end + 1)?;
            let (scope, name) = match name.split_once('.') {
                Some(("span", rest)) if !rest.is_empty() => (Scope::Span, rest.to_string()),
                Some(("resource", rest)) if !rest.is_empty() => (Scope::Resource, rest.to_string()),
                _ => (Scope::Any, name),
            };
            Ok((
                Token::Attribute {
                    scope,
                    name,
                    parent: true,
                },
                next,
            ))
        }
        Some('.') if attribute_scope(&word).is_some() => {
            let (name, next) = attribute_name(chars, end + 1)?;
            let scope = attribute_scope(&word).unwrap_or(Scope::Any);
            Ok((
                Token::Attribute {
                    scope,
                    name,
                    parent: false,
                },
                next,
            ))
        }
        Some(':')
            if matches!(
                word.as_str(),
                "trace" | "span" | "event" | "link" | "instrumentation"
            ) =>
        {
            let mut start = end + 1;
            while chars.get(start).is_some_and(|c| c.is_whitespace()) {
                start += 1;
            }
            let mut stop = start;
            while chars
                .get(stop)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                stop += 1;
            }
            let name: String = chars[start..stop].iter().collect();
            let intrinsic = scoped_intrinsic(&word, &name)
                .ok_or_else(|| error(position, format!("unknown intrinsic {word}:{name}")))?;
            Ok((Token::Intrinsic(intrinsic), stop))
        }
        _ => Ok((
            match bare_intrinsic(&word) {
                Some(intrinsic) => Token::Intrinsic(intrinsic),
                None => Token::Word(word),
            },
            end,
        )),
    }
}

/// A number, or a duration when a unit follows directly.
fn number(chars: &[char], start: usize) -> Result<(Token, usize), TraceqlError> {
    let position = start + 1;
    let mut end = start;
    while chars
        .get(end)
        .is_some_and(|c| c.is_ascii_digit() || *c == '.' || *c == '_')
    {
        end += 1;
    }
    // An exponent: 1e5, 1.5E-3.
    if matches!(chars.get(end), Some('e' | 'E')) {
        let mut exponent = end + 1;
        if matches!(chars.get(exponent), Some('+' | '-')) {
            exponent += 1;
        }
        if chars.get(exponent).is_some_and(char::is_ascii_digit) {
            end = exponent;
            while chars.get(end).is_some_and(char::is_ascii_digit) {
                end += 1;
            }
        }
    }
    let number: String = chars[start..end].iter().filter(|c| **c != '_').collect();
    // Directly followed by unit characters up to a space: a duration.
    let mut unit_end = end;
    while chars.get(unit_end).is_some_and(|c| is_duration_char(*c)) {
        unit_end += 1;
    }
    if unit_end > end {
        let text: String = chars[start..unit_end].iter().collect();
        if let Some(nanos) = duration_nanos(&text) {
            return Ok((Token::Duration(nanos), unit_end));
        }
    }
    if !number.contains(['.', 'e', 'E']) {
        let int = number
            .parse::<i64>()
            .map_err(|_| error(position, format!("{number} is out of range for an integer")))?;
        return Ok((Token::Int(int), end));
    }
    let float = number
        .parse::<f64>()
        .ok()
        .filter(|float| float.is_finite())
        .ok_or_else(|| error(position, format!("{number:?} is not a number")))?;
    Ok((Token::Float(float), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_and_prometheus_write_them() {
        assert_eq!(duration_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(duration_nanos("1h30m"), Some(5_400_000_000_000));
        assert_eq!(duration_nanos("250µs"), Some(250_000));
        assert_eq!(duration_nanos("2d"), Some(172_800_000_000_000));
        assert_eq!(duration_nanos("5parsecs"), None);
        assert_eq!(duration_nanos("s"), None);
    }

    #[test]
    fn attributes_run_to_a_delimiter() {
        let tokens: Vec<Token> = tokenize(r#"{ .a+1=2 && span."x y".z != parent.resource.r }"#)
            .unwrap()
            .into_iter()
            .map(|(_, token)| token)
            .collect();
        assert_eq!(
            tokens,
            vec![
                Token::LeftBrace,
                Token::Attribute {
                    scope: Scope::Any,
                    name: "a+1".into(),
                    parent: false
                },
                Token::Symbol(Symbol::Eq),
                Token::Int(2),
                Token::Symbol(Symbol::And),
                Token::Attribute {
                    scope: Scope::Span,
                    name: "x y.z".into(),
                    parent: false
                },
                Token::Symbol(Symbol::Ne),
                Token::Attribute {
                    scope: Scope::Resource,
                    name: "r".into(),
                    parent: true
                },
                Token::RightBrace,
            ]
        );
    }
}
