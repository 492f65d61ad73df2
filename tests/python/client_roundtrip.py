"""A client generated from openapi.yaml by openapi-python-client creates an export (retrying it
under an Idempotency-Key), polls it to COMPLETED and downloads the file: the contract works for SDK
users, not just for our tests.

Usage: client_roundtrip.py BASE_URL API_KEY MODULE (the generated package's import name)."""

import datetime
import hashlib
import importlib
import sys
import time
import urllib.request
import uuid

base_url, api_key, module = sys.argv[1:4]
client_pkg = importlib.import_module(module)
create_export = importlib.import_module(f"{module}.api.exports.create_export")
get_export = importlib.import_module(f"{module}.api.exports.get_export")
list_exports = importlib.import_module(f"{module}.api.exports.list_exports")
models = importlib.import_module(f"{module}.models")

client = client_pkg.AuthenticatedClient(base_url=base_url, token=api_key)
request = models.ExportRequest(
    account_id="ACC-1003",
    table_name="bank_transactions",
    date_from=datetime.date(2024, 3, 1),
    date_to=datetime.date(2024, 3, 31),
    force_refresh=True,
)
# A retry under the same Idempotency-Key (as a client whose first answer was lost would send)
# gets the first response again, marked as a replay, instead of a second export.
idempotency_key = f"roundtrip-{uuid.uuid4()}"
first = create_export.sync_detailed(client=client, body=request, idempotency_key=idempotency_key)
assert first.status_code == 202, (first.status_code, first.content)
assert "Idempotent-Replayed" not in first.headers, first.headers
retry = create_export.sync_detailed(client=client, body=request, idempotency_key=idempotency_key)
assert retry.status_code == 202, (retry.status_code, retry.content)
assert retry.headers.get("Idempotent-Replayed") == "true", retry.headers
assert retry.content == first.content, (retry.content, first.content)
accepted = retry.parsed
assert isinstance(accepted, models.ExportAccepted), accepted
assert accepted.reference_id == first.parsed.reference_id
assert accepted.status == models.Status.PENDING, accepted.status
# The key with another request is refused as a typed problem.
other = models.ExportRequest(
    account_id="ACC-1003", table_name="bank_transactions", date_from=datetime.date(2024, 3, 1),
    date_to=datetime.date(2024, 3, 30),
)
reused = create_export.sync(client=client, body=other, idempotency_key=idempotency_key)
assert isinstance(reused, models.Problem) and reused.status == 422, reused

details = None
for _ in range(300):
    details = get_export.sync(accepted.reference_id, client=client)
    assert isinstance(details, models.ExportDetails), details
    if details.status in (models.Status.COMPLETED, models.Status.FAILED):
        break
    time.sleep(0.1)
assert details.status == models.Status.COMPLETED, details

with urllib.request.urlopen(details.file_url) as response:
    body = response.read()
assert len(body) == details.file_size, (len(body), details.file_size)
assert hashlib.sha256(body).hexdigest() == details.sha256
lines = body.decode("utf-8").split("\r\n")
assert lines[0] == "id,account_id,txn_date,posted_at,description,counterparty,amount,currency,reference", lines[0]
assert details.row_count > 0
assert details.format_ == models.Format.CSV and details.date_from == datetime.date(2024, 3, 1), details

page = list_exports.sync(client=client, limit=10)
assert isinstance(page, models.ExportList), page
assert any(item.reference_id == accepted.reference_id for item in page.items)

# Errors come back as typed problem documents.
bad = models.ExportRequest(
    account_id="ACC-1003", table_name="nope", date_from=datetime.date(2024, 3, 1), date_to=datetime.date(2024, 3, 31)
)
problem = create_export.sync(client=client, body=bad)
assert isinstance(problem, models.Problem) and problem.status == 400, problem
assert problem.errors[0].field == "table_name"

print(f"generated client: idempotent retry replayed; exported {details.row_count} rows, {details.file_size} bytes, sha256 verified")
