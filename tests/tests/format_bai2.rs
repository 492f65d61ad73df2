//! BAI2 as the `bai2` package reads it (`parse_from_file`, which checks every control total and
//! record count itself): headers, balances, totals, every entry in minor units, and the text
//! rules of `shared::formats::bai2`.

use rust_decimal::Decimal;
use serde_json::Value;
use shared::formats::{BankFormat, text::ascii_text};
use testkit::statements::{self, OwnedEntry, Sample, decimal};

/// Writes `sample` as BAI2, checks the physical records, and returns the file and what the
/// parser read.
fn write_and_parse(sample: &Sample) -> (String, Value) {
    let bytes = statements::write(BankFormat::Bai2, sample);
    let text = String::from_utf8(bytes.clone()).expect("BAI2 is ASCII");
    assert!(text.ends_with("\r\n"));
    for line in text.strip_suffix("\r\n").unwrap().split("\r\n") {
        assert!(line.len() <= 80 && !line.contains(['\r', '\n']), "{line:?}");
        assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
        let code = &line[..2];
        assert!(["01", "02", "03", "16", "88", "49", "98", "99"].contains(&code), "{line:?}");
        if code != "16" && code != "88" {
            assert!(line.ends_with('/'), "{line:?}");
        }
    }
    let parsed =
        statements::parse("bai2", &bytes).unwrap_or_else(|e| panic!("bai2 refused the file: {e}\n{text}"));
    assert!(parsed["parser"].as_str().unwrap().starts_with("bai2 "));
    (text, parsed)
}

/// The text of an entry as documented: description, counterparty name and account in
/// printable ASCII, joined by `; `, runs of `/` single, no `/` at the end.
fn expected_text(entry: &OwnedEntry) -> Option<String> {
    let parts = [&entry.description, &entry.counterparty_name, &entry.counterparty_account];
    let mut text = parts
        .iter()
        .filter_map(|p| p.as_deref())
        .map(ascii_text)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    while text.contains("//") {
        text = text.replace("//", "/");
    }
    let text = text.trim_end_matches(['/', ' ']).to_owned();
    (!text.is_empty()).then_some(text)
}

/// Headers as documented, and every statement's balances, totals, entries and control totals.
fn assert_file_survives(sample: &Sample, text: &str, parsed: &Value) {
    let file = &parsed["file"];
    assert_eq!(file["sender"], "STATEMENTS");
    assert_eq!(file["receiver"], "CUSTOMER");
    assert_eq!((&file["creation_date"], &file["creation_time"]), (&"2024-02-01".into(), &"02:30:00".into()));
    assert_eq!(file["file_id"], "42");
    assert!(file["physical_record_length"].is_null() && file["block_size"].is_null());
    assert_eq!(file["version"], 2);
    assert_eq!(file["groups"], sample.statements.len());
    assert_eq!(file["records"], text.lines().count(), "every physical record counts");
    let groups = parsed["groups"].as_array().unwrap();
    let statements = parsed["statements"].as_array().unwrap();
    assert_eq!((groups.len(), statements.len()), (sample.statements.len(), sample.statements.len()));
    let mut file_total = 0i128;
    for (((statement, entries), group), read) in sample.statements.iter().zip(groups).zip(statements) {
        let currency = statement.currency;
        assert_eq!(group["ultimate_receiver"], "CUSTOMER");
        assert_eq!(group["originator"], "37040044");
        assert_eq!((&group["status"], &group["as_of_date_modifier"]), (&"1".into(), &"2".into()));
        assert_eq!(group["as_of_date"], "2024-01-31");
        assert_eq!(group["as_of_time"], "23:59:59.999999", "2400: the end of the day");
        assert_eq!(group["currency"], currency.code());
        assert_eq!(read["account"], "DE89370400440532013000");
        assert_eq!(read["currency"], currency.code());
        assert_eq!(decimal(&read["opening"]), statement.opening);
        assert_eq!(decimal(&read["closing"]), statement.closing);
        let summaries = &read["summaries"];
        assert_eq!(summaries["010"]["amount"], currency.minor(statement.opening) as i64);
        assert_eq!(summaries["015"]["amount"], currency.minor(statement.closing) as i64);
        let mut control = currency.minor(statement.opening) + currency.minor(statement.closing);
        match (statement.credits, statement.debits) {
            (Some(credits), Some(debits)) => {
                assert_eq!(summaries["100"]["amount"], currency.minor(credits.sum) as i64);
                assert_eq!(summaries["100"]["item_count"], credits.count);
                assert_eq!(summaries["400"]["amount"], currency.minor(debits.sum) as i64);
                assert_eq!(summaries["400"]["item_count"], debits.count);
                control += currency.minor(credits.sum) + currency.minor(debits.sum);
            }
            _ => assert_eq!(summaries.as_object().unwrap().len(), 2, "no totals without the engine's"),
        }
        let read_entries = read["entries"].as_array().unwrap();
        assert_eq!(read_entries.len(), entries.len());
        for (entry, got) in entries.iter().zip(read_entries) {
            assert_eq!(decimal(&got["amount"]), entry.amount, "{got}");
            assert_eq!(got["minor_amount"], currency.minor(entry.amount).abs() as i64);
            assert_eq!(got["funds_type"], "Z");
            assert_eq!(got["id"], entry.id.as_str());
            let reference = entry.reference.as_deref().map(|r| r.replace(['/', ','], "-"));
            assert_eq!(got["reference"].as_str(), reference.as_deref());
            if entry.bank_code.is_none() {
                assert_eq!(got["type_code"], if entry.amount.is_sign_negative() { "699" } else { "399" });
            }
            control += currency.minor(entry.amount).abs();
        }
        assert_eq!(read["control_total"], control as i64);
        assert_eq!(group["control_total"], control as i64);
        file_total += control;
    }
    assert_eq!(file["control_total"], file_total as i64);
}

/// The text as the parser reads it: as expected, except that a word split across records reads
/// back with a space inside (compared without spaces then).
fn assert_text_follows_the_rule(entry: &OwnedEntry, got: &Value) {
    let expected = expected_text(entry);
    let read = got["description"].as_str();
    let Some(expected) = expected else {
        assert_eq!(read, None);
        return;
    };
    let read = read.expect("a text");
    if expected.split(' ').all(|word| word.len() <= 40) {
        assert_eq!(read, expected);
    } else {
        let squeeze = |t: &str| t.replace(' ', "");
        assert_eq!(squeeze(read), squeeze(&expected));
    }
}

#[test]
fn headers_balances_totals_and_every_entry_survive_the_bai2_parser() {
    let sample = statements::sample(&["EUR"], 23);
    let (text, parsed) = write_and_parse(&sample);
    assert_file_survives(&sample, &text, &parsed);
    assert!(text.starts_with(
        "01,STATEMENTS,CUSTOMER,240201,0230,42,,,2/\r\n02,CUSTOMER,37040044,1,240131,2400,EUR,2/\r\n\
         03,DE89370400440532013000,EUR,010,-5000000,,,015,"
    ));
    assert!(text.ends_with(&format!(
        "98,{0},1,{1}/\r\n99,{0},1,{2}/\r\n",
        parsed["file"]["control_total"],
        text.lines().count() - 2,
        text.lines().count()
    )));
}

#[test]
fn without_the_engines_totals_the_account_has_only_its_balances() {
    let sample = statements::without_totals(statements::sample(&["EUR"], 9));
    let (text, parsed) = write_and_parse(&sample);
    assert_file_survives(&sample, &text, &parsed);
}

#[test]
fn amounts_are_minor_units_of_yen_and_three_decimal_dinars() {
    for code in ["JPY", "KWD", "BHD"] {
        let sample = statements::sample(&[code], 8);
        let (text, parsed) = write_and_parse(&sample);
        assert_file_survives(&sample, &text, &parsed);
        // The first entry is 123000 minor units in each: 123000 yen, 123.000 dinars.
        let first = &sample.statements[0].1[0];
        assert_eq!(first.amount, Decimal::new(123_000, sample.statements[0].0.currency.minor_units()));
        assert!(text.contains("\r\n16,399,123000,Z,9000000,"), "{code}: {text}");
        assert!(text.contains(",010,-5000000,,,015,"), "{code}: {text}");
    }
}

#[test]
fn a_statement_without_entries_is_an_account_and_its_trailer() {
    let sample = statements::without_totals(statements::sample(&["EUR"], 0));
    let (text, parsed) = write_and_parse(&sample);
    assert_file_survives(&sample, &text, &parsed);
    assert_eq!(
        text,
        "01,STATEMENTS,CUSTOMER,240201,0230,42,,,2/\r\n02,CUSTOMER,37040044,1,240131,2400,EUR,2/\r\n\
         03,DE89370400440532013000,EUR,010,-5000000,,,015,-5000000,,/\r\n49,-10000000,2/\r\n\
         98,-10000000,1,4/\r\n99,-10000000,1,6/\r\n"
    );
}

#[test]
fn each_statement_is_a_group_of_its_own_currency() {
    let sample = statements::sample(&["EUR", "USD"], 6);
    let (text, parsed) = write_and_parse(&sample);
    assert_file_survives(&sample, &text, &parsed);
}

#[test]
fn awkward_text_is_ascii_and_continues_in_88_records_by_the_documented_rule() {
    let sample = statements::sample(&["EUR"], 14);
    let (text, parsed) = write_and_parse(&sample);
    assert_file_survives(&sample, &text, &parsed);
    let read = parsed["statements"][0]["entries"].as_array().unwrap();
    for (entry, got) in sample.statements[0].1.iter().zip(read) {
        assert_text_follows_the_rule(entry, got);
    }
    let iban = "FR1420041010050500013M02606";
    assert_eq!(
        read[0]["description"],
        format!("Rent \"May\" & <utilities>; Cafe Mueller & Soehne ss rocket money with wings; {iban}")
    );
    assert_eq!(read[1]["description"], "line one line two line three; tshlvm df` Platiozh");
    // `,` and `/` in the text read back as written.
    assert_eq!(
        read[2]["description"],
        format!("Cafe Mueller & Soehne ss rocket money with wings; :61:fake tag -}} {{4: '?/,.+(); {iban}")
    );
    assert_eq!(read[4]["description"], format!("a bc; {iban}"));
    // Written with continuations: the text breaks at spaces, 88 records go on with it.
    assert!(text.contains("\r\n16,399,123000,Z,9000000,REF-0-EUR,Rent \"May\" & <utilities>; Cafe Mueller &\r\n88,Soehne ss rocket money with wings; FR1420041010050500013M02606\r\n"), "{text}");
}

#[test]
fn bank_codes_references_and_long_fields() {
    let mut sample = statements::without_totals(statements::sample(&["EUR"], 5));
    let entries = &mut sample.statements[0].1;
    entries[0].bank_code = Some("195".into()); // credit: incoming money transfer
    entries[1].bank_code = Some("475".into()); // debit: check paid
    entries[2].bank_code = Some("475".into()); // a debit code on a credit: 399
    entries[3].bank_code = Some("TRF".into());
    entries[0].reference = Some("a,b/c".into());
    entries[1].reference = None;
    entries[1].description = None;
    entries[1].counterparty_name = None;
    entries[1].counterparty_account = None;
    entries[2].id = "i".repeat(90);
    entries[2].reference = Some("r".repeat(90));
    entries[3].description = Some("ends in slashes //".into());
    entries[3].counterparty_name = None;
    entries[3].counterparty_account = None;
    let (text, parsed) = write_and_parse(&sample);
    let read = parsed["statements"][0]["entries"].as_array().unwrap();
    let codes: Vec<&str> = read.iter().map(|e| e["type_code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["195", "475", "399", "699", "399"]);
    assert_eq!(read[0]["reference"], "a-b-c");
    assert!(read[1]["reference"].is_null() && read[1]["description"].is_null());
    assert!(text.contains("\r\n16,475,127551,Z,9000001,/\r\n"), "{text}");
    assert_eq!(
        (read[2]["id"].as_str().unwrap(), read[2]["reference"].as_str().unwrap()),
        ("i".repeat(76).as_str(), "r".repeat(76).as_str())
    );
    assert_eq!(read[3]["description"], "ends in slashes", "a / at a record's end would end it");
    for (entry, got) in sample.statements[0].1.iter().zip(read) {
        assert_eq!(decimal(&got["amount"]), entry.amount);
        assert_text_follows_the_rule(entry, got);
    }
}
