#!/usr/bin/env bash
# Installs `standardwebhooks` (PyPI, the Standard Webhooks reference library for Python) into
# .local/venv, once: the webhook tests verify every delivery's signature with it
# (tests/python/verify_webhook.py), an implementation this project did not write.
set -euo pipefail
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root_dir/.local/venv"
if ! "$venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
  echo "[webhooks] installing standardwebhooks into $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'standardwebhooks==1.1.0' >&2
fi
