//! Sign-in and sign-out: single sign-on through the organisation's OpenID provider
//! (`crate::oidc`), and, when `DASHBOARD_ADMIN_KEY_SIGN_IN` enables it, break-glass sign-in with
//! an admin API key. Every sign-in, refused or not, and every sign-out is recorded in the audit
//! trail.
//!
//! Single sign-on: `GET /dashboard/sign-in/sso` sends the browser to the provider with a fresh
//! `state`, `nonce` and PKCE challenge, kept in a short-lived cookie; the provider sends it back
//! to `GET /dashboard/sign-in/callback`, where the state must match, the code is exchanged and
//! the ID token verified. The session ends when the ID token expires (or after
//! `ADMIN_SESSION_TTL_SECS`, if sooner); the sign-in page then asks the provider again without
//! showing anything (`prompt=none`), so the session goes on while the provider's does and ends
//! with it. Each code exchange spends a token of the client's failure budget (refunded on
//! success). Sign-out ends the provider's session too when
//! it publishes an `end_session_endpoint`.
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
    operators::{self, DashboardRole},
    sessions::{self, Holder},
};
use time::OffsetDateTime;

use super::{
    DashboardError, Page, SESSION_COOKIE, cookie, layout, query_param, read_fields, see_other, signed_form,
};
use crate::{
    AppState,
    auth::LookupError,
    client_addr::ClientAddr,
    oidc::{OidcError, Pending},
};

/// Cookie carrying the key form's anti-forgery token.
const SIGN_IN_COOKIE: &str = "stmt_signin";
/// Cookie carrying a single sign-on under way (state, nonce, PKCE verifier). `SameSite=Lax`:
/// the provider's redirect back is a cross-site navigation, which must bring it. `Path=/` and,
/// behind TLS, `__Host-`: no sibling subdomain can plant one.
const PENDING_COOKIE: &str = "stmt_sso_pending";
/// How long a single sign-on may take at the provider.
const PENDING_SECS: u64 = 600;
/// Cookie saying this browser signed in through single sign-on: the sign-in page then asks
/// the provider silently instead of showing itself.
const SSO_HINT_COOKIE: &str = "stmt_sso";
const SSO_HINT_SECS: u64 = 30 * 86_400;
/// How long a failed key sign-in waits before it is answered.
pub(crate) const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// The provider's answers to `prompt=none` when its own session has ended.
const SESSION_ENDED: [&str; 4] =
    ["login_required", "interaction_required", "consent_required", "account_selection_required"];

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

fn sign_in_page(state: &AppState, notice: Option<&str>, failure: Option<&str>) -> Response {
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

/// `GET /dashboard/sign-in/sso[?silent=1]`: off to the provider.
#[handler]
pub(crate) async fn sso_start(Data(state): Data<&AppState>, req: &Request) -> Page {
    let oidc = state.oidc.as_ref().ok_or(DashboardError::NotFound)?;
    let silent = query_param(req, "silent").as_deref() == Some("1");
    let (url, pending) = match oidc.begin(silent).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on could not start");
            return Ok(provider_unavailable(state));
        }
    };
    let mut response = see_other(url.as_str());
    set_pending(&mut response, state, &pending.to_cookie(), PENDING_SECS);
    Ok(response)
}

/// The sign-in page, 503, when the provider does not answer: not an error page, so it offers
/// break-glass sign-in when enabled, and, the hint cleared, it stops sending the browser to the
/// provider by itself.
fn provider_unavailable(state: &AppState) -> Response {
    let mut response =
        sign_in_page(state, None, Some("The identity provider is not answering; try again shortly."));
    response.set_status(StatusCode::SERVICE_UNAVAILABLE);
    clear_cookies(&mut response, state, &[SSO_HINT_COOKIE]);
    response
}

/// Someone the audit trail cannot name: a refusal before anyone was identified.
fn unidentified(kind: ActorKind) -> Actor {
    Actor { kind, id: "-".into(), name: "(unidentified)".into() }
}

/// `GET /dashboard/sign-in/callback?code=…&state=…` (or `?error=…`): back from the provider.
#[handler]
pub(crate) async fn sso_callback(Data(state): Data<&AppState>, req: &Request) -> Page {
    let oidc = state.oidc.as_ref().ok_or(DashboardError::NotFound)?;
    let client = ClientAddr::of(req, &state.trusted_proxies);
    let pending = cookie(req, &state.cookie_name(PENDING_COOKIE)).and_then(Pending::from_cookie);
    let returned_state = query_param(req, "state").unwrap_or_default();
    // Only a browser that started this sign-in may finish it (no login CSRF, no replay from
    // elsewhere). Nobody is identified yet: the log records it, the audit trail does not.
    let Some(pending) = pending.filter(|p| p.state_matches(&returned_state)) else {
        tracing::warn!(%client, "single sign-on refused: its state is not that of a sign-in this browser started");
        return Err(DashboardError::SignInRefused(
            "This sign-in did not start here, or took too long. Start again from the sign-in page.",
        ));
    };
    if let Some(error) = query_param(req, "error") {
        if SESSION_ENDED.contains(&error.as_str()) {
            let mut response = see_other(&format!("{}?ended=1", super::SIGN_IN_PATH));
            clear_cookies(&mut response, state, &[SSO_HINT_COOKIE]);
            clear_pending(&mut response, state);
            return Ok(response);
        }
        tracing::warn!(%client, error = ?error.chars().take(64).collect::<String>(), "the identity provider did not sign the person in");
        let mut response = sign_in_page(state, None, Some("The identity provider did not sign you in."));
        clear_cookies(&mut response, state, &[SSO_HINT_COOKIE]);
        clear_pending(&mut response, state);
        return Ok(response);
    }
    let code = query_param(req, "code").filter(|c| !c.is_empty() && c.len() <= 2048).ok_or_else(|| {
        DashboardError::BadRequest("The identity provider's answer has no authorization code.".into())
    })?;
    // Each exchange spends a token of the client's (and everyone's) failure budget, given back
    // when it succeeds: refused codes cannot be sent to the provider, nor refusals recorded,
    // faster than the budget allows.
    if state.credentials.attempt(client).is_err() {
        return Err(DashboardError::TooManyAttempts);
    }
    let authenticated = match oidc.finish(&code, &pending).await {
        Ok(authenticated) => {
            state.credentials.attempt_succeeded(client);
            authenticated
        }
        Err(OidcError::Provider(e)) => {
            tracing::warn!(error = %e, "single sign-on: the identity provider is unavailable");
            let mut response = provider_unavailable(state);
            clear_pending(&mut response, state);
            return Ok(response);
        }
        Err(e) => {
            tracing::warn!(%client, error = %e, "single sign-on refused");
            let reason = match e {
                OidcError::Exchange(_) => "code_exchange_refused",
                _ => "id_token_refused",
            };
            let event = Event::new(unidentified(ActorKind::Person), "sign_in", None, Outcome::Denied)
                .from_client(client)
                .with_details(json!({ "method": "sso", "reason": reason }));
            audit::record_alone(&mut state.db_for_dashboard().await?, &[event]).await?;
            return Err(DashboardError::SignInRefused(
                "The identity provider's answer could not be verified, so the sign-in was refused.",
            ));
        }
    };
    let identity = &authenticated.identity;
    let label = sessions::person_label(&identity.name, identity.email.as_deref());
    let Some(role) = authenticated.role else {
        tracing::warn!(%client, subject = %identity.subject, "single sign-on refused: no dashboard role in the roles claim");
        let claimed: Vec<String> =
            authenticated.claimed.iter().take(20).map(|c| c.chars().take(100).collect()).collect();
        let actor = Actor { kind: ActorKind::Person, id: format!("sub:{}", identity.subject), name: label };
        let event = Event::new(actor, "sign_in", None, Outcome::Denied)
            .from_client(client)
            .with_details(json!({ "method": "sso", "reason": "no_role", "claimed": claimed }));
        audit::record_alone(&mut state.db_for_dashboard().await?, &[event]).await?;
        let mut response = layout::html(layout::bare(
            "Forbidden",
            "Your account has no role on this dashboard. Ask an administrator to add you to one of its groups.",
        ));
        response.set_status(StatusCode::FORBIDDEN);
        clear_cookies(&mut response, state, &[SSO_HINT_COOKIE]);
        clear_pending(&mut response, state);
        return Ok(response);
    };
    let mut db = state.db_for_dashboard().await?;
    let tx = db.transaction().await.map_err(shared::db::DbError::from)?;
    let operator_id = operators::signed_in(&tx, identity, role).await?;
    let holder = Holder::Person { operator_id, name: label };
    // Until the ID token expires, and never longer than ADMIN_SESSION_TTL_SECS (a provider may
    // issue day-long tokens): a silent sign-in renews it while the provider's session lasts.
    let expires_at = authenticated.expires_at.min(OffsetDateTime::now_utc() + state.admin_session_ttl);
    let new = sessions::create(&tx, holder, role, expires_at, Some(&authenticated.id_token)).await?;
    let event =
        Event::new(new.session.actor(), "sign_in", Some(format!("operator:{operator_id}")), Outcome::Success)
            .from_client(client)
            .with_details(json!({ "method": "sso", "role": role.as_str() }));
    audit::record(&tx, &[event]).await?;
    tx.commit().await.map_err(shared::db::DbError::from)?;
    state.credentials.session_created(&new.token);
    tracing::info!(operator.id = %operator_id, role = %role, "dashboard sign-in (single sign-on)");
    // A page of our own that moves on to the dashboard: a navigation this site starts, so the
    // `SameSite=Strict` session cookie goes with it (a redirect would still count as the
    // provider's cross-site navigation).
    let mut response = layout::html(layout::bare_with(
        "Signed in",
        html! {
            meta http-equiv="refresh" content="0;url=/dashboard";
            p { "Signed in. " a href="/dashboard" { "Continue to the dashboard" } }
        },
    ));
    let lifetime = (expires_at - OffsetDateTime::now_utc()).whole_seconds().max(0) as u64;
    set_cookie(&mut response, state, SESSION_COOKIE, &new.token, lifetime);
    set_cookie(&mut response, state, SSO_HINT_COOKIE, "1", SSO_HINT_SECS);
    clear_pending(&mut response, state);
    Ok(response)
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
fn set_cookie(response: &mut Response, state: &AppState, name: &str, value: &str, max_age: u64) {
    let name = state.cookie_name(name);
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if state.secure_cookies() {
        cookie.push_str("; Secure");
    }
    response.headers_mut().append(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
}

fn clear_cookies(response: &mut Response, state: &AppState, names: &[&str]) {
    for name in names {
        set_cookie(response, state, name, "", 0);
    }
}

/// Sets the pending sign-on cookie: `SameSite=Lax`, it comes back with the provider's redirect.
fn set_pending(response: &mut Response, state: &AppState, value: &str, max_age: u64) {
    let name = state.cookie_name(PENDING_COOKIE);
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if state.secure_cookies() {
        cookie.push_str("; Secure");
    }
    response.headers_mut().append(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
}

fn clear_pending(response: &mut Response, state: &AppState) {
    set_pending(response, state, "", 0);
}
