#![doc = include_str!("../README.md")]

pub mod holds;
pub mod jobs;
pub mod maintenance;
mod outbound;
pub mod runner;
pub mod scheduling;
mod storage_check;

use anyhow::Context as _;
use shared::{
    config::{Config, WorkerConfig},
    db,
    source::Source,
    storage::Storage,
};

/// Builds the job context from configuration: Postgres pool, source pool, storage.
pub fn context(config: &Config, worker: &WorkerConfig) -> anyhow::Result<jobs::JobContext> {
    let pool = db::service_pool(config, worker.concurrency + 4).context("DATABASE_URL")?;
    let source =
        Source::new(&config.source_database_url, worker.concurrency + 1).context("SOURCE_DATABASE_URL")?;
    let storage = Storage::new(&config.storage, config.upload_part_size).context("storage")?;
    let webhooks = outbound::Webhooks::new(&config.webhooks).context("webhook client")?;
    Ok(jobs::JobContext::new(config, worker, pool, source, storage, webhooks))
}

/// Start-up checks of the source. Configured tables must exist in its schema; with the lag
/// guard (`SOURCE_MAX_LAG_SECS`), its user must be allowed to read the replication status. Both
/// are configuration errors. An unreachable source is not: exports retry until it answers.
pub async fn check_source(ctx: &jobs::JobContext) -> anyhow::Result<()> {
    use shared::source::SourceError;
    match ctx.source.validate(&ctx.tables).await {
        Ok(()) => {}
        Err(e @ SourceError::Schema { .. }) => {
            anyhow::bail!("EXPORT_TABLES_FILE does not match the source database: {e}")
        }
        Err(e) => {
            tracing::warn!(error = %e, "source database unreachable at start-up; exports will retry");
            return Ok(());
        }
    }
    let Some(limit) = ctx.source_max_lag else { return Ok(()) };
    match ctx.source.replication().await {
        Ok(state) => tracing::info!(?state, limit_secs = limit, "source replication lag guard on"),
        Err(e) if e.is_access_denied() => anyhow::bail!(
            "SOURCE_MAX_LAG_SECS is set, but the source user may not read the replication status \
             ({e}): grant it REPLICA MONITOR on MariaDB 10.5.9 or later (`GRANT REPLICA MONITOR ON *.* \
             TO …`; the same privilege as SLAVE MONITOR), REPLICATION CLIENT on MySQL or an older \
             MariaDB, or unset SOURCE_MAX_LAG_SECS"
        ),
        Err(e) if !e.is_retryable() => anyhow::bail!("SOURCE_MAX_LAG_SECS: {e}"),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the source's replication status; exports will retry")
        }
    }
    Ok(())
}

/// The worker's HTTP endpoint: `GET /metrics` in the Prometheus text format.
pub fn metrics_endpoint(metrics: std::sync::Arc<shared::metrics::Metrics>) -> impl poem::Endpoint {
    use poem::{EndpointExt as _, Response, get, handler, web::Data};

    #[handler]
    fn render(Data(metrics): Data<&std::sync::Arc<shared::metrics::Metrics>>) -> Response {
        Response::builder().content_type(shared::metrics::CONTENT_TYPE).body(metrics.render())
    }
    poem::Route::new().at("/metrics", get(render)).data(metrics)
}
