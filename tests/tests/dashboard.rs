//! The operator dashboard over HTTP: sign-in, sessions, CSRF, key management, queue actions and
//! analytics, against a real API, Postgres and MariaDB. (The browser test drives the same pages
//! in Chromium: tests/browser/dashboard.mjs.)

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, dashboard::DashboardClient};

const PAGES: [&str; 9] = [
    "/dashboard",
    "/dashboard/queue",
    "/dashboard/health",
    "/admin/api-keys",
    "/dashboard/exports",
    "/dashboard/exports/{id}",
    "/dashboard/audit",
    "/dashboard/webhooks",
    "/dashboard/schedules",
];

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

/// Every form route, with a real target where one is needed.
fn forms(key_id: &str) -> Vec<String> {
    vec![
        "/dashboard/sign-out".into(),
        "/dashboard/jobs/1/retry".into(),
        "/dashboard/jobs/1/cancel".into(),
        "/admin/api-keys".into(),
        format!("/admin/api-keys/{key_id}/deactivate"),
        format!("/admin/api-keys/{key_id}/reactivate"),
        format!("/admin/api-keys/{key_id}/delete"),
        format!("/dashboard/webhooks/{}/enable", uuid::Uuid::new_v4()),
        format!("/dashboard/webhook-deliveries/{}/resend", uuid::Uuid::new_v4()),
    ]
}

async fn key_id(app: &TestApp, plaintext: &str) -> String {
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_one("SELECT id::text FROM api_keys WHERE key_hash = sha256($1::text::bytea)", &[&plaintext])
        .await
        .unwrap();
    row.get(0)
}

async fn export_id(app: &TestApp) -> String {
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    created["reference_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_session_every_page_and_form_redirects_to_sign_in() {
    let app = TestApp::spawn().await;
    let client_key = app.create_key(None).await;
    let id = export_id(&app).await;
    let key = key_id(&app, &client_key).await;
    for cookie in [None, Some("forged-or-expired")] {
        let mut browser = DashboardClient::new(&app);
        if let Some(value) = cookie {
            browser.set_cookie("stmt_session", value);
        }
        for page in PAGES {
            let fetched = browser.get(&page.replace("{id}", &id)).await;
            assert_eq!(fetched.status, StatusCode::SEE_OTHER, "{page}");
            assert_eq!(fetched.location.as_deref(), Some("/dashboard/sign-in"), "{page}");
        }
        for form in forms(&key) {
            let fetched = browser.post_raw(&form, &[("csrf", "x"), ("name", "sneaky")]).await;
            assert_eq!(fetched.status, StatusCode::SEE_OTHER, "{form}");
            assert_eq!(fetched.location.as_deref(), Some("/dashboard/sign-in"), "{form}");
        }
    }
    let db = app.pool.get().await.unwrap();
    let keys: i64 = db
        .query_one("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND deactivated_at IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2, "no form did anything");
}

#[tokio::test]
async fn only_an_active_admin_key_signs_in_and_the_session_cookie_is_locked_down() {
    let app = TestApp::spawn().await;
    let client_key = app.create_key(None).await;
    let admin_key = app.create_admin_key().await;

    let mut browser = DashboardClient::new(&app);
    for refused in [client_key.as_str(), "sk_not-a-key", ""] {
        let fetched = browser.sign_in(refused).await;
        assert_eq!(fetched.status, StatusCode::UNAUTHORIZED, "{refused}");
        assert!(fetched.body.contains("not an active admin API key"));
        assert!(browser.cookie("stmt_session").is_none());
    }

    // A sign-in form posted from elsewhere (no matching anti-forgery cookie) is refused.
    let mut forger = DashboardClient::new(&app);
    let fetched = forger.post_raw("/dashboard/sign-in", &[("csrf", "guess"), ("api_key", &admin_key)]).await;
    assert_eq!(fetched.status, StatusCode::FORBIDDEN);

    let fetched = browser.sign_in(&admin_key).await;
    assert_eq!(fetched.status, StatusCode::SEE_OTHER);
    assert_eq!(fetched.location.as_deref(), Some("/dashboard"));
    let set_cookie = fetched
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("stmt_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http in tests: {set_cookie}");
    let token = browser.cookie("stmt_session").unwrap().to_owned();
    let db = app.pool.get().await.unwrap();
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM admin_sessions WHERE token_hash = sha256($1::text::bytea)",
            &[&token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "only the token's hash is stored");

    for page in PAGES {
        let fetched = browser.get(&page.replace("{id}", &export_id(&app).await)).await;
        assert_eq!(fetched.status, StatusCode::OK, "{page}: {}", fetched.body);
        assert!(fetched.headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        assert_eq!(fetched.headers["cache-control"], "no-store");
    }

    // Sign-out ends the session: the old cookie no longer opens a page.
    let fetched = browser.post("/dashboard/sign-out", &[]).await;
    assert_eq!(fetched.location.as_deref(), Some("/dashboard/sign-in"));
    let mut replay = DashboardClient::new(&app);
    replay.set_cookie("stmt_session", &token);
    assert_eq!(replay.get("/dashboard").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_session_ends_when_its_admin_key_is_deactivated() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    app.revoke_key(&admin_key).await;
    assert_eq!(browser.get("/dashboard").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_is_forbidden_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let client_key = app.create_key(None).await;
    let key = key_id(&app, &client_key).await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    // Another session's token is as wrong as none at all.
    let other = DashboardClient::signed_in(&app, &admin_key).await;
    let foreign = other.csrf.clone().unwrap();
    assert_ne!(Some(&foreign), browser.csrf.as_ref());

    for form in forms(&key) {
        for fields in [
            vec![("name", "x")],
            vec![("csrf", ""), ("name", "x")],
            vec![("csrf", foreign.as_str()), ("name", "x")],
        ] {
            let fetched = browser.post_raw(&form, &fields).await;
            assert_eq!(fetched.status, StatusCode::FORBIDDEN, "{form} {fields:?}");
        }
    }
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_one("SELECT count(*), count(*) FILTER (WHERE revoked_at IS NULL AND deactivated_at IS NULL) FROM api_keys", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, 2));
    assert_eq!(browser.get("/dashboard").await.status, StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn a_key_created_on_the_page_is_shown_once_and_its_state_governs_the_api() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    browser.get("/admin/api-keys").await;
    let name = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;
    let fetched = browser
        .post(
            "/admin/api-keys",
            &[
                ("name", name),
                ("description", "for <b>tests</b>"),
                ("role", "client"),
                ("accounts", "ACC-1, ACC-2"),
            ],
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    let secret = fetched
        .body
        .split("id=\"new-key\"")
        .nth(1)
        .and_then(|rest| rest.split("sk_").nth(1))
        .map(|rest| format!("sk_{}", &rest[..38]))
        .expect("the new key");
    assert!(shared::api_keys::is_well_formed(&secret), "{secret}");
    // User data is inert: escaped, never markup.
    assert!(!fetched.body.contains("<script>alert"));
    assert!(!fetched.body.contains("<img src=x"));
    assert!(!fetched.body.contains("<b>tests</b>"));
    assert!(fetched.body.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"), "{}", fetched.body);

    // Never again: not on the page, not in the database.
    let listing = browser.get("/admin/api-keys").await;
    assert!(!listing.body.contains(&secret));
    assert!(listing.body.contains(&secret[..11]), "the prefix identifies it");
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT id::text, role, allowed_accounts, description FROM api_keys WHERE key_hash = sha256($1::text::bytea)",
            &[&secret],
        )
        .await
        .unwrap();
    let id: String = row.get(0);
    assert_eq!(row.get::<_, String>(1), "client");
    assert_eq!(row.get::<_, Option<Vec<String>>>(2), Some(vec!["ACC-1".to_owned(), "ACC-2".to_owned()]));
    assert_eq!(row.get::<_, String>(3), "for <b>tests</b>");

    assert_eq!(app.post_export(&secret, &january()).await.status(), StatusCode::ACCEPTED);
    for (action, api_status) in [
        ("deactivate", StatusCode::UNAUTHORIZED),
        ("reactivate", StatusCode::OK),
        ("delete", StatusCode::UNAUTHORIZED),
    ] {
        let fetched = browser.post(&format!("/admin/api-keys/{id}/{action}"), &[]).await;
        assert_eq!(fetched.status, StatusCode::SEE_OTHER, "{action}");
        assert_eq!(fetched.location.as_deref(), Some(format!("/admin/api-keys?notice={action}").as_str()));
        let status = app.post_export(&secret, &january()).await.status();
        assert_eq!(status, api_status, "after {action}");
    }
    let remaining: i64 =
        db.query_one("SELECT count(*) FROM api_keys WHERE id::text = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(remaining, 0);

    // Bad input is a clear 400, not a key.
    let fetched = browser.post("/admin/api-keys", &[("name", " "), ("role", "client")]).await;
    assert_eq!(fetched.status, StatusCode::BAD_REQUEST);
    let fetched = browser.post("/admin/api-keys", &[("name", "x"), ("role", "root")]).await;
    assert_eq!(fetched.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_failed_job_is_shown_with_its_error_and_retried_from_the_queue_page() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let reference = created["reference_id"].as_str().unwrap();
    // The table vanishes from the source: a configuration error, failed for good.
    app.source_exec("RENAME TABLE bank_transactions TO bank_transactions_away").await;
    let failed = app.run_until_settled(&key, reference).await;
    assert_eq!(failed["status"], "FAILED");

    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let queue = browser.get("/dashboard/queue").await;
    // The error's code and message; the driver's text (naming the table) is in the worker log.
    assert!(queue.body.contains("source_schema_mismatch"), "the error is shown: {}", queue.body);
    assert!(queue.body.contains("the configured table or column does not exist in the source database"));
    assert!(queue.body.contains(reference));
    let db = app.pool.get().await.unwrap();
    let job_id: i64 = db.query_one("SELECT id FROM jobs", &[]).await.unwrap().get(0);
    assert!(queue.body.contains(&format!("/dashboard/jobs/{job_id}/retry")));

    app.source_exec("RENAME TABLE bank_transactions_away TO bank_transactions").await;
    let fetched = browser.post(&format!("/dashboard/jobs/{job_id}/retry"), &[]).await;
    assert_eq!(fetched.location.as_deref(), Some("/dashboard/queue?notice=retried"));
    let row = db.query_one("SELECT state, max_attempts > attempt FROM jobs", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, bool>(1)), ("available".into(), true));
    let details = app.run_until_settled(&key, reference).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");

    // A completed job is not retried again; the detail page shows the file.
    let fetched = browser.post(&format!("/dashboard/jobs/{job_id}/retry"), &[]).await;
    assert_eq!(fetched.location.as_deref(), Some("/dashboard/queue?notice=not-retryable"));
    let detail = browser.get(&format!("/dashboard/exports/{reference}")).await;
    assert!(detail.body.contains(details["sha256"].as_str().unwrap()));
    assert!(detail.body.contains("/files/exports/"), "a signed download link");
}

#[tokio::test]
async fn a_pending_export_is_cancelled_from_the_queue() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let reference = created["reference_id"].as_str().unwrap();
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let db = app.pool.get().await.unwrap();
    let job_id: i64 = db.query_one("SELECT id FROM jobs", &[]).await.unwrap().get(0);
    let fetched = browser.post(&format!("/dashboard/jobs/{job_id}/cancel"), &[]).await;
    assert_eq!(fetched.location.as_deref(), Some("/dashboard/queue?notice=cancelled"));
    let details: Value = app.get_export(&key, reference).await.json().await.unwrap();
    assert_eq!(details["status"], "CANCELLED");
    assert_eq!(app.run_pending_jobs().await, 0, "nothing left to run");
}

#[tokio::test]
async fn the_overview_counts_exports_and_reuse() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    app.run_until_settled(&key, created["reference_id"].as_str().unwrap()).await;
    let again = app.post_export(&key, &january()).await;
    assert_eq!(again.status(), StatusCode::OK, "deduplicated");
    // The API adds reuse counts to Postgres every few seconds.
    app.wait_for("SELECT coalesce(sum(reused), 0) = 1 FROM export_reuse_hourly").await;

    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let overview = browser.get("/dashboard").await;
    let card = |label: &str| {
        let at = overview
            .body
            .find(&format!(r#"<div class="label">{label}</div>"#))
            .unwrap_or_else(|| panic!("{label}"));
        let value = &overview.body[at..];
        let start = value.find(r#"<div class="value">"#).unwrap() + r#"<div class="value">"#.len();
        value[start..start + value[start..].find('<').unwrap()].to_owned()
    };
    assert_eq!(card("Exports (30 days)"), "1");
    assert_eq!(card("Success rate"), "100.0 %");
    assert_eq!(card("Reuse (dedup) rate"), "50.0 %");
    assert_eq!(card("Completed"), "1");
    assert_ne!(card("p95 time"), "—");
    assert_eq!(overview.body.matches("<svg").count(), 2, "two charts");
    assert!(overview.body.contains(created["reference_id"].as_str().unwrap()), "listed as recent");
}

#[tokio::test]
async fn a_flood_of_failed_sign_ins_is_slowed_without_starving_the_api() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let mut attempts = Vec::new();
    for _ in 0..24 {
        let mut browser = DashboardClient::new(&app);
        attempts.push(tokio::spawn(async move { browser.sign_in("sk_wrong").await.status }));
    }
    // Meanwhile the API answers: no waiting sign-in holds a database connection.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let created = app.post_export(&key, &january()).await;
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "only one failure waits at a time: {statuses:?}"
    );
}

#[tokio::test]
async fn reactivating_an_admin_key_does_not_revive_its_sessions() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let id = key_id(&app, &admin_key).await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let db = app.pool.get().await.unwrap();
    let id = uuid::Uuid::parse_str(&id).unwrap();
    let changed = shared::api_keys::Activation::Changed;
    assert_eq!(shared::api_keys::set_active(&db, id, false).await.unwrap(), changed);
    assert_eq!(shared::api_keys::set_active(&db, id, true).await.unwrap(), changed);
    assert_eq!(browser.get("/dashboard").await.status, StatusCode::SEE_OTHER, "signed out for good");
    let mut again = DashboardClient::new(&app);
    assert_eq!(again.sign_in(&admin_key).await.status, StatusCode::SEE_OTHER, "the key itself works again");
}

#[tokio::test]
async fn an_admin_key_cannot_be_restricted_to_accounts() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    browser.get("/admin/api-keys").await;
    let fetched =
        browser.post("/admin/api-keys", &[("name", "ops"), ("role", "admin"), ("accounts", "ACC-1")]).await;
    assert_eq!(fetched.status, StatusCode::BAD_REQUEST);
    assert!(fetched.body.contains("cannot be restricted"), "{}", fetched.body);
    // The database refuses one too, whoever writes it.
    let db = app.pool.get().await.unwrap();
    let refused = db
        .execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, role, allowed_accounts)
             VALUES (gen_random_uuid(), 'x', 'sk_x', sha256('x'), 'admin', ARRAY['ACC-1'])",
            &[],
        )
        .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn a_failed_export_replaced_by_an_identical_live_one_is_not_revived() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    app.source_exec("RENAME TABLE bank_transactions TO bank_transactions_away").await;
    let failed = app.run_until_settled(&key, created["reference_id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "FAILED");
    // The client asks again: a new live export takes the request's deduplication slot.
    let again = app.post_export(&key, &january()).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);

    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let db = app.pool.get().await.unwrap();
    let job_id: i64 = db.query_one("SELECT id FROM jobs WHERE state = 'failed'", &[]).await.unwrap().get(0);
    let fetched = browser.post(&format!("/dashboard/jobs/{job_id}/retry"), &[]).await;
    assert_eq!(fetched.location.as_deref(), Some("/dashboard/queue?notice=superseded"));
    let state: String =
        db.query_one("SELECT state FROM jobs WHERE id = $1", &[&job_id]).await.unwrap().get(0);
    assert_eq!(state, "failed", "unchanged");
}

#[tokio::test]
async fn an_operator_cancel_is_recorded_as_such() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let db = app.pool.get().await.unwrap();
    let job_id: i64 = db.query_one("SELECT id FROM jobs", &[]).await.unwrap().get(0);
    browser.post(&format!("/dashboard/jobs/{job_id}/cancel"), &[]).await;
    let details: Value =
        app.get_export(&key, created["reference_id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(details["status"], "CANCELLED");
    assert_eq!(details["error_code"], "cancelled_by_operator");
    assert_eq!(details["error"], "the export was cancelled by an operator");
}

#[tokio::test]
async fn the_exports_page_lists_every_export_filtered_and_paged() {
    let app = TestApp::spawn().await;
    let admin = app.create_admin_key().await;
    let (alice, bob) = (app.create_key(None).await, app.create_key(None).await);
    // 105 exports by alice (ACC-1, one day each), 3 by bob (ACC-2), one of them also asked by alice.
    let day = |n: i64| (time::macros::date!(2023 - 01 - 01) + time::Duration::days(n)).to_string();
    for n in 0..105 {
        let body = json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": day(n), "date_to": day(n)});
        assert_eq!(app.post_export(&alice, &body).await.status(), StatusCode::ACCEPTED);
    }
    let mut bobs = Vec::new();
    for n in 0..3 {
        let body = json!({"account_id": "ACC-2", "table_name": "bank_transactions", "date_from": day(n), "date_to": day(n)});
        let created: Value = app.post_export(&bob, &body).await.json().await.unwrap();
        bobs.push(created["reference_id"].as_str().unwrap().to_owned());
    }
    let shared_body = json!({"account_id": "ACC-2", "table_name": "bank_transactions", "date_from": day(0), "date_to": day(0)});
    assert_eq!(app.post_export(&alice, &shared_body).await.status(), StatusCode::OK);
    let db = app.pool.get().await.unwrap();
    db.execute("UPDATE exports SET status = 'FAILED' WHERE id = $1::text::uuid", &[&bobs[2]]).await.unwrap();
    db.execute(
        "UPDATE jobs SET state = 'failed', finished_at = now() WHERE id = (SELECT job_id FROM exports WHERE id = $1::text::uuid)",
        &[&bobs[2]],
    )
    .await
    .unwrap();

    let mut browser = DashboardClient::signed_in(&app, &admin).await;
    let rows = |page: &str| page.matches("href=\"/dashboard/exports/").count();
    // Newest first, a hundred a page, then the rest.
    let first = browser.get("/dashboard/exports").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(rows(&first.body), 100);
    let newest = first.body.find(&bobs[2]).expect("the newest export is listed");
    assert!(newest < first.body.find(&bobs[0]).unwrap(), "newest first");
    let next = first
        .body
        .split("href=\"/dashboard/exports?")
        .find(|s| s.starts_with("after="))
        .expect("an older page");
    let next = next.split('"').next().unwrap().replace("&amp;", "&");
    let second = browser.get(&format!("/dashboard/exports?{next}")).await;
    assert_eq!(rows(&second.body), 8);
    // Each filter, alone and together.
    let count = |page: &testkit::dashboard::Fetched| rows(&page.body);
    assert_eq!(count(&browser.get("/dashboard/exports?account=ACC-2").await), 3);
    assert_eq!(count(&browser.get("/dashboard/exports?status=FAILED").await), 1);
    assert_eq!(count(&browser.get(&format!("/dashboard/exports?key={}", &bob[..11])).await), 3);
    let alices_acc2 = browser.get(&format!("/dashboard/exports?key={}&account=ACC-2", &alice[..11])).await;
    assert_eq!(count(&alices_acc2), 1, "alice requested one of bob's exports too");
    assert!(alices_acc2.body.contains(&bobs[0]));
    let pending = browser.get("/dashboard/exports?table=bank_transactions&status=PENDING").await;
    assert_eq!(count(&pending), 100, "107 pending: a full page");
    assert!(
        pending.body.contains("status=PENDING&amp;table=bank_transactions&amp;after="),
        "the next page keeps the filters"
    );
    let today = time::OffsetDateTime::now_utc().date();
    assert_eq!(
        count(&browser.get(&format!("/dashboard/exports?from={today}&to={today}&account=ACC-2")).await),
        3
    );
    assert_eq!(count(&browser.get("/dashboard/exports?to=2001-01-01").await), 0);
    assert_eq!(count(&browser.get("/dashboard/exports?key=sk_nosuchkey").await), 0);
    for bad in ["status=DONE", "account=no%20spaces", "table=secrets", "from=yesterday"] {
        assert_eq!(
            browser.get(&format!("/dashboard/exports?{bad}")).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    // Nothing here needs the exports produced.
    db.execute("UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE state = 'available'", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_schedule_is_listed_and_has_its_own_page_with_its_runs_linked_to_their_exports() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let admin_key = app.create_admin_key().await;
    let body = json!({
        "name": "Weekly <b>statements</b>", "accounts": ["ACC-1"], "table_name": "bank_transactions",
        "frequency": "weekly", "weekday": "monday", "time_zone": "Europe/Berlin", "starts_on": "2024-01-03",
    });
    let response = app
        .http
        .post(format!("{}/api/schedules", app.base_url))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let schedule: Value = response.json().await.unwrap();
    let id = schedule["id"].as_str().unwrap().to_owned();
    // A run of it, linked to an export of its period.
    let export = json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-07", "time_zone": "Europe/Berlin"});
    let created: Value = app.post_export(&key, &export).await.json().await.unwrap();
    let export_id = created["reference_id"].as_str().unwrap().to_owned();
    let db = app.pool.get().await.unwrap();
    db.execute(
        "INSERT INTO schedule_runs (schedule_id, account_id, period_from, period_to, due_at, export_id)
         VALUES ($1::text::uuid, 'ACC-1', '2024-01-01', '2024-01-07', now(), $2::text::uuid)",
        &[&id, &export_id],
    )
    .await
    .unwrap();

    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let list = browser.get("/dashboard/schedules").await;
    assert_eq!(list.status, StatusCode::OK);
    for shown in [
        "Weekly &lt;b&gt;statements&lt;/b&gt;",
        "test (sk_",
        "weekly on monday",
        "Europe/Berlin",
        "2024-01-01 – 2024-01-07",
        "active",
        "PENDING",
    ] {
        assert!(list.body.contains(shown), "the list lacks {shown}: {}", list.body);
    }
    assert!(list.body.contains(&format!("/dashboard/schedules/{id}")));
    let page = browser.get(&format!("/dashboard/schedules/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&format!("href=\"/dashboard/exports/{export_id}\"")), "{}", page.body);
    assert!(page.body.contains("ACC-1") && page.body.contains("weekly on monday"));
    assert_eq!(
        browser.get(&format!("/dashboard/schedules/{}", uuid::Uuid::new_v4())).await.status,
        StatusCode::NOT_FOUND
    );
    app.run_pending_jobs().await;
}
