//! Who may call tracelake, and over what: API keys and their permissions
//! and tenant ([`keys`]), AWS Signature Version 4 verification for the
//! X-Ray API's SDK clients ([`sigv4`]), and TLS on the TCP listeners
//! ([`tls`]).
//!
//! ```text
//!  request --(tls: handshake off the accept loop)--> listener
//!      --> keys::check: Bearer / Basic token (SHA-256 compare) or SigV4
//!          (HMAC recomputed from the key's secret) --> Principal
//!      --> the route's declared Access (tracelake_routes) --> handler,
//!          with X-Scope-OrgID pinned to the key's tenant
//! ```
//!
//! A refusal answers in the listener's own protocol (AWS JSON on the X-Ray
//! API, OTLP's `google.rpc.Status` on OTLP/HTTP, gRPC status codes), which
//! is why this crate knows the collector's OTLP/HTTP error shape. The
//! binary only wires: it loads [`keys::Keys`] and [`tls::TlsConfig`] from
//! the config and puts [`keys::check`] in front of each listener.

pub mod keys;
pub mod sigv4;
pub mod tls;

pub use keys::{
    AuthConfig, GrpcAuth, KeyConfig, Keys, KeysError, Listener, Permission, Principal, RandomError,
    check, describe, new_access_key, new_token, token_sha256,
};
pub use tls::{TlsConfig, TlsError};
