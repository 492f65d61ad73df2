//! OFX files as two readers this project did not write see them: ofxtools (which validates
//! every element against the OFX 2.2 spec: required elements, order, enums, lengths) and
//! ofxparse. Every statement, entry and balance they read must be the sample's, with texts as
//! the writer's documented rule makes them (`shared::formats::ofx`).

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde_json::Value;
use shared::formats::{Account, BankFormat, FormatSettings};
use testkit::statements::{Sample, decimal, parse, sample, without_totals, write};

/// The OFX text rule, restated: CR LF / CR / LF / TAB become a space, other control characters
/// go, surrounding whitespace goes, the rest is cut to `max` characters (and trimmed again);
/// nothing left means no element.
fn ofx_text(raw: Option<&str>, max: usize) -> Option<String> {
    let spaced = raw?.replace("\r\n", " ").replace(['\r', '\n', '\t'], " ");
    let kept: String =
        spaced.chars().filter(|c| *c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}')).collect();
    let cut: String = kept.trim().chars().take(max).collect();
    let cut = cut.trim_end();
    (!cut.is_empty()).then(|| cut.to_owned())
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

/// The file `sample` becomes, as ofxtools (first) and ofxparse (second) read it.
fn written_and_read(sample: &Sample) -> (Value, Value) {
    let bytes = write(BankFormat::Ofx, sample);
    let mut read = parse("ofx", &bytes).unwrap_or_else(|e| panic!("the parsers refuse the file: {e}"));
    let ofxparse = read["ofxparse"].take();
    assert_eq!(read["parser"], "ofxtools 1.1.1");
    assert_eq!(ofxparse["parser"], "ofxparse 0.21");
    (read, ofxparse)
}

/// Every statement, balance and entry `parsed` holds is the sample's. What a parser does not
/// read (ofxparse: the opening balance, value dates, references) must come back null.
fn assert_reads_back(parsed: &Value, sample: &Sample, reads_everything: bool) {
    let who = &parsed["parser"];
    let statements = parsed["statements"].as_array().unwrap();
    assert_eq!(statements.len(), sample.statements.len(), "{who}: one STMTRS per currency");
    for (read, (statement, entries)) in statements.iter().zip(&sample.statements) {
        let currency = statement.currency;
        assert_eq!(read["currency"], currency.code(), "{who}");
        assert_eq!(read["account"], sample.file.account.iban.as_deref().unwrap(), "{who}");
        assert_eq!(read["bank_id"], sample.file.account.routing.as_deref().unwrap(), "{who}");
        assert_eq!(decimal(&read["closing"]), statement.closing, "{who}: LEDGERBAL is the closing balance");
        assert_eq!(decimal(&read["available"]), statement.closing, "{who}: AVAILBAL repeats it");
        if reads_everything {
            assert_eq!(decimal(&read["opening"]), statement.opening, "{who}: BALLIST OPENING");
        } else {
            assert!(read["opening"].is_null());
        }
        let read_entries = read["entries"].as_array().unwrap();
        assert_eq!(read_entries.len(), entries.len(), "{who}: every entry of {currency}");
        for (got, want) in read_entries.iter().zip(entries) {
            let at = format!("{who}: {currency} entry {}", want.id);
            assert_eq!(decimal(&got["amount"]), want.amount, "{at}");
            if reads_everything {
                // The amount as written: exactly the currency's minor units.
                assert_eq!(got["amount"], currency.fixed(want.amount), "{at}");
            }
            assert_eq!(got["type"], if want.amount.is_sign_negative() { "DEBIT" } else { "CREDIT" }, "{at}");
            assert_eq!(got["booking_date"], want.booking_date.to_string(), "{at}");
            let value_date = want.value_date.filter(|_| reads_everything).map(|d| d.to_string());
            assert_eq!(text(&got["value_date"]), value_date.as_deref(), "{at}: value date");
            assert_eq!(got["id"], want.id.as_str(), "{at}: FITID is the entry's id");
            let memo = ofx_text(want.description.as_deref(), 255);
            assert_eq!(text(&got["description"]), memo.as_deref(), "{at}: MEMO");
            let name = ofx_text(want.counterparty_name.as_deref(), 32);
            assert_eq!(text(&got["counterparty_name"]), name.as_deref(), "{at}: NAME");
            let reference = ofx_text(want.reference.as_deref(), 32).filter(|_| reads_everything);
            assert_eq!(text(&got["reference"]), reference.as_deref(), "{at}: REFNUM");
        }
    }
}

#[test]
fn every_statement_entry_and_balance_reads_back_from_both_parsers() {
    // EUR and USD (2 decimals), JPY (0), KWD and BHD (3); balances below zero; 40 entries per
    // currency cycle every awkward text through NAME and MEMO.
    let sample = without_totals(sample(&["EUR", "USD", "JPY", "KWD", "BHD"], 40));
    assert!(sample.statements.iter().all(|(s, _)| s.opening < Decimal::ZERO && s.closing < Decimal::ZERO));
    let longest = sample.statements[0].1.iter().filter_map(|e| e.description.as_deref());
    assert!(longest.map(|d| d.chars().count()).max() == Some(255), "the sample has a 255-character text");

    let (ofxtools, ofxparse) = written_and_read(&sample);
    assert_reads_back(&ofxtools, &sample, true);
    assert_reads_back(&ofxparse, &sample, false);
    // ofxparse reads only ASCII from an OFX 2 file unless told the encoding (the script says
    // when it had to be: this file carries accents, emoji, Hebrew, Arabic, Cyrillic).
    assert_eq!(ofxparse["encoding_header_added"], true);

    // The period: from the first day's start to the last day's end, at the file's offset (+1).
    let first = &ofxtools["statements"][0];
    assert_eq!(first["start"], "2023-12-31T23:00:00+00:00");
    assert_eq!(first["end"], "2024-01-31T22:59:59.999000+00:00");
    assert_eq!(first["closing_as_of"], first["end"]);
}

#[test]
fn a_plain_ascii_file_is_read_by_ofxparse_as_written() {
    let mut sample = without_totals(sample(&["USD"], 6));
    for (_, entries) in &mut sample.statements {
        for entry in entries {
            entry.description = Some("Invoice 42 & <co> \"net\"".into());
            entry.counterparty_name = Some("ACME Ltd".into());
        }
    }
    let (ofxtools, ofxparse) = written_and_read(&sample);
    assert_eq!(ofxparse["encoding_header_added"], false, "no help needed");
    assert_reads_back(&ofxtools, &sample, true);
    assert_reads_back(&ofxparse, &sample, false);
}

#[test]
fn a_statement_without_entries_keeps_its_balances_next_to_one_with_entries() {
    let mut sample = without_totals(sample(&["EUR", "JPY"], 5));
    let (jpy, entries) = &mut sample.statements[1];
    entries.clear();
    jpy.closing = jpy.opening;
    let (ofxtools, ofxparse) = written_and_read(&sample);
    assert_reads_back(&ofxtools, &sample, true);
    assert_reads_back(&ofxparse, &sample, false);
    assert_eq!(ofxtools["statements"][1]["entries"], serde_json::json!([]));
}

#[test]
fn fitids_are_stable_across_writes_and_unique_in_the_file() {
    let mut sample = without_totals(sample(&["EUR", "USD", "KWD"], 25));
    // Entry ids are the id column's values, unique in the table; the testkit's sample numbers
    // each currency's entries from the same start, so make them rows of one table again.
    for (statement, entries) in &mut sample.statements {
        for entry in entries {
            entry.id = format!("{}-{}", statement.currency, entry.id);
        }
    }
    let bytes = write(BankFormat::Ofx, &sample);
    assert_eq!(bytes, write(BankFormat::Ofx, &sample), "the same sample, the same file");

    let (ofxtools, _) = written_and_read(&sample);
    let fitids: Vec<&str> = ofxtools["statements"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(fitids.len(), 75);
    assert_eq!(fitids.iter().collect::<HashSet<_>>().len(), fitids.len(), "FITIDs are unique");
    let ids: Vec<&str> =
        sample.statements.iter().flat_map(|(_, e)| e.iter().map(|e| e.id.as_str())).collect();
    assert_eq!(fitids, ids, "and are the entries' ids");
}

#[test]
fn the_signon_says_when_and_who_and_each_statement_has_its_own_transaction_id() {
    let mut sample = without_totals(sample(&["EUR", "USD"], 3));
    sample.file.settings = FormatSettings {
        ofx_org: Some("Bank & Co <Frankfurt>\n".into()),
        ofx_fid: Some("1234".into()),
        ..sample.file.settings
    };
    let (ofxtools, _) = written_and_read(&sample);
    // DTSERVER is the snapshot's time (02:30 at +01:00), which ofxtools gives in UTC.
    assert_eq!(ofxtools["server_time"], "2024-02-01T01:30:00+00:00");
    assert_eq!(ofxtools["fi"], serde_json::json!({"org": "Bank & Co <Frankfurt>", "fid": "1234"}));
    let trnuids: Vec<&str> =
        ofxtools["transaction_ids"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let export = sample.file.export_id.simple().to_string();
    assert_eq!(trnuids, [format!("{export}-0"), format!("{export}-1")]);

    // Without ORG there is no FI aggregate (ORG is required in it).
    sample.file.settings = FormatSettings { ofx_org: None, ..sample.file.settings };
    assert!(written_and_read(&sample).0["fi"].is_null());
}

#[test]
fn account_identifiers_longer_than_ofx_allows_are_chosen_and_cut_by_the_documented_rule() {
    let mut sample = without_totals(sample(&["EUR"], 2));
    // A French IBAN (27 characters) and a 10-digit bank code: neither fits.
    sample.file.account = Account {
        id: "compte-courant-principal-0001".into(),
        iban: Some("FR1420041010050500013M02606".into()),
        bic: Some("PSSTFRPPXXX".into()),
        number: None,
        routing: Some("2004101005".into()),
        name: None,
    };
    let (ofxtools, ofxparse) = written_and_read(&sample);
    for read in [&ofxtools, &ofxparse] {
        let statement = &read["statements"][0];
        assert_eq!(statement["account"], "0041010050500013M02606", "the IBAN's last 22 characters");
        assert_eq!(statement["bank_id"], "PSSTFRPP", "the BIC's first 8 characters");
    }
    // With a domestic number that fits, that number.
    sample.file.account.number = Some("0500013M026".into());
    assert_eq!(written_and_read(&sample).0["statements"][0]["account"], "0500013M026");
}
