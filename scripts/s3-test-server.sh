#!/usr/bin/env bash
# Installs the S3-compatible test servers into .local/, once (reused when present):
#  - moto[server] (PyPI) into .local/venv: records what it is sent (SSE, checksums), but does not
#    check signatures;
#  - s3s-fs (crates.io) into .local/s3s-fs: checks SigV4 signatures and pre-signed URL expiry.
#    A cold `cargo install` takes a few minutes on two cores (see docs/deployment.md).
# The tests start their own instances on loopback ports, with known credentials (tests/src/s3.rs).
set -euo pipefail
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

venv="$root_dir/.local/venv"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "[s3] installing moto[server] into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.1.*' >&2
fi

s3s_version=0.14.1
s3s_root="$root_dir/.local/s3s-fs"
if [ "$("$s3s_root/bin/s3s-fs" --version 2>/dev/null || true)" != "s3s-fs $s3s_version" ]; then
  echo "[s3] installing s3s-fs $s3s_version into $s3s_root (cargo install, a few minutes)" >&2
  start=$(date +%s)
  cargo install --quiet --locked "s3s-fs@$s3s_version" --features binary --root "$s3s_root" >&2
  echo "[s3] s3s-fs installed in $(( $(date +%s) - start ))s" >&2
fi
