//! What the operator dashboard reads and the few things it changes: export analytics, the
//! queue's jobs, a job retried by hand, and the deduplication (reuse) counters.

use deadpool_postgres::{GenericClient, Object};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use crate::{db::DbError, queue};

/// Exports of the last 30 days.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub created: i64,
    pub pending: i64,
    pub processing: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub expired: i64,
    /// Average and 95th percentile of start-to-completion time of completed exports.
    pub avg_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    /// Rows of completed exports over the time spent producing them.
    pub rows_per_s: Option<f64>,
    /// Requests answered with an existing export instead of a new one.
    pub reused: i64,
}

impl Overview {
    /// Completed among the exports that finished by succeeding or failing.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.completed + self.expired + self.failed;
        (finished > 0).then(|| (self.completed + self.expired) as f64 / finished as f64)
    }

    /// Share of requests answered by deduplication.
    pub fn reuse_rate(&self) -> Option<f64> {
        let requests = self.created + self.reused;
        (requests > 0).then(|| self.reused as f64 / requests as f64)
    }
}

pub async fn overview(db: &impl GenericClient) -> Result<Overview, DbError> {
    let row = db
        .query_one(
            "WITH recent AS (
                 SELECT status, row_count, extract(epoch FROM completed_at - started_at)::float8 AS seconds
                 FROM exports WHERE created_at > now() - interval '30 days'
             )
             SELECT count(*),
                    count(*) FILTER (WHERE status = 'PENDING'),
                    count(*) FILTER (WHERE status = 'PROCESSING'),
                    count(*) FILTER (WHERE status = 'COMPLETED'),
                    count(*) FILTER (WHERE status = 'FAILED'),
                    count(*) FILTER (WHERE status = 'CANCELLED'),
                    count(*) FILTER (WHERE status = 'EXPIRED'),
                    avg(seconds) FILTER (WHERE status = 'COMPLETED'),
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE status = 'COMPLETED'),
                    sum(row_count) FILTER (WHERE status = 'COMPLETED')::float8
                        / nullif(sum(seconds) FILTER (WHERE status = 'COMPLETED'), 0),
                    (SELECT coalesce(sum(reused), 0)::bigint FROM export_reuse_hourly
                     WHERE hour > now() - interval '30 days')
             FROM recent",
            &[],
        )
        .await?;
    Ok(Overview {
        created: row.get(0),
        pending: row.get(1),
        processing: row.get(2),
        completed: row.get(3),
        failed: row.get(4),
        cancelled: row.get(5),
        expired: row.get(6),
        avg_seconds: row.get(7),
        p95_seconds: row.get(8),
        rows_per_s: row.get(9),
        reused: row.get(10),
    })
}

/// Exports created per hour (UTC) over the last 24 hours, oldest first.
pub async fn exports_per_hour(db: &impl GenericClient) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    series(db, "hour", "23 hours").await
}

/// Exports created per day (UTC) over the last 30 days, oldest first.
pub async fn exports_per_day(db: &impl GenericClient) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    series(db, "day", "29 days").await
}

async fn series(
    db: &impl GenericClient,
    unit: &str,
    span: &str,
) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    // Buckets are UTC wall-clock times; each is compared as a timestamptz so the index on
    // created_at serves the join.
    let rows = db
        .query(
            "SELECT b.start, count(e.id)
             FROM generate_series(date_trunc($1, now() AT TIME ZONE 'UTC') - $2::text::interval,
                                  date_trunc($1, now() AT TIME ZONE 'UTC'),
                                  ('1 ' || $1)::interval) AS b(start)
             LEFT JOIN exports e
                    ON e.created_at >= b.start AT TIME ZONE 'UTC'
                   AND e.created_at < (b.start + ('1 ' || $1)::interval) AT TIME ZONE 'UTC'
             GROUP BY b.start ORDER BY b.start",
            &[&unit, &span],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A job as the queue page shows it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub worker_id: Option<String>,
    pub last_error: Option<String>,
    /// Running: since the attempt started; waiting: until it may run (negative when due).
    pub seconds: Option<f64>,
    pub export_id: Option<Uuid>,
    pub rows_exported: Option<i64>,
}

const JOB_COLUMNS: &str = "j.id, j.kind, j.state, j.attempt, j.max_attempts, j.worker_id, j.last_error,
    CASE j.state WHEN 'running' THEN extract(epoch FROM now() - j.attempted_at)
                 WHEN 'retryable' THEN extract(epoch FROM j.run_at - now())
                 ELSE extract(epoch FROM now() - j.finished_at) END::float8,
    (j.args ->> 'export_id')::uuid, e.rows_exported";

impl JobRow {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get(0),
            kind: row.get(1),
            state: row.get(2),
            attempt: row.get(3),
            max_attempts: row.get(4),
            worker_id: row.get(5),
            last_error: row.get(6),
            seconds: row.get(7),
            export_id: row.get(8),
            rows_exported: row.get(9),
        }
    }
}

/// Jobs in `state`: running ones longest-running first, others most recent first.
pub async fn jobs_in_state(db: &impl GenericClient, state: &str, limit: i64) -> Result<Vec<JobRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {JOB_COLUMNS}
                 FROM jobs j LEFT JOIN exports e ON e.id = (j.args ->> 'export_id')::uuid
                 WHERE j.state = $1
                 ORDER BY CASE WHEN j.state = 'running' THEN j.attempted_at END,
                          coalesce(j.finished_at, j.run_at) DESC, j.id DESC
                 LIMIT $2"
            ),
            &[&state, &limit],
        )
        .await?;
    Ok(rows.iter().map(JobRow::from_row).collect())
}

/// The job that produces an export (its latest), if any.
pub async fn job_of_export(db: &impl GenericClient, export_id: Uuid) -> Result<Option<JobRow>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT {JOB_COLUMNS}
                 FROM exports e JOIN jobs j ON j.id = e.job_id
                 WHERE e.id = $1"
            ),
            &[&export_id],
        )
        .await?;
    Ok(row.as_ref().map(JobRow::from_row))
}

/// `None` when the job does not exist; otherwise the export it produces, if any.
pub async fn export_of_job(db: &impl GenericClient, job_id: i64) -> Result<Option<Option<Uuid>>, DbError> {
    let row = db.query_opt("SELECT (args ->> 'export_id')::uuid FROM jobs WHERE id = $1", &[&job_id]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// The name of the key that requested an export (`None` when deleted or not recorded).
pub async fn requester_name(db: &impl GenericClient, export_id: Uuid) -> Result<Option<String>, DbError> {
    let row = db
        .query_opt(
            "SELECT k.name FROM exports e JOIN api_keys k ON k.id = e.api_key_id WHERE e.id = $1",
            &[&export_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
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
/// to PENDING, in one transaction. Locks the export before the job, as a cancel does, so the
/// two cannot deadlock.
pub async fn retry_job(db: &mut Object, job_id: i64) -> Result<Retried, DbError> {
    let tx = db.transaction().await?;
    let Some(export_id) = export_of_job(&tx, job_id).await? else { return Ok(Retried::NotRetryable) };
    if let Some(export_id) = export_id {
        let revived = tx
            .execute(
                "UPDATE exports SET status = 'PENDING', error = NULL, error_code = NULL, completed_at = NULL
                 WHERE id = $1 AND status IN ('FAILED', 'PENDING')",
                &[&export_id],
            )
            .await
            .map_err(DbError::from);
        match revived {
            Err(e) if e.is_unique_violation() => return Ok(Retried::Superseded),
            // Cancelled, completed or expired meanwhile: nothing to retry.
            Ok(0) => return Ok(Retried::NotRetryable),
            other => {
                other?;
            }
        }
    }
    let Some(row) = tx
        .query_opt(
            "UPDATE jobs SET state = 'available', run_at = now(), finished_at = NULL,
                 max_attempts = greatest(max_attempts, attempt + 1)
             WHERE id = $1 AND state IN ('failed', 'retryable')
             RETURNING kind",
            &[&job_id],
        )
        .await?
    else {
        return Ok(Retried::NotRetryable);
    };
    let kind: String = row.get(0);
    tx.execute("SELECT pg_notify($1, $2)", &[&queue::NOTIFY_CHANNEL, &kind]).await?;
    tx.commit().await?;
    Ok(Retried::Now)
}

/// Adds `count` reused requests to the current hour's counter.
pub async fn record_reuse(db: &impl GenericClient, count: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO export_reuse_hourly (hour, reused) VALUES (date_trunc('hour', now()), $1)
         ON CONFLICT (hour) DO UPDATE SET reused = export_reuse_hourly.reused + EXCLUDED.reused",
        &[&count],
    )
    .await?;
    Ok(())
}

/// The newest migration applied to this database.
pub async fn schema_version(db: &impl GenericClient) -> Result<Option<i32>, DbError> {
    let row = db.query_one("SELECT max(version) FROM refinery_schema_history", &[]).await?;
    Ok(row.get(0))
}

/// When now is, by Postgres's clock (pages show ages relative to it).
pub async fn now(db: &impl GenericClient) -> Result<OffsetDateTime, DbError> {
    Ok(db.query_one("SELECT now()", &[]).await?.get(0))
}
