//! `make bench-schedules`: recurring statements asked for on time and exactly once, through
//! 30 simulated days, two workers and a leader change.
//!
//! A fresh database; `BENCH_SCHEDULES` (10,000) daily CSV schedules of the demo table, a
//! hundred per API key (each key restricted to its schedules' accounts), each schedule its
//! own account, half of them in UTC and half in Europe/Berlin (the 30 days span its change to
//! summer time), due 60 minutes after the local midnight that closes the day, starting on the
//! bench's day 0. The key cap on outstanding exports is lifted: nothing is deferred.
//!
//! Two workers' contexts (the service's code, in this process) share a scheduler clock the
//! bench drives, and each has its maintenance; nothing claims the export jobs (no runner), so
//! only maintenance runs. The clock advances a day at a time, to 02:00 UTC (past every due time
//! of the day before), and both maintenances tick at once until the leader's scheduler plans
//! and asks for nothing more. At day 15 the leader resigns and the other takes over; at day 7
//! both contexts also run a whole maintenance pass at once, as if both led (a leader that froze
//! and came back): the scheduler must stay exactly-once.
//!
//! Counted afterwards from `exports` and `export_requesters`, not from the scheduler's own
//! `schedule_runs`. Prints `name: value` lines: `periods_expected` (schedules × 30),
//! `periods_enqueued` (distinct (schedule, account, period) with an export recorded as asked
//! for by the schedule), `periods_enqueued_per_s` (over the wall time spent ticking),
//! `duplicates` (exports beyond one per (schedule, account, period), and beyond one per
//! identical statement: each schedule has its own account), `missed` (expected minus
//! enqueued) and `leader_changes`; also the concurrent passes' own counts. Exits non-zero
//! unless duplicates and missed are 0.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use benchkit::{figure, fresh_database};
use futures::{StreamExt as _, TryStreamExt as _};
use secrecy::SecretString;
use shared::{
    api_keys::{self, KeySpec, Role},
    config::{Config, ScheduleConfig, StorageConfig, WorkerConfig},
    schedules::{
        calendar::Frequency,
        store::{self, NewSchedule},
    },
    statement::ExportFormat,
    time_zones::StatementZone,
};
use time::{Date, Month, Time};
use worker::{maintenance::Maintenance, scheduling::SchedulerClock};

/// Days the clock advances through.
const DAYS: i64 = 30;
/// Schedules per API key.
const PER_KEY: usize = 100;
/// The day the leader resigns, and the day both contexts run a pass at once.
const LEADER_CHANGE_DAY: i64 = 15;
const CONCURRENT_PASS_DAY: i64 = 7;
/// Ticks per day before the bench gives up (one or two do a day's work).
const MAX_TICKS_PER_DAY: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The bench's day 0: eleven days before Berlin moves to summer time (a 23-hour day).
fn day0() -> Date {
    Date::from_calendar_date(2024, Month::March, 20).expect("a valid date")
}

/// 02:00 UTC on day `day`: past the due time of day `day - 1`'s period in both zones (01:00
/// UTC, or 01:00 Berlin time), before day `day`'s.
fn clock_at(day: i64) -> i64 {
    let date = day0() + time::Duration::days(day);
    let at = if day == 0 { Time::MIDNIGHT } else { Time::from_hms(2, 0, 0).expect("a valid time") };
    date.with_time(at).assume_utc().unix_timestamp()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::logging::init()?;
    let schedules = env_usize("BENCH_SCHEDULES", 10_000);
    let url = fresh_database("stmt_bench_schedules").await?;
    let pool = shared::db::pool(&SecretString::from(url.clone()), 4)?;
    let db = pool.get().await?;
    // A diagnosis (where an ask's time goes): `BENCH_SYNCHRONOUS_COMMIT=off` for this database.
    if let Ok(setting) = std::env::var("BENCH_SYNCHRONOUS_COMMIT") {
        ensure!(
            ["on", "off", "local"].contains(&setting.as_str()),
            "BENCH_SYNCHRONOUS_COMMIT: on, off or local"
        );
        db.batch_execute(&format!("ALTER DATABASE stmt_bench_schedules SET synchronous_commit = {setting}"))
            .await?;
    }

    let setup = Instant::now();
    let berlin = StatementZone::parse("Europe/Berlin").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let table = shared::tables::TableRegistry::demo();
    let table_name = table.iter().next().context("the demo registry has a table")?.name.clone();
    let mut news = Vec::with_capacity(schedules);
    for (k, first) in (0..schedules).step_by(PER_KEY).enumerate() {
        let accounts: Vec<String> =
            (first..(first + PER_KEY).min(schedules)).map(|i| format!("ACC-{i:06}")).collect();
        let spec = KeySpec {
            name: &format!("bench-{k}"),
            description: "",
            role: Role::Client,
            accounts: &accounts,
            all_accounts: false,
        };
        let (key, _) = api_keys::create(&db, &spec).await?;
        for (i, account) in accounts.into_iter().enumerate() {
            news.push(NewSchedule {
                api_key_id: key.id,
                name: String::new(),
                accounts: Some(vec![account]),
                table_name: table_name.clone(),
                format: ExportFormat::CSV,
                frequency: Frequency::Daily,
                time_zone: if i % 2 == 0 { StatementZone::utc() } else { berlin.clone() },
                delay_minutes: 60,
                starts_on: day0(),
            });
        }
    }
    // Pipelined on one connection.
    futures::stream::iter(news.iter().map(|new| store::create(&db, new)))
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!("[bench-schedules] {schedules} schedules created in {:.1} s", setup.elapsed().as_secs_f64());

    let storage = std::env::temp_dir().join(format!("stmt-bench-schedules-{}", std::process::id()));
    let config = Config {
        database_url: SecretString::from(url.clone()),
        database_direct_url: None,
        source_database_url: SecretString::from("mysql://unused:unused@127.0.0.1:1/unused".to_owned()),
        storage: StorageConfig::Local { root: storage.clone() },
        upload_part_size: 5 * 1024 * 1024,
        download_url_ttl: Duration::from_secs(300),
        signing_secret: None,
        tables: table,
        export_max_attempts: 5,
        export_retention: Duration::from_secs(30 * 86_400),
        formula_guard: true,
        webhooks: shared::config::WebhookConfig::default(),
        statement_time_zone: StatementZone::utc(),
        formats: shared::formats::FormatSettings::default(),
        schedules: ScheduleConfig { max_outstanding_per_key: i64::MAX / 2, ..ScheduleConfig::default() },
    };
    let worker_config = WorkerConfig::default();
    let retention = worker_config.retention;
    let clock = Arc::new(AtomicI64::new(clock_at(0)));
    let mut contexts = Vec::new();
    for _ in 0..2 {
        let mut ctx = worker::context(&config, &worker_config)?;
        ctx.scheduler_clock = SchedulerClock::driven(clock.clone());
        contexts.push(ctx);
    }
    let database_url = SecretString::from(url.clone());
    let mut workers = [
        Maintenance::new(contexts[0].clone(), database_url.clone(), retention),
        Maintenance::new(contexts[1].clone(), database_url, retention),
    ];

    // Worker 0 leads first: it ticks alone at day 0, when nothing is due yet.
    let commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    let commits_before: i64 = db.query_one(commits, &[]).await?.get(0);
    let ticking = Instant::now();
    let first = workers[0].tick().await.context("worker 0 leads on an empty database")?;
    ensure!(first.schedules.planned == 0, "nothing is due at day 0: {first:?}");
    let mut leader = 0;
    let mut leader_changes = 0;
    for day in 1..=DAYS {
        clock.store(clock_at(day), Ordering::Relaxed);
        let started = Instant::now();
        let (mut planned, mut asked) = (0, 0);
        if day == CONCURRENT_PASS_DAY {
            // The second pass starts once the first has planned the day (its plan would find
            // every due schedule locked or moved on): both then ask for the same runs at once.
            let period = day0() + time::Duration::days(day - 1);
            let planned_by_first = async {
                let sql = "SELECT count(*) FROM schedule_runs WHERE period_from = $1";
                while db.query_one(sql, &[&period]).await?.get::<_, i64>(0) < schedules as i64 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<_, anyhow::Error>(())
            };
            let (a, b) = tokio::join!(worker::maintenance::run_once(&contexts[0], retention), async {
                planned_by_first.await?;
                Ok::<_, anyhow::Error>(worker::maintenance::run_once(&contexts[1], retention).await)
            });
            let (a, b) = (a.schedules, b?.schedules);
            figure("concurrent_pass_planned", (a.planned + b.planned) as f64);
            figure("concurrent_pass_asked", (a.asked + b.asked) as f64);
            eprintln!("[bench-schedules] day {day}: both contexts' passes at once: {a:?} / {b:?}");
            planned += a.planned + b.planned;
            asked += a.asked + b.asked;
        }
        if day == LEADER_CHANGE_DAY {
            workers[leader].resign().await;
            let other = 1 - leader;
            let report =
                workers[other].tick().await.context("the other worker takes over after the resignation")?;
            planned += report.schedules.planned;
            asked += report.schedules.asked;
            eprintln!("[bench-schedules] day {day}: worker {leader} resigned, worker {other} leads");
            leader = other;
            leader_changes += 1;
        }
        let mut ticks = 0;
        loop {
            ticks += 1;
            if ticks > MAX_TICKS_PER_DAY {
                bail!("day {day}: the scheduler still had work after {MAX_TICKS_PER_DAY} ticks");
            }
            let [w0, w1] = &mut workers;
            let (r0, r1) = tokio::join!(w0.tick(), w1.tick());
            let (now_leading, report) = match (r0, r1) {
                (Some(r), None) => (0, r),
                (None, Some(r)) => (1, r),
                (Some(_), Some(_)) => bail!("day {day}: both workers lead"),
                // Leadership in flux (a session reconnecting): tick again.
                (None, None) => continue,
            };
            if now_leading != leader {
                leader = now_leading;
                leader_changes += 1;
            }
            planned += report.schedules.planned;
            asked += report.schedules.asked;
            ensure!(report.schedules.deferred == 0, "day {day}: the bench lifts the cap, yet {report:?}");
            if report.schedules.planned == 0 && report.schedules.asked == 0 {
                break;
            }
        }
        eprintln!(
            "[bench-schedules] day {day}: {planned} planned, {asked} asked in {ticks} ticks, {:.1} s (worker {leader} leads)",
            started.elapsed().as_secs_f64()
        );
    }
    let ticking = ticking.elapsed().as_secs_f64();
    // Statistics reach pg_stat_database within a second or so of a transaction's end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commits_after: i64 = db.query_one(commits, &[]).await?.get(0);
    eprintln!(
        "[bench-schedules] {} commits while ticking, {:.2} per period",
        commits_after - commits_before,
        (commits_after - commits_before) as f64 / (schedules as f64 * DAYS as f64)
    );

    // Counted from the exports and who asked for them, not from the scheduler's runs.
    let count = |sql: &'static str| {
        let db = &db;
        async move { Ok::<_, anyhow::Error>(db.query_one(sql, &[]).await?.get::<_, i64>(0)) }
    };
    let enqueued = count(
        "SELECT count(*) FROM (
             SELECT DISTINCT r.schedule_id, e.account_id, e.date_from
             FROM exports e
             JOIN export_requesters r ON r.export_id = e.id
             JOIN schedules s ON s.id = r.schedule_id
             WHERE e.account_id = ANY (s.accounts) AND e.date_to = e.date_from
               AND e.format = s.format AND e.time_zone = s.time_zone
         ) periods",
    )
    .await?;
    let by_schedule = count(
        "SELECT COALESCE(sum(n - 1), 0)::bigint FROM (
             SELECT count(*) AS n FROM exports e JOIN export_requesters r ON r.export_id = e.id
             WHERE r.schedule_id IS NOT NULL
             GROUP BY r.schedule_id, e.account_id, e.date_from
         ) g",
    )
    .await?;
    let by_statement = count(
        "SELECT COALESCE(sum(n - 1), 0)::bigint FROM (
             SELECT count(*) AS n FROM exports
             GROUP BY account_id, date_from, date_to, format, time_zone
         ) g",
    )
    .await?;
    let expected = (schedules as i64) * DAYS;
    let duplicates = by_schedule.max(by_statement);
    let missed = expected - enqueued;
    figure("schedules", schedules as f64);
    figure("periods_expected", expected as f64);
    figure("periods_enqueued", enqueued as f64);
    figure("periods_enqueued_per_s", enqueued as f64 / ticking);
    figure("ticking_s", ticking);
    figure("duplicates_by_schedule_period", by_schedule as f64);
    figure("duplicates_by_statement", by_statement as f64);
    figure("duplicates", duplicates as f64);
    figure("missed", missed as f64);
    figure("leader_changes", leader_changes as f64);
    let _ = std::fs::remove_dir_all(storage);
    ensure!(duplicates == 0 && missed == 0, "{duplicates} duplicates, {missed} missed");
    Ok(())
}
