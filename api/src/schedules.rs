//! `/api/schedules`: a key's recurring statements (create, list, read, change, pause and
//! resume, delete) and the re-run of one of their periods.
//!
//! A schedule asks for its exports as its key, through the same request path as
//! `POST /api/export` (deduplication, the key's cap, its webhooks); the maintenance leader's
//! scheduler (`shared::schedules::scheduler`) does the asking. A key sees only its own
//! schedules (anyone else's is 404). A schedule is checked as an export request is: the same
//! table, format, time zone and account rules, with the same problems.

use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::{Example, ToJSON},
};
use shared::{
    api_keys::ApiKey,
    audit::Outcome,
    exports::{self as shared_exports, ExportStatus as Status},
    failure::FailureCode as ErrorCode,
    schedules::{
        calendar::{self, Frequency},
        scheduler::{self, RetryBy},
        store::{self, ScheduledRun},
    },
    statement::{AccountId, DateRange, ExportFormat, FieldError},
};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::{
    ApiTags, AppState,
    auth::BearerKey,
    calendar_date::CalendarDate,
    client_addr::ClientAddr,
    error::{ApiError, ErrorStatuses, Errors},
    exports::{self, ExportDetails, Format},
    input::{FromJsonFields, JsonFields, StrictJson},
};

/// How often a schedule makes a statement: `daily` (one day), `weekly` (seven days from
/// `weekday`), `monthly` (from `day_of_month` to the day before it next month; a day the month
/// lacks is its last day) or `quarterly` (as monthly, starting in January, April, July and
/// October).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub(crate) enum ScheduleFrequency {
    Daily,
    Weekly,
    Monthly,
    Quarterly,
}

/// The day a weekly schedule's periods start on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub(crate) enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

const FREQUENCIES: [ScheduleFrequency; 4] = [
    ScheduleFrequency::Daily,
    ScheduleFrequency::Weekly,
    ScheduleFrequency::Monthly,
    ScheduleFrequency::Quarterly,
];

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// The API's name of an enum value (`daily`, `monday`).
fn name_of<T: ToJSON>(value: &T) -> String {
    value.to_json().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The value of `all` a request names, or a problem listing their names.
fn one_of<T: ToJSON + Copy>(field: &'static str, all: &[T], raw: &str) -> Result<T, FieldError> {
    all.iter().find(|v| name_of(*v) == raw).copied().ok_or_else(|| {
        let names: Vec<String> = all.iter().map(name_of).collect();
        FieldError::new(field, format!("must be one of: {}", names.join(", ")))
    })
}

/// Most accounts a schedule lists.
const MAX_ACCOUNTS: usize = 1000;
/// Longest name, in characters (the `schedules` table's check).
const MAX_NAME_CHARS: usize = 200;
/// The delay when a request names none: 02:00 the day after a period ends, local time.
const DEFAULT_DELAY_MINUTES: u32 = 120;
/// Runs `GET /api/schedules/{schedule_id}` shows.
const RECENT_RUNS: i64 = 20;

/// A schedule to create. Every field must have exactly its JSON type (leave an optional field
/// out rather than send `null`); unknown fields are refused. Give `accounts` or
/// `all_accounts: true`, not both.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub(crate) struct ScheduleRequest {
    /// What the schedule is for (at most 200 characters; empty when absent).
    #[oai(validator(max_length = 200))]
    pub name: Option<String>,
    /// The accounts whose statements to make, 1 to 1000 (each 1-64 of `A-Z a-z 0-9 . _ -`,
    /// starting with a letter or digit). A key restricted to accounts may list only its own.
    #[oai(validator(
        min_items = 1,
        max_items = 1000,
        unique_items,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    ))]
    pub accounts: Option<Vec<String>>,
    /// `true`: every account the key may read, as they are when each period comes due (a key
    /// restricted to accounts: its accounts; any other key: the accounts table of the table's
    /// statement mapping, which the table must have).
    pub all_accounts: Option<bool>,
    /// A configured exportable table, e.g. `bank_transactions`.
    pub table_name: String,
    // No doc comment (see `ExportAccepted::status`): `Format` says that `csv` is the default.
    pub format: Option<Format>,
    // See `format`.
    pub frequency: ScheduleFrequency,
    // See `format`: weekly schedules only, and required for them.
    pub weekday: Option<Weekday>,
    /// Monthly and quarterly schedules only: the day of the month periods start on, 1 to 31 (1
    /// when absent); a day the month lacks means its last day.
    #[oai(validator(minimum(value = "1"), maximum(value = "31")))]
    pub day_of_month: Option<i32>,
    /// The statement time zone, an IANA name such as `Europe/Berlin` (`STATEMENT_TIME_ZONE`,
    /// UTC by default, when absent): periods are days there, and close at midnight there.
    pub time_zone: Option<String>,
    /// How long after local midnight at a period's end its statement is asked for, 0 to 44640
    /// (31 days); 120 (02:00 local) when absent.
    #[oai(validator(minimum(value = "0"), maximum(value = "44640")))]
    pub delay_minutes: Option<i32>,
    /// The first period is the one holding this day (today in `time_zone` when absent; from
    /// 1900-01-01 to 2100-12-31). A day in the past makes the periods since then, as far back as
    /// the service's backfill horizon (`SCHEDULE_BACKFILL_DAYS`).
    pub starts_on: Option<CalendarDate>,
}

impl FromJsonFields for ScheduleRequest {
    fn from_fields(fields: &mut JsonFields) -> Option<Self> {
        let name = fields.optional_string("name");
        let accounts = account_list(fields);
        let all_accounts = fields.optional_bool("all_accounts");
        let table_name = fields.string("table_name");
        let format = fields.optional_parsed("format", |raw| ExportFormat::parse(raw).map(Format::from));
        let frequency = fields.parsed("frequency", |raw| one_of("frequency", &FREQUENCIES, raw));
        let weekday = fields.optional_parsed("weekday", |raw| one_of("weekday", &WEEKDAYS, raw));
        let day_of_month = fields.optional_integer("day_of_month");
        let time_zone = fields.optional_string("time_zone");
        let delay_minutes = fields.optional_integer("delay_minutes");
        let starts_on = fields.optional_string("starts_on");
        Some(Self {
            name: name?,
            accounts: accounts?,
            all_accounts: all_accounts?,
            table_name: table_name?,
            format: format?,
            frequency: frequency?,
            weekday: weekday?,
            day_of_month: day_of_month?.map(clamp_i32),
            time_zone: time_zone?,
            delay_minutes: delay_minutes?.map(clamp_i32),
            starts_on: starts_on?.map(CalendarDate),
        })
    }
}

impl Example for ScheduleRequest {
    fn example() -> Self {
        Self {
            name: Some("Month-end statements".into()),
            accounts: Some(vec!["ACC-1001".into(), "ACC-1002".into()]),
            all_accounts: None,
            table_name: "bank_transactions".into(),
            format: Some(Format::Camt053),
            frequency: ScheduleFrequency::Monthly,
            weekday: None,
            day_of_month: Some(1),
            time_zone: Some("Europe/Berlin".into()),
            delay_minutes: Some(120),
            starts_on: Some(CalendarDate("2024-01-01".into())),
        }
    }
}

/// A change to a schedule: only the fields given change. Every field must have exactly its JSON
/// type; unknown fields are refused, and so are the fields fixed at creation (`table_name`,
/// `frequency`, `weekday`, `day_of_month`, `time_zone`, `starts_on`: `400` naming them; create
/// a new schedule instead).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub(crate) struct ScheduleChanges {
    /// A new name (at most 200 characters).
    #[oai(validator(max_length = 200))]
    pub name: Option<String>,
    /// New accounts, 1 to 1000, as at creation; periods already asked for keep theirs.
    #[oai(validator(
        min_items = 1,
        max_items = 1000,
        unique_items,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    ))]
    pub accounts: Option<Vec<String>>,
    /// `true`: every account the key may read from now on, as at creation.
    pub all_accounts: Option<bool>,
    // No doc comment (see `ExportAccepted::status`). Periods already asked for keep theirs.
    pub format: Option<Format>,
    /// A new delay, 0 to 44640 minutes: it moves the next period's due time.
    #[oai(validator(minimum(value = "0"), maximum(value = "44640")))]
    pub delay_minutes: Option<i32>,
    /// `true` pauses the schedule (no period is asked for while paused); `false` resumes it,
    /// and the periods that came due meanwhile are made, as far back as the backfill horizon.
    pub paused: Option<bool>,
}

/// What a change may not name, and why.
const FIXED: [&str; 6] = ["table_name", "frequency", "weekday", "day_of_month", "time_zone", "starts_on"];

impl FromJsonFields for ScheduleChanges {
    fn from_fields(fields: &mut JsonFields) -> Option<Self> {
        for name in FIXED {
            fields.refuse_present(
                name,
                "is fixed when a schedule is created; create a new schedule (and delete this one) to change it",
            );
        }
        let name = fields.optional_string("name");
        let accounts = account_list(fields);
        let all_accounts = fields.optional_bool("all_accounts");
        let format = fields.optional_parsed("format", |raw| ExportFormat::parse(raw).map(Format::from));
        let delay_minutes = fields.optional_integer("delay_minutes");
        let paused = fields.optional_bool("paused");
        Some(Self {
            name: name?,
            accounts: accounts?,
            all_accounts: all_accounts?,
            format: format?,
            delay_minutes: delay_minutes?.map(clamp_i32),
            paused: paused?,
        })
    }
}

impl Example for ScheduleChanges {
    fn example() -> Self {
        Self {
            name: None,
            accounts: None,
            all_accounts: None,
            format: None,
            delay_minutes: None,
            paused: Some(true),
        }
    }
}

/// A whole number as `i32`, saturating (the range checks then refuse it with their words).
fn clamp_i32(n: i64) -> i32 {
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `accounts`: each a valid account id.
fn account_list(fields: &mut JsonFields) -> Option<Option<Vec<String>>> {
    fields.optional_strings("accounts", |raw| {
        AccountId::parse(raw).map(|a| a.as_str().to_owned()).map_err(|e| {
            FieldError::new("accounts", format!("must each be a valid account id: {}", e.message))
        })
    })
}

/// Which accounts a request names: `Some(None)` for all, `Some(Some(list))` for a list, `None`
/// for neither. Checked for form only (whether the key may have them is [`allowed_accounts`]'s).
fn accounts_named(
    accounts: Option<Vec<String>>,
    all_accounts: Option<bool>,
) -> Result<Option<Option<Vec<String>>>, FieldError> {
    match (accounts, all_accounts) {
        (Some(_), Some(true)) => {
            Err(FieldError::new("all_accounts", "give either accounts or all_accounts: true, not both"))
        }
        (None, Some(false)) => {
            Err(FieldError::new("all_accounts", "may only be true; list the accounts in accounts instead"))
        }
        (None, Some(true)) => Ok(Some(None)),
        (None, None) => Ok(None),
        (Some(mut list), _) => {
            let count = list.len();
            list.sort();
            list.dedup();
            if list.is_empty() || list.len() > MAX_ACCOUNTS {
                return Err(FieldError::new("accounts", "must list 1 to 1000 accounts"));
            }
            if list.len() < count {
                return Err(FieldError::new("accounts", "must list each account once"));
            }
            Ok(Some(Some(list)))
        }
    }
}

/// Whether `key` may have a schedule of these accounts on `table`: a restricted key only of
/// its own accounts (`403`, as an export of another account is); an unrestricted key's
/// every-account schedule needs the table's accounts table (`422`).
fn check_accounts_allowed(
    state: &AppState,
    key: &ApiKey,
    client: ClientAddr,
    action: &'static str,
    table: &str,
    accounts: Option<&[String]>,
) -> Result<(), ApiError> {
    match accounts {
        Some(list) => {
            let foreign: Vec<&String> = list.iter().filter(|a| !key.may_access(a)).collect();
            if foreign.is_empty() {
                return Ok(());
            }
            let details = serde_json::json!({ "accounts": foreign });
            state.api_audit.record(key, client, action, None, Outcome::Denied, details);
            Err(ApiError::Forbidden(exports::FOREIGN_ACCOUNT))
        }
        None if key.allowed_accounts.is_some() => Ok(()),
        None => {
            let listed = state.tables.get(table).and_then(|spec| spec.statement.as_ref()?.accounts.as_ref());
            if listed.is_some() {
                return Ok(());
            }
            Err(ApiError::Unprocessable(vec![FieldError::new(
                "all_accounts",
                format!(
                    "table {table} has no accounts table in its statement mapping (statement.accounts), \
                     so its accounts cannot be listed; list the accounts in accounts instead"
                ),
            )]))
        }
    }
}

/// A statement period: its first and last day (inclusive) in the schedule's time zone.
#[derive(Debug, Object)]
pub(crate) struct SchedulePeriod {
    /// First day, inclusive.
    pub from: CalendarDate,
    /// Last day, inclusive.
    pub to: CalendarDate,
}

/// One statement a schedule asked for (or is about to): an account's period and its export.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub(crate) struct ScheduleRun {
    /// The account.
    pub account_id: String,
    /// The period's first day.
    pub period_from: CalendarDate,
    /// The period's last day.
    pub period_to: CalendarDate,
    /// When the period came (or comes) due.
    pub due_at: OffsetDateTime,
    /// Its export (`GET /api/export/{reference_id}`); absent until asked for (the key's cap on
    /// outstanding exports defers it) or once the export is deleted.
    pub export_id: Option<Uuid>,
    // No doc comment (see `ExportAccepted::status`): the export's state.
    pub status: Option<Status>,
    // See `status`: why the export failed or was cancelled.
    pub error_code: Option<ErrorCode>,
    /// Retries of its failed export the schedule made (`SCHEDULE_RETRY_LIMIT` at most).
    pub retries: i32,
    /// When the scheduler looks at it next: to ask for its export, or to retry it.
    pub next_attention_at: Option<OffsetDateTime>,
}

impl From<store::Run> for ScheduleRun {
    fn from(run: store::Run) -> Self {
        Self {
            account_id: run.account_id,
            period_from: run.period.first.into(),
            period_to: run.period.last.into(),
            due_at: run.due_at,
            export_id: run.export_id,
            status: run.status,
            error_code: run.error_code,
            retries: run.retries,
            next_attention_at: run.attention_at,
        }
    }
}

/// A recurring statement: for each account, one export per period, asked for `delay_minutes`
/// after the period closes in `time_zone`. Fields without a value are absent.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub(crate) struct Schedule {
    /// The schedule's id.
    pub id: Uuid,
    /// What it is for (may be empty).
    pub name: String,
    /// The accounts it makes statements of; absent when `all_accounts` is true.
    pub accounts: Option<Vec<String>>,
    /// Every account the key may read, as they are when each period comes due.
    pub all_accounts: bool,
    /// The table statements are read from.
    pub table_name: String,
    // No doc comment (see `ExportAccepted::status`).
    pub format: Format,
    // See `format`.
    pub frequency: ScheduleFrequency,
    // See `format`: weekly schedules only.
    pub weekday: Option<Weekday>,
    /// Monthly and quarterly schedules only: the day of the month periods start on (the
    /// month's last day where it has fewer).
    pub day_of_month: Option<i32>,
    /// The statement time zone (IANA name).
    pub time_zone: String,
    /// Minutes after local midnight at a period's end when its statement is asked for.
    pub delay_minutes: i32,
    /// The first period is the one holding this day.
    pub starts_on: CalendarDate,
    /// `true` while paused: no period is asked for.
    pub paused: bool,
    /// Since when it is paused.
    pub paused_at: Option<OffsetDateTime>,
    // No doc comment (see `ExportAccepted::status`): the first period not yet asked for.
    pub next_period: SchedulePeriod,
    /// When `next_period` comes due (when paused, when it would have).
    pub next_due_at: OffsetDateTime,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    pub updated_at: OffsetDateTime,
    /// Only in `GET /api/schedules/{schedule_id}`: its latest 20 runs, newest period first.
    pub recent_runs: Option<Vec<ScheduleRun>>,
}

impl From<store::Schedule> for Schedule {
    fn from(schedule: store::Schedule) -> Self {
        let frequency = schedule.frequency;
        Self {
            id: schedule.id,
            name: schedule.name,
            all_accounts: schedule.accounts.is_none(),
            accounts: schedule.accounts,
            table_name: schedule.table_name,
            format: schedule.format.into(),
            frequency: one_of("frequency", &FREQUENCIES, frequency.kind())
                .expect("every frequency is listed"),
            weekday: frequency
                .weekday()
                .map(|w| one_of("weekday", &WEEKDAYS, w).expect("every weekday is listed")),
            day_of_month: frequency.day_of_month().map(i32::from),
            time_zone: schedule.time_zone.name().to_owned(),
            delay_minutes: i32::try_from(schedule.delay_minutes).unwrap_or(i32::MAX),
            starts_on: schedule.starts_on.into(),
            paused: schedule.paused_at.is_some(),
            paused_at: schedule.paused_at,
            next_period: SchedulePeriod {
                from: schedule.next_period.first.into(),
                to: schedule.next_period.last.into(),
            },
            next_due_at: schedule.next_due_at,
            created_at: schedule.created_at,
            updated_at: schedule.updated_at,
            recent_runs: None,
        }
    }
}

impl Example for Schedule {
    fn example() -> Self {
        Self {
            id: EXAMPLE_ID,
            name: "Month-end statements".into(),
            accounts: Some(vec!["ACC-1001".into(), "ACC-1002".into()]),
            all_accounts: false,
            table_name: "bank_transactions".into(),
            format: Format::Camt053,
            frequency: ScheduleFrequency::Monthly,
            weekday: None,
            day_of_month: Some(1),
            time_zone: "Europe/Berlin".into(),
            delay_minutes: 120,
            starts_on: CalendarDate("2024-01-01".into()),
            paused: false,
            paused_at: None,
            next_period: SchedulePeriod {
                from: CalendarDate("2024-02-01".into()),
                to: CalendarDate("2024-02-29".into()),
            },
            next_due_at: time::macros::datetime!(2024-03-01 01:00:00 UTC),
            created_at: EXAMPLE_TIME,
            updated_at: EXAMPLE_TIME,
            recent_runs: None,
        }
    }
}

/// A page of a key's schedules, oldest first.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub(crate) struct ScheduleList {
    /// The schedules on this page.
    pub items: Vec<Schedule>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

impl Example for ScheduleList {
    fn example() -> Self {
        Self { items: vec![Schedule::example()], next_cursor: None }
    }
}

/// One period of a schedule to make again.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub(crate) struct RerunRequest {
    /// The run's account.
    #[oai(validator(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub account_id: String,
    /// The run's period's first day (`period_from` of a run in `recent_runs`).
    pub period_from: CalendarDate,
}

impl FromJsonFields for RerunRequest {
    fn from_fields(fields: &mut JsonFields) -> Option<Self> {
        let account_id = fields.string("account_id");
        let period_from = fields.string("period_from");
        Some(Self { account_id: account_id?, period_from: CalendarDate(period_from?) })
    }
}

impl Example for RerunRequest {
    fn example() -> Self {
        Self { account_id: "ACC-1001".into(), period_from: CalendarDate("2024-01-01".into()) }
    }
}

const EXAMPLE_ID: Uuid = uuid::uuid!("6f1d2c3b-4a59-4e8f-9b7a-0c1d2e3f4a5b");
const EXAMPLE_TIME: OffsetDateTime = time::macros::datetime!(2024-01-01 09:00:00 UTC);

#[derive(Debug, ApiResponse)]
pub(crate) enum CreatedResponse {
    /// Created; its first period is `next_period`.
    #[oai(status = 201, content_type = "application/json")]
    Created(Json<Schedule>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum ScheduleResponse {
    /// The schedule.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Schedule>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum ListResponse {
    /// A page of the key's schedules.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<ScheduleList>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum DeletedResponse {
    /// Deleted, with its runs; the exports it asked for stay.
    #[oai(status = 204)]
    Deleted,
}

#[derive(Debug, ApiResponse)]
pub(crate) enum RerunResponse {
    /// The period's export, asked for again: the same export revived (it had failed) or a new
    /// one (the last was cancelled, expired or deleted, or none had been asked for yet).
    #[oai(status = 202, content_type = "application/json")]
    Accepted(Json<ExportDetails>),
}

/// `POST /api/schedules`: an invalid body (400), one sent too slowly, too large or not JSON, an
/// account the key may not export (403), a well-formed schedule the service cannot make (a
/// bank format on a table without statement mapping, every account of a table without an
/// accounts table, a time zone Postgres does not know: 422), an unknown key, a limit, Postgres
/// down.
pub(crate) enum CreateErrors {}
impl ErrorStatuses for CreateErrors {
    const STATUSES: &'static [u16] = &[400, 401, 403, 408, 413, 415, 422, 429, 500, 503];
}

/// `GET /api/schedules`: an invalid parameter or cursor, an unknown key, a limit, Postgres down.
pub(crate) enum ListErrors {}
impl ErrorStatuses for ListErrors {
    const STATUSES: &'static [u16] = &[400, 401, 429, 500, 503];
}

/// One schedule (read, delete): also a schedule that is not this key's (404).
pub(crate) enum ScheduleErrors {}
impl ErrorStatuses for ScheduleErrors {
    const STATUSES: &'static [u16] = &[400, 401, 404, 429, 500, 503];
}

/// `PATCH /api/schedules/{schedule_id}`: as a creation's, and a schedule that is not this
/// key's (404).
pub(crate) enum UpdateErrors {}
impl ErrorStatuses for UpdateErrors {
    const STATUSES: &'static [u16] = &[400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503];
}

/// A re-run: also a run that does not exist (404), one whose export is under way or completed
/// (409), an account the key may no longer export (403), and the key's cap on outstanding
/// exports (429).
pub(crate) enum RerunErrors {}
impl ErrorStatuses for RerunErrors {
    const STATUSES: &'static [u16] = &[400, 401, 403, 404, 408, 413, 415, 409, 429, 500, 503];
}

fn default_limit() -> i64 {
    50
}

const NO_SCHEDULE: &str = "No schedule with this id.";

pub(crate) struct SchedulesApi;

#[OpenApi(tag = "ApiTags::Schedules")]
impl SchedulesApi {
    /// Create a schedule
    ///
    /// A recurring statement: for each account, one export per period (`daily`, `weekly`,
    /// `monthly`, `quarterly` in `time_zone`), asked for as this key `delay_minutes` after the
    /// period closes, exactly once. Each is an ordinary export: deduplicated with identical
    /// requests, listed by `GET /api/exports`, announced to the key's webhook endpoints, and
    /// deferred (never refused) while the key is at its cap on outstanding exports. A failed
    /// export is retried by the schedule (`SCHEDULE_RETRY_LIMIT` times) and can be re-run with
    /// `POST /api/schedules/{schedule_id}/rerun`. The checks are an export request's: an
    /// unknown table or time zone name is `400`; an account the key may not export `403`; a
    /// bank format on a table without statement mapping, or a zone Postgres does not know,
    /// `422`.
    #[oai(path = "/api/schedules", method = "post", operation_id = "create_schedule")]
    async fn create(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        body: StrictJson<ScheduleRequest>,
    ) -> Result<CreatedResponse, Errors<CreateErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let new = validate(&state, &key, body.0)?;
        state.check_database_knows(&new.time_zone).await?;
        check_accounts_allowed(
            &state,
            &key,
            client,
            "schedule.create",
            &new.table_name,
            new.accounts.as_deref(),
        )?;
        let db = state.db().await?;
        let schedule = store::create(&db, &new).await?;
        tracing::info!(schedule.id = %schedule.id, api_key.id = %key.id, "schedule {} created", schedule.id);
        let details = serde_json::json!({
            "table_name": schedule.table_name,
            "frequency": schedule.frequency.kind(),
            "accounts": schedule.accounts.as_ref().map_or(0, Vec::len),
            "all_accounts": schedule.accounts.is_none(),
        });
        audit(&state, &key, client, "schedule.create", schedule.id, Outcome::Success, details);
        Ok(CreatedResponse::Created(Json(schedule.into())))
    }

    /// List schedules
    ///
    /// This key's schedules, oldest first, in pages: pass the previous page's `next_cursor` as
    /// `cursor`.
    #[oai(path = "/api/schedules", method = "get", operation_id = "list_schedules")]
    async fn list(
        &self,
        state: poem::web::Data<&AppState>,
        request: &poem::Request,
        auth: BearerKey,
        client: ClientAddr,
        /// Page size, 1 to 200 (default 50).
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<i64>,
        /// The previous page's `next_cursor`.
        cursor: Query<Option<Uuid>>,
    ) -> Result<ListResponse, Errors<ListErrors>> {
        let key = state.authenticate(&auth, client).await?;
        crate::input::check_query_names(request.uri().query(), &["limit", "cursor"])
            .map_err(ApiError::Validation)?;
        let db = state.db().await?;
        if let Some(cursor) = cursor.0
            && store::get(&db, key.id, cursor).await?.is_none()
        {
            return Err(
                ApiError::from(FieldError::new("cursor", "does not name a schedule of this key")).into()
            );
        }
        let page = store::list(&db, Some(key.id), cursor.0, limit.0 + 1).await?;
        let more = page.len() as i64 > limit.0;
        let items: Vec<Schedule> = page.into_iter().take(limit.0 as usize).map(Schedule::from).collect();
        let next_cursor = if more { items.last().map(|s| s.id) } else { None };
        Ok(ListResponse::Ok(Json(ScheduleList { items, next_cursor })))
    }

    /// Get a schedule
    ///
    /// With its latest 20 runs (`recent_runs`, newest period first) and their exports' states.
    /// A schedule of another key is `404`.
    #[oai(path = "/api/schedules/:schedule_id", method = "get", operation_id = "get_schedule")]
    async fn get(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The schedule's `id`.
        schedule_id: Path<Uuid>,
    ) -> Result<ScheduleResponse, Errors<ScheduleErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let db = state.db().await?;
        let schedule =
            store::get(&db, key.id, schedule_id.0).await?.ok_or(ApiError::NotFound(NO_SCHEDULE))?;
        let runs = store::runs(&db, schedule.id, RECENT_RUNS).await?;
        let recent_runs = Some(runs.into_iter().map(ScheduleRun::from).collect());
        Ok(ScheduleResponse::Ok(Json(Schedule { recent_runs, ..Schedule::from(schedule) })))
    }

    /// Change, pause or resume a schedule
    ///
    /// Changes only the fields given: its name, accounts, format and delay (periods already
    /// asked for keep theirs), and `paused`. Its table, frequency, time zone and start are fixed
    /// (`400` naming them). The account and format checks are a creation's.
    #[oai(path = "/api/schedules/:schedule_id", method = "patch", operation_id = "update_schedule")]
    async fn update(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The schedule's `id`.
        schedule_id: Path<Uuid>,
        body: StrictJson<ScheduleChanges>,
    ) -> Result<ScheduleResponse, Errors<UpdateErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let body = body.0;
        let accounts = accounts_named(body.accounts, body.all_accounts).map_err(ApiError::from)?;
        let name = body.name.map(check_name).transpose().map_err(ApiError::from)?;
        let delay_minutes = body.delay_minutes.map(check_delay).transpose().map_err(ApiError::from)?;
        let db = state.db().await?;
        let schedule =
            store::get(&db, key.id, schedule_id.0).await?.ok_or(ApiError::NotFound(NO_SCHEDULE))?;
        let format = body.format.map(ExportFormat::from);
        if let (Some(format), Some(spec)) = (format, state.tables.get(&schedule.table_name)) {
            exports::check_format_fits(spec, format)?;
        }
        if let Some(accounts) = &accounts {
            check_accounts_allowed(
                &state,
                &key,
                client,
                "schedule.update",
                &schedule.table_name,
                accounts.as_deref(),
            )?;
        }
        let changes = store::Changes { name, accounts, format, delay_minutes, paused: body.paused };
        let updated = store::update(&db, key.id, schedule.id, &changes)
            .await?
            .ok_or(ApiError::NotFound(NO_SCHEDULE))?;
        let details = serde_json::json!({
            "name": changes.name.is_some(),
            "accounts": changes.accounts.is_some(),
            "format": changes.format.map(|f| f.as_str()),
            "delay_minutes": changes.delay_minutes,
            "paused": changes.paused,
        });
        audit(&state, &key, client, "schedule.update", updated.id, Outcome::Success, details);
        Ok(ScheduleResponse::Ok(Json(updated.into())))
    }

    /// Delete a schedule
    ///
    /// With its runs. The exports it asked for stay (as exports of this key).
    #[oai(path = "/api/schedules/:schedule_id", method = "delete", operation_id = "delete_schedule")]
    async fn delete(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The schedule's `id`.
        schedule_id: Path<Uuid>,
    ) -> Result<DeletedResponse, Errors<ScheduleErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let mut db = state.db().await?;
        let deleted = store::delete(&mut db, key.id, schedule_id.0).await?;
        let outcome = if deleted { Outcome::Success } else { Outcome::NotFound };
        audit(&state, &key, client, "schedule.delete", schedule_id.0, outcome, serde_json::json!({}));
        if !deleted {
            return Err(ApiError::NotFound(NO_SCHEDULE).into());
        }
        Ok(DeletedResponse::Deleted)
    }

    /// Re-run one period of a schedule
    ///
    /// Asks for one account's period again, now: a FAILED export is revived (the same export,
    /// queued again); a CANCELLED, EXPIRED or deleted one is replaced by a new export; a period
    /// not asked for yet (deferred by the key's cap) is asked for. The answer is the export as
    /// `GET /api/export/{reference_id}` shows it. A period whose export is pending, processing
    /// or completed is `409`; a period the schedule has no run for (not yet due, or another
    /// account) `404`. The key's cap on outstanding exports applies (`429`).
    #[oai(
        path = "/api/schedules/:schedule_id/rerun",
        method = "post",
        operation_id = "rerun_schedule_period"
    )]
    async fn rerun(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The schedule's `id`.
        schedule_id: Path<Uuid>,
        body: StrictJson<RerunRequest>,
    ) -> Result<RerunResponse, Errors<RerunErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let (account, period_from) = rerun_target(&body.0)?;
        let mut db = state.db().await?;
        let schedule =
            store::get(&db, key.id, schedule_id.0).await?.ok_or(ApiError::NotFound(NO_SCHEDULE))?;
        let run = store::run(&db, schedule.id, account.as_str(), period_from)
            .await?
            .ok_or(ApiError::NotFound("This schedule has no run for this account and period."))?;
        if !key.may_access(&run.account_id) {
            return Err(ApiError::Forbidden(exports::FOREIGN_ACCOUNT).into());
        }
        let scheduled = ScheduledRun {
            schedule_id: schedule.id,
            account_id: run.account_id.clone(),
            period_from: run.period.first,
            export_id: run.export_id,
        };
        let (export_id, result) = match (run.export_id, run.status) {
            (_, Some(Status::Pending | Status::Processing)) => {
                return Err(ApiError::Conflict("This period's export is already under way.").into());
            }
            (_, Some(Status::Completed)) => {
                return Err(ApiError::Conflict("This period's export has already completed.").into());
            }
            (Some(failed), Some(Status::Failed)) => {
                let job_id = shared_exports::get(&db, failed).await?.and_then(|e| e.job_id);
                match scheduler::retry(&mut db, &scheduled, job_id, RetryBy::Owner).await? {
                    Some(revived) => (revived, "revived"),
                    None => {
                        // Not revived: its job is gone, an identical export took its place (the
                        // run was let go), or the schedule revived it meanwhile. Asked anew only
                        // in the first two cases.
                        let now =
                            store::run(&db, schedule.id, &run.account_id, run.period.first).await?.ok_or(
                                ApiError::NotFound("This schedule has no run for this account and period."),
                            )?;
                        match (now.export_id, now.status) {
                            (None, _) | (Some(_), Some(Status::Failed)) => {
                                (ask_anew(&state, &mut db, &schedule, &now, &key).await?, "created")
                            }
                            _ => {
                                return Err(
                                    ApiError::Conflict("This period's export is already under way.").into()
                                );
                            }
                        }
                    }
                }
            }
            (_, _) => (ask_anew(&state, &mut db, &schedule, &run, &key).await?, "created"),
        };
        let details = serde_json::json!({
            "account_id": run.account_id,
            "period_from": run.period.first.to_string(),
            "export_id": export_id,
            "result": result,
        });
        audit(&state, &key, client, "schedule.rerun", schedule.id, Outcome::Success, details);
        let export = shared_exports::get(&db, export_id)
            .await?
            .ok_or(ApiError::Conflict("The export was deleted meanwhile; re-run the period again."))?;
        Ok(RerunResponse::Accepted(Json(exports::details(&state, export, key.id).await?)))
    }
}

/// Asks for a run's export anew, as the schedule's key and linked to the run: after clearing
/// its link to the export it had (cancelled, expired, failed without a job), if any.
async fn ask_anew(
    state: &AppState,
    db: &mut deadpool_postgres::Object,
    schedule: &store::Schedule,
    run: &store::Run,
    key: &ApiKey,
) -> Result<Uuid, ApiError> {
    let mut scheduled = ScheduledRun {
        schedule_id: schedule.id,
        account_id: run.account_id.clone(),
        period_from: run.period.first,
        export_id: run.export_id,
    };
    if let Some(old) = run.export_id {
        if !store::unlink(&*db, &scheduled, old).await? {
            return Err(ApiError::Conflict(
                "The period was asked for again meanwhile; read the schedule again.",
            ));
        }
        scheduled.export_id = None;
    }
    let request = schedule.request(&run.account_id, &run.period).map_err(|e| {
        ApiError::Unprocessable(vec![FieldError::new(
            "account_id",
            format!("cannot be exported: {}", e.message),
        )])
    })?;
    let requested = exports::request_export(state, db, &request, key.id, false, Some(scheduled)).await?;
    Ok(requested.export.id)
}

/// The account and period a re-run names.
fn rerun_target(body: &RerunRequest) -> Result<(AccountId, Date), ApiError> {
    let mut errors = Vec::new();
    let account = AccountId::parse(&body.account_id).map_err(|e| errors.push(e)).ok();
    let period_from = calendar_day("period_from", &body.period_from).map_err(|e| errors.push(e)).ok();
    match (account, period_from) {
        (Some(account), Some(period_from)) => Ok((account, period_from)),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// A `YYYY-MM-DD` day from 1900-01-01 to 2100-12-31, read as an export's `date_from` is.
fn calendar_day(field: &'static str, raw: &CalendarDate) -> Result<Date, FieldError> {
    DateRange::parse(&raw.0, &raw.0, 1)
        .map(|range| range.from())
        .map_err(|e| FieldError::new(field, e.message))
}

fn check_name(name: String) -> Result<String, FieldError> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::new("name", "must be at most 200 characters"));
    }
    Ok(name)
}

fn check_delay(minutes: i32) -> Result<u32, FieldError> {
    calendar::check_delay_minutes(u32::try_from(minutes).unwrap_or(u32::MAX))
}

/// A creation request as a new schedule of `key`, every field checked (each problem named);
/// whether the key may have its accounts is [`check_accounts_allowed`]'s.
fn validate(state: &AppState, key: &ApiKey, body: ScheduleRequest) -> Result<store::NewSchedule, ApiError> {
    let mut errors = Vec::new();
    let name = check_name(body.name.unwrap_or_default()).map_err(|e| errors.push(e)).ok();
    let accounts = match accounts_named(body.accounts, body.all_accounts) {
        Ok(Some(accounts)) => Some(accounts),
        Ok(None) => {
            errors.push(FieldError::new(
                "accounts",
                "is required: list the accounts, or set all_accounts to true",
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    exports::check_table(state, "table_name", &body.table_name).unwrap_or_else(|e| errors.push(e));
    let day = body.day_of_month.map(|d| u8::try_from(d).unwrap_or(u8::MAX));
    let frequency =
        Frequency::parse(&name_of(&body.frequency), body.weekday.map(|w| name_of(&w)).as_deref(), day)
            .map_err(|e| errors.push(e))
            .ok();
    let time_zone = exports::time_zone(state, body.time_zone.as_deref()).map_err(|e| errors.push(e)).ok();
    let delay_minutes = check_delay(body.delay_minutes.unwrap_or(DEFAULT_DELAY_MINUTES as i32))
        .map_err(|e| errors.push(e))
        .ok();
    let starts_on = body
        .starts_on
        .as_ref()
        .map(|raw| calendar_day("starts_on", raw))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok();
    let (Some(name), Some(accounts), Some(frequency), Some(time_zone), Some(delay_minutes), Some(starts_on)) =
        (name, accounts, frequency, time_zone, delay_minutes, starts_on)
    else {
        return Err(ApiError::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Today where the statements' days are.
    let starts_on = starts_on.unwrap_or_else(|| time_zone.offset_date_time(OffsetDateTime::now_utc()).date());
    let format = body.format.map(ExportFormat::from).unwrap_or_default();
    if let Some(spec) = state.tables.get(&body.table_name) {
        exports::check_format_fits(spec, format)?;
    }
    Ok(store::NewSchedule {
        api_key_id: key.id,
        name,
        accounts,
        table_name: body.table_name,
        format,
        frequency,
        time_zone,
        delay_minutes,
        starts_on,
    })
}

/// Records a schedule action in the audit trail.
fn audit(
    state: &AppState,
    key: &ApiKey,
    client: ClientAddr,
    action: &'static str,
    schedule: Uuid,
    outcome: Outcome,
    details: serde_json::Value,
) {
    let target = Some(format!("schedule:{schedule}"));
    state.api_audit.record(key, client, action, target, outcome, details);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented<S: ErrorStatuses>() -> Vec<u16> {
        use poem_openapi::ApiResponse as _;
        Errors::<S>::meta().responses.iter().filter_map(|r| r.status).collect()
    }

    #[test]
    fn each_operation_documents_exactly_the_error_statuses_it_names() {
        assert_eq!(documented::<CreateErrors>(), CreateErrors::STATUSES);
        assert_eq!(documented::<ListErrors>(), ListErrors::STATUSES);
        assert_eq!(documented::<ScheduleErrors>(), ScheduleErrors::STATUSES);
        assert_eq!(documented::<UpdateErrors>(), UpdateErrors::STATUSES);
        assert_eq!(documented::<RerunErrors>(), RerunErrors::STATUSES);
    }

    #[test]
    fn the_api_names_every_frequency_and_weekday_as_the_calendar_does() {
        for (kind, weekday, day) in
            [("daily", None, None), ("weekly", Some("sunday"), None), ("quarterly", None, Some(31))]
        {
            let frequency = Frequency::parse(kind, weekday, day).unwrap();
            let api = Schedule::from(store::Schedule { frequency, ..example_schedule() });
            assert_eq!(name_of(&api.frequency), kind);
            assert_eq!(api.weekday.map(|w| name_of(&w)).as_deref(), weekday);
            assert_eq!(api.day_of_month, day.map(i32::from));
        }
        for name in ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] {
            assert!(Frequency::parse("weekly", Some(name), None).is_ok());
            assert_eq!(name_of(&one_of("weekday", &WEEKDAYS, name).unwrap()), name);
        }
        assert_eq!(
            one_of("frequency", &FREQUENCIES, "yearly").unwrap_err().message,
            "must be one of: daily, weekly, monthly, quarterly"
        );
    }

    #[test]
    fn accounts_or_all_accounts_one_of_them() {
        let list = || Some(vec!["B".to_owned(), "A".to_owned()]);
        assert_eq!(accounts_named(list(), None).unwrap(), Some(Some(vec!["A".into(), "B".into()])));
        assert_eq!(accounts_named(list(), Some(false)).unwrap(), Some(Some(vec!["A".into(), "B".into()])));
        assert_eq!(accounts_named(None, Some(true)).unwrap(), Some(None));
        assert_eq!(accounts_named(None, None).unwrap(), None);
        assert_eq!(accounts_named(list(), Some(true)).unwrap_err().field, "all_accounts");
        assert_eq!(accounts_named(None, Some(false)).unwrap_err().field, "all_accounts");
        assert_eq!(accounts_named(Some(vec![]), None).unwrap_err().field, "accounts");
        assert_eq!(accounts_named(Some(vec!["A".into(), "A".into()]), None).unwrap_err().field, "accounts");
        let many: Vec<String> = (0..=MAX_ACCOUNTS).map(|i| format!("A{i}")).collect();
        assert_eq!(accounts_named(Some(many), None).unwrap_err().message, "must list 1 to 1000 accounts");
    }

    fn example_schedule() -> store::Schedule {
        let day = time::macros::date!(2024 - 01 - 01);
        store::Schedule {
            id: EXAMPLE_ID,
            api_key_id: EXAMPLE_ID,
            name: String::new(),
            accounts: None,
            table_name: "bank_transactions".into(),
            format: ExportFormat::default(),
            frequency: Frequency::Daily,
            time_zone: shared::time_zones::StatementZone::utc(),
            delay_minutes: 120,
            starts_on: day,
            next_period: calendar::Period { first: day, last: day },
            next_due_at: EXAMPLE_TIME,
            paused_at: None,
            created_at: EXAMPLE_TIME,
            updated_at: EXAMPLE_TIME,
        }
    }
}
