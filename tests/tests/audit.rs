//! The audit trail: every administrative action (dashboard, API, command line) is recorded with
//! its actor, client, target and outcome; the rows form a hash chain that `statement-api audit
//! verify` and an independent Python checker (tests/python/audit_chain.py) both verify, that
//! Postgres refuses to change, and that shows an edit or a deletion made behind its back.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{StatusCode, TestApp, dashboard::DashboardClient};

fn january() -> Value {
    json!({"account_id": "ACC-1", "table_name": "bank_transactions", "date_from": "2024-01-01", "date_to": "2024-01-31"})
}

/// (actor_kind, action, outcome) of every row, in chain order.
fn rows(app: &TestApp) -> Vec<(String, String, String)> {
    app.psql("SELECT actor_kind, action, outcome FROM audit_log ORDER BY seq")
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.split('|').map(str::to_owned);
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
        })
        .collect()
}

fn row(kind: &str, action: &str, outcome: &str) -> (String, String, String) {
    (kind.to_owned(), action.to_owned(), outcome.to_owned())
}

/// Waits for the API's batched records: `action` recorded `n` times.
async fn wait_for(app: &TestApp, action: &str, n: usize) {
    for _ in 0..100 {
        if rows(app).iter().filter(|r| r.1 == action).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{action} was not recorded {n} times: {:?}", rows(app));
}

/// `statement-api audit verify`: (exit success, stdout + stderr).
fn verify(app: &TestApp) -> (bool, String) {
    let output = app.cli(&["audit", "verify"]);
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The independent checker's verdict on the chain as psql reads it.
fn python_verdict(app: &TestApp) -> String {
    let lines = app
        .psql(
            r#"SELECT row_to_json(r) FROM (
                 SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
                        to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,
                        actor_kind, actor_id, actor_name, action, target, outcome, client_addr, details,
                        encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash
                 FROM audit_log ORDER BY seq) r"#,
        )
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/audit_chain.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn every_administrative_action_is_recorded_once_in_a_chain_that_shows_tampering() {
    let app = TestApp::spawn().await;
    // The command line: a key created and one revoked, by whoever ran it on this host.
    let output = app.cli(&["keys", "create", "--name", "root", "--role", "admin"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let admin_key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let client_key = app.create_key(None).await;

    // Break-glass sign-in: a wrong key first (refused, recorded), then the admin key.
    let mut browser = DashboardClient::new(&app);
    let refused = browser.sign_in("sk_not_a_real_key_at_all").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    browser.sign_in(&admin_key).await;
    let page = browser.get("/dashboard").await;
    assert!(page.body.contains("break-glass"), "the header says how this session signed in");

    // Keys on the dashboard.
    browser.get("/admin/api-keys").await;
    let created = browser
        .post("/admin/api-keys", &[("name", "audited"), ("role", "client"), ("accounts", "ACC-1")])
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let db = app.pool.get().await.unwrap();
    let id: uuid::Uuid =
        db.query_one("SELECT id FROM api_keys WHERE name = 'audited'", &[]).await.unwrap().get(0);
    for action in ["deactivate", "deactivate", "reactivate", "delete"] {
        browser.post(&format!("/admin/api-keys/{id}/{action}"), &[]).await;
    }

    // The API: a request that creates, one answered by the same export, a cancel and a second
    // cancel of the finished export.
    let first: Value = app.post_export(&client_key, &january()).await.json().await.unwrap();
    let reference = first["reference_id"].as_str().unwrap().to_owned();
    // Repeats: identical records within a flush are one row that counts them.
    for _ in 0..6 {
        assert_eq!(app.post_export(&client_key, &january()).await.status(), StatusCode::OK);
    }
    for expected in [StatusCode::OK, StatusCode::CONFLICT] {
        let cancelled = app
            .http
            .post(format!("{}/api/export/{reference}/cancel", app.base_url))
            .bearer_auth(&client_key)
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status(), expected);
    }

    // A job cancelled from the queue page, then the same again (already finished).
    let other: Value = app
        .post_export(&client_key, &json!({"account_id": "ACC-2", "table_name": "bank_transactions", "date_from": "2024-02-01", "date_to": "2024-02-29"}))
        .await
        .json()
        .await
        .unwrap();
    let export_id = uuid::Uuid::parse_str(other["reference_id"].as_str().unwrap()).unwrap();
    let job: i64 =
        db.query_one("SELECT job_id FROM exports WHERE id = $1", &[&export_id]).await.unwrap().get(0);
    browser.get("/dashboard/queue").await;
    for _ in 0..2 {
        assert_eq!(
            browser.post(&format!("/dashboard/jobs/{job}/cancel"), &[]).await.status,
            StatusCode::SEE_OTHER
        );
    }
    browser.post("/dashboard/sign-out", &[]).await;
    let revoked = app.cli(&["keys", "revoke", &client_key[..11]]);
    assert!(revoked.status.success());
    wait_for(&app, "export.cancel", 2).await;

    let recorded = rows(&app);
    let expected = vec![
        row("system", "api_key.create", "success"),
        row("break_glass", "sign_in", "denied"),
        row("break_glass", "sign_in", "success"),
        row("break_glass", "api_key.create", "success"),
        row("break_glass", "api_key.deactivate", "success"),
        row("break_glass", "api_key.deactivate", "unchanged"),
        row("break_glass", "api_key.reactivate", "success"),
        row("break_glass", "api_key.delete", "success"),
        row("break_glass", "job.cancel", "success"),
        row("break_glass", "job.cancel", "unchanged"),
        row("break_glass", "sign_out", "success"),
        row("system", "api_key.revoke", "success"),
    ];
    // API records arrive in batches: the others in their order, then the API's by what they
    // stand for.
    let others: Vec<_> = recorded.iter().filter(|r| r.0 != "api_key").cloned().collect();
    assert_eq!(others, expected);
    let api = app
        .psql(
            "SELECT action, outcome, details::jsonb->>'result', sum(coalesce((details::jsonb->>'requests')::int, 1)),
                    max(coalesce((details::jsonb->>'requests')::int, 1))
             FROM audit_log WHERE actor_kind = 'api_key' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .unwrap();
    let api: Vec<&str> = api.lines().collect();
    assert_eq!(api.len(), 4, "{api:?}");
    assert_eq!(api[0], "export.cancel|success|cancelled|1|1");
    assert_eq!(api[1], "export.cancel|unchanged|already_finished|1|1");
    assert_eq!(api[2], "export.request|success|created|2|1");
    let reused: Vec<&str> = api[3].split('|').collect();
    assert_eq!(reused[..4], ["export.request", "success", "reused", "6"]);
    assert!(reused[4].parse::<i32>().unwrap() >= 3, "six repeats in a few milliseconds share rows: {api:?}");

    // Who, from where, to what.
    let detail = app
        .psql(
            "SELECT actor_name, client_addr, target, details FROM audit_log
             WHERE action = 'api_key.deactivate' ORDER BY seq LIMIT 1",
        )
        .unwrap();
    let admin_label = format!("root ({}…)", &admin_key[..11]);
    assert_eq!(detail.trim(), format!("{admin_label}|127.0.0.1|api_key:{id}|{{\"revoked\":false}}"));
    let requested = app
        .psql("SELECT target, details FROM audit_log WHERE action = 'export.request' ORDER BY seq LIMIT 1")
        .unwrap();
    assert_eq!(
        requested.trim(),
        format!("export:{reference}|{{\"account_id\":\"ACC-1\",\"result\":\"created\"}}")
    );
    // No secret is ever recorded: neither key appears beyond its display prefix.
    let everything = app.psql("SELECT row_to_json(a) FROM audit_log a").unwrap();
    for secret in [&admin_key, &client_key] {
        assert!(!everything.contains(&secret[11..]), "a key's secret part reached the audit trail");
    }

    // The Audit page filters by action and by actor.
    let mut browser = DashboardClient::signed_in(&app, &admin_key).await;
    let page = browser.get("/dashboard/audit?action=api_key.deactivate").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("<td class=\"mono\">api_key.deactivate</td>").count(), 2, "{}", page.body);
    assert!(!page.body.contains(">api_key.reactivate</td>"));
    let page = browser.get("/dashboard/audit?actor=root&action=sign_in").await;
    assert!(page.body.contains(">sign_in</td>"));
    let page = browser.get("/dashboard/audit?from=2001-01-01&to=2001-12-31").await;
    assert!(page.body.contains("Nothing recorded matches."));
    assert_eq!(browser.get("/dashboard/audit?from=yesterday").await.status, StatusCode::BAD_REQUEST);

    // Both checkers find the chain intact and agree on its head.
    let (ok, text) = verify(&app);
    assert!(ok, "{text}");
    let head = text.split("head ").nth(1).expect("the head is printed").trim().to_owned();
    let (seq, hash) = head.split_once(':').unwrap();
    let verdict = python_verdict(&app);
    assert_eq!(verdict, format!("intact {seq} {hash}"));
    let expect = app.cli(&["audit", "verify", "--expect", &head]);
    assert!(expect.status.success());

    // Postgres refuses to change a row, even for the table's owner.
    for sql in [
        "UPDATE audit_log SET outcome = 'success' WHERE outcome = 'denied'",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ] {
        let refused = app.psql(sql).expect_err(sql);
        assert!(refused.contains("audit_log is append-only"), "{sql}: {refused}");
    }

    // Behind its back (a superuser with triggers off): the refused sign-in made to look allowed.
    let denied: i64 = app
        .psql("SELECT seq FROM audit_log WHERE outcome = 'denied' ORDER BY seq LIMIT 1")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    app.psql(&format!(
        "SET session_replication_role = replica; UPDATE audit_log SET outcome = 'success' WHERE seq = {denied}"
    ))
    .unwrap();
    let (ok, text) = verify(&app);
    assert!(!ok, "an altered row must fail verification: {text}");
    assert!(text.contains(&format!("broken at row {denied}")), "{text}");
    assert_eq!(python_verdict(&app), format!("broken {denied} hash"));
    // Put back, the chain holds again; then a row deleted breaks it where it was.
    app.psql(&format!(
        "SET session_replication_role = replica; UPDATE audit_log SET outcome = 'denied' WHERE seq = {denied}"
    ))
    .unwrap();
    assert!(verify(&app).0);
    app.psql("SET session_replication_role = replica; DELETE FROM audit_log WHERE seq = 5").unwrap();
    let (ok, text) = verify(&app);
    assert!(!ok);
    assert!(text.contains("broken at row 5: row 5 is missing"), "{text}");
    assert_eq!(python_verdict(&app), "broken 5 missing");
    // The end cut off: only a head kept elsewhere shows it.
    app.psql(&format!(
        "SET session_replication_role = replica; DELETE FROM audit_log WHERE seq >= 5 OR seq = {seq}"
    ))
    .unwrap();
    assert!(verify(&app).0, "a chain cut back is still a chain");
    assert!(!app.cli(&["audit", "verify", "--expect", &head]).status.success());
}

#[tokio::test]
async fn concurrent_appends_from_many_connections_make_one_gapless_chain() {
    let app = TestApp::spawn().await;
    let actor = shared::audit::Actor {
        kind: shared::audit::ActorKind::System,
        id: "test".into(),
        name: "test".into(),
    };
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (pool, actor) = (app.pool.clone(), actor.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let mut db = pool.get().await.unwrap();
                let events: Vec<_> = (0..(i % 3 + 1))
                    .map(|n| {
                        shared::audit::Event::new(
                            actor.clone(),
                            "test.append",
                            Some(format!("{task}/{i}/{n}")),
                            shared::audit::Outcome::Success,
                        )
                    })
                    .collect();
                shared::audit::record_alone(&mut db, &events).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected = 8 * (0..25).map(|i| i % 3 + 1).sum::<i64>();
    let db = app.pool.get().await.unwrap();
    match shared::audit::verify(&db).await.unwrap() {
        shared::audit::Verdict::Intact { rows, head } => {
            assert_eq!(rows as i64, expected);
            assert_eq!(head.unwrap().0, expected);
        }
        broken => panic!("{broken:?}"),
    }
    assert!(python_verdict(&app).starts_with(&format!("intact {expected} ")));
}

#[tokio::test]
async fn the_maintenance_leader_logs_the_chain_head_as_it_moves() {
    let app = TestApp::spawn().await;
    let output = app.cli(&["keys", "create", "--name", "first", "--role", "admin"]);
    assert!(output.status.success());
    let log = app.storage_dir.join("worker.log");
    let _worker = testkit::WorkerProcess::start_logging(
        &app,
        testkit::workspace_binary("statement-worker"),
        &[("RUST_LOG", "info".into())],
        Some(&log),
    );
    let head_of = |app: &TestApp| {
        app.psql("SELECT seq || ':' || encode(hash, 'hex') FROM audit_log ORDER BY seq DESC LIMIT 1")
            .unwrap()
            .trim()
            .to_owned()
    };
    let logged = |head: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(head);
    let first = head_of(&app);
    for _ in 0..100 {
        if logged(&first) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logged(&first),
        "the head {first} is logged: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // A new row moves the head: the next housekeeping pass logs it.
    assert!(app.cli(&["keys", "create", "--name", "second", "--role", "admin"]).status.success());
    let second = head_of(&app);
    assert_ne!(first, second);
    for _ in 0..100 {
        if logged(&second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged(&second), "the moved head {second} is logged");
    // The logged head is what `verify --expect` takes.
    assert!(app.cli(&["audit", "verify", "--expect", &second]).status.success());
}
