//! `GET /files/{key}?expires=…&signature=…`: downloads from local storage under HMAC-signed,
//! expiring URLs. (S3 and MinIO hand out pre-signed URLs instead.) Refusals are [`ApiError`]s,
//! worded where every API error is.

use futures::TryStreamExt;
use poem::{
    Body, IntoResponse, Response, handler,
    http::header,
    web::{Data, Path, Query},
};
use serde::Deserialize;
use shared::{signing::SignatureError, storage::StorageError};

use crate::{AppState, error::ApiError};

/// The query of a signed link.
#[derive(Debug, Deserialize)]
pub(crate) struct Signed {
    expires: i64,
    signature: String,
}

#[handler]
pub(crate) async fn download(
    state: Data<&AppState>,
    Path(key): Path<String>,
    query: Option<Query<Signed>>,
) -> Result<Response, ApiError> {
    let Query(signed) = query.ok_or(SignatureError::Invalid)?;
    state.signer.verify(&key, signed.expires, &signed.signature)?;
    let object = match state.storage.get(&key).await {
        Ok(object) => object,
        Err(StorageError::Store(object_store::Error::NotFound { .. })) => {
            return Err(ApiError::NotFound("The file no longer exists."));
        }
        Err(e) => return Err(ApiError::StorageUnavailable(e.to_string())),
    };
    let size = object.meta.size;
    let filename = key.rsplit('/').next().unwrap_or("statement.csv").to_owned();
    let content_type = if filename.ends_with(".gz") { "application/gzip" } else { "text/csv; charset=utf-8" };
    let stream = object.into_stream().map_err(std::io::Error::other);
    Ok(Response::builder()
        .content_type(content_type)
        .header(header::CONTENT_LENGTH, size)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\""))
        .header(header::CACHE_CONTROL, "private, no-store")
        .body(Body::from_bytes_stream(stream))
        .into_response())
}
