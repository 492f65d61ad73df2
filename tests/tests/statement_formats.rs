//! Bank statement files end to end: asked for through the API, produced by the worker from a
//! real MariaDB table, downloaded, and read back by independent parsers from PyPI (ofxtools,
//! mt-940, bai2, pycamt; see `tests/python/parse_statement.py`). Every entry and balance is
//! compared with the rows this test wrote to the source.

use std::io::Read as _;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use shared::tables::{AccountsTable, StatementMapping, TableRegistry, TableSpec};
use testkit::{StatusCode, TestApp, statements};
use time::{Date, PrimitiveDateTime, macros::date, macros::datetime};

const SCHEMA: &str = "CREATE TABLE ledger (
    id            BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    account       VARCHAR(32)     NOT NULL,
    booked_at     DATETIME(6)     NOT NULL,
    value_day     DATE            NULL,
    amount        DECIMAL(18, 3)  NOT NULL,
    currency      VARCHAR(8)      NOT NULL,
    balance_after DECIMAL(18, 3)  NOT NULL,
    narrative     VARCHAR(255)    NULL,
    party         VARCHAR(255)    NULL,
    party_iban    VARCHAR(34)     NULL,
    ref           VARCHAR(64)     NULL,
    KEY account_booked (account, booked_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin";

const ACCOUNTS: &str = "CREATE TABLE accounts (
    id     VARCHAR(32)  NOT NULL PRIMARY KEY,
    iban   VARCHAR(34)  NULL,
    bic    VARCHAR(11)  NULL,
    holder VARCHAR(140) NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4";

/// The ledger as a table with a statement mapping: running balances, an accounts table.
fn mapped(name: &str, balance_after: bool) -> TableSpec {
    TableSpec {
        name: name.into(),
        source_table: Some("ledger".into()),
        account_column: "account".into(),
        date_column: "booked_at".into(),
        id_column: "id".into(),
        columns: ["id", "account", "booked_at", "amount", "currency", "narrative"].map(String::from).to_vec(),
        source_time_zone: None,
        statement: Some(StatementMapping {
            amount: "amount".into(),
            currency: Some("currency".into()),
            value_date: Some("value_day".into()),
            description: Some("narrative".into()),
            counterparty_name: Some("party".into()),
            counterparty_account: Some("party_iban".into()),
            reference: Some("ref".into()),
            balance_after: balance_after.then(|| "balance_after".into()),
            accounts: Some(AccountsTable {
                table: "accounts".into(),
                account_column: "id".into(),
                iban: Some("iban".into()),
                bic: Some("bic".into()),
                number: None,
                routing: None,
                name: Some("holder".into()),
                currency: None,
            }),
            ..StatementMapping::default()
        }),
    }
}

fn tables() -> TableRegistry {
    let unmapped = TableSpec { name: "ledger_rows".into(), statement: None, ..mapped("x", true) };
    TableRegistry::new(vec![mapped("ledger", true), mapped("ledger_computed", false), unmapped]).unwrap()
}

/// One source row, as this test wrote it.
#[derive(Debug, Clone)]
struct Row {
    id: u64,
    account: &'static str,
    at: PrimitiveDateTime,
    value_day: Option<Date>,
    amount: Decimal,
    currency: &'static str,
    balance_after: Decimal,
    narrative: Option<String>,
    /// The currency as the row spells it, when not `currency` itself.
    spelled: Option<&'static str>,
}

/// Rows of ACC-1 (EUR) from December 2023 to February 2024, and of ACC-2 (EUR and USD) in
/// January; running balances per account and currency, starting at 500.
fn rows() -> Vec<Row> {
    let texts = statements::awkward_texts();
    let mut rows = Vec::new();
    let mut balances = std::collections::HashMap::new();
    let mut push = |account: &'static str, currency: &'static str, at: PrimitiveDateTime, i: u64| {
        let magnitude = Decimal::new(1_000 + 137 * i as i64 % 90_000, 2);
        let amount = if i % 3 == 1 { -magnitude } else { magnitude };
        let balance = balances.entry((account, currency)).or_insert(Decimal::new(500, 0));
        *balance += amount;
        rows.push(Row {
            id: 1_000 + rows.len() as u64,
            account,
            at,
            value_day: (!i.is_multiple_of(4)).then(|| at.date().next_day().unwrap()),
            amount,
            currency,
            balance_after: *balance,
            narrative: (i % 6 != 5).then(|| texts[i as usize % texts.len()].clone()),
            spelled: None,
        });
    };
    let mut i = 0;
    let mut at = datetime!(2023-12-20 09:00);
    while at < datetime!(2024-02-05 00:00) {
        push("ACC-1", "EUR", at, i);
        i += 1;
        at += time::Duration::minutes(997);
    }
    // Near midnight UTC: in Berlin, the first is on January 1st and the second on February 1st.
    push("ACC-1", "EUR", datetime!(2023-12-31 23:30), 7);
    push("ACC-1", "EUR", datetime!(2024-01-31 23:30), 8);
    for (n, currency) in ["EUR", "USD", "USD", "EUR", "USD"].iter().cycle().take(25).enumerate() {
        push("ACC-2", currency, datetime!(2024-01-03 10:00) + time::Duration::hours(20 * n as i64), n as u64);
    }
    rows.sort_by_key(|r| (r.account, r.at, r.id));
    // One January entry spells its currency otherwise: it is still EUR.
    if let Some(row) = rows.iter_mut().find(|r| r.account == "ACC-1" && r.at > datetime!(2024-01-15 00:00)) {
        row.spelled = Some(" eur");
    }
    // Running balances follow the export's order (date, id).
    let mut running = std::collections::HashMap::new();
    for row in &mut rows {
        let balance = running.entry((row.account, row.currency)).or_insert(Decimal::new(500, 0));
        *balance += row.amount;
        row.balance_after = *balance;
    }
    rows
}

async fn app_with_ledger() -> (TestApp, Vec<Row>) {
    let app = TestApp::spawn_with(tables()).await;
    app.source_exec(SCHEMA).await;
    app.source_exec(ACCOUNTS).await;
    app.source_exec(
        "INSERT INTO accounts VALUES ('ACC-1', 'DE89 3704 0044 0532 0130 00', 'cobadeffxxx', 'M\u{fc}ller & S\u{f6}hne <GmbH>'),
                                     ('ACC-2', 'GB29NWBK60161331926819', NULL, 'Two Currencies Ltd')",
    )
    .await;
    let rows = rows();
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "({}, '{}', '{}', {}, {}, '{}', {}, {}, {}, {}, {})",
                r.id,
                r.account,
                r.at,
                r.value_day.map_or("NULL".into(), |d| format!("'{d}'")),
                r.amount,
                r.spelled.unwrap_or(r.currency),
                r.balance_after,
                r.narrative.as_deref().map_or("NULL".into(), quote),
                quote(&format!("Party {} \u{1F680} & Co", r.id)),
                if r.id % 2 == 0 { quote("FR1420041010050500013M02606") } else { "NULL".into() },
                quote(&format!("E2E-{}/{}", r.id, r.currency)),
            )
        })
        .collect();
    app.source_exec(&format!("INSERT INTO ledger VALUES {}", values.join(", "))).await;
    (app, rows)
}

/// What a statement of `account` in `currency` over `[from, to]` (days in `zone`) must say.
struct Expected {
    opening: Decimal,
    closing: Decimal,
    entries: Vec<Row>,
    /// Each entry's booking day in the statement's zone.
    days: Vec<Date>,
}

fn expected(rows: &[Row], account: &str, currency: &str, from: Date, to: Date, zone: &str) -> Expected {
    let zone = shared::time_zones::StatementZone::parse(zone).unwrap();
    let day =
        |r: &Row| zone.date_of(jiff::Timestamp::from_second(r.at.assume_utc().unix_timestamp()).unwrap());
    let mine: Vec<&Row> = rows.iter().filter(|r| r.account == account && r.currency == currency).collect();
    let entries: Vec<Row> =
        mine.iter().filter(|r| (from..=to).contains(&day(r))).map(|r| (*r).clone()).collect();
    let before: Vec<&&Row> = mine.iter().filter(|r| day(r) < from).collect();
    let opening = before.last().map_or(Decimal::new(500, 0), |r| r.balance_after);
    let closing = opening + entries.iter().map(|r| r.amount).sum::<Decimal>();
    let days = entries.iter().map(day).collect();
    Expected { opening, closing, entries, days }
}

/// Asks for a statement and returns the settled export.
async fn export(app: &TestApp, key: &str, body: Value) -> Value {
    let response = app.post_export(key, &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap());
    let accepted: Value = response.json().await.unwrap();
    app.run_until_settled(key, accepted["reference_id"].as_str().unwrap()).await
}

async fn file_of(app: &TestApp, export: &Value) -> Vec<u8> {
    assert_eq!(export["status"], "COMPLETED", "{export}");
    let bytes = app.download(export["file_url"].as_str().unwrap()).await.bytes().await.unwrap().to_vec();
    assert_eq!(testkit::sha256_hex(&bytes), export["sha256"].as_str().unwrap());
    bytes
}

/// Compares camt.053's `TxsSummry` with what the source rows say: the number of entries and
/// their net always; when `summed`, the sum of their amounts and the credits' and debits'
/// totals too, else none of them.
fn assert_summary(parsed: &Value, expected: &Expected, summed: bool) {
    let summary = &parsed["summary"];
    assert_eq!(summary["count"], expected.entries.len(), "{summary}");
    assert_eq!(statements::decimal(&summary["net"]), expected.closing - expected.opening, "{summary}");
    let side = |credit: bool| {
        let picked: Vec<&Row> =
            expected.entries.iter().filter(|r| (r.amount >= Decimal::ZERO) == credit).collect();
        (picked.len() as u64, picked.iter().map(|r| r.amount.abs()).sum::<Decimal>())
    };
    let totals = |got: &Value| Some((got["count"].as_u64()?, statements::decimal(&got["sum"])));
    if summed {
        assert_eq!(totals(&summary["credits"]), Some(side(true)), "{summary}");
        assert_eq!(totals(&summary["debits"]), Some(side(false)), "{summary}");
        let all: Decimal = expected.entries.iter().map(|r| r.amount.abs()).sum();
        assert_eq!(statements::decimal(&summary["sum"]), all, "{summary}");
    } else {
        assert!(
            summary["credits"].is_null() && summary["debits"].is_null() && summary["sum"].is_null(),
            "{summary}"
        );
    }
}

/// Compares a parsed statement with what the source rows say.
fn assert_statement(format: &str, parsed: &Value, currency: &str, expected: &Expected) {
    let context = format!("{format} {currency}");
    assert_eq!(parsed["currency"], currency, "{context}");
    assert_eq!(statements::decimal(&parsed["opening"]), expected.opening, "{context}: opening balance");
    assert_eq!(statements::decimal(&parsed["closing"]), expected.closing, "{context}: closing balance");
    let entries = parsed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), expected.entries.len(), "{context}: entries");
    for ((got, row), day) in entries.iter().zip(&expected.entries).zip(&expected.days) {
        assert_eq!(statements::decimal(&got["amount"]), row.amount, "{context}: entry {}", row.id);
        if let Some(booking_date) = got["booking_date"].as_str() {
            assert_eq!(booking_date, day.to_string(), "{context}: {}", row.id);
        }
        let value_date = got["value_date"].as_str().map(str::to_owned);
        match format.split(' ').next().map(|f| f.trim_end_matches(".gz")) {
            // Every value date there is, and none where the source has none.
            Some("camt.053" | "ofx") => {
                assert_eq!(value_date, row.value_day.map(|d| d.to_string()), "{context}: {}", row.id);
            }
            // MT940's `:61:` always has a value date: without one, the booking date is written.
            Some("mt940") => {
                assert_eq!(
                    value_date,
                    Some(row.value_day.unwrap_or(*day).to_string()),
                    "{context}: {}",
                    row.id
                )
            }
            _ => assert_eq!(value_date, None, "{context}: BAI2 carries no entry dates"),
        }
    }
}

#[tokio::test]
async fn each_bank_format_is_read_back_by_an_independent_parser_entry_for_entry() {
    let (app, rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    let want = expected(&rows, "ACC-1", "EUR", date!(2024 - 01 - 01), date!(2024 - 01 - 31), "UTC");
    assert!(want.entries.len() > 40, "a statement of some length");
    let mut numbers = Vec::new();
    for format in ["camt.053", "mt940", "ofx", "bai2", "camt.053.gz"] {
        let body = json!({
            "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-01-01",
            "date_to": "2024-01-31", "format": format,
        });
        let done = export(&app, &key, body).await;
        let mut bytes = file_of(&app, &done).await;
        if let Some(plain) = format.strip_suffix(".gz") {
            let mut unzipped = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut unzipped).unwrap();
            bytes = unzipped;
            assert!(done["file_url"].as_str().unwrap().contains(".camt053.xml.gz?"), "{done}");
            let parsed = statements::parse(plain, &bytes).unwrap();
            assert_statement(format, &parsed["statements"][0], "EUR", &want);
        } else {
            let parsed = statements::parse(format, &bytes).unwrap_or_else(|e| panic!("{format}: {e}"));
            let parsed_statements = parsed["statements"].as_array().unwrap();
            assert_eq!(parsed_statements.len(), 1, "{format}: {parsed}");
            assert_statement(format, &parsed_statements[0], "EUR", &want);
            if format == "camt.053" {
                // Balances from the source: the entries counted, not summed, before them.
                assert_summary(&parsed_statements[0], &want, false);
            }
        }
        assert_eq!(done["row_count"].as_i64(), Some(want.entries.len() as i64), "{format}");
        let facts = &done["statement"];
        assert_eq!(facts["balances"], "source", "{format}: {facts}");
        assert_eq!(statements::decimal(&facts["statements"][0]["opening_balance"]), want.opening);
        assert_eq!(statements::decimal(&facts["statements"][0]["closing_balance"]), want.closing);
        numbers.push(facts["number"].as_i64().unwrap());
    }
    // One statement (account, period, zone): one number, whatever the format.
    assert_eq!(numbers, [1, 1, 1, 1, 1]);
    // The next period is the account's next statement; the first keeps its number.
    let february = json!({
        "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-02-01",
        "date_to": "2024-02-29", "format": "mt940",
    });
    assert_eq!(export(&app, &key, february).await["statement"]["number"], 2);
    let again = json!({
        "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-01-01",
        "date_to": "2024-01-31", "format": "mt940", "force_refresh": true,
    });
    assert_eq!(export(&app, &key, again).await["statement"]["number"], 1);
    // A period before the account's first entry: no entries, the opening balance throughout.
    for format in ["mt940", "camt.053"] {
        let november = json!({
            "account_id": "ACC-1", "table_name": "ledger", "date_from": "2023-11-01",
            "date_to": "2023-11-30", "format": format,
        });
        let done = export(&app, &key, november).await;
        let parsed = statements::parse(format, &file_of(&app, &done).await).unwrap();
        let empty = Expected {
            opening: Decimal::new(500, 0),
            closing: Decimal::new(500, 0),
            entries: vec![],
            days: vec![],
        };
        assert_statement(format, &parsed["statements"][0], "EUR", &empty);
    }
}

#[tokio::test]
async fn json_lines_carry_each_row_with_typed_values() {
    let (app, rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    let body = json!({
        "account_id": "ACC-1", "table_name": "ledger_rows", "date_from": "2024-01-01",
        "date_to": "2024-01-31", "format": "jsonl",
    });
    let done = export(&app, &key, body).await;
    let bytes = file_of(&app, &done).await;
    let want = expected(&rows, "ACC-1", "EUR", date!(2024 - 01 - 01), date!(2024 - 01 - 31), "UTC");
    let lines: Vec<Value> =
        String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), want.entries.len());
    for (line, row) in lines.iter().zip(&want.entries) {
        assert_eq!(line["id"], json!(row.id), "integers are numbers");
        assert_eq!(line["amount"], json!(format!("{:.3}", row.amount)), "decimals are exact strings");
        let at = row.at.format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
        ));
        assert_eq!(line["booked_at"], json!(at.unwrap()));
        assert_eq!(line["narrative"], json!(row.narrative), "text (or null) as the source holds it");
        assert_eq!(line.as_object().unwrap().len(), 6, "{line}");
    }
}

#[tokio::test]
async fn several_currencies_make_a_statement_each_where_the_format_allows_and_fail_clearly_elsewhere() {
    let (app, rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    let (from, to) = (date!(2024 - 01 - 01), date!(2024 - 01 - 31));
    for format in ["camt.053", "ofx"] {
        let body = json!({
            "account_id": "ACC-2", "table_name": "ledger", "date_from": "2024-01-01",
            "date_to": "2024-01-31", "format": format,
        });
        let done = export(&app, &key, body).await;
        let parsed = statements::parse(format, &file_of(&app, &done).await).unwrap();
        let parsed = parsed["statements"].as_array().unwrap();
        assert_eq!(parsed.len(), 2, "{format}: one statement per currency");
        for (statement, currency) in parsed.iter().zip(["EUR", "USD"]) {
            let want = expected(&rows, "ACC-2", currency, from, to, "UTC");
            assert_statement(format, statement, currency, &want);
            if format == "camt.053" {
                // Met a second currency, started over with each currency's figures first.
                assert_summary(statement, &want, true);
            }
        }
    }
    for format in ["mt940", "bai2"] {
        let body = json!({
            "account_id": "ACC-2", "table_name": "ledger", "date_from": "2024-01-01",
            "date_to": "2024-01-31", "format": format,
        });
        let failed = export(&app, &key, body).await;
        assert_eq!(failed["status"], "FAILED", "{failed}");
        assert_eq!(failed["error_code"], "several_currencies");
        let detail = failed["error_detail"].as_str().unwrap();
        assert!(detail.contains("EUR") && detail.contains("USD") && detail.contains("camt.053"), "{detail}");
        assert!(failed.get("file_url").is_none());
    }
}

#[tokio::test]
async fn the_bank_s_time_zone_sets_the_period_s_days_and_the_dates_written() {
    let (app, rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    let (from, to) = (date!(2024 - 01 - 01), date!(2024 - 01 - 31));
    let utc = expected(&rows, "ACC-1", "EUR", from, to, "UTC");
    let berlin = expected(&rows, "ACC-1", "EUR", from, to, "Europe/Berlin");
    assert_ne!(
        utc.entries.iter().map(|r| r.id).collect::<Vec<_>>(),
        berlin.entries.iter().map(|r| r.id).collect::<Vec<_>>(),
        "the test's rows lie near midnight UTC"
    );
    let body = json!({
        "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-01-01",
        "date_to": "2024-01-31", "format": "camt.053", "time_zone": "europe/berlin",
    });
    let done = export(&app, &key, body.clone()).await;
    assert_eq!(done["time_zone"], "Europe/Berlin");
    let parsed = statements::parse("camt.053", &file_of(&app, &done).await).unwrap();
    assert_statement("camt.053 in Berlin", &parsed["statements"][0], "EUR", &berlin);
    // Booking dates are the bank's days: the row at 23:30 UTC on 31 December is on 1 January.
    let zone = shared::time_zones::StatementZone::parse("Europe/Berlin").unwrap();
    for (got, row) in parsed["statements"][0]["entries"].as_array().unwrap().iter().zip(&berlin.entries) {
        let day = zone.date_of(jiff::Timestamp::from_second(row.at.assume_utc().unix_timestamp()).unwrap());
        assert_eq!(got["booking_date"], day.to_string(), "entry {}", row.id);
    }
    // Another zone is another statement (not deduplicated with UTC's).
    let utc_body = json!({
        "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-01-01",
        "date_to": "2024-01-31", "format": "camt.053",
    });
    let utc_export = export(&app, &key, utc_body).await;
    assert_ne!(utc_export["reference_id"], done["reference_id"]);
    assert_eq!(utc_export["time_zone"], "UTC");
    // Asked again in the same zone, spelled otherwise: the same export.
    let mut same = body;
    same["time_zone"] = json!("EUROPE/BERLIN");
    let again: Value = app.post_export(&key, &same).await.json().await.unwrap();
    assert_eq!((&again["reference_id"], &again["reused"]), (&done["reference_id"], &json!(true)));
}

#[tokio::test]
async fn balances_that_do_not_add_up_fail_the_export_and_leave_no_file() {
    let (app, _rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    app.source_exec("UPDATE ledger SET balance_after = balance_after + 0.01 WHERE id = (SELECT max(id) FROM (SELECT id FROM ledger WHERE account = 'ACC-1' AND booked_at < '2024-02-01') t)").await;
    for format in ["camt.053", "mt940"] {
        let body = json!({
            "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-01-01",
            "date_to": "2024-01-31", "format": format,
        });
        let failed = export(&app, &key, body).await;
        assert_eq!(failed["status"], "FAILED", "{failed}");
        assert_eq!(failed["error_code"], "balance_mismatch");
        let detail = failed["error_detail"].as_str().unwrap();
        assert!(detail.starts_with("EUR: opening balance") && detail.contains("closing balance"), "{detail}");
    }
    assert!(testkit::files_under(&app.storage_dir).is_empty(), "no statement file was left");
}

#[tokio::test]
async fn computed_balances_are_the_sum_of_earlier_entries_and_say_so() {
    let (app, rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    let mut want = expected(&rows, "ACC-1", "EUR", date!(2024 - 01 - 01), date!(2024 - 01 - 31), "UTC");
    // Computed from the entries alone: the account starts at zero, not at the source's 500.
    want.opening -= Decimal::new(500, 0);
    want.closing -= Decimal::new(500, 0);
    for format in ["ofx", "camt.053"] {
        let body = json!({
            "account_id": "ACC-1", "table_name": "ledger_computed", "date_from": "2024-01-01",
            "date_to": "2024-01-31", "format": format,
        });
        let done = export(&app, &key, body).await;
        assert_eq!(done["statement"]["balances"], "computed");
        let parsed = statements::parse(format, &file_of(&app, &done).await).unwrap();
        assert_statement(&format!("{format} computed"), &parsed["statements"][0], "EUR", &want);
        if format == "camt.053" {
            // The sums the balances are computed from are in the summary too.
            assert_summary(&parsed["statements"][0], &want, true);
        }
    }
}

#[tokio::test]
async fn bank_formats_need_a_statement_mapping_and_time_zones_must_be_known() {
    let (app, _rows) = app_with_ledger().await;
    let key = app.create_key(None).await;
    let response = app
        .post_export(
            &key,
            &json!({
                "account_id": "ACC-1", "table_name": "ledger_rows", "date_from": "2024-01-01",
                "date_to": "2024-01-31", "format": "bai2",
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(problem["errors"][0]["field"], "format", "{problem}");
    assert!(message.contains("no statement mapping") && message.contains("csv or jsonl"), "{problem}");
    for zone in ["Mars/Olympus", "+01:00", ""] {
        let response = app
            .post_export(
                &key,
                &json!({
                    "account_id": "ACC-1", "table_name": "ledger", "date_from": "2024-01-01",
                    "date_to": "2024-01-31", "format": "camt.053", "time_zone": zone,
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{zone:?}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "time_zone", "{problem}");
    }
}

/// A ledger of unsigned amounts in minor units with a credit/debit column, a DATE booking day,
/// its currency in the accounts table (KWD, three decimals) and end-of-day balances in a table
/// of their own.
fn postings_table() -> TableSpec {
    TableSpec {
        name: "postings".into(),
        source_table: None,
        account_column: "acct".into(),
        date_column: "day".into(),
        id_column: "id".into(),
        columns: ["id", "acct", "day", "fils", "dc"].map(String::from).to_vec(),
        source_time_zone: None,
        statement: Some(StatementMapping {
            amount: "fils".into(),
            amount_in_minor_units: true,
            credit_debit: Some(shared::tables::CreditDebit {
                column: "dc".into(),
                credit: "CR".into(),
                debit: "DR".into(),
            }),
            description: Some("memo".into()),
            balances: Some(shared::tables::BalancesTable {
                table: "eod".into(),
                account_column: "acct".into(),
                date_column: "day".into(),
                balance_column: "fils".into(),
                currency_column: None,
            }),
            accounts: Some(AccountsTable {
                table: "accts".into(),
                account_column: "id".into(),
                iban: None,
                bic: None,
                number: Some("number".into()),
                routing: Some("routing".into()),
                name: None,
                currency: Some("ccy".into()),
            }),
            ..StatementMapping::default()
        }),
    }
}

#[tokio::test]
async fn unsigned_minor_units_with_an_indicator_and_a_balances_table_make_the_same_statement() {
    let app = TestApp::spawn_with(TableRegistry::new(vec![postings_table()]).unwrap()).await;
    // A case-insensitive collation: the indicator is still matched byte for byte.
    app.source_exec(
        "CREATE TABLE postings (id INT PRIMARY KEY, acct VARCHAR(16) NOT NULL, day DATE NOT NULL,
             fils BIGINT NOT NULL, dc CHAR(2) NOT NULL, memo VARCHAR(100), KEY (acct, day, id))
         DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci",
    )
    .await;
    app.source_exec("CREATE TABLE eod (acct VARCHAR(16), day DATE, fils BIGINT, PRIMARY KEY (acct, day))")
        .await;
    app.source_exec(
        "CREATE TABLE accts (id VARCHAR(16) PRIMARY KEY, number VARCHAR(20), routing VARCHAR(9), ccy CHAR(3))",
    )
    .await;
    app.source_exec(
        "INSERT INTO accts VALUES ('KW-1', '0012345678', '021000021', 'KWD'), ('KW-2', '1', '2', 'KWD')",
    )
    .await;
    // Entries from 2024-02-25 to 2024-03-10; end-of-day balances on the days with entries.
    let mut balance: i64 = 7_500_250;
    let (mut postings, mut eod, mut march) = (Vec::new(), Vec::new(), Vec::new());
    let mut opening_march = 0;
    for i in 0..30_i64 {
        let day = date!(2024 - 02 - 25) + time::Duration::days(i / 2);
        if day == date!(2024 - 03 - 01) && opening_march == 0 {
            opening_march = balance;
        }
        let fils = 1_000 + 7_919 * i % 50_000;
        let credit = i % 3 != 1;
        balance += if credit { fils } else { -fils };
        postings.push(format!(
            "({}, 'KW-1', '{day}', {fils}, '{}', 'posting {i}')",
            100 + i,
            if credit { "CR" } else { "DR" }
        ));
        if i % 2 == 1 {
            eod.push(format!("('KW-1', '{day}', {balance})"));
        }
        if day >= date!(2024 - 03 - 01) {
            march.push((100 + i, Decimal::new(if credit { fils } else { -fils }, 3), day));
        }
    }
    app.source_exec(&format!("INSERT INTO postings VALUES {}", postings.join(", "))).await;
    app.source_exec(&format!("INSERT INTO eod VALUES {}", eod.join(", "))).await;
    // KW-2 has an entry marked `cr`: neither `CR` nor `DR`, byte for byte.
    app.source_exec("INSERT INTO postings VALUES (500, 'KW-2', '2024-03-02', 10, 'cr', 'lower case')").await;
    let key = app.create_key(None).await;
    let want = Expected {
        opening: Decimal::new(opening_march, 3),
        closing: Decimal::new(balance, 3),
        days: march.iter().map(|m| m.2).collect(),
        entries: march
            .iter()
            .map(|(id, amount, day)| Row {
                id: *id as u64,
                account: "KW-1",
                at: day.midnight(),
                value_day: None,
                amount: *amount,
                currency: "KWD",
                balance_after: Decimal::ZERO,
                narrative: None,
                spelled: None,
            })
            .collect(),
    };
    for format in ["camt.053", "mt940", "bai2", "ofx"] {
        let body = json!({
            "account_id": "KW-1", "table_name": "postings", "date_from": "2024-03-01",
            "date_to": "2024-03-31", "format": format, "time_zone": "Asia/Kuwait",
        });
        let done = export(&app, &key, body).await;
        let parsed = statements::parse(format, &file_of(&app, &done).await).unwrap();
        assert_statement(format, &parsed["statements"][0], "KWD", &want);
        assert_eq!(done["statement"]["statements"][0]["opening_balance"], json!(format!("{}", want.opening)));
    }
    let body = json!({
        "account_id": "KW-2", "table_name": "postings", "date_from": "2024-03-01",
        "date_to": "2024-03-31", "format": "camt.053",
    });
    let failed = export(&app, &key, body).await;
    assert_eq!(failed["error_code"], "statement_value_invalid", "{failed}");
    let detail = failed["error_detail"].as_str().unwrap();
    assert!(detail.starts_with("entry 500: ") && detail.contains("neither credit nor debit"), "{detail}");
}
