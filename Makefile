.PHONY: run test fmt openapi bench-queue bench-export bench-formats bench-api bench-abuse bench-dashboard bench-webhooks bench-schedules

## Start Postgres/MariaDB if needed, load the demo dataset, run the API and a worker.
run:
	bash scripts/run.sh

## The whole test suite (what CI runs): fmt, clippy, unit and end-to-end tests.
test:
	bash scripts/test.sh

fmt:
	cargo fmt --all

## Regenerate openapi.yaml from the code.
openapi:
	cargo run -q -p statement-api -- openapi > openapi.yaml

## Queue throughput and pickup latency vs pgbench on the same SQL (prints name: value lines).
bench-queue:
	bash scripts/bench.sh bench-queue

## Export speed, memory and the ratio to `mariadb --quick --batch` on the same rows.
bench-export:
	bash scripts/bench.sh bench-export

## Each statement format (camt.053, MT940, OFX, BAI2, JSON Lines) against CSV: rows/s, ratio, peak memory.
bench-formats:
	bash scripts/bench.sh bench-formats

## API throughput and p99 (wrk, 16 connections) vs pgbench -S on the same machine.
bench-api:
	bash scripts/bench-api.sh

## One abusive client address (huge uploads, slow connections, unknown keys) vs a legitimate one.
bench-abuse:
	bash scripts/bench-abuse.sh

## The dashboard, the export listing and /metrics on 1,000,000 exports over a year (p95 in ms).
bench-dashboard:
	bash scripts/bench.sh bench-dashboard

## Completion webhooks: deliveries per second to a local receiver, and completion-to-arrival p99.
bench-webhooks:
	bash scripts/bench.sh bench-webhooks

## Recurring statements: 10,000 daily schedules through 30 simulated days, two workers, a leader change.
bench-schedules:
	bash scripts/bench.sh bench-schedules
