//! A bank statement file (camt.053, MT940, OFX, BAI2) from the source, in one snapshot.
//!
//! Order of reading, all in one `START TRANSACTION WITH CONSISTENT SNAPSHOT`:
//! 1. the account (its accounts-table row, when configured);
//! 2. which currencies the period holds, and each one's counts and sums: one aggregate pass,
//!    run by the server, only where something needs them before the first entry (camt.053's
//!    and OFX's one statement per currency, once a second currency was met; balances computed
//!    from entries); otherwise the currency of the period's first entry, and for camt.053's
//!    transaction summary the number of the period's entries, counted in the index;
//! 3. each currency's opening and closing balances (a few indexed lookups, or the sum of the
//!    earlier entries when computed);
//! 4. the entries, in booking order, one currency after another, streamed into the writer.
//!
//! Balances read from the source are checked: opening + entries = closing, or the export
//! fails (`balance_mismatch`) and no file appears. A single-currency format that meets a
//! second currency fails (`several_currencies`).

use bytes::Bytes;
use mysql_async::{Conn, prelude::Queryable as _};
use rust_decimal::Decimal;
use shared::{
    exports::{self, CurrencyStatement, EntryTotals, StatementFacts},
    failure::FailureCode,
    formats::{self, BankFormat, Currency, File, Statement as FileStatement, Totals},
    ledger::{Balances, Dates, EntryColumns, Ledger, StatementError},
    source::{self, Statements},
    tables::{BalanceSource, Bounds},
};

use super::{
    JobContext, JobError,
    export_statement::{CHUNK_BYTES, Sink, Statement, record_snapshot_basis},
};

/// One statement of the file before it is written: its currency and figures.
struct Planned {
    /// The currency as the source spells it (`None` without a currency column).
    raw_code: Option<String>,
    statement: FileStatement,
}

/// Reads and writes the statement file; returns the entries written and the statement's facts
/// (the export's `statement`).
pub(super) async fn read(
    ctx: &JobContext,
    conn: &mut Conn,
    statement: &Statement<'_>,
    format: BankFormat,
    sink: &mut Sink<'_>,
) -> Result<(i64, Option<StatementFacts>), JobError> {
    let watch = sink.watch;
    let spec = statement.spec;
    let mapping = spec.statement.as_ref().ok_or_else(|| {
        JobError::fatal(
            FailureCode::TableNotConfigured,
            anyhow::anyhow!("table {:?} has no statement mapping", spec.name),
        )
    })?;
    let index = watch.source(source::export_index(conn, spec)).await?;
    let mut date_columns = vec![spec.date_column.as_str()];
    date_columns.extend(mapping.value_date.as_deref());
    let zones = watch.source(source::column_zones(conn, spec, &date_columns, &statement.time_zone)).await?;
    let dates = Dates::new(statement.time_zone.clone(), zones[0].clone(), zones.get(1).cloned().flatten());
    let bounds = Bounds::new(&statement.range, &statement.time_zone, zones[0].as_ref());
    let period = (statement.range.from(), statement.range.to());
    let ledger = Ledger::new(spec, mapping, &statement.account, bounds, period, index.as_deref());

    let snapshot =
        watch.source(ctx.source.snapshot_with_basis(conn, ctx.source_max_lag, Statements::Several)).await?;
    record_snapshot_basis(ctx, sink.attempt, &snapshot).await?;
    let snapshot_at = time::OffsetDateTime::now_utc();

    let (account, account_currency) = watch.source(ledger.account(conn)).await?;
    let computed = mapping.balance_source() == BalanceSource::Computed;
    // Computed balances need the period's sums. camt.053 and OFX need their currencies first
    // only when the period holds several, which they learn from meeting a second one (then
    // they start over: `JobError::Replan`). camt.053's transaction summary needs the number of
    // entries before them: counted in the index alone when nothing was summed.
    let several_possible = format.several_currencies() && mapping.currency.is_some();
    let summed_first = (several_possible && statement.currencies_first) || computed;
    let mut planned: Vec<Planned> = Vec::new();
    let zero = |currency: Currency, totals: Option<(Totals, Totals)>, raw_code: Option<String>| Planned {
        raw_code,
        statement: FileStatement {
            index: 0,
            currency,
            opening: Decimal::ZERO,
            closing: Decimal::ZERO,
            count: totals.map(|t| t.0.count + t.1.count),
            credits: totals.map(|t| t.0),
            debits: totals.map(|t| t.1),
            balances_computed: computed,
        },
    };
    if summed_first {
        for figures in watch.source(ledger.figures(conn, account_currency)).await? {
            planned.push(zero(figures.currency, Some((figures.credits, figures.debits)), figures.raw_code));
        }
    }
    if planned.is_empty() {
        // No aggregate pass, or a period without entries: the currency of the period's first
        // entry (or of the last before it), else the account's.
        let found = watch.source(ledger.first_currency(conn)).await?;
        let (raw_code, currency) = match (found, account_currency) {
            (Some((raw, currency)), _) => (Some(raw), currency),
            (None, Some(currency)) => (None, currency),
            (None, None) => {
                return Err(StatementError::Data {
                    code: FailureCode::StatementValueInvalid,
                    detail: "no currency is known for the account".into(),
                }
                .into());
            }
        };
        let totals = summed_first.then(|| (Totals::default(), Totals::default()));
        planned.push(zero(currency, totals, raw_code));
        if format == BankFormat::Camt053 && !summed_first {
            // One currency, as far as anyone knows: a second one starts over, summed first.
            planned[0].statement.count = Some(watch.source(ledger.count(conn)).await?);
        }
    }
    if planned.len() > 1 && !format.several_currencies() {
        let codes: Vec<&str> = planned.iter().map(|p| p.statement.currency.code()).collect();
        return Err(several_currencies(&codes, false).into());
    }
    for (index, plan) in planned.iter_mut().enumerate() {
        let s = &mut plan.statement;
        s.index = index;
        let raw_code = plan.raw_code.as_deref();
        let balances = match watch.source(ledger.balances(conn, raw_code, s.currency)).await? {
            Some(balances) => balances,
            None => {
                let opening = watch.source(ledger.sum_before(conn, raw_code, s.currency)).await?;
                let (credits, debits) = (s.credits.unwrap_or_default(), s.debits.unwrap_or_default());
                Balances { opening, closing: opening + credits.sum - debits.sum }
            }
        };
        (s.opening, s.closing) = (balances.opening, balances.closing);
        check_width(format, s.currency, s.opening, || "the opening balance".into())?;
        check_width(format, s.currency, s.closing, || "the closing balance".into())?;
    }

    let number = {
        let mut db = ctx.pool.get().await?;
        exports::assign_statement_number(&mut db, sink.attempt, statement.export)
            .await?
            .ok_or(JobError::Fenced)?
    };
    let file = File {
        export_id: statement.export.id,
        created_at: statement.time_zone.offset_date_time(snapshot_at),
        sequence: number,
        from: statement.range.from(),
        to: statement.range.to(),
        account,
        settings: ctx.formats.clone(),
        time_zone: statement.time_zone.clone(),
    };
    let mut writer = formats::writer(format);
    let mut out = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
    writer.start_file(&mut out, &file);
    let columns = EntryColumns::new(mapping);
    let filter_by_currency = planned.len() > 1;
    let mut rows: i64 = 0;
    let mut facts = Vec::new();
    for plan in &planned {
        let s = &plan.statement;
        writer.start_statement(&mut out, &file, s);
        let (mut credits, mut debits) = (Totals::default(), Totals::default());
        let sql = ledger.entries_sql(plan.raw_code.as_deref().filter(|_| filter_by_currency));
        {
            let mut result =
                watch.source(async { Ok::<_, StatementError>(conn.query_iter(sql).await?) }).await?;
            while let Some(row) =
                watch.source(async { Ok::<_, StatementError>(result.next().await?) }).await?
            {
                let read = columns.read(&row, s.currency, &dates)?;
                if let Some(expected) = plan.raw_code.as_deref() {
                    match read.raw_code {
                        Some(raw) if raw.trim_ascii().eq_ignore_ascii_case(expected.as_bytes()) => {}
                        Some(_) if several_possible && !summed_first => return Err(JobError::Replan),
                        Some(raw) => {
                            let other = String::from_utf8_lossy(raw).trim().to_ascii_uppercase();
                            return Err(several_currencies(&[s.currency.code(), &other], true).into());
                        }
                        None => {
                            let detail = format!("entry {}: no currency", read.entry.id);
                            return Err(StatementError::Data {
                                code: FailureCode::StatementValueInvalid,
                                detail,
                            }
                            .into());
                        }
                    }
                }
                let entry = read.entry();
                check_width(format, s.currency, entry.amount, || format!("entry {}", entry.id))?;
                let side = if entry.is_credit() { &mut credits } else { &mut debits };
                side.count += 1;
                side.sum += entry.amount.abs();
                writer.entry(&mut out, &file, s, &entry);
                rows += 1;
                if out.len() >= CHUNK_BYTES {
                    sink.send(Bytes::from(std::mem::take(&mut out)), rows).await?;
                    out.reserve(CHUNK_BYTES + 64 * 1024);
                }
            }
        }
        check(s, credits, debits)?;
        writer.end_statement(&mut out, &file, s);
        let totals = |t: Totals| EntryTotals { count: t.count as i64, sum: s.currency.fixed(t.sum) };
        facts.push(CurrencyStatement {
            currency: s.currency.code().to_owned(),
            opening_balance: s.currency.fixed(s.opening),
            closing_balance: s.currency.fixed(s.closing),
            credits: totals(credits),
            debits: totals(debits),
        });
    }
    writer.end_file(&mut out, &file);
    watch.source(snapshot.end(conn)).await?;
    sink.send(Bytes::from(out), rows).await?;
    let facts = StatementFacts { number, balances: Some(mapping.balance_source()), statements: facts };
    Ok((rows, Some(facts)))
}

/// Checks a written statement's entries against its figures: the totals read before them (same
/// snapshot: any difference is a bug), and the balances (opening + entries = closing).
fn check(s: &FileStatement, credits: Totals, debits: Totals) -> Result<(), JobError> {
    if s.credits.is_some_and(|t| t != credits)
        || s.debits.is_some_and(|t| t != debits)
        || s.count.is_some_and(|count| count != credits.count + debits.count)
    {
        return Err(JobError::fatal(
            FailureCode::Internal,
            anyhow::anyhow!("the entries of {} differ from their totals in the same snapshot", s.currency),
        ));
    }
    let net = credits.sum - debits.sum;
    if s.opening + net != s.closing {
        let c = s.currency;
        let detail = format!(
            "{c}: opening balance {} plus the period's entries {} is {}, but the closing balance is {}",
            c.fixed(s.opening),
            c.fixed(net),
            c.fixed(s.opening + net),
            c.fixed(s.closing)
        );
        return Err(StatementError::Data { code: FailureCode::BalanceMismatch, detail }.into());
    }
    Ok(())
}

/// Whether `amount` fits `format`'s width (MT940: 15 characters with the decimal comma;
/// camt.053: 18 digits). Decimals are checked as amounts are read (`ledger`).
fn check_width(
    format: BankFormat,
    currency: Currency,
    amount: Decimal,
    what: impl FnOnce() -> String,
) -> Result<(), StatementError> {
    let invalid = |problem: &str| StatementError::Data {
        code: FailureCode::StatementValueInvalid,
        detail: format!("{}: {amount} {currency} {problem}", what()),
    };
    // Digits before the decimal point, without formatting the amount.
    let whole = amount.abs().trunc();
    let limit = |digits: u32| Decimal::from_i128_with_scale(10_i128.pow(digits), 0);
    let minor = currency.minor_units();
    match format {
        // Digits, the decimal comma and the minor units in 15 characters.
        BankFormat::Mt940 if whole >= limit(14_u32.saturating_sub(minor)) => {
            Err(invalid("is too large for MT940 (15 characters)"))
        }
        BankFormat::Camt053 if whole >= limit(18_u32.saturating_sub(minor)) => {
            Err(invalid("is too large for camt.053 (18 digits)"))
        }
        _ => Ok(()),
    }
}

fn several_currencies(codes: &[&str], at_least: bool) -> StatementError {
    let mut codes: Vec<&str> = codes.to_vec();
    codes.sort_unstable();
    codes.dedup();
    let listed = match codes.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => codes.join(""),
    };
    let qualifier = if at_least { " (at least)" } else { "" };
    StatementError::Data {
        code: FailureCode::SeveralCurrencies,
        detail: format!(
            "the account has entries in {listed}{qualifier} in this period; this format holds one currency: \
             ask for camt.053 or ofx, which hold one statement per currency"
        ),
    }
}
