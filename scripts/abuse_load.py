"""Load for `make bench-abuse` (run by scripts/bench-abuse.sh, standard library only).

For `seconds`, all from 127.0.0.2 (one abusive client address):
  - 8 parallel 100 MB uploads with `Bearer x`, 4 over HTTP/1.1 chunked and 4 over h2c (curl,
    streamed from /dev/zero, no Content-Length), each started again when it ends;
  - 200 slow connections, each sending a request head a byte every 2 s, reconnecting when cut;
  - 5,000 requests with well-formed (valid checksum) but unknown `sk_` keys, on 8 keep-alive
    connections;
while a legitimate client on 127.0.0.1 polls a real export once every 20 ms.

Prints one JSON object: the legitimate client's latencies and errors, the abusive statuses.
"""

import asyncio
import hashlib
import json
import secrets
import sys
import time

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ABUSER = "127.0.0.2"


def unknown_key():
    """`sk_` + 32 base62 + the 6-character checksum of shared/src/api_keys.rs, never issued."""
    random = "".join(secrets.choice(BASE62) for _ in range(32))
    n = int.from_bytes(hashlib.sha256(random.encode()).digest()[:4], "big")
    check = ""
    for _ in range(6):
        check = BASE62[n % 62] + check
        n //= 62
    return f"sk_{random}{check}"


async def read_response(reader):
    """Reads one HTTP/1.1 response; returns (status, headers dict)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return status, headers


class Client:
    """One keep-alive HTTP/1.1 connection from `source`, reconnecting when the server closes it."""

    def __init__(self, host, port, source):
        self.host, self.port, self.source = host, port, source
        self.reader = self.writer = None

    async def request(self, path, headers):
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    self.host, self.port, local_addr=(self.source, 0))
            head = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            try:
                self.writer.write(head.encode())
                await self.writer.drain()
                status, response_headers = await read_response(self.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                # Closed by the server (idle keep-alive) before this request: one retry.
                self.writer.close()
                self.writer = None
                if attempt:
                    raise
                continue
            if response_headers.get("connection", "").lower() == "close":
                self.writer.close()
                self.writer = None
            return status


async def legit(host, port, key, export_id, deadline, out):
    client = Client(host, port, "127.0.0.1")
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status = await asyncio.wait_for(
                client.request(f"/api/export/{export_id}", {"Authorization": f"Bearer {key}"}), 10)
        except Exception as e:  # noqa: BLE001 - every failure counts
            out["legit_errors"] += 1
            out["legit_failures"].append(repr(e))
            client.writer = None
        else:
            out["latencies_ms"].append((time.monotonic() - started) * 1000)
            if status != 200:
                out["legit_errors"] += 1
                out["legit_failures"].append(status)
        await asyncio.sleep(0.02)


async def upload(host, port, protocol, deadline, out):
    while time.monotonic() < deadline:
        proc = await asyncio.create_subprocess_shell(
            f"head -c 104857600 /dev/zero | curl -s -o /dev/null -w '%{{http_code}}' {protocol} "
            f"--interface {ABUSER} -X POST -T - -H 'Authorization: Bearer x' "
            f"-H 'Content-Type: application/json' http://{host}:{port}/api/export",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        stdout, _ = await proc.communicate()
        out["uploads"].append(stdout.decode() or "none")


async def slow(host, port, deadline, out):
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 500 + b"\r\n\r\n"
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            _, writer = await asyncio.open_connection(host, port, local_addr=(ABUSER, 0))
            for byte in head:
                if time.monotonic() >= deadline:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(2)
            else:
                out["slow_completed"] += 1
            writer.close()
        except (ConnectionError, OSError):
            out["slow_cut"] += 1
            out["slow_cut_after_s"] = max(out["slow_cut_after_s"], time.monotonic() - started)
            await asyncio.sleep(0.5)


async def unknown_keys(host, port, total, out):
    keys = [unknown_key() for _ in range(total)]

    async def worker(share):
        client = Client(host, port, ABUSER)
        for key in share:
            try:
                status = await asyncio.wait_for(
                    client.request("/api/exports", {"Authorization": f"Bearer {key}"}), 30)
            except Exception:  # noqa: BLE001
                out["unknown_failures"] += 1
                client.writer = None
                continue
            out["unknown_statuses"][str(status)] = out["unknown_statuses"].get(str(status), 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(worker(keys[i::8]) for i in range(8)))
    out["unknown_seconds"] = time.monotonic() - started


async def main():
    host, port, key, export_id, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    out = {"latencies_ms": [], "legit_errors": 0, "legit_failures": [], "uploads": [],
           "slow_cut": 0, "slow_completed": 0, "slow_cut_after_s": 0.0, "unknown_statuses": {},
           "unknown_failures": 0}
    deadline = time.monotonic() + seconds
    tasks = [legit(host, port, key, export_id, deadline, out)]
    tasks += [upload(host, port, p, deadline, out) for p in ["--http1.1"] * 4 + ["--http2-prior-knowledge"] * 4]
    tasks += [slow(host, port, deadline, out) for _ in range(200)]
    tasks.append(unknown_keys(host, port, 5000, out))
    await asyncio.gather(*tasks)
    lat = sorted(out.pop("latencies_ms"))
    out["legit_requests"] = len(lat)
    out["legit_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    out["legit_failures"] = out["legit_failures"][:10]
    statuses = {}
    for s in out["uploads"]:
        statuses[s] = statuses.get(s, 0) + 1
    out["uploads"] = statuses
    out["abuse_5xx"] = sum(n for s, n in out["unknown_statuses"].items() if s.startswith("5")) + sum(
        n for s, n in statuses.items() if s.startswith("5"))
    print(json.dumps(out))


asyncio.run(main())
