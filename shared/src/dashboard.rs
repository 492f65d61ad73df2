//! What the operator dashboard reads, composed from the modules that own the tables (`exports`,
//! `queue`, `workers`, `api_keys`, `downloads`, `db`): each page's reads in one read-only snapshot, and the two
//! things it changes by hand (retry or cancel a job) in one transaction each. No SQL here.

use deadpool_postgres::Object;
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use crate::{
    api_keys,
    db::{self, Begin, DbError},
    downloads::{self, DownloadRow, LinkRow},
    exports::{self, Export, ListError, ListFilter, stats::Overview},
    failure::FailureCode,
    metrics::Metrics,
    queue::{self, JobState, JobSummary},
    webhooks,
    workers::{self, WorkerInfo},
};

/// The overview page: analytics of the last 30 days and the newest exports.
#[derive(Debug, Clone)]
pub struct OverviewPage {
    /// Counts, rates and timings.
    pub stats: Overview,
    /// Exports created per hour (UTC) over the last 24 hours, oldest first.
    pub hourly: Vec<(PrimitiveDateTime, i64)>,
    /// Exports created per day (UTC) over the last 30 days, oldest first.
    pub daily: Vec<(PrimitiveDateTime, i64)>,
    /// The newest exports.
    pub recent: Vec<Export>,
}

/// Reads the overview page, with the `recent` newest exports.
pub async fn overview(db: &mut Object, recent: i64) -> Result<OverviewPage, DbError> {
    let tx = db::snapshot(db).await?;
    let stats = exports::stats::overview(&tx).await?;
    let hourly = exports::stats::exports_per_hour(&tx).await?;
    let daily = exports::stats::exports_per_day(&tx).await?;
    let recent = match exports::list(&tx, &ListFilter::default(), recent).await {
        Ok(recent) => recent,
        Err(ListError::Db(e)) => return Err(e),
        // Only a cursor can be unknown, and none is given.
        Err(ListError::UnknownCursor) => Vec::new(),
    };
    tx.commit().await?;
    Ok(OverviewPage { stats, hourly, daily, recent })
}

/// What the export of a job has done so far.
#[derive(Debug, Clone, Copy)]
pub struct ExportProgress {
    /// The export's id.
    pub id: Uuid,
    /// Rows written so far.
    pub rows_exported: i64,
}

/// A job as the queue page shows it: the job and, when it produces one, its export's progress.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The job.
    pub job: JobSummary,
    /// Its export, if its kind produces one.
    pub export: Option<ExportProgress>,
}

/// The queue page.
#[derive(Debug, Clone)]
pub struct QueuePage {
    /// Jobs by state, every state included.
    pub depth: Vec<(JobState, i64)>,
    /// Workers that heartbeated recently.
    pub live: Vec<WorkerInfo>,
    /// Postgres's clock (ages are shown relative to it).
    pub now: OffsetDateTime,
    /// Running jobs, longest-running first.
    pub running: Vec<JobRow>,
    /// Jobs waiting for a retry, most recent first.
    pub waiting: Vec<JobRow>,
    /// Failed jobs, most recent first.
    pub failed: Vec<JobRow>,
}

/// Reads the queue page, at most `limit` jobs per list.
pub async fn queue(db: &mut Object, limit: i64) -> Result<QueuePage, DbError> {
    let tx = db::snapshot(db).await?;
    let depth = queue::depth_by_state(&tx).await?;
    let live = workers::live(&tx, workers::ALIVE_WITHIN).await?;
    let now = db::now(&tx).await?;
    let mut lists = Vec::with_capacity(3);
    for state in [JobState::Running, JobState::Retryable, JobState::Failed] {
        let jobs = queue::in_state(&tx, state, limit).await?;
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let progress = exports::progress_of_jobs(&tx, &ids).await?;
        lists.push(
            jobs.into_iter()
                .map(|job| {
                    let export = progress
                        .iter()
                        .find(|(job_id, ..)| *job_id == job.id)
                        .map(|&(_, id, rows_exported)| ExportProgress { id, rows_exported });
                    JobRow { job, export }
                })
                .collect(),
        );
    }
    tx.commit().await?;
    let [running, waiting, failed] = <[Vec<JobRow>; 3]>::try_from(lists).expect("three lists");
    Ok(QueuePage { depth, live, now, running, waiting, failed })
}

/// What the export page shows beside the export itself.
#[derive(Debug, Clone)]
pub struct ExportPage {
    /// The job that produces it.
    pub job: Option<JobSummary>,
    /// The name of the key that requested it (`None` when deleted or not recorded).
    pub requester: Option<String>,
    /// Its newest download links.
    pub links: Vec<LinkRow>,
    /// Its newest downloads through the file endpoint.
    pub downloads: Vec<DownloadRow>,
}

/// Reads what the export page shows beside `export`, with its `recent` newest download links
/// and downloads.
pub async fn export(db: &mut Object, export: &Export, recent: i64) -> Result<ExportPage, DbError> {
    let tx = db::snapshot(db).await?;
    let job = match export.job_id {
        Some(id) => queue::get(&tx, id).await?,
        None => None,
    };
    let requester = match export.api_key_id {
        Some(id) => api_keys::name_of(&tx, id).await?,
        None => None,
    };
    let links = downloads::links_of(&tx, export.id, recent).await?;
    let downloads = downloads::downloads_of(&tx, export.id, recent).await?;
    tx.commit().await?;
    Ok(ExportPage { job, requester, links, downloads })
}

/// What the health page reads from Postgres.
#[derive(Debug, Clone)]
pub struct HealthPage {
    /// The newest migration applied.
    pub schema_version: Option<i32>,
    /// Workers that heartbeated recently.
    pub live: Vec<WorkerInfo>,
}

/// Reads the health page's Postgres figures.
pub async fn health(db: &mut Object) -> Result<HealthPage, DbError> {
    let tx = db::snapshot(db).await?;
    let schema_version = db::schema_version(&tx).await?;
    let live = workers::live(&tx, workers::ALIVE_WITHIN).await?;
    tx.commit().await?;
    Ok(HealthPage { schema_version, live })
}

/// The outcome of retrying a job by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Queued to run now (with one more attempt if it had used them all).
    Now,
    /// Only failed jobs and jobs waiting for a retry can be retried.
    NotRetryable,
    /// Its export was replaced by an identical one that is live: retry that one instead.
    Superseded,
}

/// Puts a failed (or retry-waiting) job back in the queue to run at once, and its export back
/// to PENDING (or the webhook delivery it sends back to pending), in one transaction. The export is locked before the job, as a cancel does, so
/// the two cannot deadlock. Given a transaction, the retry is a savepoint in it.
pub async fn retry_job(db: &mut impl Begin, job_id: i64) -> Result<Retried, DbError> {
    let tx = db.begin().await?;
    if let Some(export_id) = exports::of_job(&tx, job_id).await? {
        match exports::revive(&tx, export_id).await? {
            exports::Revived::Now => {}
            exports::Revived::NotRevivable => return Ok(Retried::NotRetryable),
            exports::Revived::SlotTaken => return Ok(Retried::Superseded),
        }
    }
    webhooks::deliveries::revive_for_job(&tx, job_id).await?;
    if !queue::retry_now(&tx, job_id).await? {
        return Ok(Retried::NotRetryable);
    }
    tx.commit().await?;
    Ok(Retried::Now)
}

/// The outcome of cancelling a job by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCancelled {
    /// Cancelled now (with its export, when it produces one).
    Now,
    /// It had already finished: nothing changed.
    AlreadyFinished,
    /// No such job.
    NotFound,
}

/// Cancels a job for an operator: through its export when it produces one (so the export
/// shows CANCELLED too, for every requester), otherwise the job alone (a webhook delivery it
/// was sending ends as failed with it).
pub async fn cancel_job(
    db: &mut impl Begin,
    job_id: i64,
    metrics: &Metrics,
) -> Result<JobCancelled, DbError> {
    if queue::get(&*db, job_id).await?.is_none() {
        return Ok(JobCancelled::NotFound);
    }
    let reason = FailureCode::CancelledByOperator;
    let cancelled = match exports::of_job(&*db, job_id).await? {
        Some(export_id) => matches!(
            exports::cancel(db, export_id, exports::Canceller::Operator, reason, metrics).await?,
            exports::Cancelled::Now(_)
        ),
        None => {
            let tx = db.begin().await?;
            let cancelled = queue::cancel(&tx, job_id, reason).await?;
            if cancelled {
                webhooks::deliveries::failed_for_job(&tx, job_id).await?;
            }
            tx.commit().await?;
            cancelled
        }
    };
    Ok(if cancelled { JobCancelled::Now } else { JobCancelled::AlreadyFinished })
}
