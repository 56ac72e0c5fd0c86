//! Opening the block store from the `storage` setting: the local data
//! directory (`file`, the embedded default) or an S3-compatible bucket
//! (`s3://bucket/prefix`).
//!
//! S3 settings are read as the AWS SDKs read them: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or
//! `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL`, and the instance, container
//! and web-identity credential providers; an [`S3Settings`] field set in
//! the config wins over the environment. Self-hosted stores (Garage,
//! MinIO, Ceph) want an endpoint and path-style requests, the default
//! here; AWS S3 takes either.
//!
//! Requests are retried with backoff (`object_store`'s retry policy: up to
//! 10 retries within 3 minutes); large blocks go up as multipart uploads
//! (`block::put_block`). Blocks are immutable and named by ULID,
//! so reads go through a bounded cache (`blob_cache`).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

/// S3 settings from the config; unset fields come from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// E.g. `http://127.0.0.1:3900` for a self-hosted store.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (not the key itself, so the
    /// config can be shared and printed).
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// `https://bucket.endpoint/` requests instead of path style
    /// (`https://endpoint/bucket/`).
    pub virtual_hosted_style: bool,
}

/// Where blocks are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// Under the local data directory.
    File,
    /// In `bucket`, under `prefix` (may be empty).
    S3 { bucket: String, prefix: String },
}

impl StoreLocation {
    /// Parses the `storage` setting: `file` or `s3://bucket[/prefix]`.
    pub fn parse(text: &str) -> Result<Self, InvalidStoreLocation> {
        if text == "file" {
            return Ok(Self::File);
        }
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err(InvalidStoreLocation::Scheme(text.to_string()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'.')
            });
        if !valid_bucket {
            return Err(InvalidStoreLocation::Bucket {
                text: text.to_string(),
                bucket: bucket.to_string(),
            });
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") {
            return Err(InvalidStoreLocation::Prefix(text.to_string()));
        }
        Ok(Self::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// Why a `storage` setting names no store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStoreLocation {
    #[error("storage {0:?}: use \"file\" or \"s3://bucket/prefix\"")]
    Scheme(String),
    #[error(
        "storage {text:?}: bucket {bucket:?} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"
    )]
    Bucket { text: String, bucket: String },
    #[error("storage {0:?}: the prefix may not hold . or ..")]
    Prefix(String),
}

/// Opens the store at `location`: block paths are relative to it.
pub fn open_store(
    location: &StoreLocation,
    data_dir: &std::path::Path,
    settings: &S3Settings,
) -> Result<Arc<dyn ObjectStore>> {
    let (store, prefix) = open_bucket(location, data_dir, settings)?;
    if prefix.is_empty() {
        return Ok(store);
    }
    Ok(Arc::new(PrefixStore::new(store, Path::from(prefix))))
}

/// The bucket (or data directory) itself, and the prefix under which the
/// block paths are, for readers that must see whole keys (a `PrefixStore`
/// answers `head` with the full key).
pub fn open_bucket(
    location: &StoreLocation,
    data_dir: &std::path::Path,
    settings: &S3Settings,
) -> Result<(Arc<dyn ObjectStore>, String)> {
    let (bucket, prefix) = match location {
        StoreLocation::File => return Ok((crate::local_store(data_dir)?, String::new())),
        StoreLocation::S3 { bucket, prefix } => (bucket, prefix),
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(settings.virtual_hosted_style);
    if std::env::var_os("AWS_REGION").is_none()
        && let Ok(region) = std::env::var("AWS_DEFAULT_REGION")
    {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    } else if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        builder = builder.with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(access_key_id) = &settings.access_key_id {
        builder = builder.with_access_key_id(access_key_id);
    }
    if let Some(path) = &settings.secret_access_key_file {
        let secret = std::fs::read_to_string(path).map_err(|source| StorageError::WalIo {
            path: path.clone(),
            source,
        })?;
        builder = builder.with_secret_access_key(secret.trim());
    }
    let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
    Ok((s3, prefix.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_storage_locations() {
        assert_eq!(StoreLocation::parse("file"), Ok(StoreLocation::File));
        assert_eq!(
            StoreLocation::parse("s3://traces/prod/eu"),
            Ok(StoreLocation::S3 {
                bucket: "traces".into(),
                prefix: "prod/eu".into()
            })
        );
        assert_eq!(
            StoreLocation::parse("s3://traces"),
            Ok(StoreLocation::S3 {
                bucket: "traces".into(),
                prefix: String::new()
            })
        );
        for bad in [
            "s4://x",
            "s3://",
            "s3://UPPER",
            "s3://ok-bucket/../x",
            "gs://b",
        ] {
            assert!(StoreLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
