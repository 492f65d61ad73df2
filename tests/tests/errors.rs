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

/// Text of poem-openapi's own parse errors, which must never reach a client: internal type
/// names and the framework's phrasing.
const FRAMEWORK_TEXT: &[&str] = &[
    "string_",
    "integer_",
    "optional_",
    "number_",
    "failed to parse",
    "verification failed",
    "Expected input type",
    "occurred while parsing",
    "ExportRequest",
];

/// One bad request: what is sent, and the field its `400` must name.
enum Bad {
    /// POST /api/export with the valid body patched (`null` in the patch removes nothing: it
    /// sends `null`).
    Patch(Value, &'static str),
    /// POST /api/export with the valid body without this field.
    Without(&'static str),
    /// POST /api/export with this raw body.
    Raw(&'static str, &'static str),
    /// GET this path (and query).
    Get(String, &'static str),
    /// POST this path without a body.
    Post(&'static str, &'static str),
}

#[tokio::test]
async fn every_bad_input_is_a_400_naming_its_field_in_words_a_client_understands() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let long_account = "A".repeat(500);
    let cases = [
        // Wrong JSON types are refused, never coerced ("account_id": 123 was exported as "123").
        Bad::Patch(json!({"account_id": 123}), "account_id"),
        Bad::Patch(json!({"account_id": 1.5}), "account_id"),
        Bad::Patch(json!({"account_id": true}), "account_id"),
        Bad::Patch(json!({"account_id": ["ACC-1"]}), "account_id"),
        Bad::Patch(json!({"table_name": 7}), "table_name"),
        Bad::Patch(json!({"date_from": 20240101}), "date_from"),
        Bad::Patch(json!({"date_to": null}), "date_to"),
        Bad::Patch(json!({"format": null}), "format"),
        Bad::Patch(json!({"format": 1}), "format"),
        Bad::Patch(json!({"force_refresh": "yes"}), "force_refresh"),
        Bad::Patch(json!({"force_refresh": 1}), "force_refresh"),
        Bad::Patch(json!({"force_refresh": null}), "force_refresh"),
        // Dates outside 1900-01-01 ..= 2100-12-31 (0000-01-01 was stored as 1 BC).
        Bad::Patch(json!({"date_from": "0000-01-01"}), "date_from"),
        Bad::Patch(json!({"date_from": "1899-12-31", "date_to": "1900-01-31"}), "date_from"),
        Bad::Patch(json!({"date_from": "2100-12-31", "date_to": "2101-01-01"}), "date_to"),
        // Unknown and missing fields, malformed JSON, a body that is not an object.
        Bad::Patch(json!({"acount_id": "ACC-1"}), "acount_id"),
        Bad::Without("date_to"),
        Bad::Raw("{not json", "body"),
        Bad::Raw(r#"["ACC-1"]"#, "body"),
        // Path parameters.
        Bad::Get("/api/export/not-a-uuid".into(), "reference_id"),
        Bad::Post("/api/export/not-a-uuid/cancel", "reference_id"),
        // Every query parameter of the listing.
        Bad::Get("/api/exports?status=DONE".into(), "status"),
        Bad::Get("/api/exports?limit=0".into(), "limit"),
        Bad::Get("/api/exports?limit=201".into(), "limit"),
        Bad::Get("/api/exports?limit=ten".into(), "limit"),
        Bad::Get("/api/exports?created_from=yesterday".into(), "created_from"),
        Bad::Get("/api/exports?created_before=2024-01-31".into(), "created_before"),
        Bad::Get("/api/exports?created_from=0000-01-01T00:00:00Z".into(), "created_from"),
        Bad::Get("/api/exports?created_before=2101-01-01T00:00:00Z".into(), "created_before"),
        Bad::Get(format!("/api/exports?account_id={long_account}"), "account_id"),
        Bad::Get("/api/exports?account_id=ACC%271".into(), "account_id"),
        Bad::Get("/api/exports?table_name=secret_table".into(), "table_name"),
        Bad::Get("/api/exports?cursor=not-a-uuid".into(), "cursor"),
        Bad::Get("/api/exports?acount_id=ACC-1".into(), "acount_id"),
        Bad::Get("/api/exports?limit=1&limit=2".into(), "limit"),
    ];
    let mut failures = Vec::new();
    for case in cases {
        let (request, field, what) = match case {
            Bad::Patch(patch, field) => {
                let mut body = valid();
                body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
                let what = format!("POST {body}");
                (app.http.post(format!("{}/api/export", app.base_url)).json(&body), field, what)
            }
            Bad::Without(field) => {
                let mut body = valid();
                body.as_object_mut().unwrap().remove(field);
                let what = format!("POST {body}");
                (app.http.post(format!("{}/api/export", app.base_url)).json(&body), field, what)
            }
            Bad::Raw(body, field) => (
                app.http
                    .post(format!("{}/api/export", app.base_url))
                    .header("content-type", "application/json")
                    .body(body),
                field,
                format!("POST {body}"),
            ),
            Bad::Get(path, field) => {
                let what = format!("GET {path}");
                (app.http.get(format!("{}{path}", app.base_url)), field, what)
            }
            Bad::Post(path, field) => {
                (app.http.post(format!("{}{path}", app.base_url)), field, format!("POST {path}"))
            }
        };
        let response = request.bearer_auth(&key).send().await.unwrap();
        let status = response.status();
        let content_type = response.headers().get("content-type").cloned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let named = body["errors"].as_array().into_iter().flatten().find(|e| e["field"] == field);
        let message = named.and_then(|e| e["message"].as_str());
        let text = body.to_string();
        let problem = if status != StatusCode::BAD_REQUEST {
            Some(format!("status {status}"))
        } else if content_type.as_ref().is_none_or(|c| c != "application/problem+json") {
            Some(format!("content-type {content_type:?}"))
        } else if named.is_none() {
            Some(format!("no errors[] entry for `{field}`"))
        } else if message.is_none_or(|m| m.len() < 8) {
            Some("no message".to_owned())
        } else {
            FRAMEWORK_TEXT.iter().find(|t| text.contains(*t)).map(|t| format!("framework text {t:?}"))
        };
        if let Some(problem) = problem {
            failures.push(format!("{what}: {problem}: {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad inputs not refused as they should be:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn field_messages_say_what_was_expected() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let message = |body: Value| {
        let app = &app;
        let key = &key;
        async move {
            let mut request = valid();
            request.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
            let p = problem(app.post_export(key, &request).await, StatusCode::BAD_REQUEST).await;
            p["errors"][0]["message"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(message(json!({"account_id": 123})).await, "must be a JSON string, not a number");
    assert_eq!(message(json!({"format": null})).await, "must be a JSON string, not null");
    assert_eq!(message(json!({"force_refresh": "yes"})).await, "must be true or false, not a string");
    assert_eq!(
        message(json!({"date_from": "0000-01-01"})).await,
        "must be between 1900-01-01 and 2100-12-31"
    );
    assert_eq!(message(json!({"acount_id": "ACC-1"})).await, "is not a field of this request");

    let get = |path: &'static str| {
        let app = &app;
        let key = &key;
        async move {
            let response =
                app.http.get(format!("{}{path}", app.base_url)).bearer_auth(key).send().await.unwrap();
            let p = problem(response, StatusCode::BAD_REQUEST).await;
            p["errors"][0]["message"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        get("/api/export/not-a-uuid").await,
        "must be a UUID, e.g. 550e8400-e29b-41d4-a716-446655440000"
    );
    assert_eq!(
        get("/api/exports?status=DONE").await,
        "must be one of PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED, EXPIRED"
    );
    assert_eq!(get("/api/exports?limit=0").await, "must be a whole number from 1 to 200");
    assert_eq!(
        get("/api/exports?created_from=yesterday").await,
        "must be an RFC 3339 date-time, e.g. 2024-01-31T00:00:00Z"
    );
    assert_eq!(get("/api/exports?table_name=secret_table").await, "must be one of: bank_transactions");
}

#[tokio::test]
async fn well_typed_requests_at_the_edges_of_the_rules_are_accepted() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    for patch in [
        json!({"date_from": "1900-01-01", "date_to": "1900-01-31", "force_refresh": true, "format": "csv.gz"}),
        json!({"date_from": "2100-12-01", "date_to": "2100-12-31", "force_refresh": false, "format": "csv"}),
        json!({"account_id": &"A".repeat(64)}),
    ] {
        let mut body = valid();
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let response = app.post_export(&key, &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{body}");
    }
    let query = format!(
        "status=PENDING&account_id={}&table_name=bank_transactions&created_from=1900-01-01T00:00:00Z\
         &created_before=2100-12-31T23:59:59Z&limit=200",
        "A".repeat(64)
    );
    let response =
        app.http.get(format!("{}/api/exports?{query}", app.base_url)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
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
