//! `make bench-formats`: each statement format against CSV on the same rows, in the same worker.
//!
//! The source is **statement_entries** in the MariaDB source database (loaded once and kept for
//! later runs): `BENCH_ROWS` (default 1,000,000) entries of one EUR account over two years
//! (2023 and 2024), a signed amount, a running `balance_after` from an opening of 1000.00, a
//! value date (NULL one in four), a narrative (one in twenty awkward: quotes, `&`, `<`, a line
//! break, umlauts, emoji), a counterparty name, its IBAN (NULL one in three) and an end-to-end
//! reference. Its configuration (`EXPORT_TABLES_FILE`) maps those columns to a statement and
//! reads the balances from `balance_after`.
//!
//! For each format (camt.053, MT940, OFX, BAI2, JSON Lines), a fresh release worker exports the
//! whole account over the two years `BENCH_ROUNDS` (5) times as CSV and as many times in that
//! format, alternating which goes first, and keeps each side's best rows/s (by Postgres's clock,
//! from the export's start to its completion). A failed export, or one that does not hold every
//! row, fails the benchmark.
//!
//! Prints `name: value` lines: `rows`; for each `<f>` in `camt053`, `mt940`, `ofx`, `bai2`,
//! `jsonl`: `<f>_rows_per_s`, `<f>_ratio_vs_csv` (its best over the best CSV export of the same
//! worker), `<f>_peak_rss_mib` (that worker's peak resident memory, VmHWM); last,
//! `csv_rows_per_s` (the best CSV export over all workers). `BENCH_FORMATS` (`camt053,ofx`)
//! measures some formats alone.

use anyhow::{Context as _, bail};
use benchkit::{
    exports::{
        Bench, Worker, bench_rows, host_port, numbers, prepare_source, rounds, source_admin_url,
        table_to_load, wait_completed,
    },
    figure,
};
use mysql_async::prelude::Queryable as _;
use shared::{
    statement::{DateRange, ExportFormat},
    tables::TableSpec,
};

/// The one account of the table (an IBAN, as banks name accounts).
const ACCOUNT: &str = "DE89370400440532013000";
/// The period the rows span, and the statements' period: 2023-01-01 to 2024-12-31.
const FIRST_DAY: &str = "2023-01-01";
const LAST_DAY: &str = "2024-12-31";
const DAYS: u64 = 731;

/// Each format by the name of its figures and the name requests use.
const FORMATS: [(&str, &str); 5] =
    [("camt053", "camt.053"), ("mt940", "mt940"), ("ofx", "ofx"), ("bai2", "bai2"), ("jsonl", "jsonl")];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = bench_rows();
    let admin = source_admin_url();
    let source = mysql_async::Pool::new(admin.as_str());
    prepare_source(&source).await?;
    load_statement_entries(&source, rows).await?;
    source.disconnect().await?;
    let bench = Bench::new("stmt_bench_formats", &host_port(&admin)?).await?;
    bench.settle().await;
    let config = table_config();
    let spec: TableSpec = serde_json::from_value(config.clone()).context("the table configuration")?;
    let tables_file = bench.tables_file(vec![config])?;
    let period = DateRange::parse(FIRST_DAY, LAST_DAY, i64::MAX).expect("valid range");
    figure("rows", rows as f64);

    let mut csv_best: f64 = 0.0;
    // `BENCH_FORMATS=camt053,ofx` measures those alone.
    let only = std::env::var("BENCH_FORMATS").ok();
    let chosen = |name: &str| only.as_deref().is_none_or(|only| only.split(',').any(|o| o.trim() == name));
    for (name, format) in FORMATS.into_iter().filter(|(name, _)| chosen(name)) {
        let format = ExportFormat::parse(format)?;
        // A worker of its own: its peak memory is this format's (and CSV's) alone.
        let mut worker = Worker::start(&bench, Some(&tables_file))?;
        let mut best = [0.0_f64; 2];
        for round in 0..rounds() {
            // Which side goes first alternates: a server still busy with earlier work (or a
            // cache still cold) does not always burden the same side.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let side_format = if side == 0 { ExportFormat::CSV } else { format };
                let ids = bench.request(&spec, &[ACCOUNT], period, side_format).await?;
                let done = wait_completed(&bench.pool, &ids, &mut worker)
                    .await
                    .with_context(|| format!("{} export, round {}", side_format.as_str(), round + 1))?;
                if done.rows != rows {
                    bail!("the {} export holds {} rows, not {rows}", side_format.as_str(), done.rows);
                }
                best[side] = best[side].max(done.rows as f64 / done.seconds);
            }
        }
        let peak = worker.stop()?;
        figure(&format!("{name}_rows_per_s"), best[1]);
        figure(&format!("{name}_ratio_vs_csv"), best[1] / best[0]);
        figure(&format!("{name}_peak_rss_mib"), peak as f64 / 1024.0);
        csv_best = csv_best.max(best[0]);
    }
    figure("csv_rows_per_s", csv_best);
    bench.finish();
    Ok(())
}

/// The table's configuration (a `TableSpec` as `EXPORT_TABLES_FILE` holds it), with its
/// statement mapping.
fn table_config() -> serde_json::Value {
    serde_json::json!({
        "name": "statement_entries",
        "account_column": "account",
        "date_column": "booked_on",
        "id_column": "id",
        "columns": [
            "id", "account", "currency", "booked_on", "value_on", "amount", "balance_after",
            "narrative", "counterparty_name", "counterparty_iban", "end_to_end_id",
        ],
        "statement": {
            "amount": "amount",
            "currency": "currency",
            "value_date": "value_on",
            "description": "narrative",
            "counterparty_name": "counterparty_name",
            "counterparty_account": "counterparty_iban",
            "reference": "end_to_end_id",
            "balance_after": "balance_after",
        },
    })
}

/// The statement entries (the account and its currency first): the primary key and the
/// `(account, booked_on, id)` index.
const SCHEMA: &str = "CREATE TABLE statement_entries (
    id                BIGINT         NOT NULL PRIMARY KEY,
    account           VARCHAR(34)    NOT NULL,
    currency          CHAR(3)        NOT NULL,
    booked_on         DATE           NOT NULL,
    value_on          DATE           NULL,
    amount            DECIMAL(18, 2) NOT NULL,
    balance_after     DECIMAL(18, 2) NOT NULL,
    narrative         VARCHAR(255)   NOT NULL,
    counterparty_name VARCHAR(140)   NULL,
    counterparty_iban VARCHAR(34)    NULL,
    end_to_end_id     VARCHAR(35)    NOT NULL,
    KEY account_booked (account, booked_on, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin";

/// (Re)creates `statement_entries` when it does not already hold exactly `rows` rows: one
/// statement, in one INSERT, the running balance by a window function.
async fn load_statement_entries(pool: &mysql_async::Pool, rows: u64) -> anyhow::Result<()> {
    let Some(mut conn) = table_to_load(pool, "statement_entries", rows, SCHEMA).await? else { return Ok(()) };
    // Amounts from 0.01 to 1000.00, half credits, half debits; dates spread evenly over the
    // two years, in id order. The awkward narratives fall on credits and debits, with and
    // without a value date.
    conn.query_drop(format!(
        "INSERT INTO statement_entries
         SELECT id, account, 'EUR', booked_on, value_on, amount,
                1000.00 + SUM(amount) OVER (ORDER BY booked_on, id),
                narrative, counterparty_name, counterparty_iban, end_to_end_id
         FROM (SELECT n + 1 AS id, '{ACCOUNT}' AS account,
                      DATE_ADD('{FIRST_DAY}', INTERVAL n * {DAYS} DIV {rows} DAY) AS booked_on,
                      IF(n % 4 = n DIV 20 % 4, NULL,
                         DATE_ADD('{FIRST_DAY}', INTERVAL n * {DAYS} DIV {rows} + n % 3 DAY)) AS value_on,
                      CAST(IF(n % 2 = n DIV 20 % 2, 1, -1) * ((n * 7919) % 100000 + 1) / 100 AS DECIMAL(18, 2)) AS amount,
                      IF(n % 20 = 0,
                         ELT(1 + n DIV 20 % 5, CONCAT('Refund \"', n, '\" & thanks'),
                             CONCAT('Invoice <', n, '> for A&B <Ltd>'), CONCAT('Line one\\nline two ', n),
                             CONCAT('Zahlung für Müller, Größe Ä ', n), CONCAT('Coffee ☕ and bank 🏦 ', n)),
                         CONCAT(ELT(1 + n % 4, 'SEPA credit transfer ', 'Card payment POS ',
                                    'Direct debit mandate ', 'Standing order '), n)) AS narrative,
                      CONCAT(ELT(1 + n % 3, 'Counterparty Ltd ', 'Müller & Söhne GmbH ', 'Café \"Zur Post\" '),
                             n % 9973) AS counterparty_name,
                      IF(n % 3 = 0, NULL,
                         CONCAT('DE', LPAD(n % 97, 2, '0'), LPAD(n * 31 % 1000000000, 18, '0'))) AS counterparty_iban,
                      CONCAT('E2E-', HEX(n * 2654435761 % 4294967296), '-', n) AS end_to_end_id
               FROM {numbers} WHERE n < {rows}) generated",
        numbers = numbers(rows),
    ))
    .await?;
    conn.query_drop("ANALYZE TABLE statement_entries").await?;
    Ok(())
}
