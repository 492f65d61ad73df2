//! `/api/schedules` against the real API, Postgres and MariaDB: schedules created, read, listed,
//! changed, paused and deleted by their key (and nobody else's), refused with the problems an
//! export request gets, and one period re-run by its owner whatever became of its export. The
//! scheduler pass that makes the runs is the worker's own (`shared::schedules::scheduler`),
//! called here at a chosen time.

use serde_json::{Value, json};
use shared::{
    schedules::scheduler::{self, AccountDirectory, Settings},
    tables::{AccountsTable, TableRegistry, TableSpec},
};
use testkit::{StatusCode, TestApp};
use time::{Duration, OffsetDateTime};

/// The demo table; `broken_table`, whose source table does not exist (its exports fail for
/// good); `plain_table`, without statement mapping; `listed_table`, whose mapping names an
/// accounts table.
fn tables() -> TableRegistry {
    let good = TableRegistry::demo().get("bank_transactions").unwrap().clone();
    let broken =
        TableSpec { name: "broken_table".into(), source_table: Some("no_such_table".into()), ..good.clone() };
    let plain = TableSpec { name: "plain_table".into(), statement: None, ..good.clone() };
    let mut listed = TableSpec { name: "listed_table".into(), ..good.clone() };
    listed.statement.as_mut().unwrap().accounts = Some(AccountsTable {
        table: "accounts".into(),
        account_column: "id".into(),
        iban: None,
        bic: None,
        number: None,
        routing: None,
        name: Some("holder".into()),
        currency: None,
    });
    TableRegistry::new(vec![good, broken, plain, listed]).unwrap()
}

async fn app() -> TestApp {
    TestApp::spawn_with(tables()).await
}

async fn api(app: &TestApp, key: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let url = format!("{}{path}", app.base_url);
    let request = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
        "PATCH" => app.http.patch(url),
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

fn monthly(accounts: &[&str]) -> Value {
    json!({"accounts": accounts, "table_name": "bank_transactions", "frequency": "monthly", "day_of_month": 31})
}

async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, schedule) = api(app, key, "POST", "/api/schedules", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    schedule
}

/// The fields a problem names, in order.
fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect()
}

/// A scheduler pass at `now`, as the maintenance leader runs it.
async fn scheduler_pass(app: &TestApp, now: OffsetDateTime) -> scheduler::Report {
    struct NoDirectory;
    impl AccountDirectory for NoDirectory {
        async fn accounts(&self, table: &str) -> Result<Vec<String>, String> {
            Err(format!("no accounts table for {table} in this test"))
        }
    }
    let config = &app.config.schedules;
    let settings = Settings {
        batch: 100,
        max_batches: 5,
        backfill_days: config.backfill_days,
        retry_limit: config.retry_limit,
        retry_after: config.retry_after,
        defer: config.defer,
        max_outstanding: 100,
        max_attempts: app.config.export_max_attempts,
        reuse: config.reuse,
    };
    let mut db = app.pool.get().await.unwrap();
    scheduler::pass(&mut db, now, &settings, &NoDirectory).await.unwrap()
}

/// A daily UTC schedule of `account` on `table` that started three days ago, with its three
/// past periods asked for by a scheduler pass: its id, and the days of those periods, oldest
/// first.
async fn three_days_asked_for(app: &TestApp, key: &str, account: &str, table: &str) -> (String, Vec<String>) {
    let today = OffsetDateTime::now_utc().date();
    let days: Vec<String> = (1..=3).rev().map(|n| (today - Duration::days(n)).to_string()).collect();
    let body = json!({
        "accounts": [account], "table_name": table, "frequency": "daily", "time_zone": "UTC",
        "delay_minutes": 0, "starts_on": days[0],
    });
    let id = create(app, key, body).await["id"].as_str().unwrap().to_owned();
    let report = scheduler_pass(app, OffsetDateTime::now_utc()).await;
    assert_eq!((report.planned, report.asked), (3, 3), "{report:?}");
    (id, days)
}

async fn recent_runs(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let (status, schedule) = api(app, key, "GET", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    schedule["recent_runs"].as_array().unwrap().clone()
}

fn run_on<'a>(runs: &'a [Value], day: &str) -> &'a Value {
    runs.iter().find(|r| r["period_from"] == day).unwrap_or_else(|| panic!("no run on {day}: {runs:?}"))
}

async fn rerun(app: &TestApp, key: &str, id: &str, account: &str, day: &str) -> (StatusCode, Value) {
    let body = json!({"account_id": account, "period_from": day});
    api(app, key, "POST", &format!("/api/schedules/{id}/rerun"), Some(body)).await
}

#[tokio::test]
async fn a_schedule_is_created_read_listed_changed_and_deleted_by_its_key() {
    let app = app().await;
    let key = app.create_key(None).await;
    let body = json!({
        "name": "Month-end", "accounts": ["ACC-2", "ACC-1"], "table_name": "bank_transactions",
        "format": "camt.053", "frequency": "monthly", "day_of_month": 31, "time_zone": "Europe/Berlin",
        "starts_on": "2024-02-10",
    });
    let created = create(&app, &key, body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "Month-end");
    assert_eq!(created["accounts"], json!(["ACC-1", "ACC-2"]));
    assert_eq!(created["all_accounts"], false);
    assert_eq!(created["format"], "camt.053");
    assert_eq!(
        (created["frequency"].as_str(), created["day_of_month"].as_i64()),
        (Some("monthly"), Some(31))
    );
    assert!(created.get("weekday").is_none(), "{created}");
    assert_eq!(created["time_zone"], "Europe/Berlin");
    assert_eq!(created["delay_minutes"], 120, "the default delay: 02:00 local");
    assert_eq!(created["paused"], false);
    // The period holding Feb 10 of a schedule on the 31st: Jan 31 to Feb 28 (2024: 29).
    assert_eq!(created["next_period"], json!({"from": "2024-01-31", "to": "2024-02-28"}));
    // 02:00 in Berlin (UTC+1) on Feb 29.
    assert_eq!(created["next_due_at"], "2024-02-29T01:00:00Z");

    let (status, read) = api(&app, &key, "GET", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], created["id"]);
    assert_eq!(read["recent_runs"], json!([]), "no period has been asked for yet");

    let second = create(&app, &key, monthly(&["ACC-3"])).await;
    let (_, page) = api(&app, &key, "GET", "/api/schedules?limit=1", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], created["id"], "oldest first");
    assert!(page["items"][0].get("recent_runs").is_none(), "runs only on a schedule's own page");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = api(&app, &key, "GET", &format!("/api/schedules?limit=1&cursor={cursor}"), None).await;
    assert_eq!(rest["items"][0]["id"], second["id"]);
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    let (status, problem) =
        api(&app, &key, "GET", &format!("/api/schedules?cursor={}", uuid::Uuid::new_v4()), None).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["cursor"]));

    let change = json!({"name": "Renamed", "format": "csv", "delay_minutes": 0, "all_accounts": false, "accounts": ["ACC-9"]});
    let (status, changed) = api(&app, &key, "PATCH", &format!("/api/schedules/{id}"), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!((changed["name"].as_str(), changed["format"].as_str()), (Some("Renamed"), Some("csv")));
    assert_eq!(changed["accounts"], json!(["ACC-9"]));
    assert_eq!(changed["next_due_at"], "2024-02-28T23:00:00Z", "a new delay moves the next due time");
    assert_eq!(changed["frequency"], "monthly", "what was not named is unchanged");

    let (status, problem) = api(
        &app,
        &key,
        "PATCH",
        &format!("/api/schedules/{id}"),
        Some(json!({"frequency": "daily", "time_zone": "UTC", "colour": "red"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(fields(&problem), ["frequency", "time_zone", "colour"]);
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("fixed when a schedule is created"));

    let (status, _) = api(&app, &key, "DELETE", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = api(&app, &key, "GET", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["status"], 404);
    let (status, _) = api(&app, &key, "DELETE", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pausing_and_resuming_show_in_the_schedule() {
    let app = app().await;
    let key = app.create_key(None).await;
    let id = create(&app, &key, monthly(&["ACC-1"])).await["id"].as_str().unwrap().to_owned();
    let path = format!("/api/schedules/{id}");
    let (status, paused) = api(&app, &key, "PATCH", &path, Some(json!({"paused": true}))).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    let paused_at = paused["paused_at"].as_str().unwrap().to_owned();
    let (_, again) = api(&app, &key, "PATCH", &path, Some(json!({"paused": true}))).await;
    assert_eq!(again["paused_at"], paused_at.as_str(), "pausing a paused schedule keeps its time");
    let (_, read) = api(&app, &key, "GET", &path, None).await;
    assert_eq!(read["paused"], true);

    let (status, resumed) = api(&app, &key, "PATCH", &path, Some(json!({"paused": false}))).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false);
    assert!(resumed.get("paused_at").is_none(), "{resumed}");
}

#[tokio::test]
async fn another_keys_schedule_does_not_exist_for_a_key() {
    let app = app().await;
    let owner = app.create_key(None).await;
    let other = app.create_key(None).await;
    let id = create(&app, &owner, monthly(&["ACC-1"])).await["id"].as_str().unwrap().to_owned();
    let path = format!("/api/schedules/{id}");
    for (method, body) in [("GET", None), ("PATCH", Some(json!({"paused": true}))), ("DELETE", None)] {
        let (status, problem) = api(&app, &other, method, &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {problem}");
    }
    let (status, _) = rerun(&app, &other, &id, "ACC-1", "2024-01-31").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = api(&app, &other, "GET", "/api/schedules", None).await;
    assert_eq!(listed["items"], json!([]));
    let (_, read) = api(&app, &owner, "GET", &path, None).await;
    assert_eq!(read["paused"], false, "the other key changed nothing");
}

#[tokio::test]
async fn a_schedule_is_refused_with_the_problems_an_export_request_gets() {
    let app = app().await;
    let key = app.create_key(None).await;
    let refused = |body: Value| {
        let (app, key) = (&app, &key);
        async move {
            let (status, problem) = api(app, key, "POST", "/api/schedules", Some(body)).await;
            (status, problem)
        }
    };
    let with = |changes: Value| {
        let mut body = monthly(&["ACC-1"]);
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                body.as_object_mut().unwrap().remove(name);
            } else {
                body[name] = value.clone();
            }
        }
        body
    };

    let (status, problem) = refused(with(json!({"accounts": null}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["accounts"]), "neither: {problem}");
    let (status, problem) = refused(with(json!({"all_accounts": true}))).await;
    assert_eq!(
        (status, fields(&problem)),
        (StatusCode::BAD_REQUEST, vec!["all_accounts"]),
        "both: {problem}"
    );
    let (status, problem) = refused(with(json!({"frequency": "weekly", "day_of_month": null}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["weekday"]), "{problem}");
    let (status, problem) = refused(with(json!({"day_of_month": 32}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["day_of_month"]), "{problem}");
    let (status, problem) = refused(with(json!({"day_of_month": "1", "delay_minutes": 50000}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["day_of_month"]), "{problem}");
    let (status, problem) = refused(with(json!({"delay_minutes": 44641}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["delay_minutes"]), "{problem}");
    let (status, problem) = refused(with(json!({"time_zone": "Mars/Olympus"}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["time_zone"]), "{problem}");
    let (status, problem) = refused(with(json!({"starts_on": "1899-12-31"}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["starts_on"]), "{problem}");
    let (status, problem) = refused(with(json!({"table_name": "nope", "delay_minutes": -1}))).await;
    assert_eq!(
        (status, fields(&problem)),
        (StatusCode::BAD_REQUEST, vec!["table_name", "delay_minutes"]),
        "{problem}"
    );
    let (status, problem) = refused(with(json!({"accounts": ["ACC-1", "bad id"]}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["accounts"]), "{problem}");
    let (status, problem) = refused(with(json!({"name": "x".repeat(201)}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["name"]), "{problem}");

    // Well-formed, but this table cannot make a bank statement: 422, as for an export.
    let (status, problem) = refused(with(json!({"table_name": "plain_table", "format": "mt940"}))).await;
    assert_eq!((status, fields(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["format"]), "{problem}");
    let export = json!({"account_id": "ACC-1", "table_name": "plain_table", "date_from": "2024-01-01", "date_to": "2024-01-31", "format": "mt940"});
    let export_problem: Value = app.post_export(&key, &export).await.json().await.unwrap();
    assert_eq!(problem["errors"], export_problem["errors"], "the same words as an export's");
    // Every account of a table whose accounts cannot be listed.
    let (status, problem) = refused(with(json!({"accounts": null, "all_accounts": true}))).await;
    assert_eq!(
        (status, fields(&problem)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["all_accounts"]),
        "{problem}"
    );
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("statement.accounts"), "{problem}");
    let listed = create(
        &app,
        &key,
        with(json!({"accounts": null, "all_accounts": true, "table_name": "listed_table"})),
    )
    .await;
    assert_eq!((listed["all_accounts"].as_bool(), listed.get("accounts")), (Some(true), None));

    // A key restricted to accounts: only its own, as for an export; every account means its.
    let restricted = app.create_key(Some(&["ACC-1", "ACC-2"])).await;
    let (status, problem) =
        api(&app, &restricted, "POST", "/api/schedules", Some(monthly(&["ACC-1", "ACC-3"]))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let export = json!({"account_id": "ACC-3", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"});
    let export_problem: Value = app.post_export(&restricted, &export).await.json().await.unwrap();
    assert_eq!(problem["detail"], export_problem["detail"]);
    let all = create(&app, &restricted, with(json!({"accounts": null, "all_accounts": true}))).await;
    assert_eq!(all["all_accounts"], true, "{all}");
    let id = all["id"].as_str().unwrap();
    let (status, _) = api(
        &app,
        &restricted,
        "PATCH",
        &format!("/api/schedules/{id}"),
        Some(json!({"accounts": ["ACC-3"]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Wrong JSON types are 400s naming the field, never 500s.
    let (status, problem) =
        refused(json!({"accounts": "ACC-1", "table_name": 7, "frequency": "yearly"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(fields(&problem), ["accounts", "table_name", "frequency"]);
}

#[tokio::test]
async fn a_period_not_asked_for_yet_is_asked_for_by_a_rerun() {
    let app = app().await;
    let key = app.create_key(None).await;
    let id = create(&app, &key, monthly(&["ACC-1"])).await["id"].as_str().unwrap().to_owned();
    // A run the key's cap deferred: planned, no export yet.
    let db = app.pool.get().await.unwrap();
    db.execute(
        "INSERT INTO schedule_runs (schedule_id, account_id, period_from, period_to, due_at)
         VALUES ($1::text::uuid, 'ACC-1', '2024-01-31', '2024-02-28', now())",
        &[&id],
    )
    .await
    .unwrap();
    let (status, _) = rerun(&app, &key, &id, "ACC-1", "2023-12-31").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no run for that period");
    let (status, _) = rerun(&app, &key, &id, "ACC-2", "2024-01-31").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no run for that account");

    let (status, export) = rerun(&app, &key, &id, "ACC-1", "2024-01-31").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{export}");
    assert_eq!(export["status"], "PENDING");
    assert_eq!(
        (export["date_from"].as_str(), export["date_to"].as_str()),
        (Some("2024-01-31"), Some("2024-02-28"))
    );
    let runs = recent_runs(&app, &key, &id).await;
    assert_eq!(run_on(&runs, "2024-01-31")["export_id"], export["reference_id"]);
    let (status, problem) = rerun(&app, &key, &id, "ACC-1", "2024-01-31").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("under way"), "{problem}");
    app.run_pending_jobs().await;
}

#[tokio::test]
async fn a_failed_period_rerun_revives_the_same_export() {
    let app = app().await;
    let key = app.create_key(None).await;
    let (id, days) = three_days_asked_for(&app, &key, "ACC-1", "broken_table").await;
    app.run_pending_jobs().await;
    let runs = recent_runs(&app, &key, &id).await;
    let failed = run_on(&runs, &days[0]);
    assert_eq!(failed["status"], "FAILED", "{failed}");

    let (status, export) = rerun(&app, &key, &id, "ACC-1", &days[0]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{export}");
    assert_eq!(export["reference_id"], failed["export_id"], "the same export, revived");
    assert_eq!(export["status"], "PENDING");
    let runs = recent_runs(&app, &key, &id).await;
    assert_eq!(run_on(&runs, &days[0])["retries"], 0, "an owner's re-run is not one of the policy's retries");
    app.run_pending_jobs().await;
}

#[tokio::test]
async fn a_completed_period_is_not_rerun_and_a_cancelled_one_gets_a_new_export() {
    let app = app().await;
    let key = app.create_key(None).await;
    let (id, days) = three_days_asked_for(&app, &key, "ACC-1", "bank_transactions").await;
    let runs = recent_runs(&app, &key, &id).await;
    let cancelled = run_on(&runs, &days[2])["export_id"].as_str().unwrap().to_owned();
    assert_eq!(app.cancel_export(&key, &cancelled).await.status(), StatusCode::OK);
    app.run_pending_jobs().await;

    let (status, problem) = rerun(&app, &key, &id, "ACC-1", &days[0]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("already completed"), "{problem}");

    let (status, export) = rerun(&app, &key, &id, "ACC-1", &days[2]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{export}");
    assert_ne!(export["reference_id"], cancelled.as_str(), "a new export");
    assert_eq!(export["status"], "PENDING");
    let runs = recent_runs(&app, &key, &id).await;
    assert_eq!(run_on(&runs, &days[2])["export_id"], export["reference_id"]);
    app.run_pending_jobs().await;
    let (_, done) =
        api(&app, &key, "GET", &format!("/api/export/{}", export["reference_id"].as_str().unwrap()), None)
            .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}
