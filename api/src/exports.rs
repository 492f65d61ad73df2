//! `/api/export`: create a statement export and read its status.

use opentelemetry::KeyValue;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::Example,
};
use shared::{
    api_keys::ApiKey,
    audit::Outcome,
    db::DbError,
    downloads::{Holder, Via},
    exports::{self, Export, ExportStatus as Status, StatementFacts},
    failure::FailureCode as ErrorCode,
    schedules::store::ScheduledRun,
    statement::{self, AccountId, DateRange, ExportFormat, FieldError, StatementRequest, StatementZone},
    storage::StorageError,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    ApiTags, AppState,
    auth::BearerKey,
    calendar_date::CalendarDate,
    client_addr::ClientAddr,
    error::{ApiError, ErrorStatuses, Errors},
    idempotency::{self, IdempotencyKeyHeader, Idempotent},
    input::{FromJsonFields, JsonFields, StrictJson},
};

/// A request for one account's statement over a date range. Every field must have exactly its
/// JSON type (a number is not a string; leave an optional field out rather than send `null`);
/// unknown fields are refused.
// The derive documents the schema; the body is read by `FromJsonFields` (see `input.rs`).
// Optional fields carry no `default:` in the schema (it is in their description): generators
// such as openapi-typescript type a field with a default as always present.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub(crate) struct ExportRequest {
    /// The account whose transactions to export (1-64 of `A-Z a-z 0-9 . _ -`, starting with a
    /// letter or digit).
    #[oai(validator(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub account_id: String,
    /// A configured exportable table, e.g. `bank_transactions`.
    pub table_name: String,
    /// First day, inclusive (from 1900-01-01 to 2100-12-31).
    pub date_from: CalendarDate,
    /// Last day, inclusive (from 1900-01-01 to 2100-12-31; at most `MAX_RANGE_DAYS`, 366 by
    /// default, after `date_from`).
    pub date_to: CalendarDate,
    /// Make a new export even when an identical one exists (`false` when absent).
    pub force_refresh: Option<bool>,
    // No doc comment (see `ExportAccepted::status`): `Format` says that `csv` is the default.
    pub format: Option<Format>,
    /// The bank's time zone, an IANA name such as `Europe/Berlin` (`STATEMENT_TIME_ZONE`, UTC
    /// by default, when absent): the period's days are days there (for a DATETIME date
    /// column), statements carry dates there, and a period has ended when its last day has
    /// there. Part of what makes two requests identical.
    pub time_zone: Option<String>,
}

impl FromJsonFields for ExportRequest {
    fn from_fields(fields: &mut JsonFields) -> Option<Self> {
        let account_id = fields.string("account_id");
        let table_name = fields.string("table_name");
        let date_from = fields.string("date_from");
        let date_to = fields.string("date_to");
        let force_refresh = fields.optional_bool("force_refresh");
        let format = fields.optional_parsed("format", |raw| ExportFormat::parse(raw).map(Format::from));
        let time_zone = fields.optional_string("time_zone");
        Some(Self {
            account_id: account_id?,
            table_name: table_name?,
            date_from: CalendarDate(date_from?),
            date_to: CalendarDate(date_to?),
            force_refresh: force_refresh?,
            format: format?,
            time_zone: time_zone?,
        })
    }
}

impl Example for ExportRequest {
    fn example() -> Self {
        Self {
            account_id: "ACC-1001".into(),
            table_name: "bank_transactions".into(),
            date_from: CalendarDate("2024-01-01".into()),
            date_to: CalendarDate("2024-01-31".into()),
            force_refresh: None,
            format: Some(Format::Camt053),
            time_zone: Some("Europe/Berlin".into()),
        }
    }
}

/// Output format (`csv` when a request leaves it out): `csv`; `jsonl` (JSON Lines: one object
/// per row, typed values, decimals as strings); the bank statement formats `camt.053` (ISO 20022
/// camt.053.001.08 XML), `mt940` (SWIFT MT940), `ofx` (OFX 2.2) and `bai2` (BAI2), which need a
/// table with a statement mapping; and each of them gzip-compressed (`.gz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Format {
    #[oai(rename = "csv")]
    Csv,
    #[oai(rename = "csv.gz")]
    CsvGz,
    #[oai(rename = "jsonl")]
    Jsonl,
    #[oai(rename = "jsonl.gz")]
    JsonlGz,
    #[oai(rename = "camt.053")]
    Camt053,
    #[oai(rename = "camt.053.gz")]
    Camt053Gz,
    #[oai(rename = "mt940")]
    Mt940,
    #[oai(rename = "mt940.gz")]
    Mt940Gz,
    #[oai(rename = "ofx")]
    Ofx,
    #[oai(rename = "ofx.gz")]
    OfxGz,
    #[oai(rename = "bai2")]
    Bai2,
    #[oai(rename = "bai2.gz")]
    Bai2Gz,
}

/// The API's formats in [`ExportFormat::all`]'s order.
const FORMATS: [Format; 12] = [
    Format::Csv,
    Format::CsvGz,
    Format::Jsonl,
    Format::JsonlGz,
    Format::Camt053,
    Format::Camt053Gz,
    Format::Mt940,
    Format::Mt940Gz,
    Format::Ofx,
    Format::OfxGz,
    Format::Bai2,
    Format::Bai2Gz,
];

impl From<ExportFormat> for Format {
    fn from(format: ExportFormat) -> Self {
        let i = ExportFormat::all().position(|f| f == format).expect("every format is listed");
        FORMATS[i]
    }
}

impl From<Format> for ExportFormat {
    fn from(format: Format) -> Self {
        let i = FORMATS.iter().position(|f| *f == format).expect("every format is listed");
        ExportFormat::all().nth(i).expect("as many formats as the API lists")
    }
}

fn default_limit() -> i64 {
    50
}

/// The answer to an export request.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct ExportAccepted {
    /// Use it to poll `GET /api/export/{reference_id}`.
    pub reference_id: Uuid,
    // No doc comment: poem-openapi would wrap the `$ref` in `allOf`, which SDK generators such
    // as openapi-python-client cannot read. `Status` documents itself.
    pub status: Status,
    /// `true` when an identical export already existed and is returned instead of a new one.
    pub reused: bool,
    /// A human-readable summary.
    pub message: String,
    /// When a reused export's source snapshot was taken (absent until it starts).
    pub snapshot_at: Option<OffsetDateTime>,
}

/// An export's state and, once completed, its file. Fields without a value (no file yet, no
/// error) are absent.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct ExportDetails {
    /// The export's id.
    pub reference_id: Uuid,
    // See `ExportAccepted::status`.
    pub status: Status,
    /// The account whose statement this is.
    pub account_id: String,
    /// The exported table.
    pub table_name: String,
    /// First day, inclusive.
    pub date_from: CalendarDate,
    /// Last day, inclusive.
    pub date_to: CalendarDate,
    // See `ExportAccepted::status`.
    pub format: Format,
    /// Short-lived signed download URL (COMPLETED only).
    pub file_url: Option<String>,
    /// When `file_url` stops working.
    pub file_url_expires_at: Option<OffsetDateTime>,
    /// File size in bytes.
    pub file_size: Option<i64>,
    /// Data rows in the file (the header row not counted).
    pub row_count: Option<i64>,
    /// Rows written so far (progress while PROCESSING).
    pub rows_exported: i64,
    /// Hex SHA-256 of the file.
    #[oai(validator(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// The fixed message of `error_code`: why the export failed (FAILED), was cancelled
    /// (CANCELLED), or why its last attempt failed (PENDING, it will be retried).
    pub error: Option<String>,
    // See `ErrorCode`.
    pub error_code: Option<ErrorCode>,
    /// What in the account's data made a bank statement fail (`several_currencies`,
    /// `balance_mismatch`, `statement_value_invalid`): the currencies found, the balances that
    /// do not add up, the entry that cannot be written.
    pub error_detail: Option<String>,
    /// The statement's time zone (IANA name): its days are days there.
    pub time_zone: String,
    // No doc comment (see `ExportAccepted::status`): `StatementFacts` documents itself.
    pub statement: Option<StatementFacts>,
    /// When the export was requested.
    pub created_at: OffsetDateTime,
    /// When the source snapshot was taken: the file holds the rows committed by then.
    pub snapshot_at: Option<OffsetDateTime>,
    /// When the export completed, failed or was cancelled.
    pub completed_at: Option<OffsetDateTime>,
    /// When the file will be deleted (retention) and the export become EXPIRED.
    pub expires_at: Option<OffsetDateTime>,
    /// Only in the answer to a cancel: `false` when the export was cancelled; `true` when other
    /// API keys also requested it, so only this key was detached from it (it no longer counts
    /// as a requester) and the export goes on for them (`status` shows it still running).
    pub detached: Option<bool>,
    /// Download links handed out for this export, to every key and operator: each read of a
    /// COMPLETED export mints one. Counted in batches, about a second behind (this answer's own
    /// link not yet included).
    pub download_links_issued: i64,
    /// Responses of the service's file endpoint (local storage) that sent file bytes: a whole
    /// file, or one range of it (a file fetched in four ranges counts four). Downloads from S3
    /// are not seen by the service. About a second behind, like `download_links_issued`.
    pub downloads: i64,
}

/// A page of exports, newest first.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct ExportList {
    /// The exports on this page.
    pub items: Vec<ExportDetails>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

impl Example for ExportAccepted {
    fn example() -> Self {
        Self {
            reference_id: EXAMPLE_ID,
            status: Status::Pending,
            reused: false,
            message: "Export job queued successfully".into(),
            snapshot_at: None,
        }
    }
}

impl Example for ExportDetails {
    fn example() -> Self {
        let at = time::macros::datetime!(2024-02-01 10:30:00 UTC);
        Self {
            reference_id: EXAMPLE_ID,
            status: Status::Completed,
            account_id: "ACC-1001".into(),
            table_name: "bank_transactions".into(),
            date_from: CalendarDate("2024-01-01".into()),
            date_to: CalendarDate("2024-01-31".into()),
            format: Format::Csv,
            file_url: Some(
                "https://exports.example.com/files/exports/550e8400-e29b-41d4-a716-446655440000/8c1f0e2d4b6a49f3a5e7d9c1b3f5a7e9/\
                 statement_ACC-1001_2024-01-01_2024-01-31.csv?expires=1706784300&link=0194f2a1-7c3e-7b5d-9a41-2f6e8c0d1b3a&signature=3f1c…"
                    .into(),
            ),
            file_url_expires_at: Some(at + time::Duration::minutes(15)),
            file_size: Some(2_048_576),
            row_count: Some(50_000),
            rows_exported: 50_000,
            sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
            error: None,
            error_code: None,
            error_detail: None,
            time_zone: "UTC".into(),
            statement: None,
            created_at: at,
            snapshot_at: Some(at),
            completed_at: Some(at + time::Duration::seconds(4)),
            expires_at: Some(at + time::Duration::days(30)),
            detached: None,
            download_links_issued: 3,
            downloads: 2,
        }
    }
}

impl Example for ExportList {
    fn example() -> Self {
        Self { items: vec![ExportDetails::example()], next_cursor: Some(EXAMPLE_ID) }
    }
}

const EXAMPLE_ID: Uuid = uuid::uuid!("550e8400-e29b-41d4-a716-446655440000");

#[derive(Debug, ApiResponse)]
pub enum CreateResponse {
    /// A new export was queued.
    #[oai(status = 202, content_type = "application/json")]
    Accepted(Json<ExportAccepted>),
    /// An identical export exists; it is returned (`reused: true`).
    #[oai(status = 200, content_type = "application/json")]
    Reused(Json<ExportAccepted>),
}

#[derive(Debug, ApiResponse)]
pub enum DetailsResponse {
    /// The export.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<ExportDetails>),
}

#[derive(Debug, ApiResponse)]
pub enum ListResponse {
    /// A page of exports.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<ExportList>),
}

/// What `POST /api/export` can answer besides its export: an invalid or oversized body, one
/// sent too slowly or not as JSON, a key that is unknown, may not export the account or is
/// over a limit, an `Idempotency-Key` in use (409) or used for another request (422), Postgres
/// or storage down.
pub(crate) enum CreateErrors {}
impl ErrorStatuses for CreateErrors {
    const STATUSES: &'static [u16] = &[400, 401, 403, 408, 413, 415, 409, 422, 429, 500, 503];
}

/// `GET /api/export/{reference_id}`: an invalid id, an unknown key, an export this key cannot
/// see (404, never 403) or whose file is gone, a limit, Postgres down.
pub(crate) enum GetErrors {}
impl ErrorStatuses for GetErrors {
    const STATUSES: &'static [u16] = &[400, 401, 404, 410, 429, 500, 503];
}

/// `GET /api/exports`: an invalid parameter, an unknown key, a limit, Postgres down.
pub(crate) enum ListErrors {}
impl ErrorStatuses for ListErrors {
    const STATUSES: &'static [u16] = &[400, 401, 429, 500, 503];
}

/// `POST /api/export/{reference_id}/cancel`: also a key that did not request the export (403),
/// an export that has already finished (409), and an `Idempotency-Key` in use (409) or used for
/// another request (422). The first three are kept under an `Idempotency-Key` and replayed.
pub(crate) enum CancelErrors {}
impl ErrorStatuses for CancelErrors {
    const STATUSES: &'static [u16] = &[400, 401, 403, 404, 409, 422, 429, 500, 503];
    const REPLAYED: &'static [u16] = &[403, 404, 409];
}

pub(crate) struct ExportsApi;

#[OpenApi(tag = "ApiTags::Exports")]
impl ExportsApi {
    /// Request a statement export
    ///
    /// Answers at once with a reference id; a worker produces the file in the background.
    /// Identical requests (same account, table, dates and format) return the existing export
    /// unless `force_refresh` is set. Every request records the key as a requester of the
    /// export it gets. A key may have at most `MAX_OUTSTANDING_EXPORTS_PER_KEY` (default 10)
    /// exports of its own making pending or processing: a request that would create one more is
    /// `429` with `Retry-After` (a request an existing export answers is never refused).
    #[oai(path = "/api/export", method = "post", operation_id = "create_export")]
    async fn create(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// Makes a retry safe: the same key with the same request (the same fields, defaults
        /// applied) returns the first response (with `Idempotent-Replayed: true`) instead of
        /// asking again; with another request it is `422`, and `409` while the first is still
        /// being processed. Scoped to the API key, kept 24 h (`IDEMPOTENCY_KEY_TTL_SECS`). A
        /// quoted string (`"…"`, RFC 8941) or a bare token, of 1-255 printable ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: IdempotencyKeyHeader,
        body: StrictJson<ExportRequest>,
    ) -> Result<Idempotent<CreateResponse>, Errors<CreateErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let request = validate(&state, &body.0)?;
        state.check_database_knows(&request.time_zone).await?;
        if !key.may_access(request.account.as_str()) {
            let details = serde_json::json!({ "account_id": request.account.as_str() });
            state.api_audit.record(&key, client, "export.request", None, Outcome::Denied, details);
            return Err(ApiError::Forbidden("This API key may not export this account.").into());
        }
        let force_refresh = body.0.force_refresh.unwrap_or(false);
        let Some(idempotency_key) = idempotency_key.0 else {
            return Ok(Idempotent::Fresh(
                Self::create_export(&state, &key, client, &request, force_refresh).await?,
            ));
        };
        let canonical = canonical_request(&request, force_refresh);
        let (app, api_key_id) = (AppState::clone(&state), key.id);
        let operation = async move {
            idempotency::respond(Self::create_export(&app, &key, client, &request, force_refresh).await)
        };
        let parts = ["POST /api/export", canonical.as_str()];
        Ok(Idempotent::Keyed(state.idempotently(api_key_id, &idempotency_key, &parts, operation).await?))
    }

    /// `create` once the request is valid and allowed.
    async fn create_export(
        state: &AppState,
        key: &ApiKey,
        client: ClientAddr,
        request: &StatementRequest,
        force_refresh: bool,
    ) -> Result<CreateResponse, ApiError> {
        let mut db = state.db().await?;
        let mut requested = request_export(state, &mut db, request, key.id, force_refresh, None).await?;
        if requested.reused && requested.export.status == Status::Completed {
            let checked = check_file(state, &db, requested.export).await?.export;
            requested = if checked.status == Status::Completed {
                exports::Requested { export: checked, ..requested }
            } else {
                // Its file is gone and it has left the deduplication slot: ask once more, which
                // makes a new export.
                request_export(state, &mut db, request, key.id, force_refresh, None).await?
            };
        }
        let export = requested.export;
        let accepted = ExportAccepted {
            reference_id: export.id,
            status: export.status,
            reused: requested.reused,
            message: if requested.reused {
                "An identical export already exists".into()
            } else {
                "Export job queued successfully".into()
            },
            snapshot_at: export.snapshot_at,
        };
        if requested.reused && !requested.recorded {
            state.requesters.repeat(export.id, key.id);
        }
        let result = if requested.reused { "reused" } else { "created" };
        state.metrics.export_requests.add(1, &[KeyValue::new("result", result)]);
        let details = serde_json::json!({ "result": result, "account_id": request.account.as_str() });
        let target = Some(format!("export:{}", export.id));
        state.api_audit.record(key, client, "export.request", target, Outcome::Success, details);
        Ok(if requested.reused {
            state.reuse.count();
            CreateResponse::Reused(Json(accepted))
        } else {
            CreateResponse::Accepted(Json(accepted))
        })
    }

    /// Get an export's status and download link
    ///
    /// `410 Gone` when the export's file no longer exists in storage (deleted before its
    /// retention ended): request the statement again to get a new export.
    #[oai(path = "/api/export/:reference_id", method = "get", operation_id = "get_export")]
    async fn get(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The `reference_id` returned when the export was requested.
        reference_id: Path<Uuid>,
    ) -> Result<DetailsResponse, Errors<GetErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let db = state.db().await?;
        let export = visible_export(&db, &key, reference_id.0).await?;
        let export = check_file(&state, &db, export).await?.export;
        if export.file_lost_at.is_some() {
            return Err(ApiError::Gone(FILE_GONE).into());
        }
        Ok(DetailsResponse::Ok(Json(details(&state, export, key.id).await?)))
    }

    /// List exports
    ///
    /// Newest first, filtered, in pages: pass the previous page's `next_cursor` as `cursor`.
    /// A key limited to some accounts sees only their exports.
    #[oai(path = "/api/exports", method = "get", operation_id = "list_exports")]
    ///
    /// Every parameter is validated like the request body: an unknown or repeated parameter,
    /// an invalid account id, a table that is not configured or a time outside 1900-01-01 to
    /// 2100-12-31 is a `400` naming the parameter.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: poem::web::Data<&AppState>,
        request: &poem::Request,
        auth: BearerKey,
        client: ClientAddr,
        /// Only exports in this state.
        status: Query<Option<Status>>,
        /// Only this account's exports (1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or
        /// digit).
        #[oai(validator(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
        account_id: Query<Option<String>>,
        /// Only exports of this table (a configured table).
        table_name: Query<Option<String>>,
        /// Only exports created at or after this time (RFC 3339, from 1900-01-01 to 2100-12-31).
        created_from: Query<Option<OffsetDateTime>>,
        /// Only exports created before this time (RFC 3339, from 1900-01-01 to 2100-12-31).
        created_before: Query<Option<OffsetDateTime>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<i64>,
        /// The previous page's `next_cursor`.
        cursor: Query<Option<Uuid>>,
    ) -> Result<ListResponse, Errors<ListErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let mut errors = Vec::new();
        if let Err(e) = crate::input::check_query_names(request.uri().query(), LIST_PARAMETERS) {
            errors.extend(e);
        }
        let account_id = account_id.0.map(|a| AccountId::parse(&a).map_err(|e| errors.push(e)));
        if let Some(table) = &table_name.0 {
            check_table(&state, "table_name", table).unwrap_or_else(|e| errors.push(e));
        }
        for (name, at) in [("created_from", created_from.0), ("created_before", created_before.0)] {
            if let Some(Err(e)) = at.map(|at| statement::check_time_in_range(name, at)) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors).into());
        }
        let filter = exports::ListFilter {
            status: status.0,
            account_id: account_id.and_then(Result::ok).map(|a| a.as_str().to_owned()),
            table_name: table_name.0,
            created_from: created_from.0,
            created_before: created_before.0,
            accounts: key.allowed_accounts.clone(),
            requested_by: None,
            after: cursor.0,
        };
        let db = state.db().await?;
        let page = match exports::list(&db, &filter, limit.0 + 1).await {
            Ok(page) => page,
            Err(exports::ListError::UnknownCursor) => {
                return Err(
                    ApiError::Validation(vec![FieldError::new("cursor", "does not name an export")]).into()
                );
            }
            Err(exports::ListError::Db(e)) => return Err(e.into()),
        };
        let more = page.len() as i64 > limit.0;
        let mut items = Vec::with_capacity(page.len());
        for export in page.into_iter().take(limit.0 as usize) {
            items.push(details(&state, export, key.id).await?);
        }
        let next_cursor = if more { items.last().map(|e| e.reference_id) } else { None };
        Ok(ListResponse::Ok(Json(ExportList { items, next_cursor })))
    }

    /// Cancel an export
    ///
    /// A pending export is cancelled at once; a running one stops within one worker heartbeat
    /// (its partial upload is aborted, no file appears). Cancelling a finished export is 409.
    /// A key may cancel only an export it requested (`403` otherwise). When other keys also
    /// requested it, the export is not cancelled: only this key is detached from it, the answer
    /// says `detached: true` and the export goes on for them. It is cancelled when the last
    /// key holding it cancels.
    #[oai(path = "/api/export/:reference_id/cancel", method = "post", operation_id = "cancel_export")]
    async fn cancel(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The `reference_id` returned when the export was requested.
        reference_id: Path<Uuid>,
        /// Makes a retry safe: the same key for the same export returns the first response
        /// (with `Idempotent-Replayed: true`) instead of cancelling again; used before for
        /// another request it is `422`, and `409` while the first is still being processed.
        /// Scoped to the API key, kept 24 h (`IDEMPOTENCY_KEY_TTL_SECS`). A quoted string
        /// (`"…"`, RFC 8941) or a bare token, of 1-255 printable ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: IdempotencyKeyHeader,
    ) -> Result<Idempotent<DetailsResponse>, Errors<CancelErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let id = reference_id.0;
        let Some(idempotency_key) = idempotency_key.0 else {
            return Ok(Idempotent::Fresh(Self::cancel_export(&state, &key, client, id).await?));
        };
        let (app, api_key_id) = (AppState::clone(&state), key.id);
        let operation =
            async move { idempotency::respond(Self::cancel_export(&app, &key, client, id).await) };
        let parts = ["POST /api/export/{reference_id}/cancel", &id.to_string()];
        Ok(Idempotent::Keyed(state.idempotently(api_key_id, &idempotency_key, &parts, operation).await?))
    }

    /// `cancel` once the key is known.
    async fn cancel_export(
        state: &AppState,
        key: &ApiKey,
        client: ClientAddr,
        id: Uuid,
    ) -> Result<DetailsResponse, ApiError> {
        let mut db = state.db().await?;
        visible_export(&db, key, id).await?;
        let by = exports::Canceller::Key(key.id);
        let cancelled = exports::cancel(&mut db, id, by, ErrorCode::Cancelled, &state.metrics).await?;
        let (outcome, result) = match &cancelled {
            exports::Cancelled::Now(_) => (Outcome::Success, "cancelled"),
            exports::Cancelled::Detached(_) => (Outcome::Success, "detached"),
            exports::Cancelled::NotRequester => (Outcome::Denied, "not_requester"),
            exports::Cancelled::AlreadyFinished(_) => (Outcome::Unchanged, "already_finished"),
            exports::Cancelled::NotFound => (Outcome::NotFound, "not_found"),
        };
        let target = Some(format!("export:{id}"));
        let recorded = serde_json::json!({ "result": result });
        state.api_audit.record(key, client, "export.cancel", target, outcome, recorded);
        match cancelled {
            exports::Cancelled::Now(export) => {
                let details =
                    ExportDetails { detached: Some(false), ..details(state, export, key.id).await? };
                Ok(DetailsResponse::Ok(Json(details)))
            }
            exports::Cancelled::Detached(export) => {
                tracing::info!(export.id = %export.id, api_key.id = %key.id, "key detached from a shared export");
                let details = ExportDetails { detached: Some(true), ..details(state, export, key.id).await? };
                Ok(DetailsResponse::Ok(Json(details)))
            }
            exports::Cancelled::NotRequester => Err(ApiError::Forbidden(
                "This API key did not request this export; only a key that requested it may cancel it.",
            )),
            exports::Cancelled::AlreadyFinished(_) => {
                Err(ApiError::Conflict("The export has already finished; there is nothing to cancel."))
            }
            exports::Cancelled::NotFound => Err(ApiError::NotFound("No export with this reference id.")),
        }
    }
}

/// The query parameters of `GET /api/exports` (any other is refused).
const LIST_PARAMETERS: &[&str] =
    &["status", "account_id", "table_name", "created_from", "created_before", "limit", "cursor"];

/// The table name, if it is a configured table.
fn check_table(state: &AppState, field: &'static str, name: &str) -> Result<(), FieldError> {
    if state.tables.get(name).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = state.tables.names().collect();
    Err(FieldError::new(field, format!("must be one of: {}", known.join(", "))))
}

/// What a client is told about an export whose file has disappeared from storage.
const FILE_GONE: &str = "This export's file no longer exists. Request the statement again \
    (POST /api/export with the same fields) to get a new export.";

pub(crate) async fn request_export(
    state: &AppState,
    db: &mut deadpool_postgres::Object,
    request: &StatementRequest,
    key_id: Uuid,
    force_refresh: bool,
    schedule: Option<ScheduledRun>,
) -> Result<exports::Requested, ApiError> {
    let max_attempts = state.export_max_attempts;
    let by = exports::RequestedBy {
        api_key_id: key_id,
        max_outstanding: state.max_outstanding_exports_per_key,
        schedule,
    };
    match exports::request(db, request, Some(by), force_refresh, max_attempts, state.reuse_policy).await {
        Ok(requested) => Ok(requested),
        Err(exports::RequestError::TooManyOutstanding { limit }) => Err(ApiError::TooManyOutstanding(limit)),
        Err(exports::RequestError::RunTaken) => {
            Err(ApiError::Conflict("the scheduled period has been asked for meanwhile; read it again"))
        }
        Err(exports::RequestError::Db(e)) => Err(e.into()),
    }
}

/// An export after [`check_file`].
pub(crate) struct Checked {
    /// The export as it now is (EXPIRED with `file_lost_at` when its file turned out gone).
    pub export: Export,
    /// `false` when storage could not be asked (its file may or may not be there).
    pub verified: bool,
}

/// How long the API waits for storage to say whether a file exists.
const FILE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks that a COMPLETED export's file is still in storage before it is handed out. When
/// storage says it is gone (deleted by hand, a bucket lifecycle rule), the export is marked as
/// having lost its file (EXPIRED, out of the deduplication slot). A storage error proves
/// nothing: the export is left as it is, unverified.
pub(crate) async fn check_file(
    state: &AppState,
    db: &deadpool_postgres::Object,
    export: Export,
) -> Result<Checked, DbError> {
    let (Status::Completed, Some(key)) = (export.status, export.file_key.as_deref()) else {
        return Ok(Checked { export, verified: true });
    };
    // Bounded: an unreachable store retries for up to S3_RETRY_TIMEOUT_SECS, and a status poll
    // must not wait that long (nor hold its pooled connection meanwhile).
    let exists = tokio::time::timeout(FILE_CHECK_TIMEOUT, state.storage.exists(key))
        .await
        .unwrap_or_else(|_| Err(StorageError::Timeout(FILE_CHECK_TIMEOUT)));
    match exists {
        Ok(true) => Ok(Checked { export, verified: true }),
        Ok(false) => {
            tracing::warn!(export.id = %export.id, "a completed export's file is missing from storage");
            let export = match exports::mark_file_lost(db, export.id, key).await? {
                Some(lost) => lost,
                // Changed meanwhile (marked by a concurrent request, expired): as it is now.
                None => exports::get(db, export.id).await?.unwrap_or(export),
            };
            Ok(Checked { export, verified: true })
        }
        Err(e) => {
            tracing::warn!(export.id = %export.id, error = %e, "could not check an export's file in storage");
            Ok(Checked { export, verified: false })
        }
    }
}

/// The export, if this key may see it: a key sees the exports of the accounts it may access,
/// and others look like they do not exist.
async fn visible_export(db: &deadpool_postgres::Object, key: &ApiKey, id: Uuid) -> Result<Export, ApiError> {
    exports::get(db, id)
        .await?
        .filter(|e| key.may_access(&e.account_id))
        .ok_or(ApiError::NotFound("No export with this reference id."))
}

/// A create request as an `Idempotency-Key` compares it: its fields, valid, with their defaults
/// (no `format` is `csv`, no `force_refresh` is `false`), in name order.
/// The time zone is named when it is not UTC (keys stored before time zones stay comparable).
fn canonical_request(request: &StatementRequest, force_refresh: bool) -> String {
    let mut canonical = serde_json::json!({
        "account_id": request.account.as_str(),
        "date_from": request.range.from().to_string(),
        "date_to": request.range.to().to_string(),
        "force_refresh": force_refresh,
        "format": request.format.as_str(),
        "table_name": request.table,
    });
    if !request.time_zone.is_utc() {
        canonical["time_zone"] = request.time_zone.name().into();
    }
    canonical.to_string()
}

fn validate(state: &AppState, body: &ExportRequest) -> Result<StatementRequest, ApiError> {
    let mut errors = Vec::new();
    let account = AccountId::parse(&body.account_id).map_err(|e| errors.push(e)).ok();
    check_table(state, "table_name", &body.table_name).unwrap_or_else(|e| errors.push(e));
    let range = DateRange::parse(&body.date_from.0, &body.date_to.0, state.max_range_days)
        .map_err(|e| errors.push(e))
        .ok();
    let format = body.format.map(ExportFormat::from).unwrap_or_default();
    let time_zone = match &body.time_zone {
        None => Some(state.statement_time_zone.clone()),
        Some(raw) => StatementZone::parse(raw).map_err(|e| errors.push(e)).ok(),
    };
    let (Some(account), Some(range), Some(time_zone)) = (account, range, time_zone) else {
        return Err(ApiError::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let spec = state.tables.get(&body.table_name);
    if let (Some(bank), Some(spec)) = (format.bank(), spec.filter(|spec| spec.statement.is_none())) {
        {
            // Well-formed, but this table cannot make a statement: `422`, saying what is missing.
            return Err(ApiError::Unprocessable(vec![FieldError::new(
                "format",
                format!(
                    "table {} has no statement mapping (which columns are the amount, the currency and \
                     the booking date), so it exports as csv or jsonl only; {} needs one",
                    spec.name,
                    ExportFormat { layout: statement::Layout::Bank(bank), gzip: false }.as_str()
                ),
            )]));
        }
    }
    Ok(StatementRequest { account, table: body.table_name.clone(), range, format, time_zone })
}

/// The export as a client sees it; a COMPLETED one with a fresh download link for `key`.
async fn details(state: &AppState, export: Export, key: Uuid) -> Result<ExportDetails, ApiError> {
    let (file_url, file_url_expires_at) = match (&export.status, &export.file_key) {
        (Status::Completed, Some(file)) => {
            let (url, expires) = state.download_link(export.id, file, Via::Api, Holder::Key(key)).await?;
            (Some(url), Some(expires))
        }
        _ => (None, None),
    };
    Ok(ExportDetails { file_url, file_url_expires_at, ..representation(export)? })
}

/// The export as `GET /api/export/{reference_id}` shows it, without a download link (which
/// [`details`] adds): also the `data` of the export's webhook events (`crate::webhooks`).
pub(crate) fn representation(export: Export) -> Result<ExportDetails, ApiError> {
    Ok(ExportDetails {
        reference_id: export.id,
        status: export.status,
        account_id: export.account_id,
        table_name: export.table_name,
        date_from: export.date_from.into(),
        date_to: export.date_to.into(),
        format: ExportFormat::parse(&export.format).map_err(|e| ApiError::Internal(e.into()))?.into(),
        file_url: None,
        file_url_expires_at: None,
        file_size: export.file_size,
        row_count: export.row_count,
        rows_exported: export.rows_exported,
        sha256: export.sha256,
        error: export.failure.map(|code| code.message().to_owned()),
        error_code: export.failure,
        error_detail: export.error_detail.filter(|_| export.failure.is_some()),
        time_zone: export.time_zone,
        // Its number from its first start, its figures once completed.
        statement: export.statement.or_else(|| {
            export.statement_number.map(|number| StatementFacts {
                number,
                balances: None,
                statements: Vec::new(),
            })
        }),
        created_at: export.created_at,
        snapshot_at: export.snapshot_at,
        completed_at: export.completed_at,
        expires_at: export.expires_at,
        detached: None,
        download_links_issued: export.download_links_issued,
        downloads: export.downloads,
    })
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON as _;

    use super::*;

    fn documented<S: ErrorStatuses>() -> Vec<u16> {
        use poem_openapi::ApiResponse as _;
        Errors::<S>::meta().responses.iter().filter_map(|r| r.status).collect()
    }

    #[test]
    fn each_operation_documents_exactly_the_error_statuses_it_names() {
        // A status named but not an `ErrorResponse` variant would silently go undocumented.
        assert_eq!(documented::<CreateErrors>(), CreateErrors::STATUSES);
        assert_eq!(documented::<GetErrors>(), GetErrors::STATUSES);
        assert_eq!(documented::<ListErrors>(), ListErrors::STATUSES);
        assert_eq!(documented::<CancelErrors>(), CancelErrors::STATUSES);
    }

    #[test]
    fn the_spec_states_the_account_id_rule_as_account_id_parse_applies_it() {
        // The pattern is written out in the request field's and the query parameter's
        // `validator` attributes (they take only a literal): both must be this rule.
        let spec = crate::openapi_spec::committed().yaml;
        let patterns: std::collections::BTreeSet<&str> = spec
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pattern: "))
            .filter(|p| p.contains("A-Za-z0-9][A-Za-z0-9._-]"))
            .collect();
        assert_eq!(patterns.len(), 1, "{patterns:?}");
        assert_eq!(spec.matches("pattern: ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").count(), 2);
        let rule = regex::Regex::new(patterns.first().unwrap()).unwrap();
        let long = "A".repeat(64);
        let too_long = "A".repeat(65);
        for sample in
            ["ACC-1001", "a", "0.x_y-z", &long, &too_long, "", "-ACC", ".a", "ACC 1", "ACC/1", "AÇC", "ACC\n"]
        {
            assert_eq!(rule.is_match(sample), AccountId::parse(sample).is_ok(), "{sample:?}");
        }
    }

    #[test]
    fn formats_round_trip_between_the_api_and_the_domain() {
        for format in ExportFormat::all() {
            let api = Format::from(format);
            assert_eq!(ExportFormat::from(api), format);
            assert_eq!(api.to_json(), Some(serde_json::json!(format.as_str())));
        }
    }

    #[test]
    fn every_failure_code_is_in_the_api_enum_and_documented_with_its_message() {
        let spec = include_str!("../../openapi.yaml");
        for code in ErrorCode::ALL {
            assert_eq!(code.to_json(), Some(serde_json::json!(code.as_str())));
            let row = format!("| `{code}` | {} |", code.message());
            assert!(spec.contains(&row), "openapi.yaml (the ErrorCode doc comment) lacks {row}");
        }
    }
}
