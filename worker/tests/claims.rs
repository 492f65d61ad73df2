//! The real worker binary, stopped, killed and frozen at exact points of an export (file
//! barriers, `WORKER_TEST_HOLD`): a COMPLETED export always has its file, nothing a lost attempt
//! wrote is left behind, and expired leases are rescued even while the maintenance leader hangs.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{FileHold, TestApp, WorkerProcess, files_under, sha256_hex};

const WORKER: &str = env!("CARGO_BIN_EXE_statement-worker");
const ROWS: u64 = 50_000;

fn year_2024() -> Value {
    json!({"account_id": "ACC-BIG", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

async fn app_with_rows() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-BIG", 1, ROWS).await;
    let key = app.create_key(None).await;
    (app, key)
}

async fn request_export(app: &TestApp, key: &str) -> String {
    let created: Value = app.post_export(key, &year_2024()).await.json().await.unwrap();
    created["reference_id"].as_str().unwrap().to_owned()
}

async fn app_with_an_export() -> (TestApp, String, String) {
    let (app, key) = app_with_rows().await;
    let id = request_export(&app, &key).await;
    (app, key, id)
}

/// Downloads a COMPLETED export and checks it against its recorded SHA-256 and row count.
async fn assert_downloadable(app: &TestApp, key: &str, id: &str) {
    let details: Value = app.get_export(key, id).await.json().await.unwrap();
    assert_eq!(details["status"], "COMPLETED", "{details}");
    let response = app.download(details["file_url"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200, "the COMPLETED export's file downloads");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(details["sha256"], sha256_hex(&bytes));
    assert_eq!(testkit::parse_csv(&bytes).len() as u64, ROWS + 1);
}

/// A claim released at shutdown is held at `point` while a second worker completes the export,
/// then goes on.
async fn a_released_claim_held_at(point: &str) {
    let (app, key, id) = app_with_an_export().await;
    let hold = FileHold::new();
    let mut old = WorkerProcess::start(
        &app,
        WORKER,
        &[hold.setting(point), ("WORKER_SHUTDOWN_GRACE_SECS", "0".into())],
    );
    // SIGTERM with no grace: the job goes back to the queue while the old claim is still inside
    // its export.
    hold.reached().await;
    old.signal("TERM");
    app.wait_for("SELECT state = 'available' FROM jobs").await;

    // A second worker re-claims the job and completes the export.
    let details = app.run_until_settled(&key, &id).await;
    assert_eq!(details["status"], "COMPLETED");
    // The old claim goes on: it must neither replace nor delete the new claim's file.
    hold.release();
    assert!(old.wait().success());
    assert_downloadable(&app, &key, &id).await;
}

#[tokio::test]
async fn a_released_claim_never_overwrites_or_deletes_the_file_of_the_claim_that_replaced_it() {
    // Every byte is uploaded; the upload is not completed yet.
    a_released_claim_held_at("before_upload_finish").await;
}

#[tokio::test]
async fn a_released_claim_fenced_out_after_its_upload_deletes_only_its_own_file() {
    // Its file is complete in storage; its record will be refused.
    a_released_claim_held_at("before_record").await;
}

#[tokio::test]
async fn a_file_whose_completion_was_never_recorded_is_removed_by_maintenance() {
    let (app, key, id) = app_with_an_export().await;
    let hold = FileHold::new();
    let killed = WorkerProcess::start(&app, WORKER, &[hold.setting("before_record")]);
    // The file is complete in storage; the worker dies before recording it.
    hold.reached().await;
    killed.signal("KILL");
    drop(killed);

    // A healthy worker (with maintenance) rescues the job, completes the export, and removes
    // the dead attempt's file, which no export refers to.
    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    let export_dir = app.storage_dir.join("exports").join(&id);
    for _ in 0..200 {
        if files_under(&export_dir).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    let files = files_under(&export_dir);
    assert_eq!(files.len(), 1, "only the recorded file is left: {files:?}");
    let recorded: String = {
        let db = app.pool.get().await.unwrap();
        db.query_one("SELECT file_key FROM exports", &[]).await.unwrap().get(0)
    };
    assert_eq!(files[0], app.storage_dir.join(recorded));
    assert_downloadable(&app, &key, &id).await;
}

#[tokio::test]
async fn expired_leases_are_rescued_while_the_maintenance_leader_is_frozen() {
    let (app, key) = app_with_rows().await;
    // The first worker takes maintenance leadership, then freezes (SIGSTOP: a stalled VM keeps
    // its Postgres session and its advisory lock).
    let leader = WorkerProcess::start(&app, WORKER, &[]);
    app.wait_for("SELECT count(*) = 1 FROM workers WHERE is_leader").await;
    leader.signal("STOP");
    let id = request_export(&app, &key).await;
    // A worker crashes holding the export's job: claimed, then never heard from again.
    {
        let db = app.pool.get().await.unwrap();
        let claimed = shared::queue::claim(&db, "crashed-worker", 1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(claimed.len(), 1);
    }

    // Another worker, not the leader, rescues the expired lease and completes the export.
    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    worker.stop().await;
    let leads: bool = {
        let db = app.pool.get().await.unwrap();
        db.query_one("SELECT count(*) = 1 FROM workers WHERE is_leader", &[]).await.unwrap().get(0)
    };
    assert!(leads, "the frozen worker still holds leadership");
    leader.signal("CONT");
    assert_downloadable(&app, &key, &id).await;
}

#[tokio::test]
async fn a_killed_worker_s_multipart_upload_is_aborted_by_maintenance() {
    let moto = testkit::s3::MotoServer::start().await;
    let app = TestApp::spawn_configured(shared::tables::TableRegistry::demo(), |c| {
        c.storage = shared::config::StorageConfig::S3(testkit::s3::s3_config(moto.endpoint()))
    })
    .await;
    app.insert_generated_rows("ACC-BIG", 1, 4 * ROWS).await;
    let key = app.create_key(None).await;
    let id = request_export(&app, &key).await;
    let hold = FileHold::new();
    let killed = WorkerProcess::start(&app, WORKER, &[hold.setting("before_upload_finish")]);
    // Every part is uploaded, the upload is not completed: the worker dies.
    hold.reached().await;
    killed.signal("KILL");
    drop(killed);
    assert_eq!(moto.list_multipart_uploads("exports/").await.len(), 1);

    let worker = app.runner(TestApp::worker_config()).spawn();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    app.wait_for("SELECT count(*) = 0 FROM uploads").await;
    worker.stop().await;
    assert!(moto.list_multipart_uploads("exports/").await.is_empty(), "the dead attempt's parts are gone");
    assert_eq!(moto.list_keys(&format!("exports/{id}/")).await.len(), 1);
}
