//! OFX 2.2 (XML) bank statement response: one `STMTTRNRS` per statement (currency).
//!
//! The file is `<?xml version="1.0" encoding="UTF-8" standalone="no"?>`, the OFX 2 processing
//! instruction (`OFXHEADER="200" VERSION="220" SECURITY="NONE"`), then `SIGNONMSGSRSV1`
//! (`SONRS`: status 0 INFO, `DTSERVER` = when the source snapshot was taken, `LANGUAGE` ENG,
//! `FI` `ORG`/`FID` when configured) and `BANKMSGSRSV1` with one `STMTTRNRS` per statement:
//! `TRNUID` = the export id's 32 hex digits, `-`, the statement's index (`…def0-1`), `STMTRS`
//! with `CURDEF`, `BANKACCTFROM`, `BANKTRANLIST` (one `STMTTRN` per entry), `LEDGERBAL`,
//! `AVAILBAL` and `BALLIST`.
//!
//! Values:
//! - `TRNAMT`, balances: signed, `.` as the decimal separator, exactly the currency's minor
//!   units (`-12.30` EUR, `1500` JPY, `1.250` KWD). `TRNTYPE` is `CREDIT` for an amount ≥ 0,
//!   `DEBIT` below.
//! - Dates and times carry the statement time zone's UTC offset at that moment (`[+1]` in
//!   Berlin's winter, `[+2]` in its summer, `[-5]`, `[+5.30]` for +05:30; `DTSERVER` the
//!   offset when the snapshot was taken), without a zone name (OFX makes it optional, and the offset alone is not a
//!   name). A day (`DTPOSTED` = booking date, `DTAVAIL` = value date, when present) is written
//!   as noon of that day (`20240105120000.000[+1]`), so a reader converting it to any zone
//!   within ±11 hours still sees the same day. `DTSTART` is the period's first day at
//!   00:00:00.000, `DTEND` its last day at 23:59:59.999.
//! - `LEDGERBAL` is the closing balance, as of the end of the period (`DTEND`). `AVAILBAL`
//!   repeats it with the same `DTASOF`: the source knows no separate available balance (holds,
//!   float). `BALLIST` holds one `BAL` named `OPENING` (`BALTYPE` DOLLAR): the opening
//!   balance, as of the start of the period (`DTSTART`), which OFX has no element of its own
//!   for.
//! - `BANKACCTFROM`: `ACCTTYPE` is CHECKING. `ACCTID` (at most 22 characters) is the IBAN when
//!   it fits (DE, GB, NL, AT, CH, BE IBANs do), else the domestic account number, else the
//!   account id, whichever fits first; when none fits, the last 22 characters of the first
//!   one present (an IBAN's last characters are its account number). `BANKID` (at most 9) is
//!   the routing number / bank code when it fits, else the BIC's first 8 characters (bank,
//!   country, location), else `0` (OFX requires the element).
//! - `FITID` is the entry's id (the id column's value: unique and stable, so a re-import does
//!   not duplicate) when the text rule below leaves it unchanged and it has at most 255
//!   characters; otherwise `SHA256:` and the hex SHA-256 of the id's UTF-8 bytes (71
//!   characters, still unique and stable).
//! - `REFNUM` = the reference (at most 32 characters), `NAME` = the counterparty's name (32),
//!   `MEMO` = the description (255). The counterparty's account and the bank transaction code
//!   are not written: OFX's `BANKACCTTO` needs the counterparty's bank id and account type,
//!   which the source does not give, and `SIC` is an industry code, not a transaction code.
//!
//! Text (`NAME`, `MEMO`, `REFNUM`, `ORG`, `FID`, `ACCTID`, `BANKID`):
//! 1. CR LF, CR, LF and TAB each become one space; the other characters XML 1.0 cannot carry
//!    (control characters, U+FFFE, U+FFFF) are dropped. Everything else is kept as it is:
//!    the file is UTF-8, so accents, emoji and right-to-left scripts are not transliterated.
//! 2. Leading and trailing whitespace is removed (OFX readers strip it anyway).
//! 3. The text is cut to the element's maximum length in characters (Unicode scalar values,
//!    as ofxtools counts), then trailing whitespace is removed again.
//! 4. An empty result omits the element (they are all optional, except `ACCTID`/`BANKID`,
//!    which fall back as above).
//! 5. `&`, `<`, `>` and `"` are written as XML entities.

use std::io::Write as _;

use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime, UtcOffset};

use super::{
    Entry, File, Statement, StatementWriter,
    text::{fit, push_xml},
};

/// OFX's limit on `ACCTID`.
const ACCTID_MAX: usize = 22;
/// OFX's limit on `BANKID`.
const BANKID_MAX: usize = 9;
/// OFX's limit on `FITID`.
const FITID_MAX: usize = 255;
/// OFX's limit on `NAME` in a `STMTTRN`.
const NAME_MAX: usize = 32;
/// OFX's limit on `REFNUM`.
const REFNUM_MAX: usize = 32;
/// OFX's limit on `MEMO`.
const MEMO_MAX: usize = 255;
/// OFX's limit on `ORG` and `FID`.
const FI_MAX: usize = 32;

/// Writes OFX 2.2 bank statement responses. Its only state is the last day's UTC offset.
#[derive(Debug, Default)]
pub struct Ofx {
    /// The last day whose offset was looked up (entries come in date order).
    offset_cache: Option<(Date, UtcOffset)>,
}

impl StatementWriter for Ofx {
    fn start_file(&mut self, out: &mut Vec<u8>, file: &File) {
        out.extend_from_slice(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n\
              <?OFX OFXHEADER=\"200\" VERSION=\"220\" SECURITY=\"NONE\" OLDFILEUID=\"NONE\" NEWFILEUID=\"NONE\"?>\n\
              <OFX>\n\
              <SIGNONMSGSRSV1>\n\
              <SONRS>\n\
              <STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>\n\
              <DTSERVER>",
        );
        push_datetime(out, file.created_at);
        out.extend_from_slice(b"</DTSERVER>\n<LANGUAGE>ENG</LANGUAGE>\n");
        let settings = &file.settings;
        if let Some(org) = settings.ofx_org.as_deref().filter(|org| !fit(org, FI_MAX).is_empty()) {
            out.extend_from_slice(b"<FI>");
            self.element(out, "ORG", org, FI_MAX);
            if let Some(fid) = settings.ofx_fid.as_deref() {
                self.element(out, "FID", fid, FI_MAX);
            }
            out.extend_from_slice(b"</FI>\n");
        }
        out.extend_from_slice(b"</SONRS>\n</SIGNONMSGSRSV1>\n<BANKMSGSRSV1>\n");
    }

    fn start_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement) {
        let _ = write!(
            out,
            "<STMTTRNRS>\n<TRNUID>{}-{}</TRNUID>\n\
             <STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>\n\
             <STMTRS>\n<CURDEF>{}</CURDEF>\n<BANKACCTFROM>",
            file.export_id.simple(),
            statement.index,
            statement.currency.code(),
        );
        out.extend_from_slice(b"<BANKID>");
        push_xml(out, &bank_id(file));
        out.extend_from_slice(b"</BANKID><ACCTID>");
        push_xml(out, &account_id(file));
        out.extend_from_slice(
            b"</ACCTID><ACCTTYPE>CHECKING</ACCTTYPE></BANKACCTFROM>\n<BANKTRANLIST>\n<DTSTART>",
        );
        push_start_of_day(out, file.from, file.offset_on(file.from, 0, 0, 0));
        out.extend_from_slice(b"</DTSTART><DTEND>");
        push_end_of_day(out, file.to, file.offset_on(file.to, 23, 59, 59));
        out.extend_from_slice(b"</DTEND>\n");
    }

    fn entry(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement, entry: &Entry<'_>) {
        out.extend_from_slice(if entry.is_credit() {
            b"<STMTTRN><TRNTYPE>CREDIT</TRNTYPE><DTPOSTED>"
        } else {
            b"<STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>"
        });
        push_day(out, entry.booking_date, self.noon_offset(file, entry.booking_date));
        out.extend_from_slice(b"</DTPOSTED>");
        if let Some(value_date) = entry.value_date {
            out.extend_from_slice(b"<DTAVAIL>");
            push_day(out, value_date, self.noon_offset(file, value_date));
            out.extend_from_slice(b"</DTAVAIL>");
        }
        let _ = write!(out, "<TRNAMT>{}</TRNAMT><FITID>", statement.currency.fixed(entry.amount));
        push_fitid(out, entry.id);
        out.extend_from_slice(b"</FITID>");
        if let Some(reference) = entry.reference {
            self.element(out, "REFNUM", reference, REFNUM_MAX);
        }
        if let Some(name) = entry.counterparty_name {
            self.element(out, "NAME", name, NAME_MAX);
        }
        if let Some(description) = entry.description {
            self.element(out, "MEMO", description, MEMO_MAX);
        }
        out.extend_from_slice(b"</STMTTRN>\n");
    }

    fn end_statement(&mut self, out: &mut Vec<u8>, file: &File, statement: &Statement) {
        let offset = file.offset_on(file.to, 23, 59, 59);
        let closing = statement.currency.fixed(statement.closing);
        out.extend_from_slice(b"</BANKTRANLIST>\n");
        for tag in ["LEDGERBAL", "AVAILBAL"] {
            let _ = write!(out, "<{tag}><BALAMT>{closing}</BALAMT><DTASOF>");
            push_end_of_day(out, file.to, offset);
            let _ = writeln!(out, "</DTASOF></{tag}>");
        }
        let _ = write!(
            out,
            "<BALLIST><BAL><NAME>OPENING</NAME><DESC>Opening ledger balance at the start of the period</DESC>\
             <BALTYPE>DOLLAR</BALTYPE><VALUE>{}</VALUE><DTASOF>",
            statement.currency.fixed(statement.opening),
        );
        push_start_of_day(out, file.from, file.offset_on(file.from, 0, 0, 0));
        out.extend_from_slice(b"</DTASOF></BAL></BALLIST>\n</STMTRS>\n</STMTTRNRS>\n");
    }

    fn end_file(&mut self, out: &mut Vec<u8>, _file: &File) {
        out.extend_from_slice(b"</BANKMSGSRSV1>\n</OFX>\n");
    }
}

impl Ofx {
    /// The statement zone's offset at noon of `day`, remembered for the next entry of that day.
    fn noon_offset(&mut self, file: &File, day: Date) -> UtcOffset {
        match self.offset_cache {
            Some((cached, offset)) if cached == day => offset,
            _ => {
                let offset = file.offset_on(day, 12, 0, 0);
                self.offset_cache = Some((day, offset));
                offset
            }
        }
    }

    /// `<TAG>text</TAG>` under the text rule, nothing when the text comes out empty.
    fn element(&mut self, out: &mut Vec<u8>, tag: &str, text: &str, max: usize) {
        let text = fit(text, max);
        if text.is_empty() {
            return;
        }
        out.push(b'<');
        out.extend_from_slice(tag.as_bytes());
        out.push(b'>');
        push_xml(out, &text);
        out.extend_from_slice(b"</");
        out.extend_from_slice(tag.as_bytes());
        out.push(b'>');
    }
}

/// The `FITID` of an entry with this id (see the module's doc).
fn push_fitid(out: &mut Vec<u8>, id: &str) {
    if fit(id, FITID_MAX + 1) == id && id.chars().count() <= FITID_MAX && !id.is_empty() {
        push_xml(out, id);
    } else {
        out.extend_from_slice(b"SHA256:");
        out.extend_from_slice(hex::encode(Sha256::digest(id.as_bytes())).as_bytes());
    }
}

/// `ACCTID`: the first of IBAN, number, id that fits, else the last 22 characters of the first.
fn account_id(file: &File) -> String {
    let account = &file.account;
    let candidates = [account.iban.as_deref(), account.number.as_deref(), Some(account.id.as_str())];
    let mut first = None;
    for candidate in candidates.into_iter().flatten() {
        let cleaned = fit(candidate, usize::MAX);
        if cleaned.is_empty() {
            continue;
        }
        let count = cleaned.chars().count();
        if count <= ACCTID_MAX {
            return cleaned.into_owned();
        }
        if first.is_none() {
            let skip = cleaned.char_indices().nth(count - ACCTID_MAX).map_or(0, |(i, _)| i);
            first = Some(cleaned[skip..].trim_start().to_owned());
        }
    }
    first.unwrap_or_else(|| "0".into())
}

/// `BANKID`: the routing number when it fits, else the BIC's first 8 characters, else `0`.
fn bank_id(file: &File) -> String {
    let account = &file.account;
    if let Some(routing) = account.routing.as_deref() {
        let cleaned = fit(routing, usize::MAX);
        if !cleaned.is_empty() && cleaned.chars().count() <= BANKID_MAX {
            return cleaned.into_owned();
        }
    }
    if let Some(bic) = account.bic.as_deref() {
        let cleaned = fit(bic, 8);
        if !cleaned.is_empty() {
            return cleaned.into_owned();
        }
    }
    "0".into()
}

/// `YYYYMMDDHHMMSS.XXX[offset]`.
fn push_datetime(out: &mut Vec<u8>, at: OffsetDateTime) {
    push_at(out, at.date(), (at.hour(), at.minute(), at.second(), at.millisecond()), at.offset());
}

/// A day: noon of it.
fn push_day(out: &mut Vec<u8>, date: Date, offset: UtcOffset) {
    push_at(out, date, (12, 0, 0, 0), offset);
}

/// The first instant of a day.
fn push_start_of_day(out: &mut Vec<u8>, date: Date, offset: UtcOffset) {
    push_at(out, date, (0, 0, 0, 0), offset);
}

/// The last millisecond of a day.
fn push_end_of_day(out: &mut Vec<u8>, date: Date, offset: UtcOffset) {
    push_at(out, date, (23, 59, 59, 999), offset);
}

fn push_at(out: &mut Vec<u8>, date: Date, (h, m, s, ms): (u8, u8, u8, u16), offset: UtcOffset) {
    let _ = write!(
        out,
        "{:04}{:02}{:02}{h:02}{m:02}{s:02}.{ms:03}[",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    let (hours, minutes, _) = offset.as_hms();
    let sign = if offset.is_negative() { "-" } else { "+" };
    if offset.is_utc() {
        out.push(b'0');
    } else if minutes == 0 {
        let _ = write!(out, "{sign}{}", hours.unsigned_abs());
    } else {
        let _ = write!(out, "{sign}{}.{:02}", hours.unsigned_abs(), minutes.unsigned_abs());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime, offset};

    use super::*;
    use crate::formats::{Account, FormatSettings};

    fn text(input: &str, max: usize) -> String {
        fit(input, max).into_owned()
    }

    #[test]
    fn text_loses_line_breaks_and_controls_keeps_scripts_and_is_cut_by_characters() {
        assert_eq!(text("line one\nline two\r\nline three\rfour", 255), "line one line two line three four");
        assert_eq!(text("  a\tb\u{1}c \n", 255), "a bc");
        assert_eq!(
            text("Caf\u{e9} \u{1F680} \u{5E9}\u{5DC}\u{5D5}\u{5DD}", 255),
            "Caf\u{e9} \u{1F680} \u{5E9}\u{5DC}\u{5D5}\u{5DD}"
        );
        assert_eq!(text(&"\u{e9}".repeat(40), 32), "\u{e9}".repeat(32));
        // A cut that ends on a space does not leave it trailing.
        assert_eq!(text("abc def", 4), "abc");
        assert_eq!(text(" \n\t ", 32), "");
    }

    #[test]
    fn dates_carry_the_files_offset_and_days_are_noon() {
        let mut out = Vec::new();
        push_datetime(&mut out, datetime!(2024-02-01 02:30:05.123 +1));
        out.push(b' ');
        push_day(&mut out, date!(2024 - 01 - 05), offset!(-5));
        out.push(b' ');
        push_end_of_day(&mut out, date!(2024 - 01 - 31), offset!(+5:30));
        out.push(b' ');
        push_start_of_day(&mut out, date!(2024 - 01 - 01), offset!(-3:30));
        out.push(b' ');
        push_day(&mut out, date!(1999 - 12 - 31), offset!(UTC));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "20240201023005.123[+1] 20240105120000.000[-5] 20240131235959.999[+5.30] \
             20240101000000.000[-3.30] 19991231120000.000[0]"
        );
    }

    #[test]
    fn fitids_are_the_id_unless_ofx_cannot_carry_it_unchanged() {
        let fitid = |id: &str| {
            let mut out = Vec::new();
            push_fitid(&mut out, id);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(fitid("9000001"), "9000001");
        assert_eq!(fitid("a&b"), "a&amp;b");
        assert_eq!(fitid(&"x".repeat(255)), "x".repeat(255));
        let long = fitid(&"x".repeat(256));
        assert!(long.starts_with("SHA256:") && long.len() == 71, "{long}");
        assert_ne!(fitid(" 1"), " 1");
        assert_ne!(fitid("a\nb"), fitid("a b"));
        assert!(fitid("").starts_with("SHA256:"));
    }

    fn file(account: Account) -> File {
        File {
            export_id: uuid::Uuid::nil(),
            created_at: datetime!(2024-02-01 00:00 UTC),
            time_zone: crate::time_zones::StatementZone::utc(),
            sequence: 1,
            from: date!(2024 - 01 - 01),
            to: date!(2024 - 01 - 31),
            account,
            settings: FormatSettings::default(),
        }
    }

    #[test]
    fn account_ids_fit_ofx_lengths() {
        let ids = |account: Account| {
            let file = file(account);
            (bank_id(&file), account_id(&file))
        };
        let de = Account {
            id: "A".into(),
            iban: Some("DE89370400440532013000".into()),
            bic: Some("COBADEFFXXX".into()),
            number: Some("0532013000".into()),
            routing: Some("37040044".into()),
            name: None,
        };
        assert_eq!(ids(de.clone()), ("37040044".into(), "DE89370400440532013000".into()));
        let fr = Account {
            iban: Some("FR1420041010050500013M02606".into()),
            number: Some("0500013M026".into()),
            routing: Some("2004101005".into()),
            ..de.clone()
        };
        assert_eq!(ids(fr.clone()), ("COBADEFF".into(), "0500013M026".into()));
        let fr_iban_only = Account { number: None, id: "x".repeat(30), routing: None, bic: None, ..fr };
        // The IBAN's last 22 characters: its bank, branch and account number.
        assert_eq!(ids(fr_iban_only), ("0".into(), "0041010050500013M02606".into()));
        let bare = Account { id: "ACC-1".into(), ..Account::default() };
        assert_eq!(ids(bare), ("0".into(), "ACC-1".into()));
    }
}
