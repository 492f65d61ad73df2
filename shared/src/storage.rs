//! Export files in object storage: local disk (default), S3 or MinIO, through `object_store`.
//!
//! Uploads go through `object_store`'s multipart writer, so nothing appears under the final key
//! until the upload completes, and an aborted upload leaves nothing behind. Downloads are
//! short-lived signed URLs: pre-signed GETs for S3, HMAC-signed API URLs for local disk.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use object_store::{
    Attribute, Attributes, BackoffConfig, MultipartId, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutPayload, RetryConfig, StaticCredentialProvider,
    aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, Checksum},
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
    config::{S3Config, S3Encryption, StorageConfig},
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
    Local {
        root: std::path::PathBuf,
    },
    S3 {
        /// Every request the service makes (at `S3_ENDPOINT`).
        s3: Arc<AmazonS3>,
        /// Signs download links for the host clients reach (`S3_PUBLIC_ENDPOINT`); sends nothing.
        links: Arc<AmazonS3>,
    },
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
            StorageConfig::S3(config) => {
                let (s3, links) = s3_clients(AmazonS3Builder::from_env(), config)?;
                let (s3, links) = (Arc::new(s3), Arc::new(links));
                Ok(Self { store: s3.clone(), backend: Backend::S3 { s3, links }, part_size })
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
            Backend::S3 { s3, .. } => {
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
        if let (Backend::S3 { s3, .. }, Some(id)) = (&self.backend, upload_id) {
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

    /// The object's metadata (its size), without its bytes.
    pub async fn head(&self, key: &str) -> Result<object_store::ObjectMeta, StorageError> {
        Ok(self.store.head(&parse_key(key)?).await?)
    }

    /// The bytes `range` (end exclusive, within the object) as a stream: on local disk the file
    /// is opened, the read position set to the range's start, and read in chunks, never whole.
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<object_store::GetResult, StorageError> {
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        Ok(self.store.get_opts(&parse_key(key)?, options).await?)
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
    /// points at the API's `/files/` route under `public_base_url` and carries `link`, the
    /// link's id, under the signature (so a download maps to its link); an S3 link is
    /// pre-signed by S3 and carries none.
    pub async fn download_url(
        &self,
        key: &str,
        link: uuid::Uuid,
        ttl: Duration,
        public_base_url: &str,
        signer: &UrlSigner,
    ) -> Result<(String, OffsetDateTime), StorageError> {
        let expires_at = OffsetDateTime::now_utc() + ttl;
        match &self.backend {
            Backend::Local { .. } => {
                let expires = expires_at.unix_timestamp();
                let signature = signer.sign_link(key, expires, link);
                Ok((
                    format!(
                        "{public_base_url}/files/{key}?expires={expires}&link={link}&signature={signature}"
                    ),
                    expires_at,
                ))
            }
            Backend::S3 { links, .. } => {
                let url = links.signed_url(Method::GET, &parse_key(key)?, ttl).await?;
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

/// The two S3 clients: one for every request the service makes, at `S3_ENDPOINT`, and one that
/// only signs download links, for `S3_PUBLIC_ENDPOINT` (the same as the first without it), with
/// the same credentials. `environment` is what the AWS SDKs read from the environment
/// (`AmazonS3Builder::from_env()`: credentials, region, endpoint, proxy); the settings win over it.
fn s3_clients(environment: AmazonS3Builder, config: &S3Config) -> Result<(AmazonS3, AmazonS3), StorageError> {
    let mut builder = environment
        .with_bucket_name(&config.bucket)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_skip_signature(false)
        .with_retry(s3_retry(config.retry_timeout));
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    }
    if let Some(keys) = &config.credentials {
        // Instead of every credential source of the environment (a session token included).
        let credential = AwsCredential {
            key_id: keys.access_key_id.clone(),
            secret_key: keys.secret_access_key.expose_secret().to_owned(),
            token: None,
        };
        builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(credential)));
    }
    let sse = |name: &str| name.parse::<AmazonS3ConfigKey>();
    match &config.encryption {
        S3Encryption::BucketDefault => {}
        S3Encryption::Aes256 => builder = builder.with_config(sse("aws_server_side_encryption")?, "AES256"),
        S3Encryption::Kms { key_id } => {
            builder = builder.with_config(sse("aws_server_side_encryption")?, "aws:kms");
            if let Some(key_id) = key_id {
                builder = builder.with_config(sse("aws_sse_kms_key_id")?, key_id);
            }
        }
    }
    if config.checksum {
        builder = builder.with_checksum_algorithm(Checksum::SHA256);
    }
    let s3 = at_endpoint(builder.clone(), config.endpoint.as_deref()).build()?;
    let links = match &config.public_endpoint {
        // The same credential provider: temporary credentials are fetched and refreshed once.
        Some(public) => {
            at_endpoint(builder, Some(public)).with_credentials(s3.credentials().clone()).build()?
        }
        None => s3.clone(),
    };
    Ok((s3, links))
}

/// `builder` sending to `endpoint` (when set; else to the environment's, or AWS), over plain
/// HTTP only when that endpoint says `http://`.
fn at_endpoint(builder: AmazonS3Builder, endpoint: Option<&str>) -> AmazonS3Builder {
    let builder = match endpoint {
        // `AWS_ENDPOINT_URL_S3` would win over the plain endpoint: the setting replaces both.
        Some(url) => builder.with_endpoint(url).with_config(AmazonS3ConfigKey::S3Endpoint, url),
        None => builder,
    };
    let url = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    builder.with_allow_http(url.is_some_and(|url| url.starts_with("http://")))
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
            Backend::S3 { s3, .. } => {
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

#[cfg(test)]
mod s3_client_tests {
    //! Which credentials, region and endpoints the S3 clients use, given the settings and the
    //! environment. No request is sent: signing a URL needs none.
    use super::*;
    use crate::config::S3StaticCredentials;

    /// What `AmazonS3Builder::from_env()` makes of these variables (it maps each `AWS_*` name,
    /// lowercased, to its configuration key).
    fn environment(vars: &[(&str, &str)]) -> AmazonS3Builder {
        vars.iter().fold(AmazonS3Builder::new(), |builder, (name, value)| {
            builder.with_config(name.to_ascii_lowercase().parse().unwrap(), *value)
        })
    }

    fn settings() -> S3Config {
        S3Config {
            bucket: "exports".into(),
            region: None,
            endpoint: None,
            public_endpoint: None,
            path_style: true,
            credentials: None,
            encryption: S3Encryption::BucketDefault,
            checksum: true,
            retry_timeout: Duration::from_secs(1),
        }
    }

    /// The credential provider the service's client was given (its type and fields).
    fn provider(vars: &[(&str, &str)], config: &S3Config) -> String {
        let (s3, _) = s3_clients(environment(vars), config).unwrap();
        format!("{:?}", s3.credentials())
    }

    const KEYS: [(&str, &str); 3] = [
        ("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT"),
        ("AWS_SECRET_ACCESS_KEY", "environment-secret"),
        ("AWS_SESSION_TOKEN", "environment-session-token"),
    ];
    const WEB_IDENTITY: [(&str, &str); 2] = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/statement-export"),
    ];
    const ECS: [(&str, &str); 1] = [("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/task-id")];

    #[tokio::test]
    async fn keys_and_a_session_token_from_the_aws_variables_sign_requests_and_links() {
        let (s3, links) = s3_clients(environment(&KEYS), &settings()).unwrap();
        let credential = s3.credentials().get_credential().await.unwrap();
        assert_eq!(credential.key_id, "AKIAENVIRONMENT");
        assert_eq!(credential.token.as_deref(), Some("environment-session-token"));
        let url = links.signed_url(Method::GET, &Path::from("exports/a.csv"), Duration::from_secs(60)).await;
        let url = url.unwrap().to_string();
        assert!(url.contains("X-Amz-Credential=AKIAENVIRONMENT%2F"), "{url}");
        assert!(url.contains("X-Amz-Security-Token=environment-session-token"), "{url}");
    }

    #[tokio::test]
    async fn the_s3_keys_setting_wins_over_every_credential_of_the_environment_token_included() {
        let config = S3Config {
            credentials: Some(S3StaticCredentials {
                access_key_id: "AKIASETTING".into(),
                secret_access_key: "setting-secret".to_owned().into(),
            }),
            ..settings()
        };
        let everything: Vec<_> = KEYS.iter().chain(&WEB_IDENTITY).chain(&ECS).copied().collect();
        let (s3, _) = s3_clients(environment(&everything), &config).unwrap();
        let credential = s3.credentials().get_credential().await.unwrap();
        assert_eq!((credential.key_id.as_str(), credential.token.as_deref()), ("AKIASETTING", None));
    }

    #[test]
    fn a_web_identity_is_chosen_before_the_container_endpoint_and_instance_metadata() {
        let both: Vec<_> = WEB_IDENTITY.iter().chain(&ECS).copied().collect();
        let chosen = provider(&both, &settings());
        assert!(chosen.contains("WebIdentityProvider"), "{chosen}");
        assert!(chosen.contains("arn:aws:iam::123456789012:role/statement-export"), "{chosen}");
        // Exchanged with STS in the bucket's region, over HTTPS only.
        let chosen = provider(&WEB_IDENTITY, &S3Config { region: Some("eu-west-1".into()), ..settings() });
        assert!(chosen.contains("https://sts.eu-west-1.amazonaws.com"), "{chosen}");
    }

    #[test]
    fn the_ecs_container_endpoint_is_chosen_before_instance_metadata() {
        let chosen = provider(&ECS, &settings());
        assert!(chosen.contains("TaskCredentialProvider"), "{chosen}");
        assert!(chosen.contains("http://169.254.170.2/v2/credentials/task-id"), "{chosen}");
        let pod_identity = [
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/secrets/pods.eks.amazonaws.com/token"),
        ];
        let chosen = provider(&pod_identity, &settings());
        assert!(chosen.contains("EKSPodCredentialProvider"), "{chosen}");
    }

    #[test]
    fn with_nothing_set_the_instance_metadata_is_asked() {
        let chosen = provider(&[], &settings());
        assert!(chosen.contains("InstanceCredentialProvider"), "{chosen}");
    }

    async fn link(links: &AmazonS3) -> String {
        let url = links.signed_url(Method::GET, &Path::from("exports/a.csv"), Duration::from_secs(60)).await;
        url.unwrap().to_string()
    }

    #[tokio::test]
    async fn links_are_signed_for_the_public_endpoint_and_requests_go_to_the_service_endpoint() {
        let config = S3Config {
            endpoint: Some("http://minio:9000".into()),
            public_endpoint: Some("https://files.example.com".into()),
            ..settings()
        };
        let (s3, links) = s3_clients(environment(&KEYS), &config).unwrap();
        assert!(link(&links).await.starts_with("https://files.example.com/exports/exports/a.csv?"));
        assert!(link(&s3).await.starts_with("http://minio:9000/exports/exports/a.csv?"));
        // Without a public endpoint, links name the service's.
        let (_, links) =
            s3_clients(environment(&KEYS), &S3Config { public_endpoint: None, ..config }).unwrap();
        assert!(link(&links).await.starts_with("http://minio:9000/exports/exports/a.csv?"));
    }

    #[tokio::test]
    async fn the_region_and_endpoint_settings_win_over_the_environment_which_fills_in_for_them() {
        let environment_endpoint: Vec<_> = KEYS
            .iter()
            .copied()
            .chain([("AWS_REGION", "eu-west-1"), ("AWS_ENDPOINT_URL_S3", "http://from-the-environment:9000")])
            .collect();
        let (_, links) = s3_clients(environment(&environment_endpoint), &settings()).unwrap();
        let url = link(&links).await;
        assert!(url.starts_with("http://from-the-environment:9000/"), "{url}");
        assert!(url.contains("%2Feu-west-1%2Fs3%2F"), "{url}");
        let config = S3Config {
            region: Some("eu-central-1".into()),
            endpoint: Some("http://from-the-setting:9000".into()),
            ..settings()
        };
        let (_, links) = s3_clients(environment(&environment_endpoint), &config).unwrap();
        let url = link(&links).await;
        assert!(url.starts_with("http://from-the-setting:9000/"), "{url}");
        assert!(url.contains("%2Feu-central-1%2Fs3%2F"), "{url}");
    }
}
