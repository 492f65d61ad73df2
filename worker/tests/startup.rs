//! The worker refuses to start when the configured tables do not match the source schema, and
//! names the problem.

use std::process::Command;

use secrecy::ExposeSecret;
use testkit::TestApp;

#[tokio::test]
async fn a_configured_column_missing_from_the_source_stops_start_up() {
    let app = TestApp::spawn().await;
    let tables = std::env::temp_dir().join(format!("tables-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &tables,
        r#"{"tables": [{"name": "bank_transactions", "account_column": "account_id", "date_column": "txn_date",
            "id_column": "id", "columns": ["id", "no_such_column"]}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_statement-worker"))
        .env("DATABASE_URL", app.config.database_url.expose_secret())
        .env("SOURCE_DATABASE_URL", app.config.source_database_url.expose_secret())
        .env("EXPORT_TABLES_FILE", &tables)
        .env("LOCAL_STORAGE_DIR", &app.storage_dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tables);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no_such_column") && stderr.contains("bank_transactions"), "{stderr}");
}

#[test]
fn a_malformed_setting_names_the_variable_and_the_expected_form() {
    let output = Command::new(env!("CARGO_BIN_EXE_statement-worker"))
        .env("WORKER_CONCURRENCY", "many")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WORKER_CONCURRENCY") && stderr.contains("positive number"), "{stderr}");
}
