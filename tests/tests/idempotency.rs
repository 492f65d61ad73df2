//! `Idempotency-Key` on create and cancel: a retry with the same key and request gets the
//! first response again and changes nothing; another request with the key is 422; a request
//! still in flight is 409; keys are per API key, expire and are pruned.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    api_keys,
    config::Retention,
    idempotency::{self, Claimed, KeyedRequest, StoredResponse},
};
use testkit::{StatusCode, TestApp};
use uuid::Uuid;

fn statement(date_to: &str) -> Value {
    json!({
        "account_id": "ACC-1", "table_name": "bank_transactions",
        "date_from": "2024-01-01", "date_to": date_to
    })
}

/// What a client sees of a response: status, the headers that matter, the body's bytes.
#[derive(PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    content_type: Option<String>,
    retry_after: Option<String>,
    replayed: Option<String>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("retry_after", &self.retry_after)
            .field("replayed", &self.replayed)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Seen {
    async fn of(response: reqwest::Response) -> Self {
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (content_type, retry_after) = (header("content-type"), header("retry-after"));
        let replayed = header("idempotent-replayed");
        let status = response.status();
        Self { status, content_type, retry_after, replayed, body: response.bytes().await.unwrap().to_vec() }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The same response, as a replay says it.
    fn replayed(self) -> Self {
        Self { replayed: Some("true".into()), ..self }
    }
}

async fn create(app: &TestApp, key: &str, idempotency_key: Option<&str>, body: &Value) -> Seen {
    let mut request = app.http.post(format!("{}/api/export", app.base_url)).bearer_auth(key).json(body);
    if let Some(value) = idempotency_key {
        request = request.header("Idempotency-Key", value);
    }
    Seen::of(request.send().await.unwrap()).await
}

async fn cancel(app: &TestApp, key: &str, idempotency_key: Option<&str>, id: &str) -> Seen {
    let mut request = app.http.post(format!("{}/api/export/{id}/cancel", app.base_url)).bearer_auth(key);
    if let Some(value) = idempotency_key {
        request = request.header("Idempotency-Key", value);
    }
    Seen::of(request.send().await.unwrap()).await
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.pool.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
}

async fn key_id(app: &TestApp, plaintext: &str) -> Uuid {
    let db = app.pool.get().await.unwrap();
    api_keys::authenticate(&db, plaintext).await.unwrap().unwrap().id
}

fn problem_type(seen: &Seen) -> String {
    seen.json()["type"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_retried_create_gets_the_first_response_byte_for_byte_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let first = create(&app, &key, Some("create-1"), &statement("2024-01-31")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(first.replayed, None, "the first response is not a replay");

    // The same request spelled differently (the default format written out, the key as an
    // sf-string) is the same request under the same key.
    let mut same = statement("2024-01-31");
    same["format"] = json!("csv");
    same["force_refresh"] = json!(false);
    let retry = create(&app, &key, Some("\"create-1\""), &same).await;
    let first_body = first.body.clone();
    assert_eq!(retry, first.replayed());
    assert_eq!(retry.body, first_body);

    let exports = "SELECT count(*) FROM exports";
    assert_eq!(count(&app, exports).await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM export_requesters").await, 1);
    assert_eq!(count(&app, "SELECT coalesce(sum(requests), 0)::bigint FROM export_requesters").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 1);
    // Without a key the same request runs again: content deduplication answers it, not a replay.
    let again = create(&app, &key, None, &statement("2024-01-31")).await;
    assert_eq!((again.status, again.replayed.as_deref()), (StatusCode::OK, None));
    assert_eq!(again.json()["reused"], true);
    assert_eq!(count(&app, exports).await, 1);
}

#[tokio::test]
async fn a_retried_cancel_gets_the_first_response_instead_of_already_finished() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created = create(&app, &key, None, &statement("2024-01-31")).await.json();
    let id = created["reference_id"].as_str().unwrap();

    let first = cancel(&app, &key, Some("cancel-1"), id).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.json()["status"], "CANCELLED");
    let retry = cancel(&app, &key, Some("cancel-1"), id).await;
    assert_eq!(retry, first.replayed());
    // A cancel that ran again would be 409: the export has finished.
    let unkeyed = cancel(&app, &key, None, id).await;
    assert_eq!(unkeyed.status, StatusCode::CONFLICT);
    assert_eq!(unkeyed.retry_after, None);

    // A refusal that is final is kept too: cancelling an export nobody can see is 404 again.
    let unknown = Uuid::new_v4().to_string();
    let missing = cancel(&app, &key, Some("cancel-2"), &unknown).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(cancel(&app, &key, Some("cancel-2"), &unknown).await, missing.replayed());
}

#[tokio::test]
async fn a_key_is_bound_to_its_request_its_api_key_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (key, other_key) = (app.create_key(None).await, app.create_key(None).await);
    let first = create(&app, &key, Some("k"), &statement("2024-01-31")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);

    // The same key with another body, another operation: 422, and nothing happens.
    let other_body = create(&app, &key, Some("k"), &statement("2024-02-29")).await;
    assert_eq!(other_body.status, StatusCode::UNPROCESSABLE_ENTITY, "{other_body:?}");
    assert_eq!(other_body.content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(problem_type(&other_body), "https://statement-export.dev/problems/idempotency-key-reused");
    let mut forced = statement("2024-01-31");
    forced["force_refresh"] = json!(true);
    assert_eq!(create(&app, &key, Some("k"), &forced).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let id = first.json()["reference_id"].as_str().unwrap().to_owned();
    let other_operation = cancel(&app, &key, Some("k"), &id).await;
    assert_eq!(other_operation.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count(&app, "SELECT count(*) FROM exports").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM exports WHERE status = 'PENDING'").await, 1);

    // Another idempotency key is another request: this one runs (and is deduplicated).
    let different = create(&app, &key, Some("k2"), &statement("2024-01-31")).await;
    assert_eq!((different.status, different.replayed.as_deref()), (StatusCode::OK, None));
    // Another API key with the same idempotency key is independent: its request runs, with a
    // body of its own, and the first key's response is not handed to it.
    let elsewhere = create(&app, &other_key, Some("k"), &statement("2024-02-29")).await;
    assert_eq!((elsewhere.status, elsewhere.replayed.as_deref()), (StatusCode::ACCEPTED, None));
    assert_eq!(count(&app, "SELECT count(*) FROM exports").await, 2);
    assert_eq!(count(&app, "SELECT count(*) FROM idempotency_keys").await, 3);
    // And the first key still replays its own.
    assert_eq!(create(&app, &key, Some("k"), &statement("2024-01-31")).await, first.replayed());
}

#[tokio::test]
async fn a_claimed_key_is_in_flight_until_its_lease_lapses_then_taken_over() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let created = create(&app, &key, None, &statement("2024-01-31")).await.json();
    let id = created["reference_id"].as_str().unwrap().to_owned();

    // Claim the key the way the API does for this cancel, as a process that then died would.
    let db = app.pool.get().await.unwrap();
    let fingerprint = idempotency::fingerprint(&["POST /api/export/{reference_id}/cancel", &id]);
    let request =
        KeyedRequest { api_key_id: key_id(&app, &key).await, key: "stuck", fingerprint: &fingerprint };
    let Claimed::Run(stale) = idempotency::claim(&db, request, Duration::from_secs(3600)).await.unwrap()
    else {
        panic!("a new key is claimed");
    };

    let in_flight = cancel(&app, &key, Some("stuck"), &id).await;
    assert_eq!(in_flight.status, StatusCode::CONFLICT, "{in_flight:?}");
    assert_eq!(in_flight.retry_after.as_deref(), Some("1"));
    assert_eq!(problem_type(&in_flight), "https://statement-export.dev/problems/idempotency-key-in-use");
    assert_eq!(count(&app, "SELECT count(*) FROM exports WHERE status = 'PENDING'").await, 1, "nothing ran");
    // Another request with the key is still 422, in flight or not.
    let other = cancel(&app, &key, Some("stuck"), &Uuid::new_v4().to_string()).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);

    // The claim's lease lapses: the next request takes the key over and runs.
    db.execute(
        "UPDATE idempotency_keys SET lease_expires_at = now() - interval '1 second' WHERE idempotency_key = 'stuck'",
        &[],
    )
    .await
    .unwrap();
    let taken_over = cancel(&app, &key, Some("stuck"), &id).await;
    assert_eq!((taken_over.status, taken_over.replayed.as_deref()), (StatusCode::OK, None), "{taken_over:?}");
    assert_eq!(taken_over.json()["status"], "CANCELLED");
    // The dead claim can neither overwrite the response nor release the key.
    let late = StoredResponse { status: 500, headers: Vec::new(), body: b"late".to_vec() };
    assert!(!idempotency::store(&db, &stale, &late).await.unwrap());
    assert!(!idempotency::release(&db, &stale).await.unwrap());
    assert_eq!(cancel(&app, &key, Some("stuck"), &id).await, taken_over.replayed());
}

#[tokio::test]
async fn a_request_still_running_makes_its_retry_409_and_its_response_is_replayed_after() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let api_key_id = key_id(&app, &key).await;
    // Hold the key's row as a create's transaction takes it (creates by one key take turns):
    // the first request claims its idempotency key, then waits here, genuinely in flight.
    let mut holder = app.pool.get().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR NO KEY UPDATE", &[&api_key_id]).await.unwrap();

    let first = tokio::spawn({
        let request = app
            .http
            .post(format!("{}/api/export", app.base_url))
            .bearer_auth(&key)
            .header("Idempotency-Key", "held")
            .json(&statement("2024-01-31"));
        async move { Seen::of(request.send().await.unwrap()).await }
    });
    app.wait_for(
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE idempotency_key = 'held' AND response_status IS NULL)
            AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                        AND wait_event_type = 'Lock' AND query LIKE 'SELECT 1 FROM api_keys%')",
    )
    .await;

    // Answered at once: a retry that ran the request would wait on the held row too.
    let answered = Duration::from_secs(10);
    let retry = tokio::time::timeout(answered, create(&app, &key, Some("held"), &statement("2024-01-31")))
        .await
        .expect("the retry is answered while the first request is held");
    assert_eq!(retry.status, StatusCode::CONFLICT, "{retry:?}");
    assert_eq!(retry.retry_after.as_deref(), Some("1"));
    assert_eq!(problem_type(&retry), "https://statement-export.dev/problems/idempotency-key-in-use");
    let mismatch = tokio::time::timeout(answered, create(&app, &key, Some("held"), &statement("2024-02-29")))
        .await
        .expect("answered at once");
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!first.is_finished(), "the first request is still held");

    hold.rollback().await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(create(&app, &key, Some("held"), &statement("2024-01-31")).await, first.replayed());
    assert_eq!(count(&app, "SELECT count(*) FROM exports").await, 1);
}

#[tokio::test]
async fn answers_a_retry_may_change_are_not_kept() {
    // One outstanding export per key: the second create is 429 until the first finishes.
    let app = TestApp::spawn_with_api(|api| api.max_outstanding_exports_per_key = 1).await;
    let key = app.create_key(None).await;
    let first = create(&app, &key, None, &statement("2024-01-31")).await.json();
    let limited = create(&app, &key, Some("later"), &statement("2024-02-29")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{limited:?}");
    assert_eq!(count(&app, "SELECT count(*) FROM idempotency_keys").await, 0, "the claim was released");

    assert_eq!(
        cancel(&app, &key, None, first["reference_id"].as_str().unwrap()).await.status,
        StatusCode::OK
    );
    let retry = create(&app, &key, Some("later"), &statement("2024-02-29")).await;
    assert_eq!((retry.status, retry.replayed.as_deref()), (StatusCode::ACCEPTED, None), "{retry:?}");

    // Refusals before the key is claimed are not kept either: a 403 for an account the key may
    // not export, then the same idempotency key for a request it may make.
    let narrow = app.create_key(Some(&["ACC-2"])).await;
    let forbidden = create(&app, &narrow, Some("k"), &statement("2024-01-31")).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let mut allowed = statement("2024-01-31");
    allowed["account_id"] = json!("ACC-2");
    assert_eq!(create(&app, &narrow, Some("k"), &allowed).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_expired_key_can_be_reused_and_maintenance_prunes_expired_keys() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    assert_eq!(create(&app, &key, Some("old"), &statement("2024-01-31")).await.status, StatusCode::ACCEPTED);
    assert_eq!(create(&app, &key, Some("kept"), &statement("2024-01-31")).await.status, StatusCode::OK);
    let db = app.pool.get().await.unwrap();
    let backdate =
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE idempotency_key = $1";
    db.execute(backdate, &[&"old"]).await.unwrap();

    // Forgotten: the key names a new request now.
    let reused = create(&app, &key, Some("old"), &statement("2024-02-29")).await;
    assert_eq!((reused.status, reused.replayed.as_deref()), (StatusCode::ACCEPTED, None), "{reused:?}");
    assert_eq!(create(&app, &key, Some("old"), &statement("2024-02-29")).await, reused.replayed());

    // Expired keys go at the maintenance pass; the others stay.
    for name in ["old", "kept"] {
        db.execute(
            "INSERT INTO idempotency_keys (api_key_id, idempotency_key, fingerprint, claim_token, expires_at, lease_expires_at)
             SELECT api_key_id, 'expired-' || $1, fingerprint, gen_random_uuid(), now() - interval '1 hour', now()
             FROM idempotency_keys WHERE idempotency_key = $1",
            &[&name],
        )
        .await
        .unwrap();
    }
    db.execute(backdate, &[&"kept"]).await.unwrap();
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let retention = Retention { jobs: Duration::from_secs(86_400), export_rows: None };
    let report = worker::maintenance::run_once(&ctx, retention).await;
    assert_eq!(report.pruned_idempotency_keys, 3);
    let left = db
        .query("SELECT idempotency_key FROM idempotency_keys ORDER BY idempotency_key", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>();
    assert_eq!(left, ["old"]);
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_a_400_naming_the_header() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let too_long = "k".repeat(256);
    let quoted_too_long = format!("\"{}\"", "k".repeat(256));
    let values: Vec<reqwest::header::HeaderValue> =
        ["", "  ", "\"\"", "\"unterminated", "\"a\" b", r#""bad \n""#, "a\tb"]
            .iter()
            .chain([too_long.as_str(), quoted_too_long.as_str()].iter())
            .map(|v| reqwest::header::HeaderValue::from_str(v).unwrap())
            .chain([reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap()])
            .collect();
    for value in values {
        let response = app
            .http
            .post(format!("{}/api/export", app.base_url))
            .bearer_auth(&key)
            .header("Idempotency-Key", value.clone())
            .json(&statement("2024-01-31"))
            .send()
            .await
            .unwrap();
        let seen = Seen::of(response).await;
        assert_eq!(seen.status, StatusCode::BAD_REQUEST, "{value:?}");
        assert_eq!(seen.content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(seen.json()["errors"][0]["field"], "Idempotency-Key", "{value:?}");
    }
    // Sent twice, even with one value each time.
    let twice = app
        .http
        .post(format!("{}/api/export/{}/cancel", app.base_url, Uuid::new_v4()))
        .bearer_auth(&key)
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "a")
        .send()
        .await
        .unwrap();
    let twice = Seen::of(twice).await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert_eq!(twice.json()["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(count(&app, "SELECT count(*) FROM exports").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM idempotency_keys").await, 0);
}
