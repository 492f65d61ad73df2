//! How the service looks from outside: Prometheus metrics of the API and the worker, and the
//! request id on every response.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::TestApp;

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

/// The value of the sample line starting with `series` (exactly that name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_exports_and_the_queue() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    app.insert_generated_rows("ACC-1", 1000, 500).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let reference = created["reference_id"].as_str().unwrap();
    let details = app.run_until_settled(&key, reference).await;
    assert_eq!(details["status"], "COMPLETED");
    assert_eq!(app.post_export(&key, &january()).await.status(), StatusCode::OK, "reused");
    let other = json!({"account_id": "ACC-2", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"});
    let pending: Value = app.post_export(&key, &other).await.json().await.unwrap();
    let cancel = app
        .http
        .post(format!("{}/api/export/{}/cancel", app.base_url, pending["reference_id"].as_str().unwrap()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);

    let response = app.http.get(format!("{}/metrics", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let api = response.text().await.unwrap();
    assert_eq!(sample(&api, r#"statement_export_requests_total{result="created"}"#), 2.0);
    assert_eq!(sample(&api, r#"statement_export_requests_total{result="reused"}"#), 1.0);
    assert_eq!(sample(&api, r#"statement_exports_finished_total{status="cancelled"}"#), 1.0);
    assert_eq!(sample(&api, r#"statement_queue_jobs{state="completed"}"#), 1.0);
    assert_eq!(sample(&api, r#"statement_queue_jobs{state="cancelled"}"#), 1.0);
    // Every state is reported, empty ones as 0 (a series left out would keep its last value).
    assert_eq!(sample(&api, r#"statement_queue_jobs{state="failed"}"#), 0.0);
    assert_eq!(sample(&api, r#"statement_queue_jobs{state="running"}"#), 0.0);
    assert_eq!(sample(&api, "statement_queue_oldest_ready_job_age_seconds"), 0.0, "nothing waits");
    assert_eq!(
        sample(&api, r#"http_server_requests_total{method="POST",route="/api/export",status="202"}"#),
        2.0
    );
    assert!(
        api.contains(r#"http_server_request_duration_seconds_count{method="GET",route="/api/export/{reference_id}",status="200"}"#),
        "ids collapse into the route template:\n{api}"
    );

    let worker = app.worker_metrics().render();
    assert_eq!(sample(&worker, r#"statement_exports_finished_total{status="completed"}"#), 1.0);
    let rows = details["row_count"].as_f64().unwrap();
    assert!(rows >= 500.0, "{details}");
    assert_eq!(sample(&worker, "statement_export_rows_sum"), rows);
    assert_eq!(sample(&worker, "statement_export_size_bytes_sum"), details["file_size"].as_f64().unwrap());
    assert_eq!(sample(&worker, "statement_export_duration_seconds_count"), 1.0);
    assert_eq!(sample(&worker, r#"statement_job_wait_duration_seconds_count{kind="export_statement"}"#), 1.0);
    assert_eq!(
        sample(&worker, r#"statement_job_attempts_sum{kind="export_statement",outcome="completed"}"#),
        1.0
    );
}

#[tokio::test]
async fn queue_gauges_report_waiting_jobs_and_live_workers() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    app.post_export(&key, &january()).await;
    let db = app.pool.get().await.unwrap();
    db.execute("UPDATE jobs SET run_at = now() - interval '90 seconds'", &[]).await.unwrap();
    db.execute(
        "INSERT INTO workers (id, host, pid, version) VALUES ('w-1', 'h', 1, 'v'), ('w-2', 'h', 2, 'v')",
        &[],
    )
    .await
    .unwrap();
    db.execute("UPDATE workers SET last_heartbeat_at = now() - interval '10 minutes' WHERE id = 'w-2'", &[])
        .await
        .unwrap();
    let api = app.http.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&api, r#"statement_queue_jobs{state="available"}"#), 1.0);
    let age = sample(&api, "statement_queue_oldest_ready_job_age_seconds");
    assert!((90.0..120.0).contains(&age), "{age}");
    assert_eq!(sample(&api, "statement_workers_live"), 1.0, "the silent worker is not live");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let fresh = app.http.get(format!("{}/health", app.base_url)).send().await.unwrap();
    let id = fresh.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let echoed = app
        .http
        .get(format!("{}/nope", app.base_url))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), StatusCode::NOT_FOUND);
    assert_eq!(echoed.headers()["x-request-id"], "trace-42.a_b");

    let unknown =
        app.http.request(reqwest::Method::from_bytes(b"BREW").unwrap(), format!("{}/health", app.base_url));
    unknown.send().await.unwrap();
    let metrics =
        app.http.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"method="OTHER""#), "unknown methods share one label:\n{metrics}");
    assert!(!metrics.contains("BREW"));

    let hostile = "<script>\"".repeat(3);
    let replaced = app
        .http
        .get(format!("{}/health", app.base_url))
        .header("x-request-id", &hostile)
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "an unsafe id is replaced: {id}");
}
