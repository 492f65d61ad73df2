//! The Postgres job queue (table `jobs`).
//!
//! Jobs are enqueued in the caller's transaction, claimed in batches with
//! `FOR UPDATE SKIP LOCKED`, and held under a lease that the worker extends with one batched
//! heartbeat. Each claim draws a fresh `attempt_token`; every later write must present it, so a
//! worker that stalled past its lease cannot overwrite a job another worker has re-claimed.
//! No transaction is held open while a job runs.

use std::{future::Future, time::Duration};

use crate::db::Sql;
use serde::{Serialize, de::DeserializeOwned};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    db::{DbError, decode, text_enum},
    failure::FailureCode,
};

mod cursor;
pub use cursor::{ClaimCursor, Position};

text_enum! {
    /// Where a job is in its life (`jobs.state`; the partial indexes of V1 name these values).
    pub enum JobState {
        /// Waiting for a claim: new, given back at shutdown, or retried by hand.
        Available = "available",
        /// Claimed: a worker holds it under lease.
        Running = "running",
        /// An attempt failed; the job runs again at its `run_at`.
        Retryable = "retryable",
        /// An attempt completed it.
        Completed = "completed",
        /// No attempts left, or a fatal error.
        Failed = "failed",
        /// Cancelled before it finished.
        Cancelled = "cancelled",
    }
}

/// A kind of job: its payload is the type itself (stored as JSON in `jobs.args`). The worker
/// knows how to run a kind (`worker::jobs::Job`); anything may enqueue one.
pub trait JobKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind's name in `jobs.kind`. Persisted data: never rename one.
    const KIND: &'static str;
    /// Attempts a job of this kind gets unless its enqueuer gives a budget of its own (the
    /// column's default).
    const MAX_ATTEMPTS: i32 = 5;

    /// Adds this job with its kind's attempt budget. Call it inside the transaction that writes
    /// the domain row so both commit or neither does. Returns the job id.
    fn enqueue(&self, db: &impl Sql) -> impl Future<Output = Result<i64, DbError>> + Send {
        self.enqueue_with_attempts(db, Self::MAX_ATTEMPTS)
    }

    /// Like [`JobKind::enqueue`], with `max_attempts` attempts (a configured budget).
    fn enqueue_with_attempts(
        &self,
        db: &impl Sql,
        max_attempts: i32,
    ) -> impl Future<Output = Result<i64, DbError>> + Send {
        let args = serde_json::to_value(self).expect("job arguments serialize to JSON");
        async move { insert(db, Self::KIND, &args, max_attempts).await }
    }
}

/// Channel the enqueue trigger notifies; workers LISTEN on it and also poll.
pub const NOTIFY_CHANNEL: &str = "statement_jobs";

/// The claim CTE: `{limit}` (see [`claim_sql`]), `$1` worker id, `$2` lease seconds, `$3`–`$5`
/// the [`Position`] to read from (NULL: the head of the queue).
pub const CLAIM_SQL: &str = include_str!("queue/claim.sql");

/// The claim of at most `limit` jobs: [`CLAIM_SQL`] with the limit written in, so that Postgres
/// keeps its generic plan (claim.sql says why).
pub fn claim_sql(limit: u32) -> String {
    CLAIM_SQL.replace("{limit}", &limit.to_string())
}

/// Running jobs, as the partial index `jobs_running_by_lease` (V12) is written: what reads
/// running jobs by state says this, so that the index serves it. What finds one job by id (and
/// checks `state = 'running'` for its fence) says the state alone, so that the primary key
/// serves it: V12 says why.
pub(crate) const RUNNING: &str = "state = 'running' AND lease_expires_at IS NOT NULL";

/// Completes one attempt: `$1` job id, `$2` attempt token.
pub const COMPLETE_SQL: &str =
    "UPDATE jobs SET state = 'completed', finished_at = now(), lease_expires_at = NULL
     WHERE id = $1 AND attempt_token = $2 AND state = 'running'";
/// Completes many attempts: `$1` job ids, `$2` attempt tokens (same order).
pub const COMPLETE_MANY_SQL: &str =
    "UPDATE jobs SET state = 'completed', finished_at = now(), lease_expires_at = NULL
     FROM unnest($1::bigint[], $2::uuid[]) AS done(id, token)
     WHERE jobs.id = done.id AND jobs.attempt_token = done.token AND jobs.state = 'running'";

/// A job this worker holds under lease.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The job's id.
    pub id: i64,
    /// Its kind's name ([`JobKind::KIND`]).
    pub kind: String,
    /// Its payload: the kind's type as JSON.
    pub args: serde_json::Value,
    /// 1 for the first run.
    pub attempt: i32,
    /// Attempts the job may use.
    pub max_attempts: i32,
    /// Fencing token of this attempt.
    pub token: Uuid,
    /// Seconds between the job becoming due and this claim.
    pub waited_seconds: f64,
    /// Its place in claim order.
    pub position: Position,
}

/// Inserts a job and wakes the workers (see [`JobKind::enqueue`]).
async fn insert(
    db: &impl Sql,
    kind: &str,
    args: &serde_json::Value,
    max_attempts: i32,
) -> Result<i64, DbError> {
    let row = db
        .query_one(
            "INSERT INTO jobs (kind, args, max_attempts) VALUES ($1, $2, $3) RETURNING id",
            &[&kind, args, &max_attempts],
        )
        .await?;
    notify(db, kind).await?;
    Ok(row.get(0))
}

/// Wakes the workers: a job of `kind` is ready (delivered when the transaction commits).
pub(crate) async fn notify(db: &impl Sql, kind: &str) -> Result<(), DbError> {
    db.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &kind]).await?;
    Ok(())
}

/// The fencing predicate other tables' writes use: job `job` still runs under attempt token
/// `token` (SQL expressions: parameters such as `$2`, or columns such as `u.job_id`). A write
/// made under it cannot land once the attempt was rescued, released or cancelled.
pub(crate) fn attempt_holds(job: &str, token: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = {job} AND jobs.attempt_token = {token} \
         AND jobs.state = 'running')"
    )
}

/// Claims up to `limit` ready jobs for `worker_id`, highest priority and oldest first.
pub async fn claim(
    db: &impl Sql,
    worker_id: &str,
    limit: u32,
    lease: Duration,
) -> Result<Vec<ClaimedJob>, DbError> {
    claim_from(db, worker_id, limit, lease, None).await
}

/// Claims like [`claim`], reading the ready jobs from `from` in claim order (`None`: from the
/// head of the queue); a worker takes `from` from its [`ClaimCursor`].
pub async fn claim_from(
    db: &impl Sql,
    worker_id: &str,
    limit: u32,
    lease: Duration,
    from: Option<Position>,
) -> Result<Vec<ClaimedJob>, DbError> {
    let rows = db
        .query_cached(
            &claim_sql(limit),
            &[
                &worker_id,
                &lease_seconds(lease),
                &from.map(|p| p.priority),
                &from.map(|p| p.run_at),
                &from.map(|p| p.id),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ClaimedJob {
            id: row.get("id"),
            kind: row.get("kind"),
            args: row.get("args"),
            attempt: row.get("attempt"),
            max_attempts: row.get("max_attempts"),
            token: row.get("attempt_token"),
            waited_seconds: row.get("waited_seconds"),
            position: Position {
                priority: row.get("priority"),
                run_at: row.get("run_at"),
                id: row.get("id"),
            },
        })
        .collect())
}

/// Extends the lease of every job this worker still holds, in one statement. Returns the
/// tokens that are still valid; a token missing from the answer was lost (rescued or cancelled)
/// and its job must stop.
pub async fn heartbeat(db: &impl Sql, tokens: &[Uuid], lease: Duration) -> Result<Vec<Uuid>, DbError> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $2)
         WHERE attempt_token = ANY($1) AND {RUNNING}
         RETURNING attempt_token"
    );
    let rows = db.query_cached(&sql, &[&tokens, &lease_seconds(lease)]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Marks the attempt completed. `false`: the token no longer holds the job (fenced out).
pub async fn complete(db: &impl Sql, id: i64, token: Uuid) -> Result<bool, DbError> {
    Ok(db.execute_cached(COMPLETE_SQL, &[&id, &token]).await? == 1)
}

/// Completes several attempts in one statement (batched workers and the queue benchmark).
/// Returns how many were still held and are now completed.
pub async fn complete_many(db: &impl Sql, ids: &[i64], tokens: &[Uuid]) -> Result<u64, DbError> {
    Ok(db.execute_cached(COMPLETE_MANY_SQL, &[&ids, &tokens]).await?)
}

/// Cancels a job that has not finished. A running attempt loses its token at once and learns
/// it at its next heartbeat. Returns `false` when the job had already finished.
pub async fn cancel(db: &impl Sql, id: i64, reason: FailureCode) -> Result<bool, DbError> {
    Ok(db
        .execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = now(), attempt_token = NULL,
                 lease_expires_at = NULL, last_error = $2
             WHERE id = $1 AND state IN ('available', 'retryable', 'running')",
            &[&id, &reason],
        )
        .await?
        == 1)
}

/// A job given back to the queue by [`release`]: its id, kind's name and payload.
pub type Released = (i64, String, serde_json::Value);

/// Gives running attempts back to the queue without counting them (graceful shutdown: the
/// work was interrupted, not failed). Returns the released jobs' kinds and args.
pub async fn release(db: &impl Sql, tokens: &[Uuid]) -> Result<Vec<Released>, DbError> {
    let sql = format!(
        "UPDATE jobs SET state = 'available', attempt = greatest(attempt - 1, 0), run_at = now(),
             attempt_token = NULL, lease_expires_at = NULL, worker_id = NULL
         WHERE attempt_token = ANY($1) AND {RUNNING}
         RETURNING id, kind, args"
    );
    let rows = db.query(&sql, &[&tokens]).await?;
    Ok(rows.iter().map(|r| (r.get("id"), r.get("kind"), r.get("args"))).collect())
}

/// Deletes up to `batch` finished jobs older than `older_than`; call repeatedly until it
/// returns less than `batch`. Bounded so a large backlog never becomes one long transaction.
pub async fn prune_finished(db: &impl Sql, older_than: Duration, batch: i64) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs
                 WHERE state IN ('completed', 'failed', 'cancelled')
                   AND finished_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            &[&older_than.as_secs_f64(), &batch],
        )
        .await?)
}

/// Jobs by state (queue depth), every state included (0 when none is in it), in
/// [`JobState::ALL`] order: for metrics and the dashboard.
///
/// One count per state, with the state written into its condition, so that each is served by
/// that state's partial index (migration V11): the finished states by an index-only scan, the
/// others by indexes as small as the backlog. Never a scan of the table.
pub(crate) async fn depth_by_state(db: &impl Sql) -> Result<Vec<(JobState, i64)>, DbError> {
    let sql = JobState::ALL
        .iter()
        .map(|state| format!("SELECT count(*) FROM jobs WHERE {}", in_state_condition(*state)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = db.query(&sql, &[]).await?;
    Ok(JobState::ALL.into_iter().zip(rows.iter().map(|row| row.get::<_, i64>(0))).collect())
}

/// Seconds the oldest ready (due, unclaimed) job has waited; 0 when none waits.
pub(crate) async fn oldest_ready_age(db: &impl Sql) -> Result<f64, DbError> {
    let row = db
        .query_one(
            "SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8
             FROM jobs WHERE state IN ('available', 'retryable') AND run_at <= now()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// What happened to a job whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Scheduled to run again at the given time.
    Retrying(OffsetDateTime),
    /// No attempts left, or the error was fatal.
    Failed,
    /// The token no longer holds the job: nothing was written.
    Fenced,
}

/// Records a failed attempt. With a `retry_at` (a retryable error) the job runs again then
/// while attempts remain, or, past them, while its run of failures is younger than
/// `retry_window` (an outage of minutes is waited out, not counted down in attempts); without
/// one, or past both, it fails for good. Fenced by the attempt's token. `last_error` records
/// the failure's code only (the cause is logged, never stored).
pub async fn fail(
    db: &impl Sql,
    id: i64,
    token: Uuid,
    code: FailureCode,
    retry_at: Option<OffsetDateTime>,
    retry_window: Duration,
) -> Result<FailOutcome, DbError> {
    fail_within(db, id, token, code, retry_at, Some(retry_window)).await
}

/// Records a failed attempt of a job whose kind keeps its own retry schedule: with a
/// `retry_at` (the schedule has one more attempt) it runs again then, whatever its attempts
/// or retry window say; without one it fails for good. Fenced like [`fail`].
pub async fn fail_on_schedule(
    db: &impl Sql,
    id: i64,
    token: Uuid,
    code: FailureCode,
    retry_at: Option<OffsetDateTime>,
) -> Result<FailOutcome, DbError> {
    fail_within(db, id, token, code, retry_at, None).await
}

/// [`fail`], or [`fail_on_schedule`] without a `retry_window`.
async fn fail_within(
    db: &impl Sql,
    id: i64,
    token: Uuid,
    code: FailureCode,
    retry_at: Option<OffsetDateTime>,
    retry_window: Option<Duration>,
) -> Result<FailOutcome, DbError> {
    let row = db
        .query_opt(
            "WITH attempt AS (
                 SELECT id, $4::timestamptz IS NOT NULL
                            AND ($5::float8 IS NULL
                                 OR attempt < max_attempts
                                 OR COALESCE(failing_since, now()) > now() - make_interval(secs => $5)) AS retry
                 FROM jobs
                 WHERE id = $1 AND attempt_token = $2 AND state = 'running'
                 FOR UPDATE
             )
             UPDATE jobs SET
                 state = CASE WHEN attempt.retry THEN 'retryable' ELSE 'failed' END,
                 run_at = CASE WHEN attempt.retry THEN $4 ELSE jobs.run_at END,
                 finished_at = CASE WHEN attempt.retry THEN NULL ELSE now() END,
                 failing_since = COALESCE(jobs.failing_since, now()),
                 last_error = $3, lease_expires_at = NULL, attempt_token = NULL
             FROM attempt
             -- The fence again: re-checked on the row as it is once any concurrent writer (a
             -- rescue) has committed, which the CTE's snapshot cannot see.
             WHERE jobs.id = attempt.id AND jobs.attempt_token = $2 AND jobs.state = 'running'
             RETURNING jobs.state, jobs.run_at",
            &[&id, &token, &code, &retry_at, &retry_window.map(|w| w.as_secs_f64())],
        )
        .await?;
    let Some(row) = row else { return Ok(FailOutcome::Fenced) };
    Ok(match decode(&row, "state")? {
        JobState::Retryable => FailOutcome::Retrying(row.get("run_at")),
        _ => FailOutcome::Failed,
    })
}

/// A job whose worker was lost, returned to the queue or failed by [`rescue_expired`].
#[derive(Debug, Clone)]
pub struct Rescued {
    /// The job's id.
    pub id: i64,
    /// Its kind's name.
    pub kind: String,
    /// Its payload.
    pub args: serde_json::Value,
    /// `false`: no attempts remain and the job failed for good.
    pub retrying: bool,
}

/// Returns jobs whose lease expired to the queue, or fails them when no attempts remain. Any
/// number of workers may run it at once: each skips the rows another is rescuing. Call it in a
/// transaction with the owners' own records of the setback.
pub async fn rescue_expired(db: &impl Sql) -> Result<Vec<Rescued>, DbError> {
    let rows = db
        .query(
            "WITH lost AS (
                 SELECT id FROM jobs
                 WHERE state = 'running' AND lease_expires_at < now()
                 ORDER BY id
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE jobs SET
                 state = CASE WHEN attempt < max_attempts THEN 'retryable' ELSE 'failed' END,
                 finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,
                 last_error = 'worker_lost', -- FailureCode::WorkerLost
                 lease_expires_at = NULL, attempt_token = NULL, run_at = now()
             FROM lost
             WHERE jobs.id = lost.id
             RETURNING jobs.id, jobs.kind, jobs.args, jobs.state",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Rescued {
                id: r.get("id"),
                kind: r.get("kind"),
                args: r.get("args"),
                retrying: decode::<JobState>(r, "state")? == JobState::Retryable,
            })
        })
        .collect()
}

/// A job as operators see it (the dashboard's queue and export pages).
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// The job's id.
    pub id: i64,
    /// Its kind's name.
    pub kind: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts used so far.
    pub attempt: i32,
    /// Attempts it may use.
    pub max_attempts: i32,
    /// The worker that claimed it last.
    pub worker_id: Option<String>,
    /// The last failure's code (see [`FailureCode`]); read with [`FailureCode::from_stored`].
    pub last_error: Option<String>,
    /// Running: since the attempt started; waiting to retry: until it may run (negative when
    /// due); finished: since it finished.
    pub seconds: Option<f64>,
}

const SUMMARY_COLUMNS: &str = "id, kind, state, attempt, max_attempts, worker_id, last_error,
    CASE state WHEN 'running' THEN extract(epoch FROM now() - attempted_at)
               WHEN 'retryable' THEN extract(epoch FROM run_at - now())
               ELSE extract(epoch FROM now() - finished_at) END::float8 AS seconds";

impl JobSummary {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id"),
            kind: row.get("kind"),
            state: decode(row, "state")?,
            attempt: row.get("attempt"),
            max_attempts: row.get("max_attempts"),
            worker_id: row.get("worker_id"),
            last_error: row.get("last_error"),
            seconds: row.get("seconds"),
        })
    }
}

/// Jobs in `state`, at most `limit`: running ones longest-running first, others most recent
/// first. The state is written into the statement so each state's partial index serves it.
pub(crate) async fn in_state(db: &impl Sql, state: JobState, limit: i64) -> Result<Vec<JobSummary>, DbError> {
    let order = match state {
        JobState::Running => "attempted_at, id",
        JobState::Available | JobState::Retryable => "run_at DESC, id DESC",
        JobState::Completed | JobState::Failed | JobState::Cancelled => "finished_at DESC, id DESC",
    };
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE {} ORDER BY {order} LIMIT $1",
        in_state_condition(state)
    );
    let rows = db.query(&sql, &[&limit]).await?;
    rows.iter().map(JobSummary::from_row).collect()
}

/// The condition for jobs in `state`, written as its partial index is ([`RUNNING`] for running
/// jobs).
fn in_state_condition(state: JobState) -> String {
    match state {
        JobState::Running => RUNNING.to_owned(),
        other => format!("state = '{}'", other.as_str()),
    }
}

/// One job by id.
pub(crate) async fn get(db: &impl Sql, id: i64) -> Result<Option<JobSummary>, DbError> {
    let row = db.query_opt(&format!("SELECT {SUMMARY_COLUMNS} FROM jobs WHERE id = $1"), &[&id]).await?;
    row.as_ref().map(JobSummary::from_row).transpose()
}

/// Puts a failed (or retry-waiting) job back in the queue to run at once, with one more
/// attempt if it had used them all, and wakes the workers. `false` when the job is in no
/// state to be retried.
pub(crate) async fn retry_now(db: &impl Sql, id: i64) -> Result<bool, DbError> {
    let Some(row) = db
        .query_opt(
            "UPDATE jobs SET state = 'available', run_at = now(), finished_at = NULL,
                 max_attempts = greatest(max_attempts, attempt + 1)
             WHERE id = $1 AND state IN ('failed', 'retryable')
             RETURNING kind",
            &[&id],
        )
        .await?
    else {
        return Ok(false);
    };
    notify(db, row.get("kind")).await?;
    Ok(true)
}

fn lease_seconds(lease: Duration) -> f64 {
    lease.as_secs_f64()
}
