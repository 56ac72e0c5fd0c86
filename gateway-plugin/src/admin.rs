//! The reference stack's admin side, standing in for IAM.
//!
//! AWS lets only signed, authorized callers flush a stage's cache or
//! invoke a function as a service principal (`apigateway.amazonaws.com`).
//! Here one secret key plays that part: a request carrying it in
//! [`ADMIN_KEY_HEADER`] may flush the gateway's cache and may name its
//! principal to the runtime ([`crate::runtime::http::PRINCIPAL_HEADER`]);
//! any other client is anonymous and is refused both.

use std::sync::Arc;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use axum::http::HeaderMap;

/// The header carrying the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-tracelake-admin-key";

/// Shortest key accepted: a guessable key would open the admin side.
pub const MIN_KEY_CHARS: usize = 16;

/// The admin key; cheap to clone, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(Arc<str>);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// Why a chosen admin key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAdminKey {
    #[error("the admin key must have at least {MIN_KEY_CHARS} characters")]
    TooShort,
    #[error("the admin key must be printable ASCII without spaces")]
    NotPrintable,
}

impl AdminKey {
    /// A key of the caller's choosing (at least [`MIN_KEY_CHARS`]
    /// characters, no whitespace, so it fits in a header as given).
    pub fn new(value: &str) -> Result<Self, InvalidAdminKey> {
        if value.chars().count() < MIN_KEY_CHARS {
            return Err(InvalidAdminKey::TooShort);
        }
        if !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidAdminKey::NotPrintable);
        }
        Ok(Self(Arc::from(value)))
    }

    /// A random 256-bit key (64 hex digits) from the OS generator.
    pub fn generate() -> Self {
        let mut bytes = [0_u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(Arc::from(hex::encode(bytes)))
    }

    pub fn value(&self) -> &str {
        &self.0
    }

    /// Whether `headers` carry this key (compared in constant time).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(offered) = headers.get(ADMIN_KEY_HEADER) else {
            return false;
        };
        let (offered, expected) = (offered.as_bytes(), self.0.as_bytes());
        if offered.len() != expected.len() {
            return false;
        }
        offered
            .iter()
            .zip(expected)
            .fold(0_u8, |difference, (left, right)| {
                difference | (left ^ right)
            })
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_is_admitted() {
        let key = AdminKey::new("0123456789abcdef").unwrap();
        let mut headers = HeaderMap::new();
        assert!(!key.admits(&headers), "no header");
        headers.insert(ADMIN_KEY_HEADER, "0123456789abcdeX".parse().unwrap());
        assert!(!key.admits(&headers));
        headers.insert(ADMIN_KEY_HEADER, "0123456789abcdef0".parse().unwrap());
        assert!(!key.admits(&headers));
        headers.insert(ADMIN_KEY_HEADER, "0123456789abcdef".parse().unwrap());
        assert!(key.admits(&headers));
        assert_eq!(
            AdminKey::new("short").unwrap_err(),
            InvalidAdminKey::TooShort
        );
        assert_eq!(
            AdminKey::new("has a space in it, long enough").unwrap_err(),
            InvalidAdminKey::NotPrintable
        );
        let generated = AdminKey::generate();
        assert_eq!(generated.value().len(), 64);
        assert_ne!(generated, AdminKey::generate());
        assert!(!format!("{generated:?}").contains(generated.value()));
    }
}
