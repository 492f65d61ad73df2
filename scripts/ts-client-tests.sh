#!/usr/bin/env bash
# TypeScript clients of the committed openapi.yaml (run by `make test` after the contract tests;
# runs alone too): openapi-typescript + openapi-fetch and @hey-api/openapi-ts generate clients,
# `tsc --strict --exactOptionalPropertyTypes --noUncheckedIndexedAccess` compiles them with a
# small program each, unedited, and both programs run against a live API and worker
# (tests/ts-client/src/). Every response they receive is checked against the spec: a status,
# content type, header or field it does not document fails the test.
# npm packages are pinned in tests/ts-client/package-lock.json and installed here (`npm ci`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
# shellcheck disable=SC1091
source .local/services.env
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

command -v node >/dev/null || { echo "[ts-client] node (20.19 or later) is missing" >&2; exit 1; }
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || { echo "[ts-client] @hey-api/openapi-ts needs node 20.19 or later, not $(node --version)" >&2; exit 1; }
dir=tests/ts-client
if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
  echo "[ts-client] npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

echo "[ts-client] generating clients from openapi.yaml and compiling them strictly"
rm -rf "$dir/generated" "$dir/build"
(
  cd "$dir"
  node_modules/.bin/openapi-typescript ../../openapi.yaml -o generated/openapi-typescript/schema.ts --silent
  node_modules/.bin/openapi-ts -i ../../openapi.yaml -o generated/hey-api --silent --no-log-file
  # --strict --exactOptionalPropertyTypes --noUncheckedIndexedAccess (tsconfig.json), except
  # hey-api's spec-independent runtime (tsconfig.hey-api-runtime.json says why).
  node_modules/.bin/tsc -b tsconfig.json
)
compiled=$(date +%s)

cargo build -q --bin statement-api --bin statement-worker

# The demo dataset is the source; a fresh Postgres database holds the service's own state.
prepare_live_service stmt_ts_client
export RUST_LOG=info
key=$(target/debug/statement-api keys create --name ts-client-tests --all-accounts 2>/dev/null)
trap 'kill ${api:-} ${worker:-} 2>/dev/null; wait ${api:-} ${worker:-} 2>/dev/null; rm -rf "$work"' EXIT
start_live_service target/debug

ran=$(date +%s)
node "$dir/build/src/openapi-fetch-client.js" "$PUBLIC_BASE_URL" "$key" openapi.yaml README.md
node "$dir/build/src/hey-api-client.js" "$PUBLIC_BASE_URL" "$key" openapi.yaml
# A server error in the request log, text (http.status=5xx) or JSON ("http.status":5xx).
if grep -Eq 'http\.status(=|":)5[0-9]{2}' "$work/api.log"; then
  echo "[ts-client] the API logged a server error" >&2
  exit 1
fi
end=$(date +%s)
echo "[ts-client] passed in $((end - start))s (generate and compile $((compiled - start))s, client runs $((end - ran))s)"
