#!/usr/bin/env bash
# Installs the S3-compatible test server (moto[server], from PyPI) into .local/venv.
# The tests start their own instances on loopback ports (see tests/src/s3.rs).
set -euo pipefail
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root_dir/.local/venv"
if [ -x "$venv/bin/moto_server" ]; then exit 0; fi
echo "[s3] installing moto[server] into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.1.*' >&2
