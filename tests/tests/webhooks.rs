//! Completion webhooks end to end: endpoints registered through the API, exports run by the
//! real worker code, deliveries received by a small HTTP server in this process and verified
//! with the `standardwebhooks` package from PyPI (an implementation we did not write).

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    config::Config,
    tables::{TableRegistry, TableSpec},
    webhooks::address::Policy,
};
use testkit::{
    StatusCode, TestApp, WorkerProcess,
    webhooks::{Answer, Received, Receiver, verify_with_standardwebhooks},
};

const OPEN: Policy = Policy { allow_http: true, allow_private: true };

/// A test's tables: the demo table, and `broken_table`, whose source table does not exist (its
/// exports fail for good).
fn tables() -> TableRegistry {
    let good = TableRegistry::demo().get("bank_transactions").unwrap().clone();
    let broken =
        TableSpec { name: "broken_table".into(), source_table: Some("no_such_table".into()), ..good.clone() };
    TableRegistry::new(vec![good, broken]).unwrap()
}

/// An app whose webhooks may reach this host over http (the receiver), with `adjust` on top.
async fn app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_configured(tables(), |config| {
        config.webhooks.policy = OPEN;
        adjust(config);
    })
    .await
}

async fn app() -> TestApp {
    app_with(|_| {}).await
}

fn statement(account: &str, table: &str) -> Value {
    json!({"account_id": account, "table_name": table, "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

async fn api(app: &TestApp, key: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let url = format!("{}{path}", app.base_url);
    let request = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
        "DELETE" => app.http.delete(url),
        other => panic!("{other}"),
    };
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.bearer_auth(key).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// Registers an endpoint; returns its id and secret.
async fn register(app: &TestApp, key: &str, url: &str, event_types: Option<&[&str]>) -> (String, String) {
    let mut body = json!({ "url": url, "description": "test receiver" });
    if let Some(types) = event_types {
        body["event_types"] = json!(types);
    }
    let (status, endpoint) = api(app, key, "POST", "/api/webhook-endpoints", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    (endpoint["id"].as_str().unwrap().to_owned(), endpoint["secret"].as_str().unwrap().to_owned())
}

async fn deliveries(app: &TestApp, key: &str, endpoint: &str) -> Vec<Value> {
    let (status, page) =
        api(app, key, "GET", &format!("/api/webhook-endpoints/{endpoint}/deliveries"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// Requests the statement and runs the jobs (the export, then its deliveries) until it settles.
async fn export(app: &TestApp, key: &str, body: &Value) -> Value {
    let created: Value = app.post_export(key, body).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let settled = app.run_until_settled(key, &id).await;
    app.run_pending_jobs().await;
    settled
}

fn verified(secret: &str, received: &[Received]) -> Vec<Value> {
    verify_with_standardwebhooks(secret, received).unwrap_or_else(|e| panic!("standardwebhooks refused: {e}"))
}

#[tokio::test]
async fn a_completed_export_reaches_each_subscribed_endpoint_once_signed_as_standardwebhooks_verifies() {
    let app = app().await;
    let receiver = Receiver::start().await;
    let key = app.create_key(None).await;
    let (first, first_secret) = register(&app, &key, &receiver.url("/first"), None).await;
    let (_, second_secret) =
        register(&app, &key, &receiver.url("/second"), Some(&["export.completed"])).await;
    register(&app, &key, &receiver.url("/failures-only"), Some(&["export.failed"])).await;
    app.source_exec(
        "INSERT INTO bank_transactions VALUES (1, 'ACC-1', '2024-01-05', '2024-01-05 10:00:00', 'Coffee', NULL, 3.50, 'EUR', 'R1')",
    )
    .await;

    let done = export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    receiver.wait_for(2, Duration::from_secs(10)).await;
    app.run_pending_jobs().await;
    let received = receiver.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(received.len(), 2, "one delivery per subscribed endpoint: {paths:?}");
    let by_path = |path: &str| received.iter().find(|r| r.path == path).unwrap().clone();
    let (to_first, to_second) = (by_path("/first"), by_path("/second"));

    // The reference library accepts each with its endpoint's secret, and not with another's.
    let bodies = verified(&first_secret, std::slice::from_ref(&to_first));
    verified(&second_secret, std::slice::from_ref(&to_second));
    assert!(verify_with_standardwebhooks(&second_secret, std::slice::from_ref(&to_first)).is_err());

    // One event, one body: the export as GET shows it, minus the download link.
    assert_eq!(to_first.method, "POST");
    assert_eq!(to_first.header("content-type"), "application/json");
    assert_eq!(to_first.header("webhook-id"), to_second.header("webhook-id"));
    assert_eq!(to_first.body, to_second.body);
    let event = &bodies[0];
    assert_eq!(event["type"], "export.completed");
    let mut expected =
        app.get_export(&key, done["reference_id"].as_str().unwrap()).await.json::<Value>().await.unwrap();
    let expected = expected.as_object_mut().unwrap();
    assert!(expected.remove("file_url").is_some() && expected.remove("file_url_expires_at").is_some());
    assert_eq!(event["data"], Value::Object(expected.clone()));
    assert_eq!(event["data"]["row_count"], 1);
    let timestamp = time::OffsetDateTime::parse(
        event["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let completed_at = time::OffsetDateTime::parse(
        done["completed_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(timestamp, completed_at, "the event is the export's completion");

    // The delivery log says so.
    let log = deliveries(&app, &key, &first).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let delivery = &log[0];
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["event_id"].as_str(), Some(to_first.header("webhook-id")));
    assert_eq!(delivery["event_type"], "export.completed");
    assert_eq!(delivery["export_id"], done["reference_id"]);
    assert_eq!((delivery["attempts"].as_i64(), delivery["response_status"].as_i64()), (Some(1), Some(200)));
    assert!(delivery["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(delivery["attempt_log"][0]["response_excerpt"], "answered 200");
    assert!(delivery.get("error_class").is_none() && delivery.get("next_attempt_at").is_none());
}

#[tokio::test]
async fn failed_cancelled_and_expired_exports_send_their_events() {
    let app = app().await;
    let receiver = Receiver::start().await;
    let key = app.create_key(None).await;
    let (_, secret) = register(&app, &key, &receiver.url("/hook"), None).await;

    let failed = export(&app, &key, &statement("ACC-1", "broken_table")).await;
    assert_eq!(failed["status"], "FAILED");
    let pending: Value =
        app.post_export(&key, &statement("ACC-2", "bank_transactions")).await.json().await.unwrap();
    let cancelled = app.cancel_export(&key, pending["reference_id"].as_str().unwrap()).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let completed = export(&app, &key, &statement("ACC-3", "bank_transactions")).await;
    let completed_id = completed["reference_id"].as_str().unwrap();
    // Retention runs out: maintenance deletes the file and expires the export.
    app.psql(&format!(
        "UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = '{completed_id}'"
    ))
    .unwrap();
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let report = worker::maintenance::run_once(&ctx, TestApp::worker_config().retention).await;
    assert_eq!(report.expired, 1);
    app.run_pending_jobs().await;

    let received = receiver.wait_for(4, Duration::from_secs(10)).await;
    let events = verified(&secret, &received);
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["data"]["status"].as_str().unwrap().into(),
                e["data"]["reference_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = |t: &str, s: &str, id: &Value| (t.to_owned(), s.to_owned(), id.as_str().unwrap().to_owned());
    for wanted in [
        expect("export.failed", "FAILED", &failed["reference_id"]),
        expect("export.cancelled", "CANCELLED", &pending["reference_id"]),
        expect("export.completed", "COMPLETED", &completed["reference_id"]),
        expect("export.expired", "EXPIRED", &completed["reference_id"]),
    ] {
        assert!(summary.contains(&wanted), "{wanted:?} not in {summary:?}");
    }
    assert_eq!(summary.len(), 4, "{summary:?}");
    let failed_event = events.iter().find(|e| e["type"] == "export.failed").unwrap();
    assert_eq!(failed_event["data"]["error_code"], "source_schema_mismatch");
    // Each event has its own id.
    let mut ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);
}

#[tokio::test]
async fn every_key_holding_a_shared_export_gets_it_once_and_a_key_that_cancelled_for_itself_does_not() {
    let app = app().await;
    let receiver = Receiver::start().await;
    let (a, b, c) = (app.create_key(None).await, app.create_key(None).await, app.create_key(None).await);
    let (_, secret_a) = register(&app, &a, &receiver.url("/a"), None).await;
    let (_, secret_b) = register(&app, &b, &receiver.url("/b"), None).await;
    register(&app, &c, &receiver.url("/c"), None).await;
    let body = statement("ACC-1", "bank_transactions");
    let first: Value = app.post_export(&a, &body).await.json().await.unwrap();
    let id = first["reference_id"].as_str().unwrap();
    for key in [&b, &c] {
        let again: Value = app.post_export(key, &body).await.json().await.unwrap();
        assert_eq!(again["reference_id"], id, "deduplicated");
    }
    let detached: Value = app.cancel_export(&c, id).await.json().await.unwrap();
    assert_eq!(detached["detached"], true, "{detached}");
    app.run_until_settled(&a, id).await;
    app.run_pending_jobs().await;

    receiver.wait_for(2, Duration::from_secs(10)).await;
    app.run_pending_jobs().await;
    let received = receiver.received();
    let mut paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/a", "/b"], "once per holding key's endpoint, none for the key that cancelled");
    let to = |path: &str| vec![received.iter().find(|r| r.path == path).unwrap().clone()];
    verified(&secret_a, &to("/a"));
    verified(&secret_b, &to("/b"));
    assert_eq!(to("/a")[0].header("webhook-id"), to("/b")[0].header("webhook-id"), "one event");
}

#[tokio::test]
async fn after_a_rotation_both_secrets_verify_until_the_overlap_ends() {
    let app = app().await;
    let receiver = Receiver::start().await;
    let key = app.create_key(None).await;
    let (endpoint, old_secret) = register(&app, &key, &receiver.url("/hook"), None).await;
    let (status, rotated) =
        api(&app, &key, "POST", &format!("/api/webhook-endpoints/{endpoint}/rotate-secret"), None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(rotated["previous_secret_expires_at"].is_string() && rotated["secret_rotated_at"].is_string());

    export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    let during = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        during[0].header("webhook-signature").split(' ').count(),
        2,
        "two signatures during the overlap"
    );
    verified(&old_secret, &during);
    verified(&new_secret, &during);

    // The overlap ends: only the new secret signs.
    app.psql(&format!(
        "UPDATE webhook_endpoints SET previous_secret_expires_at = now() - interval '1 second' WHERE id = '{endpoint}'"
    ))
    .unwrap();
    export(&app, &key, &statement("ACC-2", "bank_transactions")).await;
    let after = receiver.wait_for(2, Duration::from_secs(10)).await[1..].to_vec();
    assert_eq!(after[0].header("webhook-signature").split(' ').count(), 1);
    verified(&new_secret, &after);
    assert!(verify_with_standardwebhooks(&old_secret, &after).is_err(), "the old secret no longer verifies");
    let (_, shown) = api(&app, &key, "GET", &format!("/api/webhook-endpoints/{endpoint}"), None).await;
    assert!(shown.get("secret").is_none() && shown.get("previous_secret_expires_at").is_none(), "{shown}");
}

/// Seconds between the attempts of the delivery log's first delivery.
fn attempt_gaps(delivery: &Value) -> Vec<f64> {
    let times: Vec<time::OffsetDateTime> = delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            time::OffsetDateTime::parse(
                a["attempted_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    times.windows(2).map(|w| (w[1] - w[0]).as_seconds_f64()).collect()
}

#[tokio::test]
async fn a_dead_receiver_is_retried_with_growing_delays_then_its_endpoint_is_disabled_until_enabled() {
    let app = app_with(|config| {
        config.webhooks.retry_schedule = [0.4, 1.2, 3.6, 10.8].map(Duration::from_secs_f64).to_vec();
        config.webhooks.disable_after = Duration::from_secs(3);
    })
    .await;
    let mut receiver = Receiver::start().await;
    let addr = receiver.addr;
    receiver.stop();
    let key = app.create_key(None).await;
    let (endpoint, secret) = register(&app, &key, &format!("http://{addr}/hook"), None).await;
    let created: Value =
        app.post_export(&key, &statement("ACC-1", "bank_transactions")).await.json().await.unwrap();
    // A worker of its own picks the retries up as they fall due.
    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT disabled_at IS NOT NULL FROM webhook_endpoints WHERE id = '{endpoint}'"))
        .await;
    worker.stop().await;

    let log = deliveries(&app, &key, &endpoint).await;
    let delivery = &log[0];
    assert_eq!(delivery["status"], "disabled", "{delivery}");
    let classes: Vec<&str> = delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error_class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["connect"; 4], "refused until the failure window (3 s) had passed: {delivery}");
    let gaps = attempt_gaps(delivery);
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "growing delays: {gaps:?}");
    assert!(gaps[0] >= 0.4 * 0.8 && gaps[1] >= 1.2 * 0.8 && gaps[2] >= 3.6 * 0.8, "{gaps:?}");
    let (_, shown) = api(&app, &key, "GET", &format!("/api/webhook-endpoints/{endpoint}"), None).await;
    assert_eq!(shown["enabled"], false);
    assert!(shown["disabled_at"].is_string() && shown["failing_since"].is_string(), "{shown}");
    let job: String = app.psql("SELECT state FROM jobs WHERE kind = 'deliver_webhook'").unwrap();
    assert_eq!(job.trim(), "completed", "the delivery ended with the endpoint's disabling");

    // While disabled, events are recorded for it, unsent.
    let receiver = Receiver::start_on(addr).await;
    let second: Value =
        app.post_export(&key, &statement("ACC-2", "bank_transactions")).await.json().await.unwrap();
    app.run_until_settled(&key, second["reference_id"].as_str().unwrap()).await;
    app.run_pending_jobs().await;
    assert!(receiver.received().is_empty());
    let log = deliveries(&app, &key, &endpoint).await;
    assert_eq!((log.len(), &log[0]["status"], log[0]["attempts"].as_i64()), (2, &json!("disabled"), Some(0)));
    let (status, _) = api(
        &app,
        &key,
        "POST",
        &format!("/api/webhook-endpoints/{endpoint}/deliveries/{}/resend", log[0]["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "no resend to a disabled endpoint");

    // Enabled again by its owner: nothing old is resent unless asked.
    let (status, enabled) =
        api(&app, &key, "POST", &format!("/api/webhook-endpoints/{endpoint}/enable"), None).await;
    assert_eq!((status, &enabled["enabled"]), (StatusCode::OK, &json!(true)), "{enabled}");
    assert!(enabled.get("failing_since").is_none());
    app.run_pending_jobs().await;
    assert!(receiver.received().is_empty(), "enabling alone resends nothing");
    let path = format!("/api/webhook-endpoints/{endpoint}/enable?resend=true");
    let (status, _) = api(&app, &key, "POST", &path, None).await;
    assert_eq!(status, StatusCode::OK);
    app.run_pending_jobs().await;
    let resent = receiver.wait_for(2, Duration::from_secs(10)).await;
    let events = verified(&secret, &resent);
    let mut ids: Vec<&str> = events.iter().map(|e| e["data"]["reference_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = [created["reference_id"].as_str().unwrap(), second["reference_id"].as_str().unwrap()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let log = deliveries(&app, &key, &endpoint).await;
    assert!(log.iter().all(|d| d["status"] == "succeeded"), "{log:?}");
}

#[tokio::test]
async fn a_delivery_whose_schedule_runs_out_fails_and_a_resend_sends_the_same_event_again() {
    let app = app_with(|config| config.webhooks.retry_schedule = vec![Duration::from_millis(500)]).await;
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(503));
    let key = app.create_key(None).await;
    let (endpoint, secret) = register(&app, &key, &receiver.url("/hook"), None).await;
    export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let log = deliveries(&app, &key, &endpoint).await;
    assert_eq!(log[0]["status"], "retrying", "{log:?}");
    assert!(log[0]["next_attempt_at"].is_string());
    app.wait_for("SELECT run_at <= now() FROM jobs WHERE kind = 'deliver_webhook'").await;
    app.run_pending_jobs().await;

    let log = deliveries(&app, &key, &endpoint).await;
    let delivery = &log[0];
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!((delivery["attempts"].as_i64(), delivery["response_status"].as_i64()), (Some(2), Some(503)));
    assert_eq!(delivery["error_class"], "http_status");
    assert_eq!(delivery["attempt_log"][1]["response_excerpt"], "answered 503");
    let job = app.psql("SELECT state || ' ' || last_error FROM jobs WHERE kind = 'deliver_webhook'").unwrap();
    assert_eq!(job.trim(), "failed webhook_delivery_failed");

    receiver.answer(Answer::Status(204));
    let path =
        format!("/api/webhook-endpoints/{endpoint}/deliveries/{}/resend", delivery["id"].as_str().unwrap());
    let (status, resent) = api(&app, &key, "POST", &path, None).await;
    assert_eq!((status, &resent["status"]), (StatusCode::ACCEPTED, &json!("pending")), "{resent}");
    let (status, _) = api(&app, &key, "POST", &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a delivery under way is not resent twice");
    app.run_pending_jobs().await;
    let received = receiver.wait_for(3, Duration::from_secs(10)).await;
    verified(&secret, &received);
    assert!(received.iter().all(|r| r.header("webhook-id") == received[0].header("webhook-id") && r.body == received[0].body));
    let log = deliveries(&app, &key, &endpoint).await;
    assert_eq!((log[0]["status"].as_str(), log[0]["attempts"].as_i64()), (Some("succeeded"), Some(3)));
}

#[tokio::test]
async fn endpoints_that_may_not_receive_webhooks_are_refused_at_registration() {
    // The production policy: https only, public addresses only.
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    for (url, status, says) in [
        ("http://hooks.example.com/x", 422, "must use https"),
        ("https://127.0.0.1/x", 422, "loopback"),
        // A name's resolution is not told (no probing of internal DNS): refused like any
        // name that does not resolve.
        ("https://localhost:8443/x", 422, "does not resolve to an address webhooks may be sent to"),
        ("https://[::ffff:127.0.0.1]/x", 422, "loopback"),
        ("https://[::1]/x", 422, "loopback"),
        ("https://169.254.169.254/latest/meta-data", 422, "link-local"),
        ("https://10.1.2.3/x", 422, "private"),
        ("https://100.64.0.1/x", 422, "shared (CGNAT)"),
        ("https://user:pass@hooks.example.com/x", 422, "user name or password"),
        ("https://no-such-host.invalid/x", 422, "does not resolve to an address webhooks may be sent to"),
        ("not a url", 400, "absolute https:// URL"),
    ] {
        let (got, problem) =
            api(&app, &key, "POST", "/api/webhook-endpoints", Some(json!({ "url": url }))).await;
        assert_eq!(got.as_u16(), status, "{url}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "url", "{problem}");
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains(says), "{url}: {problem}");
    }
    for (body, field) in [
        (json!({"url": "https://93.184.215.14/x", "event_types": []}), "event_types"),
        (json!({"url": "https://93.184.215.14/x", "event_types": ["export.started"]}), "event_types"),
        (
            json!({"url": "https://93.184.215.14/x", "event_types": ["export.failed", "export.failed"]}),
            "event_types",
        ),
        (json!({"url": "https://93.184.215.14/x", "secret": "mine"}), "secret"),
        (json!({"url": 7}), "url"),
    ] {
        let (got, problem) = api(&app, &key, "POST", "/api/webhook-endpoints", Some(body)).await;
        assert_eq!(
            (got, &problem["errors"][0]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{problem}"
        );
    }
    // A public address literal is accepted without any lookup.
    let (got, created) = api(
        &app,
        &key,
        "POST",
        "/api/webhook-endpoints",
        Some(json!({"url": "https://93.184.215.14/hooks"})),
    )
    .await;
    assert_eq!(got, StatusCode::CREATED, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        created["event_types"],
        json!(["export.completed", "export.failed", "export.cancelled", "export.expired"])
    );
}

#[tokio::test]
async fn deliveries_refuse_private_addresses_after_resolution_and_never_follow_redirects() {
    // Retries far off: each endpoint's first attempt is what this test looks at.
    let app = app_with(|config| config.webhooks.retry_schedule = vec![Duration::from_secs(3600)]).await;
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    receiver.answer(Answer::Redirect(elsewhere.url("/stolen")));
    let (key, strict_key) = (app.create_key(None).await, app.create_key(None).await);
    let (redirecting, _) = register(&app, &key, &receiver.url("/hook"), None).await;
    // Registered while the policy allowed them; sent by a worker whose policy does not allow
    // private addresses: an address literal, and a name that resolves to loopback.
    let (literal, _) = register(&app, &strict_key, &elsewhere.url("/literal"), None).await;
    let named_url = format!("http://localhost:{}/named", elsewhere.addr.port());
    let (named, _) = register(&app, &strict_key, &named_url, None).await;
    let mut strict = app.config.clone();
    strict.webhooks.policy = Policy { allow_http: true, allow_private: false };
    app.post_export(&strict_key, &statement("ACC-2", "bank_transactions")).await;
    TestApp::runner_for(&strict, TestApp::worker_config()).run_pending().await.unwrap();
    export(&app, &key, &statement("ACC-1", "bank_transactions")).await;

    let redirect = &deliveries(&app, &key, &redirecting).await[0]["attempt_log"][0];
    assert_eq!(
        (redirect["error_class"].as_str(), redirect["response_status"].as_i64()),
        (Some("redirect"), Some(302))
    );
    for endpoint in [literal, named] {
        let attempt = &deliveries(&app, &strict_key, &endpoint).await[0]["attempt_log"][0];
        assert_eq!(attempt["error_class"], "address_refused", "{attempt}");
        assert!(attempt.get("response_status").is_none());
    }
    assert_eq!(receiver.received().len(), 1, "the redirecting endpoint was asked once");
    assert!(
        elsewhere.received().is_empty(),
        "nothing reached the refused addresses, nor the redirect's target"
    );
    settle_retries(&app).await;
}

/// Fails the deliveries still waiting for a retry, so the test ends with nothing queued.
async fn settle_retries(app: &TestApp) {
    app.psql("UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE state = 'retryable'").unwrap();
}

#[tokio::test]
async fn answers_are_read_at_most_4_kib_so_a_huge_or_endless_body_costs_nothing() {
    let app = app_with(|config| config.webhooks.timeout = Duration::from_secs(20)).await;
    let huge = Receiver::start().await;
    huge.answer(Answer::Big(10 * 1024 * 1024));
    let endless = Receiver::start().await;
    endless.answer(Answer::Stall { declared: 10 * 1024 * 1024, sent: 64 * 1024 });
    let key = app.create_key(None).await;
    let (to_huge, _) = register(&app, &key, &huge.url("/hook"), None).await;
    let (to_endless, _) = register(&app, &key, &endless.url("/hook"), None).await;
    let started = std::time::Instant::now();
    export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    assert!(started.elapsed() < Duration::from_secs(10), "no attempt waited for the rest of a body");
    for endpoint in [to_huge, to_endless] {
        let delivery = &deliveries(&app, &key, &endpoint).await[0];
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
        let excerpt = delivery["attempt_log"][0]["response_excerpt"].as_str().unwrap();
        assert_eq!(excerpt.len(), 512, "an excerpt is kept");
        assert!(delivery["latency_ms"].as_f64().unwrap() < 5000.0, "{delivery}");
    }
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_redelivers_the_same_event() {
    let app = app().await;
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Hang);
    let key = app.create_key(None).await;
    let (endpoint, secret) = register(&app, &key, &receiver.url("/hook"), None).await;
    let settings = [
        ("WEBHOOK_ALLOW_HTTP", "true".to_owned()),
        ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true".to_owned()),
        ("WEBHOOK_TIMEOUT_SECS", "60".to_owned()),
    ];
    let mut worker = WorkerProcess::start(&app, testkit::workspace_binary("statement-worker"), &settings);
    app.post_export(&key, &statement("ACC-1", "bank_transactions")).await;
    let first = receiver.wait_for(1, Duration::from_secs(30)).await;
    worker.signal("KILL");
    worker.wait();

    // Its lease (2 s) runs out; a worker rescues the job and sends the event again.
    receiver.answer(Answer::Status(200));
    let rescuer = app.runner(TestApp::worker_config()).spawn();
    let both = receiver.wait_for(2, Duration::from_secs(30)).await;
    rescuer.stop().await;
    assert_eq!(both[1].header("webhook-id"), first[0].header("webhook-id"), "the same event, at least once");
    assert_eq!(both[1].body, first[0].body, "the same bytes");
    verified(&secret, &both);
    let delivery = &deliveries(&app, &key, &endpoint).await[0];
    let classes: Vec<Value> =
        delivery["attempt_log"].as_array().unwrap().iter().map(|a| a["error_class"].clone()).collect();
    assert_eq!(classes, [json!("worker_lost"), Value::Null], "{delivery}");
    assert_eq!(delivery["status"], "succeeded");
}

#[tokio::test]
async fn a_key_manages_only_its_own_endpoints_and_every_change_is_audited() {
    let app = app().await;
    let receiver = Receiver::start().await;
    let (key, other) = (app.create_key(None).await, app.create_key(None).await);
    let (endpoint, _) =
        register(&app, &key, &receiver.url("/hook"), Some(&["export.expired", "export.completed"])).await;
    let (_, listed) = api(&app, &key, "GET", "/api/webhook-endpoints", None).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("secret").is_none(), "secrets are shown once");
    assert_eq!(items[0]["event_types"], json!(["export.completed", "export.expired"]));
    let (_, theirs) = api(&app, &other, "GET", "/api/webhook-endpoints", None).await;
    assert_eq!(theirs["items"], json!([]));
    for (method, path) in [
        ("GET", format!("/api/webhook-endpoints/{endpoint}")),
        ("DELETE", format!("/api/webhook-endpoints/{endpoint}")),
        ("POST", format!("/api/webhook-endpoints/{endpoint}/rotate-secret")),
        ("POST", format!("/api/webhook-endpoints/{endpoint}/enable")),
        ("GET", format!("/api/webhook-endpoints/{endpoint}/deliveries")),
    ] {
        let (status, problem) = api(&app, &other, method, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
    }
    let (status, problem) = api(&app, &key, "GET", "/api/webhook-endpoints/not-a-uuid", None).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (StatusCode::BAD_REQUEST, &json!("endpoint_id")));

    for i in 1..10 {
        register(&app, &key, &receiver.url(&format!("/{i}")), None).await;
    }
    let body = json!({ "url": receiver.url("/eleventh") });
    let (status, problem) = api(&app, &key, "POST", "/api/webhook-endpoints", Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "ten endpoints per key: {problem}");

    api(&app, &key, "POST", &format!("/api/webhook-endpoints/{endpoint}/rotate-secret"), None).await;
    api(&app, &key, "POST", &format!("/api/webhook-endpoints/{endpoint}/enable"), None).await;
    let (status, _) = api(&app, &key, "DELETE", &format!("/api/webhook-endpoints/{endpoint}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api(&app, &key, "GET", &format!("/api/webhook-endpoints/{endpoint}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.wait_for(&format!(
        "SELECT count(*) = 4 FROM audit_log WHERE target = 'webhook_endpoint:{endpoint}' AND outcome = 'success'"
    ))
    .await;
    let actions = app
        .psql(&format!("SELECT string_agg(action, ' ' ORDER BY seq) FROM audit_log WHERE target = 'webhook_endpoint:{endpoint}' AND outcome = 'success'"))
        .unwrap();
    assert_eq!(
        actions.trim(),
        "webhook_endpoint.create webhook_endpoint.rotate_secret webhook_endpoint.enable webhook_endpoint.delete"
    );
    let refused = app
        .psql(&format!("SELECT count(*) FROM audit_log WHERE target = 'webhook_endpoint:{endpoint}' AND outcome = 'not_found'"))
        .unwrap();
    assert_eq!(refused.trim(), "3", "another key's changes are recorded as not found");
    let details = app
        .psql("SELECT details::text FROM audit_log WHERE action = 'webhook_endpoint.create' LIMIT 1")
        .unwrap();
    assert!(details.contains("127.0.0.1") && !details.contains("whsec_"), "{details}");
}

#[tokio::test]
async fn a_deleted_endpoint_stops_its_pending_deliveries() {
    let app = app_with(|config| config.webhooks.retry_schedule = vec![Duration::from_secs(3600)]).await;
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(500));
    let key = app.create_key(None).await;
    let (endpoint, _) = register(&app, &key, &receiver.url("/hook"), None).await;
    export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    assert_eq!(deliveries(&app, &key, &endpoint).await[0]["status"], "retrying");
    let (status, _) = api(&app, &key, "DELETE", &format!("/api/webhook-endpoints/{endpoint}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let jobs = app.psql("SELECT state FROM jobs WHERE kind = 'deliver_webhook'").unwrap();
    assert_eq!(jobs.trim(), "cancelled", "its retry will not run");
    let left = app.psql("SELECT count(*) FROM webhook_deliveries").unwrap();
    assert_eq!(left.trim(), "0", "its log went with it");
}

#[tokio::test]
async fn an_operator_retrying_a_failed_delivery_job_sends_it_again() {
    // No retries: the first failed attempt fails the delivery.
    let app = app_with(|config| config.webhooks.retry_schedule = Vec::new()).await;
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(500));
    let key = app.create_key(None).await;
    let (endpoint, secret) = register(&app, &key, &receiver.url("/hook"), None).await;
    export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    assert_eq!(deliveries(&app, &key, &endpoint).await[0]["status"], "failed");

    receiver.answer(Answer::Status(200));
    let job: i64 =
        app.psql("SELECT id FROM jobs WHERE kind = 'deliver_webhook'").unwrap().trim().parse().unwrap();
    let mut db = app.pool.get().await.unwrap();
    let retried = shared::dashboard::retry_job(&mut db, job).await.unwrap();
    assert_eq!(retried, shared::dashboard::Retried::Now);
    assert_eq!(deliveries(&app, &key, &endpoint).await[0]["status"], "pending");
    app.run_pending_jobs().await;
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    verified(&secret, &received);
    let delivery = &deliveries(&app, &key, &endpoint).await[0];
    assert_eq!((delivery["status"].as_str(), delivery["attempts"].as_i64()), (Some("succeeded"), Some(2)));
}

#[tokio::test]
async fn the_webhooks_pages_show_endpoint_health_and_deliveries_and_an_operator_resends_one() {
    let app = app_with(|config| {
        config.webhooks.retry_schedule = [0.2].map(Duration::from_secs_f64).to_vec();
    })
    .await;
    let receiver = Receiver::start().await;
    let key = app.create_key(None).await;
    let (endpoint, secret) = register(&app, &key, &receiver.url("/private/token-abc123"), None).await;
    let done = export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    assert_eq!(done["status"], "COMPLETED");
    let first = receiver.wait_for(1, Duration::from_secs(10)).await;

    let admin = app.create_admin_key().await;
    let mut browser = testkit::dashboard::DashboardClient::signed_in(&app, &admin).await;
    let list = browser.get("/dashboard/webhooks").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(&format!("href=\"/dashboard/webhooks/{endpoint}\"")), "{}", list.body);
    assert!(list.body.contains("1 delivered"), "health of the last 24 hours: {}", list.body);
    assert!(!list.body.contains("token-abc123"), "a URL's path (a receiver's token) is never shown");
    let detail = browser.get(&format!("/dashboard/webhooks/{endpoint}")).await;
    assert!(detail.body.contains("export.completed") && detail.body.contains("HTTP 200"), "{}", detail.body);
    let delivery = deliveries(&app, &key, &endpoint).await[0]["id"].as_str().unwrap().to_owned();
    let resend = format!("/dashboard/webhook-deliveries/{delivery}/resend");
    assert!(detail.body.contains(&resend));

    // Resent from the dashboard: the same event, the same webhook-id, verified again; recorded.
    let posted = browser.post(&resend, &[]).await;
    assert_eq!(
        posted.location.as_deref(),
        Some(format!("/dashboard/webhooks/{endpoint}?notice=resent").as_str())
    );
    app.run_pending_jobs().await;
    let both = receiver.wait_for(2, Duration::from_secs(10)).await;
    verified(&secret, &both);
    assert_eq!(both[1].header("webhook-id"), first[0].header("webhook-id"));
    assert_eq!(both[1].body, first[0].body);
    let row = app.psql("SELECT actor_kind, outcome FROM audit_log WHERE action = 'webhook.resend'").unwrap();
    assert_eq!(row.trim(), "break_glass|success");

    // A disabled endpoint shows as such, with an Enable button that works.
    app.psql(&format!("UPDATE webhook_endpoints SET disabled_at = now(), failing_since = now() - interval '2 days' WHERE id = '{endpoint}'"))
        .unwrap();
    let detail = browser.get(&format!("/dashboard/webhooks/{endpoint}")).await;
    assert!(detail.body.contains("disabled"));
    let enable = format!("/dashboard/webhooks/{endpoint}/enable");
    assert!(detail.body.contains(&enable));
    let refused = browser.post(&resend, &[]).await;
    assert_eq!(
        refused.location.as_deref(),
        Some(format!("/dashboard/webhooks/{endpoint}?notice=disabled").as_str())
    );
    assert_eq!(browser.post(&enable, &[]).await.status, StatusCode::SEE_OTHER);
    let (_, shown) = api(&app, &key, "GET", &format!("/api/webhook-endpoints/{endpoint}"), None).await;
    assert_eq!(shown["enabled"], true, "{shown}");
    assert_eq!(browser.get("/dashboard/webhooks/not-a-uuid").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_binary_answer_is_recorded_and_the_delivery_succeeds_once() {
    let app = app().await;
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Bytes(b"ok\0\xff\x00binary"));
    let key = app.create_key(None).await;
    let (endpoint, _) = register(&app, &key, &receiver.url("/binary"), None).await;
    let done = export(&app, &key, &statement("ACC-1", "bank_transactions")).await;
    assert_eq!(done["status"], "COMPLETED");
    receiver.wait_for(1, Duration::from_secs(10)).await;
    app.run_pending_jobs().await;
    let log = deliveries(&app, &key, &endpoint).await;
    assert_eq!((&log[0]["status"], log[0]["attempts"].as_i64()), (&json!("succeeded"), Some(1)), "{log:?}");
    assert_eq!(receiver.received().len(), 1, "a 2xx is not sent again");
}
