//! Completion webhooks (tables `webhook_endpoints`, `webhook_events`, `webhook_deliveries`,
//! `webhook_attempts`), after the Standard Webhooks spec.
//!
//! An API key registers endpoints (a URL, the event types it wants, a description) and gets
//! each one's signing secret once. When an export reaches a final state, a trigger on `exports`
//! (migration V14) writes the event, one delivery per subscribed endpoint of every key holding
//! the export, and each delivery's [`DeliverWebhook`] job, in the transaction that wrote the
//! state: no export finishes without its event. The worker sends each delivery, signed
//! ([`signature`]), only to addresses the [`address::Policy`] allows; every attempt is logged
//! ([`deliveries`]). An endpoint that keeps failing for `WEBHOOK_DISABLE_AFTER_SECS` is
//! disabled until its owner enables it again.
//!
//! This module owns the endpoints' SQL; [`deliveries`] owns the events', deliveries' and
//! attempts'.

pub mod address;
pub mod deliveries;
pub mod signature;

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    db::{Begin, DbError, Sql, decode, text_enum},
    exports::ExportStatus,
    queue::JobKind,
};

pub use self::signature::Secret;

text_enum! {
    /// What happened to an export: it reached this final state.
    #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
    #[cfg_attr(feature = "openapi", oai(rename = "WebhookEventType"))]
    pub enum EventType {
        /// The export's file is ready (`status` COMPLETED).
        #[cfg_attr(feature = "openapi", oai(rename = "export.completed"))]
        ExportCompleted = "export.completed",
        /// The export failed for good (`status` FAILED, `error_code` says why).
        #[cfg_attr(feature = "openapi", oai(rename = "export.failed"))]
        ExportFailed = "export.failed",
        /// The export was cancelled (`status` CANCELLED).
        #[cfg_attr(feature = "openapi", oai(rename = "export.cancelled"))]
        ExportCancelled = "export.cancelled",
        /// The export's file is gone: retention ended, or it was found missing (`status`
        /// EXPIRED).
        #[cfg_attr(feature = "openapi", oai(rename = "export.expired"))]
        ExportExpired = "export.expired",
    }
}

impl EventType {
    /// The event an export's move into `status` produces (none for a state still to finish).
    pub fn of(status: ExportStatus) -> Option<Self> {
        match status {
            ExportStatus::Completed => Some(Self::ExportCompleted),
            ExportStatus::Failed => Some(Self::ExportFailed),
            ExportStatus::Cancelled => Some(Self::ExportCancelled),
            ExportStatus::Expired => Some(Self::ExportExpired),
            ExportStatus::Pending | ExportStatus::Processing => None,
        }
    }
}

/// The job that sends one delivery. Written by the trigger with its delivery (the literals in
/// V14 are these constants: a test holds them together), and by a resend.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeliverWebhook {
    /// The delivery to send.
    pub delivery_id: Uuid,
}

impl JobKind for DeliverWebhook {
    const KIND: &'static str = "deliver_webhook";
    /// Bounds lease rescues only (a delivery whose worker keeps dying): the retry schedule
    /// (`WEBHOOK_RETRY_SCHEDULE_SECS`) decides how often a failed attempt is retried.
    const MAX_ATTEMPTS: i32 = 8;
}

/// Most endpoints one API key may have.
pub const MAX_ENDPOINTS_PER_KEY: i64 = 10;

/// Longest description an endpoint may have, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// A registered endpoint (never its secret).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its id.
    pub id: Uuid,
    /// The key it belongs to.
    pub api_key_id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// What it is for (the owner's words).
    pub description: String,
    /// The events it receives.
    pub event_types: Vec<EventType>,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When its secret was last rotated.
    pub secret_rotated_at: Option<OffsetDateTime>,
    /// Until when the secret before the last rotation still signs too.
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// Its first failed attempt since its last success.
    pub failing_since: Option<OffsetDateTime>,
    /// When it was disabled (after failing for `WEBHOOK_DISABLE_AFTER_SECS`).
    pub disabled_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, api_key_id, url, description, event_types, created_at, secret_rotated_at,
    CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END AS previous_secret_expires_at,
    failing_since, disabled_at";

impl Endpoint {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id"),
            api_key_id: row.get("api_key_id"),
            url: row.get("url"),
            description: row.get("description"),
            event_types: decode(row, "event_types")?,
            created_at: row.get("created_at"),
            secret_rotated_at: row.get("secret_rotated_at"),
            previous_secret_expires_at: row.get("previous_secret_expires_at"),
            failing_since: row.get("failing_since"),
            disabled_at: row.get("disabled_at"),
        })
    }
}

/// A new endpoint: checked by the caller (its URL by [`address::Policy`]).
#[derive(Debug, Clone)]
pub struct NewEndpoint<'a> {
    /// Where deliveries go.
    pub url: &'a address::EndpointUrl,
    /// What it is for.
    pub description: &'a str,
    /// The events it receives (at least one).
    pub event_types: &'a [EventType],
}

/// Why an endpoint was not registered.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The key has [`MAX_ENDPOINTS_PER_KEY`] already.
    #[error("the key already has {limit} webhook endpoints")]
    TooMany {
        /// The cap.
        limit: i64,
    },
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for CreateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Registers an endpoint for `key` with a new secret, unless the key has `limit` already
/// (registrations by one key take turns on its row, so two cannot both pass the cap).
pub async fn create(
    db: &mut impl Begin,
    key: Uuid,
    new: &NewEndpoint<'_>,
    limit: i64,
) -> Result<(Endpoint, Secret), CreateError> {
    let tx = db.begin().await?;
    tx.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR NO KEY UPDATE", &[&key]).await?;
    let count: i64 =
        tx.query_one("SELECT count(*) FROM webhook_endpoints WHERE api_key_id = $1", &[&key]).await?.get(0);
    if count >= limit {
        return Err(CreateError::TooMany { limit });
    }
    let secret = Secret::generate();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO webhook_endpoints (id, api_key_id, url, description, event_types, secret)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[&Uuid::new_v4(), &key, &new.url.as_str(), &new.description, &new.event_types, &secret.bytes()],
        )
        .await?;
    tx.commit().await?;
    Ok((Endpoint::from_row(&row)?, secret))
}

/// `key`'s endpoints, oldest first (at most [`MAX_ENDPOINTS_PER_KEY`]).
pub async fn list(db: &impl Sql, key: Uuid) -> Result<Vec<Endpoint>, DbError> {
    let rows = db
        .query(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE api_key_id = $1 ORDER BY created_at, id"),
            &[&key],
        )
        .await?;
    rows.iter().map(Endpoint::from_row).collect()
}

/// Every key's endpoints, newest first, at most `limit`, each with its key's name and prefix
/// (the operators' dashboard).
pub async fn all(db: &impl Sql, limit: i64) -> Result<Vec<(Endpoint, String)>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT e.*, k.name AS key_name, k.prefix AS key_prefix
                 FROM (SELECT {COLUMNS} FROM webhook_endpoints ORDER BY created_at DESC, id DESC LIMIT $1) e
                 JOIN api_keys k ON k.id = e.api_key_id
                 ORDER BY e.created_at DESC, e.id DESC"
            ),
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let label = crate::sessions::key_label(row.get("key_name"), row.get("key_prefix"));
            Ok((Endpoint::from_row(row)?, label))
        })
        .collect()
}

/// Endpoint `id`, whoever's it is (the operators' dashboard).
pub async fn find(db: &impl Sql, id: Uuid) -> Result<Option<Endpoint>, DbError> {
    let row = db.query_opt(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"), &[&id]).await?;
    row.as_ref().map(Endpoint::from_row).transpose()
}

/// Endpoint `id`, if it is `key`'s.
pub async fn get(db: &impl Sql, key: Uuid, id: Uuid) -> Result<Option<Endpoint>, DbError> {
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND api_key_id = $2"),
            &[&id, &key],
        )
        .await?;
    row.as_ref().map(Endpoint::from_row).transpose()
}

/// Deletes endpoint `id` of `key` with its delivery log; the jobs of its deliveries still to
/// send are cancelled in the same transaction (a running one stops at its next heartbeat, and
/// whatever it sent is not recorded). `false` when there was no such endpoint.
pub async fn delete(db: &mut impl Begin, key: Uuid, id: Uuid) -> Result<bool, DbError> {
    let tx = db.begin().await?;
    let Some(_) = tx
        .query_opt(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND api_key_id = $2 FOR UPDATE",
            &[&id, &key],
        )
        .await?
    else {
        return Ok(false);
    };
    deliveries::stop_pending(&tx, id, None).await?;
    tx.execute("DELETE FROM webhook_endpoints WHERE id = $1", &[&id]).await?;
    tx.commit().await?;
    Ok(true)
}

/// Gives endpoint `id` of `key` a new secret; the current one keeps signing beside it for
/// `overlap` (replacing any older one still in its overlap). `None` when there is no such
/// endpoint.
pub async fn rotate(
    db: &impl Sql,
    key: Uuid,
    id: Uuid,
    overlap: Duration,
) -> Result<Option<(Endpoint, Secret)>, DbError> {
    let secret = Secret::generate();
    let row = db
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET secret = $3, previous_secret = secret,
                     previous_secret_expires_at = now() + make_interval(secs => $4), secret_rotated_at = now()
                 WHERE id = $1 AND api_key_id = $2
                 RETURNING {COLUMNS}"
            ),
            &[&id, &key, &secret.bytes(), &overlap.as_secs_f64()],
        )
        .await?;
    row.as_ref().map(|row| Ok((Endpoint::from_row(row)?, secret))).transpose()
}

/// Enables endpoint `id` of `key` again (its failure streak forgotten); with `resend`, its
/// deliveries that ended unsent because it was disabled are queued again. Returns the endpoint
/// and how many deliveries were queued; `None` when there is no such endpoint.
pub async fn enable(
    db: &mut impl Begin,
    key: Uuid,
    id: Uuid,
    resend: bool,
) -> Result<Option<(Endpoint, u64)>, DbError> {
    let tx = db.begin().await?;
    let Some(row) = tx
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL
                 WHERE id = $1 AND api_key_id = $2
                 RETURNING {COLUMNS}"
            ),
            &[&id, &key],
        )
        .await?
    else {
        return Ok(None);
    };
    let resent = if resend { deliveries::requeue_disabled(&tx, id).await? } else { 0 };
    tx.commit().await?;
    Ok(Some((Endpoint::from_row(&row)?, resent)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_final_state_has_its_event_and_the_trigger_names_the_job_kind_as_the_code_does() {
        let events: Vec<EventType> = ExportStatus::ALL.into_iter().filter_map(EventType::of).collect();
        assert_eq!(events, EventType::ALL);
        // The trigger names the event `'export.' || lower(NEW.status)`.
        for status in ExportStatus::ALL {
            if let Some(event) = EventType::of(status) {
                assert_eq!(event.as_str(), format!("export.{}", status.as_str().to_lowercase()));
            }
        }
        // V18 moved the trigger's body into `webhook_events_write` (and V14's stays as it was).
        let enqueue = format!(
            "SELECT '{}', jsonb_build_object('delivery_id', delivery_id), {}",
            DeliverWebhook::KIND,
            DeliverWebhook::MAX_ATTEMPTS
        );
        for migration in
            [include_str!("../../sql/V14__webhooks.sql"), include_str!("../../sql/V18__schedules.sql")]
        {
            assert!(migration.contains(&enqueue), "the trigger enqueues as DeliverWebhook does: {enqueue}");
            assert!(migration.contains(&format!("pg_notify('{}'", crate::queue::NOTIFY_CHANNEL)));
        }
        let args = serde_json::to_value(DeliverWebhook { delivery_id: Uuid::nil() }).unwrap();
        assert_eq!(args, serde_json::json!({ "delivery_id": Uuid::nil() }));
    }
}
