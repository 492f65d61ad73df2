//! Bank statement files in tests: a sample statement with awkward text, written by the
//! service's own writers, and what an independent PyPI parser reads back from a file
//! (`tests/python/parse_statement.py`, parsers installed by `scripts/statement-parsers.sh`).

use std::path::PathBuf;

use rust_decimal::Decimal;
use serde_json::Value;
use shared::formats::{self, Account, BankFormat, Currency, Entry, File, FormatSettings, Statement, Totals};
use time::{Date, macros::datetime};

/// Texts that break naive writers: quotes, markup characters, newlines, emoji, right-to-left
/// scripts, characters outside every bank character set, and a 255-character value.
pub fn awkward_texts() -> Vec<String> {
    vec![
        "Rent \"May\" & <utilities>".into(),
        "line one\nline two\r\nline three".into(),
        "Caf\u{e9} M\u{fc}ller & S\u{f6}hne \u{df} \u{1F680}\u{1F4B8}".into(),
        "\u{5EA}\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{62F}\u{641}\u{639} \u{41F}\u{43B}\u{430}\u{442}\u{451}\u{436}".into(),
        ":61:fake tag -} {4: '?/,.+()".into(),
        "x".repeat(200) + &"\u{e9}".repeat(55),
        "a\tb\u{1}c".into(),
    ]
}

/// An entry with owned texts.
#[derive(Debug, Clone)]
pub struct OwnedEntry {
    pub id: String,
    pub amount: Decimal,
    pub booking_date: Date,
    pub value_date: Option<Date>,
    pub description: Option<String>,
    pub counterparty_name: Option<String>,
    pub counterparty_account: Option<String>,
    pub reference: Option<String>,
    pub bank_code: Option<String>,
}

impl OwnedEntry {
    pub fn as_entry(&self) -> Entry<'_> {
        Entry {
            id: &self.id,
            amount: self.amount,
            booking_date: self.booking_date,
            value_date: self.value_date,
            description: self.description.as_deref(),
            counterparty_name: self.counterparty_name.as_deref(),
            counterparty_account: self.counterparty_account.as_deref(),
            reference: self.reference.as_deref(),
            bank_code: self.bank_code.as_deref(),
        }
    }
}

/// A file's statements and their entries.
#[derive(Debug, Clone)]
pub struct Sample {
    pub file: File,
    pub statements: Vec<(Statement, Vec<OwnedEntry>)>,
}

/// The same sample without the totals (as the engine gives MT940, BAI2 and OFX writers when
/// the balances come from the source).
pub fn without_totals(sample: Sample) -> Sample {
    let mut sample = counted_only(sample);
    for (statement, _) in &mut sample.statements {
        statement.count = None;
    }
    sample
}

/// The same sample with the number of entries but not the credits' and debits' totals (as the
/// engine gives the camt.053 writer a one-currency statement whose balances come from the
/// source).
pub fn counted_only(mut sample: Sample) -> Sample {
    for (statement, _) in &mut sample.statements {
        statement.credits = None;
        statement.debits = None;
    }
    sample
}

/// A sample file: for each currency, `entries` entries over January 2024 with the awkward texts
/// in turn, credits and debits alternating, balances consistent.
pub fn sample(currencies: &[&str], entries: usize) -> Sample {
    let texts = awkward_texts();
    let file = File {
        export_id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        created_at: datetime!(2024-02-01 02:30:00 +1),
        sequence: 42,
        from: time::macros::date!(2024 - 01 - 01),
        to: time::macros::date!(2024 - 01 - 31),
        account: Account {
            id: "ACC-1001".into(),
            iban: Some("DE89370400440532013000".into()),
            bic: Some("COBADEFFXXX".into()),
            number: Some("0532013000".into()),
            routing: Some("37040044".into()),
            name: Some("M\u{fc}ller & S\u{f6}hne GmbH".into()),
        },
        settings: FormatSettings { mt940_entries_per_page: 5, ..FormatSettings::default() },
        time_zone: shared::time_zones::StatementZone::parse("Europe/Berlin").expect("a zone"),
    };
    let statements = currencies
        .iter()
        .enumerate()
        .map(|(index, code)| {
            let currency = Currency::from_code(code).expect("an ISO 4217 code");
            let step = Decimal::new(1, currency.minor_units());
            let mut owned = Vec::new();
            for i in 0..entries {
                let magnitude = Decimal::from(1000 + 37 * i as i64) * step * Decimal::from(123);
                let amount = if i % 2 == 0 { magnitude } else { -magnitude };
                let day = time::macros::date!(2024 - 01 - 01) + time::Duration::days((i % 31) as i64);
                let text = &texts[i % texts.len()];
                owned.push(OwnedEntry {
                    id: format!("{}", 9_000_000 + 100_000 * index + i),
                    amount,
                    booking_date: day,
                    value_date: (i % 3 != 0).then(|| day.next_day().unwrap()),
                    description: (i % 5 != 4).then(|| text.clone()),
                    counterparty_name: Some(texts[(i + 2) % texts.len()].clone()),
                    counterparty_account: (i % 2 == 0).then(|| "FR1420041010050500013M02606".into()),
                    reference: Some(format!("REF-{i}/{code}")),
                    bank_code: None,
                });
            }
            owned.sort_by_key(|e| (e.booking_date, e.id.clone()));
            let side = |credit: bool| {
                let picked: Vec<_> = owned.iter().filter(|e| (e.amount > Decimal::ZERO) == credit).collect();
                Totals { count: picked.len() as u64, sum: picked.iter().map(|e| e.amount.abs()).sum() }
            };
            let (credits, debits) = (side(true), side(false));
            let opening = Decimal::new(-5_000_000 + 777 * index as i64, currency.minor_units());
            let closing = opening + credits.sum - debits.sum;
            let statement = Statement {
                index,
                currency,
                opening,
                closing,
                count: Some(credits.count + debits.count),
                credits: Some(credits),
                debits: Some(debits),
                balances_computed: false,
            };
            (statement, owned)
        })
        .collect();
    Sample { file, statements }
}

/// The file `format`'s writer makes of `sample`.
pub fn write(format: BankFormat, sample: &Sample) -> Vec<u8> {
    let mut writer = formats::writer(format);
    let mut out = Vec::new();
    writer.start_file(&mut out, &sample.file);
    for (statement, entries) in &sample.statements {
        writer.start_statement(&mut out, &sample.file, statement);
        for entry in entries {
            writer.entry(&mut out, &sample.file, statement, &entry.as_entry());
        }
        writer.end_statement(&mut out, &sample.file, statement);
    }
    writer.end_file(&mut out, &sample.file);
    out
}

/// What the independent parser for `format` (`camt.053`, `mt940`, `ofx`, `bai2`) reads from
/// `bytes`; `Err` with its message when it refuses the file.
pub fn parse(format: &str, bytes: &[u8]) -> Result<Value, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../.local/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/statement-parsers.sh", python.display());
    let dir = std::env::temp_dir().join(format!("statement-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("statement");
    std::fs::write(&path, bytes).unwrap();
    let output = std::process::Command::new(python)
        .arg(root.join("python/parse_statement.py"))
        .arg(format)
        .arg(&path)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&dir);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("the parser script prints JSON"))
}

/// A decimal from the parsers' JSON (`"-12.30"`, or a number).
pub fn decimal(value: &Value) -> Decimal {
    match value {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{s:?} is not a decimal")),
        other => other.to_string().parse().unwrap_or_else(|_| panic!("{other} is not a decimal")),
    }
}
