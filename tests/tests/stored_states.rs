//! A state this build does not know, read back from Postgres (a newer release wrote it, during a
//! rolling upgrade or after a rollback), is an error: never shown as some other state, never
//! acted on as one.

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp};

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
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
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap();
    assert_eq!(app.run_until_settled(&key, id).await["status"], "COMPLETED");
    // As a newer release would store it: its schema allows a status this build has never heard of.
    let db = app.pool.get().await.unwrap();
    db.batch_execute(
        "ALTER TABLE exports DROP CONSTRAINT exports_status_check;
         UPDATE exports SET status = 'ARCHIVED'",
    )
    .await
    .unwrap();
    internal_error(app.get_export(&key, id).await, "ARCHIVED").await;
    let listed =
        app.http.get(format!("{}/api/exports", app.base_url)).bearer_auth(&key).send().await.unwrap();
    internal_error(listed, "ARCHIVED").await;
}

#[tokio::test]
async fn a_key_role_this_build_does_not_know_is_an_error_not_a_client() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let db = app.pool.get().await.unwrap();
    db.batch_execute(
        "ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
         UPDATE api_keys SET role = 'auditor'",
    )
    .await
    .unwrap();
    internal_error(app.post_export(&key, &january()).await, "auditor").await;
}
