//! Exports read from a real MariaDB replica: each export records what its snapshot was taken
//! against (the replica's lag, the GTID position), and with `SOURCE_MAX_LAG_SECS` the worker
//! refuses, retryably, to snapshot a replica that lags or whose replication stopped.

use serde_json::{Value, json};
use shared::{config::WorkerConfig, tables::TableRegistry};
use testkit::{TestApp, replica::ReplicaPair};

/// A test app whose source is `pair`'s replica: the schema, the SELECT-only user and the rows
/// are written on the primary and replicated.
async fn app_on_replica(pair: &ReplicaPair) -> TestApp {
    let app = TestApp::spawn_with_source(
        &pair.primary_admin_url(),
        &pair.replica_host_port(),
        TableRegistry::demo(),
        |_| {},
    )
    .await;
    app.source_exec(
        "INSERT INTO bank_transactions (id, account_id, txn_date, posted_at, description, amount, currency)
         VALUES (1, 'ACC-1', '2024-01-10', '2024-01-10 09:00:00', 'salary', 2500.00, 'EUR'),
                (2, 'ACC-1', '2024-01-20', '2024-01-20 09:00:00', 'rent', -900.00, 'EUR')",
    )
    .await;
    pair.wait_caught_up().await;
    app
}

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions",
           "date_from": "2024-01-01", "date_to": "2024-01-31", "force_refresh": true})
}

/// (status, error_code, snapshot_lag_seconds, snapshot_position, row_count) of an export.
async fn export_row(
    app: &TestApp,
    id: &str,
) -> (String, Option<String>, Option<i64>, Option<String>, Option<i64>) {
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT status, error_code, snapshot_lag_seconds, snapshot_position, row_count
             FROM exports WHERE id::text = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

#[tokio::test]
async fn an_export_records_the_replication_position_its_snapshot_was_taken_at() {
    let pair = ReplicaPair::start().await;
    let app = app_on_replica(&pair).await;
    let key = app.create_key(None).await;
    let position = pair.primary_position().await;
    assert!(!position.is_empty());

    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(app.run_until_settled(&key, &id).await["status"], "COMPLETED");
    let (_, _, lag, recorded, rows) = export_row(&app, &id).await;
    assert_eq!(rows, Some(2));
    assert_eq!(recorded.as_deref(), Some(position.as_str()), "the replica's position at the snapshot");
    assert_eq!(lag, None, "no lag guard configured: the lag was not checked");

    // The dashboard shows it.
    let admin = app.create_admin_key().await;
    let mut browser = testkit::dashboard::DashboardClient::signed_in(&app, &admin).await;
    let page = browser.get(&format!("/dashboard/exports/{id}")).await;
    assert!(page.body.contains(&position), "{}", page.body);
    assert!(!page.body.contains(&pair.replica_host_port()), "no source host on the page");
}

/// Worker settings with the lag guard at 30 s.
fn guarded() -> WorkerConfig {
    WorkerConfig { source_max_lag: Some(30), ..TestApp::worker_config() }
}

async fn job_state(app: &TestApp) -> String {
    let db = app.pool.get().await.unwrap();
    db.query_one("SELECT state FROM jobs ORDER BY id DESC LIMIT 1", &[]).await.unwrap().get(0)
}

/// Makes the waiting retry due now (instead of sleeping through its backoff).
async fn retry_now(app: &TestApp) {
    app.pool.get().await.unwrap().execute("UPDATE jobs SET run_at = now()", &[]).await.unwrap();
}

#[tokio::test]
async fn a_lagging_or_stopped_replica_is_not_snapshotted_until_it_has_caught_up() {
    let pair = ReplicaPair::start().await;
    let app = app_on_replica(&pair).await;
    pair.primary_exec("GRANT SLAVE MONITOR ON *.* TO 'statements_ro'@'%'").await;
    pair.wait_caught_up().await;
    let runner = app.runner(guarded());
    let key = app.create_key(None).await;

    // Lag, for real: the replica applies events an hour late, and a row committed on the
    // primary with a timestamp ten minutes old puts it about 600 s behind.
    pair.replica_exec("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3600; START SLAVE").await;
    app.source_exec(
        "SET TIMESTAMP = UNIX_TIMESTAMP() - 600;
         INSERT INTO bank_transactions (id, account_id, txn_date, posted_at, description, amount, currency)
         VALUES (3, 'ACC-1', '2024-01-25', '2024-01-25 09:00:00', 'late correction', 12.50, 'EUR')",
    )
    .await;
    for _ in 0..200 {
        if pair.replica_lag().await.is_some_and(|lag| lag > 30) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lag = pair.replica_lag().await.unwrap();
    assert!(lag > 30, "the replica lags: {lag} s");

    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(runner.run_pending().await.unwrap(), 1);
    let (status, error, ..) = export_row(&app, &id).await;
    assert_eq!(status, "PENDING");
    assert_eq!(error.as_deref(), Some("source_lagging"), "the lag itself is in the worker log");
    assert_eq!(job_state(&app).await, "retryable");

    // The lag is gone: the retry snapshots the replica, late row included.
    pair.replica_exec("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE").await;
    pair.wait_caught_up().await;
    retry_now(&app).await;
    assert_eq!(runner.run_pending().await.unwrap(), 1);
    let (status, _, lag, position, rows) = export_row(&app, &id).await;
    assert_eq!((status.as_str(), rows), ("COMPLETED", Some(3)));
    assert!(lag.is_some_and(|lag| lag <= 30), "the lag checked is recorded: {lag:?}");
    assert_eq!(position, Some(pair.primary_position().await));

    // Replication stopped (the applier is not running: no lag is reported): refused too.
    pair.replica_exec("STOP SLAVE SQL_THREAD").await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(runner.run_pending().await.unwrap(), 1);
    let (status, error, ..) = export_row(&app, &id).await;
    assert_eq!(status, "PENDING");
    assert_eq!(error.as_deref(), Some("source_replication_stopped"));
    assert_eq!(job_state(&app).await, "retryable");

    pair.replica_exec("START SLAVE SQL_THREAD").await;
    pair.wait_caught_up().await;
    retry_now(&app).await;
    assert_eq!(runner.run_pending().await.unwrap(), 1);
    assert_eq!(export_row(&app, &id).await.0, "COMPLETED");
}

#[tokio::test]
async fn the_lag_guard_needs_a_monitoring_privilege_and_its_absence_stops_the_worker_at_start_up() {
    let pair = ReplicaPair::start().await;
    let app = app_on_replica(&pair).await;
    let check = |worker: WorkerConfig| {
        let ctx = worker::context(&app.config, &worker).unwrap();
        async move { worker::check_source(&ctx).await }
    };
    // The SELECT-only user may not read the replication status: a configuration error.
    let error = check(guarded()).await.unwrap_err().to_string();
    assert!(error.contains("SOURCE_MAX_LAG_SECS") && error.contains("REPLICA MONITOR"), "{error}");
    // Without the guard it needs nothing more.
    check(TestApp::worker_config()).await.unwrap();

    pair.primary_exec("GRANT SLAVE MONITOR ON *.* TO 'statements_ro'@'%'").await;
    pair.wait_caught_up().await;
    check(guarded()).await.unwrap();

    // A source that is no replica (the primary itself) has no lag: exports run, lag 0 recorded.
    let on_primary = TestApp::spawn_with_source(
        &pair.primary_admin_url(),
        &pair.primary_admin_url().replace("mysql://root@", ""),
        TableRegistry::demo(),
        |_| {},
    )
    .await;
    let key = on_primary.create_key(None).await;
    let created: Value = on_primary.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(on_primary.runner(guarded()).run_pending().await.unwrap(), 1);
    let (status, _, lag, ..) = export_row(&on_primary, &id).await;
    assert_eq!((status.as_str(), lag), ("COMPLETED", Some(0)));
}
