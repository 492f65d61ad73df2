//! Exportable tables: which source tables a client may name, and how to read them.
//!
//! Column lists, the account column, the date column and the tie-breaking id column are
//! configuration. A request only ever names a configured table by its public name; no
//! identifier from a request reaches SQL.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Deserialize;

use crate::{
    statement::{AccountId, DateRange},
    time_zones::StatementZone,
};

/// Why the table configuration (`EXPORT_TABLES_FILE`) is refused.
#[derive(Debug, thiserror::Error)]
pub enum TableConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A table's settings are not usable.
    #[error("table {table:?}: {problem}")]
    Invalid {
        /// The table's name.
        table: String,
        /// What is wrong.
        problem: String,
    },
}

/// One exportable table as configured.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// The name clients use in `table_name`.
    pub name: String,
    /// The table in the source database (defaults to `name`).
    #[serde(default)]
    pub source_table: Option<String>,
    /// The column holding the account id.
    pub account_column: String,
    /// A DATE or DATETIME column; the range is `[date_from, date_to + 1 day)`.
    pub date_column: String,
    /// Unique column that orders rows within a day (the export order is date, id).
    pub id_column: String,
    /// Columns in the order they appear in the CSV.
    pub columns: Vec<String>,
    /// The time zone DATETIME values of this table are written in (an IANA name; UTC when
    /// absent). TIMESTAMP columns are read in UTC whatever this says.
    #[serde(default)]
    pub source_time_zone: Option<String>,
    /// How rows become a bank statement's entries; without it the table exports as CSV and
    /// JSON Lines only.
    #[serde(default)]
    pub statement: Option<StatementMapping>,
}

/// Which columns make a statement entry, and where the account's identifiers and balances come
/// from. Every name is a column of the table unless said otherwise. The booking date is the
/// table's `date_column`; the entry's id is its `id_column`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatementMapping {
    /// The amount: signed (credits positive, debits negative), or unsigned with
    /// `credit_debit` saying which.
    pub amount: String,
    /// The amount is in the currency's minor units (cents), not in units.
    #[serde(default)]
    pub amount_in_minor_units: bool,
    /// A column saying whether the entry is a credit or a debit (the amount is then its
    /// magnitude).
    #[serde(default)]
    pub credit_debit: Option<CreditDebit>,
    /// The ISO 4217 currency code of each entry. Without it, every entry is in the account's
    /// currency (`accounts.currency`, else `default_currency`).
    #[serde(default)]
    pub currency: Option<String>,
    /// The currency of an account that names none itself (ISO 4217 code, e.g. `EUR`).
    #[serde(default)]
    pub default_currency: Option<String>,
    /// Value date (DATE or DATETIME).
    #[serde(default)]
    pub value_date: Option<String>,
    /// Remittance information / description.
    #[serde(default)]
    pub description: Option<String>,
    /// The counterparty's name.
    #[serde(default)]
    pub counterparty_name: Option<String>,
    /// The counterparty's account (IBAN or number).
    #[serde(default)]
    pub counterparty_account: Option<String>,
    /// The entry's reference.
    #[serde(default)]
    pub reference: Option<String>,
    /// The bank's transaction code.
    #[serde(default)]
    pub bank_transaction_code: Option<String>,
    /// The account's balance after the entry, in the export's order (date, id): opening and
    /// closing balances are read from it.
    #[serde(default)]
    pub balance_after: Option<String>,
    /// A table of end-of-day balances: opening and closing balances are read from it.
    #[serde(default)]
    pub balances: Option<BalancesTable>,
    /// A table of accounts: identifiers (IBAN, BIC, number, routing) and name.
    #[serde(default)]
    pub accounts: Option<AccountsTable>,
}

/// A credit/debit indicator column and the values that mean each.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreditDebit {
    /// The column.
    pub column: String,
    /// The value meaning credit (e.g. `C`, `CRDT`).
    pub credit: String,
    /// The value meaning debit (e.g. `D`, `DBIT`).
    pub debit: String,
}

/// End-of-day balances: one row per account (and currency) per date, the balance at the end of
/// that date (a date in the statement time zone).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BalancesTable {
    /// The table.
    pub table: String,
    /// Its account id column.
    pub account_column: String,
    /// Its DATE column.
    pub date_column: String,
    /// The balance at the end of that date (in units, or minor units like the amount).
    pub balance_column: String,
    /// Its currency column, when an account holds several currencies.
    #[serde(default)]
    pub currency_column: Option<String>,
}

/// The accounts: one row per account id.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountsTable {
    /// The table.
    pub table: String,
    /// Its account id column.
    pub account_column: String,
    /// IBAN column.
    #[serde(default)]
    pub iban: Option<String>,
    /// BIC column.
    #[serde(default)]
    pub bic: Option<String>,
    /// Domestic account number column.
    #[serde(default)]
    pub number: Option<String>,
    /// Routing number / bank code / sort code column.
    #[serde(default)]
    pub routing: Option<String>,
    /// Account name (owner) column.
    #[serde(default)]
    pub name: Option<String>,
    /// The account's currency (ISO 4217) column.
    #[serde(default)]
    pub currency: Option<String>,
}

impl StatementMapping {
    fn validate(&self, spec: &TableSpec) -> Result<(), String> {
        let reads = self.source_reads(spec);
        let identifiers = reads.iter().flat_map(|(table, columns)| std::iter::once(table).chain(columns));
        for ident in identifiers {
            if !is_identifier(ident) {
                return Err(format!(
                    "statement: {ident:?} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
        }
        if let Some(cd) = &self.credit_debit {
            for value in [&cd.credit, &cd.debit] {
                let plain = !value.is_empty()
                    && value.len() <= 16
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_'));
                if !plain {
                    return Err(format!(
                        "statement.credit_debit: {value:?} must be 1 to 16 of A-Z a-z 0-9 + - _"
                    ));
                }
            }
            if cd.credit.eq_ignore_ascii_case(&cd.debit) {
                return Err("statement.credit_debit: credit and debit must differ (in more than case)".into());
            }
        }
        if let Some(code) =
            self.default_currency.as_ref().filter(|c| crate::formats::Currency::from_code(c).is_none())
        {
            return Err(format!("statement.default_currency: {code:?} is not an ISO 4217 currency code"));
        }
        let account_currency = self.accounts.as_ref().is_some_and(|a| a.currency.is_some());
        if self.currency.is_none() && !account_currency && self.default_currency.is_none() {
            return Err("statement: name the entries' currency (currency), the accounts table's \
                        (accounts.currency) or a default_currency"
                .into());
        }
        if self.balance_after.is_some() && self.balances.is_some() {
            return Err("statement: balance_after and balances are alternatives; configure one".into());
        }
        if self.currency.is_some() && self.balances.as_ref().is_some_and(|b| b.currency_column.is_none()) {
            return Err("statement.balances: entries have a currency column, so the balances table needs \
                        currency_column"
                .into());
        }
        Ok(())
    }

    /// The columns a statement reads beyond the table's own (`table` is `None` for the
    /// table itself): the mapping's entry columns, and the accounts and balances tables'.
    pub(crate) fn source_reads<'a>(&'a self, spec: &'a TableSpec) -> Vec<(&'a str, Vec<&'a str>)> {
        let mut own = vec![self.amount.as_str()];
        own.extend(
            [
                &self.currency,
                &self.value_date,
                &self.description,
                &self.counterparty_name,
                &self.counterparty_account,
                &self.reference,
                &self.bank_transaction_code,
                &self.balance_after,
            ]
            .into_iter()
            .flatten()
            .map(String::as_str),
        );
        own.extend(self.credit_debit.as_ref().map(|cd| cd.column.as_str()));
        let mut reads = vec![(spec.source_table(), own)];
        if let Some(b) = &self.balances {
            let mut columns = vec![b.account_column.as_str(), &b.date_column, &b.balance_column];
            columns.extend(b.currency_column.as_deref());
            reads.push((b.table.as_str(), columns));
        }
        if let Some(a) = &self.accounts {
            let mut columns = vec![a.account_column.as_str()];
            columns.extend(
                [&a.iban, &a.bic, &a.number, &a.routing, &a.name, &a.currency]
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
            reads.push((a.table.as_str(), columns));
        }
        reads
    }

    /// Where the statement's balances come from.
    pub fn balance_source(&self) -> BalanceSource {
        if self.balance_after.is_some() || self.balances.is_some() {
            BalanceSource::Source
        } else {
            BalanceSource::Computed
        }
    }
}

/// Where a statement's balances come from: `source` (the table's running balance or balances
/// table, checked against the entries) or `computed` (the sum of every earlier entry, plus the
/// period's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename = "BalanceOrigin", rename_all = "lowercase"))]
pub enum BalanceSource {
    /// Read from the source and checked: opening + entries = closing.
    Source,
    /// Computed from the entries.
    Computed,
}

impl BalanceSource {
    /// `source` or `computed`, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Computed => "computed",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    tables: Vec<TableSpec>,
}

/// The configured tables, by public name.
#[derive(Debug, Clone)]
pub struct TableRegistry {
    tables: BTreeMap<String, TableSpec>,
}

impl TableRegistry {
    /// The demo dataset's table, used when `EXPORT_TABLES_FILE` is not set.
    pub fn demo() -> Self {
        Self::new(vec![TableSpec {
            name: "bank_transactions".into(),
            source_table: None,
            account_column: "account_id".into(),
            date_column: "txn_date".into(),
            id_column: "id".into(),
            columns: [
                "id",
                "account_id",
                "txn_date",
                "posted_at",
                "description",
                "counterparty",
                "amount",
                "currency",
                "reference",
            ]
            .map(String::from)
            .to_vec(),
            source_time_zone: None,
            statement: Some(StatementMapping {
                amount: "amount".into(),
                currency: Some("currency".into()),
                description: Some("description".into()),
                counterparty_name: Some("counterparty".into()),
                reference: Some("reference".into()),
                ..StatementMapping::default()
            }),
        }])
        .expect("the demo table configuration is valid")
    }

    /// Reads `{"tables": [TableSpec, …]}` from a JSON file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, TableConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TableConfigError::Read { path: path.display().to_string(), source })?;
        let file: TablesFile = serde_json::from_str(&text)?;
        Self::new(file.tables)
    }

    /// The tables, each checked (names, identifiers, columns).
    pub fn new(specs: Vec<TableSpec>) -> Result<Self, TableConfigError> {
        let mut tables = BTreeMap::new();
        for spec in specs {
            spec.validate()?;
            let name = spec.name.clone();
            if tables.insert(name.clone(), spec).is_some() {
                return Err(TableConfigError::Invalid { table: name, problem: "configured twice".into() });
            }
        }
        if tables.is_empty() {
            return Err(TableConfigError::Invalid {
                table: String::new(),
                problem: "no tables configured".into(),
            });
        }
        Ok(Self { tables })
    }

    /// The table clients call `name`.
    pub fn get(&self, name: &str) -> Option<&TableSpec> {
        self.tables.get(name)
    }

    /// The names clients may use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Every table.
    pub fn iter(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values()
    }
}

impl TableSpec {
    /// The zone DATETIME values are written in.
    pub fn source_zone(&self) -> crate::time_zones::StatementZone {
        self.source_time_zone
            .as_deref()
            .map(|zone| crate::time_zones::StatementZone::parse(zone).expect("validated with the table"))
            .unwrap_or_else(crate::time_zones::StatementZone::utc)
    }

    /// The table in the source database.
    pub fn source_table(&self) -> &str {
        self.source_table.as_deref().unwrap_or(&self.name)
    }

    fn validate(&self) -> Result<(), TableConfigError> {
        let invalid = |problem: String| TableConfigError::Invalid { table: self.name.clone(), problem };
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(invalid("name must be 1 to 64 characters".into()));
        }
        let identifiers = [self.source_table(), &self.account_column, &self.date_column, &self.id_column]
            .into_iter()
            .chain(self.columns.iter().map(String::as_str));
        for ident in identifiers {
            if !is_identifier(ident) {
                return Err(invalid(format!(
                    "{ident:?} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
                )));
            }
        }
        if self.columns.is_empty() {
            return Err(invalid("columns must not be empty".into()));
        }
        if let Some(zone) = &self.source_time_zone {
            crate::time_zones::StatementZone::parse(zone)
                .map_err(|_| invalid(format!("source_time_zone: {zone:?} is not an IANA time zone name")))?;
        }
        if let Some(mapping) = &self.statement {
            mapping.validate(self).map_err(invalid)?;
        }
        Ok(())
    }

    /// The streaming SELECT for one statement: configured identifiers only; the account id and
    /// the period's bounds are validated values (see [`AccountId`], [`Bounds`]), written as
    /// literals because the text protocol returns every value exactly as the server stores it.
    /// `index`: the index to read through ([`crate::source::export_index`]), named in a
    /// `FORCE INDEX` hint.
    pub fn select_sql(&self, account: &AccountId, bounds: &Bounds, index: Option<&str>) -> String {
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        self.rows_sql(&columns, account, bounds, index, None)
    }

    /// `SELECT columns FROM table [FORCE INDEX] WHERE <account> AND <period> [AND <extra>]
    /// ORDER BY date, id`.
    pub(crate) fn rows_sql(
        &self,
        columns: &[&str],
        account: &AccountId,
        bounds: &Bounds,
        index: Option<&str>,
        extra: Option<&str>,
    ) -> String {
        let mut sql = String::from("SELECT ");
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "`{column}`");
        }
        let _ = write!(
            sql,
            " FROM {from} WHERE {account} AND {period}{extra} ORDER BY `{date}`, `{id}`",
            from = self.table_sql(index),
            account = self.account_sql(account),
            period = bounds.sql(&self.date_column),
            extra = extra.map(|e| format!(" AND {e}")).unwrap_or_default(),
            date = self.date_column,
            id = self.id_column,
        );
        sql
    }

    /// `` `table` FORCE INDEX (`index`) ``.
    pub(crate) fn table_sql(&self, index: Option<&str>) -> String {
        let hint = index.map(|i| format!(" FORCE INDEX (`{}`)", i.replace('`', "``"))).unwrap_or_default();
        format!("`{}`{hint}", self.source_table())
    }

    /// `` `account_column` = 'ACC-1' ``.
    pub(crate) fn account_sql(&self, account: &AccountId) -> String {
        format!("`{}` = '{}'", self.account_column, account.as_str())
    }
}

/// A statement's period as the source's date column compares it: the rows with
/// `lo <= date < hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    lo: String,
    hi: String,
}

impl Bounds {
    /// The period `range` of days in `zone`, for a date column whose values are DATEs
    /// (`column_zone` `None`) or wall-clock times in `column_zone` (DATETIME, TIMESTAMP). A
    /// DATE, or a DATETIME in the statement's own zone, compares with the days themselves;
    /// otherwise the bounds are the wall-clock times, in the column's zone, at which the first
    /// day and the day after the last start in the statement's zone.
    pub fn new(range: &DateRange, zone: &StatementZone, column_zone: Option<&StatementZone>) -> Self {
        match column_zone {
            Some(column_zone) if column_zone != zone => {
                let wall_clock = |date| {
                    column_zone.wall_clock(zone.day_start(date)).strftime("%Y-%m-%d %H:%M:%S").to_string()
                };
                Self { lo: wall_clock(range.from()), hi: wall_clock(range.end_exclusive()) }
            }
            _ => Self { lo: range.from().to_string(), hi: range.end_exclusive().to_string() },
        }
    }

    /// `` `column` >= 'lo' AND `column` < 'hi' ``.
    pub(crate) fn sql(&self, column: &str) -> String {
        format!("`{column}` >= '{}' AND `{column}` < '{}'", self.lo, self.hi)
    }

    /// `` `column` < 'lo' ``: before the period.
    pub(crate) fn before_sql(&self, column: &str) -> String {
        format!("`{column}` < '{}'", self.lo)
    }

    /// `` `column` < 'hi' ``: up to the period's end.
    pub(crate) fn until_end_sql(&self, column: &str) -> String {
        format!("`{column}` < '{}'", self.hi)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_identifiers_that_are_not_plain() {
        let mut spec = TableRegistry::demo().get("bank_transactions").unwrap().clone();
        spec.columns.push("amount`; DROP TABLE x; --".into());
        let err = TableRegistry::new(vec![spec]).unwrap_err();
        assert!(err.to_string().contains("not a plain SQL identifier"), "{err}");
    }

    #[test]
    fn select_orders_by_date_then_id_over_a_half_open_range() {
        let registry = TableRegistry::demo();
        let spec = registry.get("bank_transactions").unwrap();
        let account = AccountId::parse("ACC-1001").unwrap();
        let range = DateRange::parse("2024-01-01", "2024-01-31", 366).unwrap();
        let utc = StatementZone::utc();
        let sql = spec.select_sql(&account, &Bounds::new(&range, &utc, None), None);
        assert!(sql.contains("FROM `bank_transactions` WHERE `account_id` = 'ACC-1001'"), "{sql}");
        assert!(sql.contains("`txn_date` >= '2024-01-01' AND `txn_date` < '2024-02-01'"), "{sql}");
        assert!(sql.ends_with("ORDER BY `txn_date`, `id`"), "{sql}");
        let hinted = spec.select_sql(&account, &Bounds::new(&range, &utc, Some(&utc)), Some("odd`name"));
        assert!(hinted.contains("FROM `bank_transactions` FORCE INDEX (`odd``name`) WHERE"), "{hinted}");
        assert!(hinted.contains("`txn_date` >= '2024-01-01' AND `txn_date` < '2024-02-01'"), "{hinted}");
    }

    #[test]
    fn a_datetime_column_in_another_zone_is_bounded_where_the_bank_s_days_start() {
        let range = DateRange::parse("2024-03-31", "2024-10-27", 366).unwrap();
        let berlin = StatementZone::parse("Europe/Berlin").unwrap();
        let utc = StatementZone::utc();
        // Stored in UTC, asked in Berlin: 2024-03-31 starts at 23:00 UTC the day before (CET);
        // 2024-10-28 starts at 23:00 UTC on the 27th (CET again after the change back).
        let bounds = Bounds::new(&range, &berlin, Some(&utc));
        assert_eq!(bounds.sql("t"), "`t` >= '2024-03-30 23:00:00' AND `t` < '2024-10-27 23:00:00'");
        // A DATE column, or a DATETIME in the bank's own zone, compares with the days.
        assert_eq!(Bounds::new(&range, &berlin, None).sql("t"), "`t` >= '2024-03-31' AND `t` < '2024-10-28'");
        assert_eq!(Bounds::new(&range, &berlin, Some(&berlin)), Bounds::new(&range, &berlin, None));
    }
}
