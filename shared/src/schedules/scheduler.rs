//! The scheduler pass, run by the maintenance leader: plans the periods that came due, asks for
//! their exports, and retries the ones that failed.
//!
//! Every step is safe to run twice, or on two processes at once (a leader that froze and came
//! back while another took over):
//! - **plan**: a due schedule is locked (`FOR UPDATE SKIP LOCKED`), its runs inserted (`ON
//!   CONFLICT DO NOTHING` on the (schedule, account, period) key) and its cursor moved in one
//!   transaction;
//! - **ask**: a run's export is asked for like any request (deduplicated with identical ones)
//!   and linked to the run in the transaction that creates or attaches it; a run already linked
//!   to another export rolls that transaction back, so a (schedule, account, period) never
//!   creates two exports;
//! - **retry**: a FAILED export is revived (the same export, its job queued again) after the
//!   policy's delay, up to its limit.
//!
//! The clock is an input: production passes the database's `now()`, the benchmark a simulated
//! one.

use std::{future::Future, time::Duration};

use deadpool_postgres::Object;
use time::{Date, OffsetDateTime};
use tokio_postgres::Row;
use tracing::warn;
use uuid::Uuid;

use super::{
    calendar::Period,
    store::{self, COLUMNS, Schedule, ScheduledRun},
};
use crate::{
    dashboard::{self, Retried},
    db::{DbError, Sql, decode},
    exports::{self, ExportStatus, RequestError, RequestedBy, ReusePolicy},
};

/// How the scheduler works (`SCHEDULE_*`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Schedules planned, and runs attended to, per transaction or read.
    pub batch: i64,
    /// Batches per step per pass: a backlog is worked off over several passes.
    pub max_batches: usize,
    /// Periods that ended more than this many days ago (in the schedule's time zone) are not
    /// produced when the scheduler catches up (`SCHEDULE_BACKFILL_DAYS`).
    pub backfill_days: u32,
    /// Retries of a period whose export FAILED (`SCHEDULE_RETRY_LIMIT`).
    pub retry_limit: i32,
    /// Wait before the first retry; it doubles with each (`SCHEDULE_RETRY_AFTER_SECS`).
    pub retry_after: Duration,
    /// Wait before asking again when the key's cap on outstanding exports defers a run.
    pub defer: Duration,
    /// The key's cap on outstanding exports (`MAX_OUTSTANDING_EXPORTS_PER_KEY`).
    pub max_outstanding: i64,
    /// Attempts of a new export (`EXPORT_MAX_ATTEMPTS`).
    pub max_attempts: i32,
    /// When an identical completed export is reused.
    pub reuse: ReusePolicy,
}

/// Where the accounts of an all-accounts schedule come from, for a key that may read every
/// account: the table's accounts table in the source.
pub trait AccountDirectory: Sync {
    /// Every account of `table`'s accounts table, or why they cannot be listed now.
    fn accounts(&self, table: &str) -> impl Future<Output = Result<Vec<String>, String>> + Send;
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Runs planned (one per account and period).
    pub planned: u64,
    /// Periods passed over: ended before the backfill horizon.
    pub skipped_periods: u64,
    /// Runs whose export was asked for (new, or an identical one reused).
    pub asked: u64,
    /// Runs the key's cap deferred.
    pub deferred: u64,
    /// Failed exports revived.
    pub retried: u64,
}

/// When a schedule whose accounts could not be listed is looked at again.
const LOOK_AGAIN: Duration = Duration::from_secs(300);

/// Most periods one schedule plans per pass: a long catch-up goes on at the next pass.
const MAX_PERIODS_PER_PASS: usize = 100;

/// One pass at `now`: plan, then ask and retry.
pub async fn pass(
    db: &mut Object,
    now: OffsetDateTime,
    settings: &Settings,
    directory: &impl AccountDirectory,
) -> Result<Report, DbError> {
    let mut report = Report::default();
    for _ in 0..settings.max_batches {
        let (schedules, planned, skipped) = plan_batch(db, now, settings, directory).await?;
        report.planned += planned;
        report.skipped_periods += skipped;
        if schedules < settings.batch as usize {
            break;
        }
    }
    for _ in 0..settings.max_batches {
        let runs = attend_batch(db, now, settings, &mut report).await?;
        if runs < settings.batch as usize {
            break;
        }
    }
    Ok(report)
}

/// [`COLUMNS`] of `schedules` aliased `s`, for the reads that join it.
fn schedule_columns() -> String {
    COLUMNS.split(", ").map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ")
}

/// Plans one batch of due schedules; returns how many schedules it looked at, runs planned
/// and periods skipped.
async fn plan_batch(
    db: &mut Object,
    now: OffsetDateTime,
    settings: &Settings,
    directory: &impl AccountDirectory,
) -> Result<(usize, u64, u64), DbError> {
    let tx = db.transaction().await?;
    let columns = schedule_columns();
    let rows = tx
        .query(
            &format!(
                "SELECT {columns}, k.allowed_accounts FROM schedules s JOIN api_keys k ON k.id = s.api_key_id
                 WHERE s.paused_at IS NULL AND s.next_due_at <= $1
                   AND k.revoked_at IS NULL AND k.deactivated_at IS NULL
                 ORDER BY s.next_due_at LIMIT $2
                 FOR NO KEY UPDATE OF s SKIP LOCKED"
            ),
            &[&now, &settings.batch],
        )
        .await?;
    let (mut planned, mut skipped) = (0, 0);
    for row in &rows {
        let schedule = Schedule::from_row(row)?;
        let allowed: Option<Vec<String>> = decode(row, "allowed_accounts")?;
        let horizon = now - Duration::from_secs(u64::from(settings.backfill_days) * 86_400);
        let mut periods: Vec<Period> = Vec::new();
        let mut period = schedule.next_period;
        while schedule.due_at(&period) <= now && periods.len() < MAX_PERIODS_PER_PASS {
            // Measured from when the period was due, so a long delay never skips a period the
            // scheduler is on time for.
            if schedule.due_at(&period) >= horizon {
                periods.push(period);
            } else {
                skipped += 1;
            }
            period = schedule.frequency.next(&period);
        }
        let accounts = if periods.is_empty() {
            Vec::new()
        } else {
            match accounts(&schedule, allowed.as_deref(), directory).await {
                Ok(accounts) => accounts,
                Err(reason) => {
                    // Its cursor stays (nothing is lost); it is looked at again a little later,
                    // so a schedule that keeps failing does not hold up the others.
                    warn!(schedule.id = %schedule.id, reason, "scheduler: the schedule's accounts cannot be listed");
                    tx.execute(
                        "UPDATE schedules SET next_due_at = $2 WHERE id = $1",
                        &[&schedule.id, &(now + LOOK_AGAIN)],
                    )
                    .await?;
                    continue;
                }
            }
        };
        let firsts: Vec<Date> = periods.iter().map(|p| p.first).collect();
        let lasts: Vec<Date> = periods.iter().map(|p| p.last).collect();
        let dues: Vec<OffsetDateTime> = periods.iter().map(|p| schedule.due_at(p)).collect();
        planned += tx
            .execute(
                "INSERT INTO schedule_runs (schedule_id, account_id, period_from, period_to, due_at, attention_at)
                 SELECT $1, a.account, p.period_from, p.period_to, p.due_at, p.due_at
                 FROM unnest($2::text[]) AS a(account)
                 CROSS JOIN unnest($3::date[], $4::date[], $5::timestamptz[]) AS p(period_from, period_to, due_at)
                 ON CONFLICT DO NOTHING",
                &[&schedule.id, &accounts, &firsts, &lasts, &dues],
            )
            .await?;
        tx.execute(
            "UPDATE schedules SET next_period = $2, next_due_at = $3 WHERE id = $1",
            &[&schedule.id, &period.first, &schedule.due_at(&period)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((rows.len(), planned, skipped))
}

/// The accounts a schedule asks for now: its list, or every account it may read; either way
/// only those its key may still read.
async fn accounts(
    schedule: &Schedule,
    allowed: Option<&[String]>,
    directory: &impl AccountDirectory,
) -> Result<Vec<String>, String> {
    let mut accounts = match (&schedule.accounts, allowed) {
        (Some(list), _) => list.clone(),
        (None, Some(allowed)) => allowed.to_vec(),
        (None, None) => {
            let listed = directory.accounts(&schedule.table_name).await?;
            if listed.is_empty() {
                // An accounts table caught empty (being reloaded, say) is not "no accounts":
                // the periods wait rather than pass with no statement.
                return Err("the accounts table lists no account".into());
            }
            listed
        }
    };
    if let Some(allowed) = allowed {
        accounts.retain(|a| allowed.contains(a));
    }
    accounts.sort();
    accounts.dedup();
    Ok(accounts)
}

/// A run the scheduler attends to, with what it needs to ask for its export.
struct Attention {
    schedule: Schedule,
    run: ScheduledRun,
    period_to: Date,
    retries: i32,
    status: Option<ExportStatus>,
    job_id: Option<i64>,
    finished_at: Option<OffsetDateTime>,
}

/// Attends to one batch of runs whose attention time has come, oldest first; returns how many.
async fn attend_batch(
    db: &mut Object,
    now: OffsetDateTime,
    settings: &Settings,
    report: &mut Report,
) -> Result<usize, DbError> {
    let columns = schedule_columns();
    let rows = db
        .query(
            &format!(
                "SELECT {columns}, r.account_id, r.period_from, r.period_to, r.export_id, r.retries,
                        e.status, e.job_id, e.completed_at AS finished_at
                 FROM schedule_runs r
                 JOIN schedules s ON s.id = r.schedule_id
                 JOIN api_keys k ON k.id = s.api_key_id
                 LEFT JOIN exports e ON e.id = r.export_id
                 WHERE r.attention_at <= $1 AND s.paused_at IS NULL
                   AND k.revoked_at IS NULL AND k.deactivated_at IS NULL
                 ORDER BY r.attention_at LIMIT $2"
            ),
            &[&now, &settings.batch],
        )
        .await?;
    for row in &rows {
        let attention = attention(row)?;
        let run = attention.run.clone();
        if let Err(e) = attend(db, now, settings, attention, report).await {
            // One run's trouble does not hold up the others: it is looked at again later.
            warn!(schedule.id = %run.schedule_id, error = %e, "scheduler: attending to a run failed");
            set_attention(db, &run, Some(now + LOOK_AGAIN)).await?;
        }
    }
    Ok(rows.len())
}

fn attention(row: &Row) -> Result<Attention, DbError> {
    let schedule = Schedule::from_row(row)?;
    Ok(Attention {
        run: ScheduledRun {
            schedule_id: schedule.id,
            account_id: decode(row, "account_id")?,
            period_from: decode(row, "period_from")?,
            export_id: decode(row, "export_id")?,
        },
        schedule,
        period_to: decode(row, "period_to")?,
        retries: decode(row, "retries")?,
        status: decode(row, "status")?,
        job_id: decode(row, "job_id")?,
        finished_at: decode(row, "finished_at")?,
    })
}

async fn attend(
    db: &mut Object,
    now: OffsetDateTime,
    settings: &Settings,
    a: Attention,
    report: &mut Report,
) -> Result<(), DbError> {
    match (a.run.export_id, a.status) {
        (None, _) => match ask(db, &a.schedule, &a.run, a.period_to, settings).await? {
            Asked::Linked => report.asked += 1,
            Asked::Deferred => {
                report.deferred += 1;
                set_attention(db, &a.run, Some(now + settings.defer)).await?;
            }
            Asked::Invalid => set_attention(db, &a.run, None).await?,
        },
        (Some(_), Some(ExportStatus::Failed)) if a.retries < settings.retry_limit => {
            let wait = settings.retry_after.saturating_mul(1 << a.retries.clamp(0, 16));
            let retry_at = a.finished_at.unwrap_or(now) + wait;
            if retry_at > now {
                set_attention(db, &a.run, Some(retry_at)).await?;
                return Ok(());
            }
            match retry(db, &a.run, a.job_id, RetryBy::Policy).await? {
                Some(_) => report.retried += 1,
                None => set_attention(db, &a.run, None).await?,
            }
        }
        // Done, cancelled, out of retries, or still under way: nothing until it fails.
        (Some(_), _) => set_attention(db, &a.run, None).await?,
    }
    Ok(())
}

/// How asking for a run's export went.
pub enum Asked {
    /// The run is linked to its export (new, or an identical one already live).
    Linked,
    /// The key's cap on outstanding exports is reached: asked again later.
    Deferred,
    /// The schedule no longer makes a valid request (an account id the service refuses): the
    /// run waits for its owner.
    Invalid,
}

/// Asks for the run's export as the schedule's key, linking it to the run.
pub async fn ask(
    db: &mut Object,
    schedule: &Schedule,
    run: &ScheduledRun,
    period_to: Date,
    settings: &Settings,
) -> Result<Asked, DbError> {
    let period = Period { first: run.period_from, last: period_to };
    let Ok(request) = schedule.request(&run.account_id, &period) else { return Ok(Asked::Invalid) };
    let by = RequestedBy {
        api_key_id: schedule.api_key_id,
        max_outstanding: settings.max_outstanding,
        schedule: Some(run.clone()),
    };
    match exports::request(db, &request, Some(by), false, settings.max_attempts, settings.reuse).await {
        Ok(_) | Err(RequestError::RunTaken) => Ok(Asked::Linked),
        Err(RequestError::TooManyOutstanding { .. }) => Ok(Asked::Deferred),
        Err(RequestError::Db(e)) => Err(e),
    }
}

/// Who retries a FAILED run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBy {
    /// The schedule's retry policy: the retry counts against `SCHEDULE_RETRY_LIMIT`.
    Policy,
    /// The schedule's owner (a re-run through the API): not counted, so the policy's retries
    /// are still there if it fails again.
    Owner,
}

/// Revives the run's FAILED export (the same export, its job queued again), counting the retry
/// when the policy makes it; when an identical export has taken its place meanwhile, links the
/// run to that one. `None` when it cannot be retried (its job pruned, no longer failed, or the
/// run linked to another export meanwhile).
pub async fn retry(
    db: &mut Object,
    run: &ScheduledRun,
    job_id: Option<i64>,
    by: RetryBy,
) -> Result<Option<Uuid>, DbError> {
    let Some(job_id) = job_id else { return Ok(None) };
    // The export first, then the run: the order in which a failing export reaches its runs (the
    // V18 trigger), so the two never deadlock.
    let mut tx = db.transaction().await?;
    match dashboard::retry_job(&mut tx, job_id).await? {
        Retried::Now => {
            let counted = tx
                .execute(
                    "UPDATE schedule_runs SET retries = retries + $5, attention_at = NULL
                     WHERE schedule_id = $1 AND account_id = $2 AND period_from = $3 AND export_id = $4",
                    &[
                        &run.schedule_id,
                        &run.account_id,
                        &run.period_from,
                        &run.export_id,
                        &i32::from(by == RetryBy::Policy),
                    ],
                )
                .await?;
            if counted == 0 {
                return Ok(None); // relinked meanwhile: rolled back
            }
            tx.commit().await?;
            Ok(run.export_id)
        }
        Retried::NotRetryable => Ok(None),
        // An identical export holds the slot now: the run lets go of its failed one and is asked
        // for again, which attaches it to that export as a request would (its requester row,
        // its webhook).
        Retried::Superseded => {
            drop(tx);
            if let Some(failed) = run.export_id {
                store::unlink(&*db, run, failed).await?;
            }
            Ok(None)
        }
    }
}

async fn set_attention(db: &impl Sql, run: &ScheduledRun, at: Option<OffsetDateTime>) -> Result<(), DbError> {
    db.execute(
        "UPDATE schedule_runs SET attention_at = $4
         WHERE schedule_id = $1 AND account_id = $2 AND period_from = $3",
        &[&run.schedule_id, &run.account_id, &run.period_from, &at],
    )
    .await?;
    Ok(())
}
