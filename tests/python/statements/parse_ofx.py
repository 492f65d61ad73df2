"""OFX statements as ofxtools and ofxparse read them (see parse_statement.py for the shape).

The top level is what ofxtools returned (`OFXTree.parse` then `convert()`, which validates
every element against the OFX 2.2 spec: enums, lengths, required elements, order).
`"ofxparse"` holds the same shape from ofxparse's `OfxParser.parse`. Both list every
`STMTRS` of the file, in file order (ofxtools: `OFX.statements`; ofxparse: `Ofx.accounts`).

Only what each parser returned is reported:
- ofxtools: the opening balance is the `BALLIST` `BAL` named OPENING; `value_date` is DTAVAIL;
  dates are the UTC dates it normalised the times to (the writer's days are noon, so the day
  survives); `reference` is REFNUM.
- ofxparse reads no BALLIST, DTAVAIL or REFNUM: those are null. Its dates are the local
  wall-clock dates (it ignores an offset written without a zone name).
"""

import importlib.metadata
import io
import warnings

import ofxparse
from ofxtools.Parser import OFXTree


def _date(value):
    return value.date().isoformat() if value is not None else None


def _ofxtools(path):
    tree = OFXTree()
    with warnings.catch_warnings():
        # A NagString over its length is only a warning in ofxtools: make it fail here.
        warnings.simplefilter("error")
        tree.parse(path)
        ofx = tree.convert()
    statements = []
    for stmt in ofx.statements:
        opening = None
        for bal in stmt.ballist or []:
            if bal.name == "OPENING":
                opening = bal.value
        statements.append(
            {
                "account": stmt.account.acctid,
                "bank_id": stmt.account.bankid,
                "currency": stmt.curdef,
                "sequence": None,
                "opening": opening,
                "closing": stmt.ledgerbal.balamt,
                "closing_as_of": stmt.ledgerbal.dtasof.isoformat(),
                "available": stmt.availbal.balamt if stmt.availbal is not None else None,
                "start": stmt.banktranlist.dtstart.isoformat(),
                "end": stmt.banktranlist.dtend.isoformat(),
                "entries": [
                    {
                        "amount": t.trnamt,
                        "type": t.trntype,
                        "booking_date": _date(t.dtposted),
                        "value_date": _date(t.dtavail),
                        "id": t.fitid,
                        "description": t.memo,
                        "counterparty_name": t.name,
                        "reference": t.refnum,
                    }
                    for t in stmt.banktranlist
                ],
            }
        )
    signon = ofx.signonmsgsrsv1.sonrs
    return {
        "parser": "ofxtools " + importlib.metadata.version("ofxtools"),
        "server_time": signon.dtserver.isoformat(),
        "fi": {"org": signon.fi.org, "fid": signon.fi.fid} if signon.fi is not None else None,
        "transaction_ids": [rs.trnuid for rs in ofx.bankmsgsrsv1],
        "statements": statements,
    }


def _ofxparse(path):
    with open(path, "rb") as fh:
        data = fh.read()
    # ofxparse 0.21 takes the body's encoding only from an OFX 1 (SGML) header (`ENCODING:`)
    # and reads anything else as ASCII, so it refuses every OFX 2 file with a non-ASCII byte,
    # whatever its XML declaration says (jseutter/ofxparse#133, open since 2017). Importers
    # built on it prepend the SGML header line it understands; so does this, for non-ASCII
    # files only, and says so in the output. The body is passed unchanged.
    workaround = not data.isascii()
    if workaround:
        data = b"ENCODING:UTF-8\n\n" + data
    with warnings.catch_warnings():
        # bs4 notes that ofxparse reads XML with its HTML parser: known, and what it does.
        warnings.simplefilter("ignore")
        ofx = ofxparse.OfxParser.parse(io.BytesIO(data))
    statements = []
    for account in ofx.accounts:
        stmt = account.statement
        statements.append(
            {
                "account": account.account_id,
                "bank_id": account.routing_number,
                "currency": stmt.currency.upper(),
                "sequence": None,
                "opening": None,
                "closing": stmt.balance,
                "available": stmt.available_balance,
                "entries": [
                    {
                        "amount": t.amount,
                        "type": t.type.upper(),
                        "booking_date": _date(t.date),
                        "value_date": None,
                        "id": t.id,
                        "description": t.memo or None,
                        "counterparty_name": t.payee or None,
                        "reference": None,
                    }
                    for t in stmt.transactions
                ],
            }
        )
    return {
        "parser": "ofxparse " + importlib.metadata.version("ofxparse"),
        "encoding_header_added": workaround,
        "statements": statements,
    }


def parse(path):
    result = _ofxtools(path)
    result["ofxparse"] = _ofxparse(path)
    return result
