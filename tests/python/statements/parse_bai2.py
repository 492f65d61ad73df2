"""BAI2 through the `bai2` package (`bai2.parse_from_file`, which checks every control total,
record count, group and account count, and refuses a file where one is wrong).

A statement is an account record (`03`) of a group: its currency is the group's, its opening
and closing are the `010` and `015` summaries, turned from minor units into decimals by the
currency's ISO 4217 minor units (the one number BAI2 leaves to the reader). Entries are the
`16` records: the amount signed by the type code's side (credit or debit, as the package's
type code table says), the package's bank reference as id, customer reference as reference,
text as description. BAI2 has no per-entry dates: booking and value dates are null. Besides,
"file", "groups" and "summaries" list what the package read of the headers and summaries.
"""

import decimal
import importlib.metadata

from bai2 import bai2
from bai2.constants import TypeCodeTransaction

# ISO 4217 minor units of the currencies the tests use (BAI2 amounts are in minor units).
MINOR_UNITS = {"JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3, "TND": 3}


def _decimal(minor, currency):
    return str(decimal.Decimal(minor).scaleb(-MINOR_UNITS.get(currency, 2)))


def parse(path):
    with open(path) as f:
        parsed = bai2.parse_from_file(f)
    header = parsed.header
    statements, groups = [], []
    for group in parsed.children:
        gh = group.header
        currency = gh.currency
        groups.append({
            "ultimate_receiver": gh.ultimate_receiver_id,
            "originator": gh.originator_id,
            "status": gh.group_status.value,
            "as_of_date": gh.as_of_date.isoformat(),
            "as_of_time": gh.as_of_time.isoformat(),
            "as_of_date_modifier": gh.as_of_date_modifier.value,
            "currency": currency,
            "control_total": group.trailer.group_control_total,
            "records": group.trailer.number_of_records,
        })
        for account in group.children:
            ah = account.header
            account_currency = ah.currency or currency
            summaries = {
                s.type_code.code: {"amount": s.amount, "item_count": s.item_count}
                for s in ah.summary_items
            }
            entries = []
            for detail in account.children:
                side = detail.type_code.transaction
                sign = -1 if side == TypeCodeTransaction.debit else 1
                entries.append({
                    "amount": _decimal(sign * detail.amount, account_currency),
                    "booking_date": None,
                    "value_date": None,
                    "id": detail.bank_reference,
                    "description": detail.text,
                    "counterparty_name": None,
                    "reference": detail.customer_reference,
                    "type_code": detail.type_code.code,
                    "funds_type": detail.funds_type.value,
                    "minor_amount": detail.amount,
                })
            statements.append({
                "account": ah.customer_account_number,
                "currency": account_currency,
                "sequence": header.file_id,
                "opening": _decimal(summaries["010"]["amount"], account_currency),
                "closing": _decimal(summaries["015"]["amount"], account_currency),
                "summaries": summaries,
                "control_total": account.trailer.account_control_total,
                "records": account.trailer.number_of_records,
                "entries": entries,
            })
    return {
        "parser": "bai2 " + importlib.metadata.version("bai2"),
        "file": {
            "sender": header.sender_id,
            "receiver": header.receiver_id,
            "creation_date": header.creation_date.isoformat(),
            "creation_time": header.creation_time.isoformat(),
            "file_id": header.file_id,
            "physical_record_length": header.physical_record_length,
            "block_size": header.block_size,
            "version": header.version_number,
            "control_total": parsed.trailer.file_control_total,
            "groups": parsed.trailer.number_of_groups,
            "records": parsed.trailer.number_of_records,
        },
        "groups": groups,
        "statements": statements,
    }
