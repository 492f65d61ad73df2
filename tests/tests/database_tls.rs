//! Both databases over TLS, with a CA and server certificates made for the test: exports run
//! end to end over TLS; the `sslmode` / `ssl-mode` settings verify what they promise and a
//! refusal names the setting (and never the password).

use mysql_async::prelude::Queryable;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use shared::{db, source::Source};
use testkit::{
    TestApp,
    replica::PrivateMariaDb,
    tls::{Certs, PrivatePostgres},
};

async fn mariadb_with(certs: &Certs, pair: &(std::path::PathBuf, std::path::PathBuf)) -> PrivateMariaDb {
    let args = certs.mariadb_args(pair);
    PrivateMariaDb::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

fn with_params(url: &SecretString, params: &str) -> SecretString {
    SecretString::from(format!("{}?{params}", url.expose_secret()))
}

/// Opens a source connection at `url` (and closes it): the error as the log would show it.
async fn source_connect(url: String) -> Result<(), String> {
    let source = Source::new(&SecretString::from(url), 1).map_err(|e| e.to_string())?;
    let conn = source.connect().await.map_err(|e| e.to_string())?;
    Source::discard(conn).await;
    Ok(())
}

/// A fresh database on a private Postgres: its URL with a password (trust ignores it; it must
/// not reach any message).
async fn fresh_database(pg: &PrivatePostgres) -> String {
    let (admin, conn) = tokio_postgres::connect(&pg.admin_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let name = format!("tls_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    format!("postgres://postgres:s3cret-pw@127.0.0.1:{}/{name}", pg.port)
}

#[tokio::test]
async fn an_export_runs_end_to_end_with_both_databases_verified_over_tls() {
    let certs = Certs::generate();
    let pg = PrivatePostgres::start(Some(&certs.server)).await;
    let maria = mariadb_with(&certs, &certs.server).await;
    let ca = certs.ca.display().to_string();
    let app = TestApp::spawn_on(&pg.admin_url(), &maria.admin_url(), &maria.host_port(), |config| {
        config.database_url =
            with_params(&config.database_url, &format!("sslmode=verify-full&sslrootcert={ca}"));
        config.source_database_url =
            with_params(&config.source_database_url, &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"));
    })
    .await;
    // Plain connections are refused: to the test database by pg_hba (hostssl), to the source by
    // the account (REQUIRE SSL). What works below worked over TLS.
    maria
        .exec(
            "ALTER USER 'statements_ro'@'%' REQUIRE SSL; ALTER USER 'statements_ro'@'localhost' REQUIRE SSL",
        )
        .await;
    let plain_source = format!("mysql://statements_ro:statements_ro@{}/{}", maria.host_port(), app.source_db);
    assert!(mysql_async::Conn::from_url(plain_source.as_str()).await.is_err(), "plain source login refused");
    let (plain_pg, _) = app.config.database_url.expose_secret().split_once('?').unwrap();
    assert!(
        tokio_postgres::connect(plain_pg, tokio_postgres::NoTls).await.is_err(),
        "plain Postgres refused"
    );

    let in_tls: bool = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_tls, "the pool's connection is TLS");
    let source = Source::new(&app.config.source_database_url, 1).unwrap();
    let mut conn = source.connect().await.unwrap();
    let cipher: Option<(String, String)> =
        conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'").await.unwrap();
    assert!(cipher.is_some_and(|(_, c)| !c.is_empty()), "the source connection is TLS");
    Source::discard(conn).await;

    app.insert_generated_rows("ACC-TLS", 1, 2_000).await;
    let key = app.create_key(None).await;
    let body = json!({"account_id": "ACC-TLS", "table_name": "bank_transactions",
                      "date_from": "2024-01-01", "date_to": "2024-01-31"});
    let created: Value = app.post_export(&key, &body).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    // The worker as it runs: claim loop, LISTEN session and maintenance leader, all over TLS.
    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT status IN ('COMPLETED', 'FAILED') FROM exports WHERE id = '{id}'")).await;
    let tls_session = |condition: &str| {
        format!(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' \
             WHERE a.datname = current_database() AND s.ssl AND {condition})"
        )
    };
    app.wait_for(&tls_session("a.query LIKE 'LISTEN%'")).await;
    app.wait_for(&tls_session("l.granted")).await;
    worker.stop().await;
    let done: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let bytes = app.download(done["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    assert_eq!(done["sha256"], testkit::sha256_hex(&bytes));
    let ids = |rows: &[Vec<Option<String>>]| rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    let exported = testkit::parse_csv(&bytes);
    let source = app.source_rows("ACC-TLS", "2024-01-01", "2024-01-31").await;
    assert_eq!((source.len(), ids(&exported[1..])), (2_000, ids(&source)), "every row, in order");
}

#[tokio::test]
async fn postgres_certificate_checks_follow_sslmode() {
    let certs = Certs::generate();
    let pg = PrivatePostgres::start(Some(&certs.other_host)).await;
    let url = fresh_database(&pg).await;
    let ca = certs.ca.display();
    let at = |params: String| SecretString::from(format!("{url}?{params}"));

    let refused =
        db::migrate(&at(format!("sslmode=verify-full&sslrootcert={ca}"))).await.unwrap_err().to_string();
    assert!(refused.contains("sslmode=verify-full") && refused.contains("not valid for name"), "{refused}");
    assert!(!refused.contains("s3cret-pw"), "{refused}");

    let unrelated = certs.unrelated_ca();
    let untrusted = db::migrate(&at(format!("sslmode=verify-ca&sslrootcert={}", unrelated.display())))
        .await
        .unwrap_err()
        .to_string();
    assert!(untrusted.contains("sslmode=verify-ca") && untrusted.contains("UnknownIssuer"), "{untrusted}");

    // verify-ca checks the chain, not the name; require encrypts without checking.
    db::migrate(&at(format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca accepts the chain");
    db::migrate(&at("sslmode=require".into())).await.expect("require does not verify");
}

#[tokio::test]
async fn mariadb_certificate_checks_follow_ssl_mode() {
    let certs = Certs::generate();
    let maria = mariadb_with(&certs, &certs.other_host).await;
    let ca = certs.ca.display();
    let base = format!("mysql://root:s3cret-pw@{}/mysql", maria.host_port());
    let connect = |params: String| source_connect(format!("{base}?{params}"));
    let refused = connect(format!("ssl-mode=verify_identity&ssl-ca={ca}")).await.unwrap_err();
    assert!(
        refused.contains("ssl-mode=verify_identity") && refused.contains("not valid for name"),
        "{refused}"
    );
    assert!(!refused.contains("s3cret-pw"), "{refused}");
    let unrelated = certs.unrelated_ca();
    let untrusted = connect(format!("ssl-mode=verify_ca&ssl-ca={}", unrelated.display())).await.unwrap_err();
    assert!(untrusted.contains("ssl-mode=verify_ca"), "{untrusted}");
}

#[tokio::test]
async fn require_against_servers_without_tls_fails_clearly() {
    let pg = PrivatePostgres::start(None).await;
    let url = fresh_database(&pg).await;
    let refused =
        db::migrate(&SecretString::from(format!("{url}?sslmode=require"))).await.unwrap_err().to_string();
    assert!(refused.contains("sslmode=require") && refused.contains("does not support TLS"), "{refused}");
    assert!(!refused.contains("s3cret-pw"), "{refused}");
    db::migrate(&SecretString::from(format!("{url}?sslmode=prefer")))
        .await
        .expect("prefer falls back to plain");

    let maria = PrivateMariaDb::start(&[]).await;
    let refused = source_connect(format!("mysql://root@{}/mysql?ssl-mode=required", maria.host_port()))
        .await
        .unwrap_err();
    assert!(refused.contains("ssl-mode=required") && refused.contains("SSL"), "{refused}");
}

/// A server that authenticates clients by certificate: refused without one, accepted with the
/// one `sslcert`/`sslkey` (Postgres) or `ssl-cert`/`ssl-key` (MariaDB) name.
#[tokio::test]
async fn client_certificates_from_the_url_authenticate() {
    let certs = Certs::generate();
    let ca = certs.ca.display();
    let (cert, key) = certs.client("postgres");
    let pg = PrivatePostgres::start_requiring_client_certs(&certs.server, &certs.ca).await;
    let url = format!("{}?sslmode=verify-full&sslrootcert={ca}", fresh_database(&pg).await);
    let refused = db::migrate(&SecretString::from(url.clone())).await.unwrap_err().to_string();
    assert!(refused.contains("certificate"), "{refused}");
    let with_cert = format!("{url}&sslcert={}&sslkey={}", cert.display(), key.display());
    db::migrate(&SecretString::from(with_cert)).await.expect("the client certificate is accepted");

    let maria = mariadb_with(&certs, &certs.server).await;
    maria.exec("CREATE USER 'certified'@'%' REQUIRE X509; GRANT SELECT ON mysql.* TO 'certified'@'%'").await;
    let (cert, key) = certs.client("certified");
    let url = format!("mysql://certified@{}/mysql?ssl-mode=verify_identity&ssl-ca={ca}", maria.host_port());
    let connect = source_connect;
    let refused = connect(url.clone()).await.unwrap_err();
    assert!(refused.contains("Access denied"), "{refused}");
    let pkcs8 = Source::new(
        &SecretString::from(format!("{url}&ssl-cert={}&ssl-key={}", cert.display(), key.display())),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(pkcs8.contains("ssl-key") && pkcs8.contains("-traditional"), "{pkcs8}");
    let key = certs.pkcs1(&key);
    connect(format!("{url}&ssl-cert={}&ssl-key={}", cert.display(), key.display()))
        .await
        .expect("the client certificate is accepted");
}
