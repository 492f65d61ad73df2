//! Why an export did not complete, as clients and operators see it: one [`FailureCode`] per
//! failure class, each with a fixed message. The worker stores the code (`exports.error_code`,
//! `jobs.last_error`); the API and the dashboard derive the message from it. The cause itself
//! (driver text, user names, hosts, addresses, file paths, URLs, bucket names) goes to the
//! worker's log only, written once by [`Cause`].

use std::{error::Error, fmt};

/// A failure class. The code strings are persisted data and part of the API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The source database could not be reached (connection refused or reset, DNS, timeout,
    /// too many connections, server shutting down).
    SourceUnavailable,
    /// The source database refused the login (wrong user or password).
    SourceAuthFailed,
    /// The source user lacks a privilege the export needs (SELECT on the table).
    SourceAccessDenied,
    /// A configured database, table or column does not exist in the source.
    SourceSchemaMismatch,
    /// The source refused or failed the export's query for another reason.
    SourceQueryFailed,
    /// The source sent a value the export cannot write (not text in the text protocol).
    SourceUnexpectedData,
    /// The source stopped sending rows for the stall timeout (`EXPORT_STALL_TIMEOUT_SECS`).
    SourceStalled,
    /// The source replica lags its primary more than `SOURCE_MAX_LAG_SECS`.
    SourceLagging,
    /// The source replica's replication is stopped or broken.
    SourceReplicationStopped,
    /// Storage could not be reached or did not answer in time.
    StorageUnavailable,
    /// Storage refused the write: permissions, credentials, a read-only or misshapen folder.
    StorageWriteRefused,
    /// Storage is full.
    StorageFull,
    /// The bucket (or the local storage folder) does not exist.
    StorageMissing,
    /// The table is no longer configured for export.
    TableNotConfigured,
    /// The client cancelled the export.
    Cancelled,
    /// An operator cancelled the export from the dashboard.
    CancelledByOperator,
    /// The worker shut down during the attempt; another worker resumes the export.
    WorkerShutdown,
    /// The worker running the export was lost (crashed or stalled past its lease).
    WorkerLost,
    /// The worker was lost during every attempt: no attempts are left.
    AttemptsExhausted,
    /// Anything else: the service's own database, a bug. Never a client's fault.
    Internal,
    /// Recorded before failures were classified (free text that is no longer shown).
    Unclassified,
}

impl FailureCode {
    /// Every code, in documentation order.
    pub const ALL: [Self; 21] = [
        Self::SourceUnavailable,
        Self::SourceAuthFailed,
        Self::SourceAccessDenied,
        Self::SourceSchemaMismatch,
        Self::SourceQueryFailed,
        Self::SourceUnexpectedData,
        Self::SourceStalled,
        Self::SourceLagging,
        Self::SourceReplicationStopped,
        Self::StorageUnavailable,
        Self::StorageWriteRefused,
        Self::StorageFull,
        Self::StorageMissing,
        Self::TableNotConfigured,
        Self::Cancelled,
        Self::CancelledByOperator,
        Self::WorkerShutdown,
        Self::WorkerLost,
        Self::AttemptsExhausted,
        Self::Internal,
        Self::Unclassified,
    ];

    /// The stored and returned code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceUnavailable => "source_unavailable",
            Self::SourceAuthFailed => "source_auth_failed",
            Self::SourceAccessDenied => "source_access_denied",
            Self::SourceSchemaMismatch => "source_schema_mismatch",
            Self::SourceQueryFailed => "source_query_failed",
            Self::SourceUnexpectedData => "source_unexpected_data",
            Self::SourceStalled => "source_stalled",
            Self::SourceLagging => "source_lagging",
            Self::SourceReplicationStopped => "source_replication_stopped",
            Self::StorageUnavailable => "storage_unavailable",
            Self::StorageWriteRefused => "storage_write_refused",
            Self::StorageFull => "storage_full",
            Self::StorageMissing => "storage_missing",
            Self::TableNotConfigured => "table_not_configured",
            Self::Cancelled => "cancelled",
            Self::CancelledByOperator => "cancelled_by_operator",
            Self::WorkerShutdown => "worker_shutdown",
            Self::WorkerLost => "worker_lost",
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::Internal => "internal",
            Self::Unclassified => "unclassified",
        }
    }

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
            Self::Cancelled => "the export was cancelled",
            Self::CancelledByOperator => "the export was cancelled by an operator",
            Self::WorkerShutdown => "the worker shut down; another worker will resume the export",
            Self::WorkerLost => "the worker running the export was lost",
            Self::AttemptsExhausted => {
                "the export was interrupted too many times (the worker was lost during every attempt)"
            }
            Self::Internal => "an internal error stopped the export",
            Self::Unclassified => "the export did not complete (recorded before failures were classified)",
        }
    }

    /// The code for a stored string; `None` for anything else (free text of an older release).
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == raw)
    }

    /// What a stored value is shown as: its code, or [`FailureCode::Unclassified`] for free
    /// text (older releases stored causes verbatim; they are never echoed) and for a code of a
    /// newer release during a rolling upgrade.
    pub fn from_stored(raw: &str) -> Self {
        Self::parse(raw).unwrap_or(Self::Unclassified)
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
pub fn io_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a std::io::Error> {
    find_all::<std::io::Error>(error).last()
}

/// Every error of type `T` in an error's chain, outermost first.
pub fn find_all<'a, T: Error + 'static>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a T> {
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
