#!/usr/bin/env bash
# `make run`: starts what is needed, loads the demo dataset, creates an API key (printed once)
# and runs the API and a worker on the embedded defaults (local-disk storage).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/services.sh
# shellcheck disable=SC1091
source .local/services.env
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
mapfile -t margs < <(mysql_args "$SOURCE_ADMIN_URL")
echo "[run] loading the demo dataset (100,000 transactions, 5 accounts)"
mariadb "${margs[@]}" --default-character-set=utf8mb4 < scripts/demo-data.sql

echo "[run] building"
cargo build --release --bin statement-api --bin statement-worker
bin=target/release

# A stable signing key for local download links, kept across restarts.
[ -f .local/signing_secret ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .local/signing_secret
export SIGNING_SECRET="${SIGNING_SECRET:-$(cat .local/signing_secret)}"
export API_BIND="${API_BIND:-127.0.0.1:8080}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://$API_BIND}"
export RUST_LOG="${RUST_LOG:-info}"
# The demo signs in to the dashboard with an admin key (break-glass sign-in, off by default);
# set OIDC_ISSUER_URL and friends for single sign-on (docs/sso.md).
export DASHBOARD_ADMIN_KEY_SIGN_IN="${DASHBOARD_ADMIN_KEY_SIGN_IN:-true}"

key=$(RUST_LOG=warn "$bin/statement-api" keys create --name "demo $(date -u +%FT%TZ)" --all-accounts)
admin_key=$(RUST_LOG=warn "$bin/statement-api" keys create --name "operator $(date -u +%FT%TZ)" --role admin)

"$bin/statement-worker" &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM

cat <<MSG

  Statement export service on $PUBLIC_BASE_URL   (Swagger UI: $PUBLIC_BASE_URL/docs)

  Your demo API key (shown once; only its SHA-256 is stored):

      $key

  Operator dashboard: $PUBLIC_BASE_URL/dashboard   (sign in with this admin key, also shown once)

      $admin_key

  Metrics: $PUBLIC_BASE_URL/metrics (API and queue), http://127.0.0.1:9464/metrics (worker)

  Try it:

      curl -s -X POST $PUBLIC_BASE_URL/api/export \\
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \\
        -d '{"account_id":"ACC-1001","table_name":"bank_transactions","date_from":"2024-01-01","date_to":"2024-12-31"}'

      curl -s $PUBLIC_BASE_URL/api/export/<reference_id> -H "Authorization: Bearer $key"

  then download the file_url it returns. Ctrl-C stops the API and the worker.

MSG
"$bin/statement-api" serve
