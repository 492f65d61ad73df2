//! Bad input gets a clear RFC 9457 problem document, never a 500.

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp};

fn valid() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["type"].is_string() && body["detail"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_keys_are_401() {
    let app = TestApp::spawn().await;
    let no_header =
        app.http.post(format!("{}/api/export", app.base_url)).json(&valid()).send().await.unwrap();
    problem(no_header, StatusCode::UNAUTHORIZED).await;
    problem(app.post_export("not-a-key", &valid()).await, StatusCode::UNAUTHORIZED).await;
    // Well formed (valid checksum) but never issued.
    let stranger = shared::api_keys::NewKey::generate().plaintext;
    problem(app.post_export(&stranger, &valid()).await, StatusCode::UNAUTHORIZED).await;

    let key = app.create_key(None).await;
    assert_eq!(app.post_export(&key, &valid()).await.status(), StatusCode::ACCEPTED);
    // A key in use is remembered for a few seconds (tests/tests/auth_limits.rs); this one is not.
    let revoked = app.create_key(None).await;
    app.revoke_key(&revoked).await;
    problem(app.post_export(&revoked, &valid()).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn invalid_fields_are_400_naming_each_field() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let cases = [
        (json!({"table_name": "secret_table"}), "table_name"),
        (json!({"date_from": "2024-02-01", "date_to": "2024-01-01"}), "date_from"),
        (json!({"date_from": "2024-13-01"}), "date_from"),
        (json!({"account_id": "ACC'; DROP TABLE x; --"}), "account_id"),
        (json!({"format": "xlsx"}), "format"),
    ];
    for (patch, field) in cases {
        let mut body = valid();
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let p = problem(app.post_export(&key, &body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
}

#[tokio::test]
async fn malformed_bodies_unknown_references_and_paths_are_problems() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let raw = |body: &'static str| {
        app.http
            .post(format!("{}/api/export", app.base_url))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    problem(raw("{not json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(raw(r#"{"account_id": 5}"#).await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(raw(r#"{"account_id": "ACC-1"}"#).await.unwrap(), StatusCode::BAD_REQUEST).await;
    let huge = app
        .http
        .post(format!("{}/api/export", app.base_url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(format!(r#"{{"account_id": "{}"}}"#, "A".repeat(100_000)))
        .send()
        .await
        .unwrap();
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE).await;

    let unknown = uuid::Uuid::new_v4().to_string();
    problem(app.get_export(&key, &unknown).await, StatusCode::NOT_FOUND).await;
    problem(app.get_export(&key, "not-a-uuid").await, StatusCode::BAD_REQUEST).await;
    let nowhere = app.http.get(format!("{}/api/nowhere", app.base_url)).send().await.unwrap();
    problem(nowhere, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_key_limited_to_accounts_cannot_export_or_read_others() {
    let app = TestApp::spawn().await;
    let everything = app.create_key(None).await;
    let only_acc2 = app.create_key(Some(&["ACC-2"])).await;
    problem(app.post_export(&only_acc2, &valid()).await, StatusCode::FORBIDDEN).await;

    let created: Value = app.post_export(&everything, &valid()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap();
    // Another account's export is indistinguishable from a missing one.
    problem(app.get_export(&only_acc2, id).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn health_answers_without_a_key() {
    let app = TestApp::spawn().await;
    let response = app.http.get(format!("{}/health", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}
