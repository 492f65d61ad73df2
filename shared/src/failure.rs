//! Why an export did not complete, as clients and operators see it: one [`FailureCode`] per
//! failure class, each with a fixed message. The worker stores the code (`exports.error_code`,
//! `jobs.last_error`); the API and the dashboard derive the message from it. The cause itself
//! (driver text, user names, hosts, addresses, file paths, URLs, bucket names) goes to the
//! worker's log only, written once by [`Cause`].

use std::{error::Error, fmt};

use crate::db::text_enum;

text_enum! {
    /// Why an export failed (FAILED), was cancelled (CANCELLED), or why its last attempt failed
    /// (PENDING: it will be retried). Each code has one fixed message, returned as `error`:
    ///
    /// | code | `error` |
    /// |---|---|
    /// | `source_unavailable` | the source database could not be reached |
    /// | `source_auth_failed` | the source database refused the connection |
    /// | `source_access_denied` | the source database user may not read the table |
    /// | `source_schema_mismatch` | the configured table or column does not exist in the source database |
    /// | `source_query_failed` | the source database could not run the export's query |
    /// | `source_unexpected_data` | the source database sent a value the export cannot write |
    /// | `source_stalled` | the source database stopped sending rows |
    /// | `source_lagging` | the source replica is too far behind its primary |
    /// | `source_replication_stopped` | the source replica is not replicating |
    /// | `storage_unavailable` | storage is unavailable |
    /// | `storage_write_refused` | storage refused to store the export file |
    /// | `storage_full` | storage is full |
    /// | `storage_missing` | the storage bucket or folder does not exist |
    /// | `table_not_configured` | the table is no longer configured for export |
    /// | `several_currencies` | the account has entries in several currencies in this period, and the format holds one: ask for camt.053 or ofx |
    /// | `balance_mismatch` | the source's opening balance plus the period's entries does not equal its closing balance |
    /// | `account_not_found` | the account is not in the configured accounts table |
    /// | `statement_value_invalid` | the source holds a value a bank statement cannot carry |
    /// | `cancelled` | the export was cancelled |
    /// | `cancelled_by_operator` | the export was cancelled by an operator |
    /// | `worker_shutdown` | the worker shut down; another worker will resume the export |
    /// | `worker_lost` | the worker running the export was lost |
    /// | `attempts_exhausted` | the export was interrupted too many times (the worker was lost during every attempt) |
    /// | `internal` | an internal error stopped the export |
    /// | `webhook_delivery_failed` | a webhook endpoint did not accept a delivery (a delivery job's failure, never an export's) |
    /// | `unclassified` | the export did not complete (recorded before failures were classified) |
    ///
    /// The cause (driver messages, hosts, paths) is in the worker's log, on a line with the
    /// export's id; it is never returned. Clients should expect codes added in later releases.
    // The codes are persisted data and part of the API: never rename one. This comment is the
    // API's `ErrorCode` schema; the table is checked against `message()` by a test in `api`.
    #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
    #[cfg_attr(feature = "openapi", oai(rename = "ErrorCode", rename_all = "snake_case"))]
    pub enum FailureCode {
        /// The source database could not be reached (connection refused or reset, DNS, timeout,
        /// too many connections, server shutting down).
        SourceUnavailable = "source_unavailable",
        /// The source database refused the login (wrong user or password).
        SourceAuthFailed = "source_auth_failed",
        /// The source user lacks a privilege the export needs (SELECT on the table).
        SourceAccessDenied = "source_access_denied",
        /// A configured database, table or column does not exist in the source.
        SourceSchemaMismatch = "source_schema_mismatch",
        /// The source refused or failed the export's query for another reason.
        SourceQueryFailed = "source_query_failed",
        /// The source sent a value the export cannot write (not text in the text protocol).
        SourceUnexpectedData = "source_unexpected_data",
        /// The source stopped sending rows for the stall timeout (`EXPORT_STALL_TIMEOUT_SECS`).
        SourceStalled = "source_stalled",
        /// The source replica lags its primary more than `SOURCE_MAX_LAG_SECS`.
        SourceLagging = "source_lagging",
        /// The source replica's replication is stopped or broken.
        SourceReplicationStopped = "source_replication_stopped",
        /// Storage could not be reached or did not answer in time.
        StorageUnavailable = "storage_unavailable",
        /// Storage refused the write: permissions, credentials, a read-only or misshapen folder.
        StorageWriteRefused = "storage_write_refused",
        /// Storage is full.
        StorageFull = "storage_full",
        /// The bucket (or the local storage folder) does not exist.
        StorageMissing = "storage_missing",
        /// The table is no longer configured for export.
        TableNotConfigured = "table_not_configured",
        /// A single-currency format (MT940, BAI2) was asked for an account with entries in
        /// several currencies in the period; `error_detail` names them.
        SeveralCurrencies = "several_currencies",
        /// The source's balances and entries disagree (opening + entries ≠ closing);
        /// `error_detail` gives the figures. No statement is written.
        BalanceMismatch = "balance_mismatch",
        /// The table's statement mapping names an accounts table without this account.
        AccountNotFound = "account_not_found",
        /// A value a statement cannot carry: an amount with more decimals than its currency, a
        /// currency that is not ISO 4217, a credit/debit indicator that is neither, a NULL
        /// amount; `error_detail` names the entry.
        StatementValueInvalid = "statement_value_invalid",
        /// The client cancelled the export.
        Cancelled = "cancelled",
        /// An operator cancelled the export from the dashboard.
        CancelledByOperator = "cancelled_by_operator",
        /// The worker shut down during the attempt; another worker resumes the export.
        WorkerShutdown = "worker_shutdown",
        /// The worker running the export was lost (crashed or stalled past its lease).
        WorkerLost = "worker_lost",
        /// The worker was lost during every attempt: no attempts are left.
        AttemptsExhausted = "attempts_exhausted",
        /// Anything else: the service's own database, a bug. Never a client's fault.
        Internal = "internal",
        /// A webhook endpoint did not accept a delivery (the delivery log says why). Recorded on
        /// a `deliver_webhook` job, never on an export.
        WebhookDeliveryFailed = "webhook_delivery_failed",
        /// Recorded before failures were classified (free text that is no longer shown).
        Unclassified = "unclassified",
    }
}

impl FailureCode {
    /// The message shown with the code: fixed per code, never anything of the cause.
    pub fn message(self) -> &'static str {
        match self {
            Self::SourceUnavailable => "the source database could not be reached",
            Self::SourceAuthFailed => "the source database refused the connection",
            Self::SourceAccessDenied => "the source database user may not read the table",
            Self::SourceSchemaMismatch => {
                "the configured table or column does not exist in the source database"
            }
            Self::SourceQueryFailed => "the source database could not run the export's query",
            Self::SourceUnexpectedData => "the source database sent a value the export cannot write",
            Self::SourceStalled => "the source database stopped sending rows",
            Self::SourceLagging => "the source replica is too far behind its primary",
            Self::SourceReplicationStopped => "the source replica is not replicating",
            Self::StorageUnavailable => "storage is unavailable",
            Self::StorageWriteRefused => "storage refused to store the export file",
            Self::StorageFull => "storage is full",
            Self::StorageMissing => "the storage bucket or folder does not exist",
            Self::TableNotConfigured => "the table is no longer configured for export",
            Self::SeveralCurrencies => {
                "the account has entries in several currencies in this period, and the format holds one: ask for camt.053 or ofx"
            }
            Self::BalanceMismatch => {
                "the source's opening balance plus the period's entries does not equal its closing balance"
            }
            Self::AccountNotFound => "the account is not in the configured accounts table",
            Self::StatementValueInvalid => "the source holds a value a bank statement cannot carry",
            Self::Cancelled => "the export was cancelled",
            Self::CancelledByOperator => "the export was cancelled by an operator",
            Self::WorkerShutdown => "the worker shut down; another worker will resume the export",
            Self::WorkerLost => "the worker running the export was lost",
            Self::AttemptsExhausted => {
                "the export was interrupted too many times (the worker was lost during every attempt)"
            }
            Self::Internal => "an internal error stopped the export",
            Self::WebhookDeliveryFailed => {
                "a webhook endpoint did not accept a delivery (a delivery job's failure, never an export's)"
            }
            Self::Unclassified => "the export did not complete (recorded before failures were classified)",
        }
    }

    /// What a stored value is shown as: its code, or [`FailureCode::Unclassified`] for free
    /// text (older releases stored causes verbatim; they are never echoed) and for a code of a
    /// newer release during a rolling upgrade.
    pub fn from_stored(raw: &str) -> Self {
        Self::parse(raw).unwrap_or(Self::Unclassified)
    }
}

/// Formats an error and its sources for the log, naming each cause once. Many errors embed
/// their source's text in their own message *and* return it as `source()` (object_store's
/// `Generic`, mysql_async's `Server`), so `{:#}` of a chain repeats the innermost cause (a
/// storage error once carried its PUT URL three times). A message already contained in the
/// text written so far is skipped.
pub struct Cause<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = String::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(self.0);
        while let Some(error) = next {
            let message = error.to_string();
            if !message.is_empty() && !written.contains(&message) {
                if !written.is_empty() {
                    written.push_str(": ");
                }
                written.push_str(&message);
            }
            next = error.source();
        }
        f.write_str(&written)
    }
}

/// The innermost `std::io::Error` in an error's chain: what the operating system said. Outer
/// ones are often wrappers of other errors with kind `Other` (object_store's `BufWriter` turns
/// its errors into `io::Error`s).
pub(crate) fn io_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a std::io::Error> {
    find_all::<std::io::Error>(error).last()
}

/// Every error of type `T` in an error's chain, outermost first.
pub(crate) fn find_all<'a, T: Error + 'static>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a T> {
    std::iter::successors(Some(error), |&e| e.source()).filter_map(|e| e.downcast_ref::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_its_own_message() {
        let mut messages = std::collections::HashSet::new();
        for code in FailureCode::ALL {
            assert_eq!(FailureCode::parse(code.as_str()), Some(code));
            assert!(messages.insert(code.message()), "{code} shares its message");
        }
        assert_eq!(
            FailureCode::from_stored("attempt failed, retrying: Access denied"),
            FailureCode::Unclassified
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_embedded_in_its_wrapper_is_written_once() {
        let error = Outer(std::io::Error::from_raw_os_error(13));
        assert_eq!(Cause(&error).to_string(), "outer: Permission denied (os error 13)");
        assert_eq!(io_error(&error).unwrap().kind(), std::io::ErrorKind::PermissionDenied);
    }
}
