//! Rule patterns compiled for the per-request decision: most patterns are
//! `*`, an exact value, or a prefix/suffix around one `*`, and those are
//! checked with a length test and one case-insensitive comparison instead
//! of the general matcher.
//!
//! Before that comparison, a one-word filter: the last (up to) 8 bytes of
//! the literal, compared as a `u64` against the same window of the text
//! with bit 0x20 forced on both sides. Letters that differ only in case
//! agree under it, so it never rejects a match; it rejects almost every
//! non-match in one instruction, because rules sharing a path usually
//! differ at the end of their literal (`/api/v1/orders*` vs `/api/v1/carts*`).

use crate::rules::wildcard_match;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    /// No wildcard: equal ignoring ASCII case.
    Exact(Literal),
    /// `abc*`.
    Prefix(Literal),
    /// `*abc`.
    Suffix(Literal),
    /// Anything else: the general matcher.
    General(String),
}

/// A literal and its last-word filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    text: String,
    /// The literal's last `width` bytes, 0x20 set in each.
    key: u64,
    width: usize,
}

/// `bytes[end - width..end]` as a little-endian word, 0x20 set in each byte.
#[inline]
fn word_before(bytes: &[u8], end: usize, width: usize) -> u64 {
    const CASE_BITS: u64 = 0x2020_2020_2020_2020;
    if width == 8 {
        // The common case: a fixed-size load, no copy loop.
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[end - 8..end]);
        return u64::from_le_bytes(word) | CASE_BITS;
    }
    let mut word = [0u8; 8];
    word[..width].copy_from_slice(&bytes[end - width..end]);
    u64::from_le_bytes(word) | (CASE_BITS & (u64::MAX >> (64 - 8 * width.max(1))))
}

impl Literal {
    fn new(text: &str) -> Self {
        let width = text.len().min(8);
        Self {
            text: text.to_string(),
            key: if width == 0 {
                0
            } else {
                word_before(text.as_bytes(), text.len(), width)
            },
            width,
        }
    }

    /// Whether `text[at..at + len]` equals the literal, ignoring ASCII case.
    #[inline]
    fn matches_at(&self, text: &[u8], at: usize) -> bool {
        let end = at + self.text.len();
        if self.width > 0 && word_before(text, end, self.width) != self.key {
            return false;
        }
        text[at..end].eq_ignore_ascii_case(self.text.as_bytes())
    }
}

impl Pattern {
    pub fn compile(pattern: &str) -> Self {
        if pattern.bytes().all(|byte| byte == b'*') && !pattern.is_empty() {
            return Self::Any;
        }
        let wildcards = pattern
            .bytes()
            .filter(|byte| matches!(byte, b'*' | b'?'))
            .count();
        match wildcards {
            0 => Self::Exact(Literal::new(pattern)),
            1 if pattern.ends_with('*') => {
                Self::Prefix(Literal::new(&pattern[..pattern.len() - 1]))
            }
            1 if pattern.starts_with('*') => Self::Suffix(Literal::new(&pattern[1..])),
            _ => Self::General(pattern.to_string()),
        }
    }

    #[inline]
    pub fn matches(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        match self {
            Self::Any => true,
            Self::Exact(literal) => {
                literal.text.len() == bytes.len() && literal.matches_at(bytes, 0)
            }
            Self::Prefix(literal) => {
                bytes.len() >= literal.text.len() && literal.matches_at(bytes, 0)
            }
            Self::Suffix(literal) => {
                bytes.len() >= literal.text.len()
                    && literal.matches_at(bytes, bytes.len() - literal.text.len())
            }
            Self::General(pattern) => wildcard_match(pattern, text),
        }
    }
}

/// A pattern's filter in 16 bytes, so a decision scans rules' URL filters
/// in a few cache lines before touching any rule: `false` means the
/// pattern cannot match; `true` means check the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickFilter {
    /// 0 any, 1 exact, 2 prefix, 3 suffix, 4 general.
    kind: u8,
    width: u8,
    len: u32,
    key: u64,
}

impl QuickFilter {
    #[inline]
    pub fn may_match(&self, text: &[u8]) -> bool {
        let len = self.len as usize;
        let end = match self.kind {
            1 if text.len() == len => len,
            2 if text.len() >= len => len,
            3 if text.len() >= len => text.len(),
            0 | 4 => return true,
            _ => return false,
        };
        self.width == 0 || word_before(text, end, self.width as usize) == self.key
    }
}

impl Pattern {
    /// For a prefix or exact literal of 8 bytes or more: its length and
    /// last-word key, by which rules are indexed (see `client`).
    pub fn literal_key(&self) -> Option<(usize, u64)> {
        match self {
            Self::Prefix(literal) | Self::Exact(literal) if literal.width == 8 => {
                Some((literal.text.len(), literal.key))
            }
            _ => None,
        }
    }

    /// The key a text has at `end` (compare with [`Self::literal_key`]).
    pub fn text_key(text: &[u8], end: usize) -> u64 {
        word_before(text, end, 8)
    }

    pub fn quick_filter(&self) -> QuickFilter {
        let (kind, literal) = match self {
            Self::Any => (0, None),
            Self::Exact(literal) => (1, Some(literal)),
            Self::Prefix(literal) => (2, Some(literal)),
            Self::Suffix(literal) => (3, Some(literal)),
            Self::General(_) => (4, None),
        };
        QuickFilter {
            kind,
            width: literal.map(|literal| literal.width as u8).unwrap_or(0),
            len: literal
                .map(|literal| literal.text.len() as u32)
                .unwrap_or(0),
            key: literal.map(|literal| literal.key).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_patterns_agree_with_the_general_matcher() {
        let long = "/api/v2/resource-98/items/42/and/a/path/longer/than/sixty-four/bytes/end";
        let patterns = [
            "*",
            "**",
            "",
            "/health",
            "/orders/*",
            "*.example.com",
            "a*b",
            "?et",
            "GET",
            "a?c*",
            "/API/V2/Resource-98/*",
            "*/BYTES/END",
            long,
            "/api/v2/resource-97/*",
        ];
        let texts = [
            "",
            "/health",
            "/HEALTH",
            "/orders/1",
            "/orders",
            "api.example.com",
            "EXAMPLE.COM",
            "ab",
            "aXb",
            "get",
            "GET",
            "abc",
            "abcd",
            long,
            "/api/v2/resource-98/items",
            "/api/v2/resource-9",
        ];
        for pattern in patterns {
            let compiled = Pattern::compile(pattern);
            for text in texts {
                assert_eq!(
                    compiled.matches(text),
                    wildcard_match(pattern, text),
                    "{pattern:?} ~ {text:?} ({compiled:?})"
                );
                let passes_filter = compiled.quick_filter().may_match(text.as_bytes());
                if compiled.matches(text) {
                    assert!(
                        passes_filter,
                        "the filter rejected a match: {pattern:?} ~ {text:?}"
                    );
                }
            }
        }
    }
}
