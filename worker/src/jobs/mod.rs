//! Job kinds and the context they run in. One file per kind; `run` is the registration list.

pub mod export_statement;

use std::sync::Arc;

use deadpool_postgres::Pool;
use shared::{
    config::Config, db::DbError, queue::ClaimedJob, source::Source, storage::Storage, tables::TableRegistry,
};
use tokio_util::sync::CancellationToken;

/// What a job needs from the outside world.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub pool: Pool,
    pub source: Source,
    pub storage: Storage,
    pub tables: Arc<TableRegistry>,
    /// Rows between progress writes are bounded by this interval.
    pub progress_interval: std::time::Duration,
}

impl JobContext {
    pub fn new(config: &Config, pool: Pool, source: Source, storage: Storage) -> Self {
        Self {
            pool,
            source,
            storage,
            tables: Arc::new(config.tables.clone()),
            progress_interval: std::time::Duration::from_secs(1),
        }
    }
}

/// Why an attempt did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt: the source or storage was unreachable, Postgres hiccuped.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// No attempt can succeed: bad configuration, unknown table, malformed arguments.
    #[error("{0:#}")]
    Fatal(anyhow::Error),
    /// The attempt lost its lease or was cancelled: it must stop and write nothing.
    #[error("attempt no longer holds the job")]
    Fenced,
}

impl From<DbError> for JobError {
    fn from(e: DbError) -> Self {
        Self::Retryable(e.into())
    }
}

/// Runs one claimed job. The registration list of job kinds.
pub async fn run(ctx: &JobContext, job: &ClaimedJob, cancel: CancellationToken) -> Result<(), JobError> {
    match job.kind.as_str() {
        shared::exports::EXPORT_JOB_KIND => export_statement::run(ctx, job, cancel).await,
        other => Err(JobError::Fatal(anyhow::anyhow!("unknown job kind {other:?}"))),
    }
}

/// Lets a job kind record a failed attempt in its own tables. `retrying`: the queue will run it
/// again; otherwise the job failed for good.
pub async fn on_failure(
    ctx: &JobContext,
    job_kind: &str,
    args: &serde_json::Value,
    retrying: bool,
    message: &str,
) {
    if job_kind == shared::exports::EXPORT_JOB_KIND {
        export_statement::on_failure(ctx, args, retrying, message).await;
    }
}
