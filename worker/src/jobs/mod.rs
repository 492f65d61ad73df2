//! Job kinds and the context they run in. One file per kind; `registry` is the registration
//! list. A kind is a type ([`JobKind`]: its name, payload and attempt budget) that the worker
//! knows how to run (`Job`); the runner knows nothing of any kind's payload.

mod bank_statement;
mod deliver_webhook;
mod export_statement;
pub mod noop;
mod registry;

use std::{future::Future, sync::Arc, time::Duration};

use deadpool_postgres::{Pool, Transaction};
use shared::{
    config::{Config, WorkerConfig},
    db::DbError,
    exports::ExportStatement,
    failure::{Cause, FailureCode},
    queue::{ClaimedJob, JobKind},
    source::Source,
    storage::Storage,
    tables::TableRegistry,
    webhooks::DeliverWebhook,
};
use tokio_util::sync::CancellationToken;

pub(crate) use self::registry::Registry;
use crate::holds::Holds;

/// The job kinds this worker runs: the registration list.
pub(crate) fn registry() -> Registry {
    Registry::new().register::<ExportStatement>().register::<DeliverWebhook>().register::<noop::Noop>()
}

/// A job kind the worker can run. The implementing type is the job's payload ([`JobKind`]).
pub(crate) trait Job: JobKind {
    /// Runs one attempt. `cancel` fires when the attempt loses its job (cancelled, rescued,
    /// released at shutdown): it must then stop and write nothing.
    fn run(
        &self,
        ctx: &JobContext,
        job: &ClaimedJob,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Records a setback in the kind's own tables, inside the transaction that records it in
    /// the queue (so no other claim can run the job in between). Nothing by default.
    fn on_setback(
        &self,
        _ctx: &JobContext,
        _tx: &Transaction<'_>,
        _setback: Setback,
        _code: FailureCode,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        async { Ok(()) }
    }

    /// The span an attempt runs in: every log line of the attempt carries its fields.
    fn span(&self, job: &ClaimedJob) -> tracing::Span {
        tracing::info_span!("job", job.id = job.id, job.kind = Self::KIND, attempt = job.attempt)
    }

    /// When a job of this kind whose attempt `attempt` (1 for the first) failed retryably runs
    /// again. The default is the worker's: exponential backoff (`JOB_RETRY_BASE_SECS` doubling
    /// to `JOB_RETRY_MAX_SECS`) while attempts remain or within `JOB_RETRY_WINDOW_SECS`. A kind
    /// with a schedule of its own says when, or that there is no next attempt.
    fn backoff(_ctx: &JobContext, _attempt: i32) -> Backoff {
        Backoff::Worker
    }
}

/// When a retryably failed job runs again (see [`Job::backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backoff {
    /// The worker's exponential backoff, within the job's attempts or the retry window.
    Worker,
    /// After this delay (the kind's schedule), whatever the job's attempts say.
    After(Duration),
    /// Never: the schedule has no further attempt and the job fails.
    GiveUp,
}

/// What a job needs from the outside world.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) pool: Pool,
    pub(crate) source: Source,
    pub(crate) storage: Storage,
    pub(crate) tables: Arc<TableRegistry>,
    /// Interval between progress writes of a running export.
    pub(crate) progress_interval: Duration,
    /// How long a completed export's file is kept.
    pub(crate) export_retention: Duration,
    /// An export whose source sends nothing for this long fails (retryably).
    pub(crate) stall_timeout: Duration,
    /// Abandoned uploads are cleaned up once at least this old.
    pub(crate) abandoned_upload_age: Duration,
    /// Guard text cells against spreadsheet formula injection.
    pub(crate) formula_guard: bool,
    /// The bank formats' settings.
    pub(crate) formats: shared::formats::FormatSettings,
    /// This process's instruments (served on the worker's `/metrics`).
    pub metrics: Arc<shared::metrics::Metrics>,
    /// Test holds (nothing is armed in production).
    pub holds: Holds,
    /// Refuse to snapshot a source replica more than this many seconds behind its primary
    /// (`None`: no guard).
    pub(crate) source_max_lag: Option<u64>,
    /// The job kinds this worker runs ([`registry`]): the runner and maintenance reach a kind's
    /// code through it.
    pub(crate) kinds: Arc<Registry>,
    /// Webhook deliveries: their settings and the outbound HTTP client.
    pub(crate) webhooks: Arc<crate::outbound::Webhooks>,
    /// Recurring statements: how the maintenance leader's scheduler works.
    pub(crate) scheduler: shared::schedules::scheduler::Settings,
    /// The scheduler's clock (the database's, unless a benchmark drives it).
    pub scheduler_clock: crate::scheduling::SchedulerClock,
}

impl JobContext {
    pub(crate) fn new(
        config: &Config,
        worker: &WorkerConfig,
        pool: Pool,
        source: Source,
        storage: Storage,
        webhooks: crate::outbound::Webhooks,
    ) -> Self {
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
            formats: config.formats.clone(),
            metrics: Arc::default(),
            holds: Holds::default(),
            source_max_lag: worker.source_max_lag,
            kinds: Arc::new(registry()),
            webhooks: Arc::new(webhooks),
            scheduler: crate::scheduling::settings(config),
            scheduler_clock: crate::scheduling::SchedulerClock::default(),
        }
    }
}

/// Why an attempt did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// Worth another attempt: the source or storage was unreachable, Postgres hiccuped.
    #[error("{0}")]
    Retryable(Failure),
    /// No attempt can succeed: bad configuration, unknown table, malformed arguments.
    #[error("{0}")]
    Fatal(Failure),
    /// The attempt lost its lease or was cancelled: it must stop and write nothing.
    #[error("attempt no longer holds the job")]
    Fenced,
    /// A statement file begun for the currency of its first entry met another: the export
    /// starts over, reading the period's currencies first. Never leaves the export's own code.
    #[error("the period holds several currencies; the file starts over")]
    Replan,
}

impl JobError {
    /// A retryable failure of class `code`.
    pub(crate) fn retryable(code: FailureCode, cause: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(Failure { code, cause: cause.into(), detail: None })
    }

    /// A fatal failure of class `code`.
    pub(crate) fn fatal(code: FailureCode, cause: impl Into<anyhow::Error>) -> Self {
        Self::Fatal(Failure { code, cause: cause.into(), detail: None })
    }

    /// A fatal failure of class `code` caused by the source's data, with a client-safe `detail`
    /// the export records (see `exports::record_failure_detail`).
    pub(crate) fn fatal_with_detail(code: FailureCode, detail: String) -> Self {
        Self::Fatal(Failure { code, cause: anyhow::anyhow!("{detail}"), detail: Some(detail) })
    }
}

/// A failed attempt: its class, which is recorded and shown to clients, and its cause, which
/// only the log sees.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: FailureCode,
    pub(crate) cause: anyhow::Error,
    /// A client-safe sentence about the data behind the failure, when it has one.
    pub(crate) detail: Option<String>,
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

/// What became of a job that did not complete, for its kind's own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setback {
    /// The attempt failed; the queue will run the job again after a backoff.
    Retrying,
    /// The worker shut down and gave the job back; another worker will pick it up.
    Released,
    /// No attempts left, or a fatal error: the job failed for good.
    Failed,
}
