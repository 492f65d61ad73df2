//! The operator dashboard: server-rendered maud pages that work without JavaScript and load
//! nothing from elsewhere (CSS and the refresh script are embedded in the binary).
//!
//! Operators sign in through the organisation's OpenID provider (`sign_in`, `crate::oidc`), or
//! with an admin API key when break-glass sign-in is enabled, and get a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` when `PUBLIC_BASE_URL` is https). Every page needs a
//! session (otherwise a redirect to the sign-in page), every form carries the session's CSRF
//! token (otherwise 403), and every action needs a role: `viewer` reads, `operator` also retries
//! and cancels, `admin` also manages keys. Every action, allowed or refused, is recorded in the
//! audit trail (`shared::audit`), in the transaction that performs it.

pub(crate) mod audit;
mod charts;
pub(crate) mod export_list;
pub(crate) mod exports;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod layout;
pub(crate) mod overview;
pub(crate) mod queue;
pub(crate) mod schedules;
pub(crate) mod sign_in;
pub(crate) mod sso;
pub(crate) mod webhooks;

use poem::{
    Body, IntoResponse, Request, Response,
    http::{StatusCode, header},
};
use shared::{
    audit::{Event, Outcome},
    db::DbError,
    operators::DashboardRole,
    sessions::Session,
};

use crate::{AppState, client_addr::ClientAddr};

/// Cookie holding the session token.
const SESSION_COOKIE: &str = "stmt_session";
/// Where a request without a session is sent.
pub(crate) const SIGN_IN_PATH: &str = "/dashboard/sign-in";
/// Where single sign-on starts (a redirect to the provider).
pub(crate) const SSO_START_PATH: &str = "/dashboard/sign-in/sso";
/// Where the provider sends the browser back (the redirect URI registered with it).
pub(crate) const SSO_CALLBACK_PATH: &str = "/dashboard/sign-in/callback";

/// No framing, no foreign scripts or styles, no referrer (pages carry signed download links).
pub(crate) fn security_headers() -> poem::middleware::SetHeader {
    poem::middleware::SetHeader::new()
        .appending(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        .appending(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .appending(header::REFERRER_POLICY, "no-referrer")
        .appending(header::X_FRAME_OPTIONS, "DENY")
}

/// Why a dashboard request did not get its page. Mapped to a response once, below.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("sign-in required")]
    SignIn,
    #[error("the form is missing its CSRF token or it does not match this session")]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("too many sign-in attempts")]
    TooManyAttempts,
    #[error("the session's role may not do this (it needs {needed})")]
    Forbidden { needed: DashboardRole },
    #[error("sign-in refused")]
    SignInRefused(&'static str),

    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::SignIn => {
                return Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, SIGN_IN_PATH)
                    .header(header::CACHE_CONTROL, "no-store")
                    .finish();
            }
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this dashboard. Reload the page and try again."
                    .to_owned(),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "There is nothing here.".to_owned()),
            Self::TooManyAttempts => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts at once; wait a moment and try again.".to_owned(),
            ),
            Self::Forbidden { needed } => (
                StatusCode::FORBIDDEN,
                format!(
                    "Your role does not allow this: it needs the {needed} role. The attempt was recorded."
                ),
            ),
            Self::SignInRefused(why) => (StatusCode::FORBIDDEN, (*why).to_owned()),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message.clone()),
            Self::Db(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "dashboard: Postgres unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "Postgres is not answering; try again shortly.".to_owned())
            }
            Self::Db(e) => {
                tracing::error!(error = %e, "dashboard: database error");
                (StatusCode::INTERNAL_SERVER_ERROR, "The database refused the request.".to_owned())
            }
        };
        let page = layout::bare(status.canonical_reason().unwrap_or("Error"), &message);
        let mut response = layout::html(page);
        response.set_status(status);
        response
    }
}

/// A handler's outcome: the page, or the error whose page answers instead.
pub(crate) type Page = Result<Response, DashboardError>;

/// A dashboard error travels as its finished HTML page, so the API's problem documents
/// (`error::into_problem`) leave it as it is.
impl From<DashboardError> for poem::Error {
    fn from(e: DashboardError) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

/// The signed-in operator behind a request.
pub(crate) struct Admin {
    pub session: Session,
    token: String,
    /// Where the request came from (for the audit trail).
    pub client: ClientAddr,
}

impl Admin {
    /// An audit event of this operator, from this request's client.
    pub(crate) fn event(&self, action: &'static str, target: Option<String>, outcome: Outcome) -> Event {
        Event::new(self.session.actor(), action, target, outcome).from_client(self.client)
    }

    /// Whether this session's role allows what `needed` allows.
    pub(crate) fn may(&self, needed: DashboardRole) -> bool {
        self.session.role >= needed
    }

    /// Passes when this session's role is `needed` or higher; otherwise the refused attempt
    /// (`action` on `target`) is recorded and the answer is 403.
    pub(crate) async fn require(
        &self,
        state: &AppState,
        needed: DashboardRole,
        action: &'static str,
        target: Option<String>,
    ) -> Result<(), DashboardError> {
        if self.may(needed) {
            return Ok(());
        }
        let event = self.event(action, target, Outcome::Denied).with_details(serde_json::json!({
            "role": self.session.role.as_str(),
            "needs": needed.as_str(),
        }));
        let mut db = state.db_for_dashboard().await?;
        shared::audit::record_alone(&mut db, &[event]).await?;
        tracing::warn!(action, role = %self.session.role, needed = %needed, "dashboard: action refused to the session's role");
        Err(DashboardError::Forbidden { needed })
    }
}

fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The request's session, or [`DashboardError::SignIn`].
pub(crate) async fn signed_in(state: &AppState, req: &Request) -> Result<Admin, DashboardError> {
    let name = state.cookie_name(SESSION_COOKIE);
    let token = cookie(req, &name).filter(|t| !t.is_empty()).ok_or(DashboardError::SignIn)?;
    let client = ClientAddr::of(req, &state.trusted_proxies);
    let find = async {
        let db = state.db_for_dashboard().await?;
        Ok::<_, DashboardError>(shared::sessions::find(&db, token, state.admin_key_sign_in).await?)
    };
    let session = state.session(token, client, find).await?.ok_or(DashboardError::SignIn)?;
    Ok(Admin { session, token: token.to_owned(), client })
}

/// A submitted form's fields.
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
async fn read_fields(body: Body) -> Result<Fields, DashboardError> {
    let bytes = body
        .into_bytes_limit(crate::MAX_BODY_BYTES)
        .await
        .map_err(|_| DashboardError::BadRequest("The form could not be read.".into()))?;
    let fields = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| DashboardError::BadRequest("The form could not be read.".into()))?;
    Ok(Fields(fields))
}

/// A form post from a signed-in operator: session first (redirect), then the CSRF token (403).
pub(crate) async fn signed_form(
    state: &AppState,
    req: &Request,
    body: Body,
) -> Result<(Admin, Fields), DashboardError> {
    let admin = signed_in(state, req).await?;
    let fields = read_fields(body).await.map_err(|_| DashboardError::Csrf)?;
    let sent = fields.get("csrf").unwrap_or_default();
    if !constant_time_eq(sent.as_bytes(), admin.session.csrf_token.as_bytes()) {
        return Err(DashboardError::Csrf);
    }
    Ok((admin, fields))
}

/// A form posted by a signed-in operator to `…/{id}/{action}` (a button on a list): the session
/// and the CSRF token are checked as [`signed_form`] does, then the id is read as `T` (an id
/// that does not parse names nothing: not found).
pub(crate) struct SignedAction<T> {
    pub(crate) admin: Admin,
    pub(crate) id: T,
    pub(crate) action: String,
}

impl<'a, T: std::str::FromStr> poem::FromRequest<'a> for SignedAction<T> {
    async fn from_request(req: &'a Request, body: &mut poem::RequestBody) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .ok_or_else(|| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))?;
        let poem::web::Path((id, action)) =
            poem::web::Path::<(String, String)>::from_request(req, body).await?;
        let (admin, _) = signed_form(state, req, body.take()?).await?;
        let id = id.parse().map_err(|_| DashboardError::NotFound)?;
        Ok(Self { admin, id, action })
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of query parameter `name`, if the query holds it.
fn query_param(req: &Request, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query()?).ok()?;
    pairs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Query parameter `name`, trimmed, if present and not empty (a filter form's field).
fn query_text(req: &Request, name: &str) -> Option<String> {
    query_param(req, name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Query parameter `name` as a date (`2026-11-30`), if given; anything else is 400.
fn query_date(req: &Request, name: &str) -> Result<Option<time::Date>, DashboardError> {
    query_text(req, name)
        .map(|v| {
            time::Date::parse(&v, time::macros::format_description!("[year]-[month]-[day]"))
                .map_err(|_| DashboardError::BadRequest(format!("{name} must be a date such as 2026-11-30.")))
        })
        .transpose()
}

/// The outcome code a page was redirected with (`?notice=…`); pages map codes to their own
/// fixed messages, so no user text travels in the URL.
fn notice_code(req: &Request) -> Option<&str> {
    req.uri().query()?.strip_prefix("notice=")
}

/// 303 to `location` (after a form post, so reloading the page does not post again).
pub(crate) fn see_other(location: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location).finish()
}

impl AppState {
    /// A pooled connection for a dashboard page.
    async fn db_for_dashboard(&self) -> Result<deadpool_postgres::Object, DashboardError> {
        Ok(self.pool.get().await.map_err(DbError::from)?)
    }

    /// Whether cookies must be `Secure` (the service is reached over TLS).
    fn secure_cookies(&self) -> bool {
        self.public_base_url.starts_with("https://")
    }

    /// A cookie's name: `__Host-` prefixed when cookies are `Secure`.
    fn cookie_name(&self, base: &str) -> String {
        if self.secure_cookies() { format!("__Host-{base}") } else { base.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let req =
            Request::builder().header(header::COOKIE, "other=1; stmt_session_x=2; stmt_session=abc").finish();
        assert_eq!(cookie(&req, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&req, "missing"), None);
    }

    #[test]
    fn csrf_comparison_needs_the_whole_token() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
    }
}
