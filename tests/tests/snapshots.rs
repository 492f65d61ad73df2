//! An export's file is one consistent snapshot of the source, whatever the server's default
//! isolation level: a row committed while the export streams is not in it, and reads of several
//! statements share one snapshot. The statement reads exactly its range through the index that
//! starts with the account and the date.

use mysql_async::prelude::Queryable as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::{
    source::{Source, Statements},
    tables::TableRegistry,
};
use testkit::{TestApp, replica::PrivateMariaDb};
use worker::holds::HoldPoint;

const ROWS: u64 = 200_000;

/// Isolation levels a server may default to, in `SET GLOBAL TRANSACTION ISOLATION LEVEL` spelling.
const LEVELS: [&str; 4] = ["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"];

fn year_2024() -> Value {
    json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

/// A row committed after the export has streamed its first chunk (the worker held there) is not
/// in the file, on the first day (streamed past) or the last (not reached yet). Checked on a
/// server whose default is READ UNCOMMITTED, where a statement left at the server's default
/// reads rows as they are committed.
#[tokio::test]
async fn a_row_committed_after_the_first_chunk_is_not_in_the_file() {
    let server = PrivateMariaDb::start(&["--transaction-isolation=READ-UNCOMMITTED"]).await;
    let app =
        TestApp::spawn_with_source(&server.admin_url(), &server.host_port(), TableRegistry::demo(), |_| {})
            .await;
    app.insert_generated_rows("ACC-BIG", 1, ROWS).await;
    let key = app.create_key(None).await;
    let created: Value = app.post_export(&key, &year_2024()).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let runner = app.runner(TestApp::worker_config());
    let hold = runner.holds().arm(HoldPoint::AfterFirstChunk);
    let worker = runner.spawn();

    hold.reached().await;
    app.source_exec(
        "INSERT INTO bank_transactions VALUES
         (900000001, 'ACC-BIG', '2024-01-01', '2024-01-01 00:00:00', 'late', NULL, 1.00, 'EUR', NULL),
         (900000002, 'ACC-BIG', '2024-12-31', '2024-12-31 00:00:00', 'late', NULL, 1.00, 'EUR', NULL)",
    )
    .await;
    hold.release();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    worker.stop().await;
    let details: Value = app.get_export(&key, &id).await.json().await.unwrap();
    assert_eq!(details["row_count"], ROWS, "the export saw its snapshot only");
    let bytes = app.download(details["file_url"].as_str().unwrap()).await.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.lines().count() as u64, ROWS + 1, "header and rows");
    assert!(!text.contains(",late,"));
}

/// Reads of several statements (a format that sums before it lists, say) see one snapshot, and
/// plain reads: never locking reads that would hold up the replication writing to a replica.
#[tokio::test]
async fn several_statements_share_one_snapshot_whatever_the_default_isolation() {
    let server = PrivateMariaDb::start(&[]).await;
    server.exec("CREATE DATABASE snap; CREATE TABLE snap.t (id INT PRIMARY KEY) ENGINE = InnoDB").await;
    server.exec("INSERT INTO snap.t VALUES (1)").await;
    for level in LEVELS {
        // Sessions take the server's default when they connect.
        server.exec(&format!("SET GLOBAL TRANSACTION ISOLATION LEVEL {level}")).await;
        let url = SecretString::from(format!("mysql://root@{}/snap", server.host_port()));
        let source = Source::new(&url, 1).unwrap();
        let mut conn = source.connect().await.unwrap();
        let snapshot = source.snapshot_with_basis(&mut conn, None, Statements::Several).await.unwrap();
        let count = "SELECT count(*) FROM t";
        let before: u64 = conn.query_first(count).await.unwrap().unwrap();
        let insert = server.exec("INSERT INTO snap.t SELECT max(id) + 1 FROM snap.t");
        tokio::time::timeout(std::time::Duration::from_secs(10), insert)
            .await
            .unwrap_or_else(|_| panic!("{level}: the snapshot's reads lock rows a writer needs"));
        let within: u64 = conn.query_first(count).await.unwrap().unwrap();
        assert_eq!(within, before, "{level}: a row committed between the statements is not seen");
        snapshot.end(&mut conn).await.unwrap();
        let after: u64 = conn.query_first(count).await.unwrap().unwrap();
        assert_eq!(after, before + 1, "{level}: the snapshot ended");
        Source::discard(conn).await;
        source.disconnect().await;
    }
}

/// A big account's statement over a few of its days reads those days only: the worker names the
/// index that starts with (account, date), where the optimizer on its own scans the account's
/// entries from its first day (measured: three million entries for a million rows).
#[tokio::test]
async fn an_export_reads_only_its_range_of_a_big_account() {
    let server = PrivateMariaDb::start(&[]).await;
    let app =
        TestApp::spawn_with_source(&server.admin_url(), &server.host_port(), TableRegistry::demo(), |_| {})
            .await;
    // 86,400 rows a day from 2024-01-01: the account's last full day is 2024-01-04.
    app.insert_generated_rows("ACC-BIG", 1, 4 * 86_400).await;
    app.insert_generated_rows("ACC-SMALL", 1_000_001, 100).await;
    app.source_exec("ANALYZE TABLE bank_transactions").await;
    let key = app.create_key(None).await;
    let last_day = json!({"account_id": "ACC-BIG", "table_name": "bank_transactions",
                          "date_from": "2024-01-04", "date_to": "2024-01-04"});
    let examined = "SELECT variable_value FROM information_schema.global_status \
                    WHERE variable_name = 'HANDLER_ICP_ATTEMPTS'";
    let before: u64 = server.query_first::<String>(examined).await.parse().unwrap();
    let created: Value = app.post_export(&key, &last_day).await.json().await.unwrap();
    let id = created["reference_id"].as_str().unwrap().to_owned();
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["row_count"], 86_400, "{details}");
    let after: u64 = server.query_first::<String>(examined).await.parse().unwrap();
    assert!(
        after - before <= 86_400 + 1,
        "index entries examined for 86,400 rows: {} (the account holds {})",
        after - before,
        4 * 86_400
    );
}
