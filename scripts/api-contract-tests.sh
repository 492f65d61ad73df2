#!/usr/bin/env bash
# Contract tests against the live API (run by `make test` after the Rust tests):
# - schemathesis fuzzes every operation of the committed openapi.yaml: zero 5xx, every response
#   conforms to the spec;
# - a Python client generated from openapi.yaml by openapi-python-client creates an export,
#   polls it to COMPLETED and downloads the file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
source .local/services.env
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

venv=.local/venv
if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-python-client" ]; then
  echo "[contract] installing schemathesis and openapi-python-client into $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.*' 'openapi-python-client==0.*' >&2
fi

cargo build -q --bin statement-api --bin statement-worker

# The demo dataset is the source; a fresh Postgres database holds the service's own state.
mapfile -t margs < <(mysql_args "$SOURCE_ADMIN_URL")
mariadb "${margs[@]}" --default-character-set=utf8mb4 < scripts/demo-data.sql
psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS stmt_contract WITH (FORCE)" -c "CREATE DATABASE stmt_contract" >/dev/null
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="${PG_ADMIN_URL%/*}/stmt_contract"
export LOCAL_STORAGE_DIR="$work/exports" API_BIND="127.0.0.1:$port" PUBLIC_BASE_URL="http://127.0.0.1:$port"
export SIGNING_SECRET=contract-tests RATE_LIMIT_PER_MINUTE=1000000 RATE_LIMIT_BURST=100000
export JOB_POLL_INTERVAL_MS=200 RUST_LOG=info

key=$(target/debug/statement-api keys create --name contract-tests 2>/dev/null)
target/debug/statement-api serve 2>"$work/api.log" &
api=$!
target/debug/statement-worker 2>"$work/worker.log" &
worker=$!
trap 'kill $api $worker 2>/dev/null; wait $api $worker 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "$PUBLIC_BASE_URL/health" >/dev/null && break; sleep 0.1; done

echo "[contract] schemathesis against $PUBLIC_BASE_URL"
# Every check but positive_data_acceptance: the schema cannot express the semantic rules
# (configured table names, date_from <= date_to, the maximum range), so schema-valid requests
# that break them are rightly refused with 400.
status=0
"$venv/bin/schemathesis" run openapi.yaml --url "$PUBLIC_BASE_URL" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
  --seed 1 \
  --no-color >.local/schemathesis.txt 2>&1 || status=$?
tail -n 25 .local/schemathesis.txt
[ "$status" = 0 ] || { echo "[contract] schemathesis found failures: see .local/schemathesis.txt" >&2; exit 1; }
if grep -q " 500 \| 5[0-9][0-9] Internal" "$work/api.log"; then
  echo "[contract] the API logged a server error" >&2
  exit 1
fi

echo "[contract] generated Python client round trip"
rm -rf "$work/client"
"$venv/bin/openapi-python-client" generate --path openapi.yaml --output-path "$work/client" --meta none \
  --config tests/python/openapi-python-client.yaml >/dev/null
PYTHONPATH="$work" "$venv/bin/python" tests/python/client_roundtrip.py "$PUBLIC_BASE_URL" "$key" client

# Secrets never reach the logs: not the API key, not a download link's signature.
secret_part=${key:11}
if grep -q -e "$secret_part" -e "signature=" "$work/api.log" "$work/worker.log"; then
  echo "[contract] a secret reached the logs" >&2
  exit 1
fi
grep -q 'request' "$work/api.log" || { echo "[contract] the API logged no requests" >&2; exit 1; }
grep -q 'completed' "$work/worker.log" || { echo "[contract] the worker logged no export" >&2; exit 1; }
echo "[contract] logs checked: no API key, no URL signature"
