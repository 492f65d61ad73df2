//! `make bench-export`: the export engine against the source database's own command-line dump.
//!
//! Two table shapes, each loaded once into a MariaDB source and kept for later runs:
//! - **bank_transactions** (the demo schema): `BENCH_ROWS` (default 1,000,000) rows for one
//!   account, stored contiguously, and a quarter of that for each of four more;
//! - **ledger_entries**, a realistic ledger: 11 columns, 3.5M rows, the secondary index
//!   `(account, value_date, id)` only, one account holding 3M rows interleaved in time with 400
//!   other accounts' rows, so its index range is followed by primary-key lookups spread over the
//!   whole table. Configured through `EXPORT_TABLES_FILE`.
//!
//! Each comparison exports with the real worker binary (release build, local storage, progress
//! recording, formula guard and the overlapped upload stage all on) and dumps the same rows with
//! `mariadb --quick --batch` running the exact SQL the worker sends, alternating `BENCH_ROUNDS` (5) times
//! and keeping each side's best.
//!
//! Prints `name: value` lines:
//! - `rows`, `rows_per_s`, `mb_per_s`, `peak_rss_mib`, `mysql_cli_rows_per_s`,
//!   `ratio_vs_mysql_cli`, `worker_cpu_s_per_mrow`, `mysql_cli_cpu_s_per_mrow`,
//!   `server_cpu_s_per_mrow_ours`, `server_cpu_s_per_mrow_cli` (one bank_transactions account);
//! - `concurrent_rows_per_s`, `concurrent_mysql_cli_rows_per_s`, `concurrent_ratio_vs_mysql_cli`,
//!   `concurrent_peak_rss_mib` (four accounts at once in one worker vs four CLI dumps);
//! - `ledger_1m_rows`, `ledger_1m_ratio_vs_mysql_cli`, `ledger_3m_rows`,
//!   `ledger_3m_ratio_vs_mysql_cli` (the big ledger account over about a third of its dates,
//!   and over all of them), `ledger_peak_rss_mib`, and `ledger_server_cpu_s_per_mrow_ours` /
//!   `ledger_server_cpu_s_per_mrow_cli` (the database server's CPU serving each side, over
//!   both ledger comparisons).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use benchkit::{figure, fresh_database};
use mysql_async::prelude::Queryable as _;
use secrecy::SecretString;
use shared::{
    statement::{AccountId, DateRange, ExportFormat, StatementRequest},
    tables::{TableRegistry, TableSpec},
};

const SOURCE_DB: &str = "stmt_bench_source";
/// Alternating rounds per comparison (`BENCH_ROUNDS`, default 5); each side's best counts.
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}
/// Benchmark requests are forced (`force_refresh`): nothing is reused.
const REUSE_NEVER: shared::exports::ReusePolicy =
    shared::exports::ReusePolicy { freshness: Duration::ZERO, books_closed_after_days: 1 };

/// The ledger shape: rows in all, rows of the big account (every row but each seventh).
const LEDGER_ROWS: u64 = 3_500_000;
const LEDGER_ACCOUNT: &str = "LEDGER-0001";
/// Rows per day of the ledger (all accounts); the big account has six sevenths of them.
const LEDGER_ROWS_PER_DAY: u64 = 3_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let small = rows / 4;
    let admin = std::env::var("SOURCE_ADMIN_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let source = mysql_async::Pool::new(admin.as_str());
    prepare_source(&source).await?;
    load_bank_transactions(&source, rows, small).await?;
    load_ledger(&source).await?;
    source.disconnect().await?;
    let host_port = admin.rsplit_once('@').map(|(_, hp)| hp.to_owned()).context("SOURCE_ADMIN_URL")?;
    let bench = Bench::new(&host_port).await?;
    bench.settle().await;
    println!("rows: {rows}");

    // Each comparison alternates our export and the CLI dump `BENCH_ROUNDS` times and keeps
    // each side's best: a 2-core machine's background noise swings single runs by ±20 %.
    let shapes = std::env::var("BENCH_SHAPES").unwrap_or_else(|_| "demo,ledger".into());
    if shapes.split(',').any(|s| s == "demo") {
        demo_shape(&bench).await?;
    }
    if shapes.split(',').any(|s| s == "ledger") {
        ledger_shape(&bench).await?;
    }
    let _ = std::fs::remove_dir_all(&bench.storage);
    Ok(())
}

/// One demo-schema account alone, then four at once.
async fn demo_shape(bench: &Bench) -> anyhow::Result<()> {
    let demo = TableRegistry::demo();
    let mut worker = Worker::start(bench, None)?;
    let single =
        bench.compare(&mut worker, demo.get("bank_transactions").unwrap(), &["BENCH-1"], all_time()).await?;
    figure("rows_per_s", single.ours);
    figure("mb_per_s", single.mb_per_s);
    worker.sample()?;
    figure("peak_rss_mib", worker.peak_kib as f64 / 1024.0);
    figure("mysql_cli_rows_per_s", single.cli);
    figure("ratio_vs_mysql_cli", single.ours / single.cli);
    // CPU seconds per million rows (averaged over the rounds): ours against the CLI's, and
    // what the database server spent serving each. A client cheaper than the server per row
    // leaves the server as the limit.
    figure("worker_cpu_s_per_mrow", single.cpu.per_mrow(single.cpu.worker));
    figure("mysql_cli_cpu_s_per_mrow", single.cpu.per_mrow(single.cpu.client));
    if bench.server.is_some() {
        figure("server_cpu_s_per_mrow_ours", single.cpu.per_mrow(single.cpu.server_ours));
        figure("server_cpu_s_per_mrow_cli", single.cpu.per_mrow(single.cpu.server_cli));
    }

    // Four accounts at once in one worker vs four concurrent CLI dumps.
    let accounts = ["BENCH-2", "BENCH-3", "BENCH-4", "BENCH-5"];
    let concurrent =
        bench.compare(&mut worker, demo.get("bank_transactions").unwrap(), &accounts, all_time()).await?;
    figure("concurrent_rows_per_s", concurrent.ours);
    figure("concurrent_mysql_cli_rows_per_s", concurrent.cli);
    figure("concurrent_ratio_vs_mysql_cli", concurrent.ours / concurrent.cli);
    let peak = worker.stop()?;
    figure("concurrent_peak_rss_mib", peak as f64 / 1024.0);
    Ok(())
}

/// The big ledger account over about a million rows, then over all of its rows, in a worker of
/// its own (its peak memory is its own).
async fn ledger_shape(bench: &Bench) -> anyhow::Result<()> {
    let tables_file = bench.storage.join("tables.json");
    let ledger = ledger_spec();
    let config = serde_json::json!({ "tables": [{
        "name": ledger.name,
        "account_column": ledger.account_column,
        "date_column": ledger.date_column,
        "id_column": ledger.id_column,
        "columns": ledger.columns,
    }] });
    std::fs::write(&tables_file, config.to_string())?;
    let mut worker = Worker::start(bench, Some(&tables_file))?;
    let mut server_cpu = CpuTotals::default();
    for (name, range) in [("ledger_1m", ledger_first_million()), ("ledger_3m", all_time())] {
        let result = bench.compare(&mut worker, &ledger, &[LEDGER_ACCOUNT], range).await?;
        figure(&format!("{name}_rows"), result.rows as f64);
        figure(&format!("{name}_rows_per_s"), result.ours);
        figure(&format!("{name}_mysql_cli_rows_per_s"), result.cli);
        figure(&format!("{name}_ratio_vs_mysql_cli"), result.ours / result.cli);
        server_cpu.add(&result.cpu);
    }
    let peak = worker.stop()?;
    figure("ledger_peak_rss_mib", peak as f64 / 1024.0);
    if bench.server.is_some() {
        figure("ledger_server_cpu_s_per_mrow_ours", server_cpu.per_mrow(server_cpu.server_ours));
        figure("ledger_server_cpu_s_per_mrow_cli", server_cpu.per_mrow(server_cpu.server_cli));
    }
    Ok(())
}

/// The source database and its SELECT-only user.
async fn prepare_source(pool: &mysql_async::Pool) -> anyhow::Result<()> {
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

/// `n` from 0 to 9,999,999 (filter it with `WHERE n < …`).
fn numbers() -> String {
    format!(
        "(SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d + 100000*g.d + 1000000*h.d AS n
          FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e, {DIGITS} f, {DIGITS} g, {DIGITS} h) numbers"
    )
}

/// Whether `table` already holds exactly `rows` rows (a load is kept for later runs).
async fn loaded(conn: &mut mysql_async::Conn, table: &str, rows: u64) -> bool {
    let have: Option<u64> = conn.query_first(format!("SELECT count(*) FROM {table}")).await.unwrap_or(None);
    have == Some(rows)
}

/// (Re)creates the demo-schema table when it does not already hold exactly the rows we need.
async fn load_bank_transactions(pool: &mysql_async::Pool, rows: u64, small: u64) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(format!("USE {SOURCE_DB}")).await?;
    let wanted = rows + 4 * small;
    if loaded(&mut conn, "bank_transactions", wanted).await {
        return Ok(());
    }
    eprintln!("[bench-export] loading {wanted} bank_transactions rows (once; kept for later runs)");
    conn.query_drop("DROP TABLE IF EXISTS bank_transactions").await?;
    conn.query_drop(include_str!("../../../tests/src/source_schema.sql")).await?;
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
             FROM {numbers} WHERE n < {n}",
            numbers = numbers(),
        ))
        .await?;
        first += n;
    }
    conn.query_drop("ANALYZE TABLE bank_transactions").await?;
    Ok(())
}

/// The ledger table: its primary key and the `(account, value_date, id)` index only.
const LEDGER_SCHEMA: &str = "CREATE TABLE ledger_entries (
    id                BIGINT         NOT NULL PRIMARY KEY,
    account           VARCHAR(32)    NOT NULL,
    value_date        DATE           NOT NULL,
    booked_at         DATETIME(6)    NOT NULL,
    amount            DECIMAL(18, 2) NOT NULL,
    balance_after     DECIMAL(18, 2) NOT NULL,
    currency          CHAR(3)        NOT NULL,
    narrative         VARCHAR(255)   NOT NULL,
    counterparty_name VARCHAR(140)   NULL,
    counterparty_iban VARCHAR(34)    NULL,
    end_to_end_id     VARCHAR(64)    NOT NULL,
    KEY account_date (account, value_date, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin";

fn ledger_spec() -> TableSpec {
    TableSpec {
        name: "ledger_entries".into(),
        source_table: None,
        account_column: "account".into(),
        date_column: "value_date".into(),
        id_column: "id".into(),
        columns: [
            "id",
            "account",
            "value_date",
            "booked_at",
            "amount",
            "balance_after",
            "currency",
            "narrative",
            "counterparty_name",
            "counterparty_iban",
            "end_to_end_id",
        ]
        .map(String::from)
        .to_vec(),
        source_time_zone: None,
        statement: None,
    }
}

/// Rows in id (= time) order: each seventh row belongs to one of 400 other accounts, every
/// other row to the big account, so the big account's rows are spread over the whole table.
/// One narrative in twenty is awkward for CSV (quotes, commas, line breaks, a leading `=`,
/// characters outside the BMP).
async fn load_ledger(pool: &mysql_async::Pool) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(format!("USE {SOURCE_DB}")).await?;
    if loaded(&mut conn, "ledger_entries", LEDGER_ROWS).await {
        return Ok(());
    }
    eprintln!("[bench-export] loading {LEDGER_ROWS} ledger_entries rows (once; kept for later runs)");
    conn.query_drop("DROP TABLE IF EXISTS ledger_entries").await?;
    conn.query_drop(LEDGER_SCHEMA).await?;
    conn.query_drop(format!(
        "INSERT INTO ledger_entries
         SELECT n + 1,
                IF(n % 7 = 6, CONCAT('ACCT-', LPAD(n DIV 7 % 400, 4, '0')), '{LEDGER_ACCOUNT}'),
                DATE_ADD('2021-01-01', INTERVAL n DIV {LEDGER_ROWS_PER_DAY} DAY),
                DATE_ADD('2021-01-01 00:00:00.000000',
                         INTERVAL (n DIV {LEDGER_ROWS_PER_DAY}) * 86400000000
                                  + (n % {LEDGER_ROWS_PER_DAY}) * 28800000 + n % 997 MICROSECOND),
                ((n * 7919) % 2000001 - 1000000) / 100,
                ((n * 104729) % 2000000001) / 100,
                ELT(1 + n % 10, 'EUR', 'EUR', 'EUR', 'EUR', 'EUR', 'EUR', 'GBP', 'USD', 'CHF', 'EUR'),
                IF(n % 20 = 0,
                   ELT(1 + n DIV 20 % 5, CONCAT('Refund \"', n, '\", thanks'), CONCAT('=HYPERLINK(', n, ')'),
                       CONCAT('Line one\\nline two ', n), CONCAT('Zahlung für Müller 🏦 ', n),
                       CONCAT('  padded, ', n, '  ')),
                   CONCAT(ELT(1 + n % 4, 'SEPA credit transfer ', 'Card payment POS ', 'Direct debit mandate ',
                              'Standing order '), n)),
                IF(n % 5 = 0, NULL, CONCAT('Counterparty Ltd ', n % 9973)),
                IF(n % 3 = 0, NULL, CONCAT('DE', LPAD(n % 97, 2, '0'), LPAD(n * 31 % 1000000000, 18, '0'))),
                CONCAT('E2E-', HEX(n * 2654435761 % 4294967296), '-', n)
         FROM {numbers} WHERE n < {LEDGER_ROWS}",
        numbers = numbers(),
    ))
    .await?;
    conn.query_drop("ANALYZE TABLE ledger_entries").await?;
    Ok(())
}

fn all_time() -> DateRange {
    DateRange::parse("2020-01-01", "2099-12-31", i64::MAX).expect("valid range")
}

/// The big ledger account's first (about) million rows: the days that hold them.
fn ledger_first_million() -> DateRange {
    let big_per_day = LEDGER_ROWS_PER_DAY * 6 / 7;
    let days = 1_000_000_u64.div_ceil(big_per_day) as i64;
    let from = time::macros::date!(2021 - 01 - 01);
    DateRange::new(from, from + time::Duration::days(days - 1), i64::MAX).expect("valid range")
}

/// What one run of the benchmark shares: the service database, the source, the storage folder.
struct Bench {
    pool: deadpool_postgres::Pool,
    database_url: String,
    source_url: String,
    host_port: String,
    storage: PathBuf,
    /// The local database server's process, when the source runs on this machine.
    server: Option<u32>,
}

/// One comparison's figures: each side's best rows/s, and CPU totals over all rounds.
struct Comparison {
    rows: u64,
    ours: f64,
    mb_per_s: f64,
    cli: f64,
    cpu: CpuTotals,
}

/// CPU seconds summed over a comparison's rounds: our worker, the CLI client, and the database
/// server while serving each.
#[derive(Default)]
struct CpuTotals {
    rows: u64,
    worker: f64,
    client: f64,
    server_ours: f64,
    server_cli: f64,
}

impl CpuTotals {
    fn add(&mut self, other: &Self) {
        self.rows += other.rows;
        self.worker += other.worker;
        self.client += other.client;
        self.server_ours += other.server_ours;
        self.server_cli += other.server_cli;
    }

    /// CPU seconds per million rows exported.
    fn per_mrow(&self, seconds: f64) -> f64 {
        seconds / (self.rows as f64 / 1e6)
    }
}

impl Bench {
    async fn new(host_port: &str) -> anyhow::Result<Self> {
        let database_url = fresh_database("stmt_bench_export").await?;
        let pool = shared::db::pool(&SecretString::from(database_url.clone()), 4)?;
        let storage = std::env::temp_dir().join(format!("stmt-bench-export-{}", std::process::id()));
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
    async fn settle(&self) {
        let Some(server) = self.server else { return };
        for _ in 0..120 {
            let before = cpu_seconds(server);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if cpu_seconds(server) - before < 0.03 {
                return;
            }
        }
    }

    /// Alternates `BENCH_ROUNDS` exports of `accounts` (at once) with as many CLI dumps of the same
    /// rows; keeps each side's best rows/s.
    async fn compare(
        &self,
        worker: &mut Worker,
        spec: &TableSpec,
        accounts: &[&str],
        range: DateRange,
    ) -> anyhow::Result<Comparison> {
        // The statement the worker sends names the index it reads through: so does the CLI's.
        let index = {
            let mut conn = mysql_async::Conn::from_url(self.source_url.as_str()).await?;
            let index = shared::source::export_index(&mut conn, spec).await?;
            conn.disconnect().await?;
            index
        };
        let server_cpu = || self.server.map_or(0.0, cpu_seconds);
        let mut result =
            Comparison { rows: 0, ours: 0.0, mb_per_s: 0.0, cli: 0.0, cpu: CpuTotals::default() };
        for round in 0..rounds() {
            // Which side goes first alternates too: a server still busy with earlier work (or
            // a cache still cold) does not always burden the same side.
            let mut cli_seconds = 0.0;
            for ours in [round % 2 == 0, round % 2 == 1] {
                let server_before = server_cpu();
                if ours {
                    let ids = self.request(spec, accounts, range).await?;
                    let worker_before = cpu_seconds(worker.child.id());
                    let done = wait_completed(&self.pool, &ids, worker).await?;
                    result.cpu.worker += cpu_seconds(worker.child.id()) - worker_before;
                    result.cpu.server_ours += server_cpu() - server_before;
                    result.cpu.rows += done.rows;
                    result.rows = done.rows;
                    result.ours = result.ours.max(done.rows as f64 / done.seconds);
                    result.mb_per_s = result.mb_per_s.max(done.bytes as f64 / done.seconds / 1e6);
                } else {
                    let (seconds, client_cpu) = self.cli_dumps(spec, accounts, range, index.as_deref())?;
                    result.cpu.client += client_cpu;
                    result.cpu.server_cli += server_cpu() - server_before;
                    cli_seconds = seconds;
                }
            }
            result.cli = result.cli.max(result.rows as f64 / cli_seconds);
        }
        Ok(result)
    }

    async fn request(
        &self,
        spec: &TableSpec,
        accounts: &[&str],
        range: DateRange,
    ) -> anyhow::Result<Vec<uuid::Uuid>> {
        let mut db = self.pool.get().await?;
        let mut ids = Vec::new();
        for account in accounts {
            let request = StatementRequest {
                account: AccountId::parse(account)?,
                table: spec.name.clone(),
                range,
                format: ExportFormat::CSV,
                time_zone: shared::time_zones::StatementZone::utc(),
            };
            ids.push(
                shared::exports::request(&mut db, &request, None, true, 1, REUSE_NEVER).await?.export.id,
            );
        }
        Ok(ids)
    }

    /// Runs one `mariadb --quick --batch` per account at once, each writing its rows to a file,
    /// with the exact SELECT the worker sends; returns the wall-clock seconds until all
    /// finished and the CPU seconds the clients used.
    fn cli_dumps(
        &self,
        spec: &TableSpec,
        accounts: &[&str],
        range: DateRange,
        index: Option<&str>,
    ) -> anyhow::Result<(f64, f64)> {
        let (host, port) = self.host_port.split_once(':').unwrap_or((&self.host_port, "3306"));
        let started = Instant::now();
        let children = accounts
            .iter()
            .map(|account| {
                let utc = shared::time_zones::StatementZone::utc();
                let bounds = shared::tables::Bounds::new(&range, &utc, None);
                let sql = spec.select_sql(&AccountId::parse(account)?, &bounds, index);
                let out = std::fs::File::create(self.storage.join(format!("cli-{account}.tsv")))?;
                // utf8mb4 results, as the worker asks for: the client's default (utf8mb3) would
                // turn 4-byte characters into '?' and not dump the same rows.
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
}

/// Exports that completed: seconds from the first start to the last completion (by Postgres's
/// clock), rows and file bytes in all.
struct Completed {
    seconds: f64,
    rows: u64,
    bytes: u64,
}

async fn wait_completed(
    pool: &deadpool_postgres::Pool,
    ids: &[uuid::Uuid],
    worker: &mut Worker,
) -> anyhow::Result<Completed> {
    let db = pool.get().await?;
    loop {
        worker.sample()?;
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'FAILED'),
                        extract(epoch FROM max(completed_at) - min(started_at))::float8,
                        sum(row_count)::bigint, sum(file_size)::bigint
                 FROM exports WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        if row.get::<_, i64>(1) > 0 {
            bail!("an export failed");
        }
        if row.get::<_, i64>(0) == ids.len() as i64 {
            let count = |i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            return Ok(Completed { seconds: row.get(2), rows: count(3), bytes: count(4) });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    fn start(bench: &Bench, tables_file: Option<&Path>) -> anyhow::Result<Self> {
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
