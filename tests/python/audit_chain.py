#!/usr/bin/env python3
"""Checks the audit trail's hash chain independently of the service's own code.

Reads one JSON object per line on stdin, as this query prints them (psql -At):

    SELECT row_to_json(r) FROM (
        SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
               to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,
               actor_kind, actor_id, actor_name, action, target, outcome, client_addr, details,
               encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash
        FROM audit_log ORDER BY seq) r;

Each row's hash must be SHA-256(previous row's hash || its content as compact JSON with sorted
keys), the first row's previous hash 32 zero bytes, and the sequence numbers 1, 2, 3... without
gaps. Prints "intact <rows> <last hash>" and exits 0, or "broken <seq> <why>" and exits 1.
"""
import hashlib
import json
import sys

CONTENT = ("action", "actor_id", "actor_kind", "actor_name", "at", "client_addr", "details", "occurred_at",
           "outcome", "seq", "target")


def main() -> int:
    previous = bytes(32)
    expected_seq = 1
    rows = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        row = json.loads(line)
        if row["seq"] != expected_seq:
            print(f"broken {expected_seq} missing")
            return 1
        if bytes.fromhex(row["prev_hash"]) != previous:
            print(f"broken {row['seq']} prev_hash")
            return 1
        content = json.dumps({k: row[k] for k in CONTENT}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(previous + content.encode("utf-8")).digest()
        if digest.hex() != row["hash"]:
            print(f"broken {row['seq']} hash")
            return 1
        previous = digest
        expected_seq += 1
        rows += 1
    print(f"intact {rows} {previous.hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
