//! Nothing lost under crashes, stalls and outages, with the worker in-process and held at exact
//! points (`worker::holds`): setbacks never move an export another claim runs, cancellation and
//! shutdown stop an attempt within a heartbeat even while the source is slow or silent, outages
//! of minutes are retried, and an export always says what is happening.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use shared::{
    config::{Retention, WorkerConfig},
    exports, queue,
};
use testkit::{StatusCode, TestApp, files_under, s3::ChaosProxy, sha256_hex};
use worker::holds::HoldPoint;

const ROWS: u64 = 50_000;

fn year_2024() -> Value {
    json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

async fn app_with_an_export(rows: u64) -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-BIG", 1, rows).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &year_2024()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    (app, key, id)
}

async fn one_value<T: for<'a> tokio_postgres::types::FromSql<'a>>(app: &TestApp, sql: &str) -> T {
    let db = app.pool.get().await.unwrap();
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// A worker whose source does not answer (nothing listens on port 1): every attempt fails
/// retryably at once.
fn worker_with_source_down(app: &TestApp, worker: WorkerConfig) -> worker::runner::Runner {
    let mut config = app.config.clone();
    config.source_database_url =
        secrecy::SecretString::from("mysql://statements_ro:x@127.0.0.1:1/none".to_owned());
    TestApp::runner_for(&config, worker)
}

/// Retries wait an hour (so `run_pending` runs one attempt) until the test makes them due.
fn long_backoff() -> WorkerConfig {
    let hour = Duration::from_secs(3600);
    WorkerConfig { retry_base: hour, retry_max: hour, ..TestApp::worker_config() }
}

/// Makes a waiting retry due now. Skips a job row another transaction holds.
async fn retry_now(app: &TestApp) {
    let db = app.pool.get().await.unwrap();
    db.execute(
        "UPDATE jobs SET run_at = now() WHERE id IN (SELECT id FROM jobs FOR UPDATE SKIP LOCKED)",
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_setback_never_moves_an_export_that_another_claim_is_running() {
    let (app, key, id) = app_with_an_export(ROWS).await;
    // Claim A fails retryably (source down) and is held just before recording its setback.
    let a = worker_with_source_down(&app, long_backoff());
    let a_hold = a.holds().arm(HoldPoint::BeforeSetback);
    let a_task = tokio::spawn(async move { a.run_pending().await.unwrap() });
    a_hold.reached().await;

    // Meanwhile the retry falls due and claim B tries to take the job; B is held once it runs.
    retry_now(&app).await;
    let b = app.runner(TestApp::worker_config());
    let b_hold = b.holds().arm(HoldPoint::AfterFirstChunk);
    let mut b_task = tokio::spawn(async move { b.run_pending().await.unwrap() });
    let b_finished = tokio::select! {
        () = b_hold.reached() => false,
        ran = &mut b_task => ran.is_ok(),
    };
    a_hold.release();
    a_task.await.unwrap();

    // Whatever interleaving the queue allowed, the export never reads PENDING while a claim runs
    // it, nor PROCESSING while none does.
    let consistent: bool = one_value(
        &app,
        "SELECT (e.status = 'PROCESSING') = (j.state = 'running') FROM exports e JOIN jobs j ON j.id = e.job_id",
    )
    .await;
    b_hold.release();
    assert!(consistent, "the export's status contradicts its job's state");
    if !b_finished {
        let _ = b_task.await;
    }
    retry_now(&app).await;
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
}

#[tokio::test]
async fn cancelling_an_export_stuck_in_a_slow_source_query_stops_it_within_a_heartbeat() {
    let (app, key, id) = app_with_an_export(10).await;
    // The source query cannot start: the table is locked (a slow query, a long DDL).
    let mut locker = app.source_admin.get_conn().await.unwrap();
    locker.query_drop("LOCK TABLES bank_transactions WRITE").await.unwrap();
    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT status = 'PROCESSING' FROM exports WHERE id = '{id}'")).await;

    assert_eq!(app.cancel_export(&key, &id).await.status(), StatusCode::OK);
    // Lease 3 s: heartbeats every second. The attempt stops although no chunk ever filled, so
    // the worker (30 s of shutdown grace) stops at once, with the table still locked.
    tokio::time::timeout(Duration::from_secs(5), worker.stop())
        .await
        .expect("the cancelled attempt stopped without waiting for the source");
    locker.query_drop("UNLOCK TABLES").await.unwrap();
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "CANCELLED");
}

#[tokio::test]
async fn shutdown_releases_an_export_stuck_in_a_slow_source_query_at_once() {
    let (app, key, id) = app_with_an_export(10).await;
    let mut locker = app.source_admin.get_conn().await.unwrap();
    locker.query_drop("LOCK TABLES bank_transactions WRITE").await.unwrap();
    let worker =
        app.runner(WorkerConfig { shutdown_grace: Duration::ZERO, ..TestApp::worker_config() }).spawn();
    app.wait_for(&format!("SELECT status = 'PROCESSING' FROM exports WHERE id = '{id}'")).await;

    // The worker stops while the table is still locked: the attempt did not wait for the query.
    tokio::time::timeout(Duration::from_secs(10), worker.stop())
        .await
        .expect("the worker stopped without waiting for the source");
    locker.query_drop("UNLOCK TABLES").await.unwrap();
    let state: String = one_value(&app, "SELECT state FROM jobs").await;
    assert_eq!(state, "available", "released for another worker");
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["status"], "COMPLETED");
}

#[tokio::test]
async fn a_silent_source_fails_the_attempt_after_the_stall_timeout_and_the_retry_completes() {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-BIG", 1, 300_000).await;
    let key = app.create_key(None).await;
    // The worker reaches the source through a proxy that can go silent.
    let source_addr = testkit::source_admin_url().rsplit_once('@').unwrap().1.parse().unwrap();
    let proxy = ChaosProxy::start(source_addr).await;
    let mut config = app.config.clone();
    config.source_database_url = secrecy::SecretString::from(format!(
        "mysql://statements_ro:statements_ro@{}/{}",
        proxy.addr, app.source_db
    ));
    let worker_config = WorkerConfig { stall_timeout: Duration::from_secs(2), ..long_backoff() };
    let runner = TestApp::runner_for(&config, worker_config);
    let hold = runner.holds().arm(HoldPoint::AfterFirstChunk);
    let created: Value = app.post_export(&key, &year_2024()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let worker = runner.spawn();

    hold.reached().await;
    proxy.freeze();
    hold.release();
    app.wait_for("SELECT state = 'retryable' FROM jobs").await;
    let error: String = one_value(&app, "SELECT last_error FROM jobs").await;
    assert_eq!(error, "source_stalled");
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "PENDING", "{details}");
    let staging = files_under(&app.storage_dir.join("exports").join(&id));
    assert!(staging.is_empty(), "the failed attempt removed its staging data at once: {staging:?}");

    proxy.thaw();
    retry_now(&app).await;
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    worker.stop().await;
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["row_count"], 300_000);
    let bytes = app.download(details["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    assert_eq!(details["sha256"], sha256_hex(&bytes));
}

#[tokio::test]
async fn an_outage_longer_than_the_attempts_but_within_the_retry_window_does_not_fail_the_export() {
    let (app, key, id) = app_with_an_export(10).await;
    let window = WorkerConfig { retry_window: Duration::from_secs(600), ..long_backoff() };
    let down = worker_with_source_down(&app, window);
    // Twice the configured attempts (3), all within the window.
    for _ in 0..6 {
        retry_now(&app).await;
        assert_eq!(down.run_pending().await.unwrap(), 1);
    }
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "PENDING", "{details}");
    assert_eq!(details["error_code"], "source_unavailable", "{details}");

    // The outage has lasted longer than the window: the next failure is final.
    app.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE jobs SET failing_since = now() - interval '11 minutes', run_at = now()", &[])
        .await
        .unwrap();
    assert_eq!(down.run_pending().await.unwrap(), 1);
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "FAILED", "{details}");
}

#[tokio::test]
async fn a_rescued_export_reads_pending_with_the_reason_and_a_failed_one_keeps_no_leftovers() {
    let (app, key, id) = app_with_an_export(10).await;
    let export_id: uuid::Uuid = id.parse().unwrap();
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    // A worker claims the export, makes progress, and is lost.
    let crash = |db: deadpool_postgres::Object| async move {
        let job = queue::claim(&db, "lost-worker", 1, Duration::from_secs(30)).await.unwrap().remove(0);
        let attempt = exports::Attempt { export_id, job_id: job.id, token: job.token };
        assert!(exports::start(&db, attempt).await.unwrap().is_some());
        assert!(exports::record_progress(&db, attempt, 1234).await.unwrap());
        db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second'", &[]).await.unwrap();
    };
    crash(app.pool.get().await.unwrap()).await;
    worker::maintenance::run_once(&ctx, Retention { jobs: Duration::from_secs(86_400), export_rows: None })
        .await;
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "PENDING", "{details}");
    assert_eq!(details["error_code"], "worker_lost", "{details}");
    assert_eq!(details["rows_exported"], 0);

    // The last attempt is lost too: FAILED, with nothing left from the attempt and no retry due.
    app.pool.get().await.unwrap().execute("UPDATE jobs SET attempt = max_attempts - 1", &[]).await.unwrap();
    crash(app.pool.get().await.unwrap()).await;
    worker::maintenance::run_once(&ctx, Retention { jobs: Duration::from_secs(86_400), export_rows: None })
        .await;
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "FAILED", "{details}");
    assert_eq!(details["error_code"], "attempts_exhausted", "{details}");
    assert_eq!(details["rows_exported"], 0, "{details}");
    let retry_due: bool = one_value(&app, "SELECT run_at > now() FROM jobs").await;
    assert!(!retry_due, "a failed job has no future run");
}
