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

/// Starts the worker with `vars` against a Postgres port nothing listens on (a setting that
/// passes its check fails there instead) and returns its stderr: start-up must fail.
fn refused(vars: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_statement-worker"))
        .envs(vars.iter().copied())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_malformed_setting_names_the_variable_and_the_expected_form() {
    let stderr = refused(&[("WORKER_CONCURRENCY", "many")]);
    assert!(stderr.contains("WORKER_CONCURRENCY") && stderr.contains("positive number"), "{stderr}");
}

#[test]
fn an_unknown_log_format_names_the_variable_and_the_choices() {
    let stderr = refused(&[("LOG_FORMAT", "xml")]);
    assert!(stderr.contains("LOG_FORMAT") && stderr.contains("text or json"), "{stderr}");
}

#[test]
fn help_and_version_describe_the_binary() {
    let help = Command::new(env!("CARGO_BIN_EXE_statement-worker")).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--once") && text.contains("environment variables"), "{text}");
    let version = Command::new(env!("CARGO_BIN_EXE_statement-worker")).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("statement-worker {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn a_metrics_port_in_use_stops_start_up_naming_the_variable() {
    let app = TestApp::spawn().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_statement-worker"))
        .env("DATABASE_URL", app.config.database_url.expose_secret())
        .env("SOURCE_DATABASE_URL", app.config.source_database_url.expose_secret())
        .env("LOCAL_STORAGE_DIR", &app.storage_dir)
        .env("WORKER_METRICS_BIND", taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WORKER_METRICS_BIND"), "{stderr}");
}

#[test]
fn an_s3_retry_budget_over_five_minutes_or_malformed_stops_start_up() {
    for (value, expected) in [("600", "up to 300"), ("soon", "a number of seconds")] {
        let stderr = refused(&[
            ("STORAGE_BACKEND", "s3"),
            ("S3_BUCKET", "statement-exports"),
            ("S3_RETRY_TIMEOUT_SECS", value),
        ]);
        assert!(stderr.contains("S3_RETRY_TIMEOUT_SECS") && stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn a_transaction_pooler_without_a_direct_url_or_the_other_way_round_stops_start_up() {
    let stderr = refused(&[("DATABASE_POOLER", "transaction")]);
    assert!(stderr.contains("DATABASE_DIRECT_URL is required when DATABASE_POOLER=transaction"), "{stderr}");
    let stderr = refused(&[("DATABASE_DIRECT_URL", "postgres://postgres@127.0.0.1:5432/statements")]);
    assert!(
        stderr.contains("DATABASE_POOLER=transaction is required when DATABASE_DIRECT_URL is set"),
        "{stderr}"
    );
    let stderr = refused(&[("DATABASE_POOLER", "session")]);
    assert!(stderr.contains("DATABASE_POOLER") && stderr.contains("`none` or `transaction`"), "{stderr}");
}

#[test]
fn a_malformed_log_filter_stops_start_up_naming_the_variable() {
    let stderr = refused(&[("RUST_LOG", "info,worker=loudly")]);
    assert!(stderr.contains("RUST_LOG") && stderr.contains("tracing filter"), "{stderr}");
}

/// `sslmode=verify-full` against a server whose certificate names another host: the worker
/// stops at start-up, naming the setting and the host, never the password.
#[tokio::test]
async fn verify_full_against_a_certificate_for_another_host_stops_start_up() {
    let certs = testkit::tls::Certs::generate();
    let pg = testkit::tls::PrivatePostgres::start(Some(&certs.other_host)).await;
    let url = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        certs.ca.display()
    );
    let output =
        Command::new(env!("CARGO_BIN_EXE_statement-worker")).env("DATABASE_URL", &url).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sslmode=verify-full") && stderr.contains("not valid for name"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

/// Both database URLs from files (`DATABASE_URL_FILE`, `SOURCE_DATABASE_URL_FILE`, each ending
/// in a newline): start-up reaches the source and checks its schema.
#[tokio::test]
async fn database_urls_from_files_reach_both_databases() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!("secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pg"), format!("{}\n", app.config.database_url.expose_secret())).unwrap();
    std::fs::write(dir.join("src"), format!("{}\n", app.config.source_database_url.expose_secret())).unwrap();
    std::fs::write(
        dir.join("tables.json"),
        r#"{"tables": [{"name": "bank_transactions", "account_column": "account_id", "date_column": "txn_date",
            "id_column": "id", "columns": ["id", "no_such_column"]}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_statement-worker"))
        .env_remove("DATABASE_URL")
        .env_remove("SOURCE_DATABASE_URL")
        .env("DATABASE_URL_FILE", dir.join("pg"))
        .env("SOURCE_DATABASE_URL_FILE", dir.join("src"))
        .env("EXPORT_TABLES_FILE", dir.join("tables.json"))
        .env("LOCAL_STORAGE_DIR", &app.storage_dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The schema check ran against the source the file names: its refusal is about the column.
    assert!(stderr.contains("no_such_column") && stderr.contains("bank_transactions"), "{stderr}");
}
