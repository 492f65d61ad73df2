//! `Idempotency-Key` on `POST /api/export` and `POST /api/export/{reference_id}/cancel`
//! (draft-ietf-httpapi-idempotency-key-header): a client that retries a request with the same
//! key gets the first request's response again instead of a second export or cancel.
//!
//! - The key is read by [`IdempotencyKeyHeader`]: the draft's sf-string (`"…"`, with `\"` and
//!   `\\` escapes) or a bare token (what Stripe's clients send); both name the same key, 1-255
//!   printable ASCII characters. Anything else, or the header sent twice, is a 400 naming it.
//! - Keys are scoped per API key and kept `IDEMPOTENCY_KEY_TTL_SECS` (24 h) from first use.
//! - A request is compared by its fingerprint: method and route, path parameters and the
//!   body's canonical form (its fields with defaults applied, so `"format": "csv"` and no
//!   `format` are the same request). The same key with another request is 422; while the
//!   first request still runs, 409 with `Retry-After: 1`.
//! - The key is claimed once the request has been authenticated and validated (and, for a
//!   create, the key's access to the account checked), just before it would change anything:
//!   a request refused before that (400, 401, 403 for the account, 429 for the rate limit) is
//!   not remembered and may be corrected and retried with the same key.
//! - What is kept ([`is_kept`]): every response but those a retry may change, 5xx (a
//!   dependency down) and 429 (the outstanding-exports cap); for those the claim is released
//!   and a retry runs again. Kept are the status, the body byte for byte and `Content-Type`,
//!   `Location` and `Retry-After`; a replay adds `Idempotent-Replayed: true`.
//! - The claimed request runs in a task of its own, so its response is kept even when the
//!   client hangs up mid-request (the very case a retry is for).
//!
//! Requests without the header do none of this: no table, no task, no extra copy.

use std::future::Future;

use deadpool_postgres::Pool;
use poem::{Body, IntoResponse, Request, RequestBody, Response, http::StatusCode};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions,
    error::ParseParamError,
    registry::{MetaHeader, MetaParamIn, MetaResponses, MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};
use shared::idempotency::{self, Claim, Claimed, KeyedRequest, StoredResponse};

use crate::{AppState, error::ApiError};

/// The request header.
pub(crate) const HEADER: &str = "Idempotency-Key";

/// The response header that marks a replay.
pub(crate) const REPLAYED: &str = "Idempotent-Replayed";

/// The headers of a response that are kept with it (the rest are the connection's or the
/// request's, such as `X-Request-Id`).
const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "retry-after"];

/// The values [`IdempotencyKey::parse`] accepts, for the spec: an sf-string of 1-255
/// characters, or a bare token of 1-255 that does not start with `"` (nor, the field's
/// whitespace being trimmed, start or end with a space). A test checks that both agree.
pub(crate) const PATTERN: &str = r#"^(?:"(?:[ !#-\[\]-~]|\\["\\]){1,255}"|[!#-~](?:[ -~]{0,253}[!-~])?)$"#;

/// An idempotency key as a client chose it: the sf-string's content, or the bare token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The most characters a key may have (Stripe's limit too).
    const MAX_LEN: usize = 255;

    /// The key a header value (surrounding spaces aside) names, if it is a valid one.
    pub(crate) fn parse(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw.trim_ascii()).ok()?;
        let key = match text.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => text.to_owned(),
        };
        let printable = key.bytes().all(|b| (b' '..=b'~').contains(&b));
        (printable && (1..=Self::MAX_LEN).contains(&key.len())).then_some(Self(key))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The content of an sf-string (RFC 8941 §3.3.3) whose opening quote is gone: printable
/// ASCII, `\"` and `\\` as the only escapes, the closing quote last.
fn unquote(rest: &str) -> Option<String> {
    let mut content = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => content.push(escaped),
                _ => return None,
            },
            '"' => return chars.next().is_none().then_some(content),
            c if (' '..='~').contains(&c) => content.push(c),
            _ => return None,
        }
    }
}

/// The optional `Idempotency-Key` request header, read from the raw header values: a value
/// that is not text (which poem-openapi's `Header` would skip as if absent) or a second value
/// is refused, not ignored.
pub(crate) struct IdempotencyKeyHeader(pub(crate) Option<IdempotencyKey>);

impl<'a> ApiExtractor<'a> for IdempotencyKeyHeader {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;

    type ParamType = String;
    type ParamRawType = ();

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Header)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(PATTERN.to_owned()),
            ..MetaSchema::new("string")
        })))
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let mut values = request.headers().get_all(HEADER).iter();
        let Some(first) = values.next() else {
            return Ok(Self(None));
        };
        match IdempotencyKey::parse(first.as_bytes()) {
            Some(key) if values.next().is_none() => Ok(Self(Some(key))),
            _ => Err(ParseParamError {
                name: HEADER,
                reason: "not a valid idempotency key, or sent twice".into(),
            }
            .into()),
        }
    }
}

/// An operation's answer when it takes an `Idempotency-Key`: the typed response when the
/// request had none, or the response made (or replayed) under its key. Documented as `T`, with
/// `Idempotent-Replayed` on each of its responses.
pub(crate) enum Idempotent<T> {
    /// No key: answered as usual.
    Fresh(T),
    /// Under a key.
    Keyed(Response),
}

impl<T: ApiResponse> ApiResponse for Idempotent<T> {
    fn meta() -> MetaResponses {
        let mut meta = T::meta();
        for response in &mut meta.responses {
            response.headers.push(replayed_header());
        }
        meta
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: IntoResponse> IntoResponse for Idempotent<T> {
    fn into_response(self) -> Response {
        match self {
            Self::Fresh(response) => response.into_response(),
            Self::Keyed(response) => response,
        }
    }
}

/// `Idempotent-Replayed` as documented on a response that may be a replay.
pub(crate) fn replayed_header() -> MetaHeader {
    MetaHeader {
        name: REPLAYED.to_owned(),
        description: Some(
            "`true` when this is the stored response to an earlier request with the same \
             `Idempotency-Key` (absent otherwise)."
                .to_owned(),
        ),
        required: false,
        deprecated: false,
        schema: bool::schema_ref(),
    }
}

/// Whether a response is kept for the key's retries: all but those a retry may change (a
/// dependency down, 5xx; a limit, 429; 401 and 408 cannot follow a claim but would not be
/// final either).
pub(crate) fn is_kept(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && !matches!(
                status,
                StatusCode::UNAUTHORIZED | StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
            ))
}

/// A handler's result as the response it becomes (an error as its problem document).
pub(crate) fn respond<T: IntoResponse>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(response) => response.into_response(),
        Err(e) => crate::error::ErrorResponse::from(e).into_response(),
    }
}

impl AppState {
    /// Answers a request made with `key` by API key `api_key_id`: the stored response when the
    /// same request (`parts`: its route, path parameters and canonical body) was answered
    /// before, 422 when the key was used for another request, 409 while that request runs;
    /// otherwise claims the key, runs `operation` (to its end, in a task of its own) and keeps
    /// its response if [`is_kept`].
    pub(crate) async fn idempotently(
        &self,
        api_key_id: uuid::Uuid,
        key: &IdempotencyKey,
        parts: &[&str],
        operation: impl Future<Output = Response> + Send + 'static,
    ) -> Result<Response, ApiError> {
        let fingerprint = idempotency::fingerprint(parts);
        let request = KeyedRequest { api_key_id, key: key.as_str(), fingerprint: &fingerprint };
        let claimed = idempotency::claim(&self.db().await?, request, self.idempotency_key_ttl).await?;
        let claim = match claimed {
            Claimed::Run(claim) => claim,
            Claimed::Replay(stored) => return Ok(replay(stored)),
            Claimed::Mismatch => return Err(ApiError::IdempotencyKeyReused),
            Claimed::InFlight => return Err(ApiError::IdempotencyKeyInUse),
        };
        let pool = self.pool.clone();
        // In the request's span, so its log lines keep their request id.
        let run = async move { finish(&pool, claim, operation.await).await };
        let task = tokio::spawn(tracing::Instrument::in_current_span(run));
        task.await.map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("idempotent request task")))
    }
}

/// Keeps `response` under `claim` (or releases the claim when it is not kept) and returns it.
/// A failure to write is logged: the response still goes to the client, and the key stays
/// claimed until its lease lapses (then a retry runs again).
async fn finish(pool: &Pool, claim: Claim, response: Response) -> Response {
    let status = response.status();
    if !is_kept(status) {
        let released = async { idempotency::release(&pool.get().await?, &claim).await }.await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release an idempotency key; it is free once its lease lapses");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match body.into_bytes().await {
        Ok(body) => body,
        Err(e) => {
            // In-memory bodies cannot fail to read; should one, the client gets a 500 and the
            // key is free once its lease lapses.
            return respond::<Response>(Err(ApiError::Internal(
                anyhow::Error::new(e).context("reading a response to keep"),
            )));
        }
    };
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    let stored = StoredResponse { status: status.as_u16(), headers, body: body.to_vec() };
    let kept = async { idempotency::store(&pool.get().await?, &claim, &stored).await }.await;
    match kept {
        Ok(true) => {}
        Ok(false) => tracing::warn!("an idempotency key's claim lapsed before its response was kept"),
        Err(e) => {
            tracing::warn!(error = %e, "could not keep a response under its idempotency key; a retry runs again once the lease lapses")
        }
    }
    Response::from_parts(parts, Body::from(body))
}

/// A stored response as it is replayed.
fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder().status(status);
    for (name, value) in &stored.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response.header(REPLAYED, "true").body(stored.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> Option<String> {
        IdempotencyKey::parse(raw.as_bytes()).map(|k| k.0)
    }

    #[test]
    fn sf_strings_and_bare_tokens_name_the_same_keys() {
        assert_eq!(
            key(r#""8e03978e-40d5-43e8-bc93-6894a57f9324""#).as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(
            key("8e03978e-40d5-43e8-bc93-6894a57f9324").as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(key(r#""a \"quoted\" \\ key""#).as_deref(), Some(r#"a "quoted" \ key"#));
        assert_eq!(key(r#"bare"inside"#).as_deref(), Some(r#"bare"inside"#));
        assert_eq!(key("  padded\t").as_deref(), Some("padded"));
        assert_eq!(key(&"k".repeat(255)).map(|k| k.len()), Some(255));
        assert_eq!(key(&format!("\"{}\"", "k".repeat(255))).map(|k| k.len()), Some(255));
    }

    #[test]
    fn anything_else_is_refused() {
        for raw in [
            "",
            "\"\"",
            "\"",
            "\"unterminated",
            "\"trailing\" text",
            r#""bad \n escape""#,
            "tab\tinside",
            "caf\u{e9}",
            "\u{7f}",
            &"k".repeat(256),
            &format!("\"{}\"", "k".repeat(256)),
        ] {
            assert_eq!(key(raw), None, "{raw:?}");
        }
        assert_eq!(IdempotencyKey::parse(b"\xff\xfe"), None);
    }

    #[test]
    fn the_spec_pattern_accepts_what_the_parser_accepts() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        let long = "k".repeat(255);
        let too_long = "k".repeat(256);
        let quoted_long = format!("\"{long}\"");
        let quoted_too_long = format!("\"{too_long}\"");
        for sample in [
            "abc",
            "\"abc\"",
            "a b",
            "\"a b\"",
            r#""esc \" \\""#,
            r#""bad \x""#,
            "bare\"quote",
            "\"",
            "\"\"",
            "\"open",
            "\"a\"b",
            "x",
            "!",
            "~",
            &long,
            &too_long,
            &quoted_long,
            &quoted_too_long,
            "caf\u{e9}",
            "a\tb",
        ] {
            assert_eq!(pattern.is_match(sample), key(sample).is_some(), "{sample:?}");
        }
    }

    #[test]
    fn only_final_answers_are_kept() {
        for kept in [200, 202, 403, 404, 409, 410] {
            assert!(is_kept(StatusCode::from_u16(kept).unwrap()), "{kept}");
        }
        for retried in [401, 408, 429, 500, 503] {
            assert!(!is_kept(StatusCode::from_u16(retried).unwrap()), "{retried}");
        }
    }
}
