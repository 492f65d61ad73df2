//! Configuration from environment variables.
//!
//! Every variable is read through a strict helper: a value that is set but malformed stops
//! start-up with an error naming the variable and the expected form, it never falls back to the
//! default. With nothing set, the embedded defaults run the quick start (local Postgres and
//! MariaDB, local-disk storage).

use std::{
    env,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    formats::FormatSettings,
    secrets::{self, SecretError},
    tables::{TableConfigError, TableRegistry},
    time_zones::StatementZone,
};

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable is set but malformed.
    #[error("{var}: expected {expected}, got {value:?}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        value: String,
    },
    /// A variable another setting needs is not set.
    #[error("{var} is required when {because}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// The setting that needs it.
        because: &'static str,
    },
    /// A setting that only makes sense with another one set a certain way.
    #[error("{var} {problem}")]
    Conflict {
        /// The variable.
        var: &'static str,
        /// What is wrong with the combination, and what to set.
        problem: &'static str,
    },
    /// The value is a secret: the message gives its strength, never the value.
    #[error(
        "SIGNING_SECRET: expected at least {min} bytes of key material (generate it with `openssl rand -hex 32`), got {got}"
    )]
    WeakSigningSecret {
        /// Bytes of key material needed.
        min: usize,
        /// Bytes of key material given.
        got: usize,
    },
    /// A secret's variable and its `_FILE` form are both set, or the file cannot be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The table configuration is refused.
    #[error("EXPORT_TABLES_FILE: {0}")]
    Tables(#[from] TableConfigError),
}

/// Where export files are kept.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// A directory on local disk; the API serves files under HMAC-signed URLs.
    Local {
        /// The directory (`LOCAL_STORAGE_DIR`).
        root: PathBuf,
    },
    /// S3 or an S3-compatible server (MinIO); downloads are pre-signed GET URLs.
    S3(S3Config),
}

/// Where and how to reach S3 (or MinIO).
///
/// What is not set here comes from the environment as every AWS SDK reads it (`object_store`'s
/// `AmazonS3Builder::from_env`): credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
/// / `AWS_SESSION_TOKEN`, a web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the
/// ECS container endpoint, then instance metadata; the region from `AWS_REGION`. A setting made
/// here wins over the environment.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket holding the files.
    pub bucket: String,
    /// Its region; `None`: `AWS_REGION` (or `AWS_DEFAULT_REGION`), else `us-east-1`.
    pub region: Option<String>,
    /// Custom endpoint for MinIO or another S3-compatible server; `None`: AWS (or the
    /// environment's `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// The endpoint download links are signed for, when clients reach storage under another
    /// address than the service does (MinIO behind a proxy); `None`: the one the service uses.
    pub public_endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO expects.
    pub path_style: bool,
    /// Static credentials (an IAM user's keys), used instead of any the environment holds.
    pub credentials: Option<S3StaticCredentials>,
    /// Server-side encryption asked for on every object written.
    pub encryption: S3Encryption,
    /// Send a SHA-256 checksum with every part, for the server to verify and store.
    pub checksum: bool,
    /// Give up retrying one request after this long: transient failures (connections refused or
    /// reset, timeouts, 5xx) are retried with capped backoff until then, however many retries
    /// that takes. Then the upload fails and the job retries.
    pub retry_timeout: Duration,
}

/// `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY` (both or neither).
#[derive(Debug, Clone)]
pub struct S3StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

/// Server-side encryption of the objects written (`S3_SSE`, `S3_SSE_KMS_KEY_ID`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum S3Encryption {
    /// None asked for: the bucket's default encryption applies (on AWS, SSE-S3 at least).
    #[default]
    BucketDefault,
    /// SSE-S3 (`AES256`): keys managed by S3.
    Aes256,
    /// SSE-KMS (`aws:kms`) under this key (id, alias or ARN); `None`: the account's
    /// AWS-managed key for S3 (`aws/s3`).
    Kms {
        /// `S3_SSE_KMS_KEY_ID`.
        key_id: Option<String>,
    },
}

/// Settings shared by the API and the worker.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres: export metadata, API keys and the job table.
    pub database_url: SecretString,
    /// `Some` when `DATABASE_URL` is a transaction-pooling proxy (`DATABASE_POOLER=transaction`:
    /// PgBouncer, RDS Proxy): Postgres itself (`DATABASE_DIRECT_URL`), for what needs a session
    /// of its own. See [`Config::session_database_url`].
    pub database_direct_url: Option<SecretString>,
    /// The read-only MySQL/MariaDB transactions database.
    pub source_database_url: SecretString,
    /// Where export files are kept.
    pub storage: StorageConfig,
    /// Bytes per multipart upload part (S3 requires at least 5 MiB).
    pub upload_part_size: usize,
    /// How long a download URL stays valid.
    pub download_url_ttl: Duration,
    /// Key for local-storage download URLs. `None`: a random key per process.
    pub signing_secret: Option<SecretString>,
    /// The exportable tables.
    pub tables: TableRegistry,
    /// Attempts before an export is FAILED for good.
    pub export_max_attempts: i32,
    /// How long a completed export's file is kept; then it is deleted and the export EXPIRED.
    pub export_retention: Duration,
    /// Prefix text cells that start like a spreadsheet formula with `'` (see `csv_out`).
    pub formula_guard: bool,
    /// Completion webhooks: where they may go, how they are retried.
    pub webhooks: WebhookConfig,
    /// The statement time zone of a request that names none (`STATEMENT_TIME_ZONE`, UTC).
    pub statement_time_zone: StatementZone,
    /// The bank formats' settings (`STATEMENT_*`).
    pub formats: FormatSettings,
    /// Recurring statements (`SCHEDULE_*`).
    pub schedules: ScheduleConfig,
}

/// Recurring statements: how the maintenance leader's scheduler catches up, retries and defers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Periods that ended more than this many days ago are not produced when catching up
    /// (`SCHEDULE_BACKFILL_DAYS`, 92).
    pub backfill_days: u32,
    /// Retries of a period whose export failed (`SCHEDULE_RETRY_LIMIT`, 3).
    pub retry_limit: i32,
    /// Wait before a failed period's first retry, doubling with each (`SCHEDULE_RETRY_AFTER_SECS`,
    /// 900).
    pub retry_after: Duration,
    /// Wait before asking again for a period the key's cap on outstanding exports deferred
    /// (`SCHEDULE_DEFER_SECS`, 60).
    pub defer: Duration,
    /// The key's cap on outstanding exports, as the API applies it.
    pub max_outstanding_per_key: i64,
    /// When an identical completed export is reused, as the API decides it.
    pub reuse: crate::exports::ReusePolicy,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            backfill_days: 92,
            retry_limit: 3,
            retry_after: Duration::from_secs(900),
            defer: Duration::from_secs(60),
            max_outstanding_per_key: 10,
            reuse: crate::exports::ReusePolicy {
                freshness: Duration::from_secs(300),
                books_closed_after_days: 5,
            },
        }
    }
}

impl ScheduleConfig {
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            backfill_days: positive("SCHEDULE_BACKFILL_DAYS", "a positive number of days", 92)?,
            retry_limit: parse_var("SCHEDULE_RETRY_LIMIT", "a number of retries", 3)?,
            retry_after: positive_secs("SCHEDULE_RETRY_AFTER_SECS", Duration::from_secs(900))?,
            defer: positive_secs("SCHEDULE_DEFER_SECS", Duration::from_secs(60))?,
            max_outstanding_per_key: max_outstanding_exports_per_key()?,
            reuse: reuse_policy()?,
        })
    }
}

/// `MAX_OUTSTANDING_EXPORTS_PER_KEY`: read by the API (requests) and the scheduler alike.
fn max_outstanding_exports_per_key() -> Result<i64, ConfigError> {
    positive("MAX_OUTSTANDING_EXPORTS_PER_KEY", "a positive number of exports", 10)
}

/// `FRESHNESS_WINDOW_SECS` and `BOOKS_CLOSED_AFTER_DAYS`: read by the API and the scheduler.
fn reuse_policy() -> Result<crate::exports::ReusePolicy, ConfigError> {
    Ok(crate::exports::ReusePolicy {
        freshness: secs("FRESHNESS_WINDOW_SECS", Duration::from_secs(300))?,
        books_closed_after_days: positive("BOOKS_CLOSED_AFTER_DAYS", "a positive number of days", 5)?,
    })
}

/// Completion webhooks (`WEBHOOK_*`): the API checks endpoints with the address policy and
/// rotates secrets with the overlap; the worker sends, retries and disables.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// `http://` endpoints and private, loopback and link-local addresses, both refused unless
    /// allowed (`WEBHOOK_ALLOW_HTTP`, `WEBHOOK_ALLOW_PRIVATE_ADDRESSES`: tests, a receiver on
    /// this host).
    pub policy: crate::webhooks::address::Policy,
    /// Longest an attempt may take, connection and answer included (`WEBHOOK_TIMEOUT_SECS`).
    pub timeout: Duration,
    /// How long the previous secret keeps signing after a rotation
    /// (`WEBHOOK_SECRET_OVERLAP_SECS`).
    pub secret_overlap: Duration,
    /// An endpoint whose attempts have all failed for this long is disabled
    /// (`WEBHOOK_DISABLE_AFTER_SECS`).
    pub disable_after: Duration,
    /// The delay before each retry of a failed delivery, in order (±20 % jitter); past the last
    /// one the delivery fails (`WEBHOOK_RETRY_SCHEDULE_SECS`).
    pub retry_schedule: Vec<Duration>,
}

impl Default for WebhookConfig {
    /// https only, public addresses only, 10 s per attempt, a day's overlap and failure window,
    /// and the Standard Webhooks retry schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
    /// (about 27.5 hours in all).
    fn default() -> Self {
        Self {
            policy: crate::webhooks::address::Policy::default(),
            timeout: Duration::from_secs(10),
            secret_overlap: Duration::from_secs(86_400),
            disable_after: Duration::from_secs(86_400),
            retry_schedule: [5, 300, 1800, 7200, 18_000, 36_000, 36_000].map(Duration::from_secs).to_vec(),
        }
    }
}

impl WebhookConfig {
    /// Reads the `WEBHOOK_*` settings; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            policy: crate::webhooks::address::Policy {
                allow_http: parse_var("WEBHOOK_ALLOW_HTTP", "true or false", false)?,
                allow_private: parse_var("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true or false", false)?,
            },
            timeout: positive_secs("WEBHOOK_TIMEOUT_SECS", defaults.timeout)?,
            secret_overlap: secs("WEBHOOK_SECRET_OVERLAP_SECS", defaults.secret_overlap)?,
            disable_after: positive_secs("WEBHOOK_DISABLE_AFTER_SECS", defaults.disable_after)?,
            retry_schedule: match env::var("WEBHOOK_RETRY_SCHEDULE_SECS") {
                Ok(value) if !value.trim().is_empty() => {
                    retry_schedule(&value).filter(|s| s.len() < MAX_WEBHOOK_ATTEMPTS).ok_or_else(|| {
                        invalid(
                            "WEBHOOK_RETRY_SCHEDULE_SECS",
                            "comma-separated positive seconds, at most 7 (a delivery has 8 attempts)",
                        )
                    })?
                }
                _ => defaults.retry_schedule,
            },
        })
    }
}

/// Attempts a webhook delivery has (`DeliverWebhook::MAX_ATTEMPTS`): its schedule has fewer delays.
const MAX_WEBHOOK_ATTEMPTS: usize =
    <crate::webhooks::DeliverWebhook as crate::queue::JobKind>::MAX_ATTEMPTS as usize;

/// `5,300,1800`: each a positive number of seconds.
fn retry_schedule(value: &str) -> Option<Vec<Duration>> {
    value
        .split(',')
        .map(|delay| {
            delay
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
        })
        .collect()
}

/// Settings only the API reads.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where the API listens.
    pub bind: SocketAddr,
    /// Base of the URLs the API hands out (download links), e.g. `https://exports.example.com`.
    pub public_base_url: String,
    /// A completed export of a period whose books were not closed at its snapshot is reused
    /// only this long; closed periods are reused for as long as the export lives.
    pub freshness_window: Duration,
    /// A period's books are closed once its last day is at least this many days before the
    /// snapshot's day (UTC): back-dated corrections and a lagging replica are then assumed
    /// settled.
    pub books_closed_after_days: i32,
    /// Longest statement a client may request, in days.
    pub max_range_days: i64,
    /// Requests a minute per API key (average), and the burst allowed above it.
    pub rate_limit_per_minute: u32,
    /// See `rate_limit_per_minute`.
    pub rate_limit_burst: u32,
    /// How long a dashboard sign-in lasts.
    pub admin_session_ttl: Duration,
    /// Failed authentications (unknown keys, bogus session cookies) a minute per client
    /// address; past them the address is answered 429 without a database lookup.
    pub auth_failures_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or CIDR blocks).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most exports one API key may have pending or processing at once (of those its requests
    /// created); a request that would create one more is refused with 429.
    pub max_outstanding_exports_per_key: i64,
    /// How long an `Idempotency-Key` and the response it got are kept (`IDEMPOTENCY_KEY_TTL_SECS`).
    pub idempotency_key_ttl: Duration,
    /// Connection limits: deadlines for slow clients and the cap on open connections.
    pub transport: TransportLimits,
    /// How operators sign in to the dashboard.
    pub dashboard_sign_in: DashboardSignIn,
}

/// How operators sign in to the dashboard: single sign-on, and break-glass admin keys when
/// enabled. With neither, the dashboard cannot be entered.
#[derive(Debug, Clone, Default)]
pub struct DashboardSignIn {
    /// Single sign-on through an OpenID provider (`OIDC_ISSUER_URL` set).
    pub oidc: Option<OidcSettings>,
    /// Admin API keys sign in too (`DASHBOARD_ADMIN_KEY_SIGN_IN=true`; default off).
    pub admin_keys: bool,
}

/// The OpenID provider the dashboard signs people in with.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The provider's issuer URL (its discovery document is under it).
    pub issuer_url: String,
    /// This service's client id at the provider.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: SecretString,
    /// Scopes asked for (`openid` always among them).
    pub scopes: Vec<String>,
    /// The ID-token claim holding the person's groups or roles: a claim of that name, else a
    /// dotted path into objects.
    pub roles_claim: String,
    /// For each dashboard role, the claim values that grant it.
    pub role_values: Vec<(crate::operators::DashboardRole, Vec<String>)>,
    /// The sign-in button's label.
    pub provider_name: String,
}

impl DashboardSignIn {
    /// Reads `OIDC_*` and `DASHBOARD_ADMIN_KEY_SIGN_IN`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let admin_keys = match var_or("DASHBOARD_ADMIN_KEY_SIGN_IN", "false").trim() {
            "true" => true,
            "false" => false,
            _ => return Err(invalid("DASHBOARD_ADMIN_KEY_SIGN_IN", "true or false")),
        };
        let Some(issuer_url) = optional::<String>("OIDC_ISSUER_URL", "an https:// URL")? else {
            return Ok(Self { oidc: None, admin_keys });
        };
        // Exactly as the provider names itself (`iss`, a trailing slash included), and over TLS:
        // the client secret and the signing keys travel there.
        if !issuer_is_acceptable(&issuer_url) {
            return Err(invalid(
                "OIDC_ISSUER_URL",
                "the provider's issuer: an https:// URL (http:// only on a loopback address), no query or fragment",
            ));
        }
        let client_id = optional::<String>("OIDC_CLIENT_ID", "a client id")?
            .ok_or(ConfigError::Missing { var: "OIDC_CLIENT_ID", because: "OIDC_ISSUER_URL is set" })?;
        let client_secret =
            secrets::read("OIDC_CLIENT_SECRET", "OIDC_CLIENT_SECRET_FILE")?.ok_or(ConfigError::Missing {
                var: "OIDC_CLIENT_SECRET (or OIDC_CLIENT_SECRET_FILE)",
                because: "OIDC_ISSUER_URL is set",
            })?;
        let mut scopes: Vec<String> =
            var_or("OIDC_SCOPES", "openid profile email").split_whitespace().map(str::to_owned).collect();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".to_owned());
        }
        let roles_claim = var_or("OIDC_ROLES_CLAIM", "groups").trim().to_owned();
        if roles_claim.split('.').any(str::is_empty) {
            return Err(invalid(
                "OIDC_ROLES_CLAIM",
                "a claim name, or a dotted path such as realm_access.roles",
            ));
        }
        use crate::operators::DashboardRole;
        let role_values = [
            (DashboardRole::Viewer, "OIDC_VIEWER_ROLES"),
            (DashboardRole::Operator, "OIDC_OPERATOR_ROLES"),
            (DashboardRole::Admin, "OIDC_ADMIN_ROLES"),
        ]
        .into_iter()
        .map(|(role, var)| {
            // Set, even to nothing, it is what it says: empty grants the role to nobody.
            let values: Vec<String> = env::var(var)
                .unwrap_or_else(|_| format!("statement-{role}"))
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect();
            (role, values)
        })
        .collect();
        Ok(Self {
            oidc: Some(OidcSettings {
                issuer_url,
                client_id,
                client_secret,
                scopes,
                roles_claim,
                role_values,
                provider_name: var_or("OIDC_PROVIDER_NAME", "single sign-on"),
            }),
            admin_keys,
        })
    }
}

/// How long a client may take, and how many connections it may hold (see `api::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Total time to send a request head (request line and headers), however it trickles in.
    /// The first request's clock starts at accept (it covers HTTP/2's preface too).
    pub head_timeout: Duration,
    /// Total time to send a request body, from the end of its head.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive and
    /// HTTP/2 alike).
    pub idle_timeout: Duration,
    /// Connections open at once; the next one waits (unaccepted, in the listen backlog).
    pub max_connections: usize,
}

impl Default for TransportLimits {
    /// What a bank's reverse proxy would use: HAProxy's recommended `timeout http-request 10s`
    /// for the head, 30 s for a body of at most 64 KiB (2 KiB/s), the 60 s idle timeout of
    /// common load balancers, and 1024 connections.
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

impl TransportLimits {
    /// Reads the `API_*` connection limits; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            head_timeout: positive_secs("API_HEAD_TIMEOUT_SECS", defaults.head_timeout)?,
            body_timeout: positive_secs("API_BODY_TIMEOUT_SECS", defaults.body_timeout)?,
            idle_timeout: positive_secs("API_IDLE_TIMEOUT_SECS", defaults.idle_timeout)?,
            max_connections: positive(
                "API_MAX_CONNECTIONS",
                "a positive number of connections",
                defaults.max_connections,
            )?,
        })
    }
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// Reads `LOG_FORMAT` (`text` when unset).
    pub fn from_env() -> Result<Self, ConfigError> {
        match var_or("LOG_FORMAT", "text").trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(ConfigError::Invalid {
                var: "LOG_FORMAT",
                expected: "text or json",
                value: other.to_owned(),
            }),
        }
    }
}

/// Settings only the worker reads.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by one worker process.
    pub concurrency: usize,
    /// How long a claim is valid without a heartbeat.
    pub lease: Duration,
    /// Polling fallback when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// First retry delay; it doubles per attempt (with ±25 % jitter) up to `retry_max`.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they are released.
    pub shutdown_grace: Duration,
    /// How often the maintenance leader rescues leases, expires exports and prunes jobs.
    pub maintenance_interval: Duration,
    /// What maintenance prunes, and when.
    pub retention: Retention,
    /// Interval between progress writes of a running export.
    pub progress_interval: Duration,
    /// Where the worker serves its Prometheus `/metrics`.
    pub metrics_bind: SocketAddr,
    /// An export whose source sends nothing for this long fails, retryably.
    pub stall_timeout: Duration,
    /// Retryable failures (source or storage down) are retried past `EXPORT_MAX_ATTEMPTS` for
    /// as long as this since the first of them.
    pub retry_window: Duration,
    /// A journalled upload whose claim no longer runs is cleaned up once at least this old.
    pub abandoned_upload_age: Duration,
    /// Refuse (retryably) to snapshot a source replica more than this many seconds behind its
    /// primary, or whose replication is stopped. `None`: no guard.
    pub source_max_lag: Option<u64>,
    /// How often the worker checks that storage takes a write (and records it for `/ready`).
    pub storage_check_interval: Duration,
}

/// What the maintenance leader prunes from Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished job rows older than this are pruned (`JOB_RETENTION_DAYS`).
    pub jobs: Duration,
    /// Export rows that can no longer be downloaded (expired, failed, cancelled) and finished
    /// longer ago than this are pruned, their hourly analytics kept
    /// (`EXPORT_ROW_RETENTION_DAYS`; unset: kept for ever).
    pub export_rows: Option<Duration>,
}

pub(crate) const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/statements";
pub(crate) const DEFAULT_SOURCE_DATABASE_URL: &str =
    "mysql://statements_ro:statements_ro@127.0.0.1:3306/statements_demo";

impl Config {
    /// Reads the settings both binaries need; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        let storage = match var_or("STORAGE_BACKEND", "local").as_str() {
            "local" => {
                StorageConfig::Local { root: PathBuf::from(var_or("LOCAL_STORAGE_DIR", "./data/exports")) }
            }
            "s3" => StorageConfig::S3(s3_config()?),
            other => {
                return Err(ConfigError::Invalid {
                    var: "STORAGE_BACKEND",
                    expected: "`local` or `s3`",
                    value: other.to_owned(),
                });
            }
        };
        let upload_part_size: usize =
            parse_var("UPLOAD_PART_SIZE_BYTES", "a byte count of at least 5242880", 8 * 1024 * 1024)?;
        if upload_part_size < 5 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                var: "UPLOAD_PART_SIZE_BYTES",
                expected: "a byte count of at least 5242880 (5 MiB, the S3 minimum part size)",
                value: upload_part_size.to_string(),
            });
        }
        let tables = match env::var("EXPORT_TABLES_FILE") {
            Ok(path) => TableRegistry::from_file(path.as_ref())?,
            Err(_) => TableRegistry::demo(),
        };
        Ok(Self {
            database_url: secrets::read("DATABASE_URL", "DATABASE_URL_FILE")?
                .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL)),
            database_direct_url: database_direct_url()?,
            source_database_url: secrets::read("SOURCE_DATABASE_URL", "SOURCE_DATABASE_URL_FILE")?
                .unwrap_or_else(|| SecretString::from(DEFAULT_SOURCE_DATABASE_URL)),
            storage,
            upload_part_size,
            download_url_ttl: Duration::from_secs(parse_var(
                "DOWNLOAD_URL_TTL_SECS",
                "a number of seconds",
                900,
            )?),
            signing_secret: signing_secret()?,
            tables,
            export_max_attempts: positive("EXPORT_MAX_ATTEMPTS", "a positive number of attempts", 5)?,
            export_retention: days("EXPORT_RETENTION_DAYS", 30)?,
            formula_guard: parse_var("EXPORT_FORMULA_GUARD", "true or false", true)?,
            webhooks: WebhookConfig::from_env()?,
            statement_time_zone: statement_time_zone()?,
            formats: format_settings()?,
            schedules: ScheduleConfig::from_env()?,
        })
    }

    /// Where the sessions go that a transaction pooler cannot keep: migrations (under a session
    /// advisory lock), the workers' `LISTEN` and their maintenance leader's advisory lock.
    /// `DATABASE_DIRECT_URL` behind a pooler, `DATABASE_URL` otherwise.
    pub fn session_database_url(&self) -> &SecretString {
        self.database_direct_url.as_ref().unwrap_or(&self.database_url)
    }
}

/// `DATABASE_POOLER` (`none` or `transaction`) and `DATABASE_DIRECT_URL`: the direct URL when
/// `DATABASE_URL` is a transaction pooler. Either without the other stops start-up.
fn database_direct_url() -> Result<Option<SecretString>, ConfigError> {
    let direct = secrets::read("DATABASE_DIRECT_URL", "DATABASE_DIRECT_URL_FILE")?;
    match (var_or("DATABASE_POOLER", "none").as_str(), direct) {
        ("none", None) => Ok(None),
        ("none", Some(_)) => Err(ConfigError::Missing {
            var: "DATABASE_POOLER=transaction",
            because: "DATABASE_DIRECT_URL is set (only a transaction pooler in DATABASE_URL needs it)",
        }),
        ("transaction", Some(direct)) => Ok(Some(direct)),
        ("transaction", None) => Err(ConfigError::Missing {
            var: "DATABASE_DIRECT_URL",
            because: "DATABASE_POOLER=transaction (migrations, LISTEN and the maintenance leader's \
                      advisory lock need a session of their own, which a transaction pooler does not keep)",
        }),
        (other, _) => Err(ConfigError::Invalid {
            var: "DATABASE_POOLER",
            expected: "`none` or `transaction`",
            value: other.to_owned(),
        }),
    }
}

/// `API_BIND` when unset; `PUBLIC_BASE_URL` defaults to `http://` and the bind address.
pub const DEFAULT_API_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

impl ApiConfig {
    /// Reads the API's settings; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind: SocketAddr =
            parse_var("API_BIND", "a socket address such as 127.0.0.1:8080", DEFAULT_API_BIND)?;
        let public_base_url = var_or("PUBLIC_BASE_URL", &format!("http://{bind}"));
        Ok(Self {
            bind,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            freshness_window: reuse_policy()?.freshness,
            books_closed_after_days: reuse_policy()?.books_closed_after_days,
            max_range_days: positive("MAX_RANGE_DAYS", "a positive number of days", 366)?,
            rate_limit_per_minute: positive("RATE_LIMIT_PER_MINUTE", "a positive number of requests", 600)?,
            rate_limit_burst: positive("RATE_LIMIT_BURST", "a positive number of requests", 60)?,
            admin_session_ttl: Duration::from_secs(positive(
                "ADMIN_SESSION_TTL_SECS",
                "a positive number of seconds",
                8 * 3600,
            )?),
            auth_failures_per_minute: positive(
                "AUTH_FAILURES_PER_MINUTE",
                "a positive number of failed authentications",
                30,
            )?,
            trusted_proxies: trusted_proxies()?,
            max_outstanding_exports_per_key: max_outstanding_exports_per_key()?,
            idempotency_key_ttl: positive_secs("IDEMPOTENCY_KEY_TTL_SECS", Duration::from_secs(86_400))?,
            transport: TransportLimits::from_env()?,
            dashboard_sign_in: DashboardSignIn::from_env()?,
        })
    }
}

impl WorkerConfig {
    /// Reads the worker's settings; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        let concurrency: usize = positive("WORKER_CONCURRENCY", "a positive number of jobs", 4)?;
        let defaults = Self::default();
        Ok(Self {
            concurrency,
            lease: Duration::from_secs(positive("JOB_LEASE_SECS", "a positive number of seconds", 30)?),
            poll_interval: millis("JOB_POLL_INTERVAL_MS", defaults.poll_interval)?,
            retry_base: secs("JOB_RETRY_BASE_SECS", defaults.retry_base)?,
            retry_max: secs("JOB_RETRY_MAX_SECS", defaults.retry_max)?,
            shutdown_grace: secs("WORKER_SHUTDOWN_GRACE_SECS", defaults.shutdown_grace)?,
            maintenance_interval: secs("MAINTENANCE_INTERVAL_SECS", defaults.maintenance_interval)?,
            retention: Retention {
                jobs: days("JOB_RETENTION_DAYS", 7)?,
                export_rows: optional::<f64>("EXPORT_ROW_RETENTION_DAYS", "a positive number of days")?
                    .map(|d| Duration::try_from_secs_f64(d * 86_400.0).ok().filter(|d| !d.is_zero()))
                    .map(|d| {
                        d.ok_or_else(|| invalid("EXPORT_ROW_RETENTION_DAYS", "a positive number of days"))
                    })
                    .transpose()?,
            },
            progress_interval: millis("EXPORT_PROGRESS_INTERVAL_MS", defaults.progress_interval)?,
            metrics_bind: parse_var(
                "WORKER_METRICS_BIND",
                "a socket address such as 127.0.0.1:9464",
                defaults.metrics_bind,
            )?,
            stall_timeout: positive_secs("EXPORT_STALL_TIMEOUT_SECS", defaults.stall_timeout)?,
            retry_window: secs("JOB_RETRY_WINDOW_SECS", defaults.retry_window)?,
            abandoned_upload_age: secs("ABANDONED_UPLOAD_AGE_SECS", defaults.abandoned_upload_age)?,
            source_max_lag: optional("SOURCE_MAX_LAG_SECS", "a whole number of seconds")?,
            storage_check_interval: positive_secs(
                "STORAGE_CHECK_INTERVAL_SECS",
                defaults.storage_check_interval,
            )?,
        })
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(10),
            retention: Retention { jobs: Duration::from_secs(7 * 86_400), export_rows: None },
            progress_interval: Duration::from_secs(1),
            metrics_bind: ([127, 0, 0, 1], 9464).into(),
            stall_timeout: Duration::from_secs(300),
            retry_window: Duration::from_secs(900),
            abandoned_upload_age: Duration::from_secs(60),
            source_max_lag: None,
            storage_check_interval: Duration::from_secs(60),
        }
    }
}

fn var_or(var: &str, default: &str) -> String {
    env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Reads `var` and parses it; unset or empty gives `default`, anything unparsable is an error.
pub(crate) fn parse_var<T: FromStr>(
    var: &'static str,
    expected: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match env::var(var) {
        Ok(value) if !value.is_empty() => {
            value.trim().parse().map_err(|_| ConfigError::Invalid { var, expected, value })
        }
        _ => Ok(default),
    }
}

/// Reads `var` and parses it; unset or empty gives `None`, anything unparsable is an error.
fn optional<T: FromStr>(var: &'static str, expected: &'static str) -> Result<Option<T>, ConfigError> {
    match env::var(var) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map(Some).map_err(|_| ConfigError::Invalid { var, expected, value })
        }
        _ => Ok(None),
    }
}

fn positive<T: FromStr + Default + PartialOrd>(
    var: &'static str,
    expected: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    let value = parse_var(var, expected, default)?;
    if value <= T::default() {
        return Err(ConfigError::Invalid { var, expected, value: env::var(var).unwrap_or_default() });
    }
    Ok(value)
}

/// `SIGNING_SECRET` (or `SIGNING_SECRET_FILE`), when set: at least [`crate::signing::MIN_KEY_BYTES`] of key material, or
/// start-up stops (a short secret lets anyone who guesses it sign download links).
fn signing_secret() -> Result<Option<SecretString>, ConfigError> {
    let Some(secret) = secrets::read("SIGNING_SECRET", "SIGNING_SECRET_FILE")? else {
        return Ok(None);
    };
    let (got, min) =
        (crate::signing::key_material_bytes(secret.expose_secret()), crate::signing::MIN_KEY_BYTES);
    if got < min {
        return Err(ConfigError::WeakSigningSecret { min, got });
    }
    Ok(Some(secret))
}

/// `STATEMENT_TIME_ZONE`: an IANA name, UTC when unset.
fn statement_time_zone() -> Result<StatementZone, ConfigError> {
    let raw = var_or("STATEMENT_TIME_ZONE", "UTC");
    StatementZone::parse(raw.trim()).map_err(|_| ConfigError::Invalid {
        var: "STATEMENT_TIME_ZONE",
        expected: "an IANA time zone name such as Europe/Berlin",
        value: raw,
    })
}

/// The bank formats' `STATEMENT_*` settings.
fn format_settings() -> Result<FormatSettings, ConfigError> {
    let defaults = FormatSettings::default();
    let id = |var: &'static str, default: String| -> Result<String, ConfigError> {
        let value = var_or(var, &default);
        let plain = !value.is_empty()
            && value.len() <= 32
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b' '));
        if plain {
            Ok(value)
        } else {
            Err(ConfigError::Invalid { var, expected: "1 to 32 of A-Z a-z 0-9 - . space", value })
        }
    };
    let optional_id = |var: &'static str| -> Result<Option<String>, ConfigError> {
        match env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(_) => id(var, String::new()).map(Some),
        }
    };
    Ok(FormatSettings {
        mt940_entries_per_page: positive(
            "STATEMENT_MT940_ENTRIES_PER_PAGE",
            "a positive number of entries",
            defaults.mt940_entries_per_page,
        )?,
        bai2_sender: id("STATEMENT_BAI2_SENDER_ID", defaults.bai2_sender)?,
        bai2_receiver: id("STATEMENT_BAI2_RECEIVER_ID", defaults.bai2_receiver)?,
        ofx_org: optional_id("STATEMENT_OFX_ORG")?,
        ofx_fid: optional_id("STATEMENT_OFX_FID")?,
    })
}

/// `TRUSTED_PROXIES`: comma-separated addresses (`10.0.0.5`) or CIDR blocks (`10.0.0.0/8`).
fn trusted_proxies() -> Result<Vec<ipnet::IpNet>, ConfigError> {
    var_or("TRUSTED_PROXIES", "")
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    var: "TRUSTED_PROXIES",
                    expected: "comma-separated IP addresses or CIDR blocks",
                    value: entry.to_owned(),
                })
        })
        .collect()
}

fn secs(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    parse_var(var, "a number of seconds", default.as_secs_f64())
        .and_then(|s| Duration::try_from_secs_f64(s).map_err(|_| invalid(var, "a number of seconds")))
}

fn positive_secs(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let value = secs(var, default)?;
    if value.is_zero() {
        return Err(invalid(var, "a positive number of seconds"));
    }
    Ok(value)
}

/// The `S3_*` settings (`STORAGE_BACKEND=s3`).
fn s3_config() -> Result<S3Config, ConfigError> {
    Ok(S3Config {
        bucket: env::var("S3_BUCKET")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing { var: "S3_BUCKET", because: "STORAGE_BACKEND=s3" })?,
        region: optional("S3_REGION", "a region name such as eu-west-1")?,
        endpoint: endpoint("S3_ENDPOINT")?,
        public_endpoint: endpoint("S3_PUBLIC_ENDPOINT")?,
        path_style: parse_var("S3_PATH_STYLE", "true or false", false)?,
        credentials: s3_static_credentials()?,
        encryption: s3_encryption()?,
        checksum: s3_checksum()?,
        retry_timeout: s3_retry_timeout()?,
    })
}

/// An `http://` or `https://` URL; unset or empty gives `None`.
fn endpoint(var: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(url) = optional::<String>(var, "an http:// or https:// URL")? else { return Ok(None) };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#']) {
        return Err(invalid(var, "an http:// or https:// URL (scheme, host, optional port and path)"));
    }
    Ok(Some(url.trim_end_matches('/').to_owned()))
}

/// An https URL, or an http one on a loopback address (a provider on this host, as in tests),
/// without query or fragment.
fn issuer_is_acceptable(url: &str) -> bool {
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return false,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    !host.is_empty()
        && !url.contains(['?', '#'])
        && !url.chars().any(char::is_whitespace)
        && (https || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

/// `S3_ACCESS_KEY_ID` with `S3_SECRET_ACCESS_KEY` (or its `_FILE`): both or neither. Neither:
/// the environment's credentials.
fn s3_static_credentials() -> Result<Option<S3StaticCredentials>, ConfigError> {
    let access_key_id = env::var("S3_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty());
    let secret = secrets::read("S3_SECRET_ACCESS_KEY", "S3_SECRET_ACCESS_KEY_FILE")?;
    match (access_key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(Some(S3StaticCredentials { access_key_id, secret_access_key }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Missing {
            var: "S3_SECRET_ACCESS_KEY",
            because: "S3_ACCESS_KEY_ID is set (set both, or neither to use the AWS_* credentials)",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            var: "S3_ACCESS_KEY_ID",
            because: "S3_SECRET_ACCESS_KEY is set (set both, or neither to use the AWS_* credentials)",
        }),
    }
}

/// `S3_SSE` (`AES256` or `aws:kms`) and `S3_SSE_KMS_KEY_ID` (only with `aws:kms`).
fn s3_encryption() -> Result<S3Encryption, ConfigError> {
    let key_id = optional::<String>("S3_SSE_KMS_KEY_ID", "a KMS key id, alias or ARN")?;
    let sse = optional::<String>("S3_SSE", "AES256 or aws:kms")?;
    match (sse.as_deref(), key_id) {
        (None, None) => Ok(S3Encryption::BucketDefault),
        (Some("AES256"), None) => Ok(S3Encryption::Aes256),
        (Some("aws:kms"), key_id) => Ok(S3Encryption::Kms { key_id }),
        (Some("AES256") | None, Some(_)) => Err(ConfigError::Conflict {
            var: "S3_SSE_KMS_KEY_ID",
            problem: "is set but S3_SSE is not aws:kms: set S3_SSE=aws:kms to encrypt with that key, \
                      or unset S3_SSE_KMS_KEY_ID",
        }),
        (Some(other), _) => Err(ConfigError::Invalid {
            var: "S3_SSE",
            expected: "AES256 (SSE-S3) or aws:kms (SSE-KMS)",
            value: other.to_owned(),
        }),
    }
}

/// `S3_CHECKSUM`: `sha256` (the default) or `none`.
fn s3_checksum() -> Result<bool, ConfigError> {
    match var_or("S3_CHECKSUM", "sha256").trim() {
        "sha256" => Ok(true),
        "none" => Ok(false),
        other => Err(ConfigError::Invalid {
            var: "S3_CHECKSUM",
            expected: "sha256 or none",
            value: other.to_owned(),
        }),
    }
}

/// Default of `S3_RETRY_TIMEOUT_SECS`: rides out a server restart or a short network outage
/// within one attempt; longer outages go to the job's own retries, which start a fresh upload.
pub(crate) const DEFAULT_S3_RETRY_TIMEOUT: Duration = Duration::from_secs(180);

/// `object_store` retries a request without signing it again, so a retry must come while its
/// signature and credentials are still valid: its documentation asks for less than 5 minutes.
pub(crate) const MAX_S3_RETRY_TIMEOUT: Duration = Duration::from_secs(300);

fn s3_retry_timeout() -> Result<Duration, ConfigError> {
    let timeout = secs("S3_RETRY_TIMEOUT_SECS", DEFAULT_S3_RETRY_TIMEOUT)?;
    if timeout > MAX_S3_RETRY_TIMEOUT {
        return Err(invalid(
            "S3_RETRY_TIMEOUT_SECS",
            "a number of seconds up to 300 (retried S3 requests are not signed again)",
        ));
    }
    Ok(timeout)
}

fn millis(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    parse_var(var, "a number of milliseconds", default.as_millis() as u64).map(Duration::from_millis)
}

fn days(var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let days: f64 = parse_var(var, "a number of days", default as f64)?;
    Duration::try_from_secs_f64(days * 86_400.0).map_err(|_| invalid(var, "a number of days"))
}

fn invalid(var: &'static str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid { var, expected, value: env::var(var).unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use super::{issuer_is_acceptable, retry_schedule};

    #[test]
    fn retry_schedules_are_positive_seconds() {
        let secs = |s: &[f64]| s.iter().map(|s| std::time::Duration::from_secs_f64(*s)).collect::<Vec<_>>();
        assert_eq!(retry_schedule("5,300, 1800"), Some(secs(&[5.0, 300.0, 1800.0])));
        assert_eq!(retry_schedule("0.2"), Some(secs(&[0.2])));
        for bad in ["", "5,,6", "0", "-1", "5,x", "inf"] {
            assert_eq!(retry_schedule(bad), None, "{bad}");
        }
    }

    #[test]
    fn issuers_are_https_or_loopback_http_and_kept_as_written() {
        for ok in [
            "https://idp.example.com/realms/bank",
            "https://tenant.auth0.com/",
            "https://login.microsoftonline.com/0000/v2.0",
            "http://127.0.0.1:8081",
            "http://localhost:9000/",
            "http://[::1]:8080",
        ] {
            assert!(issuer_is_acceptable(ok), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.5",
            "ftp://idp.example.com",
            "https://",
            "https://idp.example.com/?x=1",
            "https://idp.example.com/#f",
            "idp.example.com",
            "http://127.0.0.1.evil.example",
        ] {
            assert!(!issuer_is_acceptable(bad), "{bad}");
        }
    }
}
