//! Bank statement file formats: camt.053, MT940, OFX and BAI2, written from one stream of
//! entries.
//!
//! The export engine reads a statement's figures first (balances, counts and sums per
//! currency, in the same source snapshot as the entries) and then streams the entries, in
//! booking order, one currency after another. A [`StatementWriter`] turns that into the file's
//! bytes, appending to a buffer the engine hands out in chunks: no writer holds more than one
//! entry, whatever the statement's size.
//!
//! Writers are pure: the same [`File`], statements and entries give the same bytes.

pub mod bai2;
pub mod camt053;
pub mod mt940;
pub mod ofx;
pub mod text;

use rust_decimal::Decimal;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::time_zones::StatementZone;
use uuid::Uuid;

/// The bank formats (the request's `format`, without a `.gz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BankFormat {
    /// ISO 20022 `camt.053.001.08` BankToCustomerStatement (XML).
    Camt053,
    /// SWIFT MT940 customer statement message.
    Mt940,
    /// OFX 2.2 (XML) bank statement response.
    Ofx,
    /// BAI2 cash management balance reporting.
    Bai2,
}

impl BankFormat {
    /// Whether one file may hold several statements of one account, one per currency.
    pub fn several_currencies(self) -> bool {
        matches!(self, Self::Camt053 | Self::Ofx)
    }
}

/// Settings of the bank formats (from the service's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSettings {
    /// MT940: entries per page. A longer statement is split into numbered pages (`:28C:`
    /// statement/page), intermediate pages closing with `:62M:` and the next opening with
    /// `:60M:`.
    pub mt940_entries_per_page: usize,
    /// BAI2: sender identification (file header, field 2).
    pub bai2_sender: String,
    /// BAI2: receiver identification (file header field 3, group header's ultimate receiver).
    pub bai2_receiver: String,
    /// OFX: `<FI><ORG>`, when set (with `ofx_fid`).
    pub ofx_org: Option<String>,
    /// OFX: `<FI><FID>`, when set.
    pub ofx_fid: Option<String>,
}

impl Default for FormatSettings {
    fn default() -> Self {
        Self {
            mt940_entries_per_page: 200,
            bai2_sender: "STATEMENTS".into(),
            bai2_receiver: "CUSTOMER".into(),
            ofx_org: None,
            ofx_fid: None,
        }
    }
}

/// The account a statement is of. Every text is as the source or the request gave it; writers
/// escape, transliterate and truncate as their format requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// The account id the export was asked for (always present).
    pub id: String,
    /// IBAN, when known (checked: 15 to 34 letters and digits, mod-97 valid).
    pub iban: Option<String>,
    /// BIC of the account's bank, when known (8 or 11 characters).
    pub bic: Option<String>,
    /// Domestic account number, when known.
    pub number: Option<String>,
    /// The bank's routing number / bank code / sort code, when known.
    pub routing: Option<String>,
    /// The account's name (its owner, usually), when known.
    pub name: Option<String>,
}

impl Account {
    /// What identifies the account in a format with one account field: the IBAN, else the
    /// domestic number, else the account id.
    pub fn primary_id(&self) -> &str {
        self.iban.as_deref().or(self.number.as_deref()).unwrap_or(&self.id)
    }
}

/// One export's file: what every statement in it shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// The export's id (message ids, file ids are derived from it).
    pub export_id: Uuid,
    /// When the source snapshot was taken, at the statement time zone's offset.
    pub created_at: OffsetDateTime,
    /// The statement's number in its account's sequence (1, 2, …): MT940 `:28C:`, camt.053
    /// `ElctrncSeqNb`, the BAI2 file id.
    pub sequence: i64,
    /// First day of the period (in the statement time zone).
    pub from: Date,
    /// Last day of the period, inclusive.
    pub to: Date,
    /// The account.
    pub account: Account,
    /// The format settings.
    pub settings: FormatSettings,
    /// The statement's time zone (its days are days there).
    pub time_zone: StatementZone,
}

impl File {
    /// The statement time zone's UTC offset at a wall-clock time on `date` (it changes with
    /// daylight saving time within a period).
    pub fn offset_on(&self, date: Date, hour: u8, minute: u8, second: u8) -> UtcOffset {
        self.time_zone.offset_on(date, hour, minute, second)
    }
}

/// An ISO 4217 currency: its code and its minor units (2 for EUR, 0 for JPY, 3 for KWD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency {
    code: [u8; 3],
    minor_units: u32,
}

impl Currency {
    /// The ISO 4217 currency with this alphabetic code (`EUR`), `None` for anything else.
    pub fn from_code(code: &str) -> Option<Self> {
        let currency = iso_currency::Currency::from_code(code)?;
        let minor_units = currency.exponent().map_or(0, u32::from);
        let code = code.as_bytes().try_into().ok()?;
        Some(Self { code, minor_units })
    }

    /// The alphabetic code (`EUR`).
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).expect("checked ASCII")
    }

    /// Digits after the decimal point (2 for EUR).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// `amount` with exactly [`Currency::minor_units`] decimals, `.` as separator, `-` for a
    /// negative amount (`-12.30`). Amounts reach writers already checked to fit (see
    /// [`Currency::fits`]).
    pub fn fixed(&self, amount: Decimal) -> String {
        let mut rounded = amount;
        rounded.rescale(self.minor_units);
        rounded.to_string()
    }

    /// `amount` in minor units (`-12.30` EUR is `-1230`).
    pub fn minor(&self, amount: Decimal) -> i128 {
        let mut rounded = amount;
        rounded.rescale(self.minor_units);
        rounded.mantissa()
    }

    /// Whether `amount` has no more decimals than the currency's minor units (`1.2500` EUR
    /// fits; `1.005` EUR does not: a statement never rounds an amount).
    pub fn fits(&self, amount: Decimal) -> bool {
        amount.normalize().scale() <= self.minor_units
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Count and sum of one side of a statement's entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries.
    pub count: u64,
    /// Sum of their amounts, as a positive number.
    pub sum: Decimal,
}

/// One statement of the file: the account's entries in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Position in the file, from 0.
    pub index: usize,
    /// The currency of its balances and entries.
    pub currency: Currency,
    /// The balance at the start of the first day.
    pub opening: Decimal,
    /// The balance at the end of the last day (`opening + credits.sum - debits.sum`).
    pub closing: Decimal,
    /// The number of entries, when the engine counted them before the entries: it does for
    /// camt.053 (whose `TxsSummry` precedes them) and whenever it knows `credits` and `debits`
    /// (then it is the sum of their counts).
    pub count: Option<u64>,
    /// Credits (amount ≥ 0), when the engine summed them before the entries: it does when
    /// balances are computed, and for a file of several currencies; otherwise `None` (no format
    /// needs them up front: camt.053's `TxsSummry` then gives the count and the net alone).
    pub credits: Option<Totals>,
    /// Debits (amount < 0), summed as a positive number; `None` as for `credits`.
    pub debits: Option<Totals>,
    /// The balances were computed from the entries, not read from the source.
    pub balances_computed: bool,
}

/// One entry (a source row). Texts are as the source holds them; writers make them fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The row's id-column value: unique in its table, stable across exports (OFX `FITID`,
    /// camt.053 `AcctSvcrRef`).
    pub id: &'a str,
    /// Signed: credits positive, debits negative. Never zero-scaled beyond the currency.
    pub amount: Decimal,
    /// Booking date, in the statement time zone.
    pub booking_date: Date,
    /// Value date, when the source has one.
    pub value_date: Option<Date>,
    /// Remittance information / description.
    pub description: Option<&'a str>,
    /// The counterparty's name.
    pub counterparty_name: Option<&'a str>,
    /// The counterparty's account (IBAN or number).
    pub counterparty_account: Option<&'a str>,
    /// The client's or the bank's reference for the entry.
    pub reference: Option<&'a str>,
    /// The bank's transaction code for the entry, when the source has one.
    pub bank_code: Option<&'a str>,
}

impl Entry<'_> {
    /// Whether the entry is a credit (amount > 0, and zero counts as a credit).
    pub fn is_credit(&self) -> bool {
        !self.amount.is_sign_negative() || self.amount.is_zero()
    }
}

/// Writes one file in a bank format. The engine calls, in order: `start_file`, then for each
/// statement `start_statement`, `entry` for each of its entries (in booking order), and
/// `end_statement`; then `end_file`. Each call appends to `out`.
pub trait StatementWriter: Send {
    /// The file's header.
    fn start_file(&mut self, out: &mut Vec<u8>, file: &File);
    /// A statement's header: balances and totals are known before its first entry.
    fn start_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement);
    /// One entry of the current statement.
    fn entry(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement, entry: &Entry<'_>);
    /// The statement's trailer.
    fn end_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement);
    /// The file's trailer.
    fn end_file(&mut self, out: &mut Vec<u8>, file: &File);
}

/// A writer for `format`.
pub fn writer(format: BankFormat) -> Box<dyn StatementWriter> {
    match format {
        BankFormat::Camt053 => Box::new(camt053::Camt053::default()),
        BankFormat::Mt940 => Box::new(mt940::Mt940::default()),
        BankFormat::Ofx => Box::new(ofx::Ofx::default()),
        BankFormat::Bai2 => Box::new(bai2::Bai2::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_know_their_minor_units_and_never_round() {
        let eur = Currency::from_code("EUR").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!((eur.minor_units(), jpy.minor_units(), kwd.minor_units()), (2, 0, 3));
        assert!(Currency::from_code("EU").is_none() && Currency::from_code("XYZ").is_none());
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(eur.fixed(d("-12.3")), "-12.30");
        assert_eq!(eur.minor(d("-12.3")), -1230);
        assert_eq!(jpy.fixed(d("1500.00")), "1500");
        assert!(eur.fits(d("1.2500")) && !eur.fits(d("1.005")) && !jpy.fits(d("0.5")));
    }
}
