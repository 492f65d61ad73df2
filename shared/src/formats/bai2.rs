//! BAI2 cash management balance reporting files.
//!
//! ```text
//! 01,<sender>,<receiver>,<created YYMMDD>,<HHMM>,<file sequence>,,,2/
//! 02,<receiver>,<originator>,1,<period end YYMMDD>,2400,<currency>,2/      one group per statement
//! 03,<account>,<currency>,010,<opening>,,,015,<closing>,,[,100,<credits>,<count>,,400,<debits>,<count>,]/
//! 16,<type>,<amount>,Z,<entry id>,<reference>,<text>                          one per entry
//! 88,<continued>                                                              where a record is long
//! 49,<account control total>,<records>/
//! 98,<group control total>,1,<records>/
//! 99,<file control total>,<groups>,<records>/
//! ```
//!
//! The file header carries the creation date and time of the source snapshot (at the
//! statement time zone's offset), the account's sequence number as the file id, a blank
//! physical record length and block size (variable), and version 2. The originator is the
//! account's routing number, else its BIC, else the sender. Each statement is a group (a group
//! has one currency) as of the end (`2400`) of the period's last day, modifier 2 (final,
//! previous day), holding the one account. The account record gives the opening (`010`) and
//! closing (`015`) ledger balances, signed; and total credits (`100`) and total debits (`400`)
//! with their item counts when the engine read them before the entries.
//!
//! Amounts are integers in the currency's ISO 4217 minor units (`-12.30` EUR is `-1230`,
//! `1500` JPY is `1500`, `12.345` KWD is `12345`); entry amounts are unsigned, the type code
//! says the side: `399` (miscellaneous credit) or `699` (miscellaneous debit), or the entry's
//! bank code when it is three digits in the BAI detail range of its side (`100`–`399` for a
//! credit, `400`–`699` for a debit). Funds type `Z` (unknown availability). Control totals are
//! the algebraic sums of every amount in the records they close (`03` summaries and `16`
//! amounts as written), record counts count every physical record, `88`s included, from the
//! section's header to its trailer.
//!
//! # Text and record length
//!
//! Every physical record ends with CRLF and is at most 80 characters (the customary card-image
//! length, which importers with fixed buffers expect); a longer record continues in `88`
//! records.
//!
//! - All text goes through [`ascii_text`]: German letters as `ae oe ue ss`, anything else
//!   non-ASCII transliterated by `deunicode`, line breaks and tabs → space,
//!   control characters dropped, spaces collapsed.
//! - Fields other than the text (sender, receiver, originator, account, references) cannot hold
//!   `,` (which ends a field) or `/` (which ends a record): both become `-`. References are cut
//!   to 76 characters so that each fits one continuation record.
//! - The text is the last field of a `16` record and ends with the record, so it may hold `,`
//!   and `/` (the `bai2` package reads them back as written). It is the description, the
//!   counterparty's name and the counterparty's account, in that order, joined by `; `. Runs
//!   of `/` become one `/` and a trailing `/` is dropped, so that no record ends in a `/` that
//!   belongs to the text. It is wrapped into `88` records at spaces (the space is dropped:
//!   readers, the `bai2` package included, join continued text with a space); a word longer
//!   than the room left (or, rarely, one right after a `/`) is split, and then reads back with
//!   a space inside. When not even the
//!   text's first word fits on the `16` record, that record ends with `/` after the reference
//!   and the text starts its `88`. An entry without any text ends its `16` record with `/` after
//!   the reference. (Only where the room left holds nothing but slashes and spaces, as in a
//!   text of `/ / / …`, are those dropped at the record's end.)
//! - A summary of the `03` record (type code, amount, item count, funds type) is never split
//!   across records: readers, the `bai2` package among them, find summaries by counting fields
//!   per record.

use super::text::ascii_text;
use super::{Entry, File, Statement, StatementWriter};

/// The longest physical record written.
const RECORD: usize = 80;

/// Writes BAI2 files, holding only running control totals and record counts.
#[derive(Debug, Default)]
pub struct Bai2 {
    /// The file's control total and physical records so far.
    file: (i128, u64),
    /// Groups written.
    groups: u64,
    /// The current group's control total and physical records so far.
    group: (i128, u64),
    /// The current account's control total and physical records so far.
    account: (i128, u64),
}

impl StatementWriter for Bai2 {
    fn start_file(&mut self, out: &mut Vec<u8>, file: &File) {
        *self = Self::default();
        let created = file.created_at;
        let records = record(
            out,
            "01",
            &[
                &field(&file.settings.bai2_sender),
                &field(&file.settings.bai2_receiver),
                &yymmdd(created.date()),
                &format!("{:02}{:02}", created.hour(), created.minute()),
                &file.sequence.to_string(),
                "",
                "",
                "2",
            ],
            None,
        );
        self.file.1 += records;
    }

    fn start_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement) {
        let account = &file.account;
        let originator = account.routing.as_deref().or(account.bic.as_deref());
        let currency = statement.currency;
        self.group = (0, 0);
        self.account = (0, 0);
        self.group.1 += record(
            out,
            "02",
            &[
                &field(&file.settings.bai2_receiver),
                &field(originator.unwrap_or(&file.settings.bai2_sender)),
                "1",
                &yymmdd(file.to),
                "2400",
                currency.code(),
                "2",
            ],
            None,
        );
        let (opening, closing) = (currency.minor(statement.opening), currency.minor(statement.closing));
        // A summary (type code, amount, item count, funds type) stays on one physical record:
        // readers (the `bai2` package among them) count fields per record to find them.
        let mut fields = vec![field(account.primary_id()), currency.code().to_owned()];
        let mut total = 0;
        let mut summary = |code: &str, amount: i128, count: Option<u64>| {
            fields.push(format!("{code},{amount},{},", count.map(|c| c.to_string()).unwrap_or_default()));
            total += amount;
        };
        summary("010", opening, None);
        summary("015", closing, None);
        if let (Some(credits), Some(debits)) = (statement.credits, statement.debits) {
            summary("100", currency.minor(credits.sum), Some(credits.count));
            summary("400", currency.minor(debits.sum), Some(debits.count));
        }
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        self.account.0 += total;
        self.account.1 += record(out, "03", &fields, None);
    }

    fn entry(&mut self, out: &mut Vec<u8>, _file: &File, statement: &Statement, entry: &Entry<'_>) {
        let credit = entry.is_credit();
        let code = match entry.bank_code {
            Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
                let side = if credit { "100"..="399" } else { "400"..="699" };
                if side.contains(&code) {
                    code
                } else if credit {
                    "399"
                } else {
                    "699"
                }
            }
            _ if credit => "399",
            _ => "699",
        };
        let amount = statement.currency.minor(entry.amount).abs();
        let reference = entry.reference.map(field).unwrap_or_default();
        let text = text(entry);
        let records =
            record(out, "16", &[code, &amount.to_string(), "Z", &field(entry.id), &reference], Some(&text));
        self.account.0 += amount;
        self.account.1 += records;
    }

    fn end_statement(&mut self, out: &mut Vec<u8>, _file: &File, _statement: &Statement) {
        self.account.1 += 1;
        record(out, "49", &[&self.account.0.to_string(), &self.account.1.to_string()], None);
        self.group.0 += self.account.0;
        self.group.1 += self.account.1 + 1;
        record(out, "98", &[&self.group.0.to_string(), "1", &self.group.1.to_string()], None);
        self.file.0 += self.group.0;
        self.file.1 += self.group.1;
        self.groups += 1;
    }

    fn end_file(&mut self, out: &mut Vec<u8>, _file: &File) {
        self.file.1 += 1;
        record(
            out,
            "99",
            &[&self.file.0.to_string(), &self.groups.to_string(), &self.file.1.to_string()],
            None,
        );
    }
}

fn yymmdd(date: time::Date) -> String {
    format!("{:02}{:02}{:02}", date.year().rem_euclid(100), u8::from(date.month()), date.day())
}

/// A field other than the text: ASCII, `,` and `/` as `-`, at most 76 characters.
fn field(text: &str) -> String {
    let mut out = ascii_text(text).replace([',', '/'], "-");
    out.truncate(RECORD - 4);
    out
}

/// The text of an entry's `16` record (see the module's documentation).
fn text(entry: &Entry<'_>) -> String {
    let parts = [entry.description, entry.counterparty_name, entry.counterparty_account];
    let joined =
        parts.into_iter().flatten().map(ascii_text).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("; ");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    let end = out.trim_end_matches(['/', ' ']).len();
    out.truncate(end);
    out
}

/// Writes one logical record, `code` and `fields` (none holding `/`; a field may be several
/// fields joined by `,`, which then stay on one physical record), then `text` when given (a
/// `16` record's last field), in physical records of at most [`RECORD`] characters.
/// Returns how many physical records it wrote.
fn record(out: &mut Vec<u8>, code: &str, fields: &[&str], text: Option<&str>) -> u64 {
    let mut records = 1;
    let mut line = String::from(code);
    let flush = |line: &mut String, out: &mut Vec<u8>| {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        line.clear();
        line.push_str("88");
    };
    for field in fields {
        // `,field` and room for the `/` that may end the record.
        if line.len() + 1 + field.len() + 1 > RECORD {
            line.push('/');
            flush(&mut line, out);
            records += 1;
        }
        line.push(',');
        line.push_str(field);
    }
    let Some(mut rest) = text.filter(|t| !t.is_empty()) else {
        line.push('/');
        flush(&mut line, out);
        return records;
    };
    // Start the text on an `88` when its first word would have to be split here but fits there.
    let room = RECORD.saturating_sub(line.len() + 1);
    let first_word = rest.find(' ').unwrap_or(rest.len());
    if rest.len() > room && ((first_word > room && first_word <= RECORD - 3) || split(rest, room).is_none()) {
        line.push('/');
        flush(&mut line, out);
        records += 1;
    }
    line.push(',');
    loop {
        let room = RECORD - line.len();
        if rest.len() <= room {
            line.push_str(rest);
            flush(&mut line, out);
            return records;
        }
        let (chunk, next) = split(rest, room).unwrap_or_else(|| {
            // Only slashes and spaces in reach: no record may end in `/`, so they go.
            let chunk = rest[..room].trim_end_matches(['/', ' ']);
            (chunk, &rest[room..])
        });
        line.push_str(chunk);
        flush(&mut line, out);
        records += 1;
        line.push(',');
        rest = next.trim_start();
    }
}

/// Where to break `text` (longer than `room`) for a record with `room` characters left: at the
/// last space in reach, else inside a word; the piece before the break neither empty nor
/// ending in `/` or a space. `None` when there is no such place.
fn split(text: &str, room: usize) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let ends_well = |i: usize| i > 0 && !matches!(bytes[i - 1], b'/' | b' ');
    // A space in reach (at `room` itself, the piece fills the record exactly).
    if let Some(i) = (1..=room.min(bytes.len() - 1)).rev().find(|&i| bytes[i] == b' ' && ends_well(i)) {
        return Some((&text[..i], &text[i + 1..]));
    }
    let i = (1..=room.min(bytes.len())).rev().find(|&i| ends_well(i))?;
    Some((&text[..i], &text[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(code: &str, fields: &[&str], text: Option<&str>) -> (Vec<String>, u64) {
        let mut out = Vec::new();
        let records = record(&mut out, code, fields, text);
        (String::from_utf8(out).unwrap().lines().map(str::to_owned).collect(), records)
    }

    #[test]
    fn short_records_end_with_a_slash_unless_they_end_in_text() {
        assert_eq!(lines("49", &["-1230", "4"], None), (vec!["49,-1230,4/".to_owned()], 1));
        assert_eq!(lines("16", &["399", "5", "Z", "1", ""], Some("")).0, ["16,399,5,Z,1,/"]);
        assert_eq!(lines("16", &["399", "5", "Z", "1", "r"], Some("a, b/c")).0, ["16,399,5,Z,1,r,a, b/c"]);
    }

    #[test]
    fn long_text_continues_in_88_records_of_at_most_80_characters() {
        let words = "word ".repeat(40);
        let (out, records) = lines("16", &["399", "5", "Z", "1", "r"], Some(words.trim_end()));
        assert_eq!(records, out.len() as u64);
        assert!(
            out.len() > 2 && out.iter().all(|l| l.len() <= RECORD && !l.ends_with(['/', ' '])),
            "{out:?}"
        );
        assert!(out[1..].iter().all(|l| l.starts_with("88,word")));
        let joined: Vec<&str> = out.iter().map(|l| &l[l.find(",word").unwrap() + 1..]).collect();
        assert_eq!(joined.join(" "), words.trim_end());
    }

    #[test]
    fn fields_that_do_not_fit_move_whole_to_an_88_and_so_does_a_first_word() {
        let long = "r".repeat(66);
        let (out, _) = lines("16", &["399", "5", "Z", &long, &long], Some(&"t".repeat(20)));
        assert_eq!(
            out,
            [format!("16,399,5,Z,{long}/"), format!("88,{long}/"), format!("88,{}", "t".repeat(20))]
        );
    }

    #[test]
    fn no_record_ends_in_a_slash_of_the_text() {
        for text in
            ["a/ b ".repeat(30), "x/".repeat(60) + "x", format!("{}/ {}", "y".repeat(73), "z".repeat(10))]
        {
            let (out, _) = lines("16", &["399", "5", "Z", "1", "r"], Some(text.trim_end()));
            // Only the reference's end may be followed by `/` (the text then starts on an `88`).
            assert!(
                out.iter().all(|l| l.len() <= RECORD && (l == "16,399,5,Z,1,r/" || !l.ends_with('/'))),
                "{out:?}"
            );
        }
    }

    #[test]
    fn fields_lose_commas_and_slashes_and_text_keeps_them_once() {
        assert_eq!(field("REF-1/EUR, x"), "REF-1-EUR- x");
        let entry = Entry {
            id: "1",
            amount: rust_decimal::Decimal::ONE,
            booking_date: time::macros::date!(2024 - 01 - 01),
            value_date: None,
            description: Some("a//b, M\u{fc}ller\n"),
            counterparty_name: Some("  "),
            counterparty_account: Some("acct//"),
            reference: None,
            bank_code: None,
        };
        assert_eq!(text(&entry), "a/b, Mueller; acct");
    }
}
