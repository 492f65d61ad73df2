#!/usr/bin/env bash
# The operator dashboard in a real browser (run by `make test` after the contract tests):
# Debian's Chromium, driven by npm's playwright-core, signs in with an admin key, creates a client
# key, uses it to run an export, watches it reach COMPLETED, deactivates the key and signs out
# (tests/browser/dashboard.mjs). Screenshots of every page go to target/browser-artifacts.
# Installs what is missing: the `chromium` Debian package (when root) and tests/browser/node_modules
# (`npm ci`; `npx playwright install` downloads a browser build and cannot work here).
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

cargo build -q --bin statement-api --bin statement-worker

# The demo dataset is the source; a fresh Postgres database holds the service's own state.
prepare_live_service stmt_browser
export RUST_LOG=info
artifacts=${ARTIFACTS_DIR:-$PWD/target/browser-artifacts}
rm -rf "$artifacts"
mkdir -p "$artifacts"
admin_key=$(target/debug/statement-api keys create --name browser-tests --role admin 2>/dev/null)
cleanup() {
  kill ${api:-} ${worker:-} 2>/dev/null || true
  wait ${api:-} ${worker:-} 2>/dev/null || true
  cp "$work/api.log" "$work/worker.log" "$artifacts/" 2>/dev/null || true
  rm -f "$artifacts/.created-key"
  rm -rf "$work"
}
trap cleanup EXIT
start_live_service target/debug

echo "[browser] Chromium against $PUBLIC_BASE_URL; screenshots in $artifacts"
status=0
BASE_URL="$PUBLIC_BASE_URL" ADMIN_KEY="$admin_key" ARTIFACTS_DIR="$artifacts" CHROMIUM="$chromium" \
  node tests/browser/dashboard.mjs || status=$?

# Secrets never reach the logs: neither the admin key that signed in nor the key created on the
# page (the script leaves it in .created-key for this check alone).
secrets=(-e "${admin_key:11}")
if [ -s "$artifacts/.created-key" ]; then
  client_key=$(cat "$artifacts/.created-key")
  secrets+=(-e "${client_key:11}")
elif [ "$status" = 0 ]; then
  echo "[browser] the browser test left no $artifacts/.created-key" >&2
  status=1
fi
rm -f "$artifacts/.created-key"
if grep -qF "${secrets[@]}" "$work/api.log" "$work/worker.log"; then
  echo "[browser] an API key reached the logs" >&2
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
