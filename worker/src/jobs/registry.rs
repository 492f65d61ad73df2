//! The job kinds a worker runs, by name: the one place a stored kind name meets its type.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use shared::{db::DbError, failure::FailureCode, queue::ClaimedJob};
use tokio_util::sync::CancellationToken;

use super::{Backoff, Job, JobContext, JobError, Setback};

/// Registered job kinds ([`Registry::register`]); see [`super::registry`] for the list.
#[derive(Default)]
pub(crate) struct Registry {
    kinds: HashMap<&'static str, Entry>,
}

/// [`Job::run`] with the payload read from the claimed job.
type RunFn =
    for<'a> fn(&'a JobContext, &'a ClaimedJob, CancellationToken) -> BoxFuture<'a, Result<(), JobError>>;
/// [`Job::on_setback`] with the payload read from the job's arguments.
type SetbackFn = for<'a> fn(
    &'a JobContext,
    &'a Transaction<'a>,
    &'a serde_json::Value,
    Setback,
    FailureCode,
) -> BoxFuture<'a, Result<(), DbError>>;

/// One kind's code, its payload type erased.
struct Entry {
    run: RunFn,
    on_setback: SetbackFn,
    span: fn(&ClaimedJob) -> Option<tracing::Span>,
    backoff: fn(&JobContext, i32) -> Backoff,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// No kinds.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds job kind `J`.
    pub(crate) fn register<J: Job>(mut self) -> Self {
        let entry =
            Entry { run: run::<J>, on_setback: on_setback::<J>, span: span::<J>, backoff: J::backoff };
        assert!(self.kinds.insert(J::KIND, entry).is_none(), "job kind {:?} registered twice", J::KIND);
        self
    }

    /// Runs one attempt of a claimed job. A kind this worker does not know, or a payload its
    /// kind cannot read, fails the job for good.
    pub(crate) async fn run(
        &self,
        ctx: &JobContext,
        job: &ClaimedJob,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        match self.kinds.get(job.kind.as_str()) {
            Some(entry) => (entry.run)(ctx, job, cancel).await,
            None => Err(JobError::fatal(
                FailureCode::Internal,
                anyhow::anyhow!("unknown job kind {:?}", job.kind),
            )),
        }
    }

    /// Lets the job's kind record a setback in its own tables (see [`Job::on_setback`]), in
    /// the queue's transaction. A kind or payload it does not know records nothing.
    pub(crate) async fn on_setback(
        &self,
        ctx: &JobContext,
        tx: &Transaction<'_>,
        kind: &str,
        args: &serde_json::Value,
        setback: Setback,
        code: FailureCode,
    ) -> Result<(), DbError> {
        match self.kinds.get(kind) {
            Some(entry) => (entry.on_setback)(ctx, tx, args, setback, code).await,
            None => Ok(()),
        }
    }

    /// When the job runs again after a retryable failure of its latest attempt: its kind's
    /// [`Job::backoff`] (the worker's backoff for a kind this worker does not know).
    pub(crate) fn backoff(&self, ctx: &JobContext, job: &ClaimedJob) -> Backoff {
        self.kinds.get(job.kind.as_str()).map_or(Backoff::Worker, |entry| (entry.backoff)(ctx, job.attempt))
    }

    /// The span an attempt of this job runs in: its kind's ([`Job::span`]), or the job's id,
    /// kind and attempt for a kind or payload this worker does not know.
    pub(crate) fn span(&self, job: &ClaimedJob) -> tracing::Span {
        self.kinds.get(job.kind.as_str()).and_then(|entry| (entry.span)(job)).unwrap_or_else(
            || tracing::info_span!("job", job.id = job.id, job.kind = %job.kind, attempt = job.attempt),
        )
    }
}

/// The job's payload as its kind's type.
fn payload<J: Job>(args: &serde_json::Value) -> Result<J, serde_json::Error> {
    J::deserialize(args)
}

fn run<'a, J: Job>(
    ctx: &'a JobContext,
    job: &'a ClaimedJob,
    cancel: CancellationToken,
) -> BoxFuture<'a, Result<(), JobError>> {
    Box::pin(async move {
        let payload = payload::<J>(&job.args).map_err(|e| {
            JobError::fatal(FailureCode::Internal, anyhow::anyhow!("malformed job arguments: {e}"))
        })?;
        payload.run(ctx, job, cancel).await
    })
}

fn on_setback<'a, J: Job>(
    ctx: &'a JobContext,
    tx: &'a Transaction<'a>,
    args: &'a serde_json::Value,
    setback: Setback,
    code: FailureCode,
) -> BoxFuture<'a, Result<(), DbError>> {
    Box::pin(async move {
        let Ok(payload) = payload::<J>(args) else { return Ok(()) };
        payload.on_setback(ctx, tx, setback, code).await
    })
}

fn span<J: Job>(job: &ClaimedJob) -> Option<tracing::Span> {
    payload::<J>(&job.args).ok().map(|payload| payload.span(job))
}
