//! Liveness (`/health`) and readiness (`/ready`).

use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use crate::{ApiTags, AppState, error::Problem};

/// The process is up.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    pub status: String,
    /// The service version.
    pub version: String,
}

/// One dependency's state.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Check {
    /// `postgres`, `source` or `storage`.
    pub name: String,
    pub ok: bool,
    /// Round-trip time of the check, in milliseconds.
    pub latency_ms: f64,
}

/// Every dependency answered.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Readiness {
    /// `ready`
    pub status: String,
    pub checks: Vec<Check>,
}

#[derive(Debug, ApiResponse)]
pub enum HealthResponse {
    /// The process is up.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Health>),
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Postgres, the source database and storage all answer.
    #[oai(status = 200, content_type = "application/json")]
    Ready(Json<Readiness>),
    /// A dependency does not answer; `detail` names it.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

impl Example for Check {
    fn example() -> Self {
        Self { name: "postgres".into(), ok: true, latency_ms: 0.8 }
    }
}

impl Example for Readiness {
    fn example() -> Self {
        Self { status: "ready".into(), checks: vec![Check::example()] }
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Example for Health {
    fn example() -> Self {
        Self { status: "ok".into(), version: "0.1.0".into() }
    }
}

pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up (no dependency is checked)
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }))
    }

    /// Readiness: Postgres, the source database and storage answer
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, state: poem::web::Data<&AppState>) -> ReadyResponse {
        let checks = dependency_checks(&state).await;
        let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
        if failed.is_empty() {
            return ReadyResponse::Ready(Json(Readiness { status: "ready".into(), checks }));
        }
        let detail = format!("Not ready: {} not answering.", failed.join(", "));
        ReadyResponse::NotReady(Json(Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)), 5)
    }
}

/// Postgres, the source database and storage, checked at once, each within a timeout.
pub async fn dependency_checks(state: &AppState) -> Vec<Check> {
    let postgres = timed("postgres", async {
        let db = state.pool.get().await.map_err(|e| e.to_string())?;
        db.simple_query("SELECT 1").await.map(drop).map_err(|e| e.to_string())
    });
    let source = timed("source", async { state.source.ping().await.map_err(|e| e.to_string()) });
    let storage = timed("storage", async { state.storage.ping().await.map_err(|e| e.to_string()) });
    let (postgres, source, storage) = tokio::join!(postgres, source, storage);
    vec![postgres, source, storage]
}

async fn timed(name: &str, check: impl Future<Output = Result<(), String>>) -> Check {
    let started = Instant::now();
    let ok = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness check timed out");
            false
        }
    };
    Check { name: name.into(), ok, latency_ms: started.elapsed().as_secs_f64() * 1000.0 }
}
