//! Export analytics for operators (the dashboard's overview), and the deduplication (reuse)
//! counters (table `export_reuse_hourly`) that API processes add to in batches.

use crate::db::Sql;
use time::PrimitiveDateTime;

use super::ExportStatus;
use crate::db::DbError;

/// Exports of the last 30 days.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Exports created, by the status they are in now (every status, 0 when none is in it).
    pub by_status: Vec<(ExportStatus, i64)>,
    /// Average and 95th percentile (within 9 %: see `quantile`) of start-to-completion time
    /// of the exports that completed (an expired one had completed).
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

/// The overview's window: the current UTC hour and the 719 before it (30 days of rollups).
const WINDOW: &str = "hour > date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '30 days'";

/// The hourly rollups with the changes not folded into them yet (migration V10): every figure
/// is a sum over both.
const ROLLUPS: &str = "(SELECT hour, pending, processing, completed, failed, cancelled, expired,
                               runs, run_rows, run_seconds FROM export_hourly
                        UNION ALL
                        SELECT hour, pending, processing, completed, failed, cancelled, expired,
                               runs, run_rows, run_seconds FROM export_hourly_changes) AS rollups";

/// Export analytics over the last 30 days, from the hourly rollups (`export_hourly`, kept from
/// a trigger on `exports`: migration V10) and the reuse counters of the same hours. Call it in
/// one snapshot ([`crate::db::snapshot`]): it reads twice.
pub(crate) async fn overview(db: &impl Sql) -> Result<Overview, DbError> {
    let row = db
        .query_one(
            &format!(
                "SELECT coalesce(sum(pending), 0)::bigint AS pending,
                        coalesce(sum(processing), 0)::bigint AS processing,
                        coalesce(sum(completed), 0)::bigint AS completed,
                        coalesce(sum(failed), 0)::bigint AS failed,
                        coalesce(sum(cancelled), 0)::bigint AS cancelled,
                        coalesce(sum(expired), 0)::bigint AS expired,
                        coalesce(sum(runs), 0)::bigint AS runs,
                        coalesce(sum(run_rows), 0)::float8 AS run_rows,
                        coalesce(sum(run_seconds), 0)::float8 AS run_seconds,
                        (SELECT coalesce(sum(reused), 0)::bigint FROM export_reuse_hourly
                         WHERE hour > date_trunc('hour', now()) - interval '30 days') AS reused
                 FROM {ROLLUPS} WHERE {WINDOW}"
            ),
            &[],
        )
        .await?;
    let by_status = ExportStatus::ALL
        .into_iter()
        .map(|status| {
            let column = match status {
                ExportStatus::Pending => "pending",
                ExportStatus::Processing => "processing",
                ExportStatus::Completed => "completed",
                ExportStatus::Failed => "failed",
                ExportStatus::Cancelled => "cancelled",
                ExportStatus::Expired => "expired",
            };
            (status, row.get::<_, i64>(column))
        })
        .collect();
    let runs: i64 = row.get("runs");
    let run_rows: f64 = row.get("run_rows");
    let run_seconds: f64 = row.get("run_seconds");
    let histogram: Vec<i64> = db
        .query(
            &format!(
                "WITH counted AS (
                     SELECT bucket, n FROM export_hourly, unnest(run_histogram) WITH ORDINALITY AS u(n, bucket)
                     WHERE {WINDOW}
                     UNION ALL
                     SELECT run_bucket, runs FROM export_hourly_changes WHERE run_bucket IS NOT NULL AND {WINDOW}
                 )
                 SELECT coalesce(sum(n), 0)::bigint
                 FROM generate_series(1, {BUCKETS}) AS b LEFT JOIN counted ON counted.bucket = b
                 GROUP BY b ORDER BY b"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Overview {
        by_status,
        avg_seconds: (runs > 0).then(|| run_seconds / runs as f64),
        p95_seconds: quantile(&histogram, 0.95),
        rows_per_s: (run_seconds > 0.0).then(|| run_rows / run_seconds),
        reused: row.get("reused"),
    })
}

/// Folds the changes the trigger on `exports` recorded into the hourly rollups (the maintenance
/// leader does, every pass). Returns how many change rows it folded.
pub async fn fold_changes(db: &impl Sql) -> Result<i64, DbError> {
    Ok(db.query_one("SELECT export_hourly_compact()", &[]).await?.get(0))
}

/// Buckets of the run-duration histogram (`export_run_bucket` in migration V10).
const BUCKETS: usize = 100;

/// Seconds where bucket `b` (1-based) of the run-duration histogram begins: four buckets per
/// doubling from 10 ms (`export_run_bucket` in migration V10; a test holds the two together).
pub fn bucket_start(b: usize) -> f64 {
    0.01 * 2f64.powf((b as f64 - 1.0) / 4.0)
}

/// The `q` quantile of a run-duration histogram (counts of buckets 1..): the geometric middle
/// of the bucket holding it, so within 9 % of the true value (a bucket spans a factor of
/// 2^(1/4)). `None` when the histogram is empty.
fn quantile(histogram: &[i64], q: f64) -> Option<f64> {
    let total: i64 = histogram.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let b = i + 1;
            return Some((bucket_start(b) * bucket_start(b + 1)).sqrt());
        }
    }
    None
}

/// Exports created per hour (UTC) over the last 24 hours, oldest first.
pub(crate) async fn exports_per_hour(db: &impl Sql) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    series(db, "hour", "23 hours").await
}

/// Exports created per day (UTC) over the last 30 days, oldest first.
pub(crate) async fn exports_per_day(db: &impl Sql) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    series(db, "day", "29 days").await
}

async fn series(db: &impl Sql, unit: &str, span: &str) -> Result<Vec<(PrimitiveDateTime, i64)>, DbError> {
    // Every export created is in exactly one status column of its hour. The rollups are read by
    // their key's range, then the buckets without any are filled in.
    let rows = db
        .query(
            &format!(
                "WITH since AS (SELECT date_trunc($1, now() AT TIME ZONE 'UTC') - $2::text::interval AS start),
                 counted AS (
                     SELECT date_trunc($1, hour) AS start,
                            sum(pending + processing + completed + failed + cancelled + expired)::bigint AS n
                     FROM {ROLLUPS} WHERE hour >= (SELECT start FROM since)
                     GROUP BY 1
                 )
                 SELECT b.start, coalesce(counted.n, 0)
                 FROM generate_series((SELECT start FROM since), date_trunc($1, now() AT TIME ZONE 'UTC'),
                                      ('1 ' || $1)::interval) AS b(start)
                 LEFT JOIN counted ON counted.start = b.start
                 ORDER BY b.start"
            ),
            &[&unit, &span],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Adds `count` reused requests to the current hour's counter.
pub async fn record_reuse(db: &impl Sql, count: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO export_reuse_hourly (hour, reused) VALUES (date_trunc('hour', now()), $1)
         ON CONFLICT (hour) DO UPDATE SET reused = export_reuse_hourly.reused + EXCLUDED.reused",
        &[&count],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_middle_of_the_bucket_that_holds_it() {
        assert_eq!(quantile(&[0; BUCKETS], 0.95), None);
        let mut histogram = vec![0; BUCKETS];
        // 90 runs in bucket 41 (from 10.24 s), 10 in bucket 45 (from 20.48 s).
        histogram[40] = 90;
        histogram[44] = 10;
        let middle = |b: usize| (bucket_start(b) * bucket_start(b + 1)).sqrt();
        assert_eq!(quantile(&histogram, 0.90), Some(middle(41)));
        assert_eq!(quantile(&histogram, 0.95), Some(middle(45)));
        assert!((bucket_start(41) - 10.24).abs() < 1e-9);
        assert!(middle(45) > bucket_start(45) && middle(45) < bucket_start(46));
    }
}
