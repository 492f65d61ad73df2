#![doc = include_str!("../README.md")]

mod api_audit;
mod auth;
mod byte_ranges;
mod calendar_date;
mod client_addr;
mod dashboard;
mod downloads;
mod error;
mod exports;
mod files;
mod health;
mod idempotency;
mod input;
mod metrics;
mod oidc;
pub mod openapi_spec;
pub mod rate_limit;
mod requesters;
mod reuse;
mod routes;
mod schedules;
pub mod serve;
pub mod webhooks;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use poem::EndpointExt;
use poem_openapi::{OpenApiService, Tags};
use secrecy::ExposeSecret;
use shared::{
    config::{ApiConfig, Config},
    db,
    signing::UrlSigner,
    storage::Storage,
    tables::TableRegistry,
};

/// Everything a request handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Pool,
    pub(crate) storage: Storage,
    pub(crate) signer: UrlSigner,
    pub(crate) tables: Arc<TableRegistry>,
    pub(crate) public_base_url: String,
    /// The published spec (its `servers` name `public_base_url`), made on first request.
    published_spec: Arc<std::sync::OnceLock<openapi_spec::Spec>>,
    pub(crate) download_url_ttl: Duration,
    /// Longest statement a client may request, in days.
    pub(crate) max_range_days: i64,
    /// Attempts an export's job gets before it FAILS for good.
    pub(crate) export_max_attempts: i32,
    /// When a completed export is reused: the freshness window and the books-closed horizon.
    pub(crate) reuse_policy: shared::exports::ReusePolicy,
    pub(crate) rate_limiter: Arc<rate_limit::RateLimiter>,
    /// What authentication remembers: valid and unknown credentials, failures per address.
    pub(crate) credentials: Arc<auth::CredentialCache>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// The source database, for readiness.
    pub(crate) source: shared::source::Source,
    /// Requests answered by deduplication, flushed to Postgres in the background.
    pub(crate) reuse: Arc<reuse::ReuseCounter>,
    /// Repeat requests of exports by keys that had asked before, flushed in the background.
    pub(crate) requesters: Arc<requesters::RequesterLog>,
    /// Download links handed out and downloads served, flushed in the background.
    pub(crate) downloads: Arc<downloads::DownloadLog>,
    /// Most exports created by one key that may be pending or processing at once.
    pub(crate) max_outstanding_exports_per_key: i64,
    /// How long an `Idempotency-Key` and its response are kept.
    pub(crate) idempotency_key_ttl: Duration,
    /// Failed dashboard sign-ins are answered one at a time, each after a delay.
    pub(crate) sign_in_failures: Arc<tokio::sync::Mutex<()>>,
    pub(crate) admin_session_ttl: Duration,
    /// Single sign-on for the dashboard, when configured.
    pub(crate) oidc: Option<Arc<oidc::Oidc>>,
    /// Whether admin API keys may sign in to the dashboard (break-glass).
    pub(crate) admin_key_sign_in: bool,
    /// API requests that changed state, appended to the audit trail in the background.
    pub(crate) api_audit: Arc<api_audit::ApiAudit>,
    /// This process's instruments, with the queue gauges (served on `/metrics`).
    pub(crate) metrics: Arc<shared::metrics::Metrics>,
    /// Storage's readiness, looked at most once a second (see `health`).
    pub(crate) storage_status: Arc<health::StorageStatusCache>,
    /// Webhook endpoints: the address policy for registrations and the secrets' overlap.
    pub(crate) webhooks: shared::config::WebhookConfig,
    /// The time zone of a request that names none.
    pub(crate) statement_time_zone: shared::time_zones::StatementZone,
    /// The time zone names Postgres knows (read once): a request's zone must be one of them
    /// too, for the reuse rule reads the snapshot's date there.
    pub(crate) database_time_zones: Arc<tokio::sync::OnceCell<std::collections::HashSet<String>>>,
}

impl AppState {
    /// Refuses (`422`) a time zone Postgres does not know (its time zone data is older than
    /// the service's): the reuse rule reads an export's snapshot date there.
    pub(crate) async fn check_database_knows(
        &self,
        zone: &shared::time_zones::StatementZone,
    ) -> Result<(), error::ApiError> {
        if zone.is_utc() {
            return Ok(());
        }
        let known = self
            .database_time_zones
            .get_or_try_init(|| async {
                let db = self.db().await?;
                let rows = db
                    .query("SELECT name FROM pg_timezone_names", &[])
                    .await
                    .map_err(shared::db::DbError::from)?;
                Ok::<_, error::ApiError>(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })
            .await?;
        if known.contains(zone.name()) {
            return Ok(());
        }
        Err(error::ApiError::Unprocessable(vec![shared::statement::FieldError::new(
            "time_zone",
            format!(
                "{zone} is not known to the service's database (its time zone data is older); ask the operator"
            ),
        )]))
    }

    /// The spec this service publishes (`/openapi.json`, `/openapi.yaml`, `/docs`).
    pub(crate) fn published_spec(&self) -> &openapi_spec::Spec {
        self.published_spec.get_or_init(|| openapi_spec::published(&self.public_base_url))
    }

    pub fn from_config(config: &Config, api: &ApiConfig) -> anyhow::Result<Self> {
        let signer = match &config.signing_secret {
            Some(secret) => UrlSigner::new(secret.expose_secret().as_bytes()),
            None => {
                // Only local-disk downloads are signed by us; S3 links are pre-signed by S3.
                if matches!(config.storage, shared::config::StorageConfig::Local { .. }) {
                    tracing::warn!(
                        "SIGNING_SECRET is not set: download links use a random key and stop working \
                         when the API restarts (set it when running more than one API process)"
                    );
                }
                UrlSigner::random()
            }
        };
        Ok(Self {
            pool: db::service_pool(config, 16).context("DATABASE_URL")?,
            storage: Storage::new(&config.storage, config.upload_part_size).context("storage")?,
            signer,
            tables: Arc::new(config.tables.clone()),
            public_base_url: api.public_base_url.clone(),
            published_spec: Arc::default(),
            download_url_ttl: config.download_url_ttl,
            max_range_days: api.max_range_days,
            export_max_attempts: config.export_max_attempts,
            reuse_policy: shared::exports::ReusePolicy {
                freshness: api.freshness_window,
                books_closed_after_days: api.books_closed_after_days,
            },
            rate_limiter: Arc::new(rate_limit::RateLimiter::new(
                api.rate_limit_per_minute,
                api.rate_limit_burst,
            )),
            credentials: Arc::new(auth::CredentialCache::new(api.auth_failures_per_minute)),
            trusted_proxies: api.trusted_proxies.clone(),
            source: shared::source::Source::new(&config.source_database_url, 2)
                .context("SOURCE_DATABASE_URL")?,
            reuse: Arc::default(),
            requesters: Arc::default(),
            downloads: Arc::default(),
            max_outstanding_exports_per_key: api.max_outstanding_exports_per_key,
            idempotency_key_ttl: api.idempotency_key_ttl,
            sign_in_failures: Arc::default(),
            admin_session_ttl: api.admin_session_ttl,
            oidc: api
                .dashboard_sign_in
                .oidc
                .as_ref()
                .map(|settings| oidc::Oidc::new(settings, &api.public_base_url).map(Arc::new))
                .transpose()
                .context("OIDC_ISSUER_URL")?,
            admin_key_sign_in: api.dashboard_sign_in.admin_keys,
            api_audit: Arc::default(),
            metrics: Arc::new(shared::metrics::Metrics::new().with_queue_gauges()),
            storage_status: Arc::default(),
            webhooks: config.webhooks.clone(),
            statement_time_zone: config.statement_time_zone.clone(),
            database_time_zones: Arc::default(),
        })
    }
}

#[derive(Tags)]
pub(crate) enum ApiTags {
    /// Statement exports
    Exports,
    /// Completion webhooks: endpoints and their delivery logs
    Webhooks,
    /// Recurring statements: schedules and the re-run of their periods
    Schedules,
    /// Health and readiness
    Operations,
}

/// The OpenAPI service (operations and their generated document, which `openapi_spec` finishes).
pub fn openapi_service() -> OpenApiService<impl poem_openapi::OpenApi, ()> {
    OpenApiService::new(
        (exports::ExportsApi, webhooks::WebhooksApi, schedules::SchedulesApi, health::HealthApi),
        "Bank statement export service",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Request a bank statement export (account, table, date range), poll it by reference id, \
             and download the CSV through a short-lived signed URL. Identical requests are deduplicated. \
             Every error is an RFC 9457 `application/problem+json` document.",
    )
}

/// The committed spec as YAML (what `openapi.yaml` must equal).
pub fn openapi_yaml() -> String {
    openapi_spec::committed().yaml
}

/// How often reuse counts, repeat requests, the API's audit records, download links and
/// downloads reach Postgres.
const BATCH_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl AppState {
    /// Writes what requests batch in memory (reuse counts, repeat requests, audit records,
    /// download links and downloads) to Postgres.
    pub async fn flush_batches(&self) {
        self.reuse.flush(&self.pool).await;
        self.requesters.flush(&self.pool).await;
        self.api_audit.flush(&self.pool).await;
        self.downloads.flush(&self.pool).await;
    }
}

/// Flushes the batches every [`BATCH_FLUSH_INTERVAL`] for as long as the application lives.
fn spawn_batch_flusher(state: &AppState) {
    let (reuse, requesters, audit, downloads) = (
        Arc::downgrade(&state.reuse),
        Arc::downgrade(&state.requesters),
        Arc::downgrade(&state.api_audit),
        Arc::downgrade(&state.downloads),
    );
    let pool = state.pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BATCH_FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The task ends with the application that owns the batches.
            let (Some(reuse), Some(requesters), Some(audit), Some(downloads)) =
                (reuse.upgrade(), requesters.upgrade(), audit.upgrade(), downloads.upgrade())
            else {
                return;
            };
            reuse.flush(&pool).await;
            requesters.flush(&pool).await;
            audit.flush(&pool).await;
            downloads.flush(&pool).await;
        }
    });
}

/// The whole HTTP application: the route table (`routes`) under the body limit, the one error
/// path (problem documents), the `Allow` header, and request logging and metrics.
pub fn app(state: AppState) -> impl poem::Endpoint {
    spawn_batch_flusher(&state);
    routes::router()
        .around(limit_body)
        .around(name_path_parameters)
        .catch_all_error(error::into_problem)
        .around(allow_header)
        .around(log_request)
        .data(state)
}

/// Every request runs inside a span carrying its request id (the client's `X-Request-Id` when
/// it is a sane token, a new UUID otherwise), which every log line of the request shows and
/// the response returns. One log line per request: method, path, status, duration; never the
/// query string (local download links carry their signature there) and never a header (the API
/// key). The same figures feed the HTTP metrics, by route template.
async fn log_request<E: poem::Endpoint>(ep: Arc<E>, req: poem::Request) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    use tracing::Instrument as _;
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = routes::label(&path);
    let metrics = req.data::<AppState>().map(|state| state.metrics.clone());
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = std::time::Instant::now();
    let mut response = async {
        let response = ep.call(req).await?.into_response();
        tracing::info!(
            http.method = %method,
            http.path = %path,
            http.status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        Ok::<_, poem::Error>(response)
    }
    .instrument(span)
    .await?;
    if let Some(metrics) = metrics {
        let labels = [
            opentelemetry::KeyValue::new("method", metrics::method_label(&method)),
            opentelemetry::KeyValue::new("route", route),
            opentelemetry::KeyValue::new("status", i64::from(response.status().as_u16())),
        ];
        metrics.http_requests.add(1, &labels);
        metrics.http_duration.record(started.elapsed().as_secs_f64(), &labels);
    }
    if let Ok(value) = poem::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

const REQUEST_ID: &str = "x-request-id";

/// Up to 64 letters, digits, `-`, `_` or `.`: safe to log and to echo in a header.
fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Largest request body accepted (requests are a few hundred bytes of JSON).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads every request body here, before any extractor or authentication, through the limit
/// and deadline [`serve::BoundedBody`] puts on it: more than [`MAX_BODY_BYTES`] (however it is
/// sent: `Content-Length`, chunked, or an HTTP/2 stream with neither) is a 413, and a declared
/// `Content-Length` over the limit is refused without reading; a body that does not arrive
/// within the body deadline is a 408. Either way the connection is closed after the answer
/// (hyper does not drain an unread body). At most [`MAX_BODY_BYTES`] is ever held per request.
async fn limit_body<E: poem::Endpoint>(ep: Arc<E>, mut req: poem::Request) -> poem::Result<poem::Response> {
    use poem::{IntoResponse, error::ReadBodyError, http::StatusCode};
    let too_large = || poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE);
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(ReadBodyError::PayloadTooLarge) => return Err(too_large()),
        Err(ReadBodyError::Io(e)) => {
            let (status, detail) = match serve::BodyLimitError::find(&e) {
                Some(serve::BodyLimitError::TooLarge(_)) => return Err(too_large()),
                Some(serve::BodyLimitError::TimedOut) => {
                    (StatusCode::REQUEST_TIMEOUT, "The request body did not arrive in time.")
                }
                None => (StatusCode::BAD_REQUEST, "The request body could not be read."),
            };
            tracing::info!(http.status = status.as_u16(), error = %e, "request body not read");
            return Ok(error::problem_response(error::Problem::new(status, detail)));
        }
        Err(e) => return Err(poem::Error::from_string(e.to_string(), StatusCode::BAD_REQUEST)),
    };
    req.set_body(body);
    Ok(ep.call(req).await?.into_response())
}

/// A path parameter that does not parse, named as its route's template names it (poem-openapi
/// calls them `param0`, `param1`, … in order; see `error::name_path_parameter`).
async fn name_path_parameters<E: poem::Endpoint>(
    ep: Arc<E>,
    req: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    let route = routes::label(req.uri().path());
    ep.call(req).await.map(IntoResponse::into_response).map_err(|e| error::name_path_parameter(e, route))
}

/// RFC 9110: a 405 says which methods the resource does support.
async fn allow_header<E: poem::Endpoint>(ep: Arc<E>, req: poem::Request) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    let path = req.uri().path().to_owned();
    let mut response = ep.call(req).await?.into_response();
    if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED
        && let Ok(allow) = poem::http::HeaderValue::from_str(&routes::allow(&path))
    {
        response.headers_mut().insert(poem::http::header::ALLOW, allow);
    }
    Ok(response)
}
