//! The sign-in page (single sign-on, `super::sso`, and, when `DASHBOARD_ADMIN_KEY_SIGN_IN`
//! enables it, break-glass sign-in with an admin API key), and sign-out, which ends the
//! provider's session too when it publishes an `end_session_endpoint`. Every sign-in, refused or
//! not, and every sign-out is recorded in the audit trail.
//!
//! The key form is protected against cross-site posting by a double-submit token (a
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
use serde_json::json;
use shared::{
    api_keys::{self, Role},
    audit::{self, Actor, ActorKind, Event, Outcome},
    operators::DashboardRole,
    sessions::{self, Holder},
};
use time::OffsetDateTime;

use super::{
    DashboardError, Page, SESSION_COOKIE, cookie, layout, query_param, read_fields, see_other, signed_form,
    sso::PENDING_COOKIE,
};
use crate::{AppState, auth::LookupError, client_addr::ClientAddr};

/// Cookie carrying the key form's anti-forgery token.
const SIGN_IN_COOKIE: &str = "stmt_signin";
/// Cookie saying this browser signed in through single sign-on: the sign-in page then asks
/// the provider silently instead of showing itself.
pub(super) const SSO_HINT_COOKIE: &str = "stmt_sso";
pub(super) const SSO_HINT_SECS: u64 = 30 * 86_400;
/// How long a failed key sign-in waits before it is answered.
pub(crate) const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// `GET /dashboard/sign-in`.
#[handler]
pub(crate) async fn form(Data(state): Data<&AppState>, req: &Request) -> Response {
    let ended = query_param(req, "ended").is_some();
    let hinted = cookie(req, &state.cookie_name(SSO_HINT_COOKIE)) == Some("1");
    // A sign-in that left for the provider and never came back (the provider is down, say):
    // show the page rather than sending the browser there again.
    let under_way = cookie(req, &state.cookie_name(PENDING_COOKIE)).is_some_and(|v| !v.is_empty());
    if state.oidc.is_some() && hinted && !ended && !under_way {
        return see_other(&format!("{}?silent=1", super::SSO_START_PATH));
    }
    let notice = ended.then_some("Your single sign-on session has ended: sign in again.");
    sign_in_page(state, notice, None)
}

pub(super) fn sign_in_page(state: &AppState, notice: Option<&str>, failure: Option<&str>) -> Response {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let body = html! {
        @if let Some(message) = failure { p.notice.bad { (message) } }
        @if let Some(message) = notice { p.notice { (message) } }
        @if let Some(oidc) = &state.oidc {
            p { a.button.primary #sso href=(super::SSO_START_PATH) { "Sign in with " (oidc.provider_name()) } }
        }
        @if state.admin_key_sign_in {
            form method="post" action=(super::SIGN_IN_PATH) {
                input type="hidden" name="csrf" value=(token);
                label for="api_key" { "Admin API key (break-glass)" }
                input #api_key type="password" name="api_key" autocomplete="off" required;
                p.hint { "For emergencies: a sign-in with a key is recorded as break-glass use. Create one with "
                    code { "statement-api keys create --name you --role admin" } "." }
                button.primary type="submit" { "Sign in with a key" }
            }
        }
        @if state.oidc.is_none() && !state.admin_key_sign_in {
            p.notice.bad {
                "No sign-in method is configured: set " code { "OIDC_ISSUER_URL" }
                " (single sign-on) or " code { "DASHBOARD_ADMIN_KEY_SIGN_IN=true" } "."
            }
        }
    };
    let mut response = layout::html(layout::bare_with("Sign in", body));
    if state.admin_key_sign_in {
        set_cookie(&mut response, state, SIGN_IN_COOKIE, &token, 900);
    }
    if failure.is_some() {
        response.set_status(StatusCode::UNAUTHORIZED);
    }
    response
}

/// Someone the audit trail cannot name: a refusal before anyone was identified.
pub(super) fn unidentified(kind: ActorKind) -> Actor {
    Actor { kind, id: "-".into(), name: "(unidentified)".into() }
}

/// `POST /dashboard/sign-in`: break-glass sign-in with an admin key.
#[handler]
pub(crate) async fn submit(Data(state): Data<&AppState>, req: &Request, body: Body) -> Page {
    if !state.admin_key_sign_in {
        return Err(DashboardError::NotFound);
    }
    let fields = read_fields(body).await?;
    let expected = cookie(req, &state.cookie_name(SIGN_IN_COOKIE)).unwrap_or_default();
    let sent = fields.get("csrf").unwrap_or_default();
    if expected.is_empty() || !super::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(DashboardError::Csrf);
    }
    let candidate = fields.get("api_key").unwrap_or_default().trim();
    let client = ClientAddr::of(req, &state.trusted_proxies);
    // Through the same memory and failure budget as the API's keys.
    let well_formed = api_keys::is_well_formed(candidate);
    let key = match well_formed {
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
        // The display prefix of a well-formed key is no secret (it names keys everywhere).
        let mut actor = unidentified(ActorKind::BreakGlass);
        if let Some(prefix) = api_keys::prefix_of(candidate) {
            actor.name = format!("{prefix}…");
        }
        let event = Event::new(actor, "sign_in", None, Outcome::Denied)
            .from_client(client)
            .with_details(json!({ "method": "admin_key" }));
        audit::record_alone(&mut state.db_for_dashboard().await?, &[event]).await?;
        tokio::time::sleep(FAILURE_DELAY).await;
        tracing::warn!("dashboard sign-in refused");
        return Ok(sign_in_page(state, None, Some("That is not an active admin API key.")));
    };
    let mut db = state.db_for_dashboard().await?;
    let tx = db.transaction().await.map_err(shared::db::DbError::from)?;
    api_keys::touch(&tx, key.id).await?;
    let holder = Holder::Key { api_key_id: key.id, name: sessions::key_label(&key.name, &key.prefix) };
    let expires_at = OffsetDateTime::now_utc() + state.admin_session_ttl;
    let new = sessions::create(&tx, holder, DashboardRole::Admin, expires_at, None).await?;
    let event =
        Event::new(new.session.actor(), "sign_in", Some(format!("api_key:{}", key.id)), Outcome::Success)
            .from_client(client)
            .with_details(json!({ "method": "admin_key", "role": "admin" }));
    audit::record(&tx, &[event]).await?;
    tx.commit().await.map_err(shared::db::DbError::from)?;
    state.credentials.session_created(&new.token);
    tracing::info!(api_key.id = %key.id, "dashboard sign-in (break-glass admin key)");
    let mut response = see_other("/dashboard");
    set_cookie(&mut response, state, SESSION_COOKIE, &new.token, state.admin_session_ttl.as_secs());
    clear_cookies(&mut response, state, &[SIGN_IN_COOKIE]);
    Ok(response)
}

/// `POST /dashboard/sign-out`.
#[handler]
pub(crate) async fn sign_out(Data(state): Data<&AppState>, req: &Request, body: Body) -> Page {
    let (admin, _) = signed_form(state, req, body).await?;
    let mut db = state.db_for_dashboard().await?;
    let tx = db.transaction().await.map_err(shared::db::DbError::from)?;
    let id_token = sessions::delete(&tx, &admin.token).await?;
    audit::record(&tx, &[admin.event("sign_out", None, Outcome::Success)]).await?;
    tx.commit().await.map_err(shared::db::DbError::from)?;
    // A person signs out at the provider too, when it allows that.
    let provider_sign_out = match (&admin.session.holder, &state.oidc) {
        (Holder::Person { .. }, Some(oidc)) => oidc.end_session_url(id_token.as_deref()).await,
        _ => None,
    };
    let mut response = match provider_sign_out {
        // A page that moves on, not a redirect: the form's redirect to another site would break
        // the pages' `form-action 'self'` policy, and the browser would stay here.
        Some(url) => layout::html(layout::bare_with(
            "Signed out",
            html! {
                meta http-equiv="refresh" content={ "0;url=" (url.as_str()) };
                p { "Signed out here. " a #provider-sign-out href=(url.as_str()) { "Sign out at the identity provider too" } }
            },
        )),
        None => see_other(super::SIGN_IN_PATH),
    };
    clear_cookies(&mut response, state, &[SESSION_COOKIE, SSO_HINT_COOKIE]);
    Ok(response)
}

/// Adds a `Set-Cookie`: `HttpOnly`, `SameSite=Strict`, `Path=/`, and behind TLS `Secure` with
/// the `__Host-` name prefix (no sibling subdomain can plant it).
pub(super) fn set_cookie(response: &mut Response, state: &AppState, name: &str, value: &str, max_age: u64) {
    let name = state.cookie_name(name);
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if state.secure_cookies() {
        cookie.push_str("; Secure");
    }
    response.headers_mut().append(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
}

pub(super) fn clear_cookies(response: &mut Response, state: &AppState, names: &[&str]) {
    for name in names {
        set_cookie(response, state, name, "", 0);
    }
}
