//! `GET /files/{key}?expires=…&signature=…`: downloads from local storage under HMAC-signed,
//! expiring URLs. (S3 and MinIO hand out pre-signed URLs instead.)

use futures::TryStreamExt;
use poem::{
    Body, IntoResponse, Response, handler,
    http::{StatusCode, header},
    web::{Data, Path, Query},
};
use serde::Deserialize;
use shared::signing::SignatureError;

use crate::{
    AppState,
    error::{Problem, problem_response},
};

#[derive(Debug, Deserialize)]
pub struct Signed {
    expires: i64,
    signature: String,
}

#[handler]
pub async fn download(
    state: Data<&AppState>,
    Path(key): Path<String>,
    query: Option<Query<Signed>>,
) -> Response {
    let Some(Query(signed)) = query else {
        return forbidden("The download link is not valid.");
    };
    match state.signer.verify(&key, signed.expires, &signed.signature) {
        Ok(()) => {}
        Err(e @ (SignatureError::Expired | SignatureError::Invalid)) => return forbidden(&e.to_string()),
    }
    let object = match state.storage.get(&key).await {
        Ok(object) => object,
        Err(shared::storage::StorageError::Store(object_store::Error::NotFound { .. })) => {
            return problem_response(Problem::new(StatusCode::NOT_FOUND, "The file no longer exists."));
        }
        Err(e) => {
            tracing::warn!(error = %e, "storage unavailable for download");
            let mut resp = problem_response(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Storage is temporarily unavailable; retry shortly.",
            ));
            resp.headers_mut().insert(header::RETRY_AFTER, 5.into());
            return resp;
        }
    };
    let size = object.meta.size;
    let filename = key.rsplit('/').next().unwrap_or("statement.csv").to_owned();
    let content_type = if filename.ends_with(".gz") { "application/gzip" } else { "text/csv; charset=utf-8" };
    let stream = object.into_stream().map_err(std::io::Error::other);
    Response::builder()
        .content_type(content_type)
        .header(header::CONTENT_LENGTH, size)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\""))
        .header(header::CACHE_CONTROL, "private, no-store")
        .body(Body::from_bytes_stream(stream))
        .into_response()
}

fn forbidden(detail: &str) -> Response {
    problem_response(Problem::new(StatusCode::FORBIDDEN, detail))
}
