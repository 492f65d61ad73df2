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

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};
use benchkit::{
    exports::{
        Bench, SOURCE_DB, Worker, bench_rows, cpu_seconds, host_port, numbers, prepare_source,
        reaped_children_cpu_seconds, rounds, source_admin_url, table_to_load, wait_completed,
    },
    figure,
};
use mysql_async::prelude::Queryable as _;
use shared::{
    statement::{AccountId, DateRange, ExportFormat},
    tables::{TableRegistry, TableSpec},
};

/// The ledger shape: rows in all, rows of the big account (every row but each seventh).
const LEDGER_ROWS: u64 = 3_500_000;
const LEDGER_ACCOUNT: &str = "LEDGER-0001";
/// Rows per day of the ledger (all accounts); the big account has six sevenths of them.
const LEDGER_ROWS_PER_DAY: u64 = 3_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = bench_rows();
    let small = rows / 4;
    let admin = source_admin_url();
    let source = mysql_async::Pool::new(admin.as_str());
    prepare_source(&source).await?;
    load_bank_transactions(&source, rows, small).await?;
    load_ledger(&source).await?;
    source.disconnect().await?;
    let bench = Bench::new("stmt_bench_export", &host_port(&admin)?).await?;
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
    bench.finish();
    Ok(())
}

/// One demo-schema account alone, then four at once.
async fn demo_shape(bench: &Bench) -> anyhow::Result<()> {
    let demo = TableRegistry::demo();
    let mut worker = Worker::start(bench, None)?;
    let single =
        compare(bench, &mut worker, demo.get("bank_transactions").unwrap(), &["BENCH-1"], all_time()).await?;
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
        compare(bench, &mut worker, demo.get("bank_transactions").unwrap(), &accounts, all_time()).await?;
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
    let ledger = ledger_spec();
    let tables_file = bench.tables_file(vec![serde_json::json!({
        "name": ledger.name,
        "account_column": ledger.account_column,
        "date_column": ledger.date_column,
        "id_column": ledger.id_column,
        "columns": ledger.columns,
    })])?;
    let mut worker = Worker::start(bench, Some(&tables_file))?;
    let mut server_cpu = CpuTotals::default();
    for (name, range) in [("ledger_1m", ledger_first_million()), ("ledger_3m", all_time())] {
        let result = compare(bench, &mut worker, &ledger, &[LEDGER_ACCOUNT], range).await?;
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

/// (Re)creates the demo-schema table when it does not already hold exactly the rows we need.
async fn load_bank_transactions(pool: &mysql_async::Pool, rows: u64, small: u64) -> anyhow::Result<()> {
    let schema = include_str!("../../../tests/src/source_schema.sql");
    let Some(mut conn) = table_to_load(pool, "bank_transactions", rows + 4 * small, schema).await? else {
        return Ok(());
    };
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
            numbers = numbers(n),
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
    let Some(mut conn) = table_to_load(pool, "ledger_entries", LEDGER_ROWS, LEDGER_SCHEMA).await? else {
        return Ok(());
    };
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
        numbers = numbers(LEDGER_ROWS),
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

/// Alternates `BENCH_ROUNDS` exports of `accounts` (at once) with as many CLI dumps of the same
/// rows; keeps each side's best rows/s.
async fn compare(
    bench: &Bench,
    worker: &mut Worker,
    spec: &TableSpec,
    accounts: &[&str],
    range: DateRange,
) -> anyhow::Result<Comparison> {
    // The statement the worker sends names the index it reads through: so does the CLI's.
    let index = {
        let mut conn = mysql_async::Conn::from_url(bench.source_url.as_str()).await?;
        let index = shared::source::export_index(&mut conn, spec).await?;
        conn.disconnect().await?;
        index
    };
    let server_cpu = || bench.server.map_or(0.0, cpu_seconds);
    let mut result = Comparison { rows: 0, ours: 0.0, mb_per_s: 0.0, cli: 0.0, cpu: CpuTotals::default() };
    for round in 0..rounds() {
        // Which side goes first alternates too: a server still busy with earlier work (or
        // a cache still cold) does not always burden the same side.
        let mut cli_seconds = 0.0;
        for ours in [round % 2 == 0, round % 2 == 1] {
            let server_before = server_cpu();
            if ours {
                let ids = bench.request(spec, accounts, range, ExportFormat::CSV).await?;
                let worker_before = cpu_seconds(worker.child.id());
                let done = wait_completed(&bench.pool, &ids, worker).await?;
                result.cpu.worker += cpu_seconds(worker.child.id()) - worker_before;
                result.cpu.server_ours += server_cpu() - server_before;
                result.cpu.rows += done.rows;
                result.rows = done.rows;
                result.ours = result.ours.max(done.rows as f64 / done.seconds);
                result.mb_per_s = result.mb_per_s.max(done.bytes as f64 / done.seconds / 1e6);
            } else {
                let (seconds, client_cpu) = cli_dumps(bench, spec, accounts, range, index.as_deref())?;
                result.cpu.client += client_cpu;
                result.cpu.server_cli += server_cpu() - server_before;
                cli_seconds = seconds;
            }
        }
        result.cli = result.cli.max(result.rows as f64 / cli_seconds);
    }
    Ok(result)
}

/// Runs one `mariadb --quick --batch` per account at once, each writing its rows to a file,
/// with the exact SELECT the worker sends; returns the wall-clock seconds until all
/// finished and the CPU seconds the clients used.
fn cli_dumps(
    bench: &Bench,
    spec: &TableSpec,
    accounts: &[&str],
    range: DateRange,
    index: Option<&str>,
) -> anyhow::Result<(f64, f64)> {
    let (host, port) = bench.host_port.split_once(':').unwrap_or((&bench.host_port, "3306"));
    let started = Instant::now();
    let children = accounts
        .iter()
        .map(|account| {
            let utc = shared::time_zones::StatementZone::utc();
            let bounds = shared::tables::Bounds::new(&range, &utc, None);
            let sql = spec.select_sql(&AccountId::parse(account)?, &bounds, index);
            let out = std::fs::File::create(bench.storage.join(format!("cli-{account}.tsv")))?;
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
