//! `TestApp`: the real wiring on real services, one fresh world per test.
//!
//! Each test gets its own Postgres database (migrated), its own MariaDB source database (with
//! the demo table's schema, readable by the service's SELECT-only user), its own storage
//! directory, the API bound on port 0 and an in-process worker runner. Nothing is mocked.
//!
//! Teardown (when the app is dropped) runs the jobs still ready, asserts that no job is left
//! unprocessed (waiting for a worker, or held by one), and drops the test's databases.
//!
//! Where the services are comes from `PG_ADMIN_URL` and `SOURCE_ADMIN_URL` (written by
//! `scripts/services.sh`), defaulting to the CI machine's.

use std::{path::PathBuf, sync::Arc};

use mysql_async::prelude::Queryable;
use secrecy::SecretString;
use serde_json::Value;
use shared::{
    api_keys::{self, Role},
    config::{ApiConfig, Config, StorageConfig, WorkerConfig},
    db,
    tables::TableRegistry,
};
use worker::{
    holds::{Hold, HoldPoint},
    runner::{Background, Runner},
};

pub mod dashboard;
pub mod oidc;
pub mod pgbouncer;
pub mod replica;
pub mod s3;
pub mod statements;
pub mod tls;
pub mod webhooks;

pub use reqwest::StatusCode;

pub fn pg_admin_url() -> String {
    std::env::var("PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn source_admin_url() -> String {
    std::env::var("SOURCE_ADMIN_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The demo table's schema; tests insert their own rows.
pub const SOURCE_SCHEMA: &str = include_str!("source_schema.sql");

/// Inserts a synthetic history of exports (the file says what it holds; `make bench-dashboard`
/// loads it too): `$1` key ids (`uuid[]`), `$2`/`$3` newest and oldest age in days (`float8`),
/// `$4` how many (`bigint`), `$5` how many accounts (`bigint`).
pub const HISTORY_SQL: &str = include_str!("history.sql");

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub config: Config,
    pub pool: deadpool_postgres::Pool,
    /// Root connection pool to this test's source database.
    pub source_admin: mysql_async::Pool,
    pub source_db: String,
    pub storage_dir: PathBuf,
    runner: Arc<Runner>,
    server: tokio::task::JoinHandle<()>,
    /// This test's Postgres database.
    pg_db: String,
    /// Root on the server holding the source database (no database in the URL).
    source_admin_url: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(TableRegistry::demo()).await
    }

    pub async fn spawn_with(tables: TableRegistry) -> Self {
        Self::spawn_configured(tables, |_| {}).await
    }

    /// Like [`TestApp::spawn_with`], with a chance to adjust the configuration first.
    pub async fn spawn_configured(tables: TableRegistry, adjust: impl FnOnce(&mut Config)) -> Self {
        let admin_url = source_admin_url();
        let host_port = admin_url.rsplit_once('@').map(|(_, hp)| hp.to_owned()).unwrap();
        Self::spawn_with_source(&admin_url, &host_port, tables, adjust).await
    }

    /// Like [`TestApp::spawn_configured`], with the source database made through
    /// `source_admin_url` (root, no database) and the service reading it at `read_host_port`:
    /// a replica of that server, for instance.
    pub async fn spawn_with_source(
        source_admin_url: &str,
        read_host_port: &str,
        tables: TableRegistry,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::spawn_full(&pg_admin_url(), source_admin_url, read_host_port, tables, adjust, |_| {}).await
    }

    /// Like [`TestApp::spawn_with_source`], with the Postgres database made through
    /// `pg_admin_url` too (a private server, say).
    pub async fn spawn_on(
        pg_admin_url: &str,
        source_admin_url: &str,
        read_host_port: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::spawn_full(
            pg_admin_url,
            source_admin_url,
            read_host_port,
            TableRegistry::demo(),
            adjust,
            |_| {},
        )
        .await
    }

    /// Like [`TestApp::spawn`], with a chance to adjust the API's settings (its connection
    /// limits, say) first.
    pub async fn spawn_with_api(adjust_api: impl FnOnce(&mut ApiConfig)) -> Self {
        let admin_url = source_admin_url();
        let host_port = admin_url.rsplit_once('@').map(|(_, hp)| hp.to_owned()).unwrap();
        Self::spawn_full(&pg_admin_url(), &admin_url, &host_port, TableRegistry::demo(), |_| {}, adjust_api)
            .await
    }

    async fn spawn_full(
        pg_admin_url: &str,
        source_admin_url: &str,
        read_host_port: &str,
        tables: TableRegistry,
        adjust: impl FnOnce(&mut Config),
        adjust_api: impl FnOnce(&mut ApiConfig),
    ) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let pg_db = format!("stmt_test_{}", &id[..16]);
        let source_db = format!("stmt_src_{}", &id[..16]);

        // Postgres: a fresh database, migrated.
        let (admin, conn) = tokio_postgres::connect(pg_admin_url, tokio_postgres::NoTls)
            .await
            .expect("Postgres answers at PG_ADMIN_URL (run scripts/services.sh)");
        tokio::spawn(conn);
        admin.batch_execute(&format!("CREATE DATABASE {pg_db}")).await.expect("create test database");
        let database_url = format!("{}/{pg_db}", pg_admin_url.rsplit_once('/').expect("URL has a path").0);

        // MariaDB: a fresh source database with the demo schema, readable by the SELECT-only user.
        let source_admin_base = mysql_async::Pool::new(source_admin_url);
        let mut conn = source_admin_base.get_conn().await.expect("MariaDB answers at SOURCE_ADMIN_URL");
        conn.query_drop(format!("CREATE DATABASE {source_db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            .await
            .unwrap();
        for host in ["%", "localhost"] {
            conn.query_drop(format!(
                "CREATE USER IF NOT EXISTS 'statements_ro'@'{host}' IDENTIFIED BY 'statements_ro'"
            ))
            .await
            .unwrap();
            conn.query_drop(format!("GRANT SELECT ON {source_db}.* TO 'statements_ro'@'{host}'"))
                .await
                .unwrap();
        }
        conn.query_drop(format!("USE {source_db}")).await.unwrap();
        conn.query_drop(SOURCE_SCHEMA).await.unwrap();
        drop(conn);
        source_admin_base.disconnect().await.unwrap();
        let source_admin = mysql_async::Pool::new(format!("{source_admin_url}/{source_db}").as_str());
        let source_url = format!("mysql://statements_ro:statements_ro@{read_host_port}/{source_db}");

        let storage_dir = std::env::temp_dir().join(format!("stmt-test-{id}"));
        let mut config = Config {
            database_url: SecretString::from(database_url),
            database_direct_url: None,
            source_database_url: SecretString::from(source_url),
            storage: StorageConfig::Local { root: storage_dir.clone() },
            upload_part_size: 5 * 1024 * 1024,
            download_url_ttl: std::time::Duration::from_secs(300),
            signing_secret: Some(SecretString::from(
                "7d2f9a41c6e8b3052f1d9c7a4e6b8f30a5c1e7d92b4f6a8c0e3d5b7f9a1c2e4d".to_owned(),
            )),
            tables,
            export_max_attempts: 3,
            export_retention: std::time::Duration::from_secs(30 * 86_400),
            formula_guard: true,
            webhooks: shared::config::WebhookConfig::default(),
            statement_time_zone: shared::time_zones::StatementZone::utc(),
            formats: shared::formats::FormatSettings::default(),
            schedules: shared::config::ScheduleConfig::default(),
        };
        adjust(&mut config);
        db::migrate(config.session_database_url()).await.expect("migrations apply");

        // The API as `statement-api serve` runs it: through `api::serve`, with its limits.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}");
        let mut api_config = Self::api_config(addr, &base_url, 6000, 2000);
        adjust_api(&mut api_config);
        let state = api::AppState::from_config(&config, &api_config).unwrap();
        let pool = state.pool.clone();
        let server = tokio::spawn(async move {
            let shutdown = std::future::pending();
            let grace = std::time::Duration::from_secs(10);
            let _ = api::serve::serve(listener, api::app(state), api_config.transport, shutdown, grace).await;
        });

        let runner = Arc::new(Self::runner_for(&config, Self::worker_config()));
        Self {
            base_url,
            http: reqwest::Client::new(),
            config,
            pool,
            source_admin,
            source_db,
            storage_dir,
            runner,
            server,
            pg_db,
            source_admin_url: source_admin_url.to_owned(),
        }
    }

    /// API settings for tests: the defaults, with the given rate limit.
    pub fn api_config(bind: std::net::SocketAddr, base_url: &str, per_minute: u32, burst: u32) -> ApiConfig {
        ApiConfig {
            bind,
            public_base_url: base_url.to_owned(),
            freshness_window: std::time::Duration::from_secs(300),
            books_closed_after_days: 5,
            max_range_days: 366,
            rate_limit_per_minute: per_minute,
            rate_limit_burst: burst,
            admin_session_ttl: std::time::Duration::from_secs(3600),
            auth_failures_per_minute: 30,
            trusted_proxies: Vec::new(),
            // Tests queue many exports with one key; the cap has its own tests.
            max_outstanding_exports_per_key: 1000,
            idempotency_key_ttl: std::time::Duration::from_secs(86_400),
            transport: shared::config::TransportLimits::default(),
            // The tests sign in to the dashboard with admin keys; single sign-on has its own.
            dashboard_sign_in: shared::config::DashboardSignIn { oidc: None, admin_keys: true },
        }
    }

    /// An in-process client of the API wired to `config` (for dependency-failure tests).
    pub fn test_client(
        &self,
        config: &Config,
        per_minute: u32,
        burst: u32,
    ) -> poem::test::TestClient<impl poem::Endpoint> {
        let api_config = Self::api_config(([127, 0, 0, 1], 0).into(), &self.base_url, per_minute, burst);
        poem::test::TestClient::new(api::app(api::AppState::from_config(config, &api_config).unwrap()))
    }

    /// Worker settings for tests: short leases and intervals so failure paths show in seconds.
    pub fn worker_config() -> WorkerConfig {
        WorkerConfig {
            lease: std::time::Duration::from_secs(3),
            poll_interval: std::time::Duration::from_millis(200),
            maintenance_interval: std::time::Duration::from_millis(500),
            progress_interval: std::time::Duration::from_millis(100),
            abandoned_upload_age: std::time::Duration::ZERO,
            ..WorkerConfig::default()
        }
    }

    /// A worker runner (in-process) on this app's configuration.
    pub fn runner_for(config: &Config, worker: WorkerConfig) -> Runner {
        let ctx = worker::context(config, &worker).unwrap();
        Runner::new(ctx, worker, config.session_database_url().clone())
    }

    /// A new runner on this app's configuration.
    pub fn runner(&self, worker: WorkerConfig) -> Runner {
        Self::runner_for(&self.config, worker)
    }

    /// A new active client API key (plaintext) for these accounts; `None`: all accounts.
    pub async fn create_key(&self, accounts: Option<&[&str]>) -> String {
        let db = self.pool.get().await.unwrap();
        let listed: Vec<String> = accounts.unwrap_or_default().iter().map(|s| s.to_string()).collect();
        let spec = api_keys::KeySpec {
            name: "test",
            description: "",
            role: Role::Client,
            accounts: &listed,
            all_accounts: accounts.is_none(),
        };
        let (_, key) = api_keys::create(&db, &spec).await.unwrap();
        key.plaintext
    }

    /// A new admin key (plaintext): it signs in to the dashboard.
    pub async fn create_admin_key(&self) -> String {
        let db = self.pool.get().await.unwrap();
        let spec = api_keys::KeySpec {
            name: "operator",
            description: "",
            role: Role::Admin,
            accounts: &[],
            all_accounts: false,
        };
        api_keys::create(&db, &spec).await.unwrap().1.plaintext
    }

    pub async fn revoke_key(&self, plaintext: &str) {
        let db = self.pool.get().await.unwrap();
        let prefix = &plaintext[..11];
        assert_eq!(api_keys::revoke(&db, prefix).await.unwrap().len(), 1);
    }

    pub async fn post_export(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/export", self.base_url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_export(&self, key: &str, reference_id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/export/{reference_id}", self.base_url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn cancel_export(&self, key: &str, reference_id: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/export/{reference_id}/cancel", self.base_url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// The in-process worker's instruments.
    pub fn worker_metrics(&self) -> Arc<shared::metrics::Metrics> {
        self.runner.metrics()
    }

    /// Claims and runs every ready job in-process; returns how many ran.
    pub async fn run_pending_jobs(&self) -> usize {
        self.runner.run_pending().await.unwrap()
    }

    pub async fn download(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    /// Runs SQL against this test's source database as root.
    pub async fn source_exec(&self, sql: &str) {
        let mut conn = self.source_admin.get_conn().await.unwrap();
        conn.query_drop(sql).await.unwrap();
    }

    /// Inserts `n` generated rows for `account`, one per second from 2024-01-01 on, ids from
    /// `first_id`. Big enough statements for exports that take a while.
    pub async fn insert_generated_rows(&self, account: &str, first_id: u64, n: u64) {
        let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                      UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
        let sql = format!(
            "INSERT INTO bank_transactions
             SELECT {first_id} + n, '{account}', DATE_ADD('2024-01-01', INTERVAL n DIV 86400 DAY),
                    DATE_ADD('2024-01-01', INTERVAL n SECOND), CONCAT('generated row, number ', n),
                    IF(n % 7 = 0, NULL, 'Counterparty \"quoted\"'), (n % 100000) / 100, 'EUR', CONCAT('G-', n)
             FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d + 100000*g.d AS n
                   FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f, {digits} g) numbers
             WHERE n < {n}"
        );
        self.source_exec(&sql).await;
    }

    /// The source rows of a statement as text (NULL → None), ordered as the export is.
    pub async fn source_rows(&self, account: &str, from: &str, to: &str) -> Vec<Vec<Option<String>>> {
        let mut conn = self.source_admin.get_conn().await.unwrap();
        let sql = format!(
            "SELECT id, account_id, txn_date, posted_at, description, counterparty, amount, currency, reference
             FROM bank_transactions WHERE account_id = '{account}' AND txn_date BETWEEN '{from}' AND '{to}'
             ORDER BY txn_date, id"
        );
        let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
        rows.into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(b) => Some(String::from_utf8(b).unwrap()),
                        other => panic!("text protocol returned {other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    /// The export `body` asks for, running on a worker of its own (settings `worker`) and held
    /// after its first chunk: it is running now. Returns its reference id, the hold (release it
    /// to let the export go on) and the worker.
    pub async fn running_export(
        &self,
        key: &str,
        body: &Value,
        worker: WorkerConfig,
    ) -> (String, Hold, Background) {
        let created: Value = self.post_export(key, body).await.json().await.unwrap();
        let id = created["reference_id"].as_str().unwrap().to_owned();
        let runner = self.runner(worker);
        let running = runner.holds().arm(HoldPoint::AfterFirstChunk);
        let worker = runner.spawn();
        running.reached().await;
        (id, running, worker)
    }

    /// Asserts that `attempt`'s writes to its export (progress, completion) are refused: the
    /// attempt no longer holds its job.
    pub async fn assert_export_writes_refused(&self, attempt: shared::exports::Attempt) {
        use shared::exports;
        let mut db = self.pool.get().await.unwrap();
        assert!(!exports::record_progress(&db, attempt, 1).await.unwrap(), "progress of a stale attempt");
        let late = exports::ExportResult {
            file_key: format!("exports/late-{}.csv", attempt.token.simple()),
            file_size: 1,
            row_count: 1,
            sha256: "00".into(),
            statement: None,
        };
        let retention = std::time::Duration::from_secs(60);
        let metrics = shared::metrics::Metrics::default();
        let completed = exports::complete(&mut db, attempt, &late, retention, &metrics).await.unwrap();
        assert!(!completed, "completion by a stale attempt");
    }

    /// Polls a boolean query until it is true (at most 30 s): tests wait on state, not on time.
    pub async fn wait_for(&self, sql: &str) {
        for _ in 0..1200 {
            let db = self.pool.get().await.unwrap();
            if db.query_opt(sql, &[]).await.unwrap().is_some_and(|r| r.get::<_, bool>(0)) {
                return;
            }
            drop(db);
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for: {sql}");
    }

    /// Polls until the export leaves PENDING/PROCESSING (running jobs in between).
    pub async fn run_until_settled(&self, key: &str, reference_id: &str) -> Value {
        for _ in 0..50 {
            self.run_pending_jobs().await;
            let body: Value = self.get_export(key, reference_id).await.json().await.unwrap();
            if !matches!(body["status"].as_str(), Some("PENDING" | "PROCESSING")) {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("export {reference_id} did not settle");
    }
}

impl Drop for TestApp {
    /// Runs the jobs still ready, asserts that none is left unprocessed, and drops the test's
    /// databases (also when the test failed; then nothing more is asserted). The test's runtime
    /// is blocked here, so this runs on a runtime of its own, with connections of its own.
    fn drop(&mut self) {
        self.server.abort();
        let teardown = Teardown {
            config: self.config.clone(),
            pg_db: self.pg_db.clone(),
            source_db: self.source_db.clone(),
            source_admin_url: self.source_admin_url.clone(),
            check: !std::thread::panicking(),
        };
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(teardown.run())
        })
        .join();
        let _ = std::fs::remove_dir_all(&self.storage_dir);
        match outcome {
            Ok(left) => assert!(
                left.is_empty(),
                "jobs left unprocessed at the end of the test (run them, or assert on them and settle \
                 them): {left:?}"
            ),
            Err(panic) if !std::thread::panicking() => std::panic::resume_unwind(panic),
            Err(_) => {}
        }
    }
}

/// What [`TestApp`]'s teardown needs, owned (it runs on a thread of its own).
struct Teardown {
    config: Config,
    pg_db: String,
    source_db: String,
    source_admin_url: String,
    /// Run what is ready and look for leftovers (not after a failed test).
    check: bool,
}

impl Teardown {
    /// Returns the jobs left unprocessed (`id kind state`) after running the ready ones.
    async fn run(self) -> Vec<String> {
        let left = if self.check { self.leftovers().await } else { Vec::new() };
        let (admin, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.pg_db)).await.unwrap();
        let source = mysql_async::Pool::new(self.source_admin_url.as_str());
        let mut conn = source.get_conn().await.unwrap();
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", self.source_db)).await.unwrap();
        drop(conn);
        source.disconnect().await.unwrap();
        left
    }

    /// Runs the ready jobs with a fresh worker, then lists the jobs still waiting for a worker
    /// (`available`, or `retryable` and due) or held by one (`running`).
    async fn leftovers(&self) -> Vec<String> {
        TestApp::runner_for(&self.config, TestApp::worker_config()).run_pending().await.unwrap();
        let pool = db::pool(self.config.session_database_url(), 1).unwrap();
        let db = pool.get().await.unwrap();
        let rows = db
            .query(
                "SELECT id, kind, state FROM jobs
                 WHERE state IN ('available', 'running') OR (state = 'retryable' AND run_at <= now())
                 ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| format!("{} {} {}", r.get::<_, i64>(0), r.get::<_, &str>(1), r.get::<_, &str>(2)))
            .collect()
    }
}

/// A small, independent RFC 4180 reader that keeps what the csv crate drops: whether a field
/// was quoted. An unquoted empty field is `None` (SQL NULL); `""` is `Some("")`.
pub fn parse_csv(bytes: &[u8]) -> Vec<Vec<Option<String>>> {
    let text = std::str::from_utf8(bytes).expect("the export is UTF-8");
    let mut records = Vec::new();
    let mut record: Vec<Option<String>> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut field = String::new();
    let mut quoted = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if at_field_start && c == '"' {
            quoted = true;
            at_field_start = false;
            loop {
                match chars.next().expect("unterminated quoted field") {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    other => field.push(other),
                }
            }
            continue;
        }
        at_field_start = false;
        match c {
            ',' => {
                record.push(finish_field(&mut field, &mut quoted));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(finish_field(&mut field, &mut quoted));
                records.push(std::mem::take(&mut record));
                at_field_start = true;
            }
            other => {
                assert!(!quoted, "text after a closing quote");
                field.push(other);
            }
        }
    }
    assert!(record.is_empty() && field.is_empty(), "the file ends with CRLF");
    records
}

fn finish_field(field: &mut String, quoted: &mut bool) -> Option<String> {
    let value = std::mem::take(field);
    let was_quoted = std::mem::replace(quoted, false);
    if value.is_empty() && !was_quoted { None } else { Some(value) }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every file below `dir` (none when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A binary of this workspace (`statement-api`, `statement-worker`), for tests outside its
/// package, which have no `CARGO_BIN_EXE_…`: beside this test's executable in the target
/// directory, built by `cargo test --workspace` (or `cargo build --bins`). Refuses a missing
/// one, or one older than the sources it is built from: such a test would test old code.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let binary = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").join(name);
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = modified(&binary) else {
        panic!(
            "{} does not exist: run `cargo build --bins` (cargo test --workspace builds it)",
            binary.display()
        );
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    // Its own package's sources and what it depends on (the worker renders webhook bodies with
    // the API's code; the API does not depend on the worker).
    let packages: &[&str] = match name {
        "statement-api" => &["api"],
        "statement-worker" => &["worker", "api"],
        other => panic!("{other} is not a binary of this workspace"),
    };
    let mut sources = packages
        .iter()
        .flat_map(|package| [format!("{package}/src"), format!("{package}/Cargo.toml")])
        .chain(["shared/src".into(), "sql".into(), "Cargo.lock".into(), "shared/Cargo.toml".into()])
        .flat_map(|path| {
            let path = root.join(path);
            if path.is_dir() { files_under(&path) } else { vec![path] }
        });
    if let Some(newer) = sources.find(|f| modified(f).is_some_and(|m| m > built)) {
        panic!(
            "{} is older than {}: run `cargo build --bins` (cargo test --workspace builds it)",
            binary.display(),
            newer.display()
        );
    }
    binary
}

impl TestApp {
    /// Runs the real `statement-api` command line with `args` against this app's databases.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(workspace_binary("statement-api"));
        service_env(&mut command, self);
        command.args(args).output().expect("statement-api runs")
    }

    /// Runs `sql` with `psql` as the database's owner, unaffected by the service's code; its
    /// output (unaligned, tuples only), or its error text.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        use secrecy::ExposeSecret;
        let output = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                self.config.database_url.expose_secret(),
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if output.status.success() { Ok(text(&output.stdout)) } else { Err(text(&output.stderr)) }
    }
}

/// The settings every process of the service needs to run against `app`: its databases and
/// storage (as `TestApp` configures them), logging only warnings.
fn service_env(command: &mut std::process::Command, app: &TestApp) {
    use secrecy::ExposeSecret;
    command
        .env("DATABASE_URL", app.config.database_url.expose_secret())
        .env("SOURCE_DATABASE_URL", app.config.source_database_url.expose_secret())
        .env("RUST_LOG", "warn");
    match &app.config.storage {
        StorageConfig::Local { root } => {
            command.env("LOCAL_STORAGE_DIR", root);
        }
        StorageConfig::S3(s3) => {
            command
                .envs(s3::settings(s3))
                .env("UPLOAD_PART_SIZE_BYTES", app.config.upload_part_size.to_string());
        }
    }
}

/// The real worker binary, run against a [`TestApp`]'s configuration.
pub struct WorkerProcess {
    child: std::process::Child,
}

impl WorkerProcess {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_statement-worker")`) with the app's databases and
    /// storage, a 2-second lease, frequent progress, and `extra` settings on top.
    pub fn start(app: &TestApp, binary: impl AsRef<std::ffi::OsStr>, extra: &[(&str, String)]) -> Self {
        Self::start_logging(app, binary, extra, None)
    }

    /// Like [`WorkerProcess::start`], its log (stderr) written to `log` when given.
    pub fn start_logging(
        app: &TestApp,
        binary: impl AsRef<std::ffi::OsStr>,
        extra: &[(&str, String)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let mut command = std::process::Command::new(binary);
        service_env(&mut command, app);
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).expect("the log file"));
        }
        command
            .env("JOB_LEASE_SECS", "2")
            .env("MAINTENANCE_INTERVAL_SECS", "0.5")
            // Any free port: a `make run` or another test may hold the default one.
            .env("WORKER_METRICS_BIND", "127.0.0.1:0")
            .env("EXPORT_PROGRESS_INTERVAL_MS", "50");
        for (name, value) in extra {
            command.env(name, value);
        }
        Self { child: command.spawn().expect("the worker binary starts") }
    }

    /// The process id (the `pid` it registers in the `workers` table).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real API binary (`statement-api serve`), run against a [`TestApp`]'s configuration on a
/// port of its own, with the app's signing secret.
pub struct ApiProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`, also its `PUBLIC_BASE_URL`.
    pub base_url: String,
}

impl ApiProcess {
    /// Starts `binary` with `extra` settings on top and waits (at most 60 s: it migrates first)
    /// until it answers `/health`.
    pub async fn start(app: &TestApp, binary: impl AsRef<std::ffi::OsStr>, extra: &[(&str, String)]) -> Self {
        use secrecy::ExposeSecret;
        // A port free a moment ago: the API takes it at once (API_BIND=…:0 would hide which).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base_url = format!("http://127.0.0.1:{port}");
        let mut command = std::process::Command::new(binary);
        service_env(&mut command, app);
        command.arg("serve").env("API_BIND", format!("127.0.0.1:{port}")).env("PUBLIC_BASE_URL", &base_url);
        if let Some(secret) = &app.config.signing_secret {
            command.env("SIGNING_SECRET", secret.expose_secret());
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut api = Self { child: command.spawn().expect("the API binary starts"), base_url };
        for _ in 0..600 {
            if let Some(status) = api.child.try_wait().unwrap() {
                panic!("the API process exited at start-up: {status}");
            }
            let health = app.http.get(format!("{}/health", api.base_url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return api;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = api.child.kill();
        panic!("the API process did not answer /health within 60 s");
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory for a `WORKER_TEST_HOLD` file barrier (see `worker::holds`).
pub struct FileHold {
    pub dir: PathBuf,
}

impl FileHold {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("stmt-hold-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// The `WORKER_TEST_HOLD` value that holds at `point` (e.g. `before_record`).
    pub fn setting(&self, point: &str) -> (&'static str, String) {
        ("WORKER_TEST_HOLD", format!("{point}:{}", self.dir.display()))
    }

    /// Waits (at most 60 s) until the worker is held.
    pub async fn reached(&self) {
        for _ in 0..3000 {
            if self.dir.join("reached").exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the worker never reached its hold");
    }

    pub fn release(&self) {
        std::fs::write(self.dir.join("release"), b"").unwrap();
    }
}

impl Default for FileHold {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FileHold {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
