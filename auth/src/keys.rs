//! API keys and tenancy: with any key configured (`[[auth.keys]]`), every
//! request on the TCP listeners must carry one.
//!
//! A key belongs to one tenant and holds permissions:
//! - `ingest`: send spans and metrics (OTLP, PutTraceSegments,
//!   PutTelemetryRecords) and read sampling rules and targets, as SDKs do;
//! - `query`: every read API (Tempo, Jaeger, native, SQL, the X-Ray query
//!   operations, the tenant's series on `/metrics`);
//! - `admin`: change sampling rules and groups, and read tracelake's own
//!   process-wide counters on `/metrics` (they sum over every tenant).
//!
//! A request presents its key as
//! - `Authorization: Bearer <token>` (OTel exporters' `headers`, Grafana's
//!   custom headers, Prometheus' `authorization`), on HTTP and gRPC alike;
//! - `Authorization: Basic base64(<any user>:<token>)` (Grafana's and
//!   Prometheus' basic auth);
//! - a SigV4 signature (`AWS4-HMAC-SHA256`; boto3, the AWS SDKs, the X-Ray
//!   daemon) with the key's `access_key_id` and secret, on the X-Ray API.
//!
//! Tokens are 256 random bits (`tracelake new-key`) and stored only as
//! their SHA-256 (a slow password hash adds nothing to a random token).
//! SigV4 cannot work from a hash: the server recomputes an HMAC keyed by
//! the secret, so a key that accepts SigV4 reads its secret from its own
//! file, like TLS keys, not from the config.
//!
//! The tenant is the key's: a request naming another one (`X-Scope-OrgID`,
//! `?tenant=` on `/metrics`) gets 403; one naming none gets the key's
//! tenant set in `X-Scope-OrgID`, so the APIs behind read the tenant as
//! they do without auth. No key or an unknown one: 401 (gRPC
//! `UNAUTHENTICATED`); a key without the permission a route needs: 403
//! (`PERMISSION_DENIED`). Open without a key: `/ready`, `/api/echo` and
//! the web UI's page (its API calls need one). The X-Ray daemon's UDP
//! protocol carries no credentials: datagrams go to `[xray] udp_tenant`,
//! so keep that listener on loopback. With the same trust, X-Ray SDKs'
//! sampling polls (`GetSamplingRules`, `SamplingTargets`, which SDKs send
//! unsigned to the daemon's address) without an `Authorization` header are
//! answered for `udp_tenant`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracelake_model::TENANT_HEADER;

use tracelake_routes::{Access, Matcher};

use crate::sigv4;

pub use tracelake_routes::Permission;

/// `[auth]`: no keys, no authentication (the tenant is `X-Scope-OrgID`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub keys: Vec<KeyConfig>,
}

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs; unique.
    pub name: String,
    pub tenant: String,
    pub permissions: Vec<Permission>,
    /// Hex SHA-256 of the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// SigV4 access key id (X-Ray API clients that sign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// File holding the SigV4 secret access key (required with `access_key_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
}

/// Who a request is: its key's name, tenant and permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key: String,
    pub tenant: String,
    pub permissions: Vec<Permission>,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// Why `[auth]` was refused; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("auth key {0:?}: two keys have this name")]
    DuplicateName(String),
    #[error("auth key {0:?}")]
    Tenant(String, #[source] tracelake_model::InvalidTenant),
    #[error("auth key {0:?}: permissions is empty (any of ingest, query, admin)")]
    NoPermissions(String),
    #[error("auth key {0:?}: needs token_sha256, access_key_id or both")]
    NoCredential(String),
    #[error("auth key {0:?}: token_sha256 is not 64 hex digits")]
    BadTokenHash(String),
    #[error("auth key {0:?}: another key has the same token")]
    DuplicateToken(String),
    #[error("auth key {key:?}: reading {}", path.display())]
    SecretFile {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth key {key:?}: {} is empty", path.display())]
    EmptySecret { key: String, path: PathBuf },
    #[error("auth key {key:?}: another key has access key id {id}")]
    DuplicateAccessKey { key: String, id: String },
    #[error("auth key {0:?}: access_key_id needs secret_access_key_file")]
    AccessKeyWithoutSecret(String),
    #[error("auth key {0:?}: secret_access_key_file needs access_key_id")]
    SecretWithoutAccessKey(String),
}

/// The system's random source failed (making a token or key).
#[derive(Debug, thiserror::Error)]
#[error("random bytes: {0}")]
pub struct RandomError(getrandom::Error);

/// The configured keys, looked up by token hash or access key id.
#[derive(Debug)]
pub struct Keys {
    by_token_hash: HashMap<[u8; 32], Arc<Principal>>,
    by_access_key: HashMap<String, (String, Arc<Principal>)>,
    /// The X-Ray daemon protocol's tenant, for unsigned sampling polls.
    udp_tenant: String,
}

impl Keys {
    /// The keys of `config`, read and checked; `None` when there are none.
    pub fn load(config: &AuthConfig, udp_tenant: &str) -> Result<Option<Arc<Keys>>, KeysError> {
        if config.keys.is_empty() {
            return Ok(None);
        }
        let mut keys = Keys {
            by_token_hash: HashMap::new(),
            by_access_key: HashMap::new(),
            udp_tenant: udp_tenant.to_string(),
        };
        let mut names = std::collections::HashSet::new();
        for key in &config.keys {
            let name = || key.name.clone();
            if !names.insert(key.name.as_str()) {
                return Err(KeysError::DuplicateName(name()));
            }
            tracelake_model::validate_tenant(&key.tenant)
                .map_err(|error| KeysError::Tenant(name(), error))?;
            if key.permissions.is_empty() {
                return Err(KeysError::NoPermissions(name()));
            }
            let principal = Arc::new(Principal {
                key: key.name.clone(),
                tenant: key.tenant.clone(),
                permissions: key.permissions.clone(),
            });
            if key.token_sha256.is_none() && key.access_key_id.is_none() {
                return Err(KeysError::NoCredential(name()));
            }
            if let Some(hash) = &key.token_sha256 {
                let hash: [u8; 32] = hex::decode(hash.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| KeysError::BadTokenHash(name()))?;
                if keys
                    .by_token_hash
                    .insert(hash, Arc::clone(&principal))
                    .is_some()
                {
                    return Err(KeysError::DuplicateToken(name()));
                }
            }
            match (&key.access_key_id, &key.secret_access_key_file) {
                (Some(id), Some(file)) => {
                    let secret = std::fs::read_to_string(file)
                        .map_err(|source| KeysError::SecretFile {
                            key: name(),
                            path: file.clone(),
                            source,
                        })?
                        .trim()
                        .to_string();
                    if secret.is_empty() {
                        return Err(KeysError::EmptySecret {
                            key: name(),
                            path: file.clone(),
                        });
                    }
                    if keys
                        .by_access_key
                        .insert(id.clone(), (secret, Arc::clone(&principal)))
                        .is_some()
                    {
                        return Err(KeysError::DuplicateAccessKey {
                            key: name(),
                            id: id.clone(),
                        });
                    }
                }
                (Some(_), None) => return Err(KeysError::AccessKeyWithoutSecret(name())),
                (None, Some(_)) => return Err(KeysError::SecretWithoutAccessKey(name())),
                (None, None) => {}
            }
        }
        Ok(Some(Arc::new(keys)))
    }

    fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_token_hash.get(&hash).cloned()
    }

    /// The key of a bearer or basic `Authorization` (what gRPC and most
    /// HTTP clients send); `Err` is the 401 message.
    fn authenticate_token(&self, headers: &HeaderMap) -> Result<Arc<Principal>, String> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(
                "no API key: send Authorization: Bearer <token> (or basic auth with the token as password)"
                    .into(),
            );
        };
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not ascii".to_string())?;
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            credentials.trim().to_string()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .map_err(|_| "basic credentials are not base64".to_string())?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| "basic credentials are not UTF-8".to_string())?;
            match decoded.split_once(':') {
                Some((_user, password)) => password.to_string(),
                None => return Err("basic credentials have no password".into()),
            }
        } else if sigv4::is_sigv4(value) {
            return Err("SigV4 signatures are accepted on the X-Ray API only".into());
        } else {
            return Err(format!(
                "unsupported Authorization scheme {scheme:?}: use Bearer or Basic"
            ));
        };
        self.by_token(&token)
            .ok_or_else(|| "the API key is not valid".to_string())
    }
}

/// Which listener a request came in on: each shapes its errors its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    XrayApi,
    OtlpHttp,
    Http,
}

impl Listener {
    /// The name of its `listening` line.
    pub fn name(self) -> &'static str {
        match self {
            Listener::XrayApi => "xray-api",
            Listener::OtlpHttp => "otlp-http",
            Listener::Http => "http",
        }
    }
}

/// `access` as `serve --print-routes` shows it: `open`, or the permissions
/// separated by `|`, led by `daemon` where no key at all is the daemon
/// protocol's tenant.
pub fn describe(access: Access) -> String {
    let names = |permissions: &[Permission]| {
        permissions
            .iter()
            .map(|permission| format!("{permission:?}").to_lowercase())
            .collect::<Vec<_>>()
    };
    match access {
        Access::Open => "open".to_string(),
        Access::AnyOf(permissions) => names(permissions).join("|"),
        Access::AnyOfOrDaemon(permissions) => {
            let mut all = vec!["daemon".to_string()];
            all.extend(names(permissions));
            all.join("|")
        }
    }
}

/// The answer to a path no route of `listener` declared: it is not served
/// to key holders, whether or not a router would have had it (deny by
/// default: a route is reachable only once its crate says who may call it).
fn undeclared(listener: Listener, headers: &HeaderMap, path: &str) -> Response {
    match listener {
        Listener::XrayApi => tracelake_aws_json::AwsError::unknown_operation(path).into_response(),
        Listener::OtlpHttp => tracelake_collector::otlp_http::error_response(
            headers,
            StatusCode::NOT_FOUND,
            tonic::Code::Unimplemented,
            format!("no OTLP route at {path}"),
        ),
        Listener::Http => (StatusCode::NOT_FOUND, format!("no route at {path}")).into_response(),
    }
}

fn refusal(
    listener: Listener,
    headers: &HeaderMap,
    status: StatusCode,
    message: String,
) -> Response {
    let mut response = match listener {
        Listener::XrayApi => tracelake_aws_json::AwsError {
            status,
            error_type: if status == StatusCode::UNAUTHORIZED {
                "UnrecognizedClientException"
            } else {
                "AccessDeniedException"
            },
            message,
        }
        .into_response(),
        Listener::OtlpHttp => tracelake_collector::otlp_http::error_response(
            headers,
            status,
            if status == StatusCode::UNAUTHORIZED {
                tonic::Code::Unauthenticated
            } else {
                tonic::Code::PermissionDenied
            },
            message,
        ),
        Listener::Http => (status, message).into_response(),
    };
    if status == StatusCode::UNAUTHORIZED && listener != Listener::XrayApi {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tracelake\""),
        );
    }
    response
}

/// Pins the request to `principal`'s tenant; `Err` is the 403 message.
fn scope_to_tenant(headers: &mut HeaderMap, principal: &Principal) -> Result<(), String> {
    if let Some(named) = headers.get(TENANT_HEADER)
        && named.as_bytes() != principal.tenant.as_bytes()
    {
        return Err(format!(
            "API key {:?} is for tenant {:?}, not {:?}",
            principal.key,
            principal.tenant,
            String::from_utf8_lossy(named.as_bytes())
        ));
    }
    let value = HeaderValue::from_str(&principal.tenant)
        .map_err(|_| "the key's tenant is not a header value".to_string())?;
    headers.insert(TENANT_HEADER, value);
    Ok(())
}

/// `?tenant=` (the native API and `/metrics` take one) may only name the
/// key's own tenant; `Err` is the 403 message.
fn check_tenant_parameter(uri: &axum::http::Uri, principal: &Principal) -> Result<(), String> {
    let Ok(axum::extract::Query(params)) =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
    else {
        // Malformed queries are the route's to refuse, unless one might
        // name a tenant the route would read differently.
        return match uri.query() {
            Some(query) if query.to_ascii_lowercase().contains("tenant") => {
                Err("the query string is malformed and names a tenant".into())
            }
            _ => Ok(()),
        };
    };
    match params.get("tenant") {
        Some(named) if !named.is_empty() && *named != principal.tenant => Err(format!(
            "API key {:?} is for tenant {:?}, not {named:?}",
            principal.key, principal.tenant
        )),
        _ => Ok(()),
    }
}

/// The axum middleware of one listener: finds the access the route
/// declared (refusing a path none declared), authenticates, checks the
/// permission, pins the tenant and hands the [`Principal`] on as a request
/// extension.
pub async fn check(
    keys: Arc<Keys>,
    declared: Arc<Matcher>,
    listener: Listener,
    request: Request,
    next: Next,
) -> Response {
    let Some(access) = declared.access(request.uri().path()) else {
        return undeclared(listener, request.headers(), request.uri().path());
    };
    let permissions = match access {
        Access::Open => return next.run(request).await,
        Access::AnyOf(permissions) => permissions,
        Access::AnyOfOrDaemon(permissions) => {
            if request.headers().contains_key(header::AUTHORIZATION) {
                permissions
            } else {
                let mut request = request;
                let udp = Principal {
                    key: "(none: X-Ray daemon protocol)".into(),
                    tenant: keys.udp_tenant.clone(),
                    permissions: Vec::new(),
                };
                if let Err(message) = scope_to_tenant(request.headers_mut(), &udp) {
                    let message = format!("{message}; a key is needed to name a tenant");
                    return refusal(
                        listener,
                        request.headers(),
                        StatusCode::UNAUTHORIZED,
                        message,
                    );
                }
                return next.run(request).await;
            }
        }
    };
    let is_sigv4 = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(sigv4::is_sigv4);
    let (principal, mut request) = if is_sigv4 && listener == Listener::XrayApi {
        match authenticate_sigv4(&keys, request).await {
            Ok(authenticated) => authenticated,
            Err(refused) => return refused,
        }
    } else {
        match keys.authenticate_token(request.headers()) {
            Ok(principal) => (principal, request),
            Err(message) => {
                return refusal(
                    listener,
                    request.headers(),
                    StatusCode::UNAUTHORIZED,
                    message,
                );
            }
        }
    };
    if !permissions
        .iter()
        .any(|&permission| principal.may(permission))
    {
        let message = format!(
            "API key {:?} may not do this (needs {})",
            principal.key,
            permissions
                .iter()
                .map(|permission| format!("{permission:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(" or ")
        );
        return refusal(listener, request.headers(), StatusCode::FORBIDDEN, message);
    }
    if let Err(message) = scope_to_tenant(request.headers_mut(), &principal)
        .and_then(|()| check_tenant_parameter(request.uri(), &principal))
    {
        return refusal(listener, request.headers(), StatusCode::FORBIDDEN, message);
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Reads the body (the signature covers it), verifies the signature and
/// gives the request back whole.
async fn authenticate_sigv4(
    keys: &Keys,
    request: Request,
) -> Result<(Arc<Principal>, Request), Response> {
    let unauthorized = |headers: &HeaderMap, message: String| {
        refusal(
            Listener::XrayApi,
            headers,
            StatusCode::UNAUTHORIZED,
            message,
        )
    };
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let parsed = sigv4::Authorization::parse(authorization)
        .map_err(|error| unauthorized(&parts.headers, error.to_string()))?;
    let Some((secret, principal)) = keys.by_access_key.get(&parsed.access_key_id) else {
        return Err(unauthorized(
            &parts.headers,
            format!("unknown access key id {:?}", parsed.access_key_id),
        ));
    };
    let bytes = axum::body::to_bytes(body, tracelake_aws_json::MAX_REQUEST_BYTES)
        .await
        .map_err(|error| {
            tracelake_aws_json::AwsError::invalid_request(format!(
                "reading the request body: {error}"
            ))
            .into_response()
        })?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|value| value.as_str())
        .unwrap_or("/");
    // HTTP/2 carries the host as `:authority`, which the client signed as `host`.
    let mut signed_headers = std::borrow::Cow::Borrowed(&parts.headers);
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        signed_headers.to_mut().insert(header::HOST, host);
    }
    parsed
        .verify(
            secret,
            &parts.method,
            path_and_query,
            &signed_headers,
            &bytes,
            SystemTime::now(),
        )
        .map_err(|error| unauthorized(&parts.headers, error.to_string()))?;
    Ok((
        Arc::clone(principal),
        Request::from_parts(parts, Body::from(bytes)),
    ))
}

/// The gRPC side (OTLP exports, all `ingest`): a tonic interceptor that
/// authenticates the `authorization` metadata and pins the tenant.
#[derive(Debug, Clone)]
pub struct GrpcAuth {
    pub keys: Option<Arc<Keys>>,
}

impl tonic::service::Interceptor for GrpcAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(keys) = &self.keys else {
            return Ok(request);
        };
        let mut headers = std::mem::take(request.metadata_mut()).into_headers();
        let principal = keys
            .authenticate_token(&headers)
            .map_err(tonic::Status::unauthenticated)?;
        if !principal.may(Permission::Ingest) {
            return Err(tonic::Status::permission_denied(format!(
                "API key {:?} may not ingest",
                principal.key
            )));
        }
        scope_to_tenant(&mut headers, &principal).map_err(tonic::Status::permission_denied)?;
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        Ok(request)
    }
}

/// A fresh bearer token: `tlk_` and 256 random bits, base64url.
pub fn new_token() -> Result<String, RandomError> {
    Ok(format!("tlk_{}", random_base64(32)?))
}

/// A fresh SigV4 key pair: an access key id and a 40-character secret.
pub fn new_access_key() -> Result<(String, String), RandomError> {
    let mut id_bytes = [0u8; 12];
    getrandom::fill(&mut id_bytes).map_err(RandomError)?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = id_bytes
        .iter()
        .map(|byte| ALPHABET[usize::from(byte % 32)] as char)
        .collect();
    Ok((format!("TLAK{id}"), random_base64(30)?))
}

fn random_base64(bytes: usize) -> Result<String, RandomError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(RandomError)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

/// Hex SHA-256 of a token, as `token_sha256` holds it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Arc<Keys> {
        Keys::load(
            &AuthConfig {
                keys: vec![
                    KeyConfig {
                        name: "a-reader".into(),
                        tenant: "team-a".into(),
                        permissions: vec![Permission::Query],
                        token_sha256: Some(token_sha256("token-a")),
                        access_key_id: None,
                        secret_access_key_file: None,
                    },
                    KeyConfig {
                        name: "b-writer".into(),
                        tenant: "team-b".into(),
                        permissions: vec![Permission::Ingest],
                        token_sha256: Some(token_sha256("token-b")),
                        access_key_id: None,
                        secret_access_key_file: None,
                    },
                ],
            },
            "local",
        )
        .unwrap()
        .expect("keys configured")
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_tokens_find_their_key_and_others_do_not() {
        let keys = keys();
        let bearer = keys.authenticate_token(&headers("Bearer token-a")).unwrap();
        assert_eq!(
            (bearer.key.as_str(), bearer.tenant.as_str()),
            ("a-reader", "team-a")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("team-b:token-b");
        let basic = keys
            .authenticate_token(&headers(&format!("Basic {basic}")))
            .unwrap();
        assert_eq!(basic.key, "b-writer");
        for wrong in [
            "Bearer token-c",
            "Bearer ",
            "Basic !!",
            "Digest x",
            "token-a",
        ] {
            assert!(keys.authenticate_token(&headers(wrong)).is_err(), "{wrong}");
        }
        assert!(keys.authenticate_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn a_request_is_pinned_to_its_keys_tenant_and_may_not_name_another() {
        let keys = keys();
        let principal = keys.authenticate_token(&headers("Bearer token-a")).unwrap();
        let mut unnamed = HeaderMap::new();
        scope_to_tenant(&mut unnamed, &principal).unwrap();
        assert_eq!(unnamed[TENANT_HEADER], "team-a");
        let mut other = HeaderMap::new();
        other.insert(TENANT_HEADER, HeaderValue::from_static("team-b"));
        let error = scope_to_tenant(&mut other, &principal).unwrap_err();
        assert!(error.contains("team-b"), "{error}");
    }

    #[test]
    fn declared_access_is_printed_as_the_route_walk_reads_it() {
        use Permission::*;
        assert_eq!(describe(Access::Open), "open");
        assert_eq!(describe(Access::AnyOf(&[Query, Admin])), "query|admin");
        assert_eq!(
            describe(Access::AnyOfOrDaemon(&[Ingest, Query, Admin])),
            "daemon|ingest|query|admin"
        );
    }

    #[test]
    fn bad_key_configurations_are_refused_with_the_keys_name() {
        let key = |name: &str, hash: Option<String>| KeyConfig {
            name: name.into(),
            tenant: "t".into(),
            permissions: vec![Permission::Query],
            token_sha256: hash,
            access_key_id: None,
            secret_access_key_file: None,
        };
        for (keys, reason) in [
            (vec![key("k", None)], "needs token_sha256"),
            (vec![key("k", Some("abc".into()))], "64 hex"),
            (
                vec![
                    key("k", Some(token_sha256("x"))),
                    key("k", Some(token_sha256("y"))),
                ],
                "two keys",
            ),
            (
                vec![
                    key("k", Some(token_sha256("x"))),
                    key("j", Some(token_sha256("x"))),
                ],
                "same token",
            ),
        ] {
            let error = Keys::load(&AuthConfig { keys }, "local").unwrap_err();
            assert!(format!("{error:#}").contains(reason), "{error:#}");
        }
    }

    #[test]
    fn new_tokens_are_distinct_and_hash_to_what_the_config_holds() {
        let (first, second) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(first, second);
        assert!(first.starts_with("tlk_") && first.len() == 4 + 43);
        assert_eq!(token_sha256(&first).len(), 64);
        let (id, secret) = new_access_key().unwrap();
        assert!(id.starts_with("TLAK") && id.len() == 16 && secret.len() == 40);
    }
}
