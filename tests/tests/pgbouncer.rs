//! Behind a connection pooler: Debian's PgBouncer in transaction-pooling mode (two server
//! connections, so one client's transactions run on different server sessions) between the
//! service and Postgres, with `DATABASE_POOLER=transaction` and `DATABASE_DIRECT_URL`. Exports
//! run end to end through it (API and worker), the worker is woken by NOTIFY on its direct
//! LISTEN session and leads maintenance through a direct session, and the pooler saw the
//! service's transactions.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use shared::{config::WorkerConfig, db, tables::TableRegistry};
use testkit::{StatusCode, TestApp, pgbouncer::PgBouncer};

/// The name the direct sessions give themselves, to find them in `pg_stat_activity`.
const DIRECT: &str = "stmt-direct-sessions";

#[tokio::test]
async fn exports_run_end_to_end_through_pgbouncer_in_transaction_mode() {
    let bouncer = PgBouncer::start();
    let app = TestApp::spawn_configured(TableRegistry::demo(), |config| {
        let direct = config.database_url.expose_secret().to_owned();
        config.database_url = SecretString::from(bouncer.url_for(&direct));
        config.database_direct_url = Some(SecretString::from(format!("{direct}?application_name={DIRECT}")));
    })
    .await;
    // The test's own reads go to Postgres directly.
    let direct = db::pool(app.config.session_database_url(), 2).unwrap();
    let direct = direct.get().await.unwrap();
    let one = |sql: &'static str| {
        let direct = &direct;
        async move { direct.query_one(sql, &[]).await.unwrap() }
    };

    app.insert_generated_rows("ACC-1", 1, 3_000).await;
    let key = app.create_key(None).await;
    // Polling off: only a NOTIFY, on the LISTEN session, wakes the worker.
    let worker =
        app.runner(WorkerConfig { poll_interval: Duration::from_secs(3600), ..TestApp::worker_config() });
    let worker = worker.spawn();
    for _ in 0..400 {
        let listening: bool = one("SELECT count(*) = 1 FROM pg_stat_activity
             WHERE query = 'LISTEN statement_jobs' AND application_name = 'stmt-direct-sessions'")
        .await
        .get(0);
        if listening {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let mut references = Vec::new();
    // Three statements of the same 3,000 rows (all on 2024-01-01).
    for (from, to) in
        [("2024-01-01", "2024-01-01"), ("2024-01-01", "2024-01-31"), ("2023-12-01", "2024-01-01")]
    {
        let body = json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": from, "date_to": to});
        let response = app.post_export(&key, &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value = response.json().await.unwrap();
        references.push(accepted["reference_id"].as_str().unwrap().to_owned());
    }
    for reference in &references {
        let mut details = Value::Null;
        for _ in 0..600 {
            details = app.get_export(&key, reference).await.json().await.unwrap();
            if details["status"] != "PENDING" && details["status"] != "PROCESSING" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(details["status"], "COMPLETED", "{details}");
        assert_eq!(details["row_count"], 3_000);
        let download = app.download(details["file_url"].as_str().unwrap()).await;
        assert_eq!(download.status(), StatusCode::OK);
        let csv = download.text().await.unwrap();
        assert_eq!(csv.lines().count(), 3_001, "a header and every row");
    }

    // The worker leads maintenance, its advisory lock held on a direct session.
    let leading = "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                   WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'stmt-direct-sessions'
                     AND (SELECT bool_or(is_leader) FROM workers)";
    let mut led = false;
    for _ in 0..400 {
        led = one(leading).await.get(0);
        if led {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(led, "the worker leads maintenance through a direct session");
    worker.stop().await;

    // PgBouncer pooled this database in transaction mode and carried the service's work.
    let pools = bouncer.show("SHOW POOLS").await;
    let database = app.config.database_url.expose_secret().rsplit('/').next().unwrap().to_owned();
    let pool = pools.iter().find(|p| p["database"] == database).expect("a pool for the test database");
    assert_eq!(pool["pool_mode"], "transaction");
    let stats = bouncer.show("SHOW STATS").await;
    let stats = stats.iter().find(|s| s["database"] == database).unwrap();
    let transactions: u64 = stats["total_xact_count"].parse().unwrap();
    assert!(transactions > 20, "{transactions} transactions through PgBouncer");
}
