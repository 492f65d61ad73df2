//! The latest storage write check (table `storage_checks`, one row): workers overwrite a small
//! object now and then and record whether it worked; `/ready` and the dashboard read it.

use std::time::Duration;

use crate::db::Sql;
use time::OffsetDateTime;

use crate::db::DbError;

/// The outcome of the latest write check, whichever worker made it.
#[derive(Debug, Clone)]
pub struct StorageCheck {
    /// Whether the write worked.
    pub ok: bool,
    /// When it ran.
    pub checked_at: OffsetDateTime,
    /// Time since `checked_at` by Postgres's clock (not the reader's).
    pub age: Duration,
    /// How long the write took (or took to fail).
    pub latency: Duration,
    /// The worker that made it.
    pub worker_id: String,
    /// Why the write failed: its [`crate::failure::FailureCode`] (the cause is in the worker log).
    pub error: Option<String>,
}

/// Records a write check's outcome, replacing the previous one.
pub async fn record(
    db: &impl Sql,
    worker_id: &str,
    latency: Duration,
    error: Option<&str>,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO storage_checks (ok, checked_at, latency_ms, worker_id, error)
         VALUES ($1, now(), $2, $3, $4)
         ON CONFLICT (singleton) DO UPDATE SET ok = excluded.ok, checked_at = excluded.checked_at,
             latency_ms = excluded.latency_ms, worker_id = excluded.worker_id, error = excluded.error",
        &[&error.is_none(), &(latency.as_secs_f64() * 1000.0), &worker_id, &error],
    )
    .await?;
    Ok(())
}

/// The latest write check; `None` before any worker has made one.
pub async fn latest(db: &impl Sql) -> Result<Option<StorageCheck>, DbError> {
    let row = db
        .query_opt(
            "SELECT ok, checked_at, greatest(extract(epoch FROM now() - checked_at), 0)::float8,
                    latency_ms, worker_id, error
             FROM storage_checks",
            &[],
        )
        .await?;
    Ok(row.map(|r| StorageCheck {
        ok: r.get(0),
        checked_at: r.get(1),
        age: Duration::from_secs_f64(r.get(2)),
        latency: Duration::from_secs_f64(r.get::<_, f64>(3).max(0.0) / 1000.0),
        worker_id: r.get(4),
        error: r.get(5),
    }))
}
