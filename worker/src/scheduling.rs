//! The maintenance leader's scheduler step: recurring statements asked for on time
//! ([`shared::schedules::scheduler`]), with the accounts of all-accounts schedules read from
//! the source's accounts tables.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use mysql_async::prelude::Queryable as _;
use shared::{
    config::Config,
    schedules::scheduler::{self, AccountDirectory, Report, Settings},
    source::Source,
    tables::TableRegistry,
};
use time::OffsetDateTime;
use tracing::warn;

use crate::jobs::JobContext;

/// The scheduler's clock: the database's `now()`, or (benchmarks) a time set from outside.
#[derive(Debug, Clone, Default)]
pub struct SchedulerClock(Option<Arc<AtomicI64>>);

impl SchedulerClock {
    /// A clock that reads the Unix time (seconds) `at` holds; whoever holds `at` moves it.
    pub fn driven(at: Arc<AtomicI64>) -> Self {
        Self(Some(at))
    }

    async fn now(&self, db: &deadpool_postgres::Object) -> Result<OffsetDateTime, shared::db::DbError> {
        match &self.0 {
            Some(at) => Ok(OffsetDateTime::from_unix_timestamp(at.load(Ordering::Relaxed))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)),
            None => Ok(db.query_one("SELECT now()", &[]).await?.get(0)),
        }
    }
}

/// The scheduler's settings from the configuration.
pub(crate) fn settings(config: &Config) -> Settings {
    let schedules = &config.schedules;
    Settings {
        batch: 500,
        max_batches: 20,
        backfill_days: schedules.backfill_days,
        retry_limit: schedules.retry_limit,
        retry_after: schedules.retry_after,
        defer: schedules.defer,
        max_outstanding: schedules.max_outstanding_per_key,
        max_attempts: config.export_max_attempts,
        reuse: schedules.reuse,
    }
}

/// One scheduler pass; failures are logged (the next pass tries again: nothing is lost).
pub(crate) async fn run(ctx: &JobContext) -> Report {
    let pass = async {
        let mut db = ctx.pool.get().await?;
        let now = ctx.scheduler_clock.now(&db).await?;
        let directory = SourceAccounts { source: &ctx.source, tables: &ctx.tables };
        scheduler::pass(&mut db, now, &ctx.scheduler, &directory).await
    };
    match pass.await {
        Ok(report) => report,
        Err(e) => {
            warn!(error = %e, "maintenance: the scheduler pass failed");
            Report::default()
        }
    }
}

/// The accounts of a table's accounts table, from the source.
struct SourceAccounts<'a> {
    source: &'a Source,
    tables: &'a TableRegistry,
}

impl AccountDirectory for SourceAccounts<'_> {
    async fn accounts(&self, table: &str) -> Result<Vec<String>, String> {
        let accounts_table = self
            .tables
            .get(table)
            .and_then(|spec| spec.statement.as_ref())
            .and_then(|mapping| mapping.accounts.as_ref())
            .ok_or_else(|| format!("table {table:?} has no accounts table"))?;
        let mut conn = self.source.connect().await.map_err(|e| e.to_string())?;
        let sql = format!(
            "SELECT DISTINCT `{column}` FROM `{table}` WHERE `{column}` IS NOT NULL ORDER BY 1",
            column = accounts_table.account_column,
            table = accounts_table.table,
        );
        let accounts: Vec<String> = conn.query(sql).await.map_err(|e| e.to_string())?;
        Ok(accounts)
    }
}
