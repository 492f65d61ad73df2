//! Deduplication: identical requests share one export; `force_refresh` makes a new one.

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp};

fn request(force_refresh: bool) -> Value {
    json!({
        "account_id": "ACC-1", "table_name": "bank_transactions",
        "date_from": "2024-01-01", "date_to": "2024-01-31", "force_refresh": force_refresh
    })
}

async fn export_count(app: &TestApp) -> i64 {
    let db = app.pool.get().await.unwrap();
    db.query_one("SELECT count(*) FROM exports", &[]).await.unwrap().get(0)
}

async fn job_count(app: &TestApp) -> i64 {
    let db = app.pool.get().await.unwrap();
    db.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn an_identical_request_returns_the_same_export_marked_reused() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let first: Value = app.post_export(&key, &request(false)).await.json().await.unwrap();

    // Pending, then completed: both are reused.
    let second = app.post_export(&key, &request(false)).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["reference_id"], first["reference_id"]);
    assert_eq!(second["reused"], true);

    app.run_until_settled(&key, first["reference_id"].as_str().unwrap()).await;
    // A different spelling of the same request (default format, explicit false) is identical too.
    let same = json!({"account_id": "ACC-1", "table_name": "bank_transactions",
                      "date_from": "2024-01-01", "date_to": "2024-01-31", "format": "csv"});
    let third: Value = app.post_export(&key, &same).await.json().await.unwrap();
    assert_eq!(third["reference_id"], first["reference_id"]);
    assert_eq!(third["status"], "COMPLETED");
    assert_eq!(third["reused"], true);
    assert_eq!(export_count(&app).await, 1);
    assert_eq!(job_count(&app).await, 1, "a reused export enqueues nothing");
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_create_one_export() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let body = request(false);
    let responses = futures::future::join_all((0..50).map(|_| app.post_export(&key, &body))).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected status {other}: {}", response.text().await.unwrap()),
        }
        let body: Value = response.json().await.unwrap();
        ids.insert(body["reference_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one request created the export");
    assert_eq!(ids.len(), 1, "everyone got the same reference");
    assert_eq!(export_count(&app).await, 1);
    assert_eq!(job_count(&app).await, 1);
}

#[tokio::test]
async fn force_refresh_creates_a_new_export_and_later_requests_reuse_the_new_one() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let first: Value = app.post_export(&key, &request(false)).await.json().await.unwrap();
    app.run_until_settled(&key, first["reference_id"].as_str().unwrap()).await;

    let forced = app.post_export(&key, &request(true)).await;
    assert_eq!(forced.status(), StatusCode::ACCEPTED);
    let forced: Value = forced.json().await.unwrap();
    assert_ne!(forced["reference_id"], first["reference_id"]);
    assert_eq!(forced["reused"], false);

    let after: Value = app.post_export(&key, &request(false)).await.json().await.unwrap();
    assert_eq!(after["reference_id"], forced["reference_id"]);
    // The superseded export stays readable and downloadable.
    let old: Value =
        app.get_export(&key, first["reference_id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(old["status"], "COMPLETED");
    assert!(old["file_url"].is_string());
}

/// A request for ACC-1 from `from` to `to`.
fn period(from: time::Date, to: time::Date) -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions",
           "date_from": from.to_string(), "date_to": to.to_string()})
}

async fn move_snapshots(app: &TestApp, sql_set: &str, id: &str) {
    let db = app.pool.get().await.unwrap();
    db.execute(&format!("UPDATE exports SET snapshot_at = {sql_set} WHERE id::text = $1"), &[&id])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_period_younger_than_the_books_closed_horizon_is_reused_only_within_the_freshness_window() {
    // The test app's settings: books closed after 5 days, freshness window 5 minutes.
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let today = time::OffsetDateTime::now_utc().date();
    let days = time::Duration::days;
    // Ended two days before its snapshot: a back-dated correction may still land.
    let recent = period(today - days(32), today - days(2));
    // Ended ten days before: closed.
    let settled = period(today - days(40), today - days(10));
    let mut ids = Vec::new();
    for body in [&recent, &settled] {
        let created: Value = app.post_export(&key, body).await.json().await.unwrap();
        let id = created["reference_id"].as_str().unwrap().to_owned();
        assert_eq!(app.run_until_settled(&key, &id).await["status"], "COMPLETED");
        ids.push(id);
    }
    for (body, id) in [(&recent, &ids[0]), (&settled, &ids[1])] {
        let again: Value = app.post_export(&key, body).await.json().await.unwrap();
        assert_eq!(
            (again["reused"].as_bool(), again["reference_id"].as_str()),
            (Some(true), Some(id.as_str()))
        );
    }

    // Ten minutes on (moved back in the database rather than waited for).
    for id in &ids {
        move_snapshots(&app, "snapshot_at - interval '10 minutes'", id).await;
    }
    let recent_again: Value = app.post_export(&key, &recent).await.json().await.unwrap();
    assert_eq!(recent_again["reused"], false, "a young period is exported afresh: {recent_again}");
    let settled_again: Value = app.post_export(&key, &settled).await.json().await.unwrap();
    assert_eq!(settled_again["reused"], true, "a closed period is reused: {settled_again}");
    assert_eq!(settled_again["reference_id"], ids[1].as_str());
}

#[tokio::test]
async fn the_books_close_exactly_at_the_horizon() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let march = json!({"account_id": "ACC-1", "table_name": "bank_transactions",
                       "date_from": "2024-03-01", "date_to": "2024-03-31"});
    let created: Value = app.post_export(&key, &march).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    app.run_until_settled(&key, &id).await;

    // Snapshot on the fifth day after 31 March (UTC): closed, reused long after the window.
    move_snapshots(&app, "'2024-04-05 00:00:00+00'", &id).await;
    let again: Value = app.post_export(&key, &march).await.json().await.unwrap();
    assert_eq!((again["reused"].as_bool(), again["reference_id"].as_str()), (Some(true), Some(id.as_str())));
    // A second earlier, on the fourth day: not yet closed, so a new export.
    move_snapshots(&app, "'2024-04-04 23:59:59+00'", &id).await;
    let again: Value = app.post_export(&key, &march).await.json().await.unwrap();
    assert_eq!(again["reused"], false, "{again}");
}
