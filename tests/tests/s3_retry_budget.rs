//! `S3_RETRY_TIMEOUT_SECS` is a time budget: a storage outage shorter than it, in the middle of
//! a multipart upload, costs the export time but not its attempt.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::{config::StorageConfig, tables::TableRegistry};
use testkit::{
    TestApp,
    s3::{ChaosProxy, MotoServer, s3_config},
    sha256_hex,
};

const ROWS: u64 = 400_000;

/// How long storage stays away once the upload is seen retrying into the outage: longer than
/// five retries' backoff can last (at most 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s), which is where a
/// retry count (the former `S3_MAX_RETRIES=5`) gave up, and well inside the budget.
const OUTAGE_AFTER_FIRST_REFUSALS: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_storage_outage_within_the_retry_budget_does_not_cost_the_attempt() {
    let moto = MotoServer::start().await;
    let proxy = ChaosProxy::start(moto.addr).await;
    let app = TestApp::spawn_configured(TableRegistry::demo(), |c| {
        let mut s3 = s3_config(proxy.endpoint());
        s3.retry_timeout = Duration::from_secs(60);
        c.storage = StorageConfig::S3(s3);
    })
    .await;
    app.insert_generated_rows("ACC-BIG", 1, ROWS).await;
    let key = app.create_key(None).await;
    let body = json!({"account_id": "ACC-BIG", "table_name": "bank_transactions",
                      "date_from": "2024-01-01", "date_to": "2024-12-31"});
    let created: Value = app.post_export(&key, &body).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();

    let worker = app.runner(TestApp::worker_config()).spawn();
    // Several parts are up when storage goes away.
    app.wait_for(&format!("SELECT rows_exported >= 150000 FROM exports WHERE id = '{id}'")).await;
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.turned_away() < 3 {
        assert!(Instant::now() < deadline, "the upload never retried into the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(OUTAGE_AFTER_FIRST_REFUSALS).await; // the outage goes on: its length, not an outcome
    let turned_away = proxy.turned_away();
    proxy.restore();

    app.wait_for("SELECT state IN ('completed', 'retryable', 'failed') OR attempt > 1 FROM jobs").await;
    let db = app.pool.get().await.unwrap();
    let job = db.query_one("SELECT state, attempt, last_error FROM jobs", &[]).await.unwrap();
    let (state, attempt, error): (String, i32, Option<String>) = (job.get(0), job.get(1), job.get(2));
    assert_eq!(
        (state.as_str(), attempt),
        ("completed", 1),
        "the outage cost the attempt ({turned_away} connections reset): {error:?}"
    );
    worker.stop().await;

    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "COMPLETED", "{details}");
    assert_eq!(details["row_count"], ROWS);
    let file = app.download(details["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    assert_eq!(details["sha256"], sha256_hex(&file));
    assert_eq!(details["file_size"], file.len());
    // Every row once, in order: the header, then ids 1..=ROWS (no row lost or repeated by a
    // retried part).
    let lines: Vec<&[u8]> = file.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len() as u64, ROWS + 1);
    for (n, line) in lines[1..].iter().enumerate() {
        let id = line.split(|&b| b == b',').next().unwrap();
        assert_eq!(id, (n as u64 + 1).to_string().as_bytes(), "row {n}");
    }
    let keys = moto.list_keys(&format!("exports/{id}/")).await;
    assert_eq!(keys.len(), 1, "one object, from the one attempt: {keys:?}");
}
