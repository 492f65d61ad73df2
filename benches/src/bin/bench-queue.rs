//! `make bench-queue`: how fast the Postgres job queue burns down work, against pgbench running
//! the very same claim and complete SQL on the same number of connections, in the same run.
//!
//! Prints `name: value` lines:
//! - `per_job_jobs_per_s`, `pgbench_per_job_tps`, `per_job_ratio_vs_pgbench`: claim 1 + complete 1;
//! - `batched_jobs_per_s`, `pgbench_batch100_jobs_per_s`, `batched_ratio_vs_pgbench`: claim 100 +
//!   complete 100 in one statement;
//! - `pickup_p50_ms`, `pickup_p99_ms`: a real worker (LISTEN/NOTIFY) picking up jobs inserted one
//!   by one into an idle queue (insert commit → claim, measured by Postgres's own clock);
//! - `idle_queries_per_s_per_worker`: statements an idle worker sends;
//! - `unheld_last_20000_jobs_per_s`, `held_last_20000_jobs_per_s`, `held_xmin_ratio`: the same
//!   per-job burn-down of `BENCH_HELD_JOBS` jobs without, then with, a `REPEATABLE READ`
//!   transaction holding its snapshot open on another connection to the same database (an
//!   analytics query, a stuck client): vacuum cannot remove what the queue leaves behind, and the
//!   ratio compares the last 20,000 jobs of the two runs, when the most is left behind.
//!
//! Settings: `BENCH_JOBS` (default 20000), `BENCH_CONNECTIONS` (default 4), `BENCH_PICKUPS` (200),
//! `BENCH_HELD_JOBS` (100000).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use benchkit::{figure, fresh_database, percentile, pgbench_sql, pgbench_tps};
use secrecy::SecretString;
use shared::{
    config::WorkerConfig,
    queue::{self, ClaimCursor, JobKind as _},
};
use worker::jobs::noop::Noop;

const LEASE: Duration = Duration::from_secs(30);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = env_usize("BENCH_JOBS", 20_000);
    let connections = env_usize("BENCH_CONNECTIONS", 4);
    let pickups = env_usize("BENCH_PICKUPS", 200);
    let held_jobs = env_usize("BENCH_HELD_JOBS", 100_000);
    let url = fresh_database("stmt_bench_queue").await?;
    let pool = shared::db::pool(&SecretString::from(url.clone()), connections + 4)?;
    println!("jobs: {jobs}");
    println!("connections: {connections}");

    // Per job: claim one, complete it.
    insert_noops(&pool, jobs).await?;
    let per_job = burn_down(&pool, connections, 1, jobs).await?;
    figure("per_job_jobs_per_s", per_job);

    // pgbench, same SQL, same connections: one transaction = claim one + complete it.
    reset(&pool).await?;
    insert_noops(&pool, jobs).await?;
    // The same parameterised statements as the service's, on the same session settings. Each
    // pgbench client claims from where its last claim stopped, as a worker does (its variables
    // `priority`, `run_at` and `id` are the last job claimed; at first, the head of the queue).
    let pgbench_url = benchkit::with_service_session(&url);
    let params = [":worker", ":lease", ":priority", ":run_at", ":id"];
    let script = format!(
        "\\set lease 30\n{}\\gset\n{}",
        pgbench_sql(&queue::claim_sql(1), &params).trim_end(),
        pgbench_sql(queue::COMPLETE_SQL, &[":id", ":attempt_token"])
    );
    let worker = ["-D", "worker=pgbench", "-D", "priority=-32768", "-D", "run_at=-infinity", "-D", "id=0"];
    let pgbench_per_job = pgbench_tps(&pgbench_url, &script, connections, jobs / connections, &worker)?;
    figure("pgbench_per_job_tps", pgbench_per_job);
    figure("per_job_ratio_vs_pgbench", per_job / pgbench_per_job);

    // Batched: claim 100, complete the 100 in one statement.
    reset(&pool).await?;
    insert_noops(&pool, jobs).await?;
    let batched = burn_down(&pool, connections, 100, jobs).await?;
    figure("batched_jobs_per_s", batched);

    reset(&pool).await?;
    insert_noops(&pool, jobs).await?;
    let script = format!(
        "\\set lease 30\n\
         WITH claimed AS ({}), \
              last AS (SELECT priority, run_at, id FROM claimed ORDER BY priority DESC, run_at DESC, id DESC LIMIT 1) \
         SELECT (SELECT array_agg(id) FROM claimed) AS ids, (SELECT array_agg(attempt_token) FROM claimed) AS tokens, \
                last.* FROM last\\gset\n{}",
        pgbench_sql(&queue::claim_sql(100), &params).trim_end(),
        pgbench_sql(queue::COMPLETE_MANY_SQL, &[":ids", ":tokens"])
    );
    let batches = jobs / 100;
    let pgbench_batch_tps = pgbench_tps(&pgbench_url, &script, connections, batches / connections, &worker)?;
    let pgbench_batched = pgbench_batch_tps * 100.0;
    figure("pgbench_batch100_jobs_per_s", pgbench_batched);
    figure("batched_ratio_vs_pgbench", batched / pgbench_batched);

    // Pickup latency and idle load with a real worker.
    reset(&pool).await?;
    let (p50, p99, idle_qps) = pickup_and_idle(&url, &pool, pickups).await?;
    figure("pickup_p50_ms", p50);
    figure("pickup_p99_ms", p99);
    figure("idle_queries_per_s_per_worker", idle_qps);

    // The queue under a held snapshot: the same worker-like burn-down (claim one, complete it)
    // without and with a transaction that holds back vacuum, compared over the last jobs.
    let window = HELD_WINDOW.min(held_jobs);
    reset(&pool).await?;
    insert_noops(&pool, held_jobs).await?;
    let unheld = burn_down(&pool, connections, 1, window).await?;
    reset(&pool).await?;
    insert_noops(&pool, held_jobs).await?;
    let holder = hold_snapshot(&url, &pool).await?;
    let held = burn_down(&pool, connections, 1, window).await?;
    holder.batch_execute("ROLLBACK").await?;
    figure(&format!("unheld_last_{window}_jobs_per_s"), unheld);
    figure(&format!("held_last_{window}_jobs_per_s"), held);
    figure("held_xmin_ratio", held / unheld);
    Ok(())
}

/// The jobs at the end of a held-snapshot run whose throughput is compared.
const HELD_WINDOW: usize = 20_000;

/// Opens a `REPEATABLE READ` transaction on a connection of its own and takes its snapshot (its
/// first SELECT), as a long analytics query or a client stuck in a transaction would: until it
/// ends, vacuum keeps every row version that snapshot might see. Checks that Postgres says so.
async fn hold_snapshot(url: &str, pool: &deadpool_postgres::Pool) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = shared::db::connect(&SecretString::from(url.to_owned())).await?;
    tokio::spawn(connection);
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM exports").await?;
    let holding: i64 = pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'idle in transaction'
               AND backend_xmin IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(holding == 1, "the held transaction has no snapshot in pg_stat_activity");
    Ok(client)
}

async fn insert_noops(pool: &deadpool_postgres::Pool, n: usize) -> anyhow::Result<()> {
    let db = pool.get().await?;
    db.execute(
        "INSERT INTO jobs (kind, args) SELECT $2, '{}'::jsonb FROM generate_series(1, $1::int)",
        &[&(n as i32), &Noop::KIND],
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE jobs").await?;
    Ok(())
}

async fn reset(pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let db = pool.get().await?;
    db.batch_execute("TRUNCATE jobs").await?;
    db.batch_execute("VACUUM ANALYZE jobs").await?;
    Ok(())
}

/// `connections` tasks claim `batch` at a time and complete them until the queue is empty.
/// Returns the jobs per second over the last `window` jobs (all of them: every job queued).
async fn burn_down(
    pool: &deadpool_postgres::Pool,
    connections: usize,
    batch: u32,
    window: usize,
) -> anyhow::Result<f64> {
    let queued: i64 = pool.get().await?.query_one("SELECT count(*) FROM jobs", &[]).await?.get(0);
    let queued = queued as usize;
    let window = window.min(queued);
    // Done so far across the tasks, and when the window began (`queued - window` jobs done).
    let progress = Arc::new(AtomicUsize::new(0));
    let window_start = Arc::new(Mutex::new((window == queued).then(Instant::now)));
    let tasks = (0..connections).map(|i| {
        let pool = pool.clone();
        let (progress, window_start) = (progress.clone(), window_start.clone());
        tokio::spawn(async move {
            let db = pool.get().await?;
            let worker = format!("bench-{i}");
            // As a worker claims: from where its last claim stopped, from the head once per poll.
            let mut cursor = ClaimCursor::new(WorkerConfig::default().poll_interval);
            let mut done = 0;
            loop {
                let claimed = queue::claim_from(&db, &worker, batch, LEASE, cursor.start()).await?;
                cursor.advance(&claimed);
                if claimed.is_empty() {
                    return anyhow::Ok(done);
                }
                if batch == 1 {
                    queue::complete(&db, claimed[0].id, claimed[0].token).await?;
                } else {
                    let ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
                    let tokens: Vec<uuid::Uuid> = claimed.iter().map(|j| j.token).collect();
                    queue::complete_many(&db, &ids, &tokens).await?;
                }
                done += claimed.len();
                let before = progress.fetch_add(claimed.len(), Ordering::Relaxed);
                if before < queued - window && before + claimed.len() >= queued - window {
                    *window_start.lock().expect("not poisoned") = Some(Instant::now());
                }
            }
        })
    });
    let mut total = 0;
    for result in futures::future::join_all(tasks).await {
        total += result??;
    }
    anyhow::ensure!(total == queued, "burned {total} of {queued}");
    let started = window_start.lock().expect("not poisoned").expect("the window was reached");
    Ok(window as f64 / started.elapsed().as_secs_f64())
}

/// Starts a real worker on an idle queue, inserts jobs one at a time, and reads the pickup
/// latency (claim time − insert time) from Postgres. Then counts the idle worker's statements.
async fn pickup_and_idle(
    url: &str,
    pool: &deadpool_postgres::Pool,
    pickups: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let config = shared::config::Config {
        database_url: SecretString::from(url.to_owned()),
        ..shared::config::Config::from_env()?
    };
    let worker_config = WorkerConfig { concurrency: 4, ..WorkerConfig::default() };
    let ctx = worker::context(&config, &worker_config)?;
    let running = worker::runner::Runner::new(ctx, worker_config, config.database_url.clone()).spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = pool.get().await?;
    for _ in 0..pickups {
        Noop {}.enqueue_with_attempts(&db, 1).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while db.query_one("SELECT count(*) FROM jobs WHERE state <> 'completed'", &[]).await?.get::<_, i64>(0)
        > 0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = db
        .query(
            "SELECT extract(epoch FROM attempted_at - created_at)::float8 * 1000 FROM jobs ORDER BY 1",
            &[],
        )
        .await?;
    let latencies: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();

    // Idle: transactions committed in this database over 20 s, minus our own reads. Postgres
    // flushes an idle backend's statistics up to 10 s late, so let the busy phase settle first.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let window = Duration::from_secs(20);
    let commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    db.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    let before: i64 = db.query_one(commits, &[]).await?.get(0);
    tokio::time::sleep(window).await;
    db.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    let after: i64 = db.query_one(commits, &[]).await?.get(0);
    let idle_qps = (after - before - 2).max(0) as f64 / window.as_secs_f64();

    running.stop().await;
    Ok((percentile(&latencies, 50.0), percentile(&latencies, 99.0), idle_qps))
}
