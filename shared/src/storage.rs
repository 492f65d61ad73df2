//! Export files in object storage: local disk (default), S3 or MinIO, through `object_store`.
//!
//! Uploads go through `object_store`'s multipart writer, so nothing appears under the final key
//! until the upload completes, and an aborted upload leaves nothing behind. Downloads are
//! short-lived signed URLs: pre-signed GETs for S3, HMAC-signed API URLs for local disk.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use object_store::{
    Attribute, Attributes, BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    buffered::BufWriter,
    local::LocalFileSystem,
    path::Path,
    signer::{Method, Signer},
};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use crate::{config::StorageConfig, signing::UrlSigner};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid object key {0:?}")]
    Key(String),
}

/// Part size on local disk. S3 needs parts of at least 5 MiB (`UPLOAD_PART_SIZE_BYTES`); a
/// file needs no such minimum, and smaller parts keep each export's buffers small.
const LOCAL_PART_SIZE: usize = 1024 * 1024;

#[derive(Debug, Clone)]
enum Backend {
    Local { root: std::path::PathBuf },
    S3(Arc<AmazonS3>),
}

/// The export file store.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    part_size: usize,
}

impl Storage {
    /// `part_size` is the S3 multipart part size; local disk writes in parts of 1 MiB.
    pub fn new(config: &StorageConfig, part_size: usize) -> Result<Self, StorageError> {
        match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root)?;
                let store = LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true);
                let backend = Backend::Local { root: root.into() };
                Ok(Self { store: Arc::new(store), backend, part_size: LOCAL_PART_SIZE })
            }
            StorageConfig::S3(s3) => {
                let retry = RetryConfig {
                    max_retries: s3.max_retries,
                    retry_timeout: s3.retry_timeout,
                    backoff: BackoffConfig::default(),
                };
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_retry(retry);
                if let Some(endpoint) = &s3.endpoint {
                    builder =
                        builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
                }
                if let Some(id) = &s3.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                let s3 = Arc::new(builder.build()?);
                Ok(Self { store: s3.clone(), backend: Backend::S3(s3), part_size })
            }
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// A writer for a new object at `key`; see [`Upload`]. On S3 the object is served with
    /// `content_type` (local files get theirs from the API's download route).
    pub fn upload(&self, key: &str, content_type: &str) -> Result<Upload, StorageError> {
        let path = parse_key(key)?;
        // Parts in flight: two overlap network round trips on S3; local disk gains nothing from
        // a second one, which would only hold another part in memory.
        let in_flight = if self.is_local() { 1 } else { 2 };
        let mut writer = BufWriter::with_capacity(self.store.clone(), path, self.part_size)
            .with_max_concurrency(in_flight);
        if let Backend::S3(_) = self.backend {
            writer = writer
                .with_attributes(Attributes::from_iter([(Attribute::ContentType, content_type.to_owned())]));
        }
        Ok(Upload { writer: Some(writer) })
    }

    /// The object's bytes as a stream (used by the API to serve local files).
    pub async fn get(&self, key: &str) -> Result<object_store::GetResult, StorageError> {
        Ok(self.store.get(&parse_key(key)?).await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&parse_key(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the object at `key` exists (a HEAD). `Ok(false)` only when storage answered
    /// that it does not; an unreachable store is an error, never taken for a missing object.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&parse_key(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the store answers: a cheap HEAD of a key that need not exist.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self.store.head(&Path::from("health/ping")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A URL that lets its holder download `key` until it expires. For local storage the URL
    /// points at the API's `/files/` route under `public_base_url`.
    pub async fn download_url(
        &self,
        key: &str,
        ttl: Duration,
        public_base_url: &str,
        signer: &UrlSigner,
    ) -> Result<(String, OffsetDateTime), StorageError> {
        let expires_at = OffsetDateTime::now_utc() + ttl;
        match &self.backend {
            Backend::Local { .. } => {
                let expires = expires_at.unix_timestamp();
                let signature = signer.sign(key, expires);
                Ok((
                    format!("{public_base_url}/files/{key}?expires={expires}&signature={signature}"),
                    expires_at,
                ))
            }
            Backend::S3(s3) => {
                let url = s3.signed_url(Method::GET, &parse_key(key)?, ttl).await?;
                Ok((url.to_string(), expires_at))
            }
        }
    }
}

impl Storage {
    /// Removes the staging files of local uploads that were never finished or aborted (their
    /// worker was killed) and untouched for `older_than`; returns how many. A running upload
    /// writes its staging file continually, so it is never this old. On S3 the bucket's
    /// lifecycle rule for incomplete multipart uploads does this job.
    pub async fn sweep_abandoned_uploads(&self, older_than: Duration) -> Result<u64, StorageError> {
        let Backend::Local { root } = &self.backend else { return Ok(0) };
        // Every object key starts with `exports/`: nothing else under the root is touched.
        let exports = root.join("exports");
        if !exports.is_dir() {
            return Ok(0);
        }
        let swept = tokio::task::spawn_blocking(move || sweep(&exports, older_than)).await;
        swept.map_err(|e| StorageError::Io(std::io::Error::other(e)))?
    }
}

/// `object_store` stages a local multipart upload next to its destination as `<name>#<id>`.
fn sweep(dir: &std::path::Path, older_than: Duration) -> Result<u64, StorageError> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            removed += sweep(&entry.path(), older_than)?;
        } else if kind.is_file() && entry.file_name().to_string_lossy().contains('#') {
            let idle = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if idle >= older_than {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn parse_key(key: &str) -> Result<Path, StorageError> {
    Path::parse(key).map_err(|_| StorageError::Key(key.to_owned()))
}

/// An upload in progress. Nothing is visible under the key until [`Upload::finish`]; on any
/// error call [`Upload::abort`] (dropping it without either also leaves no object).
pub struct Upload {
    writer: Option<BufWriter>,
}

impl Upload {
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let writer = self.writer.as_mut().ok_or(StorageError::Key("upload already finished".into()))?;
        writer.put(chunk).await?;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(), StorageError> {
        if let Some(mut writer) = self.writer.take() {
            writer.shutdown().await?;
        }
        Ok(())
    }

    pub async fn abort(mut self) -> Result<(), StorageError> {
        if let Some(mut writer) = self.writer.take() {
            writer.abort().await?;
        }
        Ok(())
    }
}
