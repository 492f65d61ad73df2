//! Failure paths of an export job: a source that is down is retried, a configuration that can
//! never work fails the export with a clear message.

use serde_json::{Value, json};
use shared::tables::{TableRegistry, TableSpec};
use testkit::TestApp;

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

async fn job_row(app: &TestApp) -> (String, i32, Option<String>, bool) {
    let db = app.pool.get().await.unwrap();
    let row = db.query_one("SELECT state, attempt, last_error, run_at > now() FROM jobs", &[]).await.unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn a_source_that_is_down_is_retried_later_and_the_export_stays_pending() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    // A worker whose source does not answer (nothing listens on port 1).
    let mut config = app.config.clone();
    config.source_database_url =
        secrecy::SecretString::from("mysql://statements_ro:x@127.0.0.1:1/none".to_owned());
    let runner = TestApp::runner_for(&config, TestApp::worker_config());
    assert_eq!(runner.run_pending().await.unwrap(), 1);

    let (state, attempt, error, scheduled_later) = job_row(&app).await;
    assert_eq!((state.as_str(), attempt), ("retryable", 1));
    assert!(scheduled_later, "the retry waits for its backoff");
    assert_eq!(error.as_deref(), Some("source_unavailable"));
    let details: Value =
        app.get_export(&key, created["reference_id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(details["status"], "PENDING");
    assert_eq!(details["error_code"], "source_unavailable", "{details}");
    assert_eq!(details["error"], "the source database could not be reached", "{details}");
}

#[tokio::test]
async fn a_table_missing_from_the_source_fails_the_export_for_good() {
    let mut spec = TableRegistry::demo().get("bank_transactions").unwrap().clone();
    spec.source_table = Some("no_such_table".into());
    let app = TestApp::spawn_with(TableRegistry::new(vec![TableSpec { ..spec }]).unwrap()).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let details = app.run_until_settled(&key, created["reference_id"].as_str().unwrap()).await;
    assert_eq!(details["status"], "FAILED");
    assert_eq!(details["error_code"], "source_schema_mismatch", "{details}");
    let (state, attempt, _, _) = job_row(&app).await;
    assert_eq!((state.as_str(), attempt), ("failed", 1), "fatal errors are not retried");
}
