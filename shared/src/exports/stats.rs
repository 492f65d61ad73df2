//! Export analytics for operators (the dashboard's overview), and the deduplication (reuse)
//! counters (table `export_reuse_hourly`) that API processes add to in batches.

use deadpool_postgres::GenericClient;
use time::PrimitiveDateTime;

use crate::db::DbError;

/// Exports of the last 30 days.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Exports created.
    pub created: i64,
    /// Of those, pending now.
    pub pending: i64,
    /// Processing now.
    pub processing: i64,
    /// Completed.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Expired (completed, then their file went).
    pub expired: i64,
    /// Average and 95th percentile of start-to-completion time of completed exports.
    pub avg_seconds: Option<f64>,
    /// See `avg_seconds`.
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

/// Export analytics over the last 30 days (and the reuse counters of the same period).
pub(crate) async fn overview(db: &impl GenericClient) -> Result<Overview, DbError> {
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
pub(crate) async fn exports_per_hour(
    db: &impl GenericClient,
) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    series(db, "hour", "23 hours").await
}

/// Exports created per day (UTC) over the last 30 days, oldest first.
pub(crate) async fn exports_per_day(
    db: &impl GenericClient,
) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
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
