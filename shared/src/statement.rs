//! A statement request, validated at the edge, and its deduplication hash.

use std::{borrow::Cow, fmt};

use sha2::{Digest, Sha256};

pub use crate::formats::BankFormat;
pub use crate::time_zones::StatementZone;
use time::{
    Date, OffsetDateTime,
    macros::{date, format_description},
};

/// A field that failed validation, with a message a client can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The request field or parameter, as the client spelled it (an unknown field's name
    /// included).
    pub field: Cow<'static, str>,
    /// What is wrong with it, in a client developer's words.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The first day a statement, or a listing's `created_from`/`created_before`, may name.
///
/// Statements are bounded to 1900-01-01 ..= 2100-12-31: no bank keeps transactions from before
/// 1900, and a date outside the range is a typo (`0024` for `2024`, `2204` for `2024`), not a
/// request. Without a bound `0000-01-01` was accepted and stored as 1 BC; MariaDB's DATE and
/// DATETIME start at year 1000, so such a range would not even reach the source sensibly.
pub(crate) const EARLIEST_DATE: Date = date!(1900 - 01 - 01);
/// The last day a statement may name (see [`EARLIEST_DATE`]).
pub(crate) const LATEST_DATE: Date = date!(2100 - 12 - 31);

/// Checks that a date lies in `EARLIEST_DATE` ..= `LATEST_DATE` (1900-01-01 ..= 2100-12-31).
pub(crate) fn check_date_in_range(field: &'static str, date: Date) -> Result<Date, FieldError> {
    if (EARLIEST_DATE..=LATEST_DATE).contains(&date) {
        Ok(date)
    } else {
        Err(FieldError::new(field, format!("must be between {EARLIEST_DATE} and {LATEST_DATE}")))
    }
}

/// Checks that a point in time falls on a day in `EARLIEST_DATE` ..= `LATEST_DATE` (1900-01-01 ..= 2100-12-31) (in
/// UTC): the listing's `created_from` and `created_before` filters.
pub fn check_time_in_range(field: &'static str, at: OffsetDateTime) -> Result<OffsetDateTime, FieldError> {
    check_date_in_range(field, at.to_offset(time::UtcOffset::UTC).date()).map(|_| at).map_err(|_| {
        FieldError::new(
            field,
            format!("must be between {EARLIEST_DATE}T00:00:00Z and {LATEST_DATE}T23:59:59Z"),
        )
    })
}

/// An account identifier: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit. The restricted alphabet is what lets the source query carry it as a literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    /// An account id: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.as_bytes()[0].is_ascii_alphanumeric()
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "account_id",
                "must be 1 to 64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
            ))
        }
    }

    /// The account id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive range of calendar dates, `from <= to`, at most `max_days` long, within
/// `EARLIEST_DATE` ..= `LATEST_DATE` (1900-01-01 ..= 2100-12-31).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    from: Date,
    to: Date,
}

impl DateRange {
    /// A range from `YYYY-MM-DD` texts, at most `max_days` long.
    pub fn parse(from: &str, to: &str, max_days: i64) -> Result<Self, FieldError> {
        let from = parse_date("date_from", from)?;
        let to = parse_date("date_to", to)?;
        Self::new(from, to, max_days)
    }

    /// A range of dates, at most `max_days` long, within the years the service accepts.
    pub fn new(from: Date, to: Date, max_days: i64) -> Result<Self, FieldError> {
        check_date_in_range("date_from", from)?;
        check_date_in_range("date_to", to)?;
        if from > to {
            return Err(FieldError::new("date_from", "must not be after date_to"));
        }
        let days = (to - from).whole_days() + 1;
        if days > max_days {
            return Err(FieldError::new("date_to", format!("the range may span at most {max_days} days")));
        }
        Ok(Self { from, to })
    }

    /// First day, inclusive.
    pub fn from(&self) -> Date {
        self.from
    }

    /// Last day, inclusive.
    pub fn to(&self) -> Date {
        self.to
    }

    /// The day after `to`: source queries use the half-open range `[from, to + 1 day)` so a
    /// DATETIME column includes the whole last day.
    pub fn end_exclusive(&self) -> Date {
        self.to.next_day().expect("LATEST_DATE has a next day")
    }
}

/// `YYYY-MM-DD`, nothing else (no week dates, no times, no signs).
fn parse_date(field: &'static str, raw: &str) -> Result<Date, FieldError> {
    let strict = format_description!("[year]-[month]-[day]");
    if raw.len() != 10 || !raw.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(date_error(field));
    }
    Date::parse(raw, &strict).map_err(|_| date_error(field))
}

fn date_error(field: &'static str) -> FieldError {
    FieldError::new(field, "must be a calendar date in ISO 8601 form, YYYY-MM-DD")
}

/// How an export lays out its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// CSV: the configured columns, a header row.
    Csv,
    /// JSON Lines: one object per row, typed values.
    Jsonl,
    /// A bank statement file, from the table's statement mapping.
    Bank(BankFormat),
}

/// Output format of an export (`csv`, `camt.053.gz`, …); part of the deduplication hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExportFormat {
    /// What the file holds.
    pub layout: Layout,
    /// Whether the file is gzip-compressed (`.gz`).
    pub gzip: bool,
}

/// Every layout with the names clients use, plain and gzip-compressed.
const LAYOUTS: [(Layout, [&str; 2]); 6] = [
    (Layout::Csv, ["csv", "csv.gz"]),
    (Layout::Jsonl, ["jsonl", "jsonl.gz"]),
    (Layout::Bank(BankFormat::Camt053), ["camt.053", "camt.053.gz"]),
    (Layout::Bank(BankFormat::Mt940), ["mt940", "mt940.gz"]),
    (Layout::Bank(BankFormat::Ofx), ["ofx", "ofx.gz"]),
    (Layout::Bank(BankFormat::Bai2), ["bai2", "bai2.gz"]),
];

impl Default for ExportFormat {
    fn default() -> Self {
        Self::CSV
    }
}

impl ExportFormat {
    /// `csv`, the default.
    pub const CSV: Self = Self { layout: Layout::Csv, gzip: false };

    /// Every format, in the order the API lists them: each layout, then its `.gz`.
    pub fn all() -> impl Iterator<Item = Self> {
        LAYOUTS.into_iter().flat_map(|(layout, _)| [false, true].map(|gzip| Self { layout, gzip }))
    }

    /// The format as clients name it (`csv`, `csv.gz`, `camt.053`, `mt940.gz`, …).
    pub fn as_str(self) -> &'static str {
        let (_, names) = LAYOUTS.iter().find(|(l, _)| *l == self.layout).expect("every layout is listed");
        names[usize::from(self.gzip)]
    }

    /// The format clients name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::all().find(|f| f.as_str() == raw).ok_or_else(|| {
            let names: Vec<_> = Self::all().map(|f| format!("\"{}\"", f.as_str())).collect();
            FieldError::new("format", format!("must be one of {}", names.join(", ")))
        })
    }

    /// The bank format, when the export is a bank statement file.
    pub fn bank(self) -> Option<BankFormat> {
        match self.layout {
            Layout::Bank(format) => Some(format),
            Layout::Csv | Layout::Jsonl => None,
        }
    }

    /// The file name extension (`csv`, `camt053.xml`, `mt940.gz`, …).
    pub fn extension(self) -> String {
        let base = match self.layout {
            Layout::Csv => "csv",
            Layout::Jsonl => "jsonl",
            Layout::Bank(BankFormat::Camt053) => "camt053.xml",
            Layout::Bank(BankFormat::Mt940) => "mt940",
            Layout::Bank(BankFormat::Ofx) => "ofx",
            Layout::Bank(BankFormat::Bai2) => "bai2",
        };
        if self.gzip { format!("{base}.gz") } else { base.to_owned() }
    }

    /// The file's content type.
    pub fn content_type(self) -> &'static str {
        if self.gzip {
            return "application/gzip";
        }
        match self.layout {
            Layout::Csv => "text/csv; charset=utf-8",
            Layout::Jsonl => "application/jsonl; charset=utf-8",
            Layout::Bank(BankFormat::Camt053) => "application/xml",
            Layout::Bank(BankFormat::Ofx) => "application/x-ofx",
            Layout::Bank(BankFormat::Mt940 | BankFormat::Bai2) => "text/plain; charset=us-ascii",
        }
    }
}

/// A validated request for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRequest {
    /// The account.
    pub account: AccountId,
    /// A configured table's public name (checked against the registry by the caller).
    pub table: String,
    /// The days.
    pub range: DateRange,
    /// The file format.
    pub format: ExportFormat,
    /// The bank's time zone: the period's days, and the dates a statement carries.
    pub time_zone: StatementZone,
}

impl StatementRequest {
    /// SHA-256 over the normalized request. Two requests for the same statement hash equal
    /// whatever their JSON spelling; the version prefix lets the normalization change later
    /// without colliding with old hashes.
    /// The time zone is named only when it is not UTC, so requests from before time zones keep
    /// their hashes (and their exports).
    pub fn request_hash(&self) -> [u8; 32] {
        let mut normalized = format!(
            "v1\naccount={}\ntable={}\nfrom={}\nto={}\nformat={}\n",
            self.account,
            self.table,
            self.range.from(),
            self.range.to(),
            self.format.as_str()
        );
        if !self.time_zone.is_utc() {
            normalized.push_str(&format!("time_zone={}\n", self.time_zone.name()));
        }
        Sha256::digest(normalized.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(account: &str, from: &str, to: &str) -> StatementRequest {
        StatementRequest {
            account: AccountId::parse(account).unwrap(),
            table: "bank_transactions".into(),
            range: DateRange::parse(from, to, 3660).unwrap(),
            format: ExportFormat::CSV,
            time_zone: StatementZone::utc(),
        }
    }

    #[test]
    fn equal_requests_hash_equal_and_any_field_changes_the_hash() {
        let base = request("ACC-1", "2024-01-01", "2024-01-31");
        assert_eq!(base.request_hash(), request("ACC-1", "2024-01-01", "2024-01-31").request_hash());
        assert_ne!(base.request_hash(), request("ACC-2", "2024-01-01", "2024-01-31").request_hash());
        assert_ne!(base.request_hash(), request("ACC-1", "2024-01-02", "2024-01-31").request_hash());
        assert_ne!(base.request_hash(), request("ACC-1", "2024-01-01", "2024-01-30").request_hash());
        let in_berlin =
            StatementRequest { time_zone: StatementZone::parse("europe/berlin").unwrap(), ..base.clone() };
        assert_ne!(base.request_hash(), in_berlin.request_hash());
        let spelled =
            StatementRequest { time_zone: StatementZone::parse("Europe/Berlin").unwrap(), ..base.clone() };
        assert_eq!(in_berlin.request_hash(), spelled.request_hash());
        let camt = StatementRequest { format: ExportFormat::parse("camt.053").unwrap(), ..base.clone() };
        assert_ne!(base.request_hash(), camt.request_hash());
    }

    #[test]
    fn hashes_of_utc_requests_are_those_of_the_releases_before_time_zones() {
        // v1 of the normalization, as stored by earlier releases: their exports stay reusable.
        let base = request("ACC-1", "2024-01-01", "2024-01-31");
        let v1 = "v1\naccount=ACC-1\ntable=bank_transactions\nfrom=2024-01-01\nto=2024-01-31\nformat=csv\n";
        assert_eq!(base.request_hash(), <[u8; 32]>::from(Sha256::digest(v1)));
    }

    #[test]
    fn every_format_round_trips_by_name() {
        let names: Vec<_> = ExportFormat::all().map(ExportFormat::as_str).collect();
        assert_eq!(names.len(), 12);
        for format in ExportFormat::all() {
            assert_eq!(ExportFormat::parse(format.as_str()).unwrap(), format);
        }
        assert_eq!(ExportFormat::parse("camt.053.gz").unwrap().bank(), Some(BankFormat::Camt053));
        assert!(ExportFormat::parse("CSV").is_err() && ExportFormat::parse("camt053").is_err());
    }

    #[test]
    fn dates_must_be_iso_calendar_dates_in_order() {
        assert!(DateRange::parse("2024-02-30", "2024-03-01", 366).is_err());
        assert!(DateRange::parse("2024/01/01", "2024-03-01", 366).is_err());
        assert!(DateRange::parse("2024-01-01T00:00", "2024-03-01", 366).is_err());
        let err = DateRange::parse("2024-03-02", "2024-03-01", 366).unwrap_err();
        assert_eq!(err.field, "date_from");
        let err = DateRange::parse("2020-01-01", "2024-03-01", 366).unwrap_err();
        assert_eq!(err.field, "date_to");
        let range = DateRange::parse("2024-12-31", "2024-12-31", 1).unwrap();
        assert_eq!(range.end_exclusive().to_string(), "2025-01-01");
    }

    #[test]
    fn dates_must_lie_between_1900_and_2100() {
        let err = DateRange::parse("0000-01-01", "2024-01-01", i64::MAX).unwrap_err();
        assert_eq!(err.field, "date_from");
        assert_eq!(err.message, "must be between 1900-01-01 and 2100-12-31");
        assert_eq!(DateRange::parse("1899-12-31", "1900-01-01", 366).unwrap_err().field, "date_from");
        assert_eq!(DateRange::parse("2100-12-31", "2101-01-01", 366).unwrap_err().field, "date_to");
        assert!(DateRange::parse("1900-01-01", "1900-01-01", 1).is_ok());
        assert!(DateRange::parse("2100-12-31", "2100-12-31", 1).is_ok());
        // Built from stored dates too (the worker), not only parsed.
        assert!(DateRange::new(date!(0000 - 01 - 01), date!(2024 - 01 - 01), i64::MAX).is_err());
    }

    #[test]
    fn listing_times_must_fall_between_1900_and_2100_in_utc() {
        use time::macros::datetime;
        assert!(check_time_in_range("created_from", datetime!(1900-01-01 00:00 UTC)).is_ok());
        assert!(check_time_in_range("created_from", datetime!(2100-12-31 23:59:59 UTC)).is_ok());
        assert!(check_time_in_range("created_from", datetime!(1899-12-31 23:59:59 UTC)).is_err());
        // 2100-12-31 23:00 at -02:00 is 2101-01-01 01:00 UTC.
        assert!(check_time_in_range("created_before", datetime!(2100-12-31 23:00 -2)).is_err());
        let err = check_time_in_range("created_before", datetime!(0000-01-01 00:00 UTC)).unwrap_err();
        assert_eq!(err.field, "created_before");
    }

    #[test]
    fn account_ids_are_restricted_to_a_safe_alphabet() {
        assert!(AccountId::parse("ACC-1001").is_ok());
        assert!(AccountId::parse("acc.1_2-3").is_ok());
        for bad in ["", "-ACC", "ACC 1", "ACC'1", "ACC\\1", "ACC\"", &"x".repeat(65)] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
