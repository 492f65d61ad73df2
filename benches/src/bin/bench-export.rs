//! `make bench-export`: the export engine against the source database's own command-line dump.
//!
//! Loads `BENCH_ROWS` (default 1,000,000) generated rows for one account (and a quarter of that
//! for each of four more) into a MariaDB source, then in the same run:
//! - exports the big account with the real worker binary (release build, local storage, progress
//!   recording, formula guard and the overlapped upload stage all on) and dumps the same rows
//!   with `mariadb --quick --batch`;
//! - exports the four other accounts at once in one worker, against four concurrent CLI dumps.
//!
//! Prints `name: value` lines: `rows`, `rows_per_s`, `mb_per_s`, `peak_rss_mib` (the worker's
//! peak resident memory through the single exports), `mysql_cli_rows_per_s`,
//! `ratio_vs_mysql_cli`, `concurrent_rows_per_s`, `concurrent_mysql_cli_rows_per_s`,
//! `concurrent_ratio_vs_mysql_cli`, `concurrent_peak_rss_mib` (peak with four exports at once).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use benchkit::{figure, fresh_database};
use secrecy::SecretString;
use shared::{
    statement::{AccountId, DateRange, ExportFormat, StatementRequest},
    tables::TableRegistry,
};

const SOURCE_DB: &str = "stmt_bench_source";
/// Alternating rounds per comparison; each side's best counts.
const ROUNDS: usize = 5;
/// Benchmark requests are forced (`force_refresh`): nothing is reused.
const REUSE_NEVER: shared::exports::ReusePolicy =
    shared::exports::ReusePolicy { freshness: Duration::ZERO, books_closed_after_days: 1 };

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let small = rows / 4;
    let admin = std::env::var("SOURCE_ADMIN_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    load_source(&admin, rows, small).await?;
    let host_port = admin.rsplit_once('@').map(|(_, hp)| hp.to_owned()).context("SOURCE_ADMIN_URL")?;
    let source_url = format!("mysql://statements_ro:statements_ro@{host_port}/{SOURCE_DB}");
    let database_url = fresh_database("stmt_bench_export").await?;
    let pool = shared::db::pool(&SecretString::from(database_url.clone()), 4)?;
    let storage = std::env::temp_dir().join(format!("stmt-bench-export-{}", std::process::id()));
    std::fs::create_dir_all(&storage)?;
    println!("rows: {rows}");

    // Each comparison alternates our export and the CLI dump `ROUNDS` times and keeps each
    // side's best: a 2-core machine's background noise swings single runs by ±20 %.
    let mut worker = Worker::start(&database_url, &source_url, &storage)?;
    let server = source_server_pid();
    let (mut ours, mut mb, mut cli) = (0f64, 0f64, 0f64);
    let (mut worker_cpu, mut server_cpu_ours, mut client_cpu, mut server_cpu_cli) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        let ids = request(&pool, &["BENCH-1"]).await?;
        let (before, server_before) = (cpu_seconds(worker.child.id()), server.map(cpu_seconds));
        let (seconds, bytes) = wait_completed(&pool, &ids, &mut worker).await?;
        worker_cpu += cpu_seconds(worker.child.id()) - before;
        server_cpu_ours += server.map(cpu_seconds).unwrap_or(0.0) - server_before.unwrap_or(0.0);
        ours = ours.max(rows as f64 / seconds);
        mb = mb.max(bytes as f64 / seconds / 1e6);
        let server_before = server.map(cpu_seconds);
        let (seconds, cpu) = cli_dumps(&host_port, &["BENCH-1"], &storage)?;
        client_cpu += cpu;
        server_cpu_cli += server.map(cpu_seconds).unwrap_or(0.0) - server_before.unwrap_or(0.0);
        cli = cli.max(rows as f64 / seconds);
    }
    figure("rows_per_s", ours);
    figure("mb_per_s", mb);
    worker.sample()?;
    figure("peak_rss_mib", worker.peak_kib as f64 / 1024.0);
    figure("mysql_cli_rows_per_s", cli);
    figure("ratio_vs_mysql_cli", ours / cli);
    // CPU seconds per million rows (averaged over the rounds): ours against the CLI's, and
    // what the database server spent serving each. A client cheaper than the server per row
    // leaves the server as the limit.
    let per_mrow = |cpu: f64| cpu / ROUNDS as f64 / (rows as f64 / 1e6);
    figure("worker_cpu_s_per_mrow", per_mrow(worker_cpu));
    figure("mysql_cli_cpu_s_per_mrow", per_mrow(client_cpu));
    if server.is_some() {
        figure("server_cpu_s_per_mrow_ours", per_mrow(server_cpu_ours));
        figure("server_cpu_s_per_mrow_cli", per_mrow(server_cpu_cli));
    }

    // Four accounts at once in one worker vs four concurrent CLI dumps.
    let accounts = ["BENCH-2", "BENCH-3", "BENCH-4", "BENCH-5"];
    let (mut ours, mut cli) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let ids = request(&pool, &accounts).await?;
        let (seconds, _) = wait_completed(&pool, &ids, &mut worker).await?;
        ours = ours.max((small * 4) as f64 / seconds);
        cli = cli.max((small * 4) as f64 / cli_dumps(&host_port, &accounts, &storage)?.0);
    }
    figure("concurrent_rows_per_s", ours);
    figure("concurrent_mysql_cli_rows_per_s", cli);
    figure("concurrent_ratio_vs_mysql_cli", ours / cli);

    let peak = worker.stop()?;
    figure("concurrent_peak_rss_mib", peak as f64 / 1024.0);
    let _ = std::fs::remove_dir_all(&storage);
    Ok(())
}

/// (Re)creates the source table when it does not already hold exactly the rows we need.
async fn load_source(admin: &str, rows: u64, small: u64) -> anyhow::Result<()> {
    use mysql_async::prelude::Queryable;
    let pool = mysql_async::Pool::new(admin);
    let mut conn = pool.get_conn().await.context("MariaDB at SOURCE_ADMIN_URL")?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {SOURCE_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .await?;
    conn.query_drop("CREATE USER IF NOT EXISTS 'statements_ro'@'%' IDENTIFIED BY 'statements_ro'").await?;
    conn.query_drop(format!("GRANT SELECT ON {SOURCE_DB}.* TO 'statements_ro'@'%'")).await?;
    conn.query_drop(format!("USE {SOURCE_DB}")).await?;
    let wanted = rows + 4 * small;
    let have: Option<u64> = conn.query_first("SELECT count(*) FROM bank_transactions").await.unwrap_or(None);
    if have == Some(wanted) {
        return Ok(());
    }
    eprintln!("[bench-export] loading {wanted} source rows (once; kept for later runs)");
    conn.query_drop("DROP TABLE IF EXISTS bank_transactions").await?;
    conn.query_drop(include_str!("../../../tests/src/source_schema.sql")).await?;
    let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                  UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let mut first = 0;
    for (account, n) in
        [("BENCH-1", rows), ("BENCH-2", small), ("BENCH-3", small), ("BENCH-4", small), ("BENCH-5", small)]
    {
        conn.query_drop(format!(
            "INSERT INTO bank_transactions
             SELECT {first} + n + 1, '{account}', DATE_ADD('2020-01-01', INTERVAL n DIV 1000 DAY),
                    DATE_ADD('2020-01-01 00:00:00.000000', INTERVAL n * 86400 MICROSECOND),
                    CONCAT(ELT(1 + n % 5, 'Card payment ', 'Transfer, ref ', 'Refund \"', '=fee ', 'Café ☕ '), n),
                    IF(n % 7 = 0, NULL, CONCAT('Counterparty ', n % 997)),
                    ((n * 7919) % 2000001 - 1000000) / 100, 'EUR', CONCAT('REF-', n)
             FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d + 100000*g.d + 1000000*h.d AS n
                   FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f, {digits} g, {digits} h) numbers
             WHERE n < {n}"
        ))
        .await?;
        first += n;
    }
    conn.query_drop("ANALYZE TABLE bank_transactions").await?;
    drop(conn);
    pool.disconnect().await?;
    Ok(())
}

fn all_time() -> DateRange {
    DateRange::parse("2020-01-01", "2099-12-31", i64::MAX).expect("valid range")
}

async fn request(pool: &deadpool_postgres::Pool, accounts: &[&str]) -> anyhow::Result<Vec<uuid::Uuid>> {
    let mut db = pool.get().await?;
    let mut ids = Vec::new();
    for account in accounts {
        let request = StatementRequest {
            account: AccountId::parse(account)?,
            table: "bank_transactions".into(),
            range: all_time(),
            format: ExportFormat::Csv,
        };
        ids.push(shared::exports::request(&mut db, &request, None, true, 1, REUSE_NEVER).await?.export.id);
    }
    Ok(ids)
}

/// Waits for the exports; returns seconds from the first start to the last completion (by
/// Postgres's clock) and the total file bytes.
async fn wait_completed(
    pool: &deadpool_postgres::Pool,
    ids: &[uuid::Uuid],
    worker: &mut Worker,
) -> anyhow::Result<(f64, i64)> {
    let db = pool.get().await?;
    loop {
        worker.sample()?;
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'FAILED'),
                        extract(epoch FROM max(completed_at) - min(started_at))::float8, sum(file_size)::bigint
                 FROM exports WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        if row.get::<_, i64>(1) > 0 {
            bail!("an export failed");
        }
        if row.get::<_, i64>(0) == ids.len() as i64 {
            return Ok((row.get(2), row.get(3)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one `mariadb --quick --batch` per account at once, each writing its rows to a file, with
/// the same SELECT the worker runs; returns the wall-clock seconds until all finished and the
/// CPU seconds the clients used.
fn cli_dumps(host_port: &str, accounts: &[&str], dir: &Path) -> anyhow::Result<(f64, f64)> {
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
    let tables = TableRegistry::demo();
    let spec = tables.get("bank_transactions").expect("demo table");
    let started = Instant::now();
    let children = accounts
        .iter()
        .map(|account| {
            let sql = spec.select_sql(&AccountId::parse(account)?, &all_time());
            let out = std::fs::File::create(dir.join(format!("cli-{account}.tsv")))?;
            // utf8mb4 results, as the worker asks for: the client's default (utf8mb3) would turn
            // 4-byte characters into '?' and not dump the same rows.
            Command::new("mariadb")
                .args(["--quick", "--batch", "--default-character-set=utf8mb4", "--protocol=TCP"])
                .args(["-h", host, "-P", port])
                .args(["-u", "statements_ro", "-pstatements_ro", SOURCE_DB, "-e", &sql])
                .stdout(out)
                .spawn()
                .context("running the mariadb client")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reaped_before = reaped_children_cpu_seconds();
    for mut child in children {
        if !child.wait()?.success() {
            bail!("mariadb dump failed");
        }
    }
    Ok((started.elapsed().as_secs_f64(), reaped_children_cpu_seconds() - reaped_before))
}

/// User + system CPU seconds of a running process, from /proc (0 when it cannot be read).
fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&pid.to_string(), 11..13)
}

/// CPU seconds used by this process's finished (waited-for) children: `cutime` + `cstime`.
fn reaped_children_cpu_seconds() -> f64 {
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
struct Worker {
    child: std::process::Child,
    peak_kib: u64,
}

impl Worker {
    fn start(database_url: &str, source_url: &str, storage: &Path) -> anyhow::Result<Self> {
        let binary: PathBuf = std::env::current_exe()?.with_file_name("statement-worker");
        let child = Command::new(&binary)
            .env("DATABASE_URL", database_url)
            .env("SOURCE_DATABASE_URL", source_url)
            .env("LOCAL_STORAGE_DIR", storage)
            .env("WORKER_CONCURRENCY", "4")
            // Any free port: a `make run` may hold the default one.
            .env("WORKER_METRICS_BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (cargo build --release)", binary.display()))?;
        Ok(Self { child, peak_kib: 0 })
    }

    fn sample(&mut self) -> anyhow::Result<()> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        if let Some(hwm) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
            let kib: u64 = hwm.trim().trim_end_matches("kB").trim().parse()?;
            self.peak_kib = self.peak_kib.max(kib);
        }
        Ok(())
    }

    /// Stops the worker; returns its peak RSS in KiB.
    fn stop(mut self) -> anyhow::Result<u64> {
        self.sample()?;
        self.child.kill()?;
        self.child.wait()?;
        Ok(self.peak_kib)
    }
}
