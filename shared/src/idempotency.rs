//! Idempotency keys (table `idempotency_keys`): the first response to a request sent with an
//! `Idempotency-Key`, kept per API key so that a retry gets that response again instead of
//! running the request twice (draft-ietf-httpapi-idempotency-key-header).
//!
//! A request [`claim`]s its key with one insert; the request then runs and [`store`] writes its
//! response with one update (or [`release`] deletes the claim when the response should not be
//! kept, so that a retry runs again). A claim is a lease ([`CLAIM_LEASE`]): if the process
//! holding it dies, the next request with the key takes it over once it lapses. Every write
//! after the claim names the claim's token, so a claim that was taken over cannot store or
//! release anything (the fencing the job queue uses for its attempts). Rows live until their
//! `expires_at`; the maintenance leader deletes them in batches ([`prune_expired`]).

use std::{collections::BTreeMap, time::Duration};

use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::db::{DbError, Sql, decode};

/// How long a claim holds a key while its request runs. A create or a cancel takes
/// milliseconds (seconds when Postgres is slow: its pool waits at most 5 s per connection);
/// a claim older than this belongs to a process that died, and the next request with the key
/// takes it over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Rounds [`claim`] makes when other requests with the same key keep changing its row.
const CLAIM_ROUNDS: usize = 3;

/// Which key of which API key, and the request made with it.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRequest<'a> {
    /// The API key the idempotency key belongs to (keys are scoped per API key).
    pub api_key_id: Uuid,
    /// The idempotency key (the header's value, unquoted).
    pub key: &'a str,
    /// SHA-256 of the request (method, route, path parameters, canonical body).
    pub fingerprint: &'a [u8; 32],
}

/// A key claimed by a request: only this claim may store the response or release the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The API key the idempotency key belongs to.
    pub api_key_id: Uuid,
    /// The idempotency key.
    pub key: String,
    /// This claim's token (the row's `claim_token` while the claim holds it).
    pub token: Uuid,
}

/// A response as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers that matter to a client (`content-type`, `location`, `retry-after`), with
    /// lower-case names, in name order.
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is new (or expired, or its claim lapsed): the request runs under this claim.
    Run(Claim),
    /// The same request was answered before: its response.
    Replay(StoredResponse),
    /// The key was used with another request.
    Mismatch,
    /// The same request is still running under a live claim.
    InFlight,
}

/// A request's fingerprint: SHA-256 over its parts (method and route, path parameters, the
/// canonical body), each prefixed by its length so that no two lists of parts share one.
pub fn fingerprint(parts: &[&str]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// Claims `request`'s key for `ttl` (from now) or says why it cannot run: one insert when the
/// key is new; a read (and, for an expired key or a lapsed claim, a conditional update) when it
/// is not. Never waits on another request's row lock.
pub async fn claim(db: &impl Sql, request: KeyedRequest<'_>, ttl: Duration) -> Result<Claimed, DbError> {
    let KeyedRequest { api_key_id, key, fingerprint } = request;
    let (ttl, lease) = (ttl.as_secs_f64(), CLAIM_LEASE.as_secs_f64());
    for _ in 0..CLAIM_ROUNDS {
        let token = Uuid::new_v4();
        let claimed = Claimed::Run(Claim { api_key_id, key: key.to_owned(), token });
        // DO NOTHING, not DO UPDATE: a conflicting row is not locked, so a request that finds
        // the key in use answers at once, whatever holds that row.
        let inserted = db
            .execute(
                "INSERT INTO idempotency_keys
                     (api_key_id, idempotency_key, fingerprint, claim_token, expires_at, lease_expires_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6))
                 ON CONFLICT (api_key_id, idempotency_key) DO NOTHING",
                &[&api_key_id, &key, &fingerprint.as_slice(), &token, &ttl, &lease],
            )
            .await?;
        if inserted == 1 {
            return Ok(claimed);
        }
        let Some(row) = db
            .query_opt(
                "SELECT fingerprint, expires_at <= now() AS expired, lease_expires_at <= now() AS lapsed,
                        response_status, response_headers, response_body
                 FROM idempotency_keys WHERE api_key_id = $1 AND idempotency_key = $2",
                &[&api_key_id, &key],
            )
            .await?
        else {
            // Released or pruned since the insert: try again.
            continue;
        };
        if row.get::<_, bool>("expired") {
            // Forgotten: the key starts afresh, whatever it was used for.
            let renewed = db
                .execute(
                    "UPDATE idempotency_keys
                     SET fingerprint = $3, claim_token = $4, created_at = now(),
                         expires_at = now() + make_interval(secs => $5),
                         lease_expires_at = now() + make_interval(secs => $6),
                         response_status = NULL, response_headers = NULL, response_body = NULL,
                         completed_at = NULL
                     WHERE api_key_id = $1 AND idempotency_key = $2 AND expires_at <= now()",
                    &[&api_key_id, &key, &fingerprint.as_slice(), &token, &ttl, &lease],
                )
                .await?;
            if renewed == 1 {
                return Ok(claimed);
            }
            continue;
        }
        if row.get::<_, &[u8]>("fingerprint") != fingerprint.as_slice() {
            return Ok(Claimed::Mismatch);
        }
        if let Some(status) = row.get::<_, Option<i16>>("response_status") {
            let Json(headers) = decode::<Json<BTreeMap<String, String>>>(&row, "response_headers")?;
            return Ok(Claimed::Replay(StoredResponse {
                // The column's CHECK keeps it within 100-599.
                status: status.unsigned_abs(),
                headers: headers.into_iter().collect(),
                body: row.get("response_body"),
            }));
        }
        if row.get::<_, Option<bool>>("lapsed") == Some(true) {
            // The claim's process died (or took longer than the lease): take it over.
            let taken = db
                .execute(
                    "UPDATE idempotency_keys
                     SET claim_token = $3, lease_expires_at = now() + make_interval(secs => $4)
                     WHERE api_key_id = $1 AND idempotency_key = $2
                       AND response_status IS NULL AND lease_expires_at <= now()",
                    &[&api_key_id, &key, &token, &lease],
                )
                .await?;
            if taken == 1 {
                return Ok(claimed);
            }
            continue;
        }
        return Ok(Claimed::InFlight);
    }
    // Other requests with this key keep changing it: one of them is running.
    Ok(Claimed::InFlight)
}

/// Stores the response of the request holding `claim`. `false` when the claim no longer holds
/// the key (it lapsed and another request took it over): nothing is written.
pub async fn store(db: &impl Sql, claim: &Claim, response: &StoredResponse) -> Result<bool, DbError> {
    let headers: BTreeMap<&str, &str> =
        response.headers.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let status = i16::try_from(response.status).unwrap_or(i16::MAX);
    let written = db
        .execute(
            "UPDATE idempotency_keys
             SET response_status = $4, response_headers = $5, response_body = $6,
                 completed_at = now(), lease_expires_at = NULL
             WHERE api_key_id = $1 AND idempotency_key = $2 AND claim_token = $3
               AND response_status IS NULL",
            &[&claim.api_key_id, &claim.key, &claim.token, &status, &Json(headers), &response.body],
        )
        .await?;
    Ok(written == 1)
}

/// Deletes the key held by `claim` without a response: the next request with it runs. `false`
/// when the claim no longer holds it.
pub async fn release(db: &impl Sql, claim: &Claim) -> Result<bool, DbError> {
    let deleted = db
        .execute(
            "DELETE FROM idempotency_keys
             WHERE api_key_id = $1 AND idempotency_key = $2 AND claim_token = $3 AND response_status IS NULL",
            &[&claim.api_key_id, &claim.key, &claim.token],
        )
        .await?;
    Ok(deleted == 1)
}

/// Deletes up to `batch` keys past their `expires_at`, oldest first; call repeatedly until it
/// returns less than `batch`. Returns how many were deleted.
pub async fn prune_expired(db: &impl Sql, batch: i64) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM idempotency_keys WHERE (api_key_id, idempotency_key) IN (
                 SELECT api_key_id, idempotency_key FROM idempotency_keys
                 WHERE expires_at <= now() ORDER BY expires_at LIMIT $1)",
            &[&batch],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_every_part_apart() {
        let a = fingerprint(&["POST /x", "ab", "c"]);
        assert_eq!(a, fingerprint(&["POST /x", "ab", "c"]));
        assert_ne!(a, fingerprint(&["POST /x", "a", "bc"]));
        assert_ne!(a, fingerprint(&["POST /x", "abc"]));
        assert_ne!(a, fingerprint(&["POST /y", "ab", "c"]));
    }
}
