//! The real worker binary is SIGKILLed mid-export: another worker finishes the export within
//! the lease plus a few seconds, exactly one object is completed, its checksum and row count are
//! right, and the killed attempt's late writes are refused.

use std::{process::Command, time::Duration};

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::{config::StorageConfig, exports};
use testkit::{FileHold, TestApp, files_under, sha256_hex};

const ROWS: u64 = 300_000;

#[tokio::test]
async fn a_killed_worker_s_export_is_finished_by_another_worker() {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-BIG", 1, ROWS).await;
    let key = app.create_key(None).await;
    let body = json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"});
    let created: Value = app.post_export(&key, &body).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let StorageConfig::Local { root } = &app.config.storage else { unreachable!() };

    let running = FileHold::new();
    let (hold_var, hold) = running.setting("after_first_chunk");
    let mut child = Command::new(env!("CARGO_BIN_EXE_statement-worker"))
        .env("DATABASE_URL", app.config.database_url.expose_secret())
        .env("SOURCE_DATABASE_URL", app.config.source_database_url.expose_secret())
        .env("LOCAL_STORAGE_DIR", root)
        .env("JOB_LEASE_SECS", "2")
        // Any free port: a `make run` or another test may hold the default one.
        .env("WORKER_METRICS_BIND", "127.0.0.1:0")
        .env("EXPORT_PROGRESS_INTERVAL_MS", "50")
        .env("RUST_LOG", "warn")
        .env(hold_var, hold)
        .spawn()
        .expect("the worker binary starts");
    // Killed mid-export: held after its first chunk.
    running.reached().await;
    let (job_id, stale_token): (i64, uuid::Uuid) = {
        let db = app.pool.get().await.unwrap();
        let row = db.query_one("SELECT id, attempt_token FROM jobs", &[]).await.unwrap();
        (row.get(0), row.get(1))
    };
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let killed_at = std::time::Instant::now();

    // A healthy worker (in-process, with maintenance) rescues the lease and finishes the export.
    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    let recovered_in = killed_at.elapsed();
    worker.stop().await;
    assert!(recovered_in < Duration::from_secs(2 + 20), "recovered in {recovered_in:?}");

    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["row_count"], ROWS);
    let bytes = app.download(details["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    assert_eq!(details["sha256"], sha256_hex(&bytes));
    assert_eq!(testkit::parse_csv(&bytes).len() as u64, ROWS + 1);
    let attempts: i32 = {
        let db = app.pool.get().await.unwrap();
        db.query_one("SELECT attempt FROM jobs", &[]).await.unwrap().get(0)
    };
    assert_eq!(attempts, 2);
    // Exactly one completed object for this export (the killed attempt never completed its
    // upload; a local staging file may remain, named `…#n`).
    let completed: Vec<_> = files_under(&root.join("exports").join(&id))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    assert_eq!(completed.len(), 1, "{completed:?}");

    // The killed attempt's late writes, simulated with its token, are refused.
    let stale = exports::Attempt { export_id: id.parse().unwrap(), job_id, token: stale_token };
    app.assert_export_writes_refused(stale).await;
    let after: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(after["sha256"], details["sha256"]);
}
