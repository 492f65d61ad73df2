// The SDK @hey-api/openapi-ts generates from openapi.yaml, compiled as strictly as the other
// client and run briefly: create an export (an identical one exists by now: reused), read it,
// list, read a validation problem's `errors[]`. Every response is checked against the spec.
//
// Usage: node build/src/hey-api-client.js BASE_URL API_KEY SPEC_PATH

import assert from "node:assert/strict";
import { client } from "../generated/hey-api/client.gen.js";
import { createExport, getExport, listExports } from "../generated/hey-api/sdk.gen.js";
import type { ExportRequest, Problem } from "../generated/hey-api/types.gen.js";
import { SpecChecker } from "./spec-check.js";

const [baseUrl, apiKey, specPath] = process.argv.slice(2);
if (baseUrl === undefined || apiKey === undefined || specPath === undefined) {
  throw new Error("usage: hey-api-client.js BASE_URL API_KEY SPEC_PATH");
}
const checker = new SpecChecker(specPath);
client.setConfig({ baseUrl, fetch: checker.fetch, headers: { Authorization: `Bearer ${apiKey}` } });

const request: ExportRequest = {
  account_id: "ACC-1002",
  table_name: "bank_transactions",
  date_from: "2024-04-01",
  date_to: "2024-04-30",
};
const created = await createExport({ body: request });
assert.ok(created.data !== undefined, JSON.stringify(created.error));
assert.equal(created.response.status, 200, "the openapi-fetch client made this export");
assert.equal(created.data.reused, true);

const details = await getExport({ path: { reference_id: created.data.reference_id } });
assert.ok(details.data !== undefined, JSON.stringify(details.error));
assert.equal(details.data.status, "COMPLETED");
assert.equal(details.data.date_from, request.date_from);

const page = await listExports({ query: { limit: 2, account_id: "ACC-1002" } });
assert.ok(page.data !== undefined, JSON.stringify(page.error));
assert.ok(page.data.items.every((e) => e.account_id === "ACC-1002"));

const invalid = await createExport({ body: { ...request, account_id: "ACC 1002", format: "csv.gz" } });
const problem: Problem | undefined = invalid.error;
assert.equal(problem?.status, 400);
assert.deepEqual(problem.errors.map((e) => e.field), ["account_id"]);

assert.deepEqual(checker.failures, []);
const total = [...checker.seen.values()].reduce((a, b) => a + b, 0);
console.log(`[ts-client] @hey-api/openapi-ts: ${total} responses valid against the spec`);
