//! `deliver_webhook`: send one event to one endpoint, signed per the Standard Webhooks spec.
//!
//! The event's body is rendered at its first attempt by the API's own code (the export as
//! `GET /api/export/{id}` returns it, without a download link) and kept, so every attempt and
//! every resend sends the same bytes under the same `webhook-id` (the event's id); only
//! `webhook-timestamp` and the signature are of the attempt. A 2xx completes the delivery;
//! anything else (no answer in time, a refused connection or address, a 3xx, a 4xx or 5xx) is
//! a failed attempt, retried on the kind's own schedule (`WEBHOOK_RETRY_SCHEDULE_SECS`, ±20 %
//! jitter) until it runs out. Each attempt is logged with its endpoint's answer.

use std::time::Instant;

use anyhow::anyhow;
use bytes::Bytes;
use deadpool_postgres::Transaction;
use shared::{
    db::DbError,
    exports,
    failure::FailureCode,
    queue::{ClaimedJob, JobKind as _},
    webhooks::{
        DeliverWebhook,
        address::Refused,
        deliveries::{self, AttemptRecord, DeliveryStatus, ErrorClass, Outgoing, Recorded},
        signature,
    },
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Backoff, Job, JobContext, JobError, Setback};
use crate::outbound::{Answer, SendError};

/// How far a retry may stray from its scheduled delay, either way.
const JITTER: f64 = 0.2;

impl Job for DeliverWebhook {
    async fn run(
        &self,
        ctx: &JobContext,
        job: &ClaimedJob,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        let db = ctx.pool.get().await?;
        let Some(outgoing) = deliveries::outgoing(&db, self.delivery_id).await? else {
            info!("the delivery is gone (its endpoint was deleted): nothing to send");
            return Ok(());
        };
        if !matches!(outgoing.status, DeliveryStatus::Pending | DeliveryStatus::Retrying) {
            info!(status = %outgoing.status, "the delivery has ended: nothing to send");
            return Ok(());
        }
        if outgoing.job_id != Some(job.id) {
            info!(owner = ?outgoing.job_id, "another job sends this delivery now (it was resent): nothing to send");
            return Ok(());
        }
        if outgoing.disabled {
            drop(db);
            let mut db = ctx.pool.get().await?;
            if !deliveries::end_unsent(&mut db, (job.id, job.token), self.delivery_id).await? {
                return Err(JobError::Fenced);
            }
            info!(endpoint.id = %outgoing.endpoint_id, "the endpoint is disabled: the delivery ends unsent");
            return Ok(());
        }
        let body = match &outgoing.body {
            Some(body) => body.clone(),
            None => render(&db, &outgoing).await?,
        };
        // No pooled connection is held while the endpoint takes its time.
        drop(db);

        let attempted_at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let sent = tokio::select! {
            sent = send(ctx, &outgoing, body, attempted_at) => sent,
            () = cancel.cancelled() => return Err(JobError::Fenced),
        };
        let record = attempt_record(attempted_at, started, &sent);
        let mut db = ctx.pool.get().await?;
        let disable_after = ctx.webhooks.config.disable_after;
        let recorded = deliveries::record_attempt(
            &mut db,
            (job.id, job.token),
            self.delivery_id,
            outgoing.endpoint_id,
            &record,
            disable_after,
        )
        .await?;
        let latency_ms = record.latency_ms;
        match (recorded, sent) {
            (Recorded::Fenced, _) => Err(JobError::Fenced),
            (Recorded::Succeeded, Ok(answer)) => {
                info!(http.status = answer.status, latency_ms, "webhook delivered");
                Ok(())
            }
            (Recorded::Disabled, _) => {
                warn!(
                    endpoint.id = %outgoing.endpoint_id,
                    disable_after_secs = disable_after.as_secs_f64(),
                    "webhook endpoint disabled: its deliveries have failed for the whole failure window"
                );
                Ok(())
            }
            (_, Ok(answer)) => Err(JobError::retryable(
                FailureCode::WebhookDeliveryFailed,
                anyhow!("the endpoint answered {} ({latency_ms:.0} ms)", answer.status),
            )),
            (_, Err(e)) => Err(JobError::retryable(FailureCode::WebhookDeliveryFailed, e)),
        }
    }

    /// Keeps the delivery in step with its job: when a retry is due, or failed for good. A lost
    /// worker's attempt is logged (the endpoint may have received it).
    async fn on_setback(
        &self,
        _ctx: &JobContext,
        tx: &Transaction<'_>,
        setback: Setback,
        code: FailureCode,
    ) -> Result<(), DbError> {
        if matches!(code, FailureCode::WorkerLost | FailureCode::AttemptsExhausted) {
            deliveries::log_lost_attempt(tx, self.delivery_id).await?;
        }
        match setback {
            Setback::Retrying => deliveries::waiting(tx, self.delivery_id, true).await,
            Setback::Released => deliveries::waiting(tx, self.delivery_id, false).await,
            Setback::Failed => deliveries::failed(tx, self.delivery_id).await,
        }
    }

    fn span(&self, job: &ClaimedJob) -> tracing::Span {
        tracing::info_span!(
            "job",
            job.id = job.id,
            job.kind = Self::KIND,
            attempt = job.attempt,
            webhook.delivery_id = %self.delivery_id
        )
    }

    /// `WEBHOOK_RETRY_SCHEDULE_SECS`: the delay before retry `attempt`, ±20 %; none past its end.
    fn backoff(ctx: &JobContext, attempt: i32) -> Backoff {
        let schedule = &ctx.webhooks.config.retry_schedule;
        match usize::try_from(attempt - 1).ok().and_then(|i| schedule.get(i)) {
            Some(delay) => {
                Backoff::After(delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * crate::runner::unit_random()))
            }
            None => Backoff::GiveUp,
        }
    }
}

/// The event's body, rendered from the export as it is now and kept (another delivery of the
/// same event may have kept one first: that one is sent).
async fn render(db: &impl shared::db::Sql, outgoing: &Outgoing) -> Result<String, JobError> {
    let export = exports::get(db, outgoing.export_id).await?.ok_or_else(|| {
        JobError::fatal(FailureCode::Internal, anyhow!("export {} of the event is gone", outgoing.export_id))
    })?;
    let body = api::webhooks::event_body(outgoing.event_type, outgoing.occurred_at, export)
        .map_err(|e| JobError::fatal(FailureCode::Internal, e))?;
    Ok(deliveries::store_body(db, outgoing.event_id, &body).await?)
}

/// Sends the body, signed, if the URL is still one webhooks may reach.
async fn send(
    ctx: &JobContext,
    outgoing: &Outgoing,
    body: String,
    attempted_at: OffsetDateTime,
) -> Result<Answer, SendError> {
    // The URL was checked at registration; the policy may have changed since.
    ctx.webhooks.config.policy.check_url(&outgoing.url).map_err(|refused| SendError {
        class: if refused == Refused::Unresolved { ErrorClass::Dns } else { ErrorClass::AddressRefused },
        cause: refused.into(),
    })?;
    let id = outgoing.event_id.to_string();
    let timestamp = attempted_at.unix_timestamp();
    let headers = [
        ("webhook-id", id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            signature::signature_header(&outgoing.secrets, &id, timestamp, body.as_bytes()),
        ),
    ];
    ctx.webhooks.post(&outgoing.url, &headers, Bytes::from(body)).await
}

/// The log's record of an attempt: a 2xx succeeded; a 3xx (never followed) and any other
/// status failed, with the endpoint's answer; no answer failed with its class.
fn attempt_record(
    attempted_at: OffsetDateTime,
    started: Instant,
    sent: &Result<Answer, SendError>,
) -> AttemptRecord {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (response_status, error, response_excerpt) = match sent {
        Ok(answer) => {
            let error = match answer.status {
                200..=299 => None,
                300..=399 => Some(ErrorClass::Redirect),
                _ => Some(ErrorClass::HttpStatus),
            };
            (Some(i32::from(answer.status)), error, Some(answer.excerpt.clone()))
        }
        Err(e) => (None, Some(e.class), None),
    };
    AttemptRecord { attempted_at, latency_ms, response_status, error, response_excerpt }
}
