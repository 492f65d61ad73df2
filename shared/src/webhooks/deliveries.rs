//! Webhook events, their deliveries and each delivery's attempts (tables `webhook_events`,
//! `webhook_deliveries`, `webhook_attempts`): the delivery log clients read, the resend, and
//! the worker's fenced writes (each checks that its job's attempt still holds the job, as an
//! export's do).

use std::{sync::LazyLock, time::Duration};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{DeliverWebhook, EventType, Secret};
use crate::{
    db::{Begin, DbError, Sql, decode, text_enum},
    failure::FailureCode,
    queue::{self, JobKind},
};

text_enum! {
    /// Where a delivery is.
    #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
    #[cfg_attr(feature = "openapi", oai(rename = "WebhookDeliveryStatus", rename_all = "lowercase"))]
    pub enum DeliveryStatus {
        /// Queued: the next attempt is due at `next_attempt_at` (or running now).
        Pending = "pending",
        /// An attempt failed; the next one is at `next_attempt_at`.
        Retrying = "retrying",
        /// The endpoint answered 2xx.
        Succeeded = "succeeded",
        /// Every scheduled attempt failed.
        Failed = "failed",
        /// Ended unsent: its endpoint was disabled (it may be resent once enabled).
        Disabled = "disabled",
    }
}

text_enum! {
    /// Why an attempt did not succeed.
    #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
    #[cfg_attr(feature = "openapi", oai(rename = "WebhookErrorClass", rename_all = "snake_case"))]
    pub enum ErrorClass {
        /// No answer within `WEBHOOK_TIMEOUT_SECS`.
        Timeout = "timeout",
        /// The connection failed (refused, reset, TLS).
        Connect = "connect",
        /// The host did not resolve.
        Dns = "dns",
        /// The URL or every address the host resolved to is one webhooks may not reach.
        AddressRefused = "address_refused",
        /// A 3xx answer: redirects are not followed.
        Redirect = "redirect",
        /// Any other answer but 2xx.
        HttpStatus = "http_status",
        /// The request failed otherwise.
        Request = "request",
        /// The worker sending it was lost mid-attempt (the endpoint may have received it).
        WorkerLost = "worker_lost",
    }
}

/// Bytes of an endpoint's answer kept in the log.
pub const EXCERPT_BYTES: usize = 512;

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: i32,
    /// When it started.
    pub attempted_at: OffsetDateTime,
    /// From sending to the endpoint's answer (or the failure), in milliseconds.
    pub latency_ms: Option<f64>,
    /// The endpoint's status code, if it answered.
    pub response_status: Option<i32>,
    /// Why it did not succeed (`None`: it did).
    pub error: Option<ErrorClass>,
    /// The start of the endpoint's answer ([`EXCERPT_BYTES`] at most).
    pub response_excerpt: Option<String>,
}

/// One event sent to one endpoint, with its attempts.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its id.
    pub id: Uuid,
    /// The event (its id is the `webhook-id` of every attempt).
    pub event_id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// The export it happened to.
    pub export_id: Uuid,
    /// Where it goes.
    pub endpoint_id: Uuid,
    /// Where it is.
    pub status: DeliveryStatus,
    /// When the event was recorded for this endpoint.
    pub created_at: OffsetDateTime,
    /// When the next attempt is due (pending or retrying).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it succeeded, failed for good or ended unsent.
    pub finished_at: Option<OffsetDateTime>,
    /// Its attempts, first first.
    pub attempts: Vec<Attempt>,
}

const COLUMNS: &str = "d.id, d.event_id, ev.type AS event_type, ev.export_id, d.endpoint_id, d.status,
    d.created_at, d.next_attempt_at, d.finished_at
    FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id";

impl Delivery {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id"),
            event_id: row.get("event_id"),
            event_type: decode(row, "event_type")?,
            export_id: row.get("export_id"),
            endpoint_id: row.get("endpoint_id"),
            status: decode(row, "status")?,
            created_at: row.get("created_at"),
            next_attempt_at: row.get("next_attempt_at"),
            finished_at: row.get("finished_at"),
            attempts: Vec::new(),
        })
    }

    /// The last attempt, if any.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }
}

/// Fills in the attempts of `deliveries` (one statement).
async fn with_attempts(db: &impl Sql, mut deliveries: Vec<Delivery>) -> Result<Vec<Delivery>, DbError> {
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
    let rows = db
        .query(
            "SELECT delivery_id, attempt, attempted_at, latency_ms, response_status, error_class, response_excerpt
             FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
            &[&ids],
        )
        .await?;
    for row in &rows {
        let delivery_id: Uuid = row.get("delivery_id");
        let attempt = Attempt {
            attempt: row.get("attempt"),
            attempted_at: row.get("attempted_at"),
            latency_ms: row.get("latency_ms"),
            response_status: row.get("response_status"),
            error: decode(row, "error_class")?,
            response_excerpt: row.get("response_excerpt"),
        };
        if let Some(delivery) = deliveries.iter_mut().find(|d| d.id == delivery_id) {
            delivery.attempts.push(attempt);
        }
    }
    Ok(deliveries)
}

/// Why a page of the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The cursor names no delivery of this endpoint.
    #[error("the cursor does not name a delivery of this endpoint")]
    UnknownCursor,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for PageError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// `endpoint`'s deliveries, newest first, at most `limit`, after the delivery `after` (the
/// previous page's last one).
pub async fn page(
    db: &impl Sql,
    endpoint: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Delivery>, PageError> {
    let rows = match after {
        None => {
            db.query(
                &format!(
                    "SELECT {COLUMNS} WHERE d.endpoint_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2"
                ),
                &[&endpoint, &limit],
            )
            .await?
        }
        Some(after) => {
            let Some(cursor) = db
                .query_opt(
                    "SELECT created_at FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2",
                    &[&after, &endpoint],
                )
                .await?
            else {
                return Err(PageError::UnknownCursor);
            };
            let at: OffsetDateTime = cursor.get(0);
            db.query(
                &format!(
                    "SELECT {COLUMNS} WHERE d.endpoint_id = $1 AND (d.created_at, d.id) < ($3, $4)
                     ORDER BY d.created_at DESC, d.id DESC LIMIT $2"
                ),
                &[&endpoint, &limit, &at, &after],
            )
            .await?
        }
    };
    let deliveries = rows.iter().map(Delivery::from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(with_attempts(db, deliveries).await?)
}

/// Delivery `id` of `endpoint`.
pub async fn get(db: &impl Sql, endpoint: Uuid, id: Uuid) -> Result<Option<Delivery>, DbError> {
    let row = db
        .query_opt(&format!("SELECT {COLUMNS} WHERE d.id = $1 AND d.endpoint_id = $2"), &[&id, &endpoint])
        .await?;
    let Some(delivery) = row.as_ref().map(Delivery::from_row).transpose()? else { return Ok(None) };
    Ok(with_attempts(db, vec![delivery]).await?.pop())
}

/// An endpoint's deliveries of the last 24 hours, by outcome (the dashboard's health column).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Answered 2xx.
    pub succeeded: i64,
    /// Failed for good, or ended unsent (disabled).
    pub failed: i64,
    /// Pending or retrying.
    pub in_flight: i64,
}

/// [`Health`] of each of `endpoints` (absent: no delivery in the last 24 hours), read through
/// the per-endpoint index.
pub async fn health(db: &impl Sql, endpoints: &[Uuid]) -> Result<Vec<(Uuid, Health)>, DbError> {
    let rows = db
        .query(
            "SELECT endpoint_id,
                    count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status IN ('failed', 'disabled')),
                    count(*) FILTER (WHERE status IN ('pending', 'retrying'))
             FROM webhook_deliveries
             WHERE endpoint_id = ANY($1) AND created_at > now() - interval '24 hours'
             GROUP BY endpoint_id",
            &[&endpoints],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), Health { succeeded: r.get(1), failed: r.get(2), in_flight: r.get(3) }))
        .collect())
}

/// The endpoint delivery `id` goes to, if there is such a delivery.
pub async fn endpoint_of(db: &impl Sql, id: Uuid) -> Result<Option<Uuid>, DbError> {
    Ok(db
        .query_opt("SELECT endpoint_id FROM webhook_deliveries WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}

/// The outcome of a resend.
#[derive(Debug, Clone)]
pub enum Resent {
    /// Queued again: the same event (same `webhook-id`, same body) goes out at once.
    Queued(Delivery),
    /// Still pending or retrying: nothing changed.
    InFlight(Delivery),
    /// No such delivery of this endpoint.
    NotFound,
}

/// Sends delivery `id` of `endpoint` again, as a new job, unless it is still under way.
pub async fn resend(db: &mut impl Begin, endpoint: Uuid, id: Uuid) -> Result<Resent, DbError> {
    let tx = db.begin().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT status FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 FOR UPDATE",
            &[&id, &endpoint],
        )
        .await?
    else {
        return Ok(Resent::NotFound);
    };
    let status: DeliveryStatus = decode(&row, "status")?;
    if matches!(status, DeliveryStatus::Pending | DeliveryStatus::Retrying) {
        drop(tx);
        return Ok(get(&*db, endpoint, id).await?.map_or(Resent::NotFound, Resent::InFlight));
    }
    let job_id = DeliverWebhook { delivery_id: id }.enqueue(&tx).await?;
    tx.execute(
        "UPDATE webhook_deliveries SET status = 'pending', job_id = $2, next_attempt_at = now(), finished_at = NULL
         WHERE id = $1",
        &[&id, &job_id],
    )
    .await?;
    tx.commit().await?;
    Ok(get(&*db, endpoint, id).await?.map_or(Resent::NotFound, Resent::Queued))
}

/// Queues again every delivery of `endpoint` that ended unsent because it was disabled (one
/// statement); returns how many. For [`super::enable`] with a resend.
pub(super) async fn requeue_disabled(db: &impl Sql, endpoint: Uuid) -> Result<u64, DbError> {
    let queued = db
        .execute(
            "WITH stopped AS (
                 SELECT id FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'disabled' FOR UPDATE
             ), queued AS (
                 INSERT INTO jobs (kind, args, max_attempts)
                 SELECT $2, jsonb_build_object('delivery_id', id), $3 FROM stopped
                 RETURNING id, (args ->> 'delivery_id')::uuid AS delivery_id
             )
             UPDATE webhook_deliveries d
             SET status = 'pending', job_id = queued.id, next_attempt_at = now(), finished_at = NULL
             FROM queued WHERE d.id = queued.delivery_id",
            &[&endpoint, &DeliverWebhook::KIND, &DeliverWebhook::MAX_ATTEMPTS],
        )
        .await?;
    if queued > 0 {
        queue::notify(db, DeliverWebhook::KIND).await?;
    }
    Ok(queued)
}

/// Ends the deliveries of `endpoint` still to send (but `except`, and any that another transaction
/// is writing: they see the endpoint disabled at their next attempt) as `disabled`, and
/// cancels their jobs.
pub(super) async fn stop_pending(
    db: &impl Sql,
    endpoint: Uuid,
    except: Option<Uuid>,
) -> Result<u64, DbError> {
    let rows = db
        .query(
            "UPDATE webhook_deliveries SET status = 'disabled', next_attempt_at = NULL, finished_at = now()
             WHERE id IN (SELECT id FROM webhook_deliveries
                          WHERE endpoint_id = $1 AND status IN ('pending', 'retrying') AND id IS DISTINCT FROM $2
                          FOR UPDATE SKIP LOCKED)
             RETURNING job_id",
            &[&endpoint, &except],
        )
        .await?;
    for job in rows.iter().filter_map(|r| r.get::<_, Option<i64>>(0)) {
        queue::cancel(db, job, FailureCode::Cancelled).await?;
    }
    Ok(rows.len() as u64)
}

/// What an attempt needs to send a delivery.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery.
    pub delivery_id: Uuid,
    /// Where it is (an attempt sends only a pending or retrying one).
    pub status: DeliveryStatus,
    /// The job that sends it now (a resend gives it a new one: an older job sends nothing).
    pub job_id: Option<i64>,
    /// Its endpoint.
    pub endpoint_id: Uuid,
    /// The endpoint's URL.
    pub url: String,
    /// The endpoint is disabled: the delivery ends unsent.
    pub disabled: bool,
    /// The secrets that sign it: the current one, then the previous one during its overlap.
    pub secrets: Vec<Secret>,
    /// The event (its id is the `webhook-id`).
    pub event_id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// When.
    pub occurred_at: OffsetDateTime,
    /// To which export.
    pub export_id: Uuid,
    /// The body, once rendered ([`store_body`]).
    pub body: Option<String>,
}

/// Delivery `id` with its endpoint and event; `None` when it is gone (its endpoint deleted).
pub async fn outgoing(db: &impl Sql, id: Uuid) -> Result<Option<Outgoing>, DbError> {
    let Some(row) = db
        .query_opt(
            "SELECT d.status, d.job_id, e.id AS endpoint_id, e.url, e.disabled_at IS NOT NULL AS disabled, e.secret,
                    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret,
                    ev.id AS event_id, ev.type AS event_type, ev.occurred_at, ev.export_id, ev.body
             FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             JOIN webhook_events ev ON ev.id = d.event_id
             WHERE d.id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let previous: Option<Vec<u8>> = row.get("previous_secret");
    let secrets = std::iter::once(Secret::from_bytes(row.get("secret")))
        .chain(previous.map(Secret::from_bytes))
        .collect();
    Ok(Some(Outgoing {
        delivery_id: id,
        status: decode(&row, "status")?,
        job_id: row.get("job_id"),
        endpoint_id: row.get("endpoint_id"),
        url: row.get("url"),
        disabled: row.get("disabled"),
        secrets,
        event_id: row.get("event_id"),
        event_type: decode(&row, "event_type")?,
        occurred_at: row.get("occurred_at"),
        export_id: row.get("export_id"),
        body: row.get("body"),
    }))
}

/// Keeps `body` as the event's body unless one is kept already; returns the one kept (the
/// first attempt to render it wins, so every delivery and retry sends the same bytes).
pub async fn store_body(db: &impl Sql, event: Uuid, body: &str) -> Result<String, DbError> {
    let row = db
        .query_one(
            "UPDATE webhook_events SET body = coalesce(body, $2) WHERE id = $1 RETURNING body",
            &[&event, &body],
        )
        .await?;
    Ok(row.get(0))
}

/// An attempt as the worker made it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// When it started.
    pub attempted_at: OffsetDateTime,
    /// How long it took, in milliseconds.
    pub latency_ms: f64,
    /// The endpoint's status code, if it answered.
    pub response_status: Option<i32>,
    /// Why it did not succeed; `None`: a 2xx.
    pub error: Option<ErrorClass>,
    /// The start of the answer.
    pub response_excerpt: Option<String>,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A 2xx: the delivery and its job are completed.
    Succeeded,
    /// A failure: the job's setback schedules the next attempt (or fails it).
    Failed,
    /// A failure after the endpoint had failed for the disable window: the endpoint is disabled,
    /// its deliveries still to send stopped, and this one ended (its job completed).
    Disabled,
    /// The job's attempt no longer holds it: nothing was written.
    Fenced,
}

/// The fenced condition on a delivery row `d`: its job (`$2`) still runs under token `$3`.
static FENCE: LazyLock<String> = LazyLock::new(|| queue::attempt_holds("$2", "$3"));

/// Logs an attempt of delivery `delivery` to `endpoint`, made by job `job` under `token`, and
/// acts on it in one transaction: a success completes the delivery and the job and ends the
/// endpoint's failure streak; a failure starts (or continues) the streak, and one that has
/// lasted `disable_after` disables the endpoint.
pub async fn record_attempt(
    db: &mut impl Begin,
    (job, token): (i64, Uuid),
    delivery: Uuid,
    endpoint: Uuid,
    record: &AttemptRecord,
    disable_after: Duration,
) -> Result<Recorded, DbError> {
    let succeeded = record.error.is_none();
    let tx = db.begin().await?;
    let logged = tx
        .query_opt(
            &format!(
                "WITH d AS (
                     UPDATE webhook_deliveries SET attempts = attempts + 1,
                         status = CASE WHEN $4 THEN 'succeeded' ELSE 'retrying' END,
                         finished_at = CASE WHEN $4 THEN now() END, next_attempt_at = NULL
                     WHERE id = $1 AND job_id = $2 AND status IN ('pending', 'retrying') AND {fence}
                     RETURNING id, attempts
                 )
                 INSERT INTO webhook_attempts
                     (delivery_id, attempt, attempted_at, latency_ms, response_status, error_class, response_excerpt)
                 SELECT id, attempts, $5, $6, $7, $8, $9 FROM d
                 RETURNING attempt",
                fence = *FENCE
            ),
            &[
                &delivery,
                &job,
                &token,
                &succeeded,
                &record.attempted_at,
                &record.latency_ms,
                &record.response_status,
                &record.error,
                &record.response_excerpt,
            ],
        )
        .await?;
    if logged.is_none() {
        return Ok(Recorded::Fenced);
    }
    let outcome = if succeeded {
        tx.execute(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            &[&endpoint],
        )
        .await?;
        queue::complete(&tx, job, token).await?;
        Recorded::Succeeded
    } else {
        let disable: bool = tx
            .query_opt(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2)
                 WHERE id = $1
                 RETURNING disabled_at IS NULL AND failing_since <= now() - make_interval(secs => $3)",
                &[&endpoint, &record.attempted_at, &disable_after.as_secs_f64()],
            )
            .await?
            .is_some_and(|row| row.get(0));
        if disable {
            tx.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = $1", &[&endpoint])
                .await?;
            stop_pending(&tx, endpoint, Some(delivery)).await?;
            end_disabled(&tx, delivery).await?;
            queue::complete(&tx, job, token).await?;
            Recorded::Disabled
        } else {
            Recorded::Failed
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Ends `delivery` unsent: its endpoint is disabled.
async fn end_disabled(db: &impl Sql, delivery: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE webhook_deliveries SET status = 'disabled', next_attempt_at = NULL, finished_at = now() WHERE id = $1",
        &[&delivery],
    )
    .await?;
    Ok(())
}

/// Ends delivery `delivery` unsent because its endpoint is disabled, and completes its job
/// (`job` under `token`), in one transaction. `false` when fenced out.
pub async fn end_unsent(
    db: &mut impl Begin,
    (job, token): (i64, Uuid),
    delivery: Uuid,
) -> Result<bool, DbError> {
    let tx = db.begin().await?;
    if !queue::complete(&tx, job, token).await? {
        return Ok(false);
    }
    end_disabled(&tx, delivery).await?;
    tx.commit().await?;
    Ok(true)
}

/// Records, in the transaction that gives a delivery's job back to the queue, when its next
/// attempt is due (the job's `run_at`); `failed_attempt`: it is retrying after a failure
/// (otherwise it was released at shutdown and stays as it was).
pub async fn waiting(db: &impl Sql, delivery: Uuid, failed_attempt: bool) -> Result<(), DbError> {
    db.execute(
        "UPDATE webhook_deliveries d
         SET status = CASE WHEN $2 THEN 'retrying' ELSE d.status END,
             next_attempt_at = (SELECT run_at FROM jobs WHERE jobs.id = d.job_id)
         WHERE id = $1 AND status IN ('pending', 'retrying')",
        &[&delivery, &failed_attempt],
    )
    .await?;
    Ok(())
}

/// Records, in the transaction that fails a delivery's job for good, that it failed.
pub async fn failed(db: &impl Sql, delivery: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, finished_at = now()
         WHERE id = $1 AND status IN ('pending', 'retrying')",
        &[&delivery],
    )
    .await?;
    Ok(())
}

/// A failed delivery sent by job `job` (its latest), back to pending for an operator's retry
/// of the job by hand (in the transaction of that retry). Nothing when the job sends none.
pub async fn revive_for_job(db: &impl Sql, job: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), finished_at = NULL
         WHERE job_id = $1 AND status = 'failed'",
        &[&job],
    )
    .await?;
    Ok(())
}

/// The delivery job `job` was sending ends as failed: an operator cancelled the job (in the
/// transaction of that cancel). Nothing when the job sends none.
pub async fn failed_for_job(db: &impl Sql, job: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, finished_at = now()
         WHERE job_id = $1 AND status IN ('pending', 'retrying')",
        &[&job],
    )
    .await?;
    Ok(())
}

/// Logs an attempt whose worker was lost (its lease expired): the endpoint may have received
/// it. Called in the transaction of the lease rescue.
pub async fn log_lost_attempt(db: &impl Sql, delivery: Uuid) -> Result<(), DbError> {
    db.execute(
        "WITH d AS (
             UPDATE webhook_deliveries SET attempts = attempts + 1
             WHERE id = $1 AND status IN ('pending', 'retrying')
             RETURNING id, attempts, job_id
         )
         INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, error_class)
         SELECT d.id, d.attempts, coalesce((SELECT attempted_at FROM jobs WHERE jobs.id = d.job_id), now()),
                'worker_lost'
         FROM d",
        &[&delivery],
    )
    .await?;
    Ok(())
}
