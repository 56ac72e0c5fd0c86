//! What the hand-written query parsers (X-Ray filter expressions, TraceQL)
//! share: a syntax error that names its position, and a cursor over
//! positioned tokens with a nesting limit.

use std::fmt;

/// A comparison of `=`, `!=`, `<`, `<=`, `>`, `>=` (TraceQL and X-Ray
/// filter expressions alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    pub fn holds(self, ordering: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::*;
        let Some(ordering) = ordering else {
            return false;
        };
        match self {
            Self::Eq => ordering == Equal,
            Self::Ne => ordering != Equal,
            Self::Lt => ordering == Less,
            Self::Le => ordering != Greater,
            Self::Gt => ordering == Greater,
            Self::Ge => ordering != Less,
        }
    }

    /// The comparison with its operands swapped (`1 < x` is `x > 1`).
    pub fn flipped(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            other => other,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// Why a query did not parse, and where (1-based character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The language, for the message: `filter expression`, `TraceQL`.
    pub language: &'static str,
    pub position: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} at position {}: {}",
            self.language, self.position, self.message
        )
    }
}

impl std::error::Error for SyntaxError {}

/// Tokens with their 1-based positions, read front to back.
#[derive(Debug)]
pub(crate) struct Cursor<T> {
    tokens: Vec<(usize, T)>,
    next: usize,
    /// The position just past the text, for "found the end" errors.
    end_position: usize,
    depth: usize,
    max_depth: usize,
    language: &'static str,
}

impl<T: Clone + PartialEq + fmt::Display> Cursor<T> {
    pub(crate) fn new(
        tokens: Vec<(usize, T)>,
        end_position: usize,
        max_depth: usize,
        language: &'static str,
    ) -> Self {
        Self {
            tokens,
            next: 0,
            end_position,
            depth: 0,
            max_depth,
            language,
        }
    }

    pub(crate) fn error(&self, position: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            language: self.language,
            position,
            message: message.into(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub(crate) fn end_position(&self) -> usize {
        self.end_position
    }

    pub(crate) fn peek(&self) -> Option<(usize, T)> {
        self.tokens.get(self.next).cloned()
    }

    /// Skips the token [`Cursor::peek`] showed.
    pub(crate) fn advance(&mut self) {
        self.next += 1;
    }

    pub(crate) fn take(&mut self, what: &str) -> Result<(usize, T), SyntaxError> {
        match self.tokens.get(self.next).cloned() {
            Some(found) => {
                self.next += 1;
                Ok(found)
            }
            None => Err(self.error(self.end_position, format!("expected {what}, found the end"))),
        }
    }

    pub(crate) fn expect(&mut self, expected: T, what: &str) -> Result<(), SyntaxError> {
        let (position, token) = self.take(what)?;
        if token == expected {
            Ok(())
        } else {
            Err(self.error(position, format!("expected {what}, found {token}")))
        }
    }

    /// One level deeper (parentheses, braces, negation); refused past the
    /// limit so a hostile query cannot exhaust the stack.
    pub(crate) fn enter(&mut self, position: usize) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(self.error(position, format!("nested deeper than {}", self.max_depth)));
        }
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// Reads a string that opens with the quote at `chars[open]` and ends at
/// the next unescaped one; with `escapes`, a backslash takes the next
/// character literally. The text and the index just past the closing
/// quote; `None` when the string never closes.
pub(crate) fn read_quoted(chars: &[char], open: usize, escapes: bool) -> Option<(String, usize)> {
    let quote = *chars.get(open)?;
    let mut value = String::new();
    let mut index = open + 1;
    loop {
        match chars.get(index) {
            None => return None,
            Some(c) if *c == quote => return Some((value, index + 1)),
            Some('\\') if escapes => {
                value.push(*chars.get(index + 1)?);
                index += 2;
            }
            Some(other) => {
                value.push(*other);
                index += 1;
            }
        }
    }
}
