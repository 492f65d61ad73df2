//! SWIFT MT940 customer statement messages.
//!
//! A file is a sequence of bare messages (no SWIFT envelope `{1:…}{2:…}{4:`), as banks' download
//! files are: each message runs from `:20:` to a line holding only `-`, lines end in CRLF. A
//! statement is split into pages of `mt940_entries_per_page` entries, one message each
//! (readers such as the `mt-940` package's `parse_statements` see one statement per `:20:`):
//!
//! ```text
//! :20:<first 16 hex digits of the export id>
//! :25:<IBAN, else routing/number, else number, else account id; at most 35>
//! :28C:<file sequence mod 100000>/<page>
//! :60F: (first page) or :60M: (later pages)  C|D YYMMDD currency amount
//! :61: + :86: per entry
//! :62M: (pages before the last) or :62F: (last page)  C|D YYMMDD currency amount
//! -
//! ```
//!
//! Every page repeats `:20:` and `:25:`; `:28C:` numbers it. `:60F:` is the statement's
//! opening balance, dated the period's first day; `:62F:` its closing balance, dated the last
//! day. A page that is not the last closes with `:62M:`, the
//! running balance (opening + the entries so far) dated the booking date of its last entry, and
//! the next page opens with `:60M:`, the same balance and date. A statement without entries is
//! one page with `:60F:` and `:62F:`. No `:64:` is written: the source knows no available
//! balance. Amounts are written with `,` as decimal separator and the currency's minor units
//! (`1234,50` EUR, `1500,` JPY, `12,345` KWD); a balance of zero is `C`.
//!
//! `:61:` is `value date YYMMDD` (the booking date when the entry has none), `entry date
//! MMDD` (the booking date), `C` or `D`, the amount, `N` and a three-character type code (the
//! entry's bank code when it is three ASCII letters or digits, upper-cased; otherwise `MSC`),
//! the customer reference (the entry's reference, else `NONREF`), `//` and the bank reference
//! (the entry's id); its second line, the supplementary details, holds the counterparty's name.
//!
//! # Text
//!
//! Every text goes through [`swift_x`] first: German letters as `ae oe ue ss`, anything else
//! non-ASCII transliterated by `deunicode`, ASCII outside the SWIFT X set replaced (`&` → `+`,
//! `"` → `'`, brackets → parentheses, the rest → `.`), line breaks and tabs → space, spaces
//! collapsed. Then:
//!
//! - References (`:61:` customer and bank references): runs of `/` become one `/`
//!   (SWIFT forbids `//` inside a reference), leading and trailing `/` and spaces are dropped,
//!   cut to 16 characters. The bank reference is cut further when a long amount leaves less
//!   room on the 65-character `:61:` line (never below 13 characters).
//! - `:86:` (at most 6 lines of 65 characters, the first after the tag, so 61): the
//!   description, then the counterparty's name on a line of its own, then the counterparty's
//!   account on a line of its own. The name and the account are cut to one line each; the
//!   description is word-wrapped into the lines left (6 minus those two) and cut where they
//!   end. `?` becomes `.` in `:86:`: it is the sub-field mark of the structured `:86:` many
//!   banks write, and readers would take free text for sub-fields. An entry with none of the
//!   three has no `:86:`.
//! - Supplementary details (`:61:` second line): the counterparty's name, cut to 34.
//! - Wrapping breaks at a space (the line break stands for the space); a word longer
//!   than a line is split. A text line that would start with `:` or `-` (which readers take for
//!   a tag or the end of the message) starts with a space instead; so does text right after
//!   `:86:`, which some readers would otherwise take for a second tag.
//!
//! So every line is at most 65 characters of the X set, and only tags start with `:` and only
//! the message end with `-`. The one exception: an amount above 15 characters (from 10^12 in a
//! two-decimal currency) is written in full, which no MT940 reader expects.

use rust_decimal::Decimal;
use time::Date;

use super::text::swift_x;
use super::{Currency, Entry, File, Statement, StatementWriter};

/// The longest line SWIFT allows.
const LINE: usize = 65;
/// Lines of `:86:`.
const DETAILS_LINES: usize = 6;

/// Writes MT940 files: one message per page, holding the running balance between entries.
#[derive(Debug, Default)]
pub struct Mt940 {
    /// The current page, from 1.
    page: u64,
    /// Entries written on the current page.
    on_page: usize,
    /// Opening balance plus the entries written so far.
    balance: Decimal,
    /// Booking date of the last entry written.
    last_booking: Option<Date>,
}

impl Mt940 {
    fn header(&self, out: &mut Vec<u8>, file: &File) {
        let export = file.export_id.simple().to_string();
        line(out, &format!(":20:{}", &export[..16]));
        let account = &file.account;
        let id = match (&account.iban, &account.routing, &account.number) {
            (Some(iban), _, _) => iban.clone(),
            (None, Some(routing), Some(number)) => format!("{routing}/{number}"),
            (None, None, Some(number)) => number.clone(),
            _ => account.id.clone(),
        };
        line(out, &format!(":25:{}", truncate(&swift_x(&id), 35)));
        line(out, &format!(":28C:{}/{}", file.sequence.rem_euclid(100_000), self.page % 100_000));
    }
}

impl StatementWriter for Mt940 {
    fn start_file(&mut self, _out: &mut Vec<u8>, _file: &File) {}

    fn start_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement) {
        *self = Self { page: 1, on_page: 0, balance: statement.opening, last_booking: None };
        self.header(out, file);
        line(out, &format!(":60F:{}", balance(statement.opening, file.from, statement.currency)));
    }

    fn entry(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement, entry: &Entry<'_>) {
        let currency = statement.currency;
        if self.on_page >= file.settings.mt940_entries_per_page.max(1) {
            let date = self.last_booking.unwrap_or(file.from);
            let carried = balance(self.balance, date, currency);
            line(out, &format!(":62M:{carried}"));
            line(out, "-");
            self.page += 1;
            self.on_page = 0;
            self.header(out, file);
            line(out, &format!(":60M:{carried}"));
        }
        statement_line(out, entry, currency);
        let details = details(entry);
        if let Some((first, rest)) = details.split_first() {
            line(out, &format!(":86:{first}"));
            for text in rest {
                line(out, text);
            }
        }
        self.balance += entry.amount;
        self.on_page += 1;
        self.last_booking = Some(entry.booking_date);
    }

    fn end_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement) {
        line(out, &format!(":62F:{}", balance(statement.closing, file.to, statement.currency)));
        line(out, "-");
    }

    fn end_file(&mut self, _out: &mut Vec<u8>, _file: &File) {}
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `C|D`, `YYMMDD`, currency, amount: a balance field (`:60F:`, `:62F:` …).
fn balance(amount: Decimal, date: Date, currency: Currency) -> String {
    let mark = if amount.is_sign_negative() && !amount.is_zero() { 'D' } else { 'C' };
    format!("{mark}{}{currency}{}", yymmdd(date), amount_15d(amount, currency))
}

fn yymmdd(date: Date) -> String {
    format!("{:02}{:02}{:02}", date.year().rem_euclid(100), u8::from(date.month()), date.day())
}

/// The unsigned amount with `,` as decimal separator, always present (`1500,` for JPY).
fn amount_15d(amount: Decimal, currency: Currency) -> String {
    let fixed = currency.fixed(amount.abs());
    match fixed.split_once('.') {
        Some((units, minor)) => format!("{units},{minor}"),
        None => format!("{fixed},"),
    }
}

/// `:61:` and its supplementary details line.
fn statement_line(out: &mut Vec<u8>, entry: &Entry<'_>, currency: Currency) {
    let value = entry.value_date.unwrap_or(entry.booking_date);
    let code = match entry.bank_code {
        Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            code.to_ascii_uppercase()
        }
        _ => "MSC".to_owned(),
    };
    let customer = entry.reference.map(|r| reference(r, 16)).filter(|r| !r.is_empty());
    let mut text = format!(
        ":61:{}{:02}{:02}{}{}N{code}{}",
        yymmdd(value),
        u8::from(entry.booking_date.month()),
        entry.booking_date.day(),
        if entry.is_credit() { 'C' } else { 'D' },
        amount_15d(entry.amount, currency),
        customer.as_deref().unwrap_or("NONREF"),
    );
    let room = LINE.saturating_sub(text.len() + 2).min(16);
    let bank = reference(entry.id, room);
    if !bank.is_empty() {
        text.push_str("//");
        text.push_str(&bank);
    }
    line(out, &text);
    if let Some(first) = wrap(&swift_x(entry.counterparty_name.unwrap_or_default()), 34, 34, 1).first() {
        line(out, first);
    }
}

/// `:86:`'s lines: the description, the counterparty's name, the counterparty's account (see
/// the module's documentation).
fn details(entry: &Entry<'_>) -> Vec<String> {
    let text = |t: Option<&str>| {
        let t = swift_x(t.unwrap_or_default()).replace('?', ".");
        (!t.is_empty()).then_some(t)
    };
    let (description, name, account) =
        (text(entry.description), text(entry.counterparty_name), text(entry.counterparty_account));
    let reserved = usize::from(name.is_some()) + usize::from(account.is_some());
    let mut lines = Vec::with_capacity(DETAILS_LINES);
    if let Some(description) = description {
        lines = wrap(&description, LINE - 4, LINE, DETAILS_LINES - reserved);
    }
    for part in [name, account].into_iter().flatten() {
        let first = if lines.is_empty() { LINE - 4 } else { LINE };
        lines.extend(wrap(&part, first, LINE, 1));
    }
    lines
}

/// A reference made to fit: SWIFT X, no `//`, no `/` or space at either end, at most `max`.
fn reference(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in swift_x(text).chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    let trim = |s: &str| s.trim_matches(|c| c == '/' || c == ' ').to_owned();
    trim(truncate(&trim(&out), max))
}

/// The first `max` characters of an ASCII `text`.
fn truncate(text: &str, max: usize) -> &str {
    &text[..text.len().min(max)]
}

/// `text` (ASCII, spaces collapsed) in at most `max_lines` lines, the first at most `first`
/// characters long, the others `width`; broken at a space where one is in reach (the space is
/// dropped), else inside a word. A line that would start with `:` or `-` starts with a space.
/// What does not fit is cut.
fn wrap(text: &str, first: usize, width: usize, max_lines: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() && lines.len() < max_lines {
        let mut room = if lines.is_empty() { first } else { width };
        let guard = rest.starts_with([':', '-']);
        if guard {
            room -= 1;
        }
        let (chunk, next) = if rest.len() <= room {
            (rest, "")
        } else {
            match rest[..=room].rfind(' ') {
                Some(i) if i > 0 => (&rest[..i], &rest[i + 1..]),
                _ => (&rest[..room], &rest[room..]),
            }
        };
        let chunk = chunk.trim_end();
        lines.push(if guard { format!(" {chunk}") } else { chunk.to_owned() });
        rest = next.trim_start();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_carry_the_currencys_minor_units_and_a_comma() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let c = |code| Currency::from_code(code).unwrap();
        assert_eq!(amount_15d(d("-1234.5"), c("EUR")), "1234,50");
        assert_eq!(amount_15d(d("1500"), c("JPY")), "1500,");
        assert_eq!(amount_15d(d("12.345"), c("KWD")), "12,345");
        let day = time::macros::date!(2024 - 01 - 31);
        assert_eq!(balance(d("-0.5"), day, c("EUR")), "D240131EUR0,50");
        assert_eq!(balance(d("0"), day, c("BHD")), "C240131BHD0,000");
    }

    #[test]
    fn references_never_hold_a_double_slash_nor_start_or_end_with_one() {
        assert_eq!(reference("/a//b///c/", 16), "a/b/c");
        assert_eq!(reference("REF-1/EUR", 16), "REF-1/EUR");
        assert_eq!(reference("abcdefghijklmno/pq", 16), "abcdefghijklmno");
        assert_eq!(reference("M\u{fc}ller & Co", 16), "Mueller + Co");
        assert_eq!(reference("//", 16), "");
    }

    #[test]
    fn wrapping_breaks_at_spaces_splits_long_words_and_guards_line_starts() {
        assert_eq!(wrap("aaa bbb ccc", 7, 7, 6), ["aaa bbb", "ccc"]);
        assert_eq!(wrap("aaaaaaaaaa bb", 4, 4, 6), ["aaaa", "aaaa", "aa", "bb"]);
        assert_eq!(wrap("ab :cd -ef", 3, 3, 6), ["ab", " :c", "d", " -e", "f"]);
        assert_eq!(wrap("aaa bbb ccc", 3, 3, 2), ["aaa", "bbb"]);
        assert!(wrap("", 3, 3, 2).is_empty());
    }
}
