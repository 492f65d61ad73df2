#!/usr/bin/env bash
# Contract tests against the live API (run by `make test` after the Rust tests):
# - schemathesis fuzzes every operation of the committed openapi.yaml: zero 5xx, every response
#   conforms to the spec, spec-valid requests are accepted where the spec can say what is valid;
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
prepare_live_service stmt_contract
export RUST_LOG=info LOG_FORMAT=json
key=$(target/debug/statement-api keys create --name contract-tests --all-accounts 2>/dev/null)
trap 'kill ${api:-} ${worker:-} 2>/dev/null; wait ${api:-} ${worker:-} 2>/dev/null; rm -rf "$work"' EXIT
start_live_service target/debug

echo "[contract] schemathesis against $PUBLIC_BASE_URL"
# Every check (the default; naming them with --checks would override the file), with
# positive_data_acceptance only where the spec can express what the server accepts
# (tests/schemathesis.toml says which and why).
status=0
"$venv/bin/schemathesis" --config-file tests/schemathesis.toml run openapi.yaml --url "$PUBLIC_BASE_URL" \
  --header "Authorization: Bearer $key" \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
  --seed 1 \
  --no-color >.local/schemathesis.txt 2>&1 || status=$?
tail -n 25 .local/schemathesis.txt
[ "$status" = 0 ] || { echo "[contract] schemathesis found failures: see .local/schemathesis.txt" >&2; exit 1; }
# A server error in the request log, text (http.status=5xx) or JSON ("http.status":5xx).
if grep -Eq 'http\.status(=|":)5[0-9]{2}' "$work/api.log"; then
  echo "[contract] the API logged a server error" >&2
  exit 1
fi

echo "[contract] generated Python client round trip"
rm -rf "$work/client"
"$venv/bin/openapi-python-client" generate --path openapi.yaml --output-path "$work/client" --meta none \
  --config tests/python/openapi-python-client.yaml >/dev/null
PYTHONPATH="$work" "$venv/bin/python" tests/python/client_roundtrip.py "$PUBLIC_BASE_URL" "$key" client

# Secrets never reach the logs: not the API key, not a download link's signature (ours or an
# S3 pre-signed one), not a database password, not a webhook endpoint's secret.
secret_part=${key:11}
source_password=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).password or "")' "$SOURCE_DATABASE_URL")
if grep -q -e "$secret_part" -e "signature=" -e "X-Amz-Signature" -e "whsec_" -e ":${source_password:-no-password}@" \
    "$work/api.log" "$work/worker.log"; then
  echo "[contract] a secret reached the logs" >&2
  exit 1
fi
grep -q 'request' "$work/api.log" || { echo "[contract] the API logged no requests" >&2; exit 1; }
grep -q 'completed' "$work/worker.log" || { echo "[contract] the worker logged no export" >&2; exit 1; }
echo "[contract] logs checked: no API key, no URL signature"

# Structured logs: every line is JSON; request lines carry their request id, the worker's
# export lines their job span (job id, attempt, export id).
python3 - "$work/api.log" "$work/worker.log" <<'PY'
import json, sys
api, worker = ([json.loads(line) for line in open(path) if line.strip()] for path in sys.argv[1:])
requests = [l for l in api if l["fields"].get("message") == "request"]
assert requests and all(l["span"]["request_id"] for l in requests), "request lines without a request id"
done = [l for l in worker if "completed" in l["fields"].get("message", "")]
assert done and all(l["span"]["export.id"] and l["span"]["attempt"] for l in done), "export lines without their job span"
print(f"[contract] JSON logs: {len(api)} API lines ({len(requests)} requests), {len(worker)} worker lines")
PY

# Metrics: both endpoints pass promtool's lint (Debian's prometheus package, unpacked: no
# service starts).
promtool=$(command -v promtool || echo .local/prometheus/usr/bin/promtool)
if [ ! -x "$promtool" ]; then
  echo "[contract] unpacking Debian's prometheus package into .local/prometheus (for promtool)" >&2
  deb=$(mktemp -d)
  (cd "$deb" && { apt-get download -q prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null; }; })
  dpkg -x "$deb"/prometheus_*.deb .local/prometheus
  rm -rf "$deb"
fi
curl -sf "$PUBLIC_BASE_URL/metrics" >"$work/api.metrics"
curl -sf "http://$WORKER_METRICS_BIND/metrics" >"$work/worker.metrics"
for target in api worker; do
  "$promtool" check metrics <"$work/$target.metrics" || { echo "[contract] promtool: $target /metrics" >&2; exit 1; }
done
grep -q '^statement_export_requests_total{result="created"}' "$work/api.metrics"
grep -q '^statement_queue_jobs{state="completed"}' "$work/api.metrics"
grep -q '^statement_exports_finished_total{status="completed"}' "$work/worker.metrics"
echo "[contract] /metrics of the API and the worker pass promtool check metrics"
