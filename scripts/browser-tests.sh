#!/usr/bin/env bash
# The operator dashboard in a real browser (run by `make test` after the contract tests):
# Debian's Chromium, driven by npm's playwright-core, signs in with an admin key, creates a client
# key, uses it to run an export, watches it reach COMPLETED, deactivates the key and signs out
# (tests/browser/dashboard.mjs); then people sign in through a real OpenID provider's login page
# (tests/oidc/provider.mjs) as admin, viewer and someone with no role, and sign out there too
# (tests/browser/sso.mjs). Screenshots of every page go to target/browser-artifacts.
# Installs what is missing: the `chromium` Debian package (when root), tests/browser/node_modules
# and tests/oidc/node_modules (`npm ci`; `npx playwright install` downloads a browser build and
# cannot work here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
# shellcheck disable=SC1091
source .local/services.env
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

chromium=/usr/bin/chromium
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "[browser] $chromium is missing: install Debian's chromium package (apt-get install chromium)" >&2
    exit 1
  fi
  echo "[browser] installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q chromium >.local/apt-chromium.log 2>&1; then
    apt-get update -q >>.local/apt-chromium.log 2>&1
    apt-get install -y -q chromium >>.local/apt-chromium.log 2>&1 ||
      { tail -n 20 .local/apt-chromium.log >&2; echo "[browser] could not install chromium" >&2; exit 1; }
  fi
fi

command -v node >/dev/null || { echo "[browser] node (20 or later) is missing" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "[browser] playwright-core needs node 20 or later, not $(node --version)" >&2; exit 1; }
modules=tests/browser/node_modules
if [ ! -f "$modules/playwright-core/package.json" ] || [ tests/browser/package-lock.json -nt "$modules/.package-lock.json" ]; then
  echo "[browser] npm ci in tests/browser" >&2
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
# The provider's modules, under the lock testkit::oidc takes to install them too.
modules=tests/oidc/node_modules
if [ ! -f "$modules/oidc-provider/package.json" ] || [ ! -f "$modules/jose/package.json" ] \
  || [ tests/oidc/package-lock.json -nt "$modules/.package-lock.json" ]; then
  echo "[browser] npm ci in tests/oidc" >&2
  (cd tests/oidc && flock .install.lock npm ci --no-audit --no-fund --loglevel=error >&2)
fi

cargo build -q --bin statement-api --bin statement-worker

# The demo dataset is the source; a fresh Postgres database holds the service's own state.
prepare_live_service stmt_browser
# The dashboard on 127.0.0.2 and the provider on 127.0.0.1: two sites, as in production, so the
# provider's redirects back are cross-site navigations (ports do not make sites: 127.0.0.1:A and
# 127.0.0.1:B are one site, and SameSite cookies would pass where production's do not).
api_port=${API_BIND##*:}
export API_BIND="127.0.0.2:$api_port" PUBLIC_BASE_URL="http://127.0.0.2:$api_port"
export RUST_LOG=info
artifacts=${ARTIFACTS_DIR:-$PWD/target/browser-artifacts}
rm -rf "$artifacts"
mkdir -p "$artifacts"
admin_key=$(target/debug/statement-api keys create --name browser-tests --role admin 2>/dev/null)
cleanup() {
  kill ${api:-} ${worker:-} ${provider:-} 2>/dev/null || true
  wait ${api:-} ${worker:-} ${provider:-} 2>/dev/null || true
  cp "$work/api.log" "$work/worker.log" "$work/provider.log" "$artifacts/" 2>/dev/null || true
  rm -f "$artifacts/.created-key"
  rm -rf "$work"
}
trap cleanup EXIT

# The organisation's OpenID provider, with one client (this dashboard, secret made here) and three
# people: an admin, a viewer, and someone whose only group is no dashboard role.
export ACCOUNTS_JSON='{"ada":{"name":"Ada Admin","email":"ada@example.com","groups":["statement-admin"]},
  "val":{"name":"Val Viewer","email":"val@example.com","groups":["statement-viewer"]},
  "mal":{"name":"Mal Nobody","email":"mal@example.com","groups":["finance"]}}'
oidc_port=$(free_port)
OIDC_CLIENT_ID="statement-dashboard-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
OIDC_CLIENT_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export OIDC_ISSUER_URL="http://127.0.0.1:$oidc_port" OIDC_PROVIDER_NAME="Test IdP" OIDC_CLIENT_ID OIDC_CLIENT_SECRET
OIDC_PORT=$oidc_port CLIENT_ID=$OIDC_CLIENT_ID CLIENT_SECRET=$OIDC_CLIENT_SECRET \
  REDIRECT_URIS="$PUBLIC_BASE_URL/dashboard/sign-in/callback" POST_LOGOUT_REDIRECT_URIS="$PUBLIC_BASE_URL/dashboard/sign-in" \
  node tests/oidc/provider.mjs >"$work/provider.log" 2>&1 &
provider=$!
for _ in $(seq 1 100); do
  curl -sf "$OIDC_ISSUER_URL/.well-known/openid-configuration" >/dev/null && break
  kill -0 "$provider" 2>/dev/null || break
  sleep 0.1
done
curl -sf "$OIDC_ISSUER_URL/.well-known/openid-configuration" >/dev/null \
  || { tail -n 20 "$work/provider.log" >&2; echo "[browser] the OpenID provider did not start" >&2; exit 1; }
start_live_service target/debug

echo "[browser] Chromium against $PUBLIC_BASE_URL; screenshots in $artifacts"
status=0
BASE_URL="$PUBLIC_BASE_URL" ADMIN_KEY="$admin_key" ARTIFACTS_DIR="$artifacts" CHROMIUM="$chromium" \
  node tests/browser/dashboard.mjs || status=$?

# A job that failed for good, so the queue page has buttons for sso.mjs to see (admin) and not see
# (viewer): an export run while the source table is away, a configuration error. prepare_live_service
# reloads the demo table at every run; the trap puts it back should this stop half-way.
source_sql() {
  local margs
  mapfile -t margs < <(mysql_args "$SOURCE_ADMIN_URL")
  mariadb "${margs[@]}" statements_demo -e "$1"
}
failed_export() {
  local reference state
  source_sql 'RENAME TABLE bank_transactions TO bank_transactions_away'
  reference=$(curl -sf -H "Authorization: Bearer $admin_key" -H 'Content-Type: application/json' \
    -d '{"account_id":"ACC-1002","table_name":"bank_transactions","date_from":"2024-01-01","date_to":"2024-01-31"}' \
    "$PUBLIC_BASE_URL/api/export" | python3 -c 'import json, sys; print(json.load(sys.stdin)["reference_id"])')
  for _ in $(seq 1 100); do
    state=$(curl -sf -H "Authorization: Bearer $admin_key" "$PUBLIC_BASE_URL/api/export/$reference" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    [ "$state" = FAILED ] && break
    sleep 0.2
  done
  source_sql 'RENAME TABLE bank_transactions_away TO bank_transactions'
  [ "$state" = FAILED ] || { echo "[browser] export $reference did not fail without its table ($state)" >&2; return 1; }
  echo "$reference"
}
trap 'source_sql "RENAME TABLE IF EXISTS bank_transactions_away TO bank_transactions" 2>/dev/null; cleanup' EXIT
failed=$(failed_export) || status=1
trap cleanup EXIT

BASE_URL="$PUBLIC_BASE_URL" FAILED_EXPORT="${failed:-}" ARTIFACTS_DIR="$artifacts" CHROMIUM="$chromium" \
  node tests/browser/sso.mjs || status=$?

# Secrets never reach the logs: neither the admin key that signed in, nor the key created on the
# page (the script leaves it in .created-key for this check alone), nor the OpenID client secret.
secrets=(-e "${admin_key:11}" -e "$OIDC_CLIENT_SECRET")
if [ -s "$artifacts/.created-key" ]; then
  client_key=$(cat "$artifacts/.created-key")
  secrets+=(-e "${client_key:11}")
elif [ "$status" = 0 ]; then
  echo "[browser] the browser test left no $artifacts/.created-key" >&2
  status=1
fi
rm -f "$artifacts/.created-key"
if grep -qF "${secrets[@]}" "$work/api.log" "$work/worker.log"; then
  echo "[browser] an API key or the client secret reached the logs" >&2
  status=1
fi
# A server error in the request log, text (http.status=5xx) or JSON ("http.status":5xx).
if grep -Eq 'http\.status(=|":)5[0-9]{2}' "$work/api.log"; then
  echo "[browser] the API logged a server error" >&2
  status=1
fi

if [ "$status" != 0 ]; then
  echo "[browser] FAILED: screenshots and logs in $artifacts" >&2
  exit "$status"
fi
echo "[browser] passed in $(( $(date +%s) - start ))s; screenshots in $artifacts"
