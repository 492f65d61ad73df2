//! Exportable tables: which source tables a client may name, and how to read them.
//!
//! Column lists, the account column, the date column and the tie-breaking id column are
//! configuration. A request only ever names a configured table by its public name; no
//! identifier from a request reaches SQL.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Deserialize;

use crate::statement::{AccountId, DateRange};

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
        Ok(())
    }

    /// The streaming SELECT for one statement: configured identifiers only; the account id and
    /// dates are validated values (see [`AccountId`]), written as literals because the text
    /// protocol returns every value exactly as the server stores it.
    /// `index`: the index to read through ([`crate::source::export_index`]), named in a
    /// `FORCE INDEX` hint.
    pub fn select_sql(&self, account: &AccountId, range: &DateRange, index: Option<&str>) -> String {
        let mut sql = String::from("SELECT ");
        for (i, column) in self.columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "`{column}`");
        }
        let _ = write!(
            sql,
            " FROM `{table}`{hint} WHERE `{account_col}` = '{account}' AND `{date}` >= '{from}' AND `{date}` < '{to}' \
             ORDER BY `{date}`, `{id}`",
            table = self.source_table(),
            hint = index.map(|i| format!(" FORCE INDEX (`{}`)", i.replace('`', "``"))).unwrap_or_default(),
            account_col = self.account_column,
            account = account.as_str(),
            date = self.date_column,
            from = range.from(),
            to = range.end_exclusive(),
            id = self.id_column,
        );
        sql
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
        let sql = spec.select_sql(&account, &range, None);
        assert!(sql.contains("FROM `bank_transactions` WHERE `account_id` = 'ACC-1001'"), "{sql}");
        assert!(sql.contains("`txn_date` >= '2024-01-01' AND `txn_date` < '2024-02-01'"), "{sql}");
        assert!(sql.ends_with("ORDER BY `txn_date`, `id`"), "{sql}");
        let hinted = spec.select_sql(&account, &range, Some("odd`name"));
        assert!(hinted.contains("FROM `bank_transactions` FORCE INDEX (`odd``name`) WHERE"), "{hinted}");
    }
}
