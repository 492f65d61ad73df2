"""Parses a statement file with an independent PyPI parser and prints what it read as JSON.

    parse_statement.py FORMAT FILE

FORMAT is camt.053, mt940, ofx or bai2. The output is one JSON object, the same shape for every
format, holding only what the parser itself returned:

    {"parser": "name version",
     "statements": [{"account": str, "currency": str, "sequence": str|null,
                     "opening": "decimal", "closing": "decimal",
                     "entries": [{"amount": "signed decimal", "booking_date": "YYYY-MM-DD",
                                  "value_date": "YYYY-MM-DD"|null, "id": str|null,
                                  "description": str|null, "counterparty_name": str|null,
                                  "reference": str|null}]}]}

A file the parser refuses exits non-zero with the parser's error on stderr.
"""

import importlib
import json
import sys

MODULES = {"camt.053": "camt053", "mt940": "mt940", "ofx": "ofx", "bai2": "bai2"}


def main():
    fmt, path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/statements")
    module = importlib.import_module("parse_" + MODULES[fmt])
    print(json.dumps(module.parse(path), default=str))


if __name__ == "__main__":
    main()
