//! Export files in object storage: local disk (default), S3 or MinIO, through `object_store`.
//!
//! Uploads go through `object_store`'s multipart writer, so nothing appears under the final key
//! until the upload completes, and an aborted upload leaves nothing behind. Downloads are
//! short-lived signed URLs: pre-signed GETs for S3, HMAC-signed API URLs for local disk.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use object_store::{
    Attribute, Attributes, BackoffConfig, MultipartId, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutPayload, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    buffered::BufWriter,
    list::{PaginatedListOptions, PaginatedListStore},
    local::LocalFileSystem,
    multipart::{MultipartStore, PartId},
    path::Path,
    signer::{Method, Signer},
};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use crate::{
    config::StorageConfig,
    failure::{self, FailureCode},
    signing::UrlSigner,
};

/// Why storage did not do as asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object store refused or failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Local disk I/O failed.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The key is not a valid object path.
    #[error("invalid object key {0:?}")]
    Key(String),
    /// Storage did not answer in time.
    #[error("storage did not answer within {0:?}")]
    Timeout(Duration),
}

impl StorageError {
    /// The failure class clients see ([`FailureCode`]); the error itself is for the log.
    pub fn failure_code(&self) -> FailureCode {
        use std::io::ErrorKind;
        match self {
            Self::Timeout(_) => return FailureCode::StorageUnavailable,
            Self::Key(_) => return FailureCode::Internal,
            Self::Store(_) | Self::Io(_) => {}
        }
        // What object_store said (it may come wrapped in an io::Error, from its BufWriter).
        for e in failure::find_all::<object_store::Error>(self) {
            match e {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => {
                    return FailureCode::StorageWriteRefused;
                }
                object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => return FailureCode::Internal,
                _ => {}
            }
        }
        // Local disk: what the operating system said.
        match failure::io_error(self).map(std::io::Error::kind) {
            Some(
                ErrorKind::PermissionDenied
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::NotADirectory
                | ErrorKind::IsADirectory
                | ErrorKind::AlreadyExists
                | ErrorKind::InvalidFilename,
            ) => FailureCode::StorageWriteRefused,
            Some(ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge) => {
                FailureCode::StorageFull
            }
            Some(ErrorKind::NotFound) => FailureCode::StorageMissing,
            _ if failure::find_all::<object_store::Error>(self)
                .any(|e| matches!(e, object_store::Error::NotFound { .. })) =>
            {
                FailureCode::StorageMissing
            }
            _ => FailureCode::StorageUnavailable,
        }
    }

    /// A path component is a regular file (`ENOTDIR`): nothing can exist below it.
    fn is_not_a_directory(&self) -> bool {
        failure::io_error(self).is_some_and(|e| e.kind() == std::io::ErrorKind::NotADirectory)
    }
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
                let retry = s3_retry(s3.retry_timeout);
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

    /// Whether files are on local disk (else S3).
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// Starts an upload of a new object at `key`; see [`Upload`]. On S3 this creates the
    /// multipart upload at once, so its id can be journalled before the first byte
    /// ([`Upload::upload_id`]); the object is served with `content_type` (local files get theirs
    /// from the API's download route).
    pub async fn upload(&self, key: &str, content_type: &str) -> Result<Upload, StorageError> {
        let path = parse_key(key)?;
        let writer = match &self.backend {
            // Local disk: one part in flight; a second would only hold another part in memory.
            Backend::Local { .. } => Writer::Local(
                BufWriter::with_capacity(self.store.clone(), path, self.part_size).with_max_concurrency(1),
            ),
            Backend::S3(s3) => {
                let attributes = Attributes::from_iter([(Attribute::ContentType, content_type.to_owned())]);
                let options = PutMultipartOptions { attributes, ..Default::default() };
                let id = s3.create_multipart_opts(&path, options).await?;
                Writer::S3(MultipartWriter {
                    s3: s3.clone(),
                    path,
                    id,
                    part_size: self.part_size,
                    buffer: Vec::new(),
                    buffered: 0,
                    in_flight: Default::default(),
                    parts: Vec::new(),
                })
            }
        };
        Ok(Upload { writer: Some(writer) })
    }

    /// Removes everything an upload to `key` may have left: its S3 multipart upload
    /// (`upload_id`), the object itself, local staging files. Idempotent; only for keys that
    /// belong to one claim, never to a recorded export's file.
    pub async fn discard(&self, key: &str, upload_id: Option<&str>) -> Result<(), StorageError> {
        let path = parse_key(key)?;
        if let (Backend::S3(s3), Some(id)) = (&self.backend, upload_id) {
            match s3.abort_multipart(&path, &id.to_owned()).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.delete(key).await?;
        if let Backend::Local { root } = &self.backend {
            let file = root.join(key);
            let staging = tokio::task::spawn_blocking(move || remove_staging_files(&file)).await;
            staging.map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }

    /// The object's bytes as a stream (used by the API to serve local files).
    pub async fn get(&self, key: &str) -> Result<object_store::GetResult, StorageError> {
        Ok(self.store.get(&parse_key(key)?).await?)
    }

    /// Deletes an object (nothing when it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&parse_key(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => match StorageError::from(e) {
                // The key's folder is a file: the object cannot be there.
                e if e.is_not_a_directory() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Whether the object at `key` exists (a HEAD). `Ok(false)` only when storage answered
    /// that it does not *and* the bucket (or local root) itself is there; an unreachable store
    /// or a missing bucket (a wrong `S3_BUCKET`, an unmounted volume, where every HEAD says
    /// "not found") is an error, never taken for a missing object.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&parse_key(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => self.check_exists().await.map(|()| false),
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

/// First and longest pause between retries of one S3 request (the pause doubles, with jitter).
const S3_RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const S3_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Retries of one S3 request: for as long as `budget` (`S3_RETRY_TIMEOUT_SECS`), however many it
/// takes. `object_store` stops at whichever of its retry count and its timeout comes first; the
/// count is set to more retries than the budget can hold (each pause is at least the first
/// backoff), so only time ends them. The pause is capped, so a request resumes within
/// [`S3_RETRY_MAX_BACKOFF`] of storage coming back.
fn s3_retry(budget: Duration) -> RetryConfig {
    let fits = budget.as_millis() / S3_RETRY_FIRST_BACKOFF.as_millis();
    RetryConfig {
        max_retries: usize::try_from(fits).unwrap_or(usize::MAX).saturating_add(1),
        retry_timeout: budget,
        backoff: BackoffConfig {
            init_backoff: S3_RETRY_FIRST_BACKOFF,
            max_backoff: S3_RETRY_MAX_BACKOFF,
            base: 2.0,
        },
    }
}

/// The one object the workers' write check overwrites (never under `exports/`).
pub const WRITE_CHECK_KEY: &str = "health/write-check";

impl Storage {
    /// Whether the bucket (S3) or the root directory (local disk) exists: a LIST of at most one
    /// key under `health/` (a missing bucket fails it, where a HEAD of a missing key would say
    /// only "not found"), or the root's metadata. Says nothing about whether writes succeed:
    /// see [`Storage::check_writable`].
    pub async fn check_exists(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local { root } => {
                if tokio::fs::metadata(root).await?.is_dir() {
                    Ok(())
                } else {
                    Err(StorageError::Io(std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", root.display()),
                    )))
                }
            }
            Backend::S3(s3) => {
                let options = PaginatedListOptions { max_keys: Some(1), ..Default::default() };
                s3.list_paginated(Some("health/"), options).await?;
                Ok(())
            }
        }
    }

    /// Whether storage takes a write: overwrites [`WRITE_CHECK_KEY`] with a few bytes (always
    /// the same object, so repeated checks leave one small file, not one per check).
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        let body = format!("write check {}\n", OffsetDateTime::now_utc().unix_timestamp());
        self.store.put(&Path::from(WRITE_CHECK_KEY), PutPayload::from(body)).await?;
        Ok(())
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
/// error call [`Upload::abort`].
pub struct Upload {
    writer: Option<Writer>,
}

enum Writer {
    /// `object_store` stages the file next to its destination (`<name>#<n>`) and renames it.
    Local(BufWriter),
    S3(MultipartWriter),
}

/// An S3 multipart upload driven part by part, so its id is known (and journalled) from the
/// start: a killed worker's parts can be aborted later by id.
struct MultipartWriter {
    s3: Arc<AmazonS3>,
    path: Path,
    id: MultipartId,
    part_size: usize,
    /// Chunks of the next part (sent as one payload, not copied together).
    buffer: Vec<Bytes>,
    buffered: usize,
    /// Parts being uploaded (each on its own task, so it progresses while the writer waits
    /// for more rows), in order; two overlap network round trips.
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Result<PartId, object_store::Error>>>,
    parts: Vec<PartId>,
}

/// Parts uploaded at once per S3 upload.
const S3_PARTS_IN_FLIGHT: usize = 2;

impl MultipartWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.buffered += chunk.len();
        self.buffer.push(chunk);
        if self.buffered >= self.part_size {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<(), StorageError> {
        while self.in_flight.len() >= S3_PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let payload = PutPayload::from_iter(std::mem::take(&mut self.buffer));
        self.buffered = 0;
        let (s3, path, id, index) = (self.s3.clone(), self.path.clone(), self.id.clone(), self.next_index());
        self.in_flight.push_back(tokio::spawn(async move { s3.put_part(&path, &id, index, payload).await }));
        Ok(())
    }

    fn next_index(&self) -> usize {
        self.parts.len() + self.in_flight.len()
    }

    async fn collect_one(&mut self) -> Result<(), StorageError> {
        if let Some(part) = self.in_flight.pop_front() {
            let part = part.await.map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
            self.parts.push(part?);
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), StorageError> {
        // S3 needs at least one part; an empty file is one empty part.
        if self.buffered > 0 || self.next_index() == 0 {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.s3.complete_multipart(&self.path, &self.id, self.parts).await?;
        Ok(())
    }

    async fn abort(self) -> Result<(), StorageError> {
        for part in &self.in_flight {
            part.abort();
        }
        self.s3.abort_multipart(&self.path, &self.id).await?;
        Ok(())
    }
}

impl Upload {
    /// The S3 multipart upload's id (`None` on local disk).
    pub fn upload_id(&self) -> Option<&str> {
        match self.writer.as_ref()? {
            Writer::S3(s3) => Some(&s3.id),
            Writer::Local(_) => None,
        }
    }

    /// Adds bytes to the object.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        match self.writer.as_mut().ok_or(StorageError::Key("upload already finished".into()))? {
            Writer::Local(writer) => writer.put(chunk).await?,
            Writer::S3(writer) => writer.write(chunk).await?,
        }
        Ok(())
    }

    /// Completes the object: it appears whole under its key.
    pub async fn finish(mut self) -> Result<(), StorageError> {
        match self.writer.take() {
            Some(Writer::Local(mut writer)) => writer.shutdown().await?,
            Some(Writer::S3(writer)) => writer.finish().await?,
            None => {}
        }
        Ok(())
    }

    /// Gives the upload up: no object appears.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        match self.writer.take() {
            Some(Writer::Local(mut writer)) => writer.abort().await?,
            Some(Writer::S3(writer)) => writer.abort().await?,
            None => {}
        }
        Ok(())
    }
}

/// Removes `object_store`'s staging files of a local upload to `file` (`<name>#<n>`), then
/// the claim's directory if that left it empty.
fn remove_staging_files(file: &std::path::Path) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else { return Ok(()) };
    let prefix = format!("{}#", name.to_string_lossy());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // No folder (or a file where it would be): no staging files either.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    // Not empty (another file of the claim) or already gone: either is fine.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    /// As object_store's local `BufWriter` reports an OS error: an `io::Error` (kind `Other`)
    /// around object_store's error around the OS's.
    fn local_write_error(os_error: i32) -> StorageError {
        let store = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(os_error)),
        };
        StorageError::Io(std::io::Error::other(store))
    }

    #[test]
    fn local_disk_errors_are_classified_by_what_the_operating_system_said() {
        assert_eq!(local_write_error(13).failure_code(), FailureCode::StorageWriteRefused); // EACCES
        assert_eq!(local_write_error(20).failure_code(), FailureCode::StorageWriteRefused); // ENOTDIR
        assert_eq!(local_write_error(30).failure_code(), FailureCode::StorageWriteRefused); // EROFS
        assert_eq!(local_write_error(28).failure_code(), FailureCode::StorageFull); // ENOSPC
        assert_eq!(local_write_error(5).failure_code(), FailureCode::StorageUnavailable); // EIO
        assert_eq!(
            StorageError::Timeout(Duration::from_secs(1)).failure_code(),
            FailureCode::StorageUnavailable
        );
    }
}
