//! The job queue's guarantees on real Postgres: SKIP LOCKED claims, exactly-once completion,
//! fencing tokens, retries and their backoff, cancellation, graceful shutdown, maintenance and
//! its single leader, the worker registry, and NOTIFY wake-ups.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    config::Retention,
    exports,
    failure::FailureCode,
    queue::{self, JobKind as _},
};
use testkit::{StatusCode, TestApp, files_under};
use worker::{
    jobs::{JobContext, noop::Noop},
    maintenance::Maintenance,
};

const LEASE: Duration = Duration::from_secs(30);

async fn enqueue_noops(app: &TestApp, n: usize) {
    let db = app.pool.get().await.unwrap();
    for _ in 0..n {
        Noop {}.enqueue_with_attempts(&db, 3).await.unwrap();
    }
}

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

async fn one_value<T: for<'a> tokio_postgres::types::FromSql<'a>>(app: &TestApp, sql: &str) -> T {
    let db = app.pool.get().await.unwrap();
    db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_claimed_job_is_invisible_to_a_second_worker() {
    let app = TestApp::spawn().await;
    enqueue_noops(&app, 1).await;
    let a = app.pool.get().await.unwrap();
    let b = app.pool.get().await.unwrap();
    let claimed = queue::claim(&a, "worker-a", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    assert!(queue::claim(&b, "worker-b", 10, LEASE).await.unwrap().is_empty(), "already claimed");

    // Claims inside open transactions: SKIP LOCKED means the second does not wait and does not
    // see the row the first has locked.
    enqueue_noops(&app, 1).await;
    let mut a = app.pool.get().await.unwrap();
    let mut b = app.pool.get().await.unwrap();
    let tx_a = a.transaction().await.unwrap();
    let tx_b = b.transaction().await.unwrap();
    let first = queue::claim(&tx_a, "worker-a", 10, LEASE).await.unwrap();
    let second = queue::claim(&tx_b, "worker-b", 10, LEASE).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 0));
    tx_a.commit().await.unwrap();
    tx_b.commit().await.unwrap();
    // The claims made by hand are settled.
    for job in claimed.iter().chain(&first) {
        assert!(queue::complete(&a, job.id, job.token).await.unwrap());
    }
}

#[tokio::test]
async fn four_workers_complete_three_hundred_jobs_each_exactly_once() {
    let app = TestApp::spawn().await;
    enqueue_noops(&app, 300).await;
    let runners: Vec<_> = (0..4).map(|_| app.runner(TestApp::worker_config())).collect();
    let done = futures::future::join_all(runners.iter().map(|r| r.run_pending())).await;
    let total: usize = done.into_iter().map(Result::unwrap).sum();
    assert_eq!(total, 300, "every job ran once across the workers");
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'completed' AND attempt = 1),
                    count(DISTINCT worker_id)
             FROM jobs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 300, "all completed on their first and only attempt");
    assert!(row.get::<_, i64>(1) >= 2, "the work was shared");
}

#[tokio::test]
async fn a_stale_attempt_cannot_write_after_its_job_was_rescued_and_reclaimed() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let export_id: uuid::Uuid = created["reference_id"].as_str().unwrap().parse().unwrap();
    let db = app.pool.get().await.unwrap();

    let stale = queue::claim(&db, "stalled-worker", 1, LEASE).await.unwrap().remove(0);
    let stale_attempt = exports::Attempt { export_id, job_id: stale.id, token: stale.token };
    assert!(exports::start(&db, stale_attempt).await.unwrap().is_some());
    // The stalled worker's lease runs out (moved into the past rather than slept through).
    db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second'", &[]).await.unwrap();
    let ctx: JobContext = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    worker::maintenance::run_once(&ctx, Retention { jobs: Duration::from_secs(86_400), export_rows: None })
        .await;
    let fresh = queue::claim(&db, "healthy-worker", 1, LEASE).await.unwrap().remove(0);
    assert_eq!((fresh.id, fresh.attempt), (stale.id, 2));
    assert_ne!(fresh.token, stale.token);

    // Every write of the stale attempt is refused.
    app.assert_export_writes_refused(stale_attempt).await;
    assert!(!queue::complete(&db, stale.id, stale.token).await.unwrap());
    assert_eq!(
        queue::fail(&db, stale.id, stale.token, FailureCode::Internal, None, LEASE).await.unwrap(),
        queue::FailOutcome::Fenced
    );
    // The fresh attempt's writes go through.
    let fresh_attempt = exports::Attempt { export_id, job_id: fresh.id, token: fresh.token };
    assert!(exports::start(&db, fresh_attempt).await.unwrap().is_some());
    assert!(exports::record_progress(&db, fresh_attempt, 10).await.unwrap());
    // The claim made by hand goes back to the queue, for the harness to run.
    assert_eq!(queue::release(&db, &[fresh.token]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn retries_back_off_exponentially_then_fail_the_export_with_a_message() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let mut config = app.config.clone();
    config.source_database_url =
        secrecy::SecretString::from("mysql://statements_ro:x@127.0.0.1:1/none".to_owned());
    // No retry window: the attempts alone decide.
    let runner = TestApp::runner_for(
        &config,
        shared::config::WorkerConfig { retry_window: Duration::ZERO, ..TestApp::worker_config() },
    );

    // max_attempts is 3 in the test configuration. Base backoff 2 s, doubling, ±25 % jitter.
    for (attempt, nominal) in [(1, 2.0), (2, 4.0)] {
        assert_eq!(runner.run_pending().await.unwrap(), 1);
        let delay: f64 = one_value(&app, "SELECT extract(epoch FROM run_at - now())::float8 FROM jobs").await;
        assert!(
            delay > nominal * 0.75 - 1.0 && delay <= nominal * 1.25,
            "attempt {attempt}: retry in {delay:.2}s, expected about {nominal}s"
        );
        let state: String = one_value(&app, "SELECT state FROM jobs").await;
        assert_eq!(state, "retryable");
        assert_eq!(runner.run_pending().await.unwrap(), 0, "not before its backoff");
        app.pool.get().await.unwrap().execute("UPDATE jobs SET run_at = now()", &[]).await.unwrap();
    }
    assert_eq!(runner.run_pending().await.unwrap(), 1);
    let state: String = one_value(&app, "SELECT state FROM jobs").await;
    assert_eq!(state, "failed");
    let retry_due: bool = one_value(&app, "SELECT run_at > now() FROM jobs").await;
    assert!(!retry_due, "a failed job has no future run");
    let details: Value =
        app.get_export(&key, created["reference_id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(details["status"], "FAILED");
    assert_eq!(details["error_code"], "source_unavailable", "{details}");
}

#[tokio::test]
async fn cancelling_a_pending_export_stops_it_before_it_runs() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap();
    let cancel = |id: String| {
        app.http.post(format!("{}/api/export/{id}/cancel", app.base_url)).bearer_auth(&key).send()
    };

    let response = cancel(id.to_owned()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(app.run_pending_jobs().await, 0, "a cancelled job is never claimed");
    let state: String = one_value(&app, "SELECT state FROM jobs").await;
    assert_eq!(state, "cancelled");

    assert_eq!(cancel(id.to_owned()).await.unwrap().status(), StatusCode::CONFLICT);
    assert_eq!(cancel(uuid::Uuid::new_v4().to_string()).await.unwrap().status(), StatusCode::NOT_FOUND);
    // A cancelled export leaves deduplication: asking again starts a new one.
    let again: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    assert_ne!(again["reference_id"], created["reference_id"]);
}

#[tokio::test]
async fn cancelling_a_running_export_stops_it_within_a_heartbeat_and_leaves_no_file() {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-BIG", 1, 300_000).await;
    let key = app.create_key(None).await;
    let body = json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"});
    // Cancelled while the export is producing rows (held after its first chunk).
    let (id, running, worker) = app.running_export(&key, &body, TestApp::worker_config()).await;
    assert_eq!(app.cancel_export(&key, &id).await.status(), StatusCode::OK);
    running.release();
    // The worker learns it at its next heartbeat (lease 3 s → every 1 s) and stops.
    app.wait_for("SELECT running_jobs = 0 FROM workers").await;
    worker.stop().await;

    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "CANCELLED");
    assert!(details["file_url"].is_null());
    let leftovers = files_under(&app.storage_dir.join("exports").join(&id));
    assert!(leftovers.is_empty(), "the partial upload was aborted: {leftovers:?}");
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish_and_releases_them_after_the_grace_period() {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-BIG", 1, 200_000).await;
    let key = app.create_key(None).await;
    let body = json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"});

    // Generous grace: the running export completes, nothing new is claimed after the signal.
    let (id, running, mut worker) = app.running_export(&key, &body, TestApp::worker_config()).await;
    worker.signal_stop();
    enqueue_noops(&app, 1).await;
    running.release();
    worker.stop().await;
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "COMPLETED", "drained within the grace period");
    let noop_state: String =
        one_value(&app, &format!("SELECT state FROM jobs WHERE kind = '{}'", Noop::KIND)).await;
    assert_eq!(noop_state, "available", "no claims after the shutdown signal");
    let registered: i64 = one_value(&app, "SELECT count(*) FROM workers").await;
    assert_eq!(registered, 0, "the worker left the registry");

    // No grace: the running export is given back, uncounted, for another worker.
    let forced = json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01",
                        "date_to": "2024-12-31", "force_refresh": true});
    let impatient =
        shared::config::WorkerConfig { shutdown_grace: Duration::ZERO, ..TestApp::worker_config() };
    let (id, running, impatient) = app.running_export(&key, &forced, impatient).await;
    // Stopped while the export runs: its job goes back to the queue, then the attempt goes on
    // and finds it lost.
    let stopping = tokio::spawn(impatient.stop());
    app.wait_for(&format!("SELECT state = 'available' FROM jobs WHERE args->>'export_id' = '{id}'")).await;
    running.release();
    stopping.await.unwrap();
    let job: (String, i32) = {
        let db = app.pool.get().await.unwrap();
        let row = db
            .query_one(&format!("SELECT state, attempt FROM jobs WHERE args->>'export_id' = '{id}'"), &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(job, ("available".to_owned(), 0), "released without using up an attempt");
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "PENDING");
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["status"], "COMPLETED", "another worker finishes it");
    assert_eq!(details["row_count"], 200_000);
}

#[tokio::test]
async fn maintenance_expires_old_exports_deletes_their_files_and_prunes_old_jobs() {
    let app = TestApp::spawn().await;
    app.source_exec("INSERT INTO bank_transactions VALUES (1, 'ACC-1', '2024-01-05', '2024-01-05 10:00:00', 'x', NULL, 1.00, 'EUR', NULL)").await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["status"], "COMPLETED");
    let file_key: String = one_value(&app, "SELECT file_key FROM exports").await;
    assert!(app.storage_dir.join(&file_key).exists());

    // Retention runs out; the job row is old too.
    let db = app.pool.get().await.unwrap();
    db.batch_execute(
        "UPDATE exports SET expires_at = now() - interval '1 minute';
         UPDATE jobs SET finished_at = now() - interval '8 days'",
    )
    .await
    .unwrap();
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let report = worker::maintenance::run_once(
        &ctx,
        Retention { jobs: Duration::from_secs(7 * 86_400), export_rows: None },
    )
    .await;
    assert_eq!((report.expired, report.pruned), (1, 1));
    assert!(!app.storage_dir.join(&file_key).exists(), "the file is deleted");
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["status"], "EXPIRED");
    assert!(details["file_url"].is_null());
    // Deduplication no longer returns the expired export.
    let again: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    assert_eq!(again["reused"], false);
    assert_ne!(again["reference_id"], created["reference_id"]);
}

#[tokio::test]
async fn staging_files_abandoned_by_killed_workers_are_swept_after_a_day() {
    let app = TestApp::spawn().await;
    let dir =
        app.storage_dir.join("exports/0b6f0f0e-0000-4000-8000-000000000001/8c1f0e2d4b6a49f3a5e7d9c1b3f5a7e9");
    std::fs::create_dir_all(&dir).unwrap();
    let abandoned = dir.join("statement.csv#1");
    let running = dir.join("statement.csv#2");
    let finished = dir.join("statement.csv");
    for path in [&abandoned, &running, &finished] {
        std::fs::write(path, b"id,amount\r\n").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for path in [&abandoned, &finished] {
        std::fs::File::options().write(true).open(path).unwrap().set_modified(two_days_ago).unwrap();
    }
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let report = worker::maintenance::run_once(
        &ctx,
        Retention { jobs: Duration::from_secs(7 * 86_400), export_rows: None },
    )
    .await;
    assert_eq!(report.abandoned_uploads, 1);
    assert!(!abandoned.exists(), "the day-old staging file is gone");
    assert!(running.exists(), "an upload still being written is left alone");
    assert!(finished.exists(), "finished objects are never swept (retention handles them)");
}

#[tokio::test]
async fn only_one_worker_leads_maintenance_at_a_time() {
    let app = TestApp::spawn().await;
    let ctx = || worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let day = Duration::from_secs(86_400);
    let mut a =
        Maintenance::new(ctx(), app.config.database_url.clone(), Retention { jobs: day, export_rows: None });
    let mut b =
        Maintenance::new(ctx(), app.config.database_url.clone(), Retention { jobs: day, export_rows: None });
    let (lead_a, lead_b) = tokio::join!(a.try_lead(), b.try_lead());
    assert!(lead_a ^ lead_b, "exactly one leads: a={lead_a} b={lead_b}");
    let (leader, follower) = if lead_a { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(follower.tick().await.is_none(), "a follower does not run maintenance");
    assert!(leader.tick().await.is_some());
    // The leader goes away: the follower takes over at its next attempt.
    leader.resign().await;
    assert!(follower.try_lead().await);
    assert!(!leader.try_lead().await);
}

#[tokio::test]
async fn an_idle_worker_is_woken_by_notify_not_by_polling() {
    let app = TestApp::spawn().await;
    let slow_polling =
        shared::config::WorkerConfig { poll_interval: Duration::from_secs(3600), ..TestApp::worker_config() };
    let worker = app.runner(slow_polling).spawn();
    app.wait_for("SELECT count(*) = 1 FROM workers").await;
    // Enqueued once the worker's listener has subscribed.
    app.wait_for(&format!(
        "SELECT count(*) = 1 FROM pg_stat_activity
         WHERE datname = current_database() AND query = 'LISTEN {}'",
        queue::NOTIFY_CHANNEL
    ))
    .await;
    enqueue_noops(&app, 1).await;
    app.wait_for("SELECT count(*) = 1 FROM jobs WHERE state = 'completed'").await;
    worker.stop().await;
}

#[tokio::test]
async fn a_late_failure_racing_the_rescue_of_its_attempt_is_fenced_out() {
    let app = TestApp::spawn().await;
    enqueue_noops(&app, 1).await;
    let db = app.pool.get().await.unwrap();
    let stale = queue::claim(&db, "stalled-worker", 1, LEASE).await.unwrap().remove(0);
    db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second'", &[]).await.unwrap();

    // A rescue holds the job row (not committed yet) when the stalled worker reports a failure.
    let mut rescuer = app.pool.get().await.unwrap();
    let rescue = rescuer.transaction().await.unwrap();
    assert_eq!(queue::rescue_expired(&rescue).await.unwrap().len(), 1);
    let late = app.pool.get().await.unwrap();
    let failing = tokio::spawn(async move {
        let retry_at = time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
        queue::fail(&late, stale.id, stale.token, FailureCode::Internal, Some(retry_at), LEASE).await.unwrap()
    });
    app.wait_for(
        "SELECT count(*) = 1 FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await;
    rescue.commit().await.unwrap();

    assert_eq!(failing.await.unwrap(), queue::FailOutcome::Fenced);
    let (state, error): (String, String) = {
        let row = db.query_one("SELECT state, last_error FROM jobs", &[]).await.unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(state, "retryable");
    assert_eq!(error, "worker_lost", "the rescue's record stands");
}
