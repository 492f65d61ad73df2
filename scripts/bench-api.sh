#!/usr/bin/env bash
# `make bench-api`: wrk against a release build — GET an export's status and a dedup-hit POST,
# 16 connections each — and, in the same run, `pgbench -S -M prepared -c 16` (the database's
# own point-select rate on this machine). Prints `name: value` lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh >&2
# shellcheck disable=SC1091
source .local/services.env
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
duration="${BENCH_SECONDS:-10}"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; }
  else
    echo "bench-api needs wrk: sudo apt-get install wrk" >&2; exit 1
  fi
fi
cargo build --release -q --bin statement-api --bin statement-worker >&2

psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS stmt_bench_pgbench WITH (FORCE)" \
  -c "CREATE DATABASE stmt_bench_pgbench" >/dev/null 2>&1
pgbench -q -i -s 10 "${PG_ADMIN_URL%/*}/stmt_bench_pgbench" >/dev/null 2>&1

prepare_live_service stmt_bench_api
export RATE_LIMIT_PER_MINUTE=100000000 RATE_LIMIT_BURST=1000000 RUST_LOG=warn
base=$PUBLIC_BASE_URL
key=$(target/release/statement-api keys create --name bench --all-accounts 2>/dev/null)
trap 'kill ${api:-} ${worker:-} 2>/dev/null; wait ${api:-} ${worker:-} 2>/dev/null; rm -rf "$work"' EXIT
start_live_service target/release

body='{"account_id":"ACC-1001","table_name":"bank_transactions","date_from":"2024-01-01","date_to":"2024-01-31"}'
id=$(curl -sf -X POST "$base/api/export" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["reference_id"])')
for _ in $(seq 1 100); do
  curl -sf "$base/api/export/$id" -H "Authorization: Bearer $key" | grep -q '"COMPLETED"' && break; sleep 0.1
done
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA

# wrk output → "<requests/s> <p99 ms>"
summarize() {
  python3 -c '
import re, sys
text = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", text).groups()
p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if non2xx:
    sys.exit(f"wrk saw {non2xx.group(1)} non-2xx responses")
print(rps, p99)'
}
read -r get_rps get_p99 < <(wrk -t2 -c16 -d"${duration}s" --latency -H "Authorization: Bearer $key" \
  "$base/api/export/$id" | summarize)
read -r post_rps post_p99 < <(wrk -t2 -c16 -d"${duration}s" --latency -s "$work/post.lua" "$base/api/export" | summarize)
pg_tps=$(pgbench -n -S -M prepared -c 16 -j 2 -T "$duration" "${PG_ADMIN_URL%/*}/stmt_bench_pgbench" 2>/dev/null \
  | sed -n 's/^tps = \([0-9.]*\).*/\1/p')

python3 - "$get_rps" "$get_p99" "$post_rps" "$post_p99" "$pg_tps" <<'PY'
import sys
get_rps, get_p99, post_rps, post_p99, pg = map(float, sys.argv[1:])
for name, value in [
    ("get_status_rps", get_rps), ("get_status_p99_ms", get_p99),
    ("post_dedup_rps", post_rps), ("post_dedup_p99_ms", post_p99),
    ("pgbench_select_tps", pg),
    ("get_status_ratio_vs_pgbench_select", get_rps / pg),
    ("post_dedup_ratio_vs_pgbench_select", post_rps / pg),
]:
    print(f"{name}: {value:.3f}")
PY
