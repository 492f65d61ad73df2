//! A statement export end to end: key → POST → worker → COMPLETED → signed download → the CSV
//! equals the source, row by row and column by column.

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp, parse_csv, sha256_hex};

/// Rows with every awkward value the issue names, for two accounts and around the range edges.
const AWKWARD_ROWS: &str = r#"INSERT INTO bank_transactions VALUES
 (1, 'ACC-1', '2023-12-31', '2023-12-31 23:59:59.999999', 'before the range', NULL, 1.00, 'EUR', NULL),
 (2, 'ACC-1', '2024-01-01', '2024-01-01 00:00:00.000000', 'first day, with comma', 'O''Brien "Bros"', -12.34, 'EUR', 'R-2'),
 (3, 'ACC-1', '2024-01-01', '2024-01-01 08:15:30.123456', 'line one\r\nline two\nthree', '', 9999999999999999.99, 'USD', ''),
 (4, 'ACC-1', '2024-01-15', '2024-01-15 12:00:00.000001', 'tab\there \\ backslash', 'Café 日本 💶🚀', -9999999999999999.99, 'GBP', NULL),
 (5, 'ACC-1', '2024-01-15', '2024-01-15 12:00:00.000002', '=SUM(A1:A9)', '+44 20', 0.00, 'EUR', '@handle'),
 (6, 'ACC-2', '2024-01-20', '2024-01-20 10:00:00.000000', 'other account', NULL, 5.00, 'EUR', NULL),
 (7, 'ACC-1', '2024-01-31', '2024-01-31 23:59:59.999999', '-minus', NULL, 0.01, 'EUR', 'last day'),
 (8, 'ACC-1', '2024-02-01', '2024-02-01 00:00:00.000000', 'after the range', NULL, 1.00, 'EUR', NULL)"#;

/// The README's conventions applied to source values: DATETIME gets ISO 8601's `T`; text
/// cells starting with `= + - @ TAB CR` get a leading `'` (columns 1, 4, 5, 7, 8 are text).
fn documented_conventions(row: Vec<Option<String>>) -> Vec<Option<String>> {
    row.into_iter()
        .enumerate()
        .map(|(i, cell)| {
            let cell = cell?;
            Some(match i {
                3 => cell.replacen(' ', "T", 1),
                1 | 4 | 5 | 7 | 8 if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{cell}"),
                _ => cell,
            })
        })
        .collect()
}

fn january(account: &str) -> Value {
    json!({"account_id": account, "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

#[tokio::test]
async fn an_export_completes_and_its_file_equals_the_source() {
    let app = TestApp::spawn().await;
    app.source_exec(AWKWARD_ROWS).await;
    let key = app.create_key(None).await;

    let response = app.post_export(&key, &january("ACC-1")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "PENDING");
    assert_eq!(accepted["reused"], false);
    let reference = accepted["reference_id"].as_str().unwrap().to_owned();

    let details = app.run_until_settled(&key, &reference).await;
    assert_eq!(details["status"], "COMPLETED", "{details}");
    assert_eq!(details["row_count"], 5);
    assert_eq!(details["date_from"], "2024-01-01");
    assert!(details["completed_at"].as_str().unwrap().contains('T'), "RFC 3339 time");

    let download = app.download(details["file_url"].as_str().unwrap()).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert!(download.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let bytes = download.bytes().await.unwrap();
    assert_eq!(details["file_size"], bytes.len());
    assert_eq!(details["sha256"], sha256_hex(&bytes));

    let records = parse_csv(&bytes);
    let header: Vec<String> = records[0].iter().map(|f| f.clone().unwrap()).collect();
    assert_eq!(
        header,
        [
            "id",
            "account_id",
            "txn_date",
            "posted_at",
            "description",
            "counterparty",
            "amount",
            "currency",
            "reference"
        ]
    );
    let expected = app.source_rows("ACC-1", "2024-01-01", "2024-01-31").await;
    assert_eq!(expected.len(), 5);
    let expected: Vec<_> = expected.into_iter().map(documented_conventions).collect();
    assert_eq!(&records[1..], &expected[..], "every row and column equals the source");
    // Spot-check the conventions on values we know.
    assert_eq!(records[2][6].as_deref(), Some("9999999999999999.99"), "decimals exactly as stored");
    assert_eq!(records[2][3].as_deref(), Some("2024-01-01T08:15:30.123456"), "ISO 8601, microseconds kept");
    assert_eq!(records[2][5].as_deref(), Some(""), "empty string stays empty string");
    assert_eq!(records[3][8], None, "NULL stays NULL");
    assert_eq!(records[4][4].as_deref(), Some("'=SUM(A1:A9)"), "formula guard on text");
    assert_eq!(records[4][6].as_deref(), Some("0.00"));
    assert_eq!(records[5][4].as_deref(), Some("'-minus"));
    assert_eq!(records[3][6].as_deref(), Some("-9999999999999999.99"), "numbers are never guarded");
}

#[tokio::test]
async fn download_links_refuse_tampering_and_expiry() {
    let app = TestApp::spawn().await;
    app.source_exec(AWKWARD_ROWS).await;
    let key = app.create_key(None).await;
    let accepted: Value = app.post_export(&key, &january("ACC-1")).await.json().await.unwrap();
    let details = app.run_until_settled(&key, accepted["reference_id"].as_str().unwrap()).await;
    let url = details["file_url"].as_str().unwrap();

    // Change the signature's last hex digit (to another digit: a 1-in-16 no-op otherwise).
    let last = if url.ends_with('0') { '1' } else { '0' };
    let tampered_sig = format!("{}{last}", &url[..url.len() - 1]);
    let tampered_expiry = url.replace("expires=", "expires=9");
    let other_file = url.replace("/statement_", "/other_");
    for bad in [tampered_sig, tampered_expiry, other_file] {
        let response = app.download(&bad).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    // An expired link, correctly signed.
    let key_path = url.split("/files/").nth(1).unwrap().split('?').next().unwrap();
    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    let secret = app.config.signing_secret.as_ref().unwrap();
    let signer = shared::signing::UrlSigner::new(secrecy::ExposeSecret::expose_secret(secret).as_bytes());
    let expired =
        format!("{}/files/{key_path}?expires={past}&signature={}", app.base_url, signer.sign(key_path, past));
    let response = app.download(&expired).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("expired"), "{problem}");
}

#[tokio::test]
async fn an_empty_statement_is_a_header_only_file() {
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let accepted: Value = app.post_export(&key, &january("ACC-NOBODY")).await.json().await.unwrap();
    let details = app.run_until_settled(&key, accepted["reference_id"].as_str().unwrap()).await;
    assert_eq!(details["status"], "COMPLETED");
    assert_eq!(details["row_count"], 0);
    let bytes = app.download(details["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    assert_eq!(parse_csv(&bytes).len(), 1, "header row only");
}
