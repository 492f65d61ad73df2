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

/// A fresh, empty database; its URL.
async fn fresh_database() -> String {
    let name = format!("stmt_test_cli_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (admin, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    format!("{}/{name}", pg_admin_url().rsplit_once('/').unwrap().0)
}

#[tokio::test]
async fn a_client_key_needs_listed_accounts_or_all_accounts() {
    let url = fresh_database().await;
    let refused = cli(&url, &["keys", "create", "--name", "no scope"]);
    assert!(!refused.status.success(), "a client key without a scope was created");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--all-accounts") && stderr.contains("--account"), "{stderr}");
    let both = cli(&url, &["keys", "create", "--name", "both", "--account", "ACC-1", "--all-accounts"]);
    assert!(!both.status.success(), "listed accounts and all accounts at once");
    let restricted_admin =
        cli(&url, &["keys", "create", "--name", "ops", "--role", "admin", "--account", "A"]);
    assert!(!restricted_admin.status.success());

    for args in [
        &["--name", "all", "--all-accounts"][..],
        &["--name", "listed", "--account", "ACC-1", "--account", "ACC-2"],
        &["--name", "ops", "--role", "admin"],
    ] {
        let created = cli(&url, &[&["keys", "create"][..], args].concat());
        assert!(created.status.success(), "{args:?}: {}", String::from_utf8_lossy(&created.stderr));
    }
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = db.query("SELECT name, allowed_accounts FROM api_keys ORDER BY name", &[]).await.unwrap();
    let scopes: Vec<(String, Option<Vec<String>>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        scopes,
        [
            ("all".into(), None),
            ("listed".into(), Some(vec!["ACC-1".into(), "ACC-2".into()])),
            ("ops".into(), None)
        ]
    );
}

#[tokio::test]
async fn keys_list_tells_deactivated_from_revoked() {
    let url = fresh_database().await;
    let mut keys = Vec::new();
    for name in ["stays", "paused", "gone"] {
        let created = cli(&url, &["keys", "create", "--name", name, "--all-accounts"]);
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        keys.push(String::from_utf8(created.stdout).unwrap().trim().to_owned());
    }
    // Deactivated the way the dashboard does it.
    let pool = shared::db::pool(&secrecy::SecretString::from(url.clone()), 1).unwrap();
    let db = pool.get().await.unwrap();
    let id: uuid::Uuid =
        db.query_one("SELECT id FROM api_keys WHERE name = 'paused'", &[]).await.unwrap().get(0);
    shared::api_keys::set_active(&db, id, false).await.unwrap();
    assert!(cli(&url, &["keys", "revoke", &keys[2][..11]]).status.success());

    let listing = String::from_utf8(cli(&url, &["keys", "list"]).stdout).unwrap();
    let state = |name: &str| {
        let line = listing.lines().find(|l| l.ends_with(name)).unwrap_or_else(|| panic!("{name}: {listing}"));
        line.split_whitespace().nth(3).unwrap().to_owned()
    };
    assert_eq!(
        (state("stays"), state("paused"), state("gone")),
        ("active".into(), "deactivated".into(), "revoked".into())
    );
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
