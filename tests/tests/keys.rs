//! Keys and shared exports: revoked is final, a client key's scope is explicit, who asked for
//! an export is recorded, a key cancels only what it asked for (and only for itself while
//! others hold it), and a key's outstanding exports are capped.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp, dashboard::DashboardClient};

fn statement(account: &str, from: &str, to: &str) -> Value {
    json!({"account_id": account, "table_name": "bank_transactions", "date_from": from, "date_to": to})
}

fn january() -> Value {
    statement("ACC-1", "2024-01-01", "2024-01-31")
}

async fn key_id(app: &TestApp, plaintext: &str) -> uuid::Uuid {
    let db = app.pool.get().await.unwrap();
    db.query_one("SELECT id FROM api_keys WHERE key_hash = sha256($1::text::bytea)", &[&plaintext])
        .await
        .unwrap()
        .get(0)
}

/// The key's row on /admin/api-keys (from its prefix to the end of the row).
fn key_row<'a>(page: &'a str, plaintext: &str) -> &'a str {
    let start = page.find(&plaintext[..11]).expect("the key is listed");
    let end = page[start..].find("</tr>").map_or(page.len(), |e| start + e);
    &page[start..end]
}

#[tokio::test]
async fn a_revoked_key_stays_revoked_whatever_the_dashboard_does() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let key = app.create_key(None).await;
    let id = key_id(&app, &key).await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    browser.get("/admin/api-keys").await;

    // Deactivate and reactivate are a state of their own: the key comes back.
    let fetched = browser.post(&format!("/admin/api-keys/{id}/deactivate"), &[]).await;
    assert_eq!(fetched.location.as_deref(), Some("/admin/api-keys?notice=deactivate"));
    assert_eq!(app.post_export(&key, &january()).await.status(), StatusCode::UNAUTHORIZED);
    let page = browser.get("/admin/api-keys").await.body;
    assert!(key_row(&page, &key).contains("deactivated"), "{}", key_row(&page, &key));
    browser.post(&format!("/admin/api-keys/{id}/reactivate"), &[]).await;
    assert_eq!(app.post_export(&key, &january()).await.status(), StatusCode::ACCEPTED);

    // Deactivated, then revoked (the CLI's `keys revoke`): reactivating does nothing.
    browser.post(&format!("/admin/api-keys/{id}/deactivate"), &[]).await;
    app.revoke_key(&key).await;
    for action in ["reactivate", "deactivate", "reactivate"] {
        let fetched = browser.post(&format!("/admin/api-keys/{id}/{action}"), &[]).await;
        assert_eq!(fetched.status, StatusCode::SEE_OTHER, "{action}");
        assert_eq!(fetched.location.as_deref(), Some("/admin/api-keys?notice=revoked"), "{action}");
        let status = app.get_export(&key, &uuid::Uuid::new_v4().to_string()).await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "after {action} of a revoked key");
    }
    let page = browser.get("/admin/api-keys?notice=revoked").await.body;
    assert!(page.contains("revoked"), "the notice says why nothing changed");
    let row = key_row(&page, &key);
    assert!(row.contains("revoked"), "the list shows the key as revoked: {row}");
    assert!(!row.contains("Reactivate") && !row.contains("Deactivate"), "no way back offered: {row}");
    let db = app.pool.get().await.unwrap();
    let revoked: bool = db
        .query_one("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
}

#[tokio::test]
async fn a_client_key_is_made_for_listed_accounts_or_explicitly_for_all() {
    let app = TestApp::spawn().await;
    let admin_key = app.create_admin_key().await;
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let page = browser.get("/admin/api-keys").await.body;
    assert!(page.contains(r#"name="all_accounts""#), "the form has an all-accounts control");
    let db = app.pool.get().await.unwrap();
    let count = || async {
        let db = app.pool.get().await.unwrap();
        db.query_one("SELECT count(*) FROM api_keys", &[]).await.unwrap().get::<_, i64>(0)
    };
    let before = count().await;

    let refused = browser.post("/admin/api-keys", &[("name", "no scope"), ("role", "client")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("needs its scope"), "{}", refused.body);
    let both = browser
        .post(
            "/admin/api-keys",
            &[("name", "both"), ("role", "client"), ("accounts", "ACC-1"), ("all_accounts", "yes")],
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.body);
    assert_eq!(count().await, before, "nothing was created");

    let all = browser
        .post("/admin/api-keys", &[("name", "all"), ("role", "client"), ("all_accounts", "yes")])
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let listed = browser
        .post("/admin/api-keys", &[("name", "listed"), ("role", "client"), ("accounts", "ACC-1")])
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    // Admin keys always have every account: no choice needed.
    let admin = browser.post("/admin/api-keys", &[("name", "ops"), ("role", "admin")]).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    let rows = db
        .query("SELECT name, allowed_accounts FROM api_keys WHERE name IN ('all', 'listed', 'ops') ORDER BY name", &[])
        .await
        .unwrap();
    let scopes: Vec<(String, Option<Vec<String>>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        scopes,
        [("all".into(), None), ("listed".into(), Some(vec!["ACC-1".into()])), ("ops".into(), None)]
    );
}

#[tokio::test]
async fn every_request_of_an_export_is_recorded_with_its_key() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.create_key(None).await, app.create_key(Some(&["ACC-1"])).await);
    let (a_id, b_id) = (key_id(&app, &a).await, key_id(&app, &b).await);
    let created: Value = app.post_export(&a, &january()).await.json().await.unwrap();
    let reused = app.post_export(&b, &january()).await;
    assert_eq!(reused.status(), StatusCode::OK);
    let export: uuid::Uuid = created["reference_id"].as_str().unwrap().parse().unwrap();

    // Both requesters are there at once (a cancel must see them), the creator first.
    let db = app.pool.get().await.unwrap();
    let requesters = |db: deadpool_postgres::Object| async move {
        let rows = db
            .query(
                "SELECT api_key_id, requests, detached_at IS NULL FROM export_requesters
                 WHERE export_id = $1 ORDER BY first_requested_at, id",
                &[&export],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get::<_, uuid::Uuid>(0), r.get::<_, i64>(1), r.get::<_, bool>(2)))
            .collect::<Vec<_>>()
    };
    assert_eq!(requesters(db).await, [(a_id, 1, true), (b_id, 1, true)]);

    // Repeats are counted too, in the API's next batch (every 5 s).
    for _ in 0..3 {
        assert_eq!(app.post_export(&b, &january()).await.status(), StatusCode::OK);
    }
    let mut seen = Vec::new();
    for _ in 0..80 {
        seen = requesters(app.pool.get().await.unwrap()).await;
        if seen == [(a_id, 1, true), (b_id, 4, true)] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("repeats not recorded within 8 s: {seen:?}");
}

#[tokio::test]
async fn a_key_cancels_only_what_it_asked_for_and_never_takes_it_from_another() {
    let app = TestApp::spawn().await;
    let a = app.create_key(None).await;
    let b = app.create_key(Some(&["ACC-1"])).await;
    let bystander = app.create_key(Some(&["ACC-1"])).await;
    let elsewhere = app.create_key(Some(&["ACC-2"])).await;
    app.insert_generated_rows("ACC-1", 1, 50).await;

    let shared_export: Value = app.post_export(&a, &january()).await.json().await.unwrap();
    let id = shared_export["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_export(&b, &january()).await.status(), StatusCode::OK);

    // A key that may see the account but never asked: 403; one that may not see it: 404.
    let response = app.cancel_export(&bystander, &id).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("did not request"), "{problem}");
    assert_eq!(app.cancel_export(&elsewhere, &id).await.status(), StatusCode::NOT_FOUND);

    // A cancels: B still holds the export, so A is only detached.
    let response = app.cancel_export(&a, &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["status"].as_str(), answer["detached"].as_bool()),
        (Some("PENDING"), Some(true)),
        "{answer}"
    );
    // Asking again is the same answer, and nothing else changes.
    let again: Value = app.cancel_export(&a, &id).await.json().await.unwrap();
    assert_eq!(
        (again["status"].as_str(), again["detached"].as_bool()),
        (Some("PENDING"), Some(true)),
        "{again}"
    );

    // B gets its file.
    let settled = app.run_until_settled(&b, &id).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");
    let file = app.download(settled["file_url"].as_str().unwrap()).await;
    assert_eq!(file.status(), StatusCode::OK);

    // Another shared export: once A has left, B's cancel is the last one and cancels it.
    let february = statement("ACC-1", "2024-02-01", "2024-02-29");
    let created: Value = app.post_export(&b, &february).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_export(&a, &february).await.status(), StatusCode::OK);
    let first: Value = app.cancel_export(&b, &id).await.json().await.unwrap();
    assert_eq!(first["detached"], true, "{first}");
    let last: Value = app.cancel_export(&a, &id).await.json().await.unwrap();
    assert_eq!(
        (last["status"].as_str(), last["detached"].as_bool()),
        (Some("CANCELLED"), Some(false)),
        "{last}"
    );

    // A lone requester cancels at once, as before.
    let march = statement("ACC-1", "2024-03-01", "2024-03-31");
    let created: Value = app.post_export(&a, &march).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let cancelled: Value = app.cancel_export(&a, &id).await.json().await.unwrap();
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["detached"].as_bool()),
        (Some("CANCELLED"), Some(false))
    );
}

/// An API process on `app`'s database whose keys may have `cap` outstanding exports each.
fn api_with_cap(app: &TestApp, cap: i64) -> poem::test::TestClient<impl poem::Endpoint> {
    let mut config = TestApp::api_config(([127, 0, 0, 1], 0).into(), &app.base_url, 6000, 2000);
    config.max_outstanding_exports_per_key = cap;
    poem::test::TestClient::new(api::app(api::AppState::from_config(&app.config, &config).unwrap()))
}

async fn post(
    client: &poem::test::TestClient<impl poem::Endpoint>,
    key: &str,
    body: &Value,
) -> poem::test::TestResponse {
    client.post("/api/export").header("authorization", format!("Bearer {key}")).body_json(body).send().await
}

#[tokio::test]
async fn a_key_may_have_only_so_many_exports_outstanding() {
    let app = TestApp::spawn().await;
    let api = api_with_cap(&app, 2);
    let (key, other) = (app.create_key(None).await, app.create_key(None).await);
    let day = |d: u32| statement("ACC-1", &format!("2024-01-{d:02}"), &format!("2024-01-{d:02}"));

    post(&api, &key, &day(1)).await.assert_status(StatusCode::ACCEPTED);
    post(&api, &key, &day(2)).await.assert_status(StatusCode::ACCEPTED);
    let refused = post(&api, &key, &day(3)).await;
    refused.assert_status(StatusCode::TOO_MANY_REQUESTS);
    refused.assert_header("retry-after", "30");
    refused.assert_content_type("application/problem+json");
    let problem: Value = serde_json::from_str(&refused.0.into_body().into_string().await.unwrap()).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("2 exports pending or processing"), "{problem}");
    // force_refresh makes new work too: refused, and the live export is left as it was.
    let mut refresh = day(1);
    refresh["force_refresh"] = json!(true);
    post(&api, &key, &refresh).await.assert_status(StatusCode::TOO_MANY_REQUESTS);

    // A request an existing export answers creates no work: never refused.
    post(&api, &key, &day(1)).await.assert_status(StatusCode::OK);
    post(&api, &other, &day(9)).await.assert_status(StatusCode::ACCEPTED);
    post(&api, &key, &day(9)).await.assert_status(StatusCode::OK);
    // The other key has its own allowance.
    post(&api, &other, &day(3)).await.assert_status(StatusCode::ACCEPTED);

    // Once its exports finish, the key may ask for more.
    app.run_pending_jobs().await;
    post(&api, &key, &day(3)).await.assert_status(StatusCode::OK);
    post(&api, &key, &day(4)).await.assert_status(StatusCode::ACCEPTED);
}

#[tokio::test]
async fn concurrent_creates_on_two_api_processes_cannot_both_pass_the_cap() {
    let app = TestApp::spawn().await;
    let (first, second) = (api_with_cap(&app, 1), api_with_cap(&app, 1));
    let key = app.create_key(None).await;
    for round in 0..3 {
        let bodies: Vec<Value> = (1..=8)
            .map(|d| statement("ACC-1", &format!("202{round}-01-{d:02}"), &format!("202{round}-01-{d:02}")))
            .collect();
        let requests = bodies.iter().enumerate().map(|(i, body)| {
            let api = if i % 2 == 0 { &first } else { &second };
            let key = key.clone();
            async move { post(api, &key, body).await.0.status() }
        });
        let statuses = futures::future::join_all(requests).await;
        let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
        let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!((accepted, refused), (1, 7), "round {round}: {statuses:?}");
        app.run_pending_jobs().await;
    }
}
