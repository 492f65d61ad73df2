#!/usr/bin/env bash
# `make test`: the whole test suite, as CI runs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)

bash scripts/services.sh
# shellcheck disable=SC1091
source .local/services.env

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"

echo "[test] all passed in $(( $(date +%s) - start ))s"
