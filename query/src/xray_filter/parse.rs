//! Parses X-Ray filter expressions into [`Filter`].
//!
//! ```text
//! filter     := or
//! or         := and (("OR" | "||") and)*
//! and        := unary (("AND" | "&&")? unary)*          adjacent terms AND implicitly
//! unary      := ("!" | "NOT") unary | primary
//! primary    := "(" filter ")"
//!             | keyword                                 ok error throttle fault partial root
//!             | field op value                          responsetime duration http.status: = != < <= > >=
//!                                                       http.url http.method http.useragent http.clientip user name:
//!                                                         = != CONTAINS BEGINSWITH ENDSWITH
//!             | "annotation." key op value              number, string or true/false
//!             | "service" "(" target? ")" ("{" filter? "}")?
//!             | "edge" "(" name "," name ")" ("{" filter? "}")?
//!             | ("group.name" | "group.arn") "=" string    the group's filter
//! target     := string | "id" "(" ("name" ":" string | "type" ":" string) ("," ...)* ")"
//! ```
//!
//! Errors carry the 1-based character position where parsing failed.

use std::fmt;

use crate::syntax::{Cursor, SyntaxError};

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Keyword(Keyword),
    Number {
        field: NumberField,
        op: Comparison,
        value: f64,
    },
    Text {
        field: TextField,
        op: TextOp,
        value: String,
    },
    Annotation {
        key: String,
        op: TextOp,
        value: Literal,
    },
    Service {
        name: Option<String>,
        node_type: Option<String>,
        filter: Option<Box<Filter>>,
    },
    Edge {
        from: String,
        to: String,
        filter: Option<Box<Filter>>,
    },
    /// A group's filter, by name or ARN; resolved before evaluation.
    Group(String),
    /// Matches every trace: what a group without a filter resolves to.
    Always,
}

impl Filter {
    /// The group names or ARNs this filter refers to.
    pub fn groups(&self) -> Vec<String> {
        let mut found = Vec::new();
        self.visit(&mut |filter| {
            if let Filter::Group(group) = filter {
                found.push(group.clone());
            }
        });
        found
    }

    fn visit(&self, visitor: &mut impl FnMut(&Filter)) {
        visitor(self);
        match self {
            Filter::And(left, right) | Filter::Or(left, right) => {
                left.visit(visitor);
                right.visit(visitor);
            }
            Filter::Not(inner) => inner.visit(visitor),
            Filter::Service {
                filter: Some(inner),
                ..
            }
            | Filter::Edge {
                filter: Some(inner),
                ..
            } => inner.visit(visitor),
            _ => {}
        }
    }

    /// This filter with every group reference replaced by `resolve(group)`.
    pub fn substitute_groups(self, resolve: &impl Fn(&str) -> Filter) -> Filter {
        let boxed = |filter: Box<Filter>| Box::new(filter.substitute_groups(resolve));
        match self {
            Filter::Group(group) => resolve(&group),
            Filter::And(left, right) => Filter::And(boxed(left), boxed(right)),
            Filter::Or(left, right) => Filter::Or(boxed(left), boxed(right)),
            Filter::Not(inner) => Filter::Not(boxed(inner)),
            Filter::Service {
                name,
                node_type,
                filter,
            } => Filter::Service {
                name,
                node_type,
                filter: filter.map(boxed),
            },
            Filter::Edge { from, to, filter } => Filter::Edge {
                from,
                to,
                filter: filter.map(boxed),
            },
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Ok,
    Error,
    Throttle,
    Fault,
    Partial,
    Root,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberField {
    ResponseTime,
    Duration,
    HttpStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    HttpUrl,
    HttpMethod,
    HttpUserAgent,
    HttpClientIp,
    User,
    Name,
}

pub use crate::syntax::Comparison;

/// A comparison or one of the string operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Compare(Comparison),
    Contains,
    BeginsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// Why an expression did not parse, and where (1-based character).
pub type FilterError = SyntaxError;

/// The language errors name.
const LANGUAGE: &str = "filter expression";

/// Longest expression accepted, in characters.
pub const MAX_FILTER_CHARS: usize = 2_000;
/// Deepest nesting of parentheses, braces and `!`.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(f64),
    Op(Comparison),
    And,
    Or,
    Not,
    LeftParen,
    RightParen,
    LeftBrace,
    RightBrace,
    Comma,
    Colon,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Word(word) => write!(f, "{word:?}"),
            Self::Text(text) => write!(f, "string {text:?}"),
            Self::Number(number) => write!(f, "number {number}"),
            Self::Op(_) => f.write_str("a comparison"),
            Self::And => f.write_str("AND"),
            Self::Or => f.write_str("OR"),
            Self::Not => f.write_str("!"),
            Self::LeftParen => f.write_str("\"(\""),
            Self::RightParen => f.write_str("\")\""),
            Self::LeftBrace => f.write_str("\"{\""),
            Self::RightBrace => f.write_str("\"}\""),
            Self::Comma => f.write_str("\",\""),
            Self::Colon => f.write_str("\":\""),
        }
    }
}

fn error(position: usize, message: impl Into<String>) -> FilterError {
    SyntaxError {
        language: LANGUAGE,
        position,
        message: message.into(),
    }
}

/// Tokens with their 1-based character positions.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
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
            ('(', _) => (Token::LeftParen, 1),
            (')', _) => (Token::RightParen, 1),
            ('{', _) => (Token::LeftBrace, 1),
            ('}', _) => (Token::RightBrace, 1),
            (',', _) => (Token::Comma, 1),
            (':', _) => (Token::Colon, 1),
            ('&', Some('&')) => (Token::And, 2),
            ('|', Some('|')) => (Token::Or, 2),
            ('!', Some('=')) => (Token::Op(Comparison::Ne), 2),
            ('!', _) => (Token::Not, 1),
            ('<', Some('=')) => (Token::Op(Comparison::Le), 2),
            ('<', _) => (Token::Op(Comparison::Lt), 1),
            ('>', Some('=')) => (Token::Op(Comparison::Ge), 2),
            ('>', _) => (Token::Op(Comparison::Gt), 1),
            ('=', _) => (Token::Op(Comparison::Eq), 1),
            ('"', _) => {
                let (value, end) = crate::syntax::read_quoted(&chars, index, true)
                    .ok_or_else(|| error(position, "unterminated string"))?;
                (Token::Text(value), end - index)
            }
            (digit, _)
                if digit.is_ascii_digit()
                    || (digit == '-' && next.is_some_and(|n| n.is_ascii_digit() || n == '.'))
                    || (digit == '.' && next.is_some_and(|n| n.is_ascii_digit())) =>
            {
                let mut end = index + 1;
                while chars
                    .get(end)
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'))
                {
                    end += 1;
                }
                let literal: String = chars[index..end].iter().collect();
                let number = literal
                    .parse::<f64>()
                    .map_err(|_| error(position, format!("{literal:?} is not a number")))?;
                (Token::Number(number), end - index)
            }
            (letter, _) if letter.is_alphanumeric() || letter == '_' => {
                let mut end = index + 1;
                while chars
                    .get(end)
                    .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
                {
                    end += 1;
                }
                let word: String = chars[index..end].iter().collect();
                let token = match word.to_ascii_uppercase().as_str() {
                    "AND" => Token::And,
                    "OR" => Token::Or,
                    "NOT" => Token::Not,
                    _ => Token::Word(word),
                };
                (token, end - index)
            }
            (other, _) => return Err(error(position, format!("unexpected character {other:?}"))),
        };
        tokens.push((position, token));
        index += length;
    }
    Ok(tokens)
}

/// Parses an X-Ray filter expression.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    let length = text.chars().count();
    if length > MAX_FILTER_CHARS {
        return Err(error(
            MAX_FILTER_CHARS + 1,
            format!("expressions are limited to {MAX_FILTER_CHARS} characters"),
        ));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        cursor: Cursor::new(tokens, length + 1, MAX_DEPTH, LANGUAGE),
    };
    if parser.cursor.is_empty() {
        return Err(error(1, "empty expression"));
    }
    let filter = parser.or()?;
    if let Some((position, token)) = parser.cursor.peek() {
        return Err(error(position, format!("unexpected {token}")));
    }
    Ok(filter)
}

struct Parser {
    cursor: Cursor<Token>,
}

impl Parser {
    fn nested<T>(
        &mut self,
        position: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        self.cursor.enter(position)?;
        let parsed = parse(self);
        self.cursor.leave();
        parsed
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while matches!(self.cursor.peek(), Some((_, Token::Or))) {
            self.cursor.advance();
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        loop {
            match self.cursor.peek() {
                Some((_, Token::And)) => {
                    self.cursor.advance();
                }
                // Implicit AND: another term follows directly.
                Some((_, Token::Word(_) | Token::Not | Token::LeftParen)) => {}
                _ => return Ok(left),
            }
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if let Some((position, Token::Not)) = self.cursor.peek() {
            self.cursor.advance();
            let inner = self.nested(position, Self::unary)?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Filter, FilterError> {
        let (position, token) = self.cursor.take("a filter")?;
        match token {
            Token::LeftParen => {
                let inner = self.nested(position, Self::or)?;
                self.cursor.expect(Token::RightParen, "\")\"")?;
                Ok(inner)
            }
            Token::Word(word) => self.word(position, &word),
            other => Err(error(position, format!("expected a filter, found {other}"))),
        }
    }

    fn word(&mut self, position: usize, word: &str) -> Result<Filter, FilterError> {
        let lower = word.to_ascii_lowercase();
        let keyword = match lower.as_str() {
            "ok" => Some(Keyword::Ok),
            "error" => Some(Keyword::Error),
            "throttle" => Some(Keyword::Throttle),
            "fault" => Some(Keyword::Fault),
            "partial" => Some(Keyword::Partial),
            "root" => Some(Keyword::Root),
            _ => None,
        };
        if let Some(keyword) = keyword {
            return Ok(Filter::Keyword(keyword));
        }
        let number_field = match lower.as_str() {
            "responsetime" => Some(NumberField::ResponseTime),
            "duration" => Some(NumberField::Duration),
            "http.status" => Some(NumberField::HttpStatus),
            _ => None,
        };
        if let Some(field) = number_field {
            let op = self.comparison(word)?;
            let (value_position, value) = self.cursor.take("a number")?;
            let Token::Number(value) = value else {
                return Err(error(
                    value_position,
                    format!("{word} compares with a number, found {value}"),
                ));
            };
            return Ok(Filter::Number { field, op, value });
        }
        let text_field = match lower.as_str() {
            "http.url" => Some(TextField::HttpUrl),
            "http.method" => Some(TextField::HttpMethod),
            "http.useragent" => Some(TextField::HttpUserAgent),
            "http.clientip" => Some(TextField::HttpClientIp),
            "user" => Some(TextField::User),
            "name" => Some(TextField::Name),
            _ => None,
        };
        if let Some(field) = text_field {
            let op = self.text_op(word)?;
            let (value_position, value) = self.cursor.take("a string")?;
            let Token::Text(value) = value else {
                return Err(error(
                    value_position,
                    format!("{word} compares with a quoted string, found {value}"),
                ));
            };
            return Ok(Filter::Text { field, op, value });
        }
        if let Some(key) = word
            .strip_prefix("annotation.")
            .or_else(|| word.strip_prefix("annotation["))
        {
            let key = key.trim_end_matches(']');
            if key.is_empty() {
                return Err(error(position, "annotation needs a key: annotation.KEY"));
            }
            let op = self.text_op(word)?;
            let (value_position, value) = self.cursor.take("a value")?;
            let value = match value {
                Token::Number(number) => Literal::Number(number),
                Token::Text(text) => Literal::Text(text),
                Token::Word(word) if word.eq_ignore_ascii_case("true") => Literal::Bool(true),
                Token::Word(word) if word.eq_ignore_ascii_case("false") => Literal::Bool(false),
                other => {
                    return Err(error(
                        value_position,
                        format!("expected a number, string or boolean, found {other}"),
                    ));
                }
            };
            return Ok(Filter::Annotation {
                key: key.to_string(),
                op,
                value,
            });
        }
        if lower == "group.name" || lower == "group.arn" {
            let (op_position, op) = self.cursor.take("\"=\"")?;
            if op != Token::Op(Comparison::Eq) {
                return Err(error(
                    op_position,
                    format!("{word} takes \"=\", found {op}"),
                ));
            }
            let group = self.string("a quoted group name or ARN")?;
            return Ok(Filter::Group(group));
        }
        match lower.as_str() {
            "service" => self.service(position),
            "edge" => self.edge(position),
            _ => Err(error(
                position,
                format!("unknown keyword or field {word:?}"),
            )),
        }
    }

    fn comparison(&mut self, field: &str) -> Result<Comparison, FilterError> {
        let (position, token) = self.cursor.take("a comparison")?;
        match token {
            Token::Op(op) => Ok(op),
            other => Err(error(
                position,
                format!("expected a comparison after {field}, found {other}"),
            )),
        }
    }

    fn text_op(&mut self, field: &str) -> Result<TextOp, FilterError> {
        let (position, token) = self.cursor.take("an operator")?;
        match token {
            Token::Op(op) => Ok(TextOp::Compare(op)),
            Token::Word(word) => match word.to_ascii_uppercase().as_str() {
                "CONTAINS" => Ok(TextOp::Contains),
                "BEGINSWITH" => Ok(TextOp::BeginsWith),
                "ENDSWITH" => Ok(TextOp::EndsWith),
                _ => Err(error(
                    position,
                    format!("expected an operator after {field}, found {word:?}"),
                )),
            },
            other => Err(error(
                position,
                format!("expected an operator after {field}, found {other}"),
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, FilterError> {
        let (position, token) = self.cursor.take(what)?;
        match token {
            Token::Text(text) => Ok(text),
            other => Err(error(position, format!("expected {what}, found {other}"))),
        }
    }

    /// `{ filter? }` after service(...) or edge(...), if present.
    fn block(&mut self) -> Result<Option<Box<Filter>>, FilterError> {
        let Some((position, Token::LeftBrace)) = self.cursor.peek() else {
            return Ok(None);
        };
        self.cursor.advance();
        if matches!(self.cursor.peek(), Some((_, Token::RightBrace))) {
            self.cursor.advance();
            return Ok(None);
        }
        let inner = self.nested(position, Self::or)?;
        self.cursor.expect(Token::RightBrace, "\"}\"")?;
        Ok(Some(Box::new(inner)))
    }

    fn service(&mut self, _position: usize) -> Result<Filter, FilterError> {
        self.cursor
            .expect(Token::LeftParen, "\"(\" after service")?;
        let (mut name, mut node_type) = (None, None);
        match self.cursor.peek() {
            Some((_, Token::RightParen)) => {}
            Some((_, Token::Text(_))) => name = Some(self.string("a service name")?),
            Some((position, Token::Word(word))) if word.eq_ignore_ascii_case("id") => {
                self.cursor.advance();
                self.cursor.expect(Token::LeftParen, "\"(\" after id")?;
                loop {
                    let (key_position, key) = self.cursor.take("name or type")?;
                    self.cursor.expect(Token::Colon, "\":\"")?;
                    let value = self.string("a quoted value")?;
                    match key {
                        Token::Word(key) if key.eq_ignore_ascii_case("name") => name = Some(value),
                        Token::Word(key) if key.eq_ignore_ascii_case("type") => {
                            node_type = Some(value)
                        }
                        other => {
                            return Err(error(
                                key_position,
                                format!("id() takes name and type, found {other}"),
                            ));
                        }
                    }
                    match self.cursor.take("\",\" or \")\"")? {
                        (_, Token::Comma) => continue,
                        (_, Token::RightParen) => break,
                        (other_position, other) => {
                            return Err(error(
                                other_position,
                                format!("expected \",\" or \")\", found {other}"),
                            ));
                        }
                    }
                }
                let _ = position;
            }
            Some((position, other)) => {
                return Err(error(
                    position,
                    format!("expected a quoted service name or id(...), found {other}"),
                ));
            }
            None => {
                return Err(error(
                    self.cursor.end_position(),
                    "expected a service name, found the end",
                ));
            }
        }
        self.cursor.expect(Token::RightParen, "\")\"")?;
        let filter = self.block()?;
        Ok(Filter::Service {
            name,
            node_type,
            filter,
        })
    }

    fn edge(&mut self, _position: usize) -> Result<Filter, FilterError> {
        self.cursor.expect(Token::LeftParen, "\"(\" after edge")?;
        let from = self.string("the calling service's quoted name")?;
        self.cursor.expect(Token::Comma, "\",\"")?;
        let to = self.string("the called service's quoted name")?;
        self.cursor.expect(Token::RightParen, "\")\"")?;
        let filter = self.block()?;
        Ok(Filter::Edge { from, to, filter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyword(keyword: Keyword) -> Box<Filter> {
        Box::new(Filter::Keyword(keyword))
    }

    #[test]
    fn parses_the_forms_xray_documents() {
        let cases: Vec<(&str, Filter)> = vec![
            ("ok", Filter::Keyword(Keyword::Ok)),
            ("!ok", Filter::Not(keyword(Keyword::Ok))),
            (
                "error OR fault",
                Filter::Or(keyword(Keyword::Error), keyword(Keyword::Fault)),
            ),
            (
                "error throttle",
                Filter::And(keyword(Keyword::Error), keyword(Keyword::Throttle)),
            ),
            (
                "responsetime > 5",
                Filter::Number {
                    field: NumberField::ResponseTime,
                    op: Comparison::Gt,
                    value: 5.0,
                },
            ),
            (
                "http.status = 429",
                Filter::Number {
                    field: NumberField::HttpStatus,
                    op: Comparison::Eq,
                    value: 429.0,
                },
            ),
            (
                r#"http.url CONTAINS "/orders""#,
                Filter::Text {
                    field: TextField::HttpUrl,
                    op: TextOp::Contains,
                    value: "/orders".into(),
                },
            ),
            (
                r#"annotation.tier = "gold""#,
                Filter::Annotation {
                    key: "tier".into(),
                    op: TextOp::Compare(Comparison::Eq),
                    value: Literal::Text("gold".into()),
                },
            ),
            (
                "annotation.retries >= 2",
                Filter::Annotation {
                    key: "retries".into(),
                    op: TextOp::Compare(Comparison::Ge),
                    value: Literal::Number(2.0),
                },
            ),
            (
                r#"service("orders") { fault }"#,
                Filter::Service {
                    name: Some("orders".into()),
                    node_type: None,
                    filter: Some(keyword(Keyword::Fault)),
                },
            ),
            (
                r#"service(id(name: "DynamoDB", type: "AWS::DynamoDB::Table"))"#,
                Filter::Service {
                    name: Some("DynamoDB".into()),
                    node_type: Some("AWS::DynamoDB::Table".into()),
                    filter: None,
                },
            ),
            (
                r#"edge("orders", "payments") { error || fault }"#,
                Filter::Edge {
                    from: "orders".into(),
                    to: "payments".into(),
                    filter: Some(Box::new(Filter::Or(
                        keyword(Keyword::Error),
                        keyword(Keyword::Fault),
                    ))),
                },
            ),
            (
                r#"group.name = "payments" fault"#,
                Filter::And(
                    Box::new(Filter::Group("payments".into())),
                    keyword(Keyword::Fault),
                ),
            ),
            (
                "(ok AND root) OR !partial",
                Filter::Or(
                    Box::new(Filter::And(keyword(Keyword::Ok), keyword(Keyword::Root))),
                    Box::new(Filter::Not(keyword(Keyword::Partial))),
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("", 1, "empty"),
            ("responsetime >", 15, "expected a number"),
            ("responsetime > \"x\"", 16, "compares with a number"),
            ("ok AND", 7, "expected a filter"),
            ("http.url = 5", 12, "quoted string"),
            ("bogus", 1, "unknown keyword"),
            ("(ok", 4, "\")\""),
            ("service(orders)", 9, "quoted service name"),
            ("edge(\"a\")", 9, "\",\""),
            ("http.url = \"open", 12, "unterminated"),
            ("ok ) ", 4, "unexpected"),
            ("ok # x", 4, "unexpected character"),
            ("group.name CONTAINS \"x\"", 12, "takes \"=\""),
        ];
        for (text, position, needle) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.position, position, "{text}: {error}");
            assert!(error.message.contains(needle), "{text}: {error}");
        }
        let deep = format!("{}ok{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        assert!(parse(&"ok ".repeat(1000)).is_err());
    }
}
