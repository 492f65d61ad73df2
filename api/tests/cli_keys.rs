//! `statement-api keys create|list|revoke` against a real Postgres database.

use std::process::Command;

fn pg_admin_url() -> String {
    std::env::var("PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn cli(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_statement-api"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("statement-api runs")
}

#[tokio::test]
async fn keys_are_printed_once_listed_by_prefix_and_revocable() {
    let name = format!("stmt_test_cli_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (admin, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("{}/{name}", pg_admin_url().rsplit_once('/').unwrap().0);

    let created = cli(&url, &["keys", "create", "--name", "billing <system>", "--account", "ACC-1"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(shared::api_keys::is_well_formed(&key), "{key}");

    let listed = cli(&url, &["keys", "list"]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listing.contains(&key[..11]), "the prefix is listed: {listing}");
    assert!(!listing.contains(&key[11..]), "the secret is never listed");
    assert!(listing.contains("active") && listing.contains("billing <system>"));

    let revoked = cli(&url, &["keys", "revoke", &key[..11]]);
    assert!(revoked.status.success());
    assert!(String::from_utf8(cli(&url, &["keys", "list"]).stdout).unwrap().contains("revoked"));
    let again = cli(&url, &["keys", "revoke", &key[..11]]);
    assert!(!again.status.success(), "revoking twice reports that nothing matched");
}

#[test]
fn help_and_version_describe_the_binary() {
    let help = Command::new(env!("CARGO_BIN_EXE_statement-api")).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for subcommand in ["serve", "keys", "openapi"] {
        assert!(text.contains(subcommand), "{text}");
    }
    let version = Command::new(env!("CARGO_BIN_EXE_statement-api")).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("statement-api {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_malformed_setting_names_the_variable_and_the_expected_form() {
    let output = Command::new(env!("CARGO_BIN_EXE_statement-api"))
        .env("ADMIN_SESSION_TTL_SECS", "a day")
        // Nothing listens there: the setting must be refused before any connection is tried.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .expect("statement-api runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ADMIN_SESSION_TTL_SECS") && stderr.contains("seconds"), "{stderr}");
}
