//! What a completed bank statement file states: stored with the export (`exports.statement`,
//! JSON) by the worker that wrote it, and shown as is by the API.

use serde::{Deserialize, Serialize};

use crate::tables::BalanceSource;

/// A bank statement's number and what its file states (bank formats only; `balances` and
/// `statements` once the export is COMPLETED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct StatementFacts {
    /// The statement's number in its account's sequence (MT940 `:28C:`, camt.053
    /// `ElctrncSeqNb`, BAI2 file id): one number per account, period and time zone, whatever
    /// the format, kept when the export is reused or refreshed.
    pub number: i64,
    // No doc comment (see the API's `ExportAccepted::status`): `BalanceOrigin` documents itself;
    // absent until the export completes.
    #[allow(missing_docs)]
    pub balances: Option<BalanceSource>,
    /// One per currency (camt.053 and OFX hold several; MT940 and BAI2 one). Empty until the
    /// export completes.
    #[serde(default)]
    pub statements: Vec<CurrencyStatement>,
}

/// One currency's statement in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CurrencyStatement {
    /// ISO 4217 code.
    pub currency: String,
    /// Balance at the start of the first day (a decimal string with the currency's minor units).
    pub opening_balance: String,
    /// Balance at the end of the last day.
    pub closing_balance: String,
    // No doc comments on the two (see the API's `ExportAccepted::status`): credits (amount ≥ 0),
    // then debits summed as a positive amount.
    #[allow(missing_docs)]
    pub credits: EntryTotals,
    #[allow(missing_docs)]
    pub debits: EntryTotals,
}

/// A count of entries and their sum: a statement's `credits` (amount ≥ 0) or `debits` (summed
/// as a positive amount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct EntryTotals {
    /// Entries.
    pub count: i64,
    /// Their sum (a decimal string).
    pub sum: String,
}
