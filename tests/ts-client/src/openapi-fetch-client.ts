// A client program on the types openapi-typescript generates from openapi.yaml, with
// openapi-fetch: create an export, poll it, download it through the typed download operation
// and verify its SHA-256, page through the listing with its cursor, cancel an export, and read
// the problems of refused requests. Every response is checked against the spec (spec-check.ts).
//
// Usage: node build/src/openapi-fetch-client.js BASE_URL API_KEY SPEC_PATH README_PATH

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import createClient from "openapi-fetch";
import type { components, paths } from "../generated/openapi-typescript/schema.js";
import { SpecChecker } from "./spec-check.js";

type ExportDetails = components["schemas"]["ExportDetails"];
type ExportRequest = components["schemas"]["ExportRequest"];
type Problem = components["schemas"]["Problem"];

const [baseUrl, apiKey, specPath, readmePath] = process.argv.slice(2);
if (baseUrl === undefined || apiKey === undefined || specPath === undefined || readmePath === undefined) {
  throw new Error("usage: openapi-fetch-client.js BASE_URL API_KEY SPEC_PATH README_PATH");
}
const checker = new SpecChecker(specPath);
const client = createClient<paths>({
  baseUrl,
  fetch: checker.fetch,
  headers: { Authorization: `Bearer ${apiKey}` },
});
const anonymous = createClient<paths>({ baseUrl, fetch: checker.fetch });

/** The field names a `400` problem names. */
function fields(problem: Problem): string[] {
  // `errors` is always present: no optional chaining needed, and none would compile away a bug.
  return problem.errors.map((e) => e.field);
}

async function exportDetails(id: string): Promise<ExportDetails> {
  const { data, error } = await client.GET("/api/export/{reference_id}", {
    params: { path: { reference_id: id } },
  });
  if (error !== undefined) throw new Error(`GET ${id}: ${error.status} ${error.detail}`);
  return data;
}

async function waitFor(id: string, done: (e: ExportDetails) => boolean): Promise<ExportDetails> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const details = await exportDetails(id);
    if (done(details) || Date.now() > deadline) return details;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function create(body: ExportRequest): Promise<string> {
  const { data, error, response } = await client.POST("/api/export", { body });
  if (error !== undefined) throw new Error(`POST: ${error.status} ${error.detail} ${JSON.stringify(error.errors)}`);
  assert.ok(response.status === 202 || response.status === 200);
  return data.reference_id;
}

// Liveness and readiness, typed as enums.
const health = await client.GET("/health");
assert.equal(health.data?.status, "ok");
const ready = await client.GET("/ready");
assert.equal(ready.data?.status, "ready", JSON.stringify(ready.error));
assert.deepEqual(ready.data.checks.map((c) => c.name), ["postgres", "source", "storage"]);

// The served spec is the committed one, naming this service as its server.
const served = await (await fetch(`${baseUrl}/openapi.json`)).json();
assert.deepEqual(served.servers?.map((s: { url: string }) => s.url), [baseUrl]);
assert.deepEqual({ ...served, servers: null }, { ...checker.spec, servers: null });

// Create, poll to COMPLETED, download through the typed operation and verify the file.
const request: ExportRequest = {
  account_id: "ACC-1002",
  table_name: "bank_transactions",
  date_from: "2024-04-01",
  date_to: "2024-04-30",
  force_refresh: true,
};
const id = await create(request);
const completed = await waitFor(id, (e) => e.status === "COMPLETED" || e.status === "FAILED");
assert.equal(completed.status, "COMPLETED", JSON.stringify(completed));
assert.equal(completed.format, "csv");
assert.ok(completed.file_url !== undefined && completed.sha256 !== undefined && completed.file_size !== undefined);
const link = new URL(completed.file_url);
const segments = link.pathname.split("/");
const [, files, exportsDir, referenceId, uploadId, fileName] = segments;
assert.deepEqual([segments.length, files, exportsDir, referenceId], [6, "files", "exports", id]);
assert.ok(uploadId !== undefined && fileName !== undefined);
const download = await anonymous.GET("/files/exports/{reference_id}/{upload_id}/{file_name}", {
  params: {
    path: { reference_id: id, upload_id: uploadId, file_name: fileName },
    query: {
      expires: Number(link.searchParams.get("expires")),
      link: link.searchParams.get("link") ?? "",
      signature: link.searchParams.get("signature") ?? "",
    },
  },
  parseAs: "arrayBuffer",
});
assert.ok(download.data !== undefined, JSON.stringify(download.error));
const file = Buffer.from(download.data);
assert.equal(file.length, completed.file_size);
assert.equal(createHash("sha256").update(file).digest("hex"), completed.sha256);
assert.ok(file.toString("utf8").startsWith("id,account_id,txn_date,"));

// A tampered link: a typed 403 problem.
const tampered = await anonymous.GET("/files/exports/{reference_id}/{upload_id}/{file_name}", {
  params: {
    path: { reference_id: id, upload_id: uploadId, file_name: fileName },
    query: { expires: Number(link.searchParams.get("expires")), signature: "0".repeat(64) },
  },
});
assert.equal(tampered.error?.status, 403);

// Two more exports (one gzip-compressed), then the listing, one export a page, by cursor.
const gz = await create({ ...request, format: "csv.gz" });
const other = await create({ ...request, account_id: "ACC-1004", date_from: "2024-05-01", date_to: "2024-05-31" });
const listed: string[] = [];
let cursor: string | undefined;
let previous: string | undefined;
do {
  const query = cursor === undefined ? { limit: 1 } : { limit: 1, cursor };
  const { data, error } = await client.GET("/api/exports", { params: { query } });
  if (error !== undefined) throw new Error(`list: ${error.status} ${error.detail}`);
  const [item, ...rest] = data.items;
  assert.ok(item !== undefined && rest.length === 0);
  assert.ok(previous === undefined || item.created_at <= previous, "newest first");
  previous = item.created_at;
  listed.push(item.reference_id);
  cursor = data.next_cursor;
} while (cursor !== undefined);
assert.equal(new Set(listed).size, listed.length, "no export listed twice");
assert.deepEqual(listed.slice(0, 3), [other, gz, id]);

// Cancel one, pending or running: CANCELLED at once, and the export carries its error. (The
// worker may finish an export before the cancel arrives, a 409: then another is tried.)
let cancelled: ExportDetails | undefined;
for (let attempt = 0; cancelled === undefined && attempt < 5; attempt++) {
  const doomed = await create({ ...request, account_id: "ACC-1005", date_from: "2025-01-01", date_to: "2025-12-31" });
  const answer = await client.POST("/api/export/{reference_id}/cancel", {
    params: { path: { reference_id: doomed } },
  });
  if (answer.error?.status === 409) continue;
  assert.ok(answer.data !== undefined, JSON.stringify(answer.error));
  cancelled = answer.data;
}
assert.ok(cancelled !== undefined, "every export finished before its cancel arrived");
assert.equal(cancelled.detached, false);
for (const e of [cancelled, await exportDetails(cancelled.reference_id)]) {
  assert.deepEqual([e.status, e.error_code, e.error], ["CANCELLED", "cancelled", "the export was cancelled"]);
}
// Cancelling a finished export is a 409 problem, whose `errors` is empty but there.
const again = await client.POST("/api/export/{reference_id}/cancel", {
  params: { path: { reference_id: id } },
});
assert.equal(again.error?.status, 409);
assert.deepEqual(again.error.errors, []);

// Refusals are typed problems: a validation problem names each field in `errors[]`.
const invalid = await client.POST("/api/export", {
  body: { ...request, table_name: "nope", date_from: "2024-05-01", date_to: "2024-04-01" },
});
assert.equal(invalid.error?.status, 400);
assert.deepEqual(fields(invalid.error).sort(), ["date_from", "table_name"]);
// A field the schema does not have (`additionalProperties: false`): the typed client would
// not send it, a hand-written one might.
const unknownField = await client.POST("/api/export", {
  body: { ...request, acount_id: "ACC-1002" } as ExportRequest,
});
assert.deepEqual(unknownField.error !== undefined && fields(unknownField.error), ["acount_id"]);
const badLimit = await client.GET("/api/exports", { params: { query: { limit: 0 } } });
assert.deepEqual(badLimit.error !== undefined && fields(badLimit.error), ["limit"]);
const missing = await client.GET("/api/export/{reference_id}", {
  params: { path: { reference_id: "00000000-0000-4000-8000-000000000000" } },
});
assert.equal(missing.error?.status, 404);
assert.equal(missing.error.errors.length, 0);
const unauthenticated = await anonymous.GET("/api/exports");
assert.equal(unauthenticated.error?.status, 401);

// The README's quick-start example (its request, on the demo dataset) answers what it shows.
const readmeRows = Number(/"row_count":(\d+)/.exec(readFileSync(readmePath, "utf8"))?.[1]);
const quickStart = await create({
  account_id: "ACC-1001",
  table_name: "bank_transactions",
  date_from: "2024-01-01",
  date_to: "2024-12-31",
});
const quickStartDone = await waitFor(quickStart, (e) => e.status === "COMPLETED" || e.status === "FAILED");
assert.equal(quickStartDone.row_count, readmeRows, "row_count in the README's quick-start example");

assert.deepEqual(checker.failures, []);
const total = [...checker.seen.values()].reduce((a, b) => a + b, 0);
console.log(
  `[ts-client] openapi-fetch: ${total} responses valid against the spec (${checker.seen.size} operation/status pairs); ` +
    `exported ${completed.row_count} rows, ${completed.file_size} bytes, sha256 verified`,
);
