#!/usr/bin/env bash
# `make bench-abuse`: the API (release build) and a worker on a fresh database with a real
# export, under abuse from one client address (127.0.0.2) for BENCH_SECONDS (default 20):
# 8 parallel 100 MB uploads (HTTP/1.1 chunked and h2c, `Bearer x`), 200 slow connections
# (a request head a byte every 2 s) and 5,000 requests with well-formed unknown keys, while a
# legitimate client on 127.0.0.1 polls the export every 20 ms (scripts/abuse_load.py).
# Prints `name: value` lines; goals: peak RSS <= 64 MiB, legit p99 < 50 ms, 0 legit errors, 0 5xx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh >&2
# shellcheck disable=SC1091
source .local/services.env
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
duration="${BENCH_SECONDS:-20}"

cargo build --release -q --bin statement-api --bin statement-worker >&2
prepare_live_service stmt_bench_abuse
# The legitimate client's own per-key limit is the default (600/min, burst 60): it polls at
# 50/s for the run, so it is raised here; the abuse is not on its key.
export RATE_LIMIT_PER_MINUTE=100000 RATE_LIMIT_BURST=1000 RUST_LOG=warn
base=$PUBLIC_BASE_URL
key=$(target/release/statement-api keys create --name bench-abuse --all-accounts 2>/dev/null)
trap 'kill ${api:-} ${worker:-} 2>/dev/null; wait ${api:-} ${worker:-} 2>/dev/null; rm -rf "$work"' EXIT
start_live_service target/release

body='{"account_id":"ACC-1001","table_name":"bank_transactions","date_from":"2024-01-01","date_to":"2024-12-31"}'
id=$(curl -sf -X POST "$base/api/export" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["reference_id"])')
for _ in $(seq 1 300); do
  curl -sf "$base/api/export/$id" -H "Authorization: Bearer $key" | grep -q '"COMPLETED"' && break; sleep 0.1
done
curl -sf "$base/api/export/$id" -H "Authorization: Bearer $key" | grep -q '"COMPLETED"' \
  || { echo "the export did not complete" >&2; exit 1; }
baseline_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$api/status")

port=${API_BIND##*:}
result=$(python3 scripts/abuse_load.py 127.0.0.1 "$port" "$key" "$id" "$duration")
peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$api/status")
kill -0 "$api" || { echo "the API died" >&2; exit 1; }

python3 - "$result" "$baseline_kib" "$peak_kib" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
baseline, peak = int(sys.argv[2]) / 1024, int(sys.argv[3]) / 1024
print(f"abuse_api_baseline_rss_mib: {baseline:.1f}")
print(f"abuse_api_peak_rss_mib: {peak:.1f}")
print(f"abuse_legit_p99_ms: {r['legit_p99_ms']:.3f}")
print(f"abuse_legit_errors: {r['legit_errors']}")
print(f"abuse_5xx: {r['abuse_5xx']}")
print(f"abuse_legit_requests: {r['legit_requests']}")
print(f"abuse_uploads: {json.dumps(r['uploads'])}")
print(f"abuse_slow_cut: {r['slow_cut']} (longest {r['slow_cut_after_s']:.1f} s), completed: {r['slow_completed']}")
print(f"abuse_unknown_key_statuses: {json.dumps(r['unknown_statuses'])} in {r['unknown_seconds']:.1f} s"
      f", failures: {r['unknown_failures']}")
if r["legit_failures"]:
    print(f"abuse_legit_failures: {r['legit_failures']}", file=sys.stderr)
PY
