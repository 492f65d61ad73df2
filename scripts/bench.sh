#!/usr/bin/env bash
# `make bench-*`: makes the services available, builds release, runs one benchmark command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh >&2
# shellcheck disable=SC1091
source .local/services.env
cargo build --release -q -p statement-api -p statement-worker -p statement-benches >&2
RUST_LOG="${RUST_LOG:-warn}" "${CARGO_TARGET_DIR:-target}/release/$1"
