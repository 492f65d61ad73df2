//! Secrets from files (`<VAR>_FILE`, the Docker and Kubernetes secrets convention): read with
//! the trailing newline trimmed; both forms set, or a file that cannot be used, stops start-up
//! naming the variables and never printing the secret.

use std::{path::PathBuf, process::Command};

const PAIRS: [(&str, &str); 4] = [
    ("DATABASE_URL", "DATABASE_URL_FILE"),
    ("SOURCE_DATABASE_URL", "SOURCE_DATABASE_URL_FILE"),
    ("SIGNING_SECRET", "SIGNING_SECRET_FILE"),
    ("S3_SECRET_ACCESS_KEY", "S3_SECRET_ACCESS_KEY_FILE"),
];

fn pg_admin_url() -> String {
    std::env::var("PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A file holding `content`, removed when dropped.
struct SecretFile(PathBuf);

impl SecretFile {
    fn new(content: &str) -> Self {
        let path = std::env::temp_dir().join(format!("secret-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, content).unwrap();
        Self(path)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `statement-api serve` with S3 storage (so its secret is read too) and `env`; it must fail.
fn serve_fails(env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_statement-api"));
    command
        .arg("serve")
        .env("STORAGE_BACKEND", "s3")
        .env("S3_BUCKET", "exports")
        .env("API_BIND", "127.0.0.1:0");
    // Only what the test sets (the test run's own environment may name the databases).
    for (var, file_var) in PAIRS {
        command.env_remove(var).env_remove(file_var);
    }
    if !env.iter().any(|(name, _)| name.starts_with("DATABASE_URL")) {
        command.env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("statement-api runs");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn database_url_from_a_file_with_a_trailing_newline() {
    let name = format!("stmt_test_secret_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (admin, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("{}/{name}", pg_admin_url().rsplit_once('/').unwrap().0);
    let file = SecretFile::new(&format!("{url}\n"));

    let created = Command::new(env!("CARGO_BIN_EXE_statement-api"))
        .args(["keys", "create", "--name", "from a file", "--all-accounts"])
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", &file.0)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    // The key went into the database the file names.
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let names: i64 =
        db.query_one("SELECT count(*) FROM api_keys WHERE name = 'from a file'", &[]).await.unwrap().get(0);
    assert_eq!(names, 1);
}

#[test]
fn each_secret_set_both_ways_stops_start_up_naming_both_variables() {
    let file = SecretFile::new("from-the-file-0123456789abcdef0123456789abcdef\n");
    let path = file.0.to_str().unwrap();
    for (var, file_var) in PAIRS {
        let value = "from-the-environment-0123456789abcdef0123456789";
        let stderr = serve_fails(&[(var, value), (file_var, path)]);
        assert!(stderr.contains(&format!("{var} and {file_var} are both set")), "{var}: {stderr}");
        assert!(!stderr.contains("from-the-"), "a secret is printed: {stderr}");
    }
}

#[test]
fn a_missing_or_empty_secret_file_stops_start_up_naming_it() {
    let empty = SecretFile::new("\n");
    for (_, file_var) in PAIRS {
        let stderr = serve_fails(&[(file_var, "/nonexistent/secret")]);
        assert!(stderr.contains(&format!("{file_var}: cannot read \"/nonexistent/secret\"")), "{stderr}");
        let stderr = serve_fails(&[(file_var, empty.0.to_str().unwrap())]);
        assert!(stderr.contains(file_var) && stderr.contains("is empty"), "{stderr}");
    }
}

#[test]
fn a_signing_secret_from_a_file_is_checked_like_one_from_the_environment() {
    let weak = SecretFile::new("a short passphrase, 31 bytes...\n");
    let stderr = serve_fails(&[("SIGNING_SECRET_FILE", weak.0.to_str().unwrap())]);
    assert!(stderr.contains("SIGNING_SECRET") && stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains("a short passphrase"), "{stderr}");
    let strong = SecretFile::new("9c1f4e7a2b8d03f6a5e9c7b1d4f2a8e06b3c9d1e7f5a2b4c8e0d6f3a1b9c7e5d\n");
    let stderr = serve_fails(&[("SIGNING_SECRET_FILE", strong.0.to_str().unwrap())]);
    assert!(!stderr.contains("SIGNING_SECRET"), "{stderr}");
    assert!(stderr.contains("migrations"), "start-up got as far as Postgres: {stderr}");
}
