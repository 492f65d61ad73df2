//! Export analytics for operators (the dashboard's overview), and the deduplication (reuse)
//! counters (table `export_reuse_hourly`) that API processes add to in batches.

use deadpool_postgres::GenericClient;
use time::PrimitiveDateTime;

use super::ExportStatus;
use crate::db::{DbError, decode};

/// Exports of the last 30 days.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Exports created, by the status they are in now (every status, 0 when none is in it).
    pub by_status: Vec<(ExportStatus, i64)>,
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
    /// Exports created that are in `status` now.
    pub fn count(&self, status: ExportStatus) -> i64 {
        self.by_status.iter().filter(|(s, _)| *s == status).map(|(_, n)| n).sum()
    }

    /// Exports created.
    pub fn created(&self) -> i64 {
        self.by_status.iter().map(|(_, n)| n).sum()
    }

    /// Completed among the exports that finished by succeeding or failing (an expired export
    /// had completed).
    pub fn success_rate(&self) -> Option<f64> {
        let succeeded = self.count(ExportStatus::Completed) + self.count(ExportStatus::Expired);
        let finished = succeeded + self.count(ExportStatus::Failed);
        (finished > 0).then(|| succeeded as f64 / finished as f64)
    }

    /// Share of requests answered by deduplication.
    pub fn reuse_rate(&self) -> Option<f64> {
        let requests = self.created() + self.reused;
        (requests > 0).then(|| self.reused as f64 / requests as f64)
    }
}

/// Export analytics over the last 30 days (and the reuse counters of the same period). Call it
/// in one snapshot ([`crate::db::snapshot`]): it reads twice.
pub(crate) async fn overview(db: &impl GenericClient) -> Result<Overview, DbError> {
    let rows = db
        .query(
            "SELECT status, count(*) FROM exports WHERE created_at > now() - interval '30 days' GROUP BY status",
            &[],
        )
        .await?;
    let mut counted = Vec::with_capacity(rows.len());
    for row in &rows {
        counted.push((decode::<ExportStatus>(row, "status")?, row.get::<_, i64>("count")));
    }
    let by_status = ExportStatus::ALL
        .into_iter()
        .map(|status| (status, counted.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)))
        .collect();
    let row = db
        .query_one(
            "WITH completed AS (
                 SELECT row_count, extract(epoch FROM completed_at - started_at)::float8 AS seconds
                 FROM exports WHERE created_at > now() - interval '30 days' AND status = 'COMPLETED'
             )
             SELECT avg(seconds),
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds),
                    sum(row_count)::float8 / nullif(sum(seconds), 0),
                    (SELECT coalesce(sum(reused), 0)::bigint FROM export_reuse_hourly
                     WHERE hour > now() - interval '30 days')
             FROM completed",
            &[],
        )
        .await?;
    Ok(Overview {
        by_status,
        avg_seconds: row.get(0),
        p95_seconds: row.get(1),
        rows_per_s: row.get(2),
        reused: row.get(3),
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
