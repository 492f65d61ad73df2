//! Job kinds and the context they run in. One file per kind; `run` is the registration list.

pub mod export_statement;
pub mod noop;

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{GenericClient, Pool};
use shared::{
    config::{Config, WorkerConfig},
    db::DbError,
    failure::{Cause, FailureCode},
    queue::ClaimedJob,
    source::Source,
    storage::Storage,
    tables::TableRegistry,
};
use tokio_util::sync::CancellationToken;

use crate::holds::Holds;

/// What a job needs from the outside world.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub pool: Pool,
    pub source: Source,
    pub storage: Storage,
    pub tables: Arc<TableRegistry>,
    /// Interval between progress writes of a running export.
    pub progress_interval: Duration,
    /// How long a completed export's file is kept.
    pub export_retention: Duration,
    /// An export whose source sends nothing for this long fails (retryably).
    pub stall_timeout: Duration,
    /// Abandoned uploads are cleaned up once at least this old.
    pub abandoned_upload_age: Duration,
    /// Guard text cells against spreadsheet formula injection.
    pub formula_guard: bool,
    /// This process's instruments (served on the worker's `/metrics`).
    pub metrics: Arc<shared::metrics::Metrics>,
    /// Test holds (nothing is armed in production).
    pub holds: Holds,
    /// Refuse to snapshot a source replica more than this many seconds behind its primary
    /// (`None`: no guard).
    pub source_max_lag: Option<u64>,
}

impl JobContext {
    pub fn new(config: &Config, worker: &WorkerConfig, pool: Pool, source: Source, storage: Storage) -> Self {
        Self {
            pool,
            source,
            storage,
            tables: Arc::new(config.tables.clone()),
            progress_interval: worker.progress_interval,
            stall_timeout: worker.stall_timeout,
            abandoned_upload_age: worker.abandoned_upload_age,
            export_retention: config.export_retention,
            formula_guard: config.formula_guard,
            metrics: Arc::default(),
            holds: Holds::default(),
            source_max_lag: worker.source_max_lag,
        }
    }
}

/// Why an attempt did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt: the source or storage was unreachable, Postgres hiccuped.
    #[error("{0}")]
    Retryable(Failure),
    /// No attempt can succeed: bad configuration, unknown table, malformed arguments.
    #[error("{0}")]
    Fatal(Failure),
    /// The attempt lost its lease or was cancelled: it must stop and write nothing.
    #[error("attempt no longer holds the job")]
    Fenced,
}

impl JobError {
    /// A retryable failure of class `code`.
    pub fn retryable(code: FailureCode, cause: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(Failure { code, cause: cause.into() })
    }

    /// A fatal failure of class `code`.
    pub fn fatal(code: FailureCode, cause: impl Into<anyhow::Error>) -> Self {
        Self::Fatal(Failure { code, cause: cause.into() })
    }
}

/// A failed attempt: its class, which is recorded and shown to clients, and its cause, which
/// only the log sees.
#[derive(Debug)]
pub struct Failure {
    pub code: FailureCode,
    pub cause: anyhow::Error,
}

impl std::fmt::Display for Failure {
    /// The code and the cause, each cause in the chain once (see [`Cause`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, Cause(self.cause.as_ref()))
    }
}

impl From<DbError> for JobError {
    fn from(e: DbError) -> Self {
        Self::retryable(FailureCode::Internal, e)
    }
}

impl From<deadpool_postgres::PoolError> for JobError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::retryable(FailureCode::Internal, e)
    }
}

/// Runs one claimed job. The registration list of job kinds.
pub async fn run(ctx: &JobContext, job: &ClaimedJob, cancel: CancellationToken) -> Result<(), JobError> {
    match job.kind.as_str() {
        shared::exports::EXPORT_JOB_KIND => export_statement::run(ctx, job, cancel).await,
        noop::KIND => noop::run().await,
        other => Err(JobError::fatal(FailureCode::Internal, anyhow::anyhow!("unknown job kind {other:?}"))),
    }
}

/// What became of a job that did not complete, for its kind's own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setback {
    /// The attempt failed; the queue will run the job again after a backoff.
    Retrying,
    /// The worker shut down and gave the job back; another worker will pick it up.
    Released,
    /// No attempts left, or a fatal error: the job failed for good.
    Failed,
}

/// Lets a job kind record a setback in its own tables (the export row's status and failure code),
/// in the transaction that records it in the queue.
pub async fn on_setback(
    ctx: &JobContext,
    db: &impl GenericClient,
    job_kind: &str,
    args: &serde_json::Value,
    setback: Setback,
    code: FailureCode,
) -> Result<(), DbError> {
    if job_kind == shared::exports::EXPORT_JOB_KIND {
        export_statement::on_setback(ctx, db, args, setback, code).await?;
    }
    Ok(())
}
