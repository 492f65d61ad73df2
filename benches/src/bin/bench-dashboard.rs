//! `make bench-dashboard`: the dashboard, the export listing and `/metrics` on a year of history.
//!
//! Loads exports with SQL into a fresh database, in two steps, and measures the running API (a
//! release build of `statement-api serve`, as an operator runs it) over HTTP after each:
//! 1. the first 100,000 exports, spread over the last 36.5 days;
//! 2. 900,000 more from 365 to 36.5 days ago: 1,000,000 over a year at the same daily rate.
//!
//! The data: about 20,000 accounts, 40 keys, mixed statuses (exports older than the file
//! retention are EXPIRED, ~3 % FAILED, ~1 % CANCELLED, a handful PENDING or PROCESSING now),
//! realistic timings, per-hour deduplication counters, and a job row for every export of the job
//! retention window (7 days).
//!
//! Prints `name: value` lines (p95 in milliseconds):
//! - `overview_100k_p95_ms` (after step 1) and `overview_p95_ms` (after step 2): `/dashboard` with
//!   3 viewers loading it at once; `overview_growth` is the second over the first;
//! - `list_first_page_p95_ms`, `list_deep_cursor_p95_ms` (page 50), `list_filtered_p95_ms` (one
//!   account, one status): `GET /api/exports?limit=200` with an admin key;
//! - `queue_page_p95_ms` (`/dashboard/queue`) and `metrics_p95_ms` (`/metrics`, each scrape a
//!   fresh queue read);
//! - `load_*_s`: how long each load took (rollups included).
//!
//! The listing, queue and metrics figures are printed after both steps (`*_100k_*` after the
//! first). Settings: `BENCH_SAMPLES` (requests per figure, default 60).

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use benchkit::{figure, fresh_database, percentile};
use shared::api_keys::{self, KeySpec, Role};

/// Exports per day: 100,000 over 36.5 days, 1,000,000 over 365.
const FIRST: i64 = 100_000;
const ALL: i64 = 1_000_000;
const KEYS: usize = 40;
const ACCOUNTS: i64 = 20_000;
const VIEWERS: usize = 3;
/// The synthetic history the tests use too.
const HISTORY_SQL: &str = include_str!("../../../tests/src/history.sql");

fn samples() -> usize {
    std::env::var("BENCH_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(60)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = fresh_database("stmt_bench_dashboard").await?;
    let pool = shared::db::pool(&secrecy::SecretString::from(url.clone()), 2)?;
    let db = pool.get().await?;

    let mut key_ids = Vec::with_capacity(KEYS);
    let mut admin_key = None;
    for i in 0..KEYS {
        let spec = KeySpec {
            name: &format!("bench-{i}"),
            description: "",
            role: if i == 0 { Role::Admin } else { Role::Client },
            accounts: &[],
            all_accounts: true,
        };
        let (key, plaintext) = api_keys::create(&db, &spec).await?;
        if i == 0 {
            admin_key = Some(plaintext.plaintext);
        }
        key_ids.push(key.id);
    }
    let admin_key = admin_key.context("an admin key")?;
    let holder = shared::sessions::Holder::Key { api_key_id: key_ids[0], name: "bench-0".into() };
    let until = time::OffsetDateTime::now_utc() + Duration::from_secs(86_400);
    let role = shared::operators::DashboardRole::Admin;
    let session = shared::sessions::create(&db, holder, role, until, None).await?;
    let cookie = format!("stmt_session={}", session.token);

    let started = Instant::now();
    load(&db, &key_ids, FIRST, 0.0, 36.5).await?;
    figure("load_100k_s", started.elapsed().as_secs_f64());
    let api = Api::start(&url)?;
    let client = reqwest::Client::new();
    api.wait_ready(&client).await?;
    let probe = Probe { client, base: api.base.clone(), cookie, admin_key };
    let overview_100k = probe.overview().await?;
    figure("overview_100k_p95_ms", overview_100k);
    probe.the_rest("_100k").await?;

    let started = Instant::now();
    load(&db, &key_ids, ALL - FIRST, 36.5, 365.0).await?;
    figure("load_900k_s", started.elapsed().as_secs_f64());
    let overview = probe.overview().await?;
    figure("overview_p95_ms", overview);
    figure("overview_growth", overview / overview_100k);
    probe.the_rest("").await?;
    drop(api);
    Ok(())
}

/// Inserts `n` exports created evenly between `newest_days` and `oldest_days` ago (and their
/// jobs inside the job retention window, and the deduplication counters of those hours), then
/// analyzes.
async fn load(
    db: &deadpool_postgres::Object,
    keys: &[uuid::Uuid],
    n: i64,
    newest_days: f64,
    oldest_days: f64,
) -> anyhow::Result<()> {
    db.execute(HISTORY_SQL, &[&keys, &newest_days, &oldest_days, &n, &ACCOUNTS]).await?;
    // Jobs are kept for 7 days after they finish: one per export of that window.
    db.batch_execute(
        "WITH made AS (
             INSERT INTO jobs (kind, args, state, attempt, max_attempts, created_at, attempted_at,
                               finished_at, run_at)
             SELECT 'export_statement', jsonb_build_object('export_id', id),
                    CASE status WHEN 'PENDING' THEN 'available' WHEN 'PROCESSING' THEN 'running'
                                WHEN 'FAILED' THEN 'failed' WHEN 'CANCELLED' THEN 'cancelled'
                                ELSE 'completed' END,
                    CASE WHEN status = 'PENDING' THEN 0 ELSE 1 END, 5, created_at, started_at,
                    completed_at, created_at
             FROM exports
             WHERE job_id IS NULL AND (completed_at IS NULL OR completed_at > now() - interval '7 days')
             RETURNING id, (args ->> 'export_id')::uuid AS export_id
         )
         UPDATE exports SET job_id = made.id FROM made WHERE exports.id = made.export_id;
         UPDATE jobs SET lease_expires_at = now() + interval '1 hour', worker_id = 'bench',
                         attempt_token = gen_random_uuid()
         WHERE state = 'running';
         INSERT INTO export_reuse_hourly (hour, reused)
         SELECT date_trunc('hour', created_at), count(*) / 5 FROM exports GROUP BY 1
         ON CONFLICT (hour) DO UPDATE SET reused = EXCLUDED.reused;",
    )
    .await?;
    // What the maintenance leader does on its next pass: fold the analytics the trigger recorded.
    shared::exports::stats::fold_changes(db).await?;
    db.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// A release build of the API serving the bench database.
struct Api {
    child: Child,
    base: String,
}

impl Api {
    fn start(database_url: &str) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let base = format!("http://127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("stmt-bench-dashboard-{}", std::process::id()));
        let child = Command::new("target/release/statement-api")
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("API_BIND", format!("127.0.0.1:{port}"))
            .env("PUBLIC_BASE_URL", &base)
            .env("DASHBOARD_ADMIN_KEY_SIGN_IN", "true")
            .env("LOCAL_STORAGE_DIR", dir.join("exports"))
            .env(
                "SIGNING_SECRET",
                format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            )
            .env("RATE_LIMIT_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_BURST", "1000000")
            .stdout(Stdio::null())
            .spawn()
            .context("starting target/release/statement-api (make bench-dashboard builds it)")?;
        Ok(Self { child, base })
    }

    async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        for _ in 0..200 {
            if client.get(format!("{}/health", self.base)).send().await.is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the API did not start")
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Probe {
    client: reqwest::Client,
    base: String,
    cookie: String,
    admin_key: String,
}

impl Probe {
    /// Milliseconds one GET of `path` takes (the whole body read); fails unless it is a 200.
    async fn time(&self, path: &str) -> anyhow::Result<f64> {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .bearer_auth(&self.admin_key)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status != reqwest::StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(ms)
    }

    /// p95 of `samples()` sequential GETs of `path`, after one warm-up.
    async fn p95(&self, path: &str) -> anyhow::Result<f64> {
        self.time(path).await?;
        let mut ms = Vec::with_capacity(samples());
        for _ in 0..samples() {
            ms.push(self.time(path).await?);
        }
        Ok(sorted_p95(ms))
    }

    /// The overview's p95 with `VIEWERS` loading it at once.
    async fn overview(&self) -> anyhow::Result<f64> {
        self.time("/dashboard").await?;
        let each = samples().div_ceil(VIEWERS);
        let viewers = (0..VIEWERS).map(|_| async move {
            let mut ms = Vec::with_capacity(each);
            for _ in 0..each {
                ms.push(self.time("/dashboard").await?);
            }
            anyhow::Ok(ms)
        });
        let mut all = Vec::new();
        for ms in futures::future::join_all(viewers).await {
            all.extend(ms?);
        }
        Ok(sorted_p95(all))
    }

    /// The listing, queue page and metrics figures, each name ending in `suffix`.
    async fn the_rest(&self, suffix: &str) -> anyhow::Result<()> {
        figure(&format!("list_first_page{suffix}_p95_ms"), self.p95("/api/exports?limit=200").await?);
        let mut cursor = String::new();
        for _ in 1..50 {
            let page: serde_json::Value = self
                .client
                .get(format!("{}/api/exports?limit=200{cursor}", self.base))
                .bearer_auth(&self.admin_key)
                .send()
                .await?
                .json()
                .await?;
            let next = page["next_cursor"].as_str().context("page 50 exists")?;
            cursor = format!("&cursor={next}");
        }
        figure(
            &format!("list_deep_cursor{suffix}_p95_ms"),
            self.p95(&format!("/api/exports?limit=200{cursor}")).await?,
        );
        figure(
            &format!("list_filtered{suffix}_p95_ms"),
            self.p95("/api/exports?limit=200&account_id=ACC-01234&status=COMPLETED").await?,
        );
        figure(&format!("queue_page{suffix}_p95_ms"), self.p95("/dashboard/queue").await?);
        // /metrics reads the queue at most once a second: space the scrapes so each one reads.
        let mut ms = Vec::new();
        for _ in 0..samples().min(20) {
            tokio::time::sleep(Duration::from_millis(1_050)).await;
            ms.push(self.time("/metrics").await?);
        }
        figure(&format!("metrics{suffix}_p95_ms"), sorted_p95(ms));
        Ok(())
    }
}

fn sorted_p95(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    percentile(&ms, 95.0)
}
