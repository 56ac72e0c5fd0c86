//! SigV4 verification checked against AWS's own signer: requests signed by
//! the `aws-sigv4` crate (what the Rust AWS SDK sends) verify, and any
//! change to what was signed is refused.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use tracelake_auth::sigv4::{Authorization, SigV4Error};

const ACCESS_KEY_ID: &str = "AKIDTRACELAKETEST";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// A request as sent: method, path and query, headers, body.
struct Signed {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Signs a request with `aws-sigv4` at `at`, as the AWS SDK does.
fn sign_with_aws(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    at: SystemTime,
) -> Signed {
    let identity: Identity =
        Credentials::new(ACCESS_KEY_ID, SECRET, None, None, "tracelake-test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("xray")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("https://xray.example.com:2000{path_and_query}");
    let signable = SignableRequest::new(
        method,
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    for (name, value) in instructions.headers() {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Signed {
        method: method.parse().unwrap(),
        path_and_query: path_and_query.to_string(),
        headers: map,
        body: body.to_vec(),
    }
}

fn verify(request: &Signed, secret: &str, now: SystemTime) -> Result<(), SigV4Error> {
    let authorization = request
        .headers
        .get("authorization")
        .expect("aws-sigv4 adds Authorization")
        .to_str()
        .unwrap();
    let parsed = Authorization::parse(authorization)?;
    assert_eq!(parsed.access_key_id, ACCESS_KEY_ID);
    parsed.verify(
        secret,
        &request.method,
        &request.path_and_query,
        &request.headers,
        &request.body,
        now,
    )
}

/// Method, path and query, headers, body.
type Request = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
);

/// Requests of the shapes X-Ray clients send, and harder ones.
fn requests() -> Vec<Request> {
    let host = ("host", "xray.example.com:2000");
    let json = ("content-type", "application/json");
    vec![
        (
            "POST",
            "/TraceSegments",
            vec![host, json],
            br#"{"TraceSegmentDocuments":["{\"name\":\"a\"}"]}"#.to_vec(),
        ),
        (
            "POST",
            "/GetSamplingRules",
            vec![host, json],
            b"{}".to_vec(),
        ),
        (
            "POST",
            "/TraceGraph",
            vec![
                host,
                json,
                ("x-amz-user-agent", "aws-sdk-rust/1.0   os/linux"),
            ],
            br#"{"TraceIds":["1-5f84c7a1-e3b0c44298fc1c149afbf4c8"]}"#.to_vec(),
        ),
        // Unsorted and repeated query parameters, characters to encode.
        (
            "GET",
            "/Traces?b=2&a=1&a=0&c=x%20y&d=%2F%3D",
            vec![host],
            Vec::new(),
        ),
        // A path with characters the signer encodes twice.
        ("GET", "/a%20b/c:d/e$f", vec![host], Vec::new()),
        // Header values with inner runs of spaces, and a binary body.
        (
            "PUT",
            "/Telemetry",
            vec![host, ("x-custom", "  one   two  "), json],
            (0u8..=255).collect(),
        ),
    ]
}

#[test]
fn requests_aws_signs_verify() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    for (method, path, headers, body) in requests() {
        let signed = sign_with_aws(method, path, &headers, &body, now);
        verify(&signed, SECRET, now + Duration::from_secs(30))
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
    }
}

#[test]
fn any_change_to_what_aws_signed_is_refused() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    for (method, path, headers, body) in requests() {
        let signed = sign_with_aws(method, path, &headers, &body, now);
        assert_eq!(
            verify(&signed, "another-secret", now),
            Err(SigV4Error::Mismatch),
            "{method} {path}: the wrong secret"
        );
        let mut changed = sign_with_aws(method, path, &headers, &body, now);
        changed.body.push(b' ');
        assert_eq!(
            verify(&changed, SECRET, now),
            Err(SigV4Error::Mismatch),
            "{method} {path}: a changed body"
        );
        let mut changed = sign_with_aws(method, path, &headers, &body, now);
        changed.path_and_query = format!("{path}x");
        assert_eq!(
            verify(&changed, SECRET, now),
            Err(SigV4Error::Mismatch),
            "{method} {path}: a changed path"
        );
        let mut changed = sign_with_aws(method, path, &headers, &body, now);
        changed.headers.insert(
            "host",
            HeaderValue::from_static("attacker.example.com:2000"),
        );
        assert_eq!(
            verify(&changed, SECRET, now),
            Err(SigV4Error::Mismatch),
            "{method} {path}: a changed host"
        );
        // Replayed later than the allowed skew.
        assert!(
            matches!(
                verify(&signed, SECRET, now + Duration::from_secs(16 * 60)),
                Err(SigV4Error::Expired(_))
            ),
            "{method} {path}: replayed late"
        );
    }
}
