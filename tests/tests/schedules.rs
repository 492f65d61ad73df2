//! Recurring statements end to end: schedules planned and asked for by the maintenance pass
//! (the real worker code, its scheduler on a clock the test drives), their exports produced by
//! the real worker, their completions delivered to the key's webhook endpoints and verified
//! with the `standardwebhooks` package from PyPI.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use shared::{
    api_keys,
    config::{Config, Retention},
    schedules::{
        calendar::Frequency,
        scheduler::Report,
        store::{self, Changes, NewSchedule, Schedule},
    },
    statement::ExportFormat,
    tables::{TableRegistry, TableSpec},
    time_zones::StatementZone,
    webhooks::address::Policy,
};
use testkit::{
    StatusCode, TestApp,
    webhooks::{Receiver, verify_with_standardwebhooks},
};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;
use worker::{jobs::JobContext, scheduling::SchedulerClock};

/// The scheduler's clock, as the test moves it.
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn at(rfc3339: &str) -> Self {
        Self(Arc::new(AtomicI64::new(instant(rfc3339).unix_timestamp())))
    }

    fn set(&self, rfc3339: &str) {
        self.0.store(instant(rfc3339).unix_timestamp(), Ordering::Relaxed);
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs() as i64, Ordering::Relaxed);
    }
}

fn instant(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn day(iso: &str) -> Date {
    Date::parse(iso, &time::format_description::well_known::Iso8601::DATE).unwrap()
}

/// A worker's context whose scheduler reads `clock`.
fn worker_on(app: &TestApp, clock: &Clock) -> JobContext {
    let mut ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    ctx.scheduler_clock = SchedulerClock::driven(clock.0.clone());
    ctx
}

/// One maintenance pass (as the leader runs it); what its scheduler did.
async fn tick(ctx: &JobContext) -> Report {
    let retention = Retention { jobs: Duration::from_secs(86_400), export_rows: None };
    worker::maintenance::run_once(ctx, retention).await.schedules
}

/// The demo table, `broken_table` (its source table does not exist: its exports fail for good)
/// and `ledger` (the demo table with an accounts table, for all-accounts schedules).
fn tables() -> TableRegistry {
    let demo = TableRegistry::demo().get("bank_transactions").unwrap().clone();
    let broken =
        TableSpec { name: "broken_table".into(), source_table: Some("no_such_table".into()), ..demo.clone() };
    let mut mapping = demo.statement.clone().unwrap();
    mapping.accounts =
        Some(serde_json::from_value(json!({"table": "accounts", "account_column": "account_id"})).unwrap());
    let ledger = TableSpec {
        name: "ledger".into(),
        source_table: Some("bank_transactions".into()),
        statement: Some(mapping),
        ..demo.clone()
    };
    TableRegistry::new(vec![demo, broken, ledger]).unwrap()
}

async fn app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_configured(tables(), |config| {
        config.webhooks.policy = Policy { allow_http: true, allow_private: true };
        adjust(config);
    })
    .await
}

/// A key (plaintext and id) for these accounts (`None`: all).
async fn key(app: &TestApp, accounts: Option<&[&str]>) -> (String, Uuid) {
    let plaintext = app.create_key(accounts).await;
    let db = app.pool.get().await.unwrap();
    let id = api_keys::authenticate(&db, &plaintext).await.unwrap().unwrap().id;
    (plaintext, id)
}

struct Plan<'a> {
    accounts: Option<&'a [&'a str]>,
    table: &'a str,
    frequency: Frequency,
    zone: &'a str,
    delay_minutes: u32,
    starts_on: &'a str,
}

impl Default for Plan<'_> {
    fn default() -> Self {
        Self {
            accounts: Some(&["ACC-1"]),
            table: "bank_transactions",
            frequency: Frequency::Daily,
            zone: "UTC",
            delay_minutes: 60,
            starts_on: "2026-01-01",
        }
    }
}

async fn schedule(app: &TestApp, key: Uuid, plan: Plan<'_>) -> Schedule {
    let db = app.pool.get().await.unwrap();
    let new = NewSchedule {
        api_key_id: key,
        name: "test".into(),
        accounts: plan.accounts.map(|a| a.iter().map(|s| s.to_string()).collect()),
        table_name: plan.table.into(),
        format: ExportFormat::CSV,
        frequency: plan.frequency,
        time_zone: StatementZone::parse(plan.zone).unwrap(),
        delay_minutes: plan.delay_minutes,
        starts_on: day(plan.starts_on),
    };
    store::create(&db, &new).await.unwrap()
}

/// The exports a schedule asked for: (account, first day, last day, export id), by period.
async fn scheduled_exports(app: &TestApp, schedule: Uuid) -> Vec<(String, Date, Date, Uuid)> {
    let db = app.pool.get().await.unwrap();
    let rows = db
        .query(
            "SELECT e.account_id, e.date_from, e.date_to, e.id FROM exports e
             JOIN export_requesters r ON r.export_id = e.id
             WHERE r.schedule_id = $1 ORDER BY e.date_from, e.account_id, e.created_at",
            &[&schedule],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
}

fn periods(exports: &[(String, Date, Date, Uuid)]) -> Vec<(String, String, String)> {
    exports.iter().map(|(a, f, t, _)| (a.clone(), f.to_string(), t.to_string())).collect()
}

#[tokio::test]
async fn each_period_of_each_account_is_asked_for_once_however_many_schedulers_run() {
    let app = app_with(|_| {}).await;
    let (_, key) = key(&app, None).await;
    let s = schedule(&app, key, Plan { accounts: Some(&["ACC-1", "ACC-2"]), ..Plan::default() }).await;
    // Jan 1 and Jan 2 are due (at 01:00 the next day); Jan 3 is due a second later.
    let clock = Clock::at("2026-01-04T00:59:59Z");
    let workers: Vec<JobContext> = (0..4).map(|_| worker_on(&app, &clock)).collect();

    // Four schedulers at once (a leader that froze and came back, say).
    let reports = futures::future::join_all(workers.iter().map(tick)).await;
    assert_eq!(reports.iter().map(|r| r.planned).sum::<u64>(), 4, "{reports:?}");
    let exports = scheduled_exports(&app, s.id).await;
    assert_eq!(
        periods(&exports),
        [
            ("ACC-1".into(), "2026-01-01".into(), "2026-01-01".into()),
            ("ACC-2".into(), "2026-01-01".into(), "2026-01-01".into()),
            ("ACC-1".into(), "2026-01-02".into(), "2026-01-02".into()),
            ("ACC-2".into(), "2026-01-02".into(), "2026-01-02".into()),
        ]
    );

    // Again at the same time: nothing new.
    let again = futures::future::join_all(workers.iter().map(tick)).await;
    assert!(again.iter().all(|r| r.planned == 0 && r.asked == 0), "{again:?}");
    assert_eq!(scheduled_exports(&app, s.id).await.len(), 4);

    clock.set("2026-01-04T01:00:00Z");
    futures::future::join_all(workers.iter().map(tick)).await;
    let exports = scheduled_exports(&app, s.id).await;
    assert_eq!(exports.len(), 6);
    assert_eq!(exports[4].1, day("2026-01-03"));
    // Each export is linked to its run, and is an ordinary export of the key.
    let db = app.pool.get().await.unwrap();
    let unlinked: i64 = db
        .query_one(
            "SELECT count(*) FROM schedule_runs WHERE schedule_id = $1 AND export_id IS NULL",
            &[&s.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unlinked, 0);
    let next = store::get(&db, key, s.id).await.unwrap().unwrap();
    assert_eq!(next.next_period.first, day("2026-01-04"));
    assert_eq!(next.next_due_at, instant("2026-01-05T01:00:00Z"));
}

#[tokio::test]
async fn a_scheduled_statement_is_an_ordinary_export_whose_completion_reaches_the_keys_webhook() {
    let app = app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let (plaintext, key) = key(&app, None).await;
    let response = app
        .http
        .post(format!("{}/api/webhook-endpoints", app.base_url))
        .bearer_auth(&plaintext)
        .json(&json!({"url": receiver.url("/hook")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let secret = response.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    app.source_exec(
        "INSERT INTO bank_transactions VALUES (1, 'ACC-1', '2024-01-05', '2024-01-05 10:00:00', 'Coffee', NULL, 3.50, 'EUR', 'R1')",
    )
    .await;
    let monthly = Frequency::parse("monthly", None, Some(1)).unwrap();
    let s = schedule(
        &app,
        key,
        Plan { frequency: monthly, delay_minutes: 0, starts_on: "2024-01-15", ..Plan::default() },
    )
    .await;
    let clock = Clock::at("2024-02-01T00:00:00Z");
    let worker = worker_on(&app, &clock);

    assert_eq!(tick(&worker).await.asked, 1);
    let exports = scheduled_exports(&app, s.id).await;
    assert_eq!(periods(&exports), [("ACC-1".into(), "2024-01-01".into(), "2024-01-31".into())]);
    let id = exports[0].3.to_string();
    let done = app.run_until_settled(&plaintext, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["row_count"], 1);
    // The key sees it among its exports.
    let listed: Value = app
        .http
        .get(format!("{}/api/exports", app.base_url))
        .bearer_auth(&plaintext)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains(&id), "{listed}");

    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    let events = verify_with_standardwebhooks(&secret, &received).unwrap();
    assert_eq!(events[0]["type"], "export.completed");
    assert!(events[0].to_string().contains(&id), "{}", events[0]);
}

#[tokio::test]
async fn missed_periods_are_caught_up_oldest_first_as_far_as_the_backfill_horizon() {
    let app = app_with(|config| config.schedules.backfill_days = 5).await;
    let (_, key) = key(&app, None).await;
    let s = schedule(&app, key, Plan::default()).await;
    // Every worker was down from Jan 1 to Jan 20 noon.
    let clock = Clock::at("2026-01-20T12:00:00Z");
    let worker = worker_on(&app, &clock);

    let report = tick(&worker).await;
    assert_eq!((report.planned, report.skipped_periods, report.asked), (5, 14, 5), "{report:?}");
    let db = app.pool.get().await.unwrap();
    // Asked for oldest first: their jobs were enqueued in period order.
    let rows = db
        .query(
            "SELECT e.date_from FROM exports e JOIN export_requesters r ON r.export_id = e.id
             WHERE r.schedule_id = $1 ORDER BY e.job_id",
            &[&s.id],
        )
        .await
        .unwrap();
    let days: Vec<String> = rows.iter().map(|r| r.get::<_, Date>(0).to_string()).collect();
    assert_eq!(days, ["2026-01-15", "2026-01-16", "2026-01-17", "2026-01-18", "2026-01-19"]);

    // A schedule created now with a start in the past backfills the same way.
    let late =
        schedule(&app, key, Plan { starts_on: "2025-12-01", accounts: Some(&["ACC-2"]), ..Plan::default() })
            .await;
    let report = tick(&worker).await;
    assert_eq!(report.planned, 5, "{report:?}");
    assert_eq!(scheduled_exports(&app, late.id).await[0].1, day("2026-01-15"));
}

#[tokio::test]
async fn periods_are_days_and_months_of_the_schedules_time_zone_across_dst_and_month_ends() {
    // The daily schedule catches up a month below: no deferral by the key's cap.
    let app = app_with(|config| config.schedules.max_outstanding_per_key = 1000).await;
    let (_, key) = key(&app, None).await;
    // Berlin: 2026-03-29 has 23 hours. Each day's statement is due at 02:00 local the day after.
    let daily = schedule(
        &app,
        key,
        Plan { zone: "Europe/Berlin", delay_minutes: 120, starts_on: "2026-03-28", ..Plan::default() },
    )
    .await;
    let clock = Clock::at("2026-03-29T00:59:59Z"); // 01:59:59 CET
    let worker = worker_on(&app, &clock);
    assert_eq!(tick(&worker).await.planned, 0);
    clock.set("2026-03-29T01:00:00Z"); // 02:00 CET: March 28 is due
    assert_eq!(tick(&worker).await.planned, 1);
    clock.set("2026-03-29T23:59:59Z"); // 01:59:59 CEST on the 30th
    assert_eq!(tick(&worker).await.planned, 0);
    clock.set("2026-03-30T00:00:00Z"); // 02:00 CEST: the 23-hour March 29 is due
    assert_eq!(tick(&worker).await.planned, 1);
    assert_eq!(
        periods(&scheduled_exports(&app, daily.id).await),
        [
            ("ACC-1".into(), "2026-03-28".into(), "2026-03-28".into()),
            ("ACC-1".into(), "2026-03-29".into(), "2026-03-29".into()),
        ]
    );
    let db = app.pool.get().await.unwrap();
    let zones: Vec<String> = db
        .query(
            "SELECT DISTINCT e.time_zone FROM exports e JOIN export_requesters r ON r.export_id = e.id
             WHERE r.schedule_id = $1",
            &[&daily.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(zones, ["Europe/Berlin"]);

    // Monthly on the 31st: months without one start on their last day.
    let monthly = schedule(
        &app,
        key,
        Plan {
            accounts: Some(&["ACC-2"]),
            frequency: Frequency::parse("monthly", None, Some(31)).unwrap(),
            zone: "America/New_York",
            delay_minutes: 0,
            starts_on: "2026-01-31",
            ..Plan::default()
        },
    )
    .await;
    clock.set("2026-04-30T04:00:00Z"); // midnight in New York (EDT): Mar 31 – Apr 29 ended
    tick(&worker).await;
    assert_eq!(
        periods(&scheduled_exports(&app, monthly.id).await),
        [
            ("ACC-2".into(), "2026-01-31".into(), "2026-02-27".into()),
            ("ACC-2".into(), "2026-02-28".into(), "2026-03-30".into()),
            ("ACC-2".into(), "2026-03-31".into(), "2026-04-29".into()),
        ]
    );
}

#[tokio::test]
async fn a_failed_period_is_retried_by_its_schedule_on_the_same_export_then_left_to_its_owner() {
    let app = app_with(|config| {
        config.schedules.retry_limit = 2;
        config.schedules.retry_after = Duration::from_secs(600);
    })
    .await;
    let (plaintext, key) = key(&app, None).await;
    // The failure is recorded on the database's clock: the scheduler's runs from there.
    let db = app.pool.get().await.unwrap();
    let now: OffsetDateTime = db.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let yesterday = (now.date() - time::Duration::days(1)).to_string();
    let s = schedule(
        &app,
        key,
        Plan { table: "broken_table", delay_minutes: 0, starts_on: &yesterday, ..Plan::default() },
    )
    .await;
    let clock = Clock(Arc::new(AtomicI64::new(now.unix_timestamp())));
    let worker = worker_on(&app, &clock);
    assert_eq!(tick(&worker).await.asked, 1);
    let exports = scheduled_exports(&app, s.id).await;
    let id = exports[0].3;
    let failed = app.run_until_settled(&plaintext, &id.to_string()).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");

    // Not before the policy's delay; then the same export, revived.
    assert_eq!(tick(&worker).await.retried, 0);
    clock.advance(Duration::from_secs(650));
    assert_eq!(tick(&worker).await.retried, 1);
    let revived = app.get_export(&plaintext, &id.to_string()).await.json::<Value>().await.unwrap();
    assert_eq!(revived["status"], "PENDING", "{revived}");
    assert_eq!(app.run_until_settled(&plaintext, &id.to_string()).await["status"], "FAILED");
    // The second retry waits twice as long (1,200 s after its failure, a few seconds after the
    // test's start).
    clock.advance(Duration::from_secs(500));
    assert_eq!(tick(&worker).await.retried, 0);
    clock.advance(Duration::from_secs(200));
    assert_eq!(tick(&worker).await.retried, 1);
    assert_eq!(app.run_until_settled(&plaintext, &id.to_string()).await["status"], "FAILED");
    // Out of retries: it stays failed for its owner to re-run.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(tick(&worker).await.retried, 0);
    let run = store::run(&db, s.id, "ACC-1", day(&yesterday)).await.unwrap().unwrap();
    assert_eq!((run.export_id, run.retries, run.attention_at), (Some(id), 2, None));
    assert_eq!(scheduled_exports(&app, s.id).await.len(), 1, "one export for the period, retried in place");
}

#[tokio::test]
async fn the_keys_cap_defers_scheduled_exports_and_never_refuses_them() {
    let app = app_with(|config| {
        config.schedules.max_outstanding_per_key = 1;
        config.schedules.defer = Duration::from_secs(60);
    })
    .await;
    let (plaintext, key) = key(&app, None).await;
    let s =
        schedule(&app, key, Plan { accounts: Some(&["ACC-1", "ACC-2", "ACC-3"]), ..Plan::default() }).await;
    let clock = Clock::at("2026-01-02T01:00:00Z");
    let worker = worker_on(&app, &clock);

    let report = tick(&worker).await;
    assert_eq!((report.planned, report.asked, report.deferred), (3, 1, 2), "{report:?}");
    // Deferred, not re-asked before the wait is over.
    assert_eq!(tick(&worker).await.asked, 0);
    let mut asked = 1;
    for _ in 0..4 {
        for (_, _, _, id) in scheduled_exports(&app, s.id).await {
            app.run_until_settled(&plaintext, &id.to_string()).await;
        }
        clock.advance(Duration::from_secs(61));
        asked += tick(&worker).await.asked;
    }
    assert_eq!(asked, 3);
    let exports = scheduled_exports(&app, s.id).await;
    let accounts: Vec<&str> = exports.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(accounts, ["ACC-1", "ACC-2", "ACC-3"]);
}

#[tokio::test]
async fn all_accounts_schedules_follow_the_accounts_table_and_the_keys_restriction_and_pauses() {
    let app = app_with(|_| {}).await;
    app.source_exec("CREATE TABLE accounts (account_id VARCHAR(32) PRIMARY KEY)").await;
    app.source_exec("INSERT INTO accounts VALUES ('ACC-1'), ('ACC-2'), ('ACC-3')").await;
    let (_, everything) = key(&app, None).await;
    let (_, restricted) = key(&app, Some(&["ACC-1", "ACC-9"])).await;
    let all = schedule(&app, everything, Plan { accounts: None, table: "ledger", ..Plan::default() }).await;
    let mine = schedule(&app, restricted, Plan { accounts: None, table: "ledger", ..Plan::default() }).await;
    let listed =
        schedule(&app, restricted, Plan { accounts: Some(&["ACC-1", "ACC-2"]), ..Plan::default() }).await;
    let paused = schedule(&app, everything, Plan { accounts: Some(&["ACC-5"]), ..Plan::default() }).await;
    {
        let db = app.pool.get().await.unwrap();
        let pause = Changes { paused: Some(true), ..Changes::default() };
        store::update(&db, everything, paused.id, &pause).await.unwrap().unwrap();
    }
    let clock = Clock::at("2026-01-02T01:00:00Z");
    let worker = worker_on(&app, &clock);
    tick(&worker).await;

    let accounts = |exports: Vec<(String, Date, Date, Uuid)>| -> Vec<String> {
        exports.into_iter().map(|e| e.0).collect()
    };
    assert_eq!(accounts(scheduled_exports(&app, all.id).await), ["ACC-1", "ACC-2", "ACC-3"]);
    assert_eq!(accounts(scheduled_exports(&app, mine.id).await), ["ACC-1", "ACC-9"]);
    // A key that may no longer read an account it listed gets nothing for it.
    assert_eq!(accounts(scheduled_exports(&app, listed.id).await), ["ACC-1"]);
    assert!(scheduled_exports(&app, paused.id).await.is_empty());

    // Resumed, it catches up on what came due while paused.
    clock.set("2026-01-04T01:00:00Z");
    let db = app.pool.get().await.unwrap();
    let resume = Changes { paused: Some(false), ..Changes::default() };
    store::update(&db, everything, paused.id, &resume).await.unwrap().unwrap();
    tick(&worker).await;
    let days: Vec<String> =
        scheduled_exports(&app, paused.id).await.iter().map(|e| e.1.to_string()).collect();
    assert_eq!(days, ["2026-01-01", "2026-01-02", "2026-01-03"]);
}

#[tokio::test]
async fn a_period_whose_statement_was_already_exported_still_reaches_the_keys_webhook() {
    let app = app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let (other, _) = key(&app, None).await;
    let (plaintext, key) = key(&app, None).await;
    let response = app
        .http
        .post(format!("{}/api/webhook-endpoints", app.base_url))
        .bearer_auth(&plaintext)
        .json(&json!({"url": receiver.url("/hook")}))
        .send()
        .await
        .unwrap();
    let secret = response.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    // Another key exported the same statement earlier: the schedule's period reuses it.
    let body = json!({"account_id": "ACC-1", "table_name": "bank_transactions",
                      "date_from": "2024-01-01", "date_to": "2024-01-31"});
    let created: Value = app.post_export(&other, &body).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    assert_eq!(app.run_until_settled(&other, &id).await["status"], "COMPLETED");

    let monthly = Frequency::parse("monthly", None, None).unwrap();
    let s = schedule(
        &app,
        key,
        Plan { frequency: monthly, delay_minutes: 0, starts_on: "2024-01-01", ..Plan::default() },
    )
    .await;
    let worker = worker_on(&app, &Clock::at("2024-02-01T00:00:00Z"));
    assert_eq!(tick(&worker).await.asked, 1);
    assert_eq!(scheduled_exports(&app, s.id).await[0].3.to_string(), id, "the completed export, reused");
    app.run_pending_jobs().await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    let events = verify_with_standardwebhooks(&secret, &received).unwrap();
    assert_eq!(events[0]["type"], "export.completed");
    assert!(events[0].to_string().contains(&id), "{}", events[0]);
    // Once: asking again (a second scheduler) sends nothing more.
    tick(&worker).await;
    app.run_pending_jobs().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_accounts_table_caught_empty_holds_the_period_back_instead_of_passing_it() {
    let app = app_with(|_| {}).await;
    app.source_exec("CREATE TABLE accounts (account_id VARCHAR(32) PRIMARY KEY)").await;
    let (_, key) = key(&app, None).await;
    let s = schedule(&app, key, Plan { accounts: None, table: "ledger", ..Plan::default() }).await;
    let clock = Clock::at("2026-01-02T01:00:00Z");
    let worker = worker_on(&app, &clock);
    assert_eq!(tick(&worker).await.planned, 0);

    // Reloaded; looked at again a little later, the period is there.
    app.source_exec("INSERT INTO accounts VALUES ('ACC-1'), ('ACC-2')").await;
    clock.advance(Duration::from_secs(301));
    assert_eq!(tick(&worker).await.planned, 2);
    assert_eq!(periods(&scheduled_exports(&app, s.id).await).len(), 2);
}
