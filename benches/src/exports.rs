//! What the export benchmarks (`bench-export`, `bench-formats`) share: the MariaDB source
//! database and generated rows kept between runs, a fresh service database, forced export
//! requests, the release worker binary with its peak memory, and waiting for completion.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use mysql_async::prelude::Queryable as _;
use secrecy::SecretString;
use shared::{
    statement::{AccountId, DateRange, ExportFormat, StatementRequest},
    tables::TableSpec,
};

use crate::fresh_database;

/// The source database the benchmarks load once and keep.
pub const SOURCE_DB: &str = "stmt_bench_source";

/// Alternating rounds per comparison (`BENCH_ROUNDS`, default 5, at least 1); each side's
/// best counts.
pub fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1)
}

/// Rows the main table shape holds (`BENCH_ROWS`, default 1,000,000).
pub fn bench_rows() -> u64 {
    std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// The MariaDB administrator URL (`SOURCE_ADMIN_URL`, default root on 127.0.0.1:3306).
pub fn source_admin_url() -> String {
    std::env::var("SOURCE_ADMIN_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The `host:port` part of a MySQL URL.
pub fn host_port(url: &str) -> anyhow::Result<String> {
    url.rsplit_once('@').map(|(_, hp)| hp.to_owned()).context("SOURCE_ADMIN_URL has no host")
}

/// Benchmark requests are forced (`force_refresh`): nothing is reused.
const REUSE_NEVER: shared::exports::ReusePolicy =
    shared::exports::ReusePolicy { freshness: Duration::ZERO, books_closed_after_days: 1 };

/// The source database and its SELECT-only user.
pub async fn prepare_source(pool: &mysql_async::Pool) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await.context("MariaDB at SOURCE_ADMIN_URL")?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {SOURCE_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .await?;
    conn.query_drop("CREATE USER IF NOT EXISTS 'statements_ro'@'%' IDENTIFIED BY 'statements_ro'").await?;
    conn.query_drop(format!("GRANT SELECT ON {SOURCE_DB}.* TO 'statements_ro'@'%'")).await?;
    Ok(())
}

/// Ten digits, for generating numbered rows with a cross join.
const DIGITS: &str = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                      UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";

/// A derived table `numbers` of `n` from 0 to at least `below - 1` (up to 9,999,999; filter
/// it with `WHERE n < below`): as few cross-joined digits as that needs.
pub fn numbers(below: u64) -> String {
    let mut digits = 1;
    while digits < 7 && 10_u64.pow(digits) < below {
        digits += 1;
    }
    let names = ["a", "b", "c", "e", "f", "g", "h"];
    let sum: Vec<String> = (0..digits as usize)
        .map(|i| {
            if i == 0 {
                format!("{}.d", names[i])
            } else {
                format!("{}*{}.d", 10_u64.pow(i as u32), names[i])
            }
        })
        .collect();
    let from: Vec<String> = names[..digits as usize].iter().map(|name| format!("{DIGITS} {name}")).collect();
    format!("(SELECT {} AS n FROM {}) numbers", sum.join(" + "), from.join(", "))
}

/// Whether `table` already holds exactly `rows` rows (a load is kept for later runs).
async fn loaded(conn: &mut mysql_async::Conn, table: &str, rows: u64) -> bool {
    let have: Option<u64> = conn.query_first(format!("SELECT count(*) FROM {table}")).await.unwrap_or(None);
    have == Some(rows)
}

/// A connection to the source database with `table` empty and ready to fill, (re)created
/// from `schema` (its CREATE TABLE), unless it already holds exactly `rows` rows: `None`, the
/// load of an earlier run is kept.
pub async fn table_to_load(
    pool: &mysql_async::Pool,
    table: &str,
    rows: u64,
    schema: &str,
) -> anyhow::Result<Option<mysql_async::Conn>> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(format!("USE {SOURCE_DB}")).await?;
    if loaded(&mut conn, table, rows).await {
        return Ok(None);
    }
    let program = std::env::current_exe()?.file_stem().map(|s| s.to_string_lossy().into_owned());
    eprintln!("[{}] loading {rows} {table} rows (once; kept for later runs)", program.unwrap_or_default());
    conn.query_drop(format!("DROP TABLE IF EXISTS {table}")).await?;
    conn.query_drop(schema).await?;
    Ok(Some(conn))
}

/// What one run of an export benchmark shares: the service database, the source, the storage
/// folder.
pub struct Bench {
    /// The service database.
    pub pool: deadpool_postgres::Pool,
    /// Its URL (for the worker).
    pub database_url: String,
    /// The source as the worker reads it (the SELECT-only user).
    pub source_url: String,
    /// The source's `host:port`.
    pub host_port: String,
    /// Where the worker writes its files (removed by [`Bench::finish`]).
    pub storage: PathBuf,
    /// The local database server's process, when the source runs on this machine.
    pub server: Option<u32>,
}

impl Bench {
    /// A fresh service database `database` (dropped and migrated) and an empty storage folder.
    pub async fn new(database: &str, host_port: &str) -> anyhow::Result<Self> {
        let database_url = fresh_database(database).await?;
        let pool = shared::db::pool(&SecretString::from(database_url.clone()), 4)?;
        let storage = std::env::temp_dir().join(format!("{database}-{}", std::process::id()));
        std::fs::create_dir_all(&storage)?;
        Ok(Self {
            pool,
            database_url,
            source_url: format!("mysql://statements_ro:statements_ro@{host_port}/{SOURCE_DB}"),
            host_port: host_port.to_owned(),
            storage,
            server: source_server_pid(),
        })
    }

    /// Waits (up to two minutes) until the database server is idle: after a load it flushes
    /// pages for a while, and that CPU would count against whichever side runs first.
    pub async fn settle(&self) {
        let Some(server) = self.server else { return };
        for _ in 0..120 {
            let before = cpu_seconds(server);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if cpu_seconds(server) - before < 0.03 {
                return;
            }
        }
    }

    /// Writes an `EXPORT_TABLES_FILE` holding `tables` (JSON table specs) into the storage
    /// folder; returns its path.
    pub fn tables_file(&self, tables: Vec<serde_json::Value>) -> anyhow::Result<PathBuf> {
        let file = self.storage.join("tables.json");
        std::fs::write(&file, serde_json::json!({ "tables": tables }).to_string())?;
        Ok(file)
    }

    /// Requests (forced: nothing is reused) one export of `accounts` each, over `range`, in
    /// `format`, through `shared::exports::request` as the API does; returns their ids.
    pub async fn request(
        &self,
        spec: &TableSpec,
        accounts: &[&str],
        range: DateRange,
        format: ExportFormat,
    ) -> anyhow::Result<Vec<uuid::Uuid>> {
        let mut db = self.pool.get().await?;
        let mut ids = Vec::new();
        for account in accounts {
            let request = StatementRequest {
                account: AccountId::parse(account)?,
                table: spec.name.clone(),
                range,
                format,
                time_zone: shared::time_zones::StatementZone::utc(),
            };
            ids.push(
                shared::exports::request(&mut db, &request, None, true, 1, REUSE_NEVER).await?.export.id,
            );
        }
        Ok(ids)
    }

    /// Removes the storage folder.
    pub fn finish(self) {
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

/// Exports that completed: seconds from the first start to the last completion (by Postgres's
/// clock), rows and file bytes in all.
pub struct Completed {
    /// From the first `started_at` to the last `completed_at`.
    pub seconds: f64,
    /// Rows exported, in all.
    pub rows: u64,
    /// File bytes, in all.
    pub bytes: u64,
}

/// Waits until every export of `ids` completed, sampling the worker's memory meanwhile; fails
/// (naming the error code and detail) as soon as one fails, or when the worker exits.
pub async fn wait_completed(
    pool: &deadpool_postgres::Pool,
    ids: &[uuid::Uuid],
    worker: &mut Worker,
) -> anyhow::Result<Completed> {
    let db = pool.get().await?;
    loop {
        if let Some(status) = worker.child.try_wait()? {
            bail!("the worker exited ({status}) before the exports completed");
        }
        worker.sample()?;
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'FAILED'),
                        extract(epoch FROM max(completed_at) - min(started_at))::float8,
                        sum(row_count)::bigint, sum(file_size)::bigint,
                        string_agg(format ||  ': ' || coalesce(error_code, '?') || ' '
                                   || coalesce(error_detail, ''), '; ') FILTER (WHERE status = 'FAILED')
                 FROM exports WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        if row.get::<_, i64>(1) > 0 {
            bail!("an export failed: {}", row.get::<_, Option<String>>(5).unwrap_or_default());
        }
        if row.get::<_, i64>(0) == ids.len() as i64 {
            let count = |i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            return Ok(Completed { seconds: row.get(2), rows: count(3), bytes: count(4) });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// User + system CPU seconds of a running process, from /proc (0 when it cannot be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&pid.to_string(), 11..13)
}

/// CPU seconds used by this process's finished (waited-for) children: `cutime` + `cstime`.
pub fn reaped_children_cpu_seconds() -> f64 {
    stat_seconds("self", 13..15)
}

/// Sums `/proc/<pid>/stat` tick fields (indexed after the parenthesised command name). Linux
/// reports them in USER_HZ, which is 100 on every architecture it exposes to user space.
fn stat_seconds(pid: &str, fields: std::ops::Range<usize>) -> f64 {
    const USER_HZ: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let values: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    values.get(fields).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()) / USER_HZ
}

/// The local database server's process, when the source runs on this machine.
fn source_server_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        matches!(comm.trim(), "mariadbd" | "mysqld").then_some(pid)
    })
}

/// The release worker binary, with its peak resident memory sampled from /proc.
pub struct Worker {
    /// The worker's process.
    pub child: std::process::Child,
    /// The highest `VmHWM` seen, in KiB.
    pub peak_kib: u64,
}

impl Worker {
    /// Starts the worker next to this binary (4 jobs at once, local storage), reading the
    /// table configuration from `tables_file` when given.
    pub fn start(bench: &Bench, tables_file: Option<&Path>) -> anyhow::Result<Self> {
        let binary: PathBuf = std::env::current_exe()?.with_file_name("statement-worker");
        let mut command = Command::new(&binary);
        command
            .env("DATABASE_URL", &bench.database_url)
            .env("SOURCE_DATABASE_URL", &bench.source_url)
            .env("LOCAL_STORAGE_DIR", &bench.storage)
            .env("WORKER_CONCURRENCY", "4")
            // Any free port: a `make run` may hold the default one.
            .env("WORKER_METRICS_BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(file) = tables_file {
            command.env("EXPORT_TABLES_FILE", file);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} (cargo build --release)", binary.display()))?;
        Ok(Self { child, peak_kib: 0 })
    }

    /// Reads the worker's `VmHWM` (its peak resident memory so far).
    pub fn sample(&mut self) -> anyhow::Result<()> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        if let Some(hwm) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
            let kib: u64 = hwm.trim().trim_end_matches("kB").trim().parse()?;
            self.peak_kib = self.peak_kib.max(kib);
        }
        Ok(())
    }

    /// Stops the worker; returns its peak RSS in KiB.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        self.sample()?;
        self.child.kill()?;
        self.child.wait()?;
        Ok(self.peak_kib)
    }
}

impl Drop for Worker {
    /// A benchmark that fails does not leave its worker running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
