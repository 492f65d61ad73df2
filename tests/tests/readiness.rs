//! `/ready` knows whether storage is usable: the bucket (or directory) must exist, and the
//! latest write check a worker recorded must not have failed. Internal text never reaches the
//! client; the dashboard shows the same state with the error.

use std::time::{Duration, Instant};

use serde_json::Value;
use shared::config::{StorageConfig, WorkerConfig};
use testkit::{
    StatusCode, TestApp,
    dashboard::DashboardClient,
    files_under,
    s3::{MotoServer, s3_config},
};

/// Worker settings with a write check every 100 ms (the default is once a minute).
fn checking_worker() -> WorkerConfig {
    WorkerConfig { storage_check_interval: Duration::from_millis(100), ..TestApp::worker_config() }
}

/// Polls `/ready` until it answers `expected` (the API caches storage's state for about a
/// second); panics with the last answer after 10 s.
async fn ready_until(app: &TestApp, expected: StatusCode) -> (reqwest::header::HeaderMap, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.http.get(format!("{}/ready", app.base_url)).send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        if status == expected {
            return (headers, body);
        }
        assert!(Instant::now() < deadline, "/ready still answers {status}, expected {expected}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Postgres's clock now, as a literal for later comparisons with `checked_at`.
async fn db_now(app: &TestApp) -> String {
    let db = app.pool.get().await.unwrap();
    db.query_one("SELECT now()::text", &[]).await.unwrap().get(0)
}

fn assert_no_internal_text(body: &str, internals: &[&str]) {
    for internal in internals {
        assert!(!body.contains(internal), "{internal:?} leaked: {body}");
    }
}

#[tokio::test]
async fn a_missing_s3_bucket_is_not_ready_until_it_exists() {
    let moto = MotoServer::start().await;
    let app = TestApp::spawn_configured(shared::tables::TableRegistry::demo(), |c| {
        let mut s3 = s3_config(moto.endpoint());
        s3.bucket = "no-such-bucket".into();
        c.storage = StorageConfig::S3(s3);
    })
    .await;

    let response = app.http.get(format!("{}/ready", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["retry-after"], "5");
    let problem: Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("storage"), "{problem}");
    assert_no_internal_text(&problem.to_string(), &["no-such-bucket", "NoSuchBucket", "127.0.0.1", "list"]);

    // The bucket appears: ready, although no worker has checked writes yet (said so).
    let created = app.http.put(format!("{}/no-such-bucket", moto.endpoint())).send().await.unwrap();
    assert!(created.status().is_success());
    let (_, body) = ready_until(&app, StatusCode::OK).await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["storage_write"]["status"], "not_checked_yet", "{ready}");
    assert!(ready["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{ready}");

    // A worker's write check lands on one fixed key, overwritten check after check.
    let worker = app.runner(checking_worker()).spawn();
    app.wait_for("SELECT ok FROM storage_checks").await;
    let first = db_now(&app).await;
    app.wait_for(&format!("SELECT ok AND checked_at > '{first}' FROM storage_checks")).await;
    worker.stop().await;
    let listed = app
        .http
        .get(format!("{}/no-such-bucket?list-type=2&prefix=health/", moto.endpoint()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(listed.matches("<Key>").count(), 1, "{listed}");
    assert!(listed.contains("<Key>health/write-check</Key>"), "{listed}");
}

#[tokio::test]
async fn healthy_storage_is_ready_with_the_write_checks_age_and_latency() {
    let app = TestApp::spawn().await;
    let worker = app.runner(checking_worker()).spawn();
    app.wait_for("SELECT ok FROM storage_checks").await;
    let first = db_now(&app).await;
    app.wait_for(&format!("SELECT ok AND checked_at > '{first}' FROM storage_checks")).await;

    let response = app.http.get(format!("{}/ready", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await.unwrap();
    let names: Vec<&str> =
        ready["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["postgres", "source", "storage"]);
    let write = &ready["storage_write"];
    assert_eq!(write["status"], "ok", "{ready}");
    assert!(write["checked_at"].is_string(), "{ready}");
    let age = write["age_secs"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&age), "{ready}");
    assert!(write["latency_ms"].as_f64().unwrap() > 0.0, "{ready}");

    // One object, overwritten: not one per check.
    let written = files_under(&app.storage_dir.join("health"));
    assert_eq!(written, [app.storage_dir.join("health").join("write-check")]);

    // The dashboard shows the same check, and which worker made it.
    let admin = app.create_admin_key().await;
    let mut dashboard = DashboardClient::signed_in(&app, &admin).await;
    let page = dashboard.get("/dashboard/health").await;
    assert!(page.body.contains("Storage write check") && page.body.contains("writable"), "{}", page.body);
    let worker_id: String = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT worker_id FROM storage_checks", &[])
        .await
        .unwrap()
        .get(0);
    assert!(page.body.contains(&worker_id), "{}", page.body);
    worker.stop().await;
}

#[tokio::test]
async fn storage_that_stops_taking_writes_is_not_ready_until_it_takes_them_again() {
    let app = TestApp::spawn().await;
    let worker = app.runner(checking_worker()).spawn();
    app.wait_for("SELECT ok FROM storage_checks").await;
    ready_until(&app, StatusCode::OK).await;

    // The storage directory is swapped for one on a read-only filesystem (`/proc`: even root
    // cannot create anything there; tests run as root, so chmod would not stop a write). It is
    // still a directory and reads still answer ("not found"), so only a write tells.
    let root = &app.storage_dir;
    let moved = root.with_extension("moved");
    std::fs::rename(root, &moved).unwrap();
    std::os::unix::fs::symlink("/proc", root).unwrap();
    app.wait_for("SELECT NOT ok FROM storage_checks").await;
    let (headers, body) = ready_until(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("storage"), "{problem}");
    assert_no_internal_text(&body, &[&root.display().to_string(), "write-check", "proc", "os error"]);

    // Operators see why on the dashboard.
    let admin = app.create_admin_key().await;
    let mut dashboard = DashboardClient::signed_in(&app, &admin).await;
    let page = dashboard.get("/dashboard/health").await;
    assert!(page.body.contains("write failed"), "{}", page.body);
    let error: String = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT error FROM storage_checks", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!error.is_empty() && page.body.contains(&maud_escape(&error)), "{error} / {}", page.body);
    // Its class and fixed message; the cause (a path, the OS error) is in the worker log only.
    assert!(error.starts_with("storage_"), "{error}");
    assert_no_internal_text(&page.body, &[&root.display().to_string(), "/proc", "os error"]);

    // Fixed: the next check passes and the service is ready again.
    std::fs::remove_file(root).unwrap();
    std::fs::rename(&moved, root).unwrap();
    let fixed = db_now(&app).await;
    app.wait_for(&format!("SELECT ok AND checked_at > '{fixed}' FROM storage_checks")).await;
    let (_, body) = ready_until(&app, StatusCode::OK).await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["storage_write"]["status"], "ok", "{ready}");
    worker.stop().await;
}

/// The page's HTML escaping of `text` (enough for error messages).
fn maud_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[tokio::test]
async fn a_local_storage_root_that_is_not_a_directory_is_not_ready() {
    let app = TestApp::spawn().await;
    ready_until(&app, StatusCode::OK).await;
    std::fs::remove_dir_all(&app.storage_dir).unwrap();
    std::fs::write(&app.storage_dir, b"not a directory").unwrap();
    let (_, body) = ready_until(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("storage not answering"), "{body}");
    assert_no_internal_text(&body, &[&app.storage_dir.display().to_string()]);
    std::fs::remove_file(&app.storage_dir).unwrap();
}
