#!/usr/bin/env bash
# `make test`: the whole test suite, as CI runs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)

bash scripts/services.sh
bash scripts/s3-test-server.sh
bash scripts/webhook-verifier.sh
bash scripts/statement-parsers.sh
# The downloads test checks `Repr-Digest` with a Structured Fields parser we did not write
# (PyPI http-sf), in the venv s3-test-server.sh made.
.local/venv/bin/python -c 'import http_sf' 2>/dev/null \
  || .local/venv/bin/python -m pip install --quiet --disable-pip-version-check 'http-sf==1.5.*' >&2
# shellcheck disable=SC1091
source .local/services.env

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Databases left by earlier test runs (each test makes its own).
for db in $(psql "$PG_ADMIN_URL" -Atc "select datname from pg_database where datname like 'stmt_test_%'"); do
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE \"$db\" WITH (FORCE)" >/dev/null
done
mapfile -t margs < <(mysql_args "$SOURCE_ADMIN_URL")
for db in $(mariadb "${margs[@]}" -N -e "select schema_name from information_schema.schemata where schema_name like 'stmt_src_%'"); do
  mariadb "${margs[@]}" -e "DROP DATABASE \`$db\`"
done

# Deployment files: compose.yaml against the Compose Specification, commands equal to make run,
# every variable in .env.example, systemd units and the nginx example.
bash scripts/check-deploy.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The crates' documentation builds without a warning (broken or private links, missing docs).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
bash scripts/api-contract-tests.sh
bash scripts/ts-client-tests.sh
bash scripts/browser-tests.sh

echo "[test] all passed in $(( $(date +%s) - start ))s"
