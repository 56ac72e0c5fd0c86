//! Rule patterns compiled for the per-request decision: most patterns are
//! `*`, an exact value, or a prefix/suffix around one `*`, and those are
//! checked with a length test and one case-insensitive comparison instead
//! of the general matcher.

use crate::rules::wildcard_match;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    /// No wildcard: equal ignoring ASCII case.
    Exact(String),
    /// `abc*`.
    Prefix(String),
    /// `*abc`.
    Suffix(String),
    /// Anything else: the general matcher.
    General(String),
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
            0 => Self::Exact(pattern.to_string()),
            1 if pattern.ends_with('*') => Self::Prefix(pattern[..pattern.len() - 1].to_string()),
            1 if pattern.starts_with('*') => Self::Suffix(pattern[1..].to_string()),
            _ => Self::General(pattern.to_string()),
        }
    }

    #[inline]
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(expected) => {
                expected.len() == text.len() && expected.eq_ignore_ascii_case(text)
            }
            Self::Prefix(prefix) => {
                text.len() >= prefix.len()
                    && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            Self::Suffix(suffix) => {
                text.len() >= suffix.len()
                    && text.as_bytes()[text.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
            Self::General(pattern) => wildcard_match(pattern, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_patterns_agree_with_the_general_matcher() {
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
        ];
        for pattern in patterns {
            let compiled = Pattern::compile(pattern);
            for text in texts {
                assert_eq!(
                    compiled.matches(text),
                    wildcard_match(pattern, text),
                    "{pattern:?} ~ {text:?} ({compiled:?})"
                );
            }
        }
    }
}
