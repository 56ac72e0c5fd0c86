//! The tenant: who owns a span, named by a request's `X-Scope-OrgID`
//! (Tempo's convention) and part of every object path the span is stored
//! under. This module is the one definition of what a tenant id may be.

use std::fmt;

/// The tenant used when a request names none (Tempo's convention).
pub const DEFAULT_TENANT: &str = "single-tenant";

/// The header (HTTP) or metadata key (gRPC) naming the tenant, lowercase as
/// HTTP/2 and tonic metadata require (Tempo's `X-Scope-OrgID`).
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// A tenant id that breaks the rule: 1-128 characters of `[A-Za-z0-9_.-]`,
/// neither `.` nor `..`. Holds the offending id, cut to 140 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant {0:?}: use 1-128 characters of [A-Za-z0-9_.-]")]
pub struct InvalidTenant(pub String);

/// Checks a tenant id before it becomes part of an object path.
pub fn validate_tenant(tenant: &str) -> Result<(), InvalidTenant> {
    let valid = !tenant.is_empty()
        && tenant.len() <= 128
        && tenant != "."
        && tenant != ".."
        && tenant
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(InvalidTenant(tenant.chars().take(140).collect()))
    }
}

/// A tenant id that keeps the rule of [`validate_tenant`]: safe as one
/// segment of an object path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// `tenant` if it keeps the rule.
    pub fn new(tenant: impl Into<String>) -> Result<Self, InvalidTenant> {
        let tenant = tenant.into();
        validate_tenant(&tenant)?;
        Ok(Self(tenant))
    }

    /// The tenant a request names in its `X-Scope-OrgID` value, the
    /// default tenant when it names none.
    pub fn from_header(value: Option<&str>) -> Result<Self, InvalidTenant> {
        match value {
            Some(value) => Self::new(value),
            None => Ok(Self::default()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self(DEFAULT_TENANT.to_string())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for good in ["single-tenant", "a", "team.a_b-1", &"x".repeat(128)] {
            assert_eq!(TenantId::new(good).unwrap().as_str(), good);
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(129)] {
            let error = TenantId::new(bad).unwrap_err();
            assert!(error.to_string().starts_with("invalid tenant"), "{error}");
        }
        assert_eq!(
            TenantId::from_header(None).unwrap().as_str(),
            DEFAULT_TENANT
        );
        assert_eq!(validate_tenant(&"y".repeat(200)).unwrap_err().0.len(), 140);
    }
}
