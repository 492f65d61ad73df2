//! Sign-in with an admin API key, and sign-out.
//!
//! The sign-in form is protected against cross-site posting by a double-submit token (a
//! `SameSite=Strict` cookie that the form must repeat). A failed attempt is answered after a
//! delay, and only one failure waits at a time per process: others meanwhile get 429 at once.
//! Guessing stays slow even in parallel, and no waiting attempt holds a database connection.

use std::time::Duration;

use maud::html;
use poem::{
    Body, Request, Response, handler,
    http::{StatusCode, header},
    web::Data,
};
use shared::api_keys::{self, Role};

use super::{DashboardError, Page, SESSION_COOKIE, cookie, layout, read_fields, see_other, signed_form};
use crate::{AppState, auth::LookupError, client_addr::ClientAddr};

/// Cookie carrying the sign-in form's anti-forgery token.
const SIGN_IN_COOKIE: &str = "stmt_signin";
/// How long a failed sign-in waits before it is answered.
pub(crate) const FAILURE_DELAY: Duration = Duration::from_secs(1);

#[handler]
pub(crate) async fn form(Data(state): Data<&AppState>) -> Response {
    sign_in_page(state, None)
}

fn sign_in_page(state: &AppState, failure: Option<&str>) -> Response {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let body = html! {
        @if let Some(message) = failure { p.notice.bad { (message) } }
        form method="post" action=(super::SIGN_IN_PATH) {
            input type="hidden" name="csrf" value=(token);
            label for="api_key" { "Admin API key" }
            input #api_key type="password" name="api_key" autocomplete="off" required;
            p.hint { "Create one with " code { "statement-api keys create --name you --role admin" } "." }
            button.primary type="submit" { "Sign in" }
        }
    };
    let mut response = layout::html(layout::bare_with("Sign in", body));
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(state, SIGN_IN_COOKIE, &token, 900).parse().expect("cookie is ASCII"),
    );
    if failure.is_some() {
        response.set_status(StatusCode::UNAUTHORIZED);
    }
    response
}

#[handler]
pub(crate) async fn submit(Data(state): Data<&AppState>, req: &Request, body: Body) -> Page {
    let fields = read_fields(body).await?;
    let expected = cookie(req, &state.cookie_name(SIGN_IN_COOKIE)).unwrap_or_default();
    let sent = fields.get("csrf").unwrap_or_default();
    if expected.is_empty() || !super::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(DashboardError::Csrf);
    }
    let candidate = fields.get("api_key").unwrap_or_default().trim();
    let client = ClientAddr::of(req, &state.trusted_proxies);
    // Through the same memory and failure budget as the API's keys.
    let key = match api_keys::is_well_formed(candidate) {
        true => state.active_key(candidate, client).await.map_err(|e| match e {
            LookupError::TooManyFailures(_) => DashboardError::TooManyAttempts,
            LookupError::Db(e) => DashboardError::Db(e),
        })?,
        false => None,
    };
    // Admin keys are never restricted to accounts; one that somehow is does not sign in.
    let Some(key) = key.filter(|k| k.role == Role::Admin && k.allowed_accounts.is_none()) else {
        let Ok(_turn) = state.sign_in_failures.try_lock() else {
            tracing::warn!("dashboard sign-in refused: another failed attempt is waiting");
            return Err(DashboardError::TooManyAttempts);
        };
        tokio::time::sleep(FAILURE_DELAY).await;
        tracing::warn!("dashboard sign-in refused");
        return Ok(sign_in_page(state, Some("That is not an active admin API key.")));
    };
    let db = state.db_for_dashboard().await?;
    api_keys::touch(&db, key.id).await?;
    let new = shared::sessions::create(&db, key.id, &key.name, state.admin_session_ttl).await?;
    state.credentials.session_created(&new.token);
    tracing::info!(api_key.id = %key.id, "dashboard sign-in");
    let mut response = see_other("/dashboard");
    let max_age = state.admin_session_ttl.as_secs();
    let headers = response.headers_mut();
    for cookie in [
        cookie_header(state, SESSION_COOKIE, &new.token, max_age),
        cookie_header(state, SIGN_IN_COOKIE, "", 0),
    ] {
        headers.append(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
    }
    Ok(response)
}

#[handler]
pub(crate) async fn sign_out(Data(state): Data<&AppState>, req: &Request, body: Body) -> Page {
    let (admin, _) = signed_form(state, req, body).await?;
    let db = state.db_for_dashboard().await?;
    shared::sessions::delete(&db, &admin.token).await?;
    let mut response = see_other(super::SIGN_IN_PATH);
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(state, SESSION_COOKIE, "", 0).parse().expect("cookie is ASCII"),
    );
    Ok(response)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, and behind TLS `Secure`
/// with the `__Host-` name prefix (no sibling subdomain can plant it).
fn cookie_header(state: &AppState, name: &str, value: &str, max_age: u64) -> String {
    let name = state.cookie_name(name);
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if state.secure_cookies() {
        cookie.push_str("; Secure");
    }
    cookie
}
