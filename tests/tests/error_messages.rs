//! An export that fails says why with a documented code and a fixed message: nothing of the
//! driver's text, the source's user, host or port, or a storage path reaches the API or the
//! dashboard. The real cause is in the worker's log, named once, on a line with the export id.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use shared::{config::StorageConfig, tables::TableRegistry};
use testkit::{
    TestApp,
    dashboard::DashboardClient,
    s3::{MotoServer, s3_config},
};

/// Everything the worker logs while a test runs (a `tracing` capture on the test's thread:
/// `#[tokio::test]` runs the runner's tasks there too).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let log = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (log.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines that contain `needle`, and how often it occurs in the whole log.
    fn find(&self, needle: &str) -> (Vec<String>, usize) {
        let text = self.text();
        let lines = text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect();
        (lines, text.matches(needle).count())
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

/// The export as the API shows it (one export, and the listing) and as the dashboard shows it.
async fn shown(app: &TestApp, key: &str, id: &str) -> (Value, Value, String) {
    let details: Value = app.get_export(key, id).await.json().await.unwrap();
    let list: Value = app
        .http
        .get(format!("{}/api/exports", app.base_url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list["items"].as_array().unwrap().iter().find(|e| e["reference_id"] == id).unwrap().clone();
    let admin = app.create_admin_key().await;
    let mut browser = DashboardClient::signed_in(app, &admin).await;
    let page = browser.get(&format!("/dashboard/exports/{id}")).await.body;
    (details, listed, page)
}

fn assert_names_none(what: &str, text: &str, internals: &[&str]) {
    for internal in internals {
        assert!(!text.contains(internal), "{what} names {internal:?}: {text}");
    }
}

/// The export as shown (see [`shown`]): none of `internals` anywhere, and in the API the given
/// status with the documented code and its message.
fn assert_shown(shown: &(Value, Value, String), internals: &[&str], status: &str, code: &str, message: &str) {
    let (details, listed, page) = shown;
    for (what, text) in [
        ("GET export", details.to_string()),
        ("the listing", listed.to_string()),
        ("the dashboard", page.clone()),
    ] {
        assert_names_none(what, &text, internals);
    }
    for export in [details, listed] {
        assert_eq!(export["status"], status, "{export}");
        assert_eq!(export["error_code"], code, "{export}");
        assert_eq!(export["error"], message, "{export}");
    }
}

#[tokio::test]
async fn a_source_refusing_the_password_fails_the_export_with_a_documented_code_and_logs_the_cause_once() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    // The real source, the real user, a wrong password.
    let host_port = testkit::source_admin_url().rsplit_once('@').unwrap().1.to_owned();
    let mut config = app.config.clone();
    config.source_database_url = secrecy::SecretString::from(format!(
        "mysql://statements_ro:wrong-password@{host_port}/{}",
        app.source_db
    ));
    let (log, guard) = Log::start();
    assert_eq!(TestApp::runner_for(&config, TestApp::worker_config()).run_pending().await.unwrap(), 1);
    drop(guard);

    let shown = shown(&app, &key, &id).await;
    let page = &shown.2;
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let internals = [
        "statements_ro",
        host,
        port,
        "localhost",
        "wrong-password",
        "Access denied",
        "1045",
        "28000",
        "mysql",
    ];
    // A refused password is not retried.
    assert_shown(
        &shown,
        &internals,
        "FAILED",
        "source_auth_failed",
        "the source database refused the connection",
    );
    assert!(
        page.contains("source_auth_failed") && page.contains("the source database refused the connection")
    );
    assert!(page.contains("worker log"), "the dashboard says where the details are: {page}");

    let (lines, count) = log.find("Access denied for user 'statements_ro'");
    assert_eq!(count, 1, "the cause is logged once:\n{}", log.text());
    assert!(lines[0].contains(&id), "the line names the export: {}", lines[0]);
}

#[tokio::test]
async fn an_unwritable_storage_folder_fails_the_attempt_with_a_documented_code_and_logs_the_os_error_once() {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-1", 1, 10).await;
    // Tests may run as root, whom `chmod 0500` does not stop: instead the folder every export is
    // written under (`exports/`) is a regular file, so creating the export's file fails with a
    // real OS error, ENOTDIR, for any user.
    let exports = app.storage_dir.join("exports");
    let _ = std::fs::remove_dir_all(&exports);
    std::fs::write(&exports, b"not a folder").unwrap();
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let (log, guard) = Log::start();
    assert_eq!(app.runner(TestApp::worker_config()).run_pending().await.unwrap(), 1);
    drop(guard);

    let shown = shown(&app, &key, &id).await;
    let page = &shown.2;
    let root = app.storage_dir.display().to_string();
    let internals = [root.as_str(), "exports/", "os error", "Not a directory", "LocalFileSystem", "#1"];
    // Storage may come back: the export is retried.
    assert_shown(
        &shown,
        &internals,
        "PENDING",
        "storage_write_refused",
        "storage refused to store the export file",
    );
    assert!(
        page.contains("storage_write_refused") && page.contains("storage refused to store the export file")
    );
    assert!(page.contains("worker log"), "the dashboard says where the details are: {page}");

    let (lines, count) = log.find("Not a directory (os error 20)");
    assert_eq!(count, 1, "the cause is logged once:\n{}", log.text());
    assert!(lines[0].contains(&id), "the line names the export: {}", lines[0]);
    assert!(lines[0].len() < 600, "one readable line, not the chain repeated: {}", lines[0]);
}

#[tokio::test]
async fn a_missing_s3_bucket_is_a_documented_code_and_the_log_names_the_url_once() {
    let moto = MotoServer::start().await;
    let bucket = "h3-no-such-bucket";
    let app = TestApp::spawn_configured(TableRegistry::demo(), |c| {
        c.storage = StorageConfig::S3(shared::config::S3Config {
            bucket: bucket.into(),
            ..s3_config(moto.endpoint())
        })
    })
    .await;
    app.insert_generated_rows("ACC-1", 1, 10).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &january()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let (log, guard) = Log::start();
    assert_eq!(app.runner(TestApp::worker_config()).run_pending().await.unwrap(), 1);
    drop(guard);

    let shown = shown(&app, &key, &id).await;
    let endpoint = moto.endpoint();
    let host_port = endpoint.trim_start_matches("http://");
    let internals = [bucket, host_port, "http://", "NoSuchBucket", "exports/"];
    assert_shown(
        &shown,
        &internals,
        "PENDING",
        "storage_missing",
        "the storage bucket or folder does not exist",
    );

    let (lines, _) = log.find("error_code=storage_missing");
    assert_eq!(lines.len(), 1, "one line for the one failed attempt:\n{}", log.text());
    assert!(
        lines[0].contains(&id) && lines[0].contains(bucket),
        "the line names the export and the cause: {}",
        lines[0]
    );
    assert_eq!(lines[0].matches(host_port).count(), 1, "the URL at most once: {}", lines[0]);
}
