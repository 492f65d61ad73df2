//! Exports to a real S3-compatible server (moto over HTTP): multipart uploads, pre-signed
//! downloads byte-identical to local storage, and storage going away mid-upload.

use serde_json::{Value, json};
use shared::{
    config::{Retention, StorageConfig},
    tables::TableRegistry,
};
use testkit::{
    TestApp,
    s3::{ChaosProxy, MotoServer, s3_config},
    sha256_hex,
};

const ROWS: u64 = 200_000;

fn year_2024() -> Value {
    json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

async fn s3_app(endpoint: String) -> TestApp {
    TestApp::spawn_configured(TableRegistry::demo(), |c| c.storage = StorageConfig::S3(s3_config(endpoint)))
        .await
}

async fn export(app: &TestApp, key: &str) -> (Value, Vec<u8>) {
    let created: Value = app.post_export(key, &year_2024()).await.json().await.unwrap();
    let details = app.run_until_settled(key, created["reference_id"].as_str().unwrap()).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
    let response = app.download(details["file_url"].as_str().unwrap()).await;
    assert!(response.status().is_success(), "{}", response.status());
    (details, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_multipart_s3_export_downloads_byte_for_byte_like_the_local_one() {
    let moto = MotoServer::start().await;
    let on_s3 = s3_app(moto.endpoint()).await;
    let local = TestApp::spawn().await;
    on_s3.insert_generated_rows("ACC-BIG", 1, ROWS).await;
    local.insert_generated_rows("ACC-BIG", 1, ROWS).await;
    let (s3_key, local_key) = (on_s3.create_key(None).await, local.create_key(None).await);

    let (details, from_s3) = export(&on_s3, &s3_key).await;
    let (_, from_disk) = export(&local, &local_key).await;
    let url = details["file_url"].as_str().unwrap();
    assert!(url.starts_with(&moto.endpoint()) && url.contains("X-Amz-Signature="), "a pre-signed GET: {url}");
    assert!(from_s3.len() > 3 * 5 * 1024 * 1024, "larger than three 5 MiB parts: {}", from_s3.len());
    assert_eq!(details["sha256"], sha256_hex(&from_s3));
    assert!(from_s3 == from_disk, "S3 and local exports differ");
    let id = details["reference_id"].as_str().unwrap();
    assert_eq!(moto.list_keys(&format!("exports/{id}/")).await.len(), 1);
}

#[tokio::test]
async fn storage_going_away_mid_upload_leaves_no_object_and_the_job_retries() {
    let moto = MotoServer::start().await;
    let proxy = ChaosProxy::start(moto.addr).await;
    let app = s3_app(proxy.endpoint()).await;
    app.insert_generated_rows("ACC-BIG", 1, 2 * ROWS).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &year_2024()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();

    let worker = app.runner(TestApp::worker_config()).spawn();
    // Several parts are up when storage goes away.
    app.wait_for(&format!("SELECT rows_exported >= 150000 FROM exports WHERE id = '{id}'")).await;
    proxy.cut();
    app.wait_for("SELECT state = 'retryable' FROM jobs").await;
    worker.stop().await;

    assert!(moto.list_keys("exports/").await.is_empty(), "no object, complete or partial");
    // The abort failed with storage away: the parts are still there, until storage is back.
    assert_eq!(moto.list_multipart_uploads("exports/").await.len(), 1);
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "PENDING");
    assert_eq!(details["error_code"], "storage_unavailable", "{details}");

    // Storage is back: the retry completes the export.
    proxy.restore();
    app.pool.get().await.unwrap().execute("UPDATE jobs SET run_at = now()", &[]).await.unwrap();
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["status"], "COMPLETED");
    assert_eq!(details["row_count"], 2 * ROWS);
    let keys = moto.list_keys(&format!("exports/{id}/")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Maintenance retried the failed abort: no parts are left behind (no lifecycle rule needed).
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let report = worker::maintenance::run_once(
        &ctx,
        Retention { jobs: std::time::Duration::from_secs(86_400), export_rows: None },
    )
    .await;
    assert_eq!(report.cleaned_uploads, 1);
    assert!(moto.list_multipart_uploads("exports/").await.is_empty());
}
