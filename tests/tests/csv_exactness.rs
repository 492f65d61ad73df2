//! Every awkward value survives the export byte for byte (under the documented conventions),
//! and gzip output is the same CSV (consistent snapshots: `snapshots.rs`).

use std::io::Read as _;

use serde_json::{Value, json};
use shared::tables::{TableRegistry, TableSpec};
use testkit::{TestApp, parse_csv, sha256_hex};

const EDGE_TABLE: &str = "CREATE TABLE edge_values (
    id       BIGINT NOT NULL PRIMARY KEY,
    account  VARCHAR(16) NOT NULL,
    day      DATE NOT NULL,
    at       DATETIME(6) NULL,
    at_s     DATETIME NULL,
    amount   DECIMAL(65, 30) NULL,
    whole    DECIMAL(65, 0) NULL,
    note     TEXT NULL,
    code     CHAR(3) NULL
) DEFAULT CHARSET = utf8mb4 COLLATE utf8mb4_bin";

/// (id, day, at, at_s, amount, whole, note, code): every value the issue names.
const EDGE_ROWS: &str = r#"INSERT INTO edge_values VALUES
 (1, 'A', '2023-12-31', NULL, NULL, NULL, NULL, NULL, NULL),
 (2, 'A', '2024-01-01', '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00', 99999999999999999999999999999999999.999999999999999999999999999999, 99999999999999999999999999999999999999999999999999999999999999999, 'comma, here', 'EUR'),
 (3, 'A', '2024-01-01', '2024-06-30 12:34:56.000001', '2024-06-30 12:34:56', -0.000000000000000000000000000001, -99999999999999999999999999999999999999999999999999999999999999999, 'quote " inside and ""doubled""', ''),
 (4, 'A', '2024-03-15', '2024-03-15 23:59:59.999999', NULL, 0.000000000000000000000000000000, 0, 'CR\rLF\nCRLF\r\nend', NULL),
 (5, 'A', '2024-03-15', NULL, NULL, 1.5, 1, 'tab\there and back\\slash', 'x,y'),
 (6, 'A', '2024-07-04', NULL, NULL, NULL, NULL, 'unicode: é ß 中文 עברית 🏦💶 (4-byte)', NULL),
 (7, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '=1+1', NULL),
 (8, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '+1', '@me'),
 (9, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '-1', NULL),
 (10, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '@SUM(A1)', NULL),
 (11, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '\tleading tab', NULL),
 (12, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '\rleading CR', NULL),
 (13, 'A', '2024-07-04', NULL, NULL, NULL, NULL, '', ''),
 (14, 'A', '2024-12-31', '2024-12-31 23:59:59.999999', '2024-12-31 23:59:59', NULL, NULL, ' spaces kept ', NULL),
 (15, 'A', '2025-01-01', NULL, NULL, NULL, NULL, 'after the range', NULL),
 (16, 'B', '2024-05-05', NULL, NULL, NULL, NULL, 'other account', NULL)"#;

fn edge_tables() -> TableRegistry {
    TableRegistry::new(vec![TableSpec {
        name: "edge_values".into(),
        source_table: None,
        account_column: "account".into(),
        date_column: "day".into(),
        id_column: "id".into(),
        columns: ["id", "day", "at", "at_s", "amount", "whole", "note", "code"].map(String::from).to_vec(),
        source_time_zone: None,
        statement: None,
    }])
    .unwrap()
}

/// What each source cell must become (NULL stays None).
fn expected(guard: bool) -> Vec<Vec<Option<String>>> {
    let t = |s: &str| Some(s.to_owned());
    let g = |s: &str| Some(if guard { format!("'{s}") } else { s.to_owned() });
    let n = None;
    vec![
        vec![
            t("2"),
            t("2024-01-01"),
            t("2024-01-01T00:00:00.000000"),
            t("2024-01-01T00:00:00"),
            t("99999999999999999999999999999999999.999999999999999999999999999999"),
            t("99999999999999999999999999999999999999999999999999999999999999999"),
            t("comma, here"),
            t("EUR"),
        ],
        vec![
            t("3"),
            t("2024-01-01"),
            t("2024-06-30T12:34:56.000001"),
            t("2024-06-30T12:34:56"),
            t("-0.000000000000000000000000000001"),
            t("-99999999999999999999999999999999999999999999999999999999999999999"),
            t("quote \" inside and \"\"doubled\"\""),
            t(""),
        ],
        vec![
            t("4"),
            t("2024-03-15"),
            t("2024-03-15T23:59:59.999999"),
            n.clone(),
            t("0.000000000000000000000000000000"),
            t("0"),
            t("CR\rLF\nCRLF\r\nend"),
            n.clone(),
        ],
        vec![
            t("5"),
            t("2024-03-15"),
            n.clone(),
            n.clone(),
            t("1.500000000000000000000000000000"),
            t("1"),
            t("tab\there and back\\slash"),
            t("x,y"),
        ],
        vec![
            t("6"),
            t("2024-07-04"),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            t("unicode: é ß 中文 עברית 🏦💶 (4-byte)"),
            n.clone(),
        ],
        vec![t("7"), t("2024-07-04"), n.clone(), n.clone(), n.clone(), n.clone(), g("=1+1"), n.clone()],
        vec![t("8"), t("2024-07-04"), n.clone(), n.clone(), n.clone(), n.clone(), g("+1"), g("@me")],
        vec![t("9"), t("2024-07-04"), n.clone(), n.clone(), n.clone(), n.clone(), g("-1"), n.clone()],
        vec![t("10"), t("2024-07-04"), n.clone(), n.clone(), n.clone(), n.clone(), g("@SUM(A1)"), n.clone()],
        vec![
            t("11"),
            t("2024-07-04"),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            g("\tleading tab"),
            n.clone(),
        ],
        vec![
            t("12"),
            t("2024-07-04"),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            g("\rleading CR"),
            n.clone(),
        ],
        vec![t("13"), t("2024-07-04"), n.clone(), n.clone(), n.clone(), n.clone(), t(""), t("")],
        vec![
            t("14"),
            t("2024-12-31"),
            t("2024-12-31T23:59:59.999999"),
            t("2024-12-31T23:59:59"),
            n.clone(),
            n.clone(),
            t(" spaces kept "),
            n,
        ],
    ]
}

fn year_2024(format: &str) -> Value {
    json!({"account_id": "A", "table_name": "edge_values", "date_from": "2024-01-01", "date_to": "2024-12-31", "format": format})
}

async fn export_bytes(app: &TestApp, key: &str, body: &Value) -> (Value, Vec<u8>) {
    let created: Value = app.post_export(key, body).await.json().await.unwrap();
    let details = app.run_until_settled(key, created["reference_id"].as_str().unwrap()).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
    let bytes = app.download(details["file_url"].as_str().unwrap()).await.bytes().await.unwrap().to_vec();
    assert_eq!(details["sha256"], sha256_hex(&bytes));
    assert_eq!(details["file_size"], bytes.len());
    (details, bytes)
}

#[tokio::test]
async fn every_awkward_value_is_exported_exactly_with_the_formula_guard() {
    let app = TestApp::spawn_with(edge_tables()).await;
    app.source_exec(EDGE_TABLE).await;
    app.source_exec(EDGE_ROWS).await;
    let key = app.create_key(None).await;
    let (details, bytes) = export_bytes(&app, &key, &year_2024("csv")).await;
    assert_eq!(details["row_count"], 13);
    let records = parse_csv(&bytes);
    assert_eq!(
        records[0].iter().map(|c| c.clone().unwrap()).collect::<Vec<_>>(),
        ["id", "day", "at", "at_s", "amount", "whole", "note", "code"]
    );
    let expected = expected(true);
    for (i, (got, want)) in records[1..].iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "row {i}");
    }
    assert_eq!(records.len() - 1, expected.len());
}

#[tokio::test]
async fn with_the_guard_off_text_is_untouched() {
    let app = TestApp::spawn_configured(edge_tables(), |c| c.formula_guard = false).await;
    app.source_exec(EDGE_TABLE).await;
    app.source_exec(EDGE_ROWS).await;
    let key = app.create_key(None).await;
    let (_, bytes) = export_bytes(&app, &key, &year_2024("csv")).await;
    assert_eq!(parse_csv(&bytes)[1..], expected(false)[..]);
}

#[tokio::test]
async fn gzip_output_is_the_same_csv_and_its_own_export() {
    let app = TestApp::spawn_with(edge_tables()).await;
    app.source_exec(EDGE_TABLE).await;
    app.source_exec(EDGE_ROWS).await;
    let key = app.create_key(None).await;
    let (plain_details, plain) = export_bytes(&app, &key, &year_2024("csv")).await;
    let (gz_details, gz) = export_bytes(&app, &key, &year_2024("csv.gz")).await;
    assert_ne!(plain_details["reference_id"], gz_details["reference_id"], "format is part of the dedup hash");
    assert_eq!(gz_details["format"], "csv.gz");
    assert!(gz_details["file_url"].as_str().unwrap().contains(".csv.gz?"));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, plain);
}

/// Text kept in binary-charset columns (VARBINARY, BLOB, BINARY, `CHARACTER SET binary`) is as
/// dangerous in a spreadsheet as text in a TEXT column: the guard covers the whole string family.
#[tokio::test]
async fn the_formula_guard_covers_text_held_in_binary_charset_columns() {
    let tables = TableRegistry::new(vec![TableSpec {
        name: "binary_text".into(),
        source_table: None,
        account_column: "account".into(),
        date_column: "day".into(),
        id_column: "id".into(),
        columns: ["id", "vb", "bl", "bn", "vc", "amount"].map(String::from).to_vec(),
        source_time_zone: None,
        statement: None,
    }])
    .unwrap();
    let app = TestApp::spawn_with(tables).await;
    app.source_exec(
        "CREATE TABLE binary_text (
            id BIGINT NOT NULL PRIMARY KEY, account VARCHAR(16) NOT NULL, day DATE NOT NULL,
            vb VARBINARY(64) NULL, bl BLOB NULL, bn BINARY(4) NULL,
            vc VARCHAR(32) CHARACTER SET binary NULL, amount DECIMAL(10, 2) NULL)",
    )
    .await;
    app.source_exec(
        "INSERT INTO binary_text VALUES
         (1, 'A', '2024-01-01', '=cmd|'' /C calc''!A0', '+1+1', '@abc', '-2', -5.00),
         (2, 'A', '2024-01-02', 'plain', 'bytes', 'abcd', 'ok', 3.00)",
    )
    .await;
    let key = app.create_key(None).await;
    let body = json!({"account_id": "A", "table_name": "binary_text", "date_from": "2024-01-01", "date_to": "2024-01-31"});
    let (_, bytes) = export_bytes(&app, &key, &body).await;
    let t = |s: &str| Some(s.to_owned());
    assert_eq!(
        parse_csv(&bytes)[1..],
        [
            vec![t("1"), t("'=cmd|' /C calc'!A0"), t("'+1+1"), t("'@abc"), t("'-2"), t("-5.00")],
            vec![t("2"), t("plain"), t("bytes"), t("abcd"), t("ok"), t("3.00")],
        ]
    );
}
