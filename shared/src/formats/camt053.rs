//! ISO 20022 `camt.053.001.08` BankToCustomerStatement, written as UTF-8 XML in namespace
//! `urn:iso:std:iso:20022:tech:xsd:camt.053.001.08`, valid against the official XSD.
//!
//! # Layout
//! One element per line, not indented (a third of the bytes otherwise: files of millions of
//! entries are hashed, stored and downloaded, rarely read by eye).
//! - `GrpHdr`: `MsgId` is the export id (32 hex digits), `CreDtTm` the snapshot time at the
//!   statement time zone's offset, `MsgPgntn` page 1 of 1.
//! - One `Stmt` per statement (one per currency): `Id` is the export id followed by the
//!   statement's number in the file on three digits (`…def0001`), `ElctrncSeqNb` the account's
//!   statement sequence number, `CreDtTm` as in the group header, `FrToDt` from 00:00:00 of the
//!   first day to 23:59:59 of the last day in the statement time zone's local time, written
//!   without an offset (the offset at the period's edges can differ from the snapshot's across a
//!   daylight-saving change, and no offset is better than a wrong one). `Acct`: `Id/IBAN` when
//!   the account has a valid IBAN, else `Id/Othr/Id` with the domestic number (else the account
//!   id), `Ccy`, `Nm` (the account's name) and `Svcr/FinInstnId/BICFI` when the BIC is valid.
//!   `Bal` `OPBD` dated the first day and `CLBD` dated the last day; `TxsSummry` with the number
//!   of entries and their net amount (closing − opening), plus the sum of their amounts and the
//!   credits' and debits' numbers and sums when the engine summed the entries before writing
//!   them (balances computed from the entries, or several currencies in the file). With
//!   balances read from the source, summing first would read the period twice; the count comes
//!   from the index alone. (`TxsSummry` is omitted if the engine did not give the count.)
//! - One `Ntry` per entry: `Amt`, `CdtDbtInd`, `Sts/Cd` `BOOK`, `BookgDt/Dt`, `ValDt/Dt` when the
//!   entry has a value date, `AcctSvcrRef` (the entry's id), `BkTxCd` with the domain code
//!   `PMNT` / family `MCOP` (miscellaneous credit operations) or `MDOP` (miscellaneous debit
//!   operations) / sub-family `OTHR` (the source says nothing finer), plus `Prtry/Cd` with the
//!   source's bank transaction code when it has one; then `NtryDtls/TxDtls` with
//!   `Refs/EndToEndId` (the entry's reference, `NOTPROVIDED` without one), `RltdPties` (the
//!   counterparty: the debtor `Dbtr/Pty/Nm` and `DbtrAcct` of a credit, the creditor
//!   `Cdtr/Pty/Nm` and `CdtrAcct` of a debit; the account as `Id/IBAN` when it is a valid IBAN,
//!   spaces removed, else `Id/Othr/Id`) and `RmtInf/Ustrd` (the description).
//! - Amounts carry the currency's minor units (`1500` JPY, `12.30` EUR, `1.250` KWD), always
//!   positive: the sign is the `CdtDbtInd` (`CRDT`, or `DBIT` for a negative balance, a debit
//!   entry, a negative net). A zero amount is a credit.
//!
//! # Text
//! Every text (names, references, ids, descriptions, the bank code, the account number) goes
//! through the same rule, in this order:
//! 1. On one line: a line break (CR LF, CR or LF) and a TAB become one space each; the
//!    characters XML 1.0 cannot carry (control characters, U+FFFE, U+FFFF) are dropped.
//! 2. Trimmed of white space at both ends.
//! 3. Cut to the element's maximum length counted in Unicode characters (as the XSD counts):
//!    35 for `AcctSvcrRef`, `EndToEndId` and `Prtry/Cd`, 34 for an account's `Othr/Id`, 70 for
//!    the account's `Nm`, 140 for a counterparty's `Nm`; then trimmed at the end again.
//! 4. Escaped for XML (`&`, `<`, `>`, `"`). Everything else is kept as it is: accents, emoji,
//!    right-to-left scripts and every other Unicode character are written in UTF-8.
//!
//! A text that is empty after this is left out with its element (the XSD's texts have at least
//! one character). Two exceptions to the cut:
//! - An entry id longer than 35 characters becomes its first 18 characters, `~`, and the first
//!   16 hex digits of the SHA-256 of the whole id (35 characters): `AcctSvcrRef` stays unique
//!   and stable, so importers that deduplicate on it still can.
//! - The description is split into consecutive `Ustrd` elements of 140 characters each, at
//!   most 4 of them (560 characters; what is beyond is dropped, and the end trimmed). The cut
//!   falls anywhere, even inside a word: joined without a separator, the `Ustrd` elements give
//!   the text back.
//!
//! The writer holds no state: each entry is written as it comes.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Write as _;

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime};

use super::text::{fit, one_line, push_xml, truncate_chars};
use super::{Currency, Entry, File, Statement, StatementWriter};

/// The XML namespace of the documents this writer makes.
pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08";

/// Characters in one `Ustrd` (`Max140Text`).
const USTRD_CHARS: usize = 140;
/// `Ustrd` elements per entry at most.
const USTRD_MAX: usize = 4;

/// Writes camt.053.001.08 files (see the module's documentation).
#[derive(Debug, Default)]
pub struct Camt053 {}

impl StatementWriter for Camt053 {
    fn start_file(&mut self, out: &mut Vec<u8>, file: &File) {
        out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"");
        out.extend_from_slice(NAMESPACE.as_bytes());
        out.extend_from_slice(b"\">\n");
        line(out, "<BkToCstmrStmt>");
        line(out, "<GrpHdr>");
        leaf(out, "MsgId", file.export_id.simple());
        open(out, "CreDtTm");
        date_time(out, file.created_at);
        close(out, "CreDtTm");
        line(out, "<MsgPgntn>");
        line(out, "<PgNb>1</PgNb>");
        line(out, "<LastPgInd>true</LastPgInd>");
        line(out, "</MsgPgntn>");
        line(out, "</GrpHdr>");
    }

    fn start_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement) {
        let currency = statement.currency;
        line(out, "<Stmt>");
        open(out, "Id");
        display(out, format_args!("{}{:03}", file.export_id.simple(), statement.index + 1));
        close(out, "Id");
        leaf(out, "ElctrncSeqNb", file.sequence);
        open(out, "CreDtTm");
        date_time(out, file.created_at);
        close(out, "CreDtTm");
        line(out, "<FrToDt>");
        open(out, "FrDtTm");
        date(out, file.from);
        out.extend_from_slice(b"T00:00:00");
        close(out, "FrDtTm");
        open(out, "ToDtTm");
        date(out, file.to);
        out.extend_from_slice(b"T23:59:59");
        close(out, "ToDtTm");
        line(out, "</FrToDt>");

        let account = &file.account;
        line(out, "<Acct>");
        let other = account.number.as_deref().unwrap_or(&account.id);
        account_id(out, account.iban.as_deref().and_then(iban), other);
        leaf(out, "Ccy", currency);
        if let Some(name) = account.name.as_deref().map(|name| fit(name, 70)).filter(|name| !name.is_empty())
        {
            text_leaf(out, "Nm", &name, 70);
        }
        if let Some(bic) = account.bic.as_deref().filter(|bic| is_bic(bic)) {
            line(out, "<Svcr>");
            line(out, "<FinInstnId>");
            leaf(out, "BICFI", bic);
            line(out, "</FinInstnId>");
            line(out, "</Svcr>");
        }
        line(out, "</Acct>");

        balance(out, "OPBD", currency, statement.opening, file.from);
        balance(out, "CLBD", currency, statement.closing, file.to);

        if let Some(count) = statement.count {
            let sides = statement.credits.zip(statement.debits);
            // The balances' difference: the entries' net, which the engine checks as it writes
            // them (a statement whose entries do not add up fails).
            let net = statement.closing - statement.opening;
            line(out, "<TxsSummry>");
            line(out, "<TtlNtries>");
            leaf(out, "NbOfNtries", count);
            if let Some((credits, debits)) = sides {
                leaf(out, "Sum", currency.fixed(credits.sum + debits.sum));
            }
            line(out, "<TtlNetNtry>");
            leaf(out, "Amt", currency.fixed(net.abs()));
            leaf(out, "CdtDbtInd", indicator(net));
            line(out, "</TtlNetNtry>");
            line(out, "</TtlNtries>");
            for (name, totals) in
                sides.into_iter().flat_map(|(c, d)| [("TtlCdtNtries", c), ("TtlDbtNtries", d)])
            {
                open(out, name);
                out.push(b'\n');
                leaf(out, "NbOfNtries", totals.count);
                leaf(out, "Sum", currency.fixed(totals.sum));
                close(out, name);
            }
            line(out, "</TxsSummry>");
        }
    }

    fn entry(&mut self, out: &mut Vec<u8>, _file: &File, statement: &Statement, entry: &Entry<'_>) {
        let credit = entry.is_credit();
        line(out, "<Ntry>");
        amount(out, statement.currency, entry.amount);
        leaf(out, "CdtDbtInd", if credit { "CRDT" } else { "DBIT" });
        line(out, "<Sts>");
        line(out, "<Cd>BOOK</Cd>");
        line(out, "</Sts>");
        line(out, "<BookgDt>");
        open(out, "Dt");
        date(out, entry.booking_date);
        close(out, "Dt");
        line(out, "</BookgDt>");
        if let Some(value_date) = entry.value_date {
            line(out, "<ValDt>");
            open(out, "Dt");
            date(out, value_date);
            close(out, "Dt");
            line(out, "</ValDt>");
        }
        let id = one_line(entry.id);
        if !id.is_empty() {
            open(out, "AcctSvcrRef");
            push_xml(out, &servicer_reference(&id, entry.id));
            close(out, "AcctSvcrRef");
        }
        line(out, "<BkTxCd>");
        line(out, "<Domn>");
        line(out, "<Cd>PMNT</Cd>");
        line(out, "<Fmly>");
        line(out, if credit { "<Cd>MCOP</Cd>" } else { "<Cd>MDOP</Cd>" });
        line(out, "<SubFmlyCd>OTHR</SubFmlyCd>");
        line(out, "</Fmly>");
        line(out, "</Domn>");
        if let Some(code) = entry.bank_code.map(|code| fit(code, 35)).filter(|code| !code.is_empty()) {
            line(out, "<Prtry>");
            text_leaf(out, "Cd", &code, 35);
            line(out, "</Prtry>");
        }
        line(out, "</BkTxCd>");

        line(out, "<NtryDtls>");
        line(out, "<TxDtls>");
        line(out, "<Refs>");
        let reference = entry.reference.map(|reference| fit(reference, 35));
        match reference.as_deref().filter(|reference| !reference.is_empty()) {
            Some(reference) => text_leaf(out, "EndToEndId", reference, 35),
            None => line(out, "<EndToEndId>NOTPROVIDED</EndToEndId>"),
        }
        line(out, "</Refs>");
        counterparty(out, credit, entry);
        if let Some(description) = entry.description {
            remittance(out, description);
        }
        line(out, "</TxDtls>");
        line(out, "</NtryDtls>");
        line(out, "</Ntry>");
    }

    fn end_statement(&mut self, out: &mut Vec<u8>, _file: &File, _statement: &Statement) {
        line(out, "</Stmt>");
    }

    fn end_file(&mut self, out: &mut Vec<u8>, _file: &File) {
        line(out, "</BkToCstmrStmt>");
        out.extend_from_slice(b"</Document>\n");
    }
}

/// `RltdPties`: the debtor of a credit, the creditor of a debit (name and account), when the
/// entry names either.
fn counterparty(out: &mut Vec<u8>, credit: bool, entry: &Entry<'_>) {
    let name = entry.counterparty_name.map(|name| fit(name, 140)).filter(|name| !name.is_empty());
    let account = entry.counterparty_account.filter(|account| !one_line(account).is_empty());
    if name.is_none() && account.is_none() {
        return;
    }
    let (party, party_account) = if credit { ("Dbtr", "DbtrAcct") } else { ("Cdtr", "CdtrAcct") };
    line(out, "<RltdPties>");
    if let Some(name) = name {
        open(out, party);
        out.push(b'\n');
        line(out, "<Pty>");
        text_leaf(out, "Nm", &name, 140);
        line(out, "</Pty>");
        close(out, party);
    }
    if let Some(account) = account {
        open(out, party_account);
        out.push(b'\n');
        account_id(out, iban(account), account);
        close(out, party_account);
    }
    line(out, "</RltdPties>");
}

/// `RmtInf` with the description in `Ustrd` elements of 140 characters, at most
/// [`USTRD_MAX`]; nothing for an empty description.
fn remittance(out: &mut Vec<u8>, description: &str) {
    let text = fit(description, USTRD_CHARS * USTRD_MAX);
    if text.is_empty() {
        return;
    }
    line(out, "<RmtInf>");
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let chunk = truncate_chars(rest, USTRD_CHARS);
        open(out, "Ustrd");
        push_xml(out, chunk);
        close(out, "Ustrd");
        rest = &rest[chunk.len()..];
    }
    line(out, "</RmtInf>");
}

/// `Id` of a cash account: `IBAN` when `iban` is given, else `Othr/Id` with `other` (made to
/// fit 34 characters; `NOTPROVIDED` if nothing is left of it).
fn account_id(out: &mut Vec<u8>, iban: Option<Cow<'_, str>>, other: &str) {
    line(out, "<Id>");
    match iban {
        Some(iban) => leaf(out, "IBAN", iban),
        None => {
            line(out, "<Othr>");
            let other = fit(other, 34);
            text_leaf(out, "Id", if other.is_empty() { "NOTPROVIDED" } else { &other }, 34);
            line(out, "</Othr>");
        }
    }
    line(out, "</Id>");
}

/// A `Bal` of type `code` (`OPBD`, `CLBD`).
fn balance(out: &mut Vec<u8>, code: &str, currency: Currency, value: Decimal, day: Date) {
    line(out, "<Bal>");
    line(out, "<Tp>");
    line(out, "<CdOrPrtry>");
    leaf(out, "Cd", code);
    line(out, "</CdOrPrtry>");
    line(out, "</Tp>");
    amount(out, currency, value);
    leaf(out, "CdtDbtInd", indicator(value));
    line(out, "<Dt>");
    open(out, "Dt");
    date(out, day);
    close(out, "Dt");
    line(out, "</Dt>");
    line(out, "</Bal>");
}

/// `CRDT` for a positive or zero amount, `DBIT` for a negative one.
fn indicator(value: Decimal) -> &'static str {
    if value.is_sign_negative() && !value.is_zero() { "DBIT" } else { "CRDT" }
}

/// `<Amt Ccy="EUR">12.30</Amt>`: the absolute value with the currency's minor units.
fn amount(out: &mut Vec<u8>, currency: Currency, value: Decimal) {
    out.extend_from_slice(b"<Amt Ccy=\"");
    out.extend_from_slice(currency.code().as_bytes());
    out.extend_from_slice(b"\">");
    let mut value = value.abs();
    value.rescale(currency.minor_units());
    display(out, value);
    close(out, "Amt");
}

/// `AcctSvcrRef` for an entry id already on one line (`id`; `raw` as the source gave it): the
/// id when it fits 35 characters, else its first 18 characters, `~` and 16 hex digits of the
/// SHA-256 of `raw`.
fn servicer_reference<'a>(id: &'a str, raw: &str) -> Cow<'a, str> {
    if id.len() <= 35 || id.chars().nth(35).is_none() {
        return Cow::Borrowed(id);
    }
    let digest = hex::encode(&Sha256::digest(raw.as_bytes())[..8]);
    Cow::Owned(format!("{}~{digest}", truncate_chars(id, 18)))
}

/// `text` without spaces when it is a valid IBAN (country letters, check digits, 11 to 30
/// letters or digits, mod-97 remainder 1), else `None`.
fn iban(text: &str) -> Option<Cow<'_, str>> {
    let compact = if text.contains(' ') { Cow::Owned(text.replace(' ', "")) } else { Cow::Borrowed(text) };
    let bytes = compact.as_bytes();
    let shape = (15..=34).contains(&bytes.len())
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..4].iter().all(u8::is_ascii_digit)
        && bytes[4..].iter().all(u8::is_ascii_alphanumeric);
    if !shape {
        return None;
    }
    let remainder = bytes[4..].iter().chain(&bytes[..4]).fold(0u32, |remainder, &b| {
        let b = b.to_ascii_uppercase();
        if b.is_ascii_digit() {
            (remainder * 10 + u32::from(b - b'0')) % 97
        } else {
            (remainder * 100 + u32::from(b - b'A') + 10) % 97
        }
    });
    (remainder == 1).then_some(compact)
}

/// Whether `bic` matches the XSD's `BICFIDec2014Identifier` (8 or 11 characters).
fn is_bic(bic: &str) -> bool {
    let b = bic.as_bytes();
    let upper_alnum = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    matches!(b.len(), 8 | 11)
        && b[..4].iter().all(upper_alnum)
        && b[4..6].iter().all(u8::is_ascii_uppercase)
        && b[6..].iter().all(upper_alnum)
}

/// `2024-01-31`.
fn date(out: &mut Vec<u8>, day: Date) {
    // Years are 1900 to 2100 (the engine checks): four digits, no sign.
    digits(out, day.year().unsigned_abs(), 4);
    out.push(b'-');
    digits(out, u8::from(day.month()).into(), 2);
    out.push(b'-');
    digits(out, day.day().into(), 2);
}

/// The last `width` decimal digits of `value`, zero-padded.
fn digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `2024-02-01T02:30:00+01:00`: whole seconds, the offset in hours and minutes.
fn date_time(out: &mut Vec<u8>, at: OffsetDateTime) {
    date(out, at.date());
    let (hours, minutes, _) = at.offset().as_hms();
    let sign = if at.offset().is_negative() { '-' } else { '+' };
    display(
        out,
        format_args!(
            "T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            at.hour(),
            at.minute(),
            at.second(),
            hours.unsigned_abs(),
            minutes.unsigned_abs()
        ),
    );
}

/// A line of markup (elements one per line, not indented: a third fewer bytes to hash, store and send).
fn line(out: &mut Vec<u8>, markup: &str) {
    out.extend_from_slice(markup.as_bytes());
    out.push(b'\n');
}

/// `<name>`, the start of a one-line element.
fn open(out: &mut Vec<u8>, name: &str) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

/// `</name>` and the end of the line.
fn close(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b">\n");
}

/// `<name>value</name>` for a value that needs no escaping (codes, numbers, ids we make).
fn leaf(out: &mut Vec<u8>, name: &str, value: impl Display) {
    open(out, name);
    display(out, value);
    close(out, name);
}

/// `<name>text</name>` for source text already made to fit `max` characters (checked in debug
/// builds), escaped.
fn text_leaf(out: &mut Vec<u8>, name: &str, text: &str, max: usize) {
    debug_assert!(text.chars().nth(max).is_none() && !text.is_empty());
    open(out, name);
    push_xml(out, text);
    close(out, name);
}

/// Appends `value`'s `Display`.
fn display(out: &mut Vec<u8>, value: impl Display) {
    write!(out, "{value}").expect("a Vec takes every byte");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_goes_on_one_line_keeps_unicode_and_is_trimmed() {
        assert_eq!(one_line("line one\nline two\r\nline three\rfour"), "line one line two line three four");
        assert_eq!(one_line(" a\tb\u{1}c \u{FFFE}\n"), "a bc");
        assert_eq!(
            one_line("\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{1F680}"),
            "\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{1F680}"
        );
        assert!(matches!(one_line("plain"), Cow::Borrowed("plain")));
        assert_eq!(one_line("\u{1}\n "), "");
    }

    #[test]
    fn text_is_cut_by_characters_and_trimmed_again() {
        assert_eq!(fit(&"\u{e9}".repeat(50), 35), "\u{e9}".repeat(35));
        assert_eq!(fit("  abc   def", 4), "abc");
        assert_eq!(fit("a\nb", 35), "a b");
    }

    #[test]
    fn long_entry_ids_stay_unique_within_35_characters() {
        assert_eq!(servicer_reference("9000001", "9000001"), "9000001");
        let a = "order-2024-01-31-customer-000000000001";
        let b = "order-2024-01-31-customer-000000000002";
        let (ra, rb) = (servicer_reference(a, a), servicer_reference(b, b));
        assert_eq!(ra.chars().count(), 35);
        assert!(ra.starts_with("order-2024-01-31-c~"));
        assert_ne!(ra, rb);
        assert_eq!(ra, servicer_reference(a, a), "stable");
    }

    #[test]
    fn only_valid_ibans_are_written_as_ibans() {
        assert_eq!(iban("DE89370400440532013000").as_deref(), Some("DE89370400440532013000"));
        assert_eq!(iban("DE89 3704 0044 0532 0130 00").as_deref(), Some("DE89370400440532013000"));
        assert_eq!(iban("FR1420041010050500013M02606").as_deref(), Some("FR1420041010050500013M02606"));
        assert_eq!(iban("DE88370400440532013000"), None, "check digits");
        assert_eq!(iban("0532013000"), None);
        assert_eq!(iban("DE89\u{e9}70400440532013000"), None);
        assert!(is_bic("COBADEFFXXX") && is_bic("COBADEFF"));
        assert!(!is_bic("COBADEFFX") && !is_bic("cobadeff") && !is_bic("COBA1EFF"));
    }

    #[test]
    fn amounts_are_positive_with_the_currencys_minor_units() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let mut out = Vec::new();
        amount(&mut out, Currency::from_code("KWD").unwrap(), d("-1.25"));
        amount(&mut out, Currency::from_code("JPY").unwrap(), d("1500"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<Amt Ccy=\"KWD\">1.250</Amt>\n<Amt Ccy=\"JPY\">1500</Amt>\n"
        );
        assert_eq!((indicator(d("-0.01")), indicator(d("0")), indicator(d("-0"))), ("DBIT", "CRDT", "CRDT"));
    }

    #[test]
    fn date_times_carry_the_offset() {
        let mut out = Vec::new();
        date_time(&mut out, time::macros::datetime!(2024-02-01 02:30:05.9 -03:30));
        date(&mut out, time::macros::date!(1900 - 12 - 09));
        assert_eq!(String::from_utf8(out).unwrap(), "2024-02-01T02:30:05-03:301900-12-09");
    }

    #[test]
    fn descriptions_split_into_ustrd_of_140_characters_at_most_four() {
        let mut out = Vec::new();
        remittance(&mut out, &("x".repeat(200) + &"\u{e9}".repeat(55)));
        let xml = String::from_utf8(out).unwrap();
        let chunks: Vec<_> =
            xml.split("<Ustrd>").skip(1).map(|s| s.split("</Ustrd>").next().unwrap()).collect();
        assert_eq!(chunks, ["x".repeat(140), "x".repeat(60) + &"\u{e9}".repeat(55)]);
        let mut out = Vec::new();
        remittance(&mut out, &"ab ".repeat(300));
        assert_eq!(String::from_utf8(out).unwrap().matches("<Ustrd>").count(), 4);
        let mut out = Vec::new();
        remittance(&mut out, "\n\u{1}");
        assert!(out.is_empty());
    }
}
