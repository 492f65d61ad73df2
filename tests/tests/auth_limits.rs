//! Refusing a credential is cheap: an unknown API key or a bogus session cookie costs at most one
//! Postgres lookup, a client address whose lookups keep failing gets 429 without one, and a key
//! found valid is used from memory for a few seconds (a revocation reaches every API process
//! within 5 s).
//!
//! "Without a lookup" is checked for real: the test locks the table the lookup reads, so a
//! request that asks Postgres waits, and only one answered from memory comes back in time.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use shared::api_keys::NewKey;
use testkit::{StatusCode, TestApp};

/// Failed authentications a minute per address in the test configuration (the default).
const FAILURE_BUDGET: usize = 30;
/// A request answered from memory comes back well within this; one that queries a locked table
/// never does.
const FROM_MEMORY: Duration = Duration::from_secs(3);

/// A client whose connections come from `address` (anything in 127/8 is this machine).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FROM_MEMORY)
        .build()
        .unwrap()
}

/// Holds `table` locked against reads until dropped (its transaction rolls back).
struct TableLock {
    _client: tokio_postgres::Client,
}

async fn lock(app: &TestApp, table: &str) -> TableLock {
    let url = secrecy::ExposeSecret::expose_secret(&app.config.database_url).to_owned();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await.unwrap();
    TableLock { _client: client }
}

async fn get_export(
    app: &TestApp,
    client: &reqwest::Client,
    key: &str,
) -> reqwest::Result<reqwest::Response> {
    let url = format!("{}/api/export/{}", app.base_url, uuid::Uuid::new_v4());
    client.get(url).bearer_auth(key).send().await
}

fn stranger() -> String {
    NewKey::generate().plaintext
}

#[tokio::test]
async fn an_unknown_key_is_looked_up_once_then_refused_from_memory() {
    let app = TestApp::spawn().await;
    let client = client_from("127.0.0.1");
    let key = app.create_key(None).await;
    let unknown = stranger();
    assert_eq!(get_export(&app, &client, &unknown).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get_export(&app, &client, &key).await.unwrap().status(), StatusCode::NOT_FOUND);

    let _locked = lock(&app, "api_keys").await;
    let again = get_export(&app, &client, &unknown).await.expect("refused without waiting on Postgres");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let known = get_export(&app, &client, &key).await.expect("a key found valid is used from memory");
    assert_eq!(known.status(), StatusCode::NOT_FOUND, "authenticated, and the export is unknown");
}

#[tokio::test]
async fn an_address_whose_lookups_keep_failing_gets_429_without_a_lookup_and_other_addresses_do_not() {
    let app = TestApp::spawn().await;
    let attacker = client_from("127.0.0.2");
    for _ in 0..FAILURE_BUDGET {
        assert_eq!(
            get_export(&app, &attacker, &stranger()).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }

    let locked = lock(&app, "api_keys").await;
    let refused =
        get_export(&app, &attacker, &stranger()).await.expect("answered without waiting on Postgres");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("failed authentications"), "{problem}");
    drop(locked);

    let neighbour = client_from("127.0.0.3");
    let own_budget = get_export(&app, &neighbour, &stranger()).await.unwrap();
    assert_eq!(own_budget.status(), StatusCode::UNAUTHORIZED, "another address has its own budget");
    let key = app.create_key(None).await;
    assert_eq!(get_export(&app, &neighbour, &key).await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_key_revoked_elsewhere_is_refused_within_5_seconds() {
    let app = TestApp::spawn().await;
    let client = client_from("127.0.0.1");
    let key = app.create_key(None).await;
    assert_eq!(get_export(&app, &client, &key).await.unwrap().status(), StatusCode::NOT_FOUND);
    // As `statement-api keys revoke` does, from another process: no notification reaches the API.
    app.revoke_key(&key).await;
    let revoked = Instant::now();
    loop {
        let status = get_export(&app, &client, &key).await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(revoked.elapsed() < Duration::from_secs(5), "the revoked key still works after 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_bogus_session_cookie_is_looked_up_once_and_then_answered_from_memory() {
    let app = TestApp::spawn().await;
    let attacker = client_from("127.0.0.2");
    let dashboard = |cookie: String| {
        attacker
            .get(format!("{}/dashboard", app.base_url))
            .header("cookie", format!("stmt_session={cookie}"))
            .send()
    };
    let bogus = "0".repeat(64);
    let first = dashboard(bogus.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER, "to the sign-in page");
    let locked = lock(&app, "admin_sessions").await;
    let again = dashboard(bogus).await.expect("the same bogus cookie is refused from memory");
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    drop(locked);

    for i in 1..FAILURE_BUDGET {
        assert_eq!(dashboard(format!("{i:064}")).await.unwrap().status(), StatusCode::SEE_OTHER);
    }
    let _locked = lock(&app, "admin_sessions").await;
    let unseen = dashboard("f".repeat(64)).await.expect("past the budget, an unseen cookie is not looked up");
    assert_eq!(unseen.status(), StatusCode::SEE_OTHER);
}
