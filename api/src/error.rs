//! The API's one error type, and the one place it becomes HTTP: RFC 9457
//! `application/problem+json`. Internal error text is logged, never returned.

use std::marker::PhantomData;

use poem::{IntoResponse, Response, error::ResponseError, http::StatusCode};
use poem_openapi::{
    ApiResponse, Object,
    error::{ParseParamError, ParsePathError, ParseRequestPayloadError},
    payload::Json,
    registry::{MetaResponses, Registry},
    types::{Example, ToJSON},
};
use shared::{db::DbError, signing::SignatureError, statement::FieldError, storage::StorageError};

/// Seconds a client should wait before retrying when a dependency is down.
const RETRY_AFTER_SECS: u64 = 5;

/// Seconds a client should wait before retrying a request whose `Idempotency-Key` is held by
/// a request in flight (a create or a cancel takes milliseconds).
const IN_FLIGHT_RETRY_AFTER_SECS: u64 = 1;

/// Seconds a key at its outstanding-exports cap should wait: about the time a typical export
/// takes to finish and free a place.
pub(crate) const OUTSTANDING_RETRY_AFTER_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// Well-formed, but refused for what it asks (a webhook URL the service may not reach).
    #[error("request refused")]
    Unprocessable(Vec<FieldError>),
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
    /// The `Idempotency-Key` was used before with another request.
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    /// The request first made with this `Idempotency-Key` is still running.
    #[error("idempotency key in use by a request in flight")]
    IdempotencyKeyInUse,
    #[error("rate limit exceeded; retry in {0} s")]
    RateLimited(u64),
    #[error("too many failed authentications from this address; retry in {0} s")]
    TooManyFailures(u64),
    /// The key already has this many exports of its own pending or processing.
    #[error("too many outstanding exports for this key (limit {0})")]
    TooManyOutstanding(i64),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    /// Storage did not answer a download.
    #[error("storage is unavailable: {0}")]
    StorageUnavailable(String),
    /// `/ready`: these dependencies (named, never their errors) are not ready.
    #[error("not ready: {}", .0.join("; "))]
    NotReady(Vec<String>),
    /// A download link whose signature is missing, wrong or expired.
    #[error(transparent)]
    BadLink(#[from] SignatureError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::Validation(vec![e])
    }
}

/// So that an extractor (a strict body, see `input.rs`) can fail with an `ApiError`; it comes
/// back in [`into_problem`] and becomes the same problem document a handler's error does.
impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::BadLink(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited(_) | Self::TooManyFailures(_) | Self::TooManyOutstanding(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable(_) | Self::StorageUnavailable(_) | Self::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
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
    #[oai(validator(minimum(value = "100"), maximum(value = "599")))]
    pub status: i32,
    /// What went wrong with this request.
    pub detail: String,
    /// Field-level problems: one per invalid field or parameter of a `400`, empty otherwise.
    /// Always present, so a client reads it without checking for it first.
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
            status: i32::from(status.as_u16()),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// The problem with a type of its own (`…/problems/{slug}`) rather than its status's: for
    /// problems a client tells apart from others of the same status.
    fn of_kind(self, slug: &str) -> Self {
        Self { kind: format!("https://statement-export.dev/problems/{slug}"), ..self }
    }

    /// The status as HTTP's type (500 for a number that is not one).
    fn status_code(&self) -> StatusCode {
        u16::try_from(self.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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

/// Every error the API answers with. An operation documents those it can answer with through
/// [`Errors`].
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
    /// The request body did not arrive within `API_BODY_TIMEOUT_SECS` of its head; the
    /// connection is closed.
    #[oai(status = 408, content_type = "application/problem+json")]
    RequestTimeout(Json<Problem>),
    /// The request body is larger than the API accepts (64 KiB).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The request conflicts with the resource's state (e.g. cancelling a finished export), or
    /// a request with the same `Idempotency-Key` is still being processed (then with
    /// `Retry-After`: retry to get its response).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>, #[oai(header = "Retry-After")] Option<i64>),
    /// The export's file no longer exists in storage; request the statement again.
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(Json<Problem>),
    /// The request is well-formed but cannot be acted on: the `Idempotency-Key` was already
    /// used with a different request (use a new key), or a webhook endpoint's URL may not
    /// receive webhooks (not https, or its host is or resolves to a private address; `errors`
    /// names the field).
    #[oai(status = 422, content_type = "application/problem+json")]
    UnprocessableEntity(Json<Problem>),
    /// Too many requests for this API key, too many of its exports still pending or processing
    /// (`MAX_OUTSTANDING_EXPORTS_PER_KEY`), or too many failed authentications from this
    /// address; retry after the given seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] i64),
    /// Unexpected server error (details are in the server log).
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A dependency (database, storage) is unavailable; retry after the given seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] i64),
}

/// `Retry-After` seconds as the header's documented type (`integer`, `format: int64`).
pub(crate) fn retry_after(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// The statuses of [`ErrorResponse`] that one operation can answer with.
pub trait ErrorStatuses {
    const STATUSES: &'static [u16];
    /// Those of them an operation taking an `Idempotency-Key` may answer as a replay of a kept
    /// response (documented with `Idempotent-Replayed`; see `idempotency::is_kept`).
    const REPLAYED: &'static [u16] = &[];
}

/// An operation's error: an [`ErrorResponse`] whose spec lists only the statuses `S` names, so
/// a generated client's error type for the operation holds what it can really get. Statuses
/// that the framework answers before a handler runs count too (a `400` for a malformed
/// parameter, a `401`, a `413`); the contract tests fail on any status a response has that its
/// operation does not list.
#[derive(Debug)]
pub struct Errors<S>(pub ErrorResponse, PhantomData<fn() -> S>);

impl<S: ErrorStatuses> ApiResponse for Errors<S> {
    fn meta() -> MetaResponses {
        let mut meta = ErrorResponse::meta();
        meta.responses.retain(|r| r.status.is_some_and(|status| S::STATUSES.contains(&status)));
        for response in &mut meta.responses {
            if response.status.is_some_and(|status| S::REPLAYED.contains(&status)) {
                response.headers.push(crate::idempotency::replayed_header());
            }
        }
        meta
    }

    fn register(registry: &mut Registry) {
        ErrorResponse::register(registry);
    }
}

impl<S> From<Errors<S>> for poem::Error {
    fn from(e: Errors<S>) -> Self {
        e.0.into()
    }
}

impl<S> From<ErrorResponse> for Errors<S> {
    fn from(e: ErrorResponse) -> Self {
        Self(e, PhantomData)
    }
}

impl<S> From<ApiError> for Errors<S> {
    fn from(e: ApiError) -> Self {
        ErrorResponse::from(e).into()
    }
}

impl<S> From<DbError> for Errors<S> {
    fn from(e: DbError) -> Self {
        ErrorResponse::from(e).into()
    }
}

impl ApiError {
    /// The problem document a client gets, and the seconds it should wait before retrying
    /// (`Retry-After`), if any. The one place that words what clients read; causes are logged
    /// here, never returned.
    pub(crate) fn problem(self) -> (Problem, Option<u64>) {
        let status = self.status();
        let (detail, retry_after) = match self {
            Self::Validation(fields) | Self::Unprocessable(fields) => {
                let detail = if status == StatusCode::BAD_REQUEST {
                    "The request is invalid."
                } else {
                    "The request is well-formed but cannot be accepted."
                };
                let mut p = Problem::new(status, detail);
                p.errors = fields
                    .into_iter()
                    .map(|f| ProblemField { field: f.field.into_owned(), message: f.message })
                    .collect();
                return (p, None);
            }
            Self::Unauthorized => ("Send a valid API key as `Authorization: Bearer sk_…`.".to_owned(), None),
            Self::Forbidden(detail)
            | Self::NotFound(detail)
            | Self::Conflict(detail)
            | Self::Gone(detail) => (detail.to_owned(), None),
            Self::IdempotencyKeyReused => {
                let detail = "This Idempotency-Key was already used with a different request (another \
                              operation, export or body). Use a new key for a new request.";
                return (Problem::new(status, detail).of_kind("idempotency-key-reused"), None);
            }
            Self::IdempotencyKeyInUse => {
                let detail = "A request with this Idempotency-Key is still being processed; retry \
                              shortly to get its response.";
                let problem = Problem::new(status, detail).of_kind("idempotency-key-in-use");
                return (problem, Some(IN_FLIGHT_RETRY_AFTER_SECS));
            }
            Self::BadLink(SignatureError::Expired) => ("The download link has expired.".to_owned(), None),
            Self::BadLink(SignatureError::Invalid) => ("The download link is not valid.".to_owned(), None),
            Self::RateLimited(seconds) => {
                (format!("Too many requests for this API key; retry in {seconds} s."), Some(seconds))
            }
            Self::TooManyFailures(seconds) => (
                format!("Too many failed authentications from this address; retry in {seconds} s."),
                Some(seconds),
            ),
            Self::TooManyOutstanding(limit) => (
                format!(
                    "This API key already has {limit} exports pending or processing, the most it may \
                     have; retry when one has finished (or cancel one)."
                ),
                Some(OUTSTANDING_RETRY_AFTER_SECS),
            ),
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                ("The service is temporarily unavailable; retry shortly.".to_owned(), Some(RETRY_AFTER_SECS))
            }
            Self::StorageUnavailable(cause) => {
                tracing::warn!(error = %cause, "storage unavailable for download");
                ("Storage is temporarily unavailable; retry shortly.".to_owned(), Some(RETRY_AFTER_SECS))
            }
            Self::NotReady(problems) => {
                (format!("Not ready: {}.", problems.join("; ")), Some(RETRY_AFTER_SECS))
            }
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                ("An unexpected error occurred; it has been logged.".to_owned(), None)
            }
        };
        (Problem::new(status, detail), retry_after)
    }
}

impl From<ApiError> for ErrorResponse {
    fn from(e: ApiError) -> Self {
        let (problem, seconds) = e.problem();
        let conflict_retry_after = seconds.map(retry_after);
        let retry_after = retry_after(seconds.unwrap_or(RETRY_AFTER_SECS));
        match problem.status_code() {
            StatusCode::BAD_REQUEST => Self::BadRequest(Json(problem)),
            StatusCode::UNAUTHORIZED => Self::Unauthorized(Json(problem)),
            StatusCode::FORBIDDEN => Self::Forbidden(Json(problem)),
            StatusCode::NOT_FOUND => Self::NotFound(Json(problem)),
            StatusCode::CONFLICT => Self::Conflict(Json(problem), conflict_retry_after),
            StatusCode::GONE => Self::Gone(Json(problem)),
            StatusCode::UNPROCESSABLE_ENTITY => Self::UnprocessableEntity(Json(problem)),
            StatusCode::TOO_MANY_REQUESTS => Self::TooManyRequests(Json(problem), retry_after),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(Json(problem), retry_after),
            _ => Self::Internal(Json(problem)),
        }
    }
}

impl From<DbError> for ErrorResponse {
    fn from(e: DbError) -> Self {
        ApiError::from(e).into()
    }
}

/// Turns any error that did not come from our handlers (a parameter or body that does not parse,
/// missing header, unknown path, wrong method, body too large) into a problem document.
pub(crate) async fn into_problem(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let err = match err.downcast::<ApiError>() {
        Ok(e) => return ErrorResponse::from(e).into_response(),
        Err(err) => err,
    };
    if let Some(fields) = parse_error_fields(&err) {
        return ErrorResponse::from(ApiError::Validation(fields)).into_response();
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

pub(crate) fn problem_response(problem: Problem) -> Response {
    let status = problem.status_code();
    let body = problem.to_json().unwrap_or_default();
    Response::builder().status(status).content_type("application/problem+json").body(body.to_string())
}

/// poem-openapi's parse errors as field errors a client developer can act on. Their own
/// reasons name poem-openapi's internal types (`string_uuid`, `optional_Status`,
/// `integer_int64`), so they are logged (debug), not returned.
fn parse_error_fields(err: &poem::Error) -> Option<Vec<FieldError>> {
    let (name, reason) = if let Some(e) = err.downcast_ref::<ParseParamError>() {
        (e.name, &e.reason)
    } else if let Some(e) = err.downcast_ref::<ParsePathError>() {
        // Named by `name_path_parameter` when its route is known.
        (e.name, &e.reason)
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        tracing::debug!(reason = %e.reason, "request body refused");
        return Some(vec![FieldError::new(
            "body",
            "must be a JSON object as the API specification describes",
        )]);
    } else {
        return None;
    };
    tracing::debug!(parameter = name, reason = %reason, "request parameter refused");
    Some(vec![FieldError::new(name, parameter_expectation(name))])
}

/// What each path and query parameter must be, in a client developer's words. A test checks
/// that every parameter of the spec is here.
const PARAMETERS: &[(&str, &str)] = &[
    ("reference_id", "must be a UUID, e.g. 550e8400-e29b-41d4-a716-446655440000"),
    ("status", "must be one of PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED, EXPIRED"),
    (
        "account_id",
        "must be 1 to 64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    ("table_name", "must name a configured table, e.g. bank_transactions"),
    ("created_from", "must be an RFC 3339 date-time, e.g. 2024-01-31T00:00:00Z"),
    ("created_before", "must be an RFC 3339 date-time, e.g. 2024-01-31T00:00:00Z"),
    ("limit", "must be a whole number from 1 to 200"),
    ("cursor", "must be a UUID: the previous page's next_cursor"),
    (
        crate::idempotency::HEADER,
        "must be sent at most once, as a quoted string (\"…\") or a bare token of 1 to 255 printable \
         ASCII characters",
    ),
    ("endpoint_id", "must be a UUID: a webhook endpoint's id"),
    ("delivery_id", "must be a UUID: a webhook delivery's id"),
    ("resend", "must be true or false"),
    ("schedule_id", "must be a UUID: a schedule's id"),
];

/// A path parameter's parse error (poem-openapi names path parameters `param0`, `param1`, … in
/// route order) as a `400` naming the parameter as `route`, the path template of the request's
/// route, names it.
pub(crate) fn name_path_parameter(err: poem::Error, route: &str) -> poem::Error {
    let Some(e) = err.downcast_ref::<ParsePathError>() else { return err };
    let index = e.name.strip_prefix("param").and_then(|i| i.parse::<usize>().ok());
    let Some(name) = index.and_then(|i| template_parameters(route).nth(i)) else { return err };
    tracing::debug!(parameter = name, reason = %e.reason, "request path parameter refused");
    ApiError::Validation(vec![FieldError::new(name.to_owned(), parameter_expectation(name))]).into()
}

/// The parameter names of a path template (`/api/export/{reference_id}` → `reference_id`).
fn template_parameters(route: &str) -> impl Iterator<Item = &str> {
    route.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn parameter_expectation(name: &str) -> &'static str {
    PARAMETERS
        .iter()
        .find(|(known, _)| *known == name)
        .map_or("is not valid; see the API specification", |(_, expected)| expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_of_the_spec_has_a_message() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_service().spec()).unwrap();
        let mut names = Vec::new();
        for operation in
            spec["paths"].as_object().unwrap().values().flat_map(|p| p.as_object().unwrap().values())
        {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                names.push(parameter["name"].as_str().unwrap().to_owned());
            }
        }
        assert!(names.contains(&"limit".to_owned()), "{names:?}");
        for name in names {
            assert!(PARAMETERS.iter().any(|(known, _)| *known == name), "no message for parameter {name}");
        }
    }

    #[test]
    fn path_parameters_are_named_as_their_route_names_them() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_service().spec()).unwrap();
        let mut seen = 0;
        for path in spec["paths"].as_object().unwrap().keys() {
            for (i, name) in template_parameters(path).enumerate() {
                let routed = Box::leak(format!("param{i}").into_boxed_str());
                let err = poem::Error::from(ParsePathError { name: routed, reason: "bad".into() });
                let named = name_path_parameter(err, path);
                let Some(ApiError::Validation(fields)) = named.downcast_ref::<ApiError>() else {
                    panic!("{path}: {routed} not named")
                };
                assert_eq!(fields[0].field, name, "{path}");
                assert!(PARAMETERS.iter().any(|(known, _)| *known == name), "no message for {name}");
                seen += 1;
            }
        }
        assert!(seen >= 3, "the spec has path parameters");
    }

    #[test]
    fn the_status_message_lists_every_status() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_service().spec()).unwrap();
        let statuses: Vec<&str> = spec["components"]["schemas"]["Status"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(parameter_expectation("status"), format!("must be one of {}", statuses.join(", ")));
    }
}
