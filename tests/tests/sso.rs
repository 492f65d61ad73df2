//! Dashboard single sign-on against a real OpenID provider (npm `oidc-provider`, started by the
//! test: testkit::oidc) and the real API binary configured through its environment: the whole
//! code flow, the dashboard roles, every refusal (a forged, expired, misaddressed or unsigned ID
//! token, another nonce, a state that is not this browser's, a person without a role), key
//! rotation, the session ending with the ID token and renewed silently while the provider's
//! session lasts, sign-out at the provider, and break-glass key sign-in only when enabled.

use std::time::Duration;

use reqwest::{StatusCode, header::LOCATION};
use serde_json::json;
use testkit::{
    ApiProcess, TestApp,
    dashboard::hidden_value,
    oidc::{OidcOptions, OidcProvider, browser},
    workspace_binary,
};

/// The people at the provider, and their groups.
fn accounts() -> serde_json::Value {
    json!({
        "ada": {"name": "Ada Admin", "email": "ada@example.com", "groups": ["statement-admin", "staff"]},
        "otto": {"name": "Otto Operator", "email": "otto@example.com", "groups": ["statement-operator"]},
        "val": {"name": "Val Viewer", "email": "val@example.com", "groups": ["statement-viewer"]},
        "mal": {"name": "Mal Nobody", "email": "mal@example.com", "groups": ["finance", "Statement-Admin"]},
    })
}

struct Sso {
    app: TestApp,
    idp: OidcProvider,
    api: ApiProcess,
}

impl Sso {
    /// The app, a provider whose ID tokens live `ttl`, and the API binary signing in with it
    /// (`extra` settings on top).
    async fn start(ttl: Duration, extra: &[(&str, String)]) -> Self {
        let app = TestApp::spawn().await;
        let options = OidcOptions { id_token_ttl: Some(ttl), ..OidcOptions::default() };
        let mut idp =
            OidcProvider::start_with(accounts(), &["http://127.0.0.1:9/unused".into()], options).await;
        let mut settings = vec![
            ("OIDC_ISSUER_URL", idp.issuer()),
            ("OIDC_CLIENT_ID", idp.client_id().to_owned()),
            ("OIDC_CLIENT_SECRET", idp.client_secret().to_owned()),
            ("OIDC_PROVIDER_NAME", "Test IdP".to_owned()),
        ];
        settings.extend(extra.iter().cloned());
        let api = ApiProcess::start(&app, workspace_binary("statement-api"), &settings).await;
        idp.set_redirect_uris(&[format!("{}/dashboard/sign-in/callback", api.base_url)]).await;
        Self { app, idp, api }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.base_url)
    }

    /// Starts a sign-in in `browser` and goes through the provider as `login`: the callback URL
    /// the provider sends the browser back to (not fetched yet).
    async fn to_callback(&self, browser: &reqwest::Client, login: &str) -> String {
        let start = browser.get(self.url("/dashboard/sign-in/sso")).send().await.unwrap();
        assert_eq!(start.status(), StatusCode::SEE_OTHER);
        let authorize = location(&start);
        assert!(authorize.starts_with(&self.idp.issuer()), "{authorize}");
        for (parameter, value) in [("code_challenge_method", "S256"), ("response_type", "code")] {
            assert!(query(&authorize, parameter).as_deref() == Some(value), "{parameter} in {authorize}");
        }
        for parameter in ["state", "nonce", "code_challenge"] {
            assert!(
                query(&authorize, parameter).is_some_and(|v| v.len() >= 22),
                "{parameter} in {authorize}"
            );
        }
        self.idp.authorize(browser, &authorize, login).await
    }

    /// A whole sign-in as `login`: the browser, and the callback's answer.
    async fn sign_in(&self, login: &str) -> (reqwest::Client, reqwest::Response) {
        let browser = browser();
        let callback = self.to_callback(&browser, login).await;
        let answer = browser.get(&callback).send().await.unwrap();
        (browser, answer)
    }

    async fn page(&self, browser: &reqwest::Client, path: &str) -> (StatusCode, String) {
        let response = browser.get(self.url(path)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Posts a form with the session's CSRF token (read from the overview page).
    async fn post(&self, browser: &reqwest::Client, path: &str, fields: &[(&str, &str)]) -> StatusCode {
        let (_, page) = self.page(browser, "/dashboard").await;
        let csrf = hidden_value(&page, "csrf").expect("a signed-in page carries its CSRF token");
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        browser.post(self.url(path)).form(&form).send().await.unwrap().status()
    }

    /// (actor_name, action, outcome, details) of every audit row, in order.
    fn audit(&self) -> Vec<(String, String, String, String)> {
        self.app
            .psql("SELECT actor_name, action, outcome, details FROM audit_log ORDER BY seq")
            .unwrap()
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.splitn(4, '|').collect();
                (p[0].to_owned(), p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
            })
            .collect()
    }
}

fn location(response: &reqwest::Response) -> String {
    response.headers().get(LOCATION).expect("a redirect").to_str().unwrap().to_owned()
}

fn query(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The callback URL with its `state` replaced.
fn with_state(callback: &str, state: &str) -> String {
    let mut url = reqwest::Url::parse(callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let value = if k == "state" { state.to_owned() } else { v.into_owned() };
            (k.into_owned(), value)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.into()
}

fn has_session_cookie(response: &reqwest::Response) -> bool {
    response.headers().get_all(reqwest::header::SET_COOKIE).iter().any(|c| {
        c.to_str().unwrap().starts_with("stmt_session=") && !c.to_str().unwrap().starts_with("stmt_session=;")
    })
}

#[tokio::test]
async fn people_sign_in_through_the_provider_and_get_the_role_their_groups_grant() {
    // ID tokens for ten minutes; sessions never longer than five.
    let sso = Sso::start(Duration::from_secs(600), &[("ADMIN_SESSION_TTL_SECS", "300".into())]).await;

    // Without a session, the sign-in page offers the provider only: key sign-in is off.
    let (status, page) = sso.page(&browser(), "/dashboard/sign-in").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sign in with Test IdP"));
    assert!(!page.contains("name=\"api_key\""), "no key form unless DASHBOARD_ADMIN_KEY_SIGN_IN=true");

    // An admin: the callback opens a session that ends with the ID token, or sooner, at
    // ADMIN_SESSION_TTL_SECS.
    let (ada, answer) = sso.sign_in("ada").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(has_session_cookie(&answer));
    let (status, page) = sso.page(&ada, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Ada Admin &lt;ada@example.com&gt;") && page.contains(">admin<"), "{page}");
    let ends_in: f64 = sso
        .app
        .psql("SELECT extract(epoch FROM expires_at - now()) FROM admin_sessions")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((290.0..=301.0).contains(&ends_in), "the session ends at the cap: {ends_in} s");
    let operator = sso.app.psql("SELECT issuer, subject, name, email, role FROM operators").unwrap();
    assert_eq!(operator.trim(), format!("{}|ada|Ada Admin|ada@example.com|admin", sso.idp.issuer()));
    assert_eq!(
        sso.post(&ada, "/admin/api-keys", &[("name", "by ada"), ("role", "client"), ("all_accounts", "yes")])
            .await,
        StatusCode::OK
    );

    // A viewer reads every page but changes nothing: 403, recorded as refused.
    let (val, _) = sso.sign_in("val").await;
    let (status, page) = sso.page(&val, "/admin/api-keys").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(">viewer<") && !page.contains("Create a key"));
    let (status, _) = sso.page(&val, "/dashboard/audit").await;
    assert_eq!(status, StatusCode::OK);
    let key = sso.app.create_key(None).await;
    let export: serde_json::Value = sso
        .app
        .post_export(&key, &json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"}))
        .await
        .json()
        .await
        .unwrap();
    let db = sso.app.pool.get().await.unwrap();
    let job: i64 = db
        .query_one(
            "SELECT job_id FROM exports WHERE id = $1::text::uuid",
            &[&export["reference_id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sso.post(&val, &format!("/dashboard/jobs/{job}/retry"), &[]).await, StatusCode::FORBIDDEN);
    assert_eq!(
        sso.post(&val, "/admin/api-keys", &[("name", "by val"), ("role", "client"), ("all_accounts", "yes")])
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        db.query_one("SELECT count(*) FROM api_keys WHERE name = 'by val'", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    // An operator cancels jobs but does not manage keys.
    let (otto, _) = sso.sign_in("otto").await;
    assert_eq!(
        sso.post(
            &otto,
            "/admin/api-keys",
            &[("name", "by otto"), ("role", "client"), ("all_accounts", "yes")]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(sso.post(&otto, &format!("/dashboard/jobs/{job}/cancel"), &[]).await, StatusCode::SEE_OTHER);

    // Someone the provider knows but whose groups grant no role is refused, and no session opens.
    let (mal, answer) = sso.sign_in("mal").await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(!has_session_cookie(&answer));
    assert!(answer.text().await.unwrap().contains("no role on this dashboard"));
    let (status, _) = sso.page(&mal, "/dashboard").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let audit = sso.audit();
    let of = |name: &str| -> Vec<(String, String)> {
        audit.iter().filter(|r| r.0.starts_with(name)).map(|r| (r.1.clone(), r.2.clone())).collect()
    };
    let pair = |a: &str, o: &str| (a.to_owned(), o.to_owned());
    assert_eq!(of("Ada Admin"), [pair("sign_in", "success"), pair("api_key.create", "success")]);
    assert_eq!(
        of("Val Viewer"),
        [pair("sign_in", "success"), pair("job.retry", "denied"), pair("api_key.create", "denied")]
    );
    assert_eq!(
        of("Otto Operator"),
        [pair("sign_in", "success"), pair("api_key.create", "denied"), pair("job.cancel", "success")]
    );
    assert_eq!(of("Mal Nobody"), [pair("sign_in", "denied")]);
    let refusal = audit.iter().find(|r| r.0.starts_with("Mal Nobody")).unwrap();
    assert_eq!(refusal.3, r#"{"claimed":["finance","Statement-Admin"],"method":"sso","reason":"no_role"}"#);

    // Sign-out ends the session here and at the provider (RP-initiated logout).
    let csrf = hidden_value(&sso.page(&ada, "/dashboard").await.1, "csrf").unwrap();
    let out = ada.post(sso.url("/dashboard/sign-out")).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    let page = out.text().await.unwrap();
    let end_session = page
        .split("id=\"provider-sign-out\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to sign out at the provider")
        .replace("&amp;", "&");
    assert!(end_session.starts_with(&sso.idp.issuer()), "{end_session}");
    assert!(query(&end_session, "id_token_hint").is_some());
    assert_eq!(query(&end_session, "client_id").as_deref(), Some(sso.idp.client_id()));
    assert_eq!(query(&end_session, "post_logout_redirect_uri"), Some(sso.url("/dashboard/sign-in")));
    assert_eq!(sso.page(&ada, "/dashboard").await.0, StatusCode::SEE_OTHER);
    // Signed out on purpose, the sign-in page shows itself instead of signing in again silently.
    let (status, page) = sso.page(&ada, "/dashboard/sign-in").await;
    assert_eq!((status, page.contains("Sign in with Test IdP")), (StatusCode::OK, true));
    assert_eq!(
        sso.audit().last().map(|r| (r.0.clone(), r.1.clone())),
        Some(("Ada Admin <ada@example.com>".into(), "sign_out".into()))
    );
    let (ok, text) = {
        let output = sso.app.cli(&["audit", "verify"]);
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert!(ok && text.contains("intact"), "{text}");
}

#[tokio::test]
async fn tokens_that_do_not_verify_and_states_that_are_not_ours_are_refused() {
    let sso = Sso::start(Duration::from_secs(600), &[("AUTH_FAILURES_PER_MINUTE", "10".into())]).await;

    // Each way an ID token can be wrong, from the provider's own token endpoint.
    for mode in ["forge", "expired", "nonce", "audience", "issuer", "none"] {
        let browser = browser();
        let callback = sso.to_callback(&browser, "ada").await;
        sso.idp.tamper_next(mode).await;
        let answer = browser.get(&callback).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{mode}");
        assert!(!has_session_cookie(&answer), "{mode}");
        assert_eq!(sso.page(&browser, "/dashboard").await.0, StatusCode::SEE_OTHER, "{mode}");
    }
    let refused: Vec<_> = sso.audit().into_iter().map(|r| (r.1, r.2, r.3)).collect();
    let expected = (
        "sign_in".to_owned(),
        "denied".to_owned(),
        r#"{"method":"sso","reason":"id_token_refused"}"#.to_owned(),
    );
    assert_eq!(refused, vec![expected; 6]);

    // A state that is not the one this browser sent: refused before the code is used, and the
    // code then still works for the browser it belongs to.
    let browser_a = browser();
    let callback = sso.to_callback(&browser_a, "ada").await;
    let forged = browser_a
        .get(with_state(&callback, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(!has_session_cookie(&forged));
    // The right URL in another browser (no pending sign-in there): refused too (login CSRF).
    let elsewhere = browser().get(&callback).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert!(!has_session_cookie(&elsewhere));
    let answer = browser_a.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(has_session_cookie(&answer));
    // A code is used once.
    let again = browser_a.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN, "the pending sign-in is spent");
    assert_eq!(sso.audit().iter().filter(|r| r.2 == "success").count(), 1);

    // A client sending made-up codes (with a sign-in of its own under way) spends its failure
    // budget: then it is refused before anything reaches the provider or the audit trail.
    let mut refused_at = None;
    for attempt in 0..30 {
        let browser = browser();
        let start = browser.get(sso.url("/dashboard/sign-in/sso")).send().await.unwrap();
        let state = query(&location(&start), "state").unwrap();
        let bogus = sso.url(&format!("/dashboard/sign-in/callback?state={state}&code=made-up-{attempt}"));
        let answer = browser.get(bogus).send().await.unwrap();
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused_at = Some(attempt);
            break;
        }
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    }
    let refused_at = refused_at.expect("made-up codes are refused once the budget is spent");
    // Ten tokens a minute: the six tampered tokens took six of them.
    assert!(refused_at <= 5, "refused after {refused_at} made-up codes");
    let recorded = sso.audit().len();
    let browser = browser();
    let start = browser.get(sso.url("/dashboard/sign-in/sso")).send().await.unwrap();
    let state = query(&location(&start), "state").unwrap();
    let again = browser
        .get(sso.url(&format!("/dashboard/sign-in/callback?state={state}&code=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sso.audit().len(), recorded, "a refusal for the budget records nothing");
}

#[tokio::test]
async fn a_role_set_to_nothing_is_granted_to_nobody() {
    let sso = Sso::start(Duration::from_secs(600), &[("OIDC_ADMIN_ROLES", String::new())]).await;
    let (_, answer) = sso.sign_in("ada").await;
    assert_eq!(
        answer.status(),
        StatusCode::FORBIDDEN,
        "ada's groups grant nothing once admin maps to nothing"
    );
    let (_, answer) = sso.sign_in("val").await;
    assert_eq!(answer.status(), StatusCode::OK, "the other roles keep their defaults");
}

#[tokio::test]
async fn sessions_end_with_the_id_token_and_are_renewed_silently_while_the_provider_session_lasts() {
    let sso = Sso::start(Duration::from_secs(3), &[]).await;
    let (ada, answer) = sso.sign_in("ada").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(sso.page(&ada, "/dashboard").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // Expired: the dashboard sends the browser to sign in, which asks the provider silently.
    let expired = ada.get(sso.url("/dashboard")).send().await.unwrap();
    assert_eq!(location(&expired), "/dashboard/sign-in");
    let sign_in = ada.get(sso.url("/dashboard/sign-in")).send().await.unwrap();
    assert_eq!(location(&sign_in), "/dashboard/sign-in/sso?silent=1");
    let start = ada.get(sso.url("/dashboard/sign-in/sso?silent=1")).send().await.unwrap();
    let authorize = location(&start);
    assert_eq!(query(&authorize, "prompt").as_deref(), Some("none"));
    // The provider's session lives: it answers with a code at once, no login page.
    let callback = sso.idp.authorize(&ada, &authorize, "nobody-would-type-this").await;
    assert!(query(&callback, "code").is_some(), "{callback}");
    let renewed = ada.get(&callback).send().await.unwrap();
    assert_eq!(renewed.status(), StatusCode::OK);
    assert_eq!(sso.page(&ada, "/dashboard").await.0, StatusCode::OK);

    // The provider forgets its sessions (a restart, with a new signing key): once the ID token
    // expires, the silent request comes back `login_required` and the session is over.
    let mut sso = sso;
    sso.idp.restart().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let start = ada.get(sso.url("/dashboard/sign-in/sso?silent=1")).send().await.unwrap();
    let callback = sso.idp.authorize(&ada, &location(&start), "unused").await;
    assert_eq!(query(&callback, "error").as_deref(), Some("login_required"), "{callback}");
    let ended = ada.get(&callback).send().await.unwrap();
    assert_eq!(location(&ended), "/dashboard/sign-in?ended=1");
    let (status, page) = sso.page(&ada, "/dashboard/sign-in?ended=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("single sign-on session has ended"));
    // Signing in again works: the service fetches the provider's new key when a token names it.
    let (again, answer) = sso.sign_in("ada").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(sso.page(&again, "/dashboard").await.0, StatusCode::OK);
    let sign_ins = sso.audit().iter().filter(|r| r.1 == "sign_in" && r.2 == "success").count();
    assert_eq!(sign_ins, 3);
}

#[tokio::test]
async fn break_glass_key_sign_in_works_only_when_enabled_and_is_recorded_as_such() {
    let sso = Sso::start(Duration::from_secs(600), &[("DASHBOARD_ADMIN_KEY_SIGN_IN", "true".into())]).await;
    let admin_key = sso.app.create_admin_key().await;
    let mut dashboard = testkit::dashboard::DashboardClient::at(&sso.api.base_url);
    let signed = dashboard.sign_in(&admin_key).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    let page = dashboard.get("/dashboard").await;
    assert!(page.body.contains("break-glass"));
    let row = sso.app.psql("SELECT actor_kind, action, outcome, details FROM audit_log").unwrap();
    assert_eq!(row.trim(), r#"break_glass|sign_in|success|{"method":"admin_key","role":"admin"}"#);
    let cookie = dashboard.cookie("stmt_session").unwrap().to_owned();

    // The provider goes down while a person's browser would sign in silently: the browser is
    // sent there once; back on the sign-in page, it is shown (with the key form), not looped.
    let (ada, _) = sso.sign_in("ada").await;
    let Sso { app, idp, api } = sso;
    let issuer = idp.issuer();
    let (client_id, client_secret) = (idp.client_id().to_owned(), idp.client_secret().to_owned());
    drop(idp);
    let expired = ada.get(format!("{}/dashboard/sign-in", api.base_url)).send().await.unwrap();
    assert_eq!(location(&expired), "/dashboard/sign-in/sso?silent=1", "the hint sends it to the provider");
    let start = ada.get(format!("{}/dashboard/sign-in/sso?silent=1", api.base_url)).send().await.unwrap();
    assert!(location(&start).starts_with(&issuer), "metadata is cached: off to the (dead) provider");
    let back = ada.get(format!("{}/dashboard/sign-in", api.base_url)).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert!(back.text().await.unwrap().contains("name=\"api_key\""));
    drop(api);

    // Switched off, the form is gone, a post is 404 and the key's open session ends.
    let api = ApiProcess::start(
        &app,
        workspace_binary("statement-api"),
        &[("OIDC_ISSUER_URL", issuer), ("OIDC_CLIENT_ID", client_id), ("OIDC_CLIENT_SECRET", client_secret)],
    )
    .await;
    let mut dashboard = testkit::dashboard::DashboardClient::at(&api.base_url);
    dashboard.set_cookie("stmt_session", &cookie);
    assert_eq!(dashboard.get("/dashboard").await.status, StatusCode::SEE_OTHER);
    let form = dashboard.get("/dashboard/sign-in").await;
    assert!(!form.body.contains("name=\"api_key\""));
    let posted = dashboard.post_raw("/dashboard/sign-in", &[("api_key", &admin_key)]).await;
    assert_eq!(posted.status, StatusCode::NOT_FOUND);
    // A process that never reached the (dead) provider: the sign-in page, 503, says so.
    let unavailable = dashboard.get("/dashboard/sign-in/sso").await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(unavailable.body.contains("identity provider is not answering"));
}
