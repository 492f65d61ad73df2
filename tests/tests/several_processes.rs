//! Several processes, as on several machines: two API processes and two worker processes (the
//! built binaries, each its own process with its own pools and memory) against one Postgres
//! database, one source and one storage.
//!
//! - identical requests sent to both APIs at once make one export (one row, one job);
//! - a download link signed by one API downloads through the other (a shared `SIGNING_SECRET`);
//! - both workers claim from the one queue;
//! - when the maintenance leader is killed (SIGKILL: no goodbye), the other worker takes the lead,
//!   seen in Postgres's own lock table, in the registry, and in what the leader does;
//! - the per-key rate limit is per API process: with burst B, two APIs admit exactly 2B.
//!
//! The binaries are the workspace's (`cargo test --workspace` builds them; see
//! `testkit::workspace_binary`).

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use shared::db::AdvisoryLock;
use testkit::{ApiProcess, FileHold, StatusCode, TestApp, WorkerProcess, sha256_hex, workspace_binary};

fn statement(account: &str) -> Value {
    json!({"account_id": account, "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-12-31"})
}

async fn post(app: &TestApp, api: &ApiProcess, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = app
        .http
        .post(format!("{}/api/export", api.base_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn details(app: &TestApp, api: &ApiProcess, key: &str, id: &str) -> Value {
    let response =
        app.http.get(format!("{}/api/export/{id}", api.base_url)).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn one_value<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    app: &TestApp,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T {
    let db = app.pool.get().await.unwrap();
    db.query_one(sql, params).await.unwrap().get(0)
}

/// The `application_name` of the session holding the maintenance leader's advisory lock in this
/// test's database, as Postgres sees it (not as the workers report it), if any.
async fn lock_holder(app: &TestApp) -> Option<String> {
    let db = app.pool.get().await.unwrap();
    let row = db
        .query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
            &[&AdvisoryLock::MaintenanceLeader.key()],
        )
        .await
        .unwrap();
    row.map(|r| r.get(0))
}

/// Waits (at most 30 s) until `holder` holds the leader's lock; returns how long it took.
async fn wait_for_lock_holder(app: &TestApp, holder: &str) -> Duration {
    let start = Instant::now();
    while lock_holder(app).await.as_deref() != Some(holder) {
        assert!(start.elapsed() < Duration::from_secs(30), "{holder} never took the maintenance lead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A worker process "on machine `name`": its registry host and its Postgres sessions say so.
fn worker_on(app: &TestApp, name: &str, extra: &[(&str, String)]) -> WorkerProcess {
    use secrecy::ExposeSecret;
    let url = format!("{}?application_name={name}", app.config.database_url.expose_secret());
    let mut settings = vec![
        ("DATABASE_URL", url),
        ("HOSTNAME", name.to_owned()),
        // One export at a time: a held export keeps its worker busy.
        ("WORKER_CONCURRENCY", "1".to_owned()),
    ];
    settings.extend(extra.iter().cloned());
    WorkerProcess::start(app, workspace_binary("statement-worker"), &settings)
}

#[tokio::test]
async fn two_apis_and_two_workers_make_one_export_per_request_share_links_and_the_queue_and_fail_over() {
    let app = TestApp::spawn().await;
    app.insert_generated_rows("ACC-A", 1, 2_000).await;
    app.insert_generated_rows("ACC-B", 100_000, 1_000).await;
    let key = app.create_key(None).await;
    let api_binary = workspace_binary("statement-api");
    let a = ApiProcess::start(&app, &api_binary, &[]).await;
    let b = ApiProcess::start(&app, &api_binary, &[]).await;

    // Worker A on "machine-a" is held once it has uploaded its first export (before completing
    // the upload), so that the second export can only be run by the other worker.
    let hold = FileHold::new();
    let worker_a = worker_on(&app, "machine-a", &[hold.setting("before_upload_finish")]);

    // 1. Identical requests, twenty to each API, all at once: one export, one job.
    let body = statement("ACC-A");
    let requests = (0..40).map(|i| {
        let api = if i % 2 == 0 { &a } else { &b };
        post(&app, api, &key, &body)
    });
    let answers = join_all(requests).await;
    for (status, answer) in &answers {
        assert!(matches!(*status, StatusCode::ACCEPTED | StatusCode::OK), "{status} {answer}");
    }
    let id = answers[0].1["reference_id"].as_str().unwrap().to_owned();
    for (_, answer) in &answers {
        assert_eq!(answer["reference_id"], id.as_str(), "every answer names the one export: {answer}");
    }
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::ACCEPTED).count();
    assert_eq!(created, 1, "exactly one request created the export, the others reused it");
    let (exports, jobs): (i64, i64) = {
        let db = app.pool.get().await.unwrap();
        let row =
            db.query_one("SELECT (SELECT count(*) FROM exports), (SELECT count(*) FROM jobs)", &[]).await;
        let row = row.unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((exports, jobs), (1, 1), "one export row and one job for 40 identical requests to two APIs");

    // 2. Worker A runs it and is held; worker B, started now, runs the next export (asked of B).
    hold.reached().await;
    let worker_b = worker_on(&app, "machine-b", &[]);
    let (status, second) = post(&app, &b, &key, &statement("ACC-B")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    let second_id = second["reference_id"].as_str().unwrap().to_owned();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{second_id}'")).await;
    hold.release();
    app.wait_for(&format!("SELECT status = 'COMPLETED' FROM exports WHERE id = '{id}'")).await;
    let ran_on = |export: &str| {
        format!("SELECT j.worker_id FROM exports e JOIN jobs j ON j.id = e.job_id WHERE e.id = '{export}'")
    };
    let first_worker: String = one_value(&app, &ran_on(&id), &[]).await;
    let second_worker: String = one_value(&app, &ran_on(&second_id), &[]).await;
    assert!(first_worker.starts_with("machine-a:"), "the first export ran on worker A: {first_worker}");
    assert!(second_worker.starts_with("machine-b:"), "the second export ran on worker B: {second_worker}");

    // 3. A link signed by one API downloads through the other, both ways; a forged one does not.
    for (signer, server, export) in [(&a, &b, &id), (&b, &a, &second_id)] {
        let done = details(&app, signer, &key, export).await;
        let url = done["file_url"].as_str().unwrap();
        assert!(url.starts_with(&signer.base_url), "signed by {}: {url}", signer.base_url);
        let through_other = url.replacen(&signer.base_url, &server.base_url, 1);
        let response = app.download(&through_other).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "a link signed by {} through {}",
            signer.base_url,
            server.base_url
        );
        let bytes = response.bytes().await.unwrap();
        assert_eq!(done["sha256"].as_str().unwrap(), sha256_hex(&bytes), "the file the export describes");
        let forged = through_other.replacen("signature=", "signature=0", 1);
        assert_eq!(app.download(&forged).await.status(), StatusCode::FORBIDDEN, "a forged signature");
    }

    // 4. The maintenance leader is killed; the other worker takes over.
    let leader_name = {
        let start = Instant::now();
        loop {
            if let Some(holder) = lock_holder(&app).await {
                break holder;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no worker took the maintenance lead");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (leader, survivor, survivor_name) = match leader_name.as_str() {
        "machine-a" => (&worker_a, &worker_b, "machine-b"),
        "machine-b" => (&worker_b, &worker_a, "machine-a"),
        other => panic!("the maintenance lock is held by {other:?}, not by a worker of this test"),
    };
    let leads = "SELECT is_leader FROM workers WHERE pid = $1";
    app.wait_for(&format!("SELECT is_leader FROM workers WHERE pid = {}", leader.pid())).await;
    let survivor_leads: bool = one_value(&app, leads, &[&(survivor.pid() as i32)]).await;
    assert!(!survivor_leads, "one leader at a time");

    leader.signal("KILL");
    let took_over = wait_for_lock_holder(&app, survivor_name).await;
    eprintln!("maintenance leader failover after SIGKILL: {} ms", took_over.as_millis());
    app.wait_for(&format!("SELECT is_leader FROM workers WHERE pid = {}", survivor.pid())).await;

    // What only the leader does: retention. The first export's time is up; the new leader
    // deletes its file and marks it EXPIRED.
    let file_key: String =
        one_value(&app, &format!("SELECT file_key FROM exports WHERE id = '{id}'"), &[]).await;
    assert!(app.storage_dir.join(&file_key).exists());
    app.pool
        .get()
        .await
        .unwrap()
        .execute(
            &format!("UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = '{id}'"),
            &[],
        )
        .await
        .unwrap();
    app.wait_for(&format!("SELECT status = 'EXPIRED' FROM exports WHERE id = '{id}'")).await;
    assert!(!app.storage_dir.join(&file_key).exists(), "the new leader deleted the expired file");
    assert_eq!(lock_holder(&app).await.as_deref(), Some(survivor_name));
}

#[tokio::test]
async fn the_rate_limit_is_per_api_process_two_apis_admit_twice_the_burst() {
    // Burst 5, then one request a minute: quick requests see the burst alone.
    const BURST: usize = 5;
    let app = TestApp::spawn().await;
    let key = app.create_key(None).await;
    let limits = [("RATE_LIMIT_PER_MINUTE", "1".to_owned()), ("RATE_LIMIT_BURST", BURST.to_string())];
    let api_binary = workspace_binary("statement-api");
    let a = ApiProcess::start(&app, &api_binary, &limits).await;
    let b = ApiProcess::start(&app, &api_binary, &limits).await;

    // Three times the burst to each API, all at once.
    let requests = (0..6 * BURST).map(|i| {
        let api = if i % 2 == 0 { &a } else { &b };
        let request = app.http.get(format!("{}/api/exports?limit=1", api.base_url)).bearer_auth(&key).send();
        async move { (api.base_url.clone(), request.await.unwrap()) }
    });
    let mut admitted = std::collections::HashMap::<String, usize>::new();
    for (api, response) in join_all(requests).await {
        match response.status() {
            StatusCode::OK => *admitted.entry(api).or_default() += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
            }
            other => panic!("{api}: {other}"),
        }
    }
    assert_eq!(admitted.get(&a.base_url), Some(&BURST), "API A admits its own burst: {admitted:?}");
    assert_eq!(admitted.get(&b.base_url), Some(&BURST), "API B admits its own burst: {admitted:?}");
    assert_eq!(admitted.values().sum::<usize>(), 2 * BURST, "N processes admit N × RATE_LIMIT_BURST");
}
