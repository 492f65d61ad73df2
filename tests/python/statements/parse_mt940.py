"""MT940 through the `mt-940` package (`mt940.parse_statements`: one collection per `:20:`).

Every message (page) the parser returns is listed under "pages"; a statement is the run of
pages of one statement number: its opening is the first page's `:60F:`, its closing the last
page's `:62F:`, its entries all of the pages' entries in order. Entries carry, besides the
normalized keys, what the parser read of `:61:` and `:86:` as it returned it.
"""

import importlib.metadata

import mt940


def _balance(data, key):
    balance = data.get(key)
    return None if balance is None else str(balance.amount.amount)


def _date(value):
    return None if value is None else value.isoformat()


def _entry(transaction):
    data = transaction.data
    return {
        "amount": str(data["amount"].amount),
        "booking_date": _date(data.get("entry_date")),
        "value_date": _date(data.get("date")),
        "id": data.get("bank_reference"),
        "description": data.get("transaction_details"),
        "counterparty_name": None,
        "reference": data.get("customer_reference"),
        "transaction_type": data.get("id"),
        "extra_details": data.get("extra_details"),
        "currency": data["amount"].currency,
    }


def parse(path):
    with open(path, "rb") as f:
        raw = f.read()
    statements, pages = [], []
    for page in mt940.parse_statements(raw):
        data = page.data
        pages.append({
            "transaction_reference": data.get("transaction_reference"),
            "account": data.get("account_identification"),
            "statement_number": data.get("statement_number"),
            "sequence_number": data.get("sequence_number"),
            "final_opening": _balance(data, "final_opening_balance"),
            "intermediate_opening": _balance(data, "intermediate_opening_balance"),
            "intermediate_closing": _balance(data, "intermediate_closing_balance"),
            "final_closing": _balance(data, "final_closing_balance"),
            "opening_date": _date((data.get("final_opening_balance") or data.get("intermediate_opening_balance")).date),
            "closing_date": _date((data.get("final_closing_balance") or data.get("intermediate_closing_balance")).date),
            "currency": page.currency,
            "entries": len(page),
        })
        if data.get("final_opening_balance") is not None or not statements:
            statements.append({
                "account": data.get("account_identification"),
                "currency": page.currency,
                "sequence": data.get("statement_number"),
                "opening": _balance(data, "final_opening_balance"),
                "closing": None,
                "entries": [],
            })
        statement = statements[-1]
        statement["entries"].extend(_entry(t) for t in page)
        statement["closing"] = _balance(data, "final_closing_balance")
    return {
        "parser": "mt-940 " + importlib.metadata.version("mt-940"),
        "statements": statements,
        "pages": pages,
    }
