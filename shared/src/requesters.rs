//! Who asked for an export (table `export_requesters`): one row per (export, key).
//!
//! The row is written synchronously the first time a key asks for an export (in the create
//! transaction, or right after the dedup read when that read shows the key does not hold the
//! export yet, `HELD_BY_KEY`), so a cancel always sees every key that holds an export. A repeat request of a pair already recorded writes nothing
//! then: each API process adds the repeats' count and latest time in batches
//! ([`record_repeats`]), which keeps the dedup path a single read.
//!
//! A key that cancels an export other keys also asked for is detached (`detached_at`), and the
//! export goes on for them; asking again attaches it again.

use crate::db::Sql;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::DbError;

/// Whether key `$4` holds the export of the row at hand (`exports`): asked for it and not
/// detached. The dedup read selects it, so the common repeat stays one read with no write.
pub(crate) const HELD_BY_KEY: &str = "EXISTS (SELECT 1 FROM export_requesters r
    WHERE r.export_id = exports.id AND r.api_key_id = $4::uuid AND r.detached_at IS NULL)";

/// Records `key` as a requester of `export` now: a new row, or one more request on its row
/// (attaching it again if it had detached). For the create transaction and the slow dedup path.
pub async fn record(db: &impl Sql, export: Uuid, key: Uuid) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO export_requesters (export_id, api_key_id) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT export_requesters_pair DO UPDATE
         SET detached_at = NULL, requests = export_requesters.requests + 1, last_requested_at = now()",
        &[&export, &key],
    )
    .await?;
    Ok(())
}

/// Repeat requests of pairs already recorded, gathered by an API process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    /// The export asked for again.
    pub export_id: Uuid,
    /// The key that asked.
    pub api_key_id: Uuid,
    /// How many times since the last batch.
    pub count: i64,
    /// When it asked last.
    pub last_at: OffsetDateTime,
}

/// Adds batched repeat requests to their rows (one statement). Rows are updated in key order,
/// so two processes flushing at once cannot deadlock. A pair whose row is gone (export or key
/// deleted) is skipped.
pub async fn record_repeats(db: &impl Sql, repeats: &[Repeats]) -> Result<(), DbError> {
    if repeats.is_empty() {
        return Ok(());
    }
    let mut sorted = repeats.to_vec();
    sorted.sort_by_key(|r| (r.export_id, r.api_key_id));
    let exports: Vec<Uuid> = sorted.iter().map(|r| r.export_id).collect();
    let keys: Vec<Uuid> = sorted.iter().map(|r| r.api_key_id).collect();
    let counts: Vec<i64> = sorted.iter().map(|r| r.count).collect();
    let times: Vec<OffsetDateTime> = sorted.iter().map(|r| r.last_at).collect();
    db.execute(
        "WITH batch AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[])
                 AS b (export_id, api_key_id, n, last_at)
         ), locked AS (
             SELECT r.id, b.n, b.last_at FROM export_requesters r
             JOIN batch b USING (export_id, api_key_id)
             ORDER BY r.export_id, r.api_key_id
             FOR NO KEY UPDATE OF r
         )
         UPDATE export_requesters r
         SET requests = r.requests + locked.n, last_requested_at = greatest(r.last_requested_at, locked.last_at)
         FROM locked WHERE r.id = locked.id",
        &[&exports, &keys, &counts, &times],
    )
    .await?;
    Ok(())
}

/// A key's part in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The key asked for it and still holds it.
    Attached,
    /// The key asked for it, then cancelled while others held it.
    Detached,
    /// The key never asked for it.
    None,
}

/// `key`'s part in `export`.
pub(crate) async fn role(db: &impl Sql, export: Uuid, key: Uuid) -> Result<Role, DbError> {
    let row = db
        .query_opt(
            "SELECT detached_at IS NOT NULL FROM export_requesters WHERE export_id = $1 AND api_key_id = $2",
            &[&export, &key],
        )
        .await?;
    Ok(match row.map(|r| r.get::<_, bool>(0)) {
        None => Role::None,
        Some(false) => Role::Attached,
        Some(true) => Role::Detached,
    })
}

/// How many keys other than `key` still hold `export`.
pub(crate) async fn others_attached(db: &impl Sql, export: Uuid, key: Uuid) -> Result<i64, DbError> {
    let row = db
        .query_one(
            "SELECT count(*) FROM export_requesters
             WHERE export_id = $1 AND api_key_id <> $2 AND detached_at IS NULL",
            &[&export, &key],
        )
        .await?;
    Ok(row.get(0))
}

/// Detaches `key` from `export`: it no longer holds it.
pub(crate) async fn detach(db: &impl Sql, export: Uuid, key: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE export_requesters SET detached_at = now()
         WHERE export_id = $1 AND api_key_id = $2 AND detached_at IS NULL",
        &[&export, &key],
    )
    .await?;
    Ok(())
}
