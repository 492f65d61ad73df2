//! The API's one error type, and the one place it becomes HTTP: RFC 9457
//! `application/problem+json`. Internal error text is logged, never returned.

use poem::{Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json, types::Example};
use shared::{db::DbError, statement::FieldError, storage::StorageError};

/// Seconds a client should wait before retrying when a dependency is down.
const RETRY_AFTER_SECS: u64 = 5;

/// Seconds a key at its outstanding-exports cap should wait: about the time a typical export
/// takes to finish and free a place.
pub const OUTSTANDING_RETRY_AFTER_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("missing, malformed, unknown or revoked API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Gone(&'static str),
    #[error("rate limit exceeded; retry in {0} s")]
    RateLimited(u64),
    /// The key already has this many exports of its own pending or processing.
    #[error("too many outstanding exports for this key (limit {0})")]
    TooManyOutstanding(i64),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::Validation(vec![e])
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() { Self::Unavailable(e.to_string()) } else { Self::Internal(e.into()) }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[oai(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Field-level problems, for validation errors.
    #[oai(default, skip_serializing_if_is_empty)]
    pub errors: Vec<ProblemField>,
}

/// One invalid field.
#[derive(Debug, Clone, Object)]
pub struct ProblemField {
    /// The request field, e.g. `date_from`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        let slug = title.to_lowercase().replace(' ', "-");
        Self {
            kind: format!("https://statement-export.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

impl Example for Problem {
    fn example() -> Self {
        let mut p = Self::new(StatusCode::BAD_REQUEST, "The request is invalid.");
        p.errors
            .push(ProblemField { field: "date_from".into(), message: "must not be after date_to".into() });
        p
    }
}

/// Every error an operation can answer with, documented in the spec.
#[derive(Debug, ApiResponse)]
pub enum ErrorResponse {
    /// The request is malformed or a field is invalid.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing, malformed, unknown or revoked API key.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The key may not access this account, or may not cancel an export it did not request.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such export (or not visible to this key).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The request body is larger than the API accepts (64 KiB).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The request conflicts with the resource's state (e.g. cancelling a finished export).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The export's file no longer exists in storage; request the statement again.
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(Json<Problem>),
    /// Too many requests for this API key, or too many of its exports still pending or
    /// processing (`MAX_OUTSTANDING_EXPORTS_PER_KEY`); retry after the given seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// Unexpected server error (details are in the server log).
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A dependency (database, storage) is unavailable; retry after the given seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

impl From<ApiError> for ErrorResponse {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Validation(fields) => {
                let mut p = Problem::new(StatusCode::BAD_REQUEST, "The request is invalid.");
                p.errors = fields
                    .into_iter()
                    .map(|f| ProblemField { field: f.field.into(), message: f.message })
                    .collect();
                Self::BadRequest(Json(p))
            }
            ApiError::Unauthorized => Self::Unauthorized(Json(Problem::new(
                StatusCode::UNAUTHORIZED,
                "Send a valid API key as `Authorization: Bearer sk_…`.",
            ))),
            ApiError::Forbidden(detail) => Self::Forbidden(Json(Problem::new(StatusCode::FORBIDDEN, detail))),
            ApiError::NotFound(detail) => Self::NotFound(Json(Problem::new(StatusCode::NOT_FOUND, detail))),
            ApiError::Conflict(detail) => Self::Conflict(Json(Problem::new(StatusCode::CONFLICT, detail))),
            ApiError::Gone(detail) => Self::Gone(Json(Problem::new(StatusCode::GONE, detail))),
            ApiError::RateLimited(seconds) => Self::TooManyRequests(
                Json(Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many requests for this API key; retry in {seconds} s."),
                )),
                seconds,
            ),
            ApiError::TooManyOutstanding(limit) => Self::TooManyRequests(
                Json(Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "This API key already has {limit} exports pending or processing, the most it may \
                         have; retry when one has finished (or cancel one)."
                    ),
                )),
                OUTSTANDING_RETRY_AFTER_SECS,
            ),
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                Self::Unavailable(
                    Json(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The service is temporarily unavailable; retry shortly.",
                    )),
                    RETRY_AFTER_SECS,
                )
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                Self::Internal(Json(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unexpected error occurred; it has been logged.",
                )))
            }
        }
    }
}

impl From<DbError> for ErrorResponse {
    fn from(e: DbError) -> Self {
        ApiError::from(e).into()
    }
}

/// Turns any error that did not come from our handlers (malformed JSON, missing header,
/// unknown path, wrong method, body too large) into a problem document.
pub async fn into_problem(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let detail = match status {
        StatusCode::NOT_FOUND => "No such resource.".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed on this resource.".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_owned(),
        StatusCode::UNAUTHORIZED => "Send a valid API key as `Authorization: Bearer sk_…`.".to_owned(),
        s if s.is_server_error() => {
            tracing::error!(error = %err, "unhandled error");
            "An unexpected error occurred; it has been logged.".to_owned()
        }
        _ => err.to_string(),
    };
    problem_response(Problem::new(status, detail))
}

pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "type": problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    });
    Response::builder().status(status).content_type("application/problem+json").body(body.to_string())
}
