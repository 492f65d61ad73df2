//! A state this build does not know, read back from Postgres (a newer release wrote it, during a
//! rolling upgrade or after a rollback), is an error: never shown as some other state, never
//! acted on as one.

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp};

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

/// Stores `value` in `table.column` of every row, as a newer release would: its schema allows a
/// value this build has never heard of.
async fn store_unknown(app: &TestApp, table: &str, column: &str, value: &str) {
    let db = app.pool.get().await.unwrap();
    db.batch_execute(&format!(
        "ALTER TABLE {table} DROP CONSTRAINT {table}_{column}_check;
         UPDATE {table} SET {column} = '{value}'"
    ))
    .await
    .unwrap();
}

/// A problem document that gives nothing away (no stored value, no internal text).
async fn internal_error(response: reqwest::Response, unknown: &str) {
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body = response.text().await.unwrap();
    assert!(!body.contains(unknown), "{body}");
}

#[tokio::test]
async fn an_export_status_this_build_does_not_know_is_an_error_not_failed() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let id = app.post_export(&key, &january()).await.json::<Value>().await.unwrap()["reference_id"].clone();
    let id = id.as_str().unwrap();
    assert_eq!(app.run_until_settled(&key, id).await["status"], "COMPLETED");
    store_unknown(&app, "exports", "status", "ARCHIVED").await;
    internal_error(app.get_export(&key, id).await, "ARCHIVED").await;
    let listed =
        app.http.get(format!("{}/api/exports", app.base_url)).bearer_auth(&key).send().await.unwrap();
    internal_error(listed, "ARCHIVED").await;
}

#[tokio::test]
async fn a_key_role_this_build_does_not_know_is_an_error_not_a_client() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    store_unknown(&app, "api_keys", "role", "auditor").await;
    internal_error(app.post_export(&key, &january()).await, "auditor").await;
}
