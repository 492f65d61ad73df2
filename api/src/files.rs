//! `GET` and `HEAD /files/{key}?expires=…&link=…&signature=…`: downloads from local storage under
//! HMAC-signed, expiring URLs. (S3 and MinIO hand out pre-signed URLs instead.) Refusals are
//! [`ApiError`]s, worded where every API error is.
//!
//! A download can be resumed and verified (RFC 9110, RFC 9530): `Accept-Ranges: bytes`, one
//! `Range` per request (`206` with `Content-Range`; `416` with `Content-Range: bytes */len` when
//! no byte of it is in the file; several ranges get the whole file, see `byte_ranges`),
//! `If-Range`, a strong `ETag` (the export's `sha256`) with `If-None-Match` (`304`), and
//! `Repr-Digest: sha-256=:…:` (the SHA-256 of the whole file, on a `206` too). A range is read
//! from its start in chunks, never the whole file into memory.
//!
//! Each `GET` a valid link lets through is recorded (`crate::downloads`): its link (`link`, in
//! the signed query; links from before it have none and keep working), status, range, the bytes
//! handed to the connection (counted as the body streams, recorded when it ends or the client
//! goes away) and the client's address.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use base64::Engine as _;
use futures::{Stream, TryStreamExt, stream::BoxStream};
use poem::{
    Body, Request, Response, handler,
    http::{HeaderMap, Method, StatusCode, header},
    web::{Data, Path, Query},
};
use serde::Deserialize;
use shared::{downloads::Download, signing::SignatureError, storage::StorageError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    AppState,
    byte_ranges::{Answer, Asked},
    client_addr::ClientAddr,
    downloads::DownloadLog,
    error::{self, ApiError, Problem},
};

/// The query of a signed link.
#[derive(Debug, Deserialize)]
pub(crate) struct Signed {
    expires: i64,
    /// The link's id (links minted before ids have none).
    link: Option<String>,
    signature: String,
}

/// The file as this request found it.
struct Found {
    export_id: Uuid,
    link_id: Option<Uuid>,
    len: u64,
    etag: String,
    /// `sha-256=:…:`
    digest: String,
}

#[handler]
pub(crate) async fn download(
    state: Data<&AppState>,
    req: &Request,
    Path(key): Path<String>,
    query: Option<Query<Signed>>,
    client: ClientAddr,
) -> Result<Response, ApiError> {
    let Query(signed) = query.ok_or(SignatureError::Invalid)?;
    let link_id = match signed.link.as_deref() {
        Some(link) => Some(Uuid::parse_str(link).map_err(|_| SignatureError::Invalid)?),
        None => None,
    };
    state.signer.verify(&key, signed.expires, link_id, &signed.signature)?;
    let file = {
        let db = state.db().await?;
        shared::downloads::served_file(&db, &key).await?
    };
    let gone = ApiError::NotFound("The file no longer exists.");
    let file = file.ok_or(gone)?;
    let meta = state.storage.head(&key).await.map_err(not_found_or_unavailable)?;
    let found = Found {
        export_id: file.export_id,
        link_id,
        len: meta.size,
        etag: format!("\"{}\"", file.sha256),
        digest: repr_digest(&file.sha256)?,
    };
    let headers = req.headers();
    let joined = |name| joined(headers, name);
    let (if_none_match, range, if_range) =
        (joined(header::IF_NONE_MATCH), joined(header::RANGE), joined(header::IF_RANGE));
    let get = req.method() == Method::GET;
    let asked = Asked {
        if_none_match: if_none_match.as_deref(),
        range: range.as_deref(),
        if_range: if_range.as_deref(),
        get,
    };
    let answer = asked.answer(&found.etag, found.len);
    // What is recorded of a GET (HEAD sends no file); bytes are counted as the body streams.
    let record = |status: u16, range: Option<(u64, u64)>| {
        let download = Download {
            export_id: found.export_id,
            link_id: found.link_id,
            started_at: OffsetDateTime::now_utc(),
            status,
            range,
            bytes_sent: 0,
            client_addr: client.ip(),
        };
        Recorder { log: state.downloads.clone(), download }
    };
    match answer {
        Answer::NotModified => {
            if get {
                drop(record(304, None));
            }
            Ok(Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, &found.etag)
                .header(header::CACHE_CONTROL, "private, no-store")
                .finish())
        }
        Answer::Unsatisfiable => {
            drop(record(416, None));
            let problem = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("The range holds no byte of the file, which has {} bytes.", found.len),
            );
            let mut response = error::problem_response(problem);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_RANGE, header_value(format!("bytes */{}", found.len)));
            headers.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
            Ok(response)
        }
        Answer::Whole if !get => {
            Ok(file_headers(&key, &found).header(header::CONTENT_LENGTH, found.len).body(Body::empty()))
        }
        Answer::Whole => {
            let object = state.storage.get(&key).await.map_err(not_found_or_unavailable)?;
            Ok(file_headers(&key, &found)
                .header(header::CONTENT_LENGTH, found.len)
                .body(counted(object.into_stream(), record(200, None))))
        }
        Answer::Partial { first, last } => {
            let object =
                state.storage.get_range(&key, first..last + 1).await.map_err(not_found_or_unavailable)?;
            Ok(file_headers(&key, &found)
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{}", found.len))
                .header(header::CONTENT_LENGTH, last - first + 1)
                .body(counted(object.into_stream(), record(206, Some((first, last))))))
        }
    }
}

/// The headers of a `200` or `206` (and its `HEAD`).
fn file_headers(key: &str, found: &Found) -> poem::ResponseBuilder {
    let filename = key.rsplit('/').next().unwrap_or("statement.csv").to_owned();
    let content_type = if filename.ends_with(".gz") { "application/gzip" } else { "text/csv; charset=utf-8" };
    Response::builder()
        .content_type(content_type)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\""))
        .header(header::CACHE_CONTROL, "private, no-store")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &found.etag)
        .header("repr-digest", &found.digest)
}

/// `Repr-Digest` (RFC 9530) of a file whose hex SHA-256 is `sha256`: a structured-field
/// dictionary, `sha-256` = the digest's bytes as a byte sequence (`:base64:`).
fn repr_digest(sha256: &str) -> Result<String, ApiError> {
    let bytes = hex::decode(sha256).map_err(|e| ApiError::Internal(anyhow::anyhow!("stored sha256: {e}")))?;
    Ok(format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Every value of header `name`, joined with commas (RFC 9110 §5.3); `None` when absent.
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn header_value(value: String) -> header::HeaderValue {
    header::HeaderValue::try_from(value).expect("digits and ASCII")
}

fn not_found_or_unavailable(e: StorageError) -> ApiError {
    match e {
        StorageError::Store(object_store::Error::NotFound { .. }) => {
            ApiError::NotFound("The file no longer exists.")
        }
        e => ApiError::StorageUnavailable(e.to_string()),
    }
}

/// Records a download when dropped: when its body has been sent, or the client went away.
struct Recorder {
    log: Arc<DownloadLog>,
    download: Download,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.log.download(self.download);
    }
}

/// The file's bytes as a body, counted into `record` as they are handed to the connection.
fn counted(stream: BoxStream<'static, Result<bytes::Bytes, object_store::Error>>, record: Recorder) -> Body {
    Body::from_bytes_stream(Counted { stream, record }.map_err(std::io::Error::other))
}

struct Counted {
    stream: BoxStream<'static, Result<bytes::Bytes, object_store::Error>>,
    record: Recorder,
}

impl Stream for Counted {
    type Item = Result<bytes::Bytes, object_store::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.stream.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.record.download.bytes_sent += chunk.len() as u64;
        }
        polled
    }
}
