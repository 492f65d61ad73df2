//! Liveness (`/health`) and readiness (`/ready`).

use std::time::{Duration, Instant};

use poem_openapi::{ApiResponse, Enum, Object, OpenApi, payload::Json, types::Example};
use shared::storage_checks::StorageCheck;
use time::OffsetDateTime;

use crate::{
    ApiTags, AppState,
    error::{ApiError, Problem},
};

/// The process is up.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Health {
    pub status: HealthStatus,
    /// The service version.
    pub version: String,
}

/// Always `ok` while the process serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
}

/// Always `ready` in a `200` (a service that is not ready answers `503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
}

/// A dependency readiness checks: `postgres`, `source` (the source database) or `storage` (the
/// bucket, or the local storage directory, exists; checked at most once a second per API
/// process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum CheckName {
    Postgres,
    Source,
    Storage,
}

/// As in the spec (the dashboard and readiness's `detail` name dependencies so).
impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Source => "source",
            Self::Storage => "storage",
        })
    }
}

/// One dependency's state.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Check {
    pub name: CheckName,
    pub ok: bool,
    /// Round-trip time of the check, in milliseconds.
    pub latency_ms: f64,
}

/// The outcome of the latest storage write check: `ok` (it wrote its object), `failed` (it could
/// not: not ready), `not_checked_yet` (no worker has checked yet: reported, not a reason to be
/// unready) or `unknown` (the result could not be read: Postgres does not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum WriteCheckStatus {
    /// The latest check wrote its object.
    Ok,
    /// The latest check could not write: not ready.
    Failed,
    /// No worker has checked yet (none has started): reported, but not a reason to be unready.
    NotCheckedYet,
    /// The result could not be read (Postgres does not answer; its own check says so).
    Unknown,
}

/// Whether storage takes writes: every worker overwrites one small object every
/// `STORAGE_CHECK_INTERVAL_SECS` and records the outcome; this is the latest one.
#[derive(Debug, Clone, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct StorageWriteCheck {
    pub status: WriteCheckStatus,
    /// When the latest check ran.
    pub checked_at: Option<OffsetDateTime>,
    /// Seconds since the latest check ran.
    pub age_secs: Option<f64>,
    /// How long its write took (or took to fail), in milliseconds.
    pub latency_ms: Option<f64>,
}

/// Every dependency answered.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub checks: Vec<Check>,
    pub storage_write: StorageWriteCheck,
}

#[derive(Debug, ApiResponse)]
pub enum HealthResponse {
    /// The process is up.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Health>),
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Postgres, the source database and storage all answer, and the latest storage write
    /// check did not fail.
    #[oai(status = 200, content_type = "application/json")]
    Ready(Json<Readiness>),
    /// A dependency does not answer, or storage does not accept writes; `detail` names it.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>, #[oai(header = "Retry-After")] i64),
}

impl Example for Check {
    fn example() -> Self {
        Self { name: CheckName::Postgres, ok: true, latency_ms: 0.8 }
    }
}

impl Example for StorageWriteCheck {
    fn example() -> Self {
        Self {
            status: WriteCheckStatus::Ok,
            checked_at: Some(time::macros::datetime!(2025-01-31 09:30:00 UTC)),
            age_secs: Some(12.5),
            latency_ms: Some(3.2),
        }
    }
}

impl Example for Readiness {
    fn example() -> Self {
        Self {
            status: ReadyStatus::Ready,
            checks: vec![Check::example()],
            storage_write: StorageWriteCheck::example(),
        }
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Example for Health {
    fn example() -> Self {
        Self { status: HealthStatus::Ok, version: "0.1.0".into() }
    }
}

pub(crate) struct HealthApi;

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up (no dependency is checked)
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health {
            status: HealthStatus::Ok,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    /// Readiness: Postgres, the source database and storage answer, and storage takes writes
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, state: poem::web::Data<&AppState>) -> ReadyResponse {
        let report = dependency_checks(&state).await;
        let problems = report.problems();
        if problems.is_empty() {
            let storage_write = report.storage_write.report();
            return ReadyResponse::Ready(Json(Readiness {
                status: ReadyStatus::Ready,
                checks: report.checks,
                storage_write,
            }));
        }
        let (problem, retry_after) = ApiError::NotReady(problems).problem();
        ReadyResponse::NotReady(Json(problem), crate::error::retry_after(retry_after.unwrap_or_default()))
    }
}

/// What readiness found: each dependency's check, and the latest storage write check.
#[derive(Debug, Clone)]
pub(crate) struct Dependencies {
    /// Postgres, the source database and storage (exists), in that order.
    pub checks: Vec<Check>,
    pub storage_write: WriteCheck,
}

impl Dependencies {
    /// Why the service is not ready, naming dependencies only (no internal text); empty when
    /// it is.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> =
            self.checks.iter().filter(|c| !c.ok).map(|c| format!("{} not answering", c.name)).collect();
        if matches!(&self.storage_write, WriteCheck::Recorded(c) if !c.ok) {
            problems.push("storage not accepting writes".into());
        }
        problems
    }
}

/// The latest storage write check as read from Postgres.
#[derive(Debug, Clone)]
pub(crate) enum WriteCheck {
    /// Its age is as of now, also when the reading comes from the cache.
    Recorded(StorageCheck),
    NotCheckedYet,
    Unreadable,
}

impl WriteCheck {
    pub(crate) fn report(&self) -> StorageWriteCheck {
        match self {
            Self::Recorded(c) => StorageWriteCheck {
                status: if c.ok { WriteCheckStatus::Ok } else { WriteCheckStatus::Failed },
                checked_at: Some(c.checked_at),
                age_secs: Some(c.age.as_secs_f64()),
                latency_ms: Some(c.latency.as_secs_f64() * 1000.0),
            },
            Self::NotCheckedYet => StorageWriteCheck {
                status: WriteCheckStatus::NotCheckedYet,
                checked_at: None,
                age_secs: None,
                latency_ms: None,
            },
            Self::Unreadable => StorageWriteCheck {
                status: WriteCheckStatus::Unknown,
                checked_at: None,
                age_secs: None,
                latency_ms: None,
            },
        }
    }
}

/// How long one look at storage (the existence check and the recorded write check) serves
/// `/ready` and the dashboard: a flood of readiness probes costs one LIST (or `stat`) and one
/// query a second.
pub(crate) const STORAGE_STATUS_TTL: Duration = Duration::from_secs(1);

/// Storage's state, cached for [`STORAGE_STATUS_TTL`] per API process. While it is refreshed,
/// other requests wait for that one refresh instead of starting their own.
#[derive(Debug, Default)]
pub(crate) struct StorageStatusCache {
    latest: tokio::sync::Mutex<Option<(Instant, Check, WriteCheck)>>,
}

impl StorageStatusCache {
    async fn get(&self, state: &AppState) -> (Check, WriteCheck) {
        let mut latest = self.latest.lock().await;
        if let Some((at, exists, write)) = latest.as_ref()
            && at.elapsed() < STORAGE_STATUS_TTL
        {
            let mut write = write.clone();
            if let WriteCheck::Recorded(c) = &mut write {
                c.age += at.elapsed();
            }
            return (exists.clone(), write);
        }
        let exists = timed(CheckName::Storage, async {
            state.storage.check_exists().await.map_err(|e| e.to_string())
        });
        let (exists, write) = tokio::join!(exists, latest_write_check(state));
        *latest = Some((Instant::now(), exists.clone(), write.clone()));
        (exists, write)
    }
}

async fn latest_write_check(state: &AppState) -> WriteCheck {
    let read = async {
        let db = state.pool.get().await.map_err(|e| e.to_string())?;
        shared::storage_checks::latest(&db).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(CHECK_TIMEOUT, read).await {
        Ok(Ok(Some(check))) => WriteCheck::Recorded(check),
        Ok(Ok(None)) => WriteCheck::NotCheckedYet,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read the storage write check");
            WriteCheck::Unreadable
        }
        Err(_) => {
            tracing::warn!("reading the storage write check timed out");
            WriteCheck::Unreadable
        }
    }
}

/// Postgres, the source database and storage, checked at once, each within a timeout; storage
/// (existence and the latest write check) through the per-process cache.
pub(crate) async fn dependency_checks(state: &AppState) -> Dependencies {
    let postgres = timed(CheckName::Postgres, async {
        let db = state.pool.get().await.map_err(|e| e.to_string())?;
        db.simple_query("SELECT 1").await.map(drop).map_err(|e| e.to_string())
    });
    let source = timed(CheckName::Source, async { state.source.ping().await.map_err(|e| e.to_string()) });
    let storage = state.storage_status.get(state);
    let (postgres, source, (storage, storage_write)) = tokio::join!(postgres, source, storage);
    Dependencies { checks: vec![postgres, source, storage], storage_write }
}

async fn timed(name: CheckName, check: impl Future<Output = Result<(), String>>) -> Check {
    let started = Instant::now();
    let ok = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(dependency = %name, error = %e, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(dependency = %name, "readiness check timed out");
            false
        }
    };
    Check { name, ok, latency_ms: started.elapsed().as_secs_f64() * 1000.0 }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON as _;

    use super::*;

    #[test]
    fn dependencies_are_named_in_messages_as_in_the_spec() {
        for name in [CheckName::Postgres, CheckName::Source, CheckName::Storage] {
            assert_eq!(name.to_json(), Some(serde_json::json!(name.to_string())));
        }
    }
}
