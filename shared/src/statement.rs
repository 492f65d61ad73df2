//! A statement request, validated at the edge, and its deduplication hash.

use std::fmt;

use sha2::{Digest, Sha256};
use time::{Date, macros::format_description};

/// A field that failed validation, with a message a client can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// An account identifier: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit. The restricted alphabet is what lets the source query carry it as a literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
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

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive range of calendar dates, `from <= to`, at most `max_days` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    from: Date,
    to: Date,
}

impl DateRange {
    pub fn parse(from: &str, to: &str, max_days: i64) -> Result<Self, FieldError> {
        let from = parse_date("date_from", from)?;
        let to = parse_date("date_to", to)?;
        Self::new(from, to, max_days)
    }

    pub fn new(from: Date, to: Date, max_days: i64) -> Result<Self, FieldError> {
        if from > to {
            return Err(FieldError::new("date_from", "must not be after date_to"));
        }
        let days = (to - from).whole_days() + 1;
        if days > max_days {
            return Err(FieldError::new("date_to", format!("the range may span at most {max_days} days")));
        }
        if to.next_day().is_none() {
            return Err(FieldError::new("date_to", "is out of range"));
        }
        Ok(Self { from, to })
    }

    pub fn from(&self) -> Date {
        self.from
    }

    pub fn to(&self) -> Date {
        self.to
    }

    /// The day after `to`: source queries use the half-open range `[from, to + 1 day)` so a
    /// DATETIME column includes the whole last day.
    pub fn end_exclusive(&self) -> Date {
        self.to.next_day().expect("checked in DateRange::new")
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

/// Output format of an export; part of the deduplication hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    #[default]
    Csv,
    /// The same CSV, gzip-compressed.
    CsvGz,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::CsvGz => "csv.gz",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "csv" => Ok(Self::Csv),
            "csv.gz" => Ok(Self::CsvGz),
            _ => Err(FieldError::new("format", "must be \"csv\" or \"csv.gz\"")),
        }
    }

    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::CsvGz => "application/gzip",
        }
    }
}

/// A validated request for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRequest {
    pub account: AccountId,
    /// A configured table's public name (checked against the registry by the caller).
    pub table: String,
    pub range: DateRange,
    pub format: ExportFormat,
}

impl StatementRequest {
    /// SHA-256 over the normalized request. Two requests for the same statement hash equal
    /// whatever their JSON spelling; the version prefix lets the normalization change later
    /// without colliding with old hashes.
    pub fn request_hash(&self) -> [u8; 32] {
        let normalized = format!(
            "v1\naccount={}\ntable={}\nfrom={}\nto={}\nformat={}\n",
            self.account,
            self.table,
            self.range.from(),
            self.range.to(),
            self.format.as_str()
        );
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
            format: ExportFormat::Csv,
        }
    }

    #[test]
    fn equal_requests_hash_equal_and_any_field_changes_the_hash() {
        let base = request("ACC-1", "2024-01-01", "2024-01-31");
        assert_eq!(base.request_hash(), request("ACC-1", "2024-01-01", "2024-01-31").request_hash());
        assert_ne!(base.request_hash(), request("ACC-2", "2024-01-01", "2024-01-31").request_hash());
        assert_ne!(base.request_hash(), request("ACC-1", "2024-01-02", "2024-01-31").request_hash());
        assert_ne!(base.request_hash(), request("ACC-1", "2024-01-01", "2024-01-30").request_hash());
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
    fn account_ids_are_restricted_to_a_safe_alphabet() {
        assert!(AccountId::parse("ACC-1001").is_ok());
        assert!(AccountId::parse("acc.1_2-3").is_ok());
        for bad in ["", "-ACC", "ACC 1", "ACC'1", "ACC\\1", "ACC\"", &"x".repeat(65)] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
