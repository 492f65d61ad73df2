//! A completed export whose file disappeared from storage (deleted by hand, a bucket lifecycle
//! rule) is never handed out again: reading it says the file is gone (410), the next identical
//! request makes a new export, and the dashboard shows no dead link. A storage outage is not
//! taken for a missing file.

use serde_json::{Value, json};
use shared::{config::StorageConfig, tables::TableRegistry};
use testkit::{
    StatusCode, TestApp,
    dashboard::DashboardClient,
    s3::{BUCKET, ChaosProxy, MotoServer, s3_config},
};

fn month(month: u8) -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions",
           "date_from": format!("2024-{month:02}-01"), "date_to": format!("2024-{month:02}-28")})
}

/// Requests `body`, runs it to COMPLETED; returns its reference id and object key.
async fn completed(app: &TestApp, key: &str, body: &Value) -> (String, String) {
    let created: Value = app.post_export(key, body).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let details = app.run_until_settled(key, &id).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
    let db = app.pool.get().await.unwrap();
    let file_key: String =
        db.query_one("SELECT file_key FROM exports WHERE id::text = $1", &[&id]).await.unwrap().get(0);
    (id, file_key)
}

/// `GET /api/export/{id}` answers 410 with a problem document that tells the client what to do
/// and nothing about where the file was kept.
async fn assert_gone(app: &TestApp, key: &str, id: &str, file_key: &str) {
    let response = app.get_export(key, id).await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let text = response.text().await.unwrap();
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["status"], 410);
    assert!(problem["detail"].as_str().unwrap().contains("Request the statement again"), "{problem}");
    for internal in [file_key, "exports/", BUCKET, app.storage_dir.to_str().unwrap()] {
        assert!(!text.contains(internal), "{internal:?} leaked: {text}");
    }
}

async fn status_of(app: &TestApp, id: &str) -> (String, bool, bool) {
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT status, file_lost_at IS NOT NULL, file_key IS NULL FROM exports WHERE id::text = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_file_removed_from_local_disk_is_gone_and_the_same_request_makes_a_new_export() {
    let app = TestApp::spawn().await;
    app.source_exec(
        "INSERT INTO bank_transactions (id, account_id, txn_date, posted_at, description, amount, currency)
         VALUES (1, 'ACC-1', '2024-01-15', '2024-01-15 10:00:00', 'rent', -900.00, 'EUR'),
                (2, 'ACC-1', '2024-02-15', '2024-02-15 10:00:00', 'rent', -900.00, 'EUR')",
    )
    .await;
    let key = app.create_key(None).await;
    let admin = app.create_admin_key().await;
    let (january, january_file) = completed(&app, &key, &month(1)).await;
    let (february, february_file) = completed(&app, &key, &month(2)).await;
    std::fs::remove_file(app.storage_dir.join(&january_file)).unwrap();
    std::fs::remove_file(app.storage_dir.join(&february_file)).unwrap();

    // The identical request is not given the export whose file is gone: a new one is queued.
    let again = app.post_export(&key, &month(1)).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["reused"], false, "{again}");
    assert_ne!(again["reference_id"], january.as_str());
    assert_eq!(status_of(&app, &january).await, ("EXPIRED".into(), true, true));
    assert_gone(&app, &key, &january, &january_file).await;
    let fresh = app.run_until_settled(&key, again["reference_id"].as_str().unwrap()).await;
    assert_eq!((fresh["status"].as_str(), fresh["row_count"].as_i64()), (Some("COMPLETED"), Some(1)));
    let download = app.download(fresh["file_url"].as_str().unwrap()).await;
    assert_eq!(download.status(), StatusCode::OK);

    // Read first: the status request finds the file gone, and then the request is made afresh.
    assert_gone(&app, &key, &february, &february_file).await;
    assert_eq!(status_of(&app, &february).await, ("EXPIRED".into(), true, true));
    let again: Value = app.post_export(&key, &month(2)).await.json().await.unwrap();
    assert_eq!(again["reused"], false, "{again}");

    // The dashboard shows what happened, and no link.
    let mut browser = DashboardClient::signed_in(&app, &admin).await;
    let page = browser.get(&format!("/dashboard/exports/{february}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("disappeared from storage"), "{}", page.body);
    assert!(!page.body.contains("/files/"), "no download link: {}", page.body);
}

#[tokio::test]
async fn the_dashboard_finds_a_missing_file_itself_and_shows_no_dead_link() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let admin = app.create_admin_key().await;
    let (id, file_key) = completed(&app, &key, &month(1)).await;
    let mut browser = DashboardClient::signed_in(&app, &admin).await;
    let page = browser.get(&format!("/dashboard/exports/{id}")).await;
    assert!(page.body.contains("/files/exports/"), "a link while the file exists");

    std::fs::remove_file(app.storage_dir.join(&file_key)).unwrap();
    let page = browser.get(&format!("/dashboard/exports/{id}")).await;
    assert!(!page.body.contains("/files/"), "no dead link: {}", page.body);
    assert!(page.body.contains("disappeared from storage"), "{}", page.body);
    assert_eq!(status_of(&app, &id).await, ("EXPIRED".into(), true, true));
}

async fn s3_app(endpoint: String) -> TestApp {
    TestApp::spawn_configured(TableRegistry::demo(), |c| c.storage = StorageConfig::S3(s3_config(endpoint)))
        .await
}

#[tokio::test]
async fn an_object_deleted_from_s3_is_gone_and_the_same_request_makes_a_new_export() {
    let moto = MotoServer::start().await;
    let app = s3_app(moto.endpoint()).await;
    let key = app.create_key(None).await;
    let (id, file_key) = completed(&app, &key, &month(1)).await;
    assert_eq!(moto.list_keys(&file_key).await, vec![file_key.to_owned()]);

    // Deleted behind the service's back (a lifecycle rule, an operator).
    moto.delete_object(&file_key).await;
    assert!(moto.list_keys(&file_key).await.is_empty());

    assert_gone(&app, &key, &id, &file_key).await;
    let again = app.post_export(&key, &month(1)).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["reference_id"], id.as_str());
    let fresh = app.run_until_settled(&key, again["reference_id"].as_str().unwrap()).await;
    assert_eq!(fresh["status"], "COMPLETED");
    let download = app.download(fresh["file_url"].as_str().unwrap()).await;
    assert_eq!(download.status(), StatusCode::OK);
}

#[tokio::test]
async fn storage_that_does_not_answer_is_not_taken_for_a_missing_file() {
    let moto = MotoServer::start().await;
    let proxy = ChaosProxy::start(moto.addr).await;
    let app = s3_app(proxy.endpoint()).await;
    let key = app.create_key(None).await;
    let (id, _) = completed(&app, &key, &month(1)).await;

    proxy.cut();
    // Answered as before (S3 links are signed without asking S3), never a 500.
    let details = app.get_export(&key, &id).await;
    assert_eq!(details.status(), StatusCode::OK);
    let details: Value = details.json().await.unwrap();
    assert_eq!(details["status"], "COMPLETED");
    assert!(details["file_url"].is_string());
    let again = app.post_export(&key, &month(1)).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!((again["reference_id"].as_str(), again["reused"].as_bool()), (Some(id.as_str()), Some(true)));
    assert_eq!(status_of(&app, &id).await, ("COMPLETED".into(), false, false), "the export is not retired");

    proxy.restore();
    let details = app.get_export(&key, &id).await;
    assert_eq!(details.status(), StatusCode::OK);
    let download = app.download(details.json::<Value>().await.unwrap()["file_url"].as_str().unwrap()).await;
    assert_eq!(download.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_storage_root_is_not_taken_for_missing_files() {
    let app = TestApp::spawn().await;
    app.source_exec("INSERT INTO bank_transactions VALUES (1, 'ACC-1', '2024-01-05', '2024-01-05 10:00:00', 'x', NULL, 1.00, 'EUR', NULL)").await;
    let key = app.create_key(None).await;
    let (id, _) = completed(&app, &key, &month(1)).await;
    // The volume is not mounted (or S3_BUCKET names another bucket): every HEAD says "not found".
    let aside = app.storage_dir.with_extension("unmounted");
    std::fs::rename(&app.storage_dir, &aside).unwrap();
    let details = app.get_export(&key, &id).await;
    assert_eq!(details.status(), StatusCode::OK, "not 410: the file may well exist");
    let again: Value = app.post_export(&key, &month(1)).await.json().await.unwrap();
    assert_eq!(again["reference_id"].as_str(), Some(id.as_str()), "{again}");
    assert_eq!(status_of(&app, &id).await, ("COMPLETED".into(), false, false), "the export is not retired");

    std::fs::rename(&aside, &app.storage_dir).unwrap();
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    let download = app.download(details["file_url"].as_str().unwrap()).await;
    assert_eq!(download.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_silent_store_does_not_hold_up_a_status_read() {
    let moto = MotoServer::start().await;
    let proxy = ChaosProxy::start(moto.addr).await;
    // The service's real retry budget: a request to a silent store is retried for minutes.
    let app = TestApp::spawn_configured(TableRegistry::demo(), |c| {
        let mut s3 = s3_config(proxy.endpoint());
        s3.retry_timeout = std::time::Duration::from_secs(180);
        c.storage = StorageConfig::S3(s3)
    })
    .await;
    let key = app.create_key(None).await;
    let (id, _) = completed(&app, &key, &month(1)).await;

    proxy.freeze();
    let started = std::time::Instant::now();
    let details = app.get_export(&key, &id).await;
    assert_eq!(details.status(), StatusCode::OK);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "answered in {:?}", started.elapsed());
    proxy.thaw();
    assert_eq!(status_of(&app, &id).await, ("COMPLETED".into(), false, false));
}
