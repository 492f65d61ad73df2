//! A long history: the overview's hourly rollups stay exact through every status change and
//! survive pruning and upgrades; listings, the queue page and `/metrics` read through indexes,
//! never a whole table; the API keys page is paged.

use std::time::Duration;

use deadpool_postgres::Object;
use secrecy::SecretString;
use shared::{
    config::Retention,
    dashboard,
    exports::{self, ExportStatus, ListFilter, stats},
    metrics, queue,
};
use testkit::{HISTORY_SQL, StatusCode, TestApp, dashboard::DashboardClient, pg_admin_url};
use time::OffsetDateTime;
use uuid::Uuid;

/// Loads `n` synthetic exports created between `newest` and `oldest` days ago.
async fn history(db: &Object, n: i64, newest: f64, oldest: f64, accounts: i64) {
    let keys: Vec<Uuid> =
        db.query("SELECT id FROM api_keys", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    db.execute(HISTORY_SQL, &[&keys, &newest, &oldest, &n, &accounts]).await.unwrap();
}

/// What `export_hourly` should hold, computed from scratch from `exports`, next to what it
/// holds once the pending changes are folded in: one text line per hour, so a mismatch shows
/// the hour.
async fn rollups_and_reference(db: &Object) -> (Vec<String>, Vec<String>) {
    stats::fold_changes(db).await.unwrap();
    let lines = |sql: &str| {
        let sql = sql.to_owned();
        async move { db.query(&sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>() }
    };
    let kept = lines(
        "SELECT concat_ws(' ', hour, pending, processing, completed, failed, cancelled, expired,
                          runs, run_rows, run_bytes, round(run_seconds::numeric, 3), run_histogram::text)
         FROM export_hourly
         -- An hour whose exports all moved to another hour holds nothing.
         WHERE (pending, processing, completed, failed, cancelled, expired, runs, run_rows, run_bytes, run_seconds,
                run_histogram) IS DISTINCT FROM (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, array_fill(0::bigint, ARRAY[100]))
         ORDER BY hour",
    )
    .await;
    let reference = lines(
        "WITH e AS (
             SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour, status, row_count, file_size,
                    CASE WHEN status IN ('COMPLETED', 'EXPIRED') AND started_at IS NOT NULL
                              AND completed_at IS NOT NULL
                         THEN greatest(extract(epoch FROM completed_at - started_at)::float8, 0) END AS ran
             FROM exports
         )
         SELECT concat_ws(' ', hour,
                    count(*) FILTER (WHERE status = 'PENDING'), count(*) FILTER (WHERE status = 'PROCESSING'),
                    count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'FAILED'),
                    count(*) FILTER (WHERE status = 'CANCELLED'), count(*) FILTER (WHERE status = 'EXPIRED'),
                    count(ran), coalesce(sum(row_count) FILTER (WHERE ran IS NOT NULL), 0),
                    coalesce(sum(file_size) FILTER (WHERE ran IS NOT NULL), 0),
                    round(coalesce(sum(ran), 0)::numeric, 3),
                    (SELECT array_agg((SELECT count(*) FROM e e2
                                       WHERE e2.hour = e.hour AND e2.ran IS NOT NULL
                                         AND export_run_bucket(e2.ran) = b) ORDER BY b)
                     FROM generate_series(1, 100) AS b)::text)
         FROM e GROUP BY hour ORDER BY hour",
    )
    .await;
    (kept, reference)
}

#[tokio::test]
async fn the_hourly_rollups_match_the_exports_whatever_happens_to_them() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    // Real exports through the service: one completed, one cancelled while pending.
    let body = serde_json::json!({"account_id": "ACC-1001", "table_name": "bank_transactions",
                                  "date_from": "2024-01-01", "date_to": "2024-01-31"});
    let created: serde_json::Value = app.post_export(&key, &body).await.json().await.unwrap();
    app.run_until_settled(&key, created["reference_id"].as_str().unwrap()).await;
    let other = serde_json::json!({"account_id": "ACC-1001", "table_name": "bank_transactions",
                                   "date_from": "2024-02-01", "date_to": "2024-02-29"});
    let pending: serde_json::Value = app.post_export(&key, &other).await.json().await.unwrap();
    assert_eq!(
        app.cancel_export(&key, pending["reference_id"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );

    // A history written from a session in a zone 5:45 off UTC: rollup hours are UTC hours.
    let db = app.pool.get().await.unwrap();
    db.batch_execute("SET TimeZone = 'Asia/Kathmandu'").await.unwrap();
    history(&db, 3_000, 0.0, 40.0, 50).await;
    // Every kind of change a status goes through, many rows at a time.
    db.batch_execute(
        "UPDATE exports SET status = 'PROCESSING', started_at = now() WHERE status = 'PENDING';
         UPDATE exports SET status = 'COMPLETED', completed_at = now() + interval '4 seconds', row_count = 9,
                            file_size = 99, file_key = 'k/' || id
         WHERE status = 'PROCESSING';
         UPDATE exports SET status = 'EXPIRED', file_key = NULL
         WHERE status = 'COMPLETED' AND created_at < now() - interval '20 days';
         UPDATE exports SET status = 'PENDING', completed_at = NULL, error_code = NULL
         WHERE status = 'FAILED' AND created_at > now() - interval '3 days';
         UPDATE exports SET rows_exported = rows_exported + 1;
         -- Rows a restore or a hand edit could leave: a completion without a start, an expired
         -- export completed again, an export moved to another hour.
         UPDATE exports SET started_at = NULL
         WHERE id IN (SELECT id FROM exports WHERE status = 'COMPLETED' ORDER BY id LIMIT 10);
         UPDATE exports SET status = 'COMPLETED'
         WHERE id IN (SELECT id FROM exports WHERE status = 'EXPIRED' ORDER BY id LIMIT 10);
         UPDATE exports SET created_at = created_at - interval '90 minutes', status = 'CANCELLED'
         WHERE id IN (SELECT id FROM exports WHERE status = 'COMPLETED' ORDER BY id DESC LIMIT 10);
         RESET TimeZone;",
    )
    .await
    .unwrap();
    // The overview's figures over its 720 hours, against the same figures computed exactly,
    // before the maintenance leader folds the changes in (it reads both).
    let pending: i64 = db.query_one("SELECT count(*) FROM export_hourly_changes", &[]).await.unwrap().get(0);
    assert!(pending > 0, "changes wait to be folded");
    let mut conn = app.pool.get().await.unwrap();
    let page = dashboard::overview(&mut conn, 5).await.unwrap();
    let exact = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'EXPIRED'),
                    count(*) FILTER (WHERE status = 'PENDING'), count(*),
                    avg(extract(epoch FROM completed_at - started_at)::float8)
                        FILTER (WHERE status IN ('COMPLETED', 'EXPIRED')),
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)::float8)
                        FILTER (WHERE status IN ('COMPLETED', 'EXPIRED'))
             FROM exports
             WHERE created_at >= date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '719 hours'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(page.stats.count(ExportStatus::Completed), exact.get::<_, i64>(0));
    assert_eq!(page.stats.count(ExportStatus::Expired), exact.get::<_, i64>(1));
    assert_eq!(page.stats.count(ExportStatus::Pending), exact.get::<_, i64>(2));
    assert_eq!(page.stats.created(), exact.get::<_, i64>(3));
    let avg: f64 = exact.get(4);
    assert!(
        (page.stats.avg_seconds.unwrap() - avg).abs() < 1e-6 * avg,
        "{:?} vs {avg}",
        page.stats.avg_seconds
    );
    let p95: f64 = exact.get(5);
    let ours = page.stats.p95_seconds.unwrap();
    assert!((ours / p95 - 1.0).abs() <= 0.095, "p95 {ours} against the exact {p95}");
    let per_day: i64 = page.daily.iter().map(|(_, n)| n).sum();
    let in_30_days: i64 = db
        .query_one(
            "SELECT count(*) FROM exports
             WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_day, in_30_days, "the daily chart counts every export of its 30 days");

    let (kept, reference) = rollups_and_reference(&db).await;
    assert!(kept.len() > 700, "the history spans hundreds of hours: {}", kept.len());
    assert_eq!(kept, reference);
    let left: i64 = db.query_one("SELECT count(*) FROM export_hourly_changes", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "every change folded");
}

#[tokio::test]
async fn the_duration_buckets_are_read_back_as_postgres_draws_them() {
    let app = TestApp::spawn().await;
    let db = app.pool.get().await.unwrap();
    for b in 1..=100 {
        let start = stats::bucket_start(b);
        let inside: i32 =
            db.query_one("SELECT export_run_bucket($1::float8 * 1.0001)", &[&start]).await.unwrap().get(0);
        assert_eq!(inside, b as i32, "just above where bucket {b} begins ({start} s)");
        if b > 1 {
            let below: i32 = db
                .query_one("SELECT export_run_bucket($1::float8 * 0.9999)", &[&start])
                .await
                .unwrap()
                .get(0);
            assert_eq!(below, b as i32 - 1, "just below where bucket {b} begins ({start} s)");
        }
    }
}

#[tokio::test]
async fn a_database_upgraded_with_history_shows_that_history() {
    let app = TestApp::spawn().await;
    let name = format!("stmt_upgrade_{}", Uuid::new_v4().simple());
    let admin = app.pool.get().await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("{}/{name}", pg_admin_url().rsplit_once('/').unwrap().0);
    {
        // The schema before the rollups (V9), with a year of history in it.
        mod before {
            refinery::embed_migrations!("../sql");
        }
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        before::migrations::runner()
            .set_target(refinery::Target::Version(9))
            .run_async(&mut client)
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO api_keys (id, name, prefix, key_hash, allowed_accounts)
                 VALUES (gen_random_uuid(), 'k', 'sk_x', sha256('k'), NULL)",
                &[],
            )
            .await
            .unwrap();
        let keys: Vec<Uuid> = vec![client.query_one("SELECT id FROM api_keys", &[]).await.unwrap().get(0)];
        client.execute(HISTORY_SQL, &[&keys, &0.0f64, &365.0f64, &2_000i64, &30i64]).await.unwrap();
    }
    shared::db::migrate(&SecretString::from(url.clone())).await.unwrap();
    let pool = shared::db::pool(&SecretString::from(url), 1).unwrap();
    let db = pool.get().await.unwrap();
    let (kept, reference) = rollups_and_reference(&db).await;
    assert!(kept.len() > 1_000, "{}", kept.len());
    assert_eq!(kept, reference);
    drop(db);
    drop(pool);
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
}

#[tokio::test]
async fn old_export_rows_are_pruned_when_asked_and_their_analytics_stay() {
    let app = TestApp::spawn().await;
    app.create_key(None).await;
    let db = app.pool.get().await.unwrap();
    history(&db, 2_000, 0.0, 400.0, 20).await;
    // One completed export whose file lives long is kept whatever its age.
    db.batch_execute(
        "UPDATE exports SET status = 'COMPLETED', file_key = 'kept', expires_at = now() + interval '1 year'
         WHERE id = (SELECT id FROM exports WHERE status = 'EXPIRED' ORDER BY created_at LIMIT 1)",
    )
    .await
    .unwrap();
    // Maintenance also expires completed exports whose time has come: none may come while the
    // test runs (a history made up to now has some due within seconds), or an expiry would
    // change the analytics this test compares.
    db.batch_execute(
        "UPDATE exports SET expires_at = now() + interval '1 day'
         WHERE status = 'COMPLETED' AND expires_at BETWEEN now() - interval '1 minute' AND now() + interval '1 day'",
    )
    .await
    .unwrap();
    let rollups = "SELECT array_agg(export_hourly::text ORDER BY hour) FROM export_hourly";
    stats::fold_changes(&db).await.unwrap();
    let before: Vec<String> = db.query_one(rollups, &[]).await.unwrap().get(0);
    let old = "coalesce(completed_at, created_at) < now() - interval '365 days'";
    let count = |condition: String| {
        let db = &db;
        async move {
            db.query_one(&format!("SELECT count(*) FROM exports WHERE {condition}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let prunable = count(format!("{old} AND status IN ('EXPIRED', 'FAILED', 'CANCELLED')")).await;
    let total = count("true".into()).await;
    assert!(prunable > 100, "{prunable}");
    // Two download links of every export (they go with it, or stay with it).
    db.batch_execute(
        "INSERT INTO download_links (id, export_id, via, api_key_id, issued_at, expires_at, backend)
         SELECT gen_random_uuid(), e.id, 'api', gen_random_uuid(), now(), now(), 'local'
         FROM exports e, generate_series(1, 2)",
    )
    .await
    .unwrap();

    // Without the setting nothing goes.
    let ctx = worker::context(&app.config, &TestApp::worker_config()).unwrap();
    let keep = Retention { jobs: Duration::from_secs(86_400), export_rows: None };
    assert_eq!(worker::maintenance::run_once(&ctx, keep).await.pruned_exports, 0);
    assert_eq!(count("true".into()).await, total);

    let year = Retention { export_rows: Some(Duration::from_secs(365 * 86_400)), ..keep };
    let report = worker::maintenance::run_once(&ctx, year).await;
    assert_eq!(report.pruned_exports, prunable as u64);
    assert_eq!(count("true".into()).await, total - prunable);
    assert_eq!(count(format!("{old} AND status IN ('EXPIRED', 'FAILED', 'CANCELLED')")).await, 0);
    assert_eq!(count("file_key = 'kept'".into()).await, 1, "a downloadable export is never pruned");
    let links =
        db.query_one("SELECT count(*), count(DISTINCT export_id) FROM download_links", &[]).await.unwrap();
    assert_eq!((links.get::<_, i64>(0), links.get::<_, i64>(1)), (2 * (total - prunable), total - prunable));
    let orphans = "SELECT count(*) FROM download_links l WHERE NOT EXISTS (SELECT 1 FROM exports e WHERE e.id = l.export_id)";
    assert_eq!(db.query_one(orphans, &[]).await.unwrap().get::<_, i64>(0), 0, "pruned with their exports");
    stats::fold_changes(&db).await.unwrap();
    let after: Vec<String> = db.query_one(rollups, &[]).await.unwrap().get(0);
    assert_eq!(after, before, "the analytics of pruned exports stay");
}

/// A statistics counter read by `sql`, with this session's statistics flushed first.
async fn statistic(db: &Object, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
    db.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
    db.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
    db.query_one(sql, params).await.unwrap().get(0)
}

/// Sequential scans of `table` this session has made so far.
async fn seq_scans(db: &Object, table: &str) -> i64 {
    statistic(db, "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1", &[&table]).await
}

#[tokio::test]
async fn listings_the_queue_and_metrics_never_read_a_whole_table() {
    let app = TestApp::spawn().await;
    app.create_key(None).await;
    let mut db = app.pool.get().await.unwrap();
    history(&db, 40_000, 0.0, 365.0, 2_000).await;
    db.batch_execute(
        "INSERT INTO jobs (kind, args, state, attempt, finished_at)
         SELECT 'export_statement', '{}', (ARRAY['completed', 'completed', 'failed', 'cancelled'])[1 + g % 4], 1,
                now() - g * interval '10 seconds'
         FROM generate_series(1, 20000) AS g;
         INSERT INTO jobs (kind, args) SELECT 'export_statement', '{}' FROM generate_series(1, 5);",
    )
    .await
    .unwrap();
    db.batch_execute("VACUUM ANALYZE exports").await.unwrap();
    db.batch_execute("VACUUM ANALYZE jobs").await.unwrap();
    let some = exports::list(&db, &ListFilter::default(), 300).await.unwrap();
    let (exports_before, jobs_before) = (seq_scans(&db, "exports").await, seq_scans(&db, "jobs").await);

    // Each more than five times, past the point where Postgres may switch to a generic plan.
    for _ in 0..7 {
        for filter in [
            ListFilter::default(),
            ListFilter { after: Some(some[250].id), ..ListFilter::default() },
            ListFilter { status: Some(ExportStatus::Pending), ..ListFilter::default() },
            ListFilter { status: Some(ExportStatus::Cancelled), ..ListFilter::default() },
            ListFilter { account_id: Some(some[0].account_id.clone()), ..ListFilter::default() },
            ListFilter {
                account_id: Some(some[0].account_id.clone()),
                status: Some(ExportStatus::Completed),
                ..ListFilter::default()
            },
            ListFilter {
                created_from: Some(OffsetDateTime::now_utc() - time::Duration::days(2)),
                ..ListFilter::default()
            },
            ListFilter {
                accounts: Some(vec![some[0].account_id.clone(), some[1].account_id.clone()]),
                ..ListFilter::default()
            },
        ] {
            exports::list(&db, &filter, 201).await.unwrap();
        }
        dashboard::overview(&mut db, 20).await.unwrap();
        dashboard::queue(&mut db, 50).await.unwrap();
        metrics::queue_snapshot(&db, Duration::from_secs(60)).await.unwrap();
    }
    assert_eq!(seq_scans(&db, "exports").await, exports_before, "a listing or the overview scanned exports");
    assert_eq!(seq_scans(&db, "jobs").await, jobs_before, "the queue page or metrics scanned jobs");
}

#[tokio::test]
async fn the_claim_keeps_its_generic_plan_and_sessions_do_not_jit() {
    let app = TestApp::spawn().await;
    let db = app.pool.get().await.unwrap();
    assert_eq!(db.query_one("SHOW jit", &[]).await.unwrap().get::<_, String>(0), "off");
    assert_eq!(db.query_one("SHOW plan_cache_mode", &[]).await.unwrap().get::<_, String>(0), "auto");
    for _ in 0..10 {
        queue::claim(&db, "plan-check", 3, Duration::from_secs(30)).await.unwrap();
    }
    let row = db
        .query_one(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            &[&queue::claim_sql(3)],
        )
        .await
        .unwrap();
    let (generic, custom): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        generic >= 5 && custom <= 5,
        "generic {generic}, custom {custom}: the claim is planned on every call"
    );
}

#[tokio::test]
async fn every_filter_combination_lists_what_filtering_everything_would() {
    let app = TestApp::spawn().await;
    app.create_key(None).await;
    let db = app.pool.get().await.unwrap();
    history(&db, 400, 0.0, 10.0, 6).await;
    db.batch_execute(
        "UPDATE exports SET table_name = 'ledger' WHERE account_id IN ('ACC-00001', 'ACC-00003')",
    )
    .await
    .unwrap();
    let everything = exports::list(&db, &ListFilter::default(), 1_000).await.unwrap();
    assert_eq!(everything.len(), 400);
    let middle = everything[200].created_at;
    for combination in 0..64u32 {
        let on = |bit: u32| combination & (1 << bit) != 0;
        let filter = ListFilter {
            status: on(0).then_some(ExportStatus::Completed),
            account_id: on(1).then(|| "ACC-00001".to_owned()),
            table_name: on(2).then(|| "ledger".to_owned()),
            created_from: on(3).then_some(everything[300].created_at),
            created_before: on(4).then_some(middle),
            accounts: on(5).then(|| vec!["ACC-00001".to_owned(), "ACC-00002".to_owned()]),
            requested_by: None,
            after: None,
        };
        let expected: Vec<Uuid> = everything
            .iter()
            .filter(|e| filter.status.is_none_or(|s| e.status == s))
            .filter(|e| filter.account_id.as_ref().is_none_or(|a| &e.account_id == a))
            .filter(|e| filter.table_name.as_ref().is_none_or(|t| &e.table_name == t))
            .filter(|e| filter.created_from.is_none_or(|from| e.created_at >= from))
            .filter(|e| filter.created_before.is_none_or(|before| e.created_at < before))
            .filter(|e| filter.accounts.as_ref().is_none_or(|a| a.contains(&e.account_id)))
            .map(|e| e.id)
            .collect();
        // Pages of 7, each continuing after the last one's final export.
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = exports::list(&db, &ListFilter { after, ..filter.clone() }, 7).await.unwrap();
            listed.extend(page.iter().map(|e| e.id));
            match page.last() {
                Some(last) if page.len() == 7 => after = Some(last.id),
                _ => break,
            }
        }
        assert_eq!(listed, expected, "filters {filter:?}");
    }
}

#[tokio::test]
async fn the_api_keys_page_shows_fifty_keys_at_a_time() {
    let app = TestApp::spawn().await;
    let admin = app.create_admin_key().await;
    for _ in 0..60 {
        app.create_key(None).await;
    }
    let mut browser = DashboardClient::signed_in(&app, &admin).await;
    let first = browser.get("/admin/api-keys").await;
    let rows = |body: &str| body.matches("<td class=\"mono\">sk_").count();
    assert_eq!(rows(&first.body), 50);
    let next = first.body.split("href=\"/admin/api-keys?after=").nth(1).expect("a link to older keys");
    let next = &next[..next.find('"').unwrap()];
    let second = browser.get(&format!("/admin/api-keys?after={next}")).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(rows(&second.body), 11, "the other ten clients and the admin");
    assert!(!second.body.contains("?after="), "the last page links no further");
    assert!(second.body.contains("href=\"/admin/api-keys\""), "and back to the newest");
    let all: Vec<&str> = [&first.body, &second.body]
        .iter()
        .flat_map(|b| b.split("<td class=\"mono\">").skip(1).map(|s| &s[..s.find('<').unwrap()]))
        .collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 61, "every key once");
}

#[tokio::test]
async fn status_changes_in_different_hours_never_wait_on_each_other() {
    let app = TestApp::spawn().await;
    app.create_key(None).await;
    let db = app.pool.get().await.unwrap();
    history(&db, 4, 0.0, 0.3, 4).await;
    // Two exports in an earlier hour (a, d), two in this one (b, c), none finished.
    let ids: Vec<Uuid> = db
        .query("SELECT id FROM exports ORDER BY created_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.batch_execute(
        "UPDATE exports SET status = 'PENDING', created_at = now() - interval '2 hours' WHERE id IN (SELECT id FROM exports ORDER BY created_at LIMIT 2);
         UPDATE exports SET status = 'PENDING', created_at = now() WHERE id NOT IN (SELECT id FROM exports ORDER BY created_at LIMIT 2);",
    )
    .await
    .unwrap();
    let (a, d, b, c) = (ids[0], ids[1], ids[2], ids[3]);
    let mut one = app.pool.get().await.unwrap();
    let mut two = app.pool.get().await.unwrap();
    let first = one.transaction().await.unwrap();
    let second = two.transaction().await.unwrap();
    let start = "UPDATE exports SET status = 'PROCESSING', started_at = now() WHERE id = $1";
    // Opposite hour orders: with a lock per hour, each would wait on the other.
    first.execute(start, &[&a]).await.unwrap();
    second.execute(start, &[&c]).await.unwrap();
    let both = async {
        let (b, d) = (
            [&b as &(dyn tokio_postgres::types::ToSql + Sync)],
            [&d as &(dyn tokio_postgres::types::ToSql + Sync)],
        );
        let (x, y) = tokio::join!(first.execute(start, &b), second.execute(start, &d));
        x.unwrap();
        y.unwrap();
    };
    tokio::time::timeout(Duration::from_millis(500), both)
        .await
        .expect("the two transactions waited on each other");
    first.commit().await.unwrap();
    second.commit().await.unwrap();
    let (kept, reference) = rollups_and_reference(&db).await;
    assert_eq!(kept, reference);
}

/// Index entries read from `exports`' indexes so far.
async fn index_entries_read(db: &Object) -> i64 {
    statistic(db, "SELECT sum(idx_tup_read)::bigint FROM pg_stat_user_indexes WHERE relname = 'exports'", &[])
        .await
}

#[tokio::test]
async fn a_rare_status_of_a_busy_account_is_found_without_reading_the_account() {
    let app = TestApp::spawn().await;
    app.create_key(None).await;
    let db = app.pool.get().await.unwrap();
    // One account with 30,000 exports, three of them pending; 10,000 of others.
    history(&db, 40_000, 0.0, 365.0, 4).await;
    db.batch_execute(
        "UPDATE exports SET account_id = 'ACC-BUSY' WHERE account_id <> 'ACC-00001';
         UPDATE exports SET status = 'PENDING', started_at = NULL, completed_at = NULL
         WHERE id IN (SELECT id FROM exports WHERE account_id = 'ACC-BUSY' ORDER BY id LIMIT 3);
         UPDATE exports SET status = 'COMPLETED', completed_at = started_at + interval '1 second'
         WHERE status IN ('PENDING', 'PROCESSING') AND account_id = 'ACC-00001';",
    )
    .await
    .unwrap();
    db.batch_execute("VACUUM ANALYZE exports").await.unwrap();
    let busy_and_pending = ListFilter {
        account_id: Some("ACC-BUSY".into()),
        status: Some(ExportStatus::Pending),
        ..ListFilter::default()
    };
    // Many calls, so a plan cache would have settled by the last ones.
    for _ in 0..10 {
        assert_eq!(exports::list(&db, &busy_and_pending, 201).await.unwrap().len(), 3);
    }
    let before = index_entries_read(&db).await;
    assert_eq!(exports::list(&db, &busy_and_pending, 201).await.unwrap().len(), 3);
    let read = index_entries_read(&db).await - before;
    assert!(read < 100, "{read} index entries read to find 3 exports");
}
