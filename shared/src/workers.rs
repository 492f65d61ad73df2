//! The worker registry (table `workers`): each worker process records itself and heartbeats,
//! so operators (dashboard, `/ready`) can see who is alive and what each one runs.

use std::time::Duration;

use crate::db::Sql;
use time::OffsetDateTime;

use crate::db::DbError;

/// This machine's name (`HOSTNAME`, else `/etc/hostname`, else `localhost`).
pub fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A worker process as it registered.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Its id (`host:pid:random`).
    pub id: String,
    /// Where it runs.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// Its build version.
    pub version: String,
    /// When it registered.
    pub started_at: OffsetDateTime,
    /// Its latest heartbeat.
    pub last_heartbeat_at: OffsetDateTime,
    /// Jobs it ran at its latest heartbeat.
    pub running_jobs: i32,
    /// Whether it led maintenance then.
    pub is_leader: bool,
}

/// Records a worker process at start-up.
pub async fn register(db: &impl Sql, id: &str, host: &str, pid: u32, version: &str) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO workers (id, host, pid, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now()",
        &[&id, &host, &(pid as i32), &version],
    )
    .await?;
    Ok(())
}

/// Records that the worker is alive, how many jobs it runs and whether it leads maintenance.
pub async fn heartbeat(db: &impl Sql, id: &str, running_jobs: i32, is_leader: bool) -> Result<(), DbError> {
    db.execute_cached(
        "UPDATE workers SET last_heartbeat_at = now(), running_jobs = $2, is_leader = $3 WHERE id = $1",
        &[&id, &running_jobs, &is_leader],
    )
    .await?;
    Ok(())
}

/// Removes a worker that stops gracefully.
pub async fn deregister(db: &impl Sql, id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM workers WHERE id = $1", &[&id]).await?;
    Ok(())
}

/// A worker heartbeats every few seconds; one silent for this long is not counted as live
/// (dashboard, metrics).
pub const ALIVE_WITHIN: Duration = Duration::from_secs(60);

/// Workers that heartbeated within `alive_within`, oldest first.
pub async fn live(db: &impl Sql, alive_within: Duration) -> Result<Vec<WorkerInfo>, DbError> {
    let rows = db
        .query(
            "SELECT id, host, pid, version, started_at, last_heartbeat_at, running_jobs, is_leader FROM workers
             WHERE last_heartbeat_at > now() - make_interval(secs => $1)
             ORDER BY started_at, id",
            &[&alive_within.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| WorkerInfo {
            id: r.get(0),
            host: r.get(1),
            pid: r.get(2),
            version: r.get(3),
            started_at: r.get(4),
            last_heartbeat_at: r.get(5),
            running_jobs: r.get(6),
            is_leader: r.get(7),
        })
        .collect())
}

/// How many workers heartbeated within `alive_within` (metrics).
pub(crate) async fn count_live(db: &impl Sql, alive_within: Duration) -> Result<i64, DbError> {
    let row = db
        .query_one(
            "SELECT count(*) FROM workers WHERE last_heartbeat_at > now() - make_interval(secs => $1)",
            &[&alive_within.as_secs_f64()],
        )
        .await?;
    Ok(row.get(0))
}

/// Forgets workers silent for longer than `silent_for` (crashed without deregistering).
pub async fn prune_silent(db: &impl Sql, silent_for: Duration) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM workers WHERE last_heartbeat_at < now() - make_interval(secs => $1)",
            &[&silent_for.as_secs_f64()],
        )
        .await?)
}
