#![doc = include_str!("../README.md")]

pub mod holds;
pub mod jobs;
pub mod maintenance;
pub mod runner;
pub mod storage_check;

use anyhow::Context as _;
use shared::{
    config::{Config, WorkerConfig},
    db,
    source::Source,
    storage::Storage,
};

/// Builds the job context from configuration: Postgres pool, source pool, storage.
pub fn context(config: &Config, worker: &WorkerConfig) -> anyhow::Result<jobs::JobContext> {
    let pool = db::pool(&config.database_url, worker.concurrency + 4).context("DATABASE_URL")?;
    let source =
        Source::new(&config.source_database_url, worker.concurrency + 1).context("SOURCE_DATABASE_URL")?;
    let storage = Storage::new(&config.storage, config.upload_part_size).context("storage")?;
    Ok(jobs::JobContext::new(config, worker, pool, source, storage))
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
