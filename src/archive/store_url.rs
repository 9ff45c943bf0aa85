//! Where a tier lives: `file:///abs/dir` or `s3://bucket/prefix` URLs, checked at start and
//! opened as an object store.

use std::sync::Arc;

use super::ArchiveError;

/// A parsed object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory.
    File(std::path::PathBuf),
    /// An S3-compatible bucket, with an optional key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
        prefix: String,
    },
}

/// Parses `file:///abs/dir`, an absolute path, or `s3://bucket[/prefix]`.
pub fn parse_store_url(url: &str) -> Result<StoreUrl, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "`{url}`: `{bucket}` is not a bucket name (3-63 of [a-z0-9.-])"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!(
                "`{url}`: `.` and `..` are not allowed in the prefix"
            ));
        }
        return Ok(StoreUrl::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        rest
    } else if url.contains("://") {
        return Err(format!(
            "`{url}`: unsupported scheme (file:///abs/dir or s3://bucket/prefix)"
        ));
    } else {
        url
    };
    let p = std::path::PathBuf::from(path);
    if !p.is_absolute() {
        return Err(format!(
            "`{url}`: the path must be absolute (file:///var/lib/tracesift/hot)"
        ));
    }
    Ok(StoreUrl::File(p))
}

/// Checks a URL and its store options without any I/O.
pub fn check_store(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    match parse_store_url(url)? {
        StoreUrl::File(_) if !options.is_empty() => Err(format!(
            "`{url}`: options are for s3:// URLs; a file:// tier takes none"
        )),
        StoreUrl::File(_) => Ok(()),
        StoreUrl::S3 { .. } => {
            let bad: Vec<&str> = options
                .keys()
                .filter(|k| k.parse::<object_store::aws::AmazonS3ConfigKey>().is_err())
                .map(|k| k.as_str())
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "unknown S3 option(s) {}: use object_store's keys (endpoint, region, access_key_id, secret_access_key, session_token, allow_http, virtual_hosted_style_request, ...)",
                    bad.join(", ")
                ))
            }
        }
    }
}

/// An opened store and, for local directories, where it is on disk (merges read local files
/// directly instead of copying them).
#[derive(Clone)]
pub struct OpenedStore {
    /// The store, rooted at the URL.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// The directory of a `file://` store.
    pub local: Option<std::path::PathBuf>,
}

/// Opens (creating the directory) the object store behind a URL.
pub fn open_store(url: &str) -> Result<Arc<dyn object_store::ObjectStore>, ArchiveError> {
    Ok(open_store_with(url, &Default::default())?.store)
}

/// Opens the object store behind a URL with its options (S3 keys; the rest from `AWS_*`).
pub fn open_store_with(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<OpenedStore, ArchiveError> {
    open(url, options, None)
}

/// [`open_store_with`] for the hot sink: the S3 client gives up on a request after 2 retries
/// within 10 s (instead of 10 within 3 min), so an object store that is down reaches the sink's
/// own retries and circuit breaker in seconds (which then pause the partitions and show on
/// `/readyz`) rather than hiding behind minutes of silent client retries.
pub fn open_sink_store(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<dyn object_store::ObjectStore>, ArchiveError> {
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    Ok(open(url, options, Some(retry))?.store)
}

fn open(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
    retry: Option<object_store::RetryConfig>,
) -> Result<OpenedStore, ArchiveError> {
    check_store(url, options).map_err(ArchiveError::Url)?;
    match parse_store_url(url).map_err(ArchiveError::Url)? {
        StoreUrl::File(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ArchiveError::Url(format!("cannot create {}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
            Ok(OpenedStore {
                store: Arc::new(fs),
                local: Some(dir),
            })
        }
        StoreUrl::S3 { bucket, prefix } => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
            for (k, v) in options {
                let key = k
                    .parse::<object_store::aws::AmazonS3ConfigKey>()
                    .map_err(|e| ArchiveError::Url(format!("{k}: {e}")))?;
                b = b.with_config(key, v);
            }
            if let Some(r) = retry {
                b = b.with_retry(r);
            }
            let s3: Arc<dyn object_store::ObjectStore> = Arc::new(b.build()?);
            let store: Arc<dyn object_store::ObjectStore> = if prefix.is_empty() {
                s3
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    object_store::path::Path::from(prefix),
                ))
            };
            Ok(OpenedStore { store, local: None })
        }
    }
}
