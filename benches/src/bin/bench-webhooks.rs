//! `make bench-webhooks`: how fast completion webhooks go out, and how soon after the export.
//!
//! A fresh database, one API key with one endpoint on a receiver in this process (poem, HTTP
//! over loopback, answering 204), and a real worker runner (the service's code, woken by
//! LISTEN/NOTIFY, `WORKER_CONCURRENCY` slots). Exports are moved to COMPLETED by SQL, as the
//! worker's completion does: the trigger on `exports` writes each event, delivery and job in
//! that transaction, so what is measured is everything after the export's completion (the
//! worker's wake-up and claim, rendering the body, signing, the HTTP request, the log).
//!
//! Prints `name: value` lines:
//! - `webhook_delivery_p50_ms`, `webhook_delivery_p99_ms`: from an export's `completed_at` to
//!   its delivery's arrival at the receiver, one export at a time on an idle queue
//!   (`BENCH_PICKUPS`, 200; the goal is a p99 under 100 ms);
//! - `webhooks_per_s`: `BENCH_WEBHOOKS` (2,000) exports completed in one statement, delivered
//!   (from that commit to the last arrival); `burst_delivery_p99_ms` their completion-to-arrival
//!   p99.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use benchkit::{figure, fresh_database, percentile};
use poem::{EndpointExt as _, handler, http::StatusCode, web::Data};
use secrecy::SecretString;
use shared::{
    api_keys::{self, KeySpec, Role},
    config::{Config, StorageConfig, WebhookConfig, WorkerConfig},
    webhooks::{self, EventType, address::Policy},
};
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What arrived: export id → arrival time.
#[derive(Clone, Default)]
struct Arrivals {
    at: Arc<Mutex<HashMap<Uuid, SystemTime>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl Arrivals {
    fn count(&self) -> usize {
        self.at.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.notify.notified();
            if self.count() >= n {
                return Ok(());
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .with_context(|| format!("{} of {n} webhooks arrived within 60 s", self.count()))?;
        }
    }
}

/// The receiver: records the export a delivery is about and when it arrived.
#[handler]
fn receive(Data(arrivals): Data<&Arrivals>, body: Vec<u8>) -> StatusCode {
    let now = SystemTime::now();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(id) = event["data"]["reference_id"].as_str().and_then(|id| id.parse().ok()) {
        arrivals.at.lock().unwrap().insert(id, now);
        arrivals.notify.notify_waiters();
    }
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pickups = env_usize("BENCH_PICKUPS", 200);
    let burst = env_usize("BENCH_WEBHOOKS", 2000);
    let concurrency = env_usize("WORKER_CONCURRENCY", WorkerConfig::default().concurrency);
    let url = fresh_database("stmt_bench_webhooks").await?;
    let pool = shared::db::pool(&SecretString::from(url.clone()), 4)?;
    let db = pool.get().await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = listener.local_addr()?;
    let arrivals = Arrivals::default();
    let app = poem::Route::new().at("/hook", poem::post(receive)).data(arrivals.clone());
    tokio::spawn(
        poem::Server::new_with_acceptor(poem::listener::TcpAcceptor::from_tokio(listener)?).run(app),
    );

    let spec =
        KeySpec { name: "bench", description: "", role: Role::Client, accounts: &[], all_accounts: true };
    let (key, _) = api_keys::create(&db, &spec).await?;
    let policy = Policy { allow_http: true, allow_private: true };
    let endpoint_url =
        policy.check_url(&format!("http://{receiver}/hook")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let new = webhooks::NewEndpoint {
        url: &endpoint_url,
        description: "bench",
        event_types: &[EventType::ExportCompleted],
    };
    let mut conn = pool.get().await?;
    webhooks::create(&mut conn, key.id, &new, 1).await?;

    let exports = pickups + burst;
    db.execute(
        "WITH made AS (
             INSERT INTO exports (id, request_hash, api_key_id, account_id, table_name, date_from, date_to,
                                  status, started_at, snapshot_at, file_key, file_size, row_count, rows_exported, sha256)
             SELECT gen_random_uuid(), sha256(convert_to('bench-' || i, 'UTF8')), $1, 'ACC-' || (i % 100),
                    'bank_transactions', '2024-01-01', '2024-01-31', 'PROCESSING', now(), now(),
                    'exports/bench/' || i || '.csv', 1000, 10, 10, repeat('ab', 32)
             FROM generate_series(1, $2::int) AS i
             RETURNING id
         )
         INSERT INTO export_requesters (export_id, api_key_id) SELECT id, $1 FROM made",
        &[&key.id, &(exports as i32)],
    )
    .await?;
    let ids: Vec<Uuid> =
        db.query("SELECT id FROM exports ORDER BY id", &[]).await?.iter().map(|r| r.get(0)).collect();

    let storage = std::env::temp_dir().join(format!("stmt-bench-webhooks-{}", std::process::id()));
    let config = Config {
        database_url: SecretString::from(url.clone()),
        database_direct_url: None,
        source_database_url: SecretString::from("mysql://unused:unused@127.0.0.1:1/unused".to_owned()),
        storage: StorageConfig::Local { root: storage.clone() },
        upload_part_size: 5 * 1024 * 1024,
        download_url_ttl: Duration::from_secs(300),
        signing_secret: None,
        tables: shared::tables::TableRegistry::demo(),
        export_max_attempts: 5,
        export_retention: Duration::from_secs(30 * 86_400),
        formula_guard: true,
        webhooks: WebhookConfig { policy, ..WebhookConfig::default() },
        statement_time_zone: shared::time_zones::StatementZone::utc(),
        formats: shared::formats::FormatSettings::default(),
        schedules: shared::config::ScheduleConfig::default(),
    };
    let worker_config = WorkerConfig { concurrency, ..WorkerConfig::default() };
    let ctx = worker::context(&config, &worker_config)?;
    let runner = worker::runner::Runner::new(ctx, worker_config, SecretString::from(url.clone())).spawn();
    // The worker is listening once a first delivery goes through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("worker_concurrency: {concurrency}");

    // One at a time, on an idle queue.
    let complete = "UPDATE exports SET status = 'COMPLETED', completed_at = now(), expires_at = now() + interval '30 days'
                    WHERE id = ANY($1) RETURNING id, completed_at";
    let mut latencies = Vec::with_capacity(pickups);
    for (n, id) in ids[..pickups].iter().enumerate() {
        let row = db.query_one(complete, &[&vec![*id]]).await?;
        let completed_at: SystemTime = row.get::<_, time::OffsetDateTime>(1).into();
        arrivals.wait_for(n + 1).await?;
        let arrived = arrivals.at.lock().unwrap()[id];
        latencies.push(arrived.duration_since(completed_at).unwrap_or_default().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    figure("webhook_delivery_p50_ms", percentile(&latencies, 50.0));
    figure("webhook_delivery_p99_ms", percentile(&latencies, 99.0));

    // A burst: many exports complete at once.
    let started = Instant::now();
    let rows = db.query(complete, &[&ids[pickups..].to_vec()]).await?;
    arrivals.wait_for(exports).await?;
    let elapsed = started.elapsed().as_secs_f64();
    figure("webhooks_per_s", burst as f64 / elapsed);
    let at = arrivals.at.lock().unwrap().clone();
    let mut burst_latencies: Vec<f64> = rows
        .iter()
        .map(|row| {
            let completed_at: SystemTime = row.get::<_, time::OffsetDateTime>(1).into();
            at[&row.get::<_, Uuid>(0)].duration_since(completed_at).unwrap_or_default().as_secs_f64() * 1000.0
        })
        .collect();
    burst_latencies.sort_by(f64::total_cmp);
    figure("burst_delivery_p99_ms", percentile(&burst_latencies, 99.0));

    // The log is written once the receiver has answered: give the last ones a moment.
    let mut succeeded = 0;
    for _ in 0..100 {
        succeeded = db
            .query_one("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'", &[])
            .await?
            .get::<_, i64>(0) as usize;
        if succeeded == exports {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(succeeded == exports, "{succeeded} of {exports} deliveries succeeded");
    runner.stop().await;
    let _ = std::fs::remove_dir_all(storage);
    Ok(())
}
