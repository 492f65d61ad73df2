"""Verifies webhook deliveries with the `standardwebhooks` package from PyPI (the Standard
Webhooks reference library for Python), an implementation this project did not write.

Usage: verify_webhook.py SECRET < deliveries.json
SECRET is the endpoint's `whsec_…` secret; stdin is a JSON array of {"headers": {...},
"body": "..."}. Prints the verified bodies (parsed) as a JSON array and exits 0, or names the
first delivery that does not verify and exits 1."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret = sys.argv[1]
deliveries = json.load(sys.stdin)
verified = []
for i, delivery in enumerate(deliveries):
    try:
        verified.append(Webhook(secret).verify(delivery["body"], delivery["headers"]))
    except WebhookVerificationError as e:
        print(f"delivery {i} ({delivery['headers'].get('webhook-id')}) does not verify: {e}")
        sys.exit(1)
print(json.dumps(verified))
