//! Single sign-on through the organisation's OpenID provider (`crate::oidc`):
//! `GET /dashboard/sign-in/sso` sends the browser to the provider with a fresh `state`, `nonce`
//! and PKCE challenge, kept in a short-lived cookie; the provider sends it back to
//! `GET /dashboard/sign-in/callback`, where the state must match, the code is exchanged and the
//! ID token verified. The session ends when the ID token expires (or after
//! `ADMIN_SESSION_TTL_SECS`, if sooner); the sign-in page then asks the provider again without
//! showing anything (`prompt=none`), so the session goes on while the provider's does and ends
//! with it. Each code exchange spends a token of the client's failure budget (refunded on
//! success). Every sign-in, refused or not, is recorded in the audit trail.

use maud::html;
use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::Data,
};
use serde_json::json;
use shared::{
    audit::{self, Actor, ActorKind, Event, Outcome},
    operators,
    sessions::{self, Holder},
};
use time::OffsetDateTime;

use super::{
    DashboardError, Page, SESSION_COOKIE, cookie, layout, query_param, see_other,
    sign_in::{SSO_HINT_COOKIE, SSO_HINT_SECS, clear_cookies, set_cookie, sign_in_page, unidentified},
};
use crate::{
    AppState,
    client_addr::ClientAddr,
    oidc::{OidcError, Pending},
};

/// Cookie carrying a single sign-on under way (state, nonce, PKCE verifier). `SameSite=Lax`:
/// the provider's redirect back is a cross-site navigation, which must bring it. `Path=/` and,
/// behind TLS, `__Host-`: no sibling subdomain can plant one.
pub(super) const PENDING_COOKIE: &str = "stmt_sso_pending";
/// How long a single sign-on may take at the provider.
const PENDING_SECS: u64 = 600;
/// The provider's answers to `prompt=none` when its own session has ended.
const SESSION_ENDED: [&str; 4] =
    ["login_required", "interaction_required", "consent_required", "account_selection_required"];

/// `GET /dashboard/sign-in/sso[?silent=1]`: off to the provider.
#[handler]
pub(crate) async fn start(Data(state): Data<&AppState>, req: &Request) -> Page {
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

/// `GET /dashboard/sign-in/callback?code=…&state=…` (or `?error=…`): back from the provider.
#[handler]
pub(crate) async fn callback(Data(state): Data<&AppState>, req: &Request) -> Page {
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
