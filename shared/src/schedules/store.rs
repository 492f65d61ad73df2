//! Schedules as stored (tables `schedules` and `schedule_runs`, V18): all their SQL but the
//! scheduler's own (in [`super::scheduler`]).

use time::{Date, OffsetDateTime};
use tokio_postgres::Row;
use uuid::Uuid;

use super::calendar::{Frequency, Period, due_at};
use crate::{
    db::{DbError, Sql, decode},
    exports::ExportStatus,
    failure::FailureCode,
    statement::ExportFormat,
    time_zones::StatementZone,
};

/// A key's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its id.
    pub id: Uuid,
    /// The key it asks for exports as.
    pub api_key_id: Uuid,
    /// A name its owner gives it (may be empty).
    pub name: String,
    /// The accounts, or `None` for every account the key may read.
    pub accounts: Option<Vec<String>>,
    /// The configured table its statements are read from.
    pub table_name: String,
    /// The statements' format.
    pub format: ExportFormat,
    /// How often, and on which day periods start.
    pub frequency: Frequency,
    /// The statement time zone: the periods' days, and when they close.
    pub time_zone: StatementZone,
    /// How long after local midnight at a period's end its statement is asked for.
    pub delay_minutes: u32,
    /// The first period is the one holding this day.
    pub starts_on: Date,
    /// The first period not yet planned, and when it is due.
    pub next_period: Period,
    /// When `next_period` is due.
    pub next_due_at: OffsetDateTime,
    /// Since when it is paused (`None`: active).
    pub paused_at: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    pub updated_at: OffsetDateTime,
}

/// The columns [`Schedule::from_row`] reads.
pub(crate) const COLUMNS: &str = "id, api_key_id, name, accounts, table_name, format, frequency, weekday, \
    day_of_month, time_zone, delay_minutes, starts_on, next_period, next_due_at, paused_at, created_at, updated_at";

impl Schedule {
    pub(crate) fn from_row(row: &Row) -> Result<Self, DbError> {
        let stored = |what: &str, e: &dyn std::fmt::Display| DbError::Stored(format!("schedule {what}: {e}"));
        let day: Option<i16> = decode(row, "day_of_month")?;
        let frequency = Frequency::parse(
            decode(row, "frequency")?,
            decode(row, "weekday")?,
            day.map(|d| d.clamp(0, 255) as u8),
        )
        .map_err(|e| stored("frequency", &e))?;
        let format: &str = decode(row, "format")?;
        let time_zone: &str = decode(row, "time_zone")?;
        let delay: i32 = decode(row, "delay_minutes")?;
        Ok(Self {
            id: decode(row, "id")?,
            api_key_id: decode(row, "api_key_id")?,
            name: decode(row, "name")?,
            accounts: decode(row, "accounts")?,
            table_name: decode(row, "table_name")?,
            format: ExportFormat::parse(format).map_err(|e| stored("format", &e))?,
            next_period: frequency.period_containing(decode(row, "next_period")?),
            frequency,
            time_zone: StatementZone::parse(time_zone).map_err(|e| stored("time zone", &e))?,
            delay_minutes: delay.max(0) as u32,
            starts_on: decode(row, "starts_on")?,
            next_due_at: decode(row, "next_due_at")?,
            paused_at: decode(row, "paused_at")?,
            created_at: decode(row, "created_at")?,
            updated_at: decode(row, "updated_at")?,
        })
    }

    /// When a period of this schedule is due.
    pub fn due_at(&self, period: &Period) -> OffsetDateTime {
        timestamp(due_at(&self.time_zone, period, self.delay_minutes))
    }
}

/// A jiff instant as the `time` one Postgres reads and writes.
pub(crate) fn timestamp(at: jiff::Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(at.as_nanosecond()).expect("instants within time's range")
}

/// What a new schedule asks for.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// The key it asks for exports as.
    pub api_key_id: Uuid,
    /// A name its owner gives it (may be empty).
    pub name: String,
    /// The accounts, or `None` for every account the key may read.
    pub accounts: Option<Vec<String>>,
    /// The configured table its statements are read from.
    pub table_name: String,
    /// The statements' format.
    pub format: ExportFormat,
    /// How often, and on which day periods start.
    pub frequency: Frequency,
    /// The statement time zone: the periods' days, and when they close.
    pub time_zone: StatementZone,
    /// How long after local midnight at a period's end its statement is asked for.
    pub delay_minutes: u32,
    /// The first period is the one holding this day.
    pub starts_on: Date,
}

/// Creates a schedule; its first period is the one holding `starts_on` (in the past, it is
/// backfilled as far as the scheduler's horizon allows).
pub async fn create(db: &impl Sql, new: &NewSchedule) -> Result<Schedule, DbError> {
    let first = new.frequency.period_containing(new.starts_on);
    let due = timestamp(due_at(&new.time_zone, &first, new.delay_minutes));
    let weekday = new.frequency.weekday();
    let day = new.frequency.day_of_month().map(i16::from);
    let row = db
        .query_one(
            &format!(
                "INSERT INTO schedules (id, api_key_id, name, accounts, table_name, format, frequency, weekday,
                                        day_of_month, time_zone, delay_minutes, starts_on, next_period, next_due_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::new_v4(),
                &new.api_key_id,
                &new.name,
                &new.accounts,
                &new.table_name,
                &new.format.as_str(),
                &new.frequency.kind(),
                &weekday,
                &day,
                &new.time_zone.name(),
                &(new.delay_minutes as i32),
                &new.starts_on,
                &first.first,
                &due,
            ],
        )
        .await?;
    Schedule::from_row(&row)
}

/// One schedule of `key` (`None`: no such schedule, or another key's).
pub async fn get(db: &impl Sql, key: Uuid, id: Uuid) -> Result<Option<Schedule>, DbError> {
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM schedules WHERE id = $1 AND api_key_id = $2"),
            &[&id, &key],
        )
        .await?;
    row.as_ref().map(Schedule::from_row).transpose()
}

/// One schedule, whoever owns it (the dashboard).
pub async fn get_any(db: &impl Sql, id: Uuid) -> Result<Option<Schedule>, DbError> {
    let row = db.query_opt(&format!("SELECT {COLUMNS} FROM schedules WHERE id = $1"), &[&id]).await?;
    row.as_ref().map(Schedule::from_row).transpose()
}

/// Schedules oldest first, of one key or (`None`) all, after `after` (a schedule id, the
/// previous page's last), at most `limit`.
pub async fn list(
    db: &impl Sql,
    key: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Schedule>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM schedules
                 WHERE ($1::uuid IS NULL OR api_key_id = $1)
                   AND ($2::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM schedules WHERE id = $2))
                 ORDER BY created_at, id LIMIT $3"
            ),
            &[&key, &after, &limit],
        )
        .await?;
    rows.iter().map(Schedule::from_row).collect()
}

/// What a change to a schedule sets (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// A new name.
    pub name: Option<String>,
    /// `Some(None)`: every account the key may read.
    pub accounts: Option<Option<Vec<String>>>,
    /// A new format (periods already asked for keep theirs).
    pub format: Option<ExportFormat>,
    /// A new delay.
    pub delay_minutes: Option<u32>,
    /// Pause (`true`) or resume (`false`).
    pub paused: Option<bool>,
}

/// Changes one schedule of `key`; `None` when it has no such schedule. A new delay moves the
/// next period's due time; periods already planned keep theirs. Resuming plans the periods
/// that came due while paused, as far as the backfill horizon.
pub async fn update(
    db: &impl Sql,
    key: Uuid,
    id: Uuid,
    changes: &Changes,
) -> Result<Option<Schedule>, DbError> {
    let Some(schedule) = get(db, key, id).await? else { return Ok(None) };
    let delay = changes.delay_minutes.unwrap_or(schedule.delay_minutes);
    let next_due = timestamp(due_at(&schedule.time_zone, &schedule.next_period, delay));
    let (set_accounts, accounts) = match &changes.accounts {
        Some(accounts) => (true, accounts.clone()),
        None => (false, None),
    };
    let row = db
        .query_opt(
            &format!(
                "UPDATE schedules SET
                     name = COALESCE($3, name),
                     accounts = CASE WHEN $4 THEN $5 ELSE accounts END,
                     format = COALESCE($6, format),
                     delay_minutes = $7,
                     next_due_at = $8,
                     paused_at = CASE WHEN $9::boolean IS NULL THEN paused_at
                                      WHEN $9 THEN COALESCE(paused_at, now()) END,
                     updated_at = now()
                 WHERE id = $1 AND api_key_id = $2
                 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &key,
                &changes.name,
                &set_accounts,
                &accounts,
                &changes.format.map(|f| f.as_str()),
                &(delay as i32),
                &next_due,
                &changes.paused,
            ],
        )
        .await?;
    row.as_ref().map(Schedule::from_row).transpose()
}

/// Deletes one schedule of `key` with its runs (their exports stay). Whether it existed.
pub async fn delete(db: &impl Sql, key: Uuid, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute("DELETE FROM schedules WHERE id = $1 AND api_key_id = $2", &[&id, &key]).await? == 1)
}

/// One statement a schedule asked for (or will ask for), with its export's state.
#[derive(Debug, Clone)]
pub struct Run {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The account.
    pub account_id: String,
    /// The period.
    pub period: Period,
    /// When it came (or comes) due.
    pub due_at: OffsetDateTime,
    /// `None` until asked for (or the export row was pruned).
    pub export_id: Option<Uuid>,
    /// Its export's state.
    pub status: Option<ExportStatus>,
    /// Why its export failed, or was cancelled.
    pub error_code: Option<FailureCode>,
    /// Retries the schedule made of its failed export.
    pub retries: i32,
    /// When the scheduler looks at it next (asks for its export, or retries it).
    pub attention_at: Option<OffsetDateTime>,
}

const RUN_COLUMNS: &str = "r.schedule_id, r.account_id, r.period_from, r.period_to, r.due_at, r.export_id, \
    e.status, e.error_code, r.retries, r.attention_at";

impl Run {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let code: Option<&str> = decode(row, "error_code")?;
        Ok(Self {
            schedule_id: decode(row, "schedule_id")?,
            account_id: decode(row, "account_id")?,
            period: Period { first: decode(row, "period_from")?, last: decode(row, "period_to")? },
            due_at: decode(row, "due_at")?,
            export_id: decode(row, "export_id")?,
            status: decode(row, "status")?,
            error_code: code.map(FailureCode::from_stored),
            retries: decode(row, "retries")?,
            attention_at: decode(row, "attention_at")?,
        })
    }
}

/// A schedule's latest runs, newest period first, at most `limit`.
pub async fn runs(db: &impl Sql, schedule: Uuid, limit: i64) -> Result<Vec<Run>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {RUN_COLUMNS} FROM schedule_runs r LEFT JOIN exports e ON e.id = r.export_id
                 WHERE r.schedule_id = $1 ORDER BY r.period_from DESC, r.account_id LIMIT $2"
            ),
            &[&schedule, &limit],
        )
        .await?;
    rows.iter().map(Run::from_row).collect()
}

/// One run of a schedule.
pub async fn run(
    db: &impl Sql,
    schedule: Uuid,
    account: &str,
    period_from: Date,
) -> Result<Option<Run>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM schedule_runs r LEFT JOIN exports e ON e.id = r.export_id
                 WHERE r.schedule_id = $1 AND r.account_id = $2 AND r.period_from = $3"
            ),
            &[&schedule, &account, &period_from],
        )
        .await?;
    row.as_ref().map(Run::from_row).transpose()
}

/// A run by its key, and the export it is linked to when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The account.
    pub account_id: String,
    /// The period's first day.
    pub period_from: Date,
    /// Its export, once asked for.
    pub export_id: Option<Uuid>,
}

/// Links `run` to `export` (asked for by the schedule's key, recorded as its requester) and
/// marks that key's requester row with the schedule. `false` when the run is linked to another
/// export already: the caller rolls back whatever it created for it, so a run never has two.
pub(crate) async fn link(
    db: &impl Sql,
    run: &ScheduledRun,
    key: Uuid,
    export: Uuid,
) -> Result<bool, DbError> {
    let linked = db
        .execute(
            "UPDATE schedule_runs SET export_id = $4, attention_at = NULL
             WHERE schedule_id = $1 AND account_id = $2 AND period_from = $3
               AND (export_id IS NULL OR export_id = $4)",
            &[&run.schedule_id, &run.account_id, &run.period_from, &export],
        )
        .await?;
    if linked == 0 {
        return Ok(false);
    }
    db.execute(
        "UPDATE export_requesters SET schedule_id = $3
         WHERE export_id = $1 AND api_key_id = $2 AND schedule_id IS DISTINCT FROM $3",
        &[&export, &key, &run.schedule_id],
    )
    .await?;
    Ok(true)
}
