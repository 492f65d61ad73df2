"""A client generated from openapi.yaml by openapi-python-client creates an export (retrying it
under an Idempotency-Key), polls it to COMPLETED and downloads the file, and registers, lists,
rotates and deletes a webhook endpoint: the contract works for SDK users, not just for our tests.

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
create_endpoint = importlib.import_module(f"{module}.api.webhooks.create_webhook_endpoint")
list_endpoints = importlib.import_module(f"{module}.api.webhooks.list_webhook_endpoints")
rotate_secret = importlib.import_module(f"{module}.api.webhooks.rotate_webhook_secret")
delete_endpoint = importlib.import_module(f"{module}.api.webhooks.delete_webhook_endpoint")
get_endpoint = importlib.import_module(f"{module}.api.webhooks.get_webhook_endpoint")
list_deliveries = importlib.import_module(f"{module}.api.webhooks.list_webhook_deliveries")
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

# Webhook endpoints: register (a public address literal: nothing is resolved, nothing is sent
# before it is deleted), list, rotate the secret, read the (empty) delivery log, delete.
endpoint = create_endpoint.sync(
    client=client,
    body=models.WebhookEndpointRequest(
        url="https://93.184.215.14/statement-hooks",
        event_types=[models.WebhookEventType.EXPORT_COMPLETED, models.WebhookEventType.EXPORT_FAILED],
        description="generated client",
    ),
)
assert isinstance(endpoint, models.WebhookEndpoint), endpoint
assert endpoint.secret.startswith("whsec_") and endpoint.enabled, endpoint
listed = list_endpoints.sync(client=client)
assert isinstance(listed, models.WebhookEndpointList), listed
assert [e.id for e in listed.items] == [endpoint.id]
assert not isinstance(listed.items[0].secret, str), "a listing shows no secret"
rotated = rotate_secret.sync(endpoint.id, client=client)
assert isinstance(rotated, models.WebhookEndpoint), rotated
assert rotated.secret.startswith("whsec_") and rotated.secret != endpoint.secret
assert isinstance(rotated.previous_secret_expires_at, datetime.datetime), rotated
log = list_deliveries.sync(endpoint.id, client=client)
assert isinstance(log, models.WebhookDeliveryList) and log.items == [], log
refused = create_endpoint.sync(client=client, body=models.WebhookEndpointRequest(url="https://127.0.0.1/hooks"))
assert isinstance(refused, models.Problem) and refused.status == 422 and refused.errors[0].field == "url", refused
deleted = delete_endpoint.sync_detailed(endpoint.id, client=client)
assert deleted.status_code == 204, deleted
gone = get_endpoint.sync(endpoint.id, client=client)
assert isinstance(gone, models.Problem) and gone.status == 404, gone

print(f"generated client: idempotent retry replayed; exported {details.row_count} rows, {details.file_size} bytes, sha256 verified; "
      "a webhook endpoint registered, listed, rotated and deleted")
