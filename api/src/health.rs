//! Liveness.

use poem_openapi::{Object, OpenApi, payload::Json};

use crate::ApiTags;

#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    pub status: String,
    /// The service version.
    pub version: String,
}

pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up (no dependency is checked)
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Health> {
        Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
    }
}
