//! MT940 as the `mt-940` package reads it (`mt940.parse_statements`, one collection per page):
//! every entry, every balance, every page's carried balance, and the text rules of
//! `shared::formats::mt940`.

use rust_decimal::Decimal;
use serde_json::Value;
use shared::formats::{BankFormat, text::swift_x};
use testkit::statements::{self, OwnedEntry, Sample, decimal};

/// Writes `sample` as MT940, checks the lines, and returns what the parser read.
fn write_and_parse(sample: &Sample) -> (String, Value) {
    let bytes = statements::write(BankFormat::Mt940, sample);
    let text = String::from_utf8(bytes.clone()).expect("MT940 is ASCII");
    assert_lines_follow_swift_rules(&text);
    let parsed =
        statements::parse("mt940", &bytes).unwrap_or_else(|e| panic!("mt-940 refused the file: {e}"));
    assert!(parsed["parser"].as_str().unwrap().starts_with("mt-940 "));
    (text, parsed)
}

/// CRLF line ends, at most 65 characters of the X set per line, `:` only in front of the
/// tags written, `-` only as a message's end.
fn assert_lines_follow_swift_rules(text: &str) {
    assert!(text.ends_with("\r\n-\r\n"), "a file ends with a message end");
    let body = text.strip_suffix("\r\n").unwrap();
    assert!(!body.contains('\n') || body.split("\r\n").all(|l| !l.contains(['\r', '\n'])));
    let tags = [":20:", ":25:", ":28C:", ":60F:", ":60M:", ":61:", ":86:", ":62M:", ":62F:"];
    for line in body.split("\r\n") {
        assert!(line.len() <= 65, "longer than 65: {line:?}");
        assert!(
            line.chars().all(|c| c.is_ascii_alphanumeric() || "/-?:().,'+ ".contains(c)),
            "outside X: {line:?}"
        );
        if line.starts_with(':') {
            assert!(tags.iter().any(|t| line.starts_with(t)), "not a tag: {line:?}");
        }
        if line.starts_with('-') {
            assert_eq!(line, "-", "only the message end starts with -");
        }
    }
}

/// Every entry, both balances, and every page: numbered `sequence/page`, the first opening
/// with `:60F:`, each later one with `:60M:` equal to the `:62M:` before it, that being the
/// opening plus the entries so far, and the last closing with `:62F:`.
fn assert_statement_survives(sample: &Sample, parsed: &Value) {
    let per_page = sample.file.settings.mt940_entries_per_page;
    let statements = parsed["statements"].as_array().unwrap();
    assert_eq!(statements.len(), sample.statements.len());
    let mut pages = parsed["pages"].as_array().unwrap().iter();
    for ((statement, entries), read) in sample.statements.iter().zip(statements) {
        assert_eq!(read["account"], "DE89370400440532013000");
        assert_eq!(read["currency"], statement.currency.code());
        assert_eq!(read["sequence"], "42");
        assert_eq!(decimal(&read["opening"]), statement.opening);
        assert_eq!(decimal(&read["closing"]), statement.closing);
        let read_entries = read["entries"].as_array().unwrap();
        assert_eq!(read_entries.len(), entries.len());
        for (entry, got) in entries.iter().zip(read_entries) {
            assert_eq!(decimal(&got["amount"]), entry.amount, "{got}");
            assert_eq!(got["currency"], statement.currency.code());
            assert_eq!(got["booking_date"], entry.booking_date.to_string());
            assert_eq!(got["value_date"], entry.value_date.unwrap_or(entry.booking_date).to_string());
            assert_eq!(got["id"], entry.id.as_str());
            assert_eq!(got["transaction_type"], "NMSC");
        }
        let page_count = entries.len().div_ceil(per_page).max(1);
        let mut balance = statement.opening;
        for (page, chunk) in
            (1..=page_count).zip(entries.chunks(per_page).chain(std::iter::once(&[][..])).take(page_count))
        {
            let read = pages.next().expect("a page per message");
            assert_eq!(read["statement_number"], "42");
            assert_eq!(read["sequence_number"], page.to_string());
            assert_eq!(read["entries"], chunk.len());
            if page == 1 {
                assert_eq!(decimal(&read["final_opening"]), statement.opening);
                assert_eq!(read["opening_date"], sample.file.from.to_string());
            } else {
                assert!(read["final_opening"].is_null());
                assert_eq!(decimal(&read["intermediate_opening"]), balance, "carried to page {page}");
            }
            balance += chunk.iter().map(|e| e.amount).sum::<Decimal>();
            if page == page_count {
                assert_eq!(decimal(&read["final_closing"]), statement.closing);
                assert_eq!(balance, statement.closing);
                assert_eq!(read["closing_date"], sample.file.to.to_string());
            } else {
                assert!(read["final_closing"].is_null());
                assert_eq!(decimal(&read["intermediate_closing"]), balance, "page {page} closes");
                assert_eq!(read["closing_date"], chunk.last().unwrap().booking_date.to_string());
            }
        }
    }
    assert!(pages.next().is_none());
}

/// `:86:` as documented: the description word-wrapped (cut when it runs out of lines), then the
/// counterparty's name and account on a line each; `?` as `.`; lines that would start with `:`
/// or `-` start with a space.
fn assert_details_follow_the_rule(entry: &OwnedEntry, read: &Value) {
    let x = |t: &Option<String>| t.as_deref().map(|t| swift_x(t).replace('?', ".")).filter(|t| !t.is_empty());
    let (description, name, account) =
        (x(&entry.description), x(&entry.counterparty_name), x(&entry.counterparty_account));
    let Some(details) = read["description"].as_str() else {
        assert!(description.is_none() && name.is_none() && account.is_none());
        return;
    };
    let mut lines: Vec<&str> = details.split('\n').collect();
    assert!(lines.len() <= 6, "{details:?}");
    // The first line follows the tag in the file (and the parser strips the space in front).
    for line in &lines[1..] {
        assert!(!line.starts_with([':', '-']) && !line.ends_with(' '), "{line:?}");
    }
    if let Some(account) = account {
        assert_eq!(lines.pop().unwrap().trim_start(), account);
    }
    if let Some(name) = name {
        let line = lines.pop().unwrap().trim_start();
        assert!(name.starts_with(line) && (line == name || name.len() > 61), "{line:?} of {name:?}");
    }
    let squeeze = |t: &str| t.chars().filter(|c| *c != ' ').collect::<String>();
    match description {
        Some(description) => {
            let written = squeeze(&lines.join(""));
            let whole = squeeze(&description);
            assert!(whole.starts_with(&written), "{written:?} is not the start of {whole:?}");
            if description.len() <= 61 + 65 * (lines.len() - 1) - 10 {
                assert_eq!(lines.iter().map(|l| l.trim_start()).collect::<Vec<_>>().join(" "), description);
            }
        }
        None => assert!(lines.is_empty()),
    }
    let supplementary = read["extra_details"].as_str().unwrap_or_default().trim_start();
    match x(&entry.counterparty_name) {
        Some(_) => assert!(swift_x(entry.counterparty_name.as_deref().unwrap()).starts_with(supplementary)),
        None => assert_eq!(supplementary, ""),
    }
}

#[test]
fn a_long_statement_is_paged_and_the_parser_reads_every_entry_and_every_carried_balance() {
    let mut sample = statements::without_totals(statements::sample(&["EUR"], 23));
    assert_eq!(sample.file.settings.mt940_entries_per_page, 5);
    let (text, parsed) = write_and_parse(&sample);
    assert_statement_survives(&sample, &parsed);
    assert_eq!(text.matches("\r\n-\r\n").count(), 5, "23 entries at 5 a page are 5 messages");
    assert!(text.starts_with(
        ":20:123456789abcdef0\r\n:25:DE89370400440532013000\r\n:28C:42/1\r\n:60F:D240101EUR50000,00\r\n"
    ));
    assert!(text.contains("\r\n:28C:42/2\r\n:60M:"));

    // A positive opening whose running balance crosses zero: the marks follow the sign.
    let (statement, _) = &mut sample.statements[0];
    let delta = Decimal::new(5_003_000, 2);
    statement.opening += delta;
    statement.closing += delta;
    let (text, parsed) = write_and_parse(&sample);
    assert_statement_survives(&sample, &parsed);
    assert!(text.contains(":60F:C240101EUR30,00\r\n"), "{text}");
    assert!(text.contains(":62M:D") && text.contains(":60M:C"));
}

#[test]
fn yen_kuwaiti_and_bahraini_dinars_keep_their_minor_units() {
    for (code, opening) in [
        ("JPY", ":60F:D240101JPY5000000,\r\n"),
        ("KWD", ":60F:D240101KWD5000,000\r\n"),
        ("BHD", ":60F:D240101BHD5000,000\r\n"),
    ] {
        let sample = statements::without_totals(statements::sample(&[code], 12));
        let (text, parsed) = write_and_parse(&sample);
        assert_statement_survives(&sample, &parsed);
        assert!(text.contains(opening), "{code}: {text}");
    }
    let sample = statements::sample(&["JPY"], 1);
    let (text, _) = write_and_parse(&sample);
    assert!(text.contains(":61:2401010101C123000,NMSCREF-0/JPY//9000000\r\n"), "{text}");
}

#[test]
fn a_statement_without_entries_is_one_page_from_opening_to_closing() {
    let sample = statements::without_totals(statements::sample(&["EUR"], 0));
    let (text, parsed) = write_and_parse(&sample);
    assert_statement_survives(&sample, &parsed);
    assert_eq!(
        text,
        ":20:123456789abcdef0\r\n:25:DE89370400440532013000\r\n:28C:42/1\r\n:60F:D240101EUR50000,00\r\n:62F:D240131EUR50000,00\r\n-\r\n"
    );
}

#[test]
fn a_full_last_page_is_not_followed_by_an_empty_one() {
    let sample = statements::without_totals(statements::sample(&["EUR"], 10));
    let (text, parsed) = write_and_parse(&sample);
    assert_statement_survives(&sample, &parsed);
    assert_eq!(text.matches(":28C:").count(), 2);
}

#[test]
fn each_statement_of_a_file_is_its_own_run_of_pages() {
    let sample = statements::without_totals(statements::sample(&["EUR", "USD"], 7));
    let (_, parsed) = write_and_parse(&sample);
    assert_statement_survives(&sample, &parsed);
}

#[test]
fn awkward_text_is_transliterated_wrapped_and_cut_by_the_documented_rule() {
    let sample = statements::without_totals(statements::sample(&["EUR"], 14));
    let (text, parsed) = write_and_parse(&sample);
    assert_statement_survives(&sample, &parsed);
    let entries = parsed["statements"][0]["entries"].as_array().unwrap();
    for (entry, read) in sample.statements[0].1.iter().zip(entries) {
        assert_details_follow_the_rule(entry, read);
    }
    let iban = "FR1420041010050500013M02606";
    let cafe = "Cafe Mueller + Soehne ss rocket money with wings";
    assert_eq!(entries[0]["description"], format!("Rent 'May' + (utilities)\n{cafe}\n{iban}"));
    assert_eq!(entries[0]["extra_details"], "Cafe Mueller + Soehne ss rocket");
    assert_eq!(entries[1]["description"], "line one line two line three\ntshlvm df. Platiozh");
    // `:61:` at a line's start would be a tag: the line starts with a space; `?` is `.`.
    assert_eq!(entries[2]["description"], format!("{cafe}\n :61:fake tag -) (4: './,.+()\n{iban}"));
    assert_eq!(entries[2]["extra_details"], " :61:fake tag -) (4: '?/,.+()");
    let long = "x".repeat(200) + &"e".repeat(55);
    assert_eq!(
        entries[5]["description"],
        format!(
            "{}\n{}\n{}\n{}\nRent 'May' + (utilities)",
            &long[..61],
            &long[61..126],
            &long[126..191],
            &long[191..]
        )
    );
    assert_eq!(entries[6]["description"], format!("a bc\nline one line two line three\n{iban}"));
    // No description (every fifth entry): the name and the account only.
    assert_eq!(entries[9]["description"], ":61:fake tag -) (4: './,.+()");
    assert!(text.contains(":86: :61:fake tag"));
    assert_eq!(entries[0]["reference"], "REF-0/EUR");
}

#[test]
fn references_type_codes_and_long_amounts_fit_the_statement_line() {
    let mut sample = statements::without_totals(statements::sample(&["EUR"], 4));
    let entries = &mut sample.statements[0].1;
    entries[0].bank_code = Some("trf".into());
    entries[0].reference = Some("//a//b/".into());
    entries[1].bank_code = Some("1234".into());
    entries[1].reference = None;
    entries[2].reference = Some("M\u{fc}ller-Rechnung 2024-0001".into());
    entries[2].id = "00000000-aaaa-bbbb-cccc-0123456789ab".into();
    entries[3].bank_code = Some("\u{fc}be".into());
    entries[3].reference = Some("REF-3/EUR-ABCDEFGH".into());
    entries[3].id = "1234567890123456".into();
    let big = Decimal::new(99_999_999_999_999, 2);
    let (statement, entries) = &mut sample.statements[0];
    let before = entries[3].amount;
    entries[3].amount = big;
    statement.closing += big - before;
    let (text, parsed) = write_and_parse(&sample);
    let read = parsed["statements"][0]["entries"].as_array().unwrap();
    assert_eq!((&read[0]["transaction_type"], &read[0]["reference"]), (&"NTRF".into(), &"a/b".into()));
    assert_eq!((&read[1]["transaction_type"], &read[1]["reference"]), (&"NMSC".into(), &"NONREF".into()));
    assert_eq!(
        (&read[2]["reference"], &read[2]["id"]),
        (&"Mueller-Rechnung".into(), &"00000000-aaaa-bb".into())
    );
    assert_eq!(read[3]["transaction_type"], "NMSC");
    assert_eq!(decimal(&read[3]["amount"]), big);
    // A 15-character amount leaves 13 characters of the bank reference on a 65-character line.
    assert!(text.contains(":61:2401040104C999999999999,99NMSCREF-3/EUR-ABCDEF//1234567890123\r\n"), "{text}");
    assert_eq!(decimal(&parsed["statements"][0]["closing"]), sample.statements[0].0.closing);
}
