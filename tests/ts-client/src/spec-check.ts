// Checks every response a generated client receives against the committed openapi.yaml: its
// status must be documented for the operation, its content type documented for the status, its
// JSON body valid against the schema (ajv, with formats) with no undocumented field, and its
// documented required headers present and valid. Used as the clients' `fetch`.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";
import formats from "ajv-formats";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

interface Operation {
  method: string;
  template: string;
  pattern: RegExp;
  responses: JsonObject;
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A copy of `schema` with `$ref`s into `#/definitions/` and, in every object schema with
 *  properties, `additionalProperties: false` unless the spec says otherwise: a field the spec
 *  does not name is a failure here, even where a client must tolerate new ones. */
function strict(schema: Json): Json {
  if (Array.isArray(schema)) return schema.map(strict);
  if (!isObject(schema)) return schema;
  const copy: JsonObject = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "$ref" && typeof value === "string") {
      copy[key] = value.replace("#/components/schemas/", "#/definitions/");
    } else if (key === "properties" && isObject(value)) {
      copy[key] = Object.fromEntries(Object.entries(value).map(([name, s]) => [name, strict(s)]));
    } else if (key === "example") {
      // Documentation, not a constraint.
    } else {
      copy[key] = strict(value);
    }
  }
  if (isObject(copy["properties"]) && !("additionalProperties" in copy)) copy["additionalProperties"] = false;
  return copy;
}

/** `type/subtype` and its parameters, lower-cased. */
function mediaType(value: string): { essence: string; params: string[] } {
  const [essence = "", ...params] = value.split(";").map((part) => part.trim().toLowerCase());
  return { essence, params: params.filter((p) => p !== "").sort() };
}

/** Whether a response's `Content-Type` is the documented media type `key` (equal essence, and
 *  the key's parameters, when it has any). */
function contentTypeMatches(key: string, actual: string): boolean {
  const [k, a] = [mediaType(key), mediaType(actual)];
  return k.essence === a.essence && k.params.every((p) => a.params.includes(p));
}

export class SpecChecker {
  readonly spec: JsonObject;
  readonly failures: string[] = [];
  /** Responses checked, per operation and status (`GET /api/exports 200`). */
  readonly seen = new Map<string, number>();
  private readonly operations: Operation[] = [];
  private readonly ajv: Ajv;
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(specPath: string) {
    const spec: Json = parse(readFileSync(specPath, "utf8"));
    if (!isObject(spec) || !isObject(spec["paths"]) || !isObject(spec["components"])) {
      throw new Error(`${specPath} is not an OpenAPI document`);
    }
    this.spec = spec;
    const schemas = spec["components"]["schemas"];
    // strict: an unknown keyword or format (`uint16`) fails here, as it would in a validator
    // that has not been taught it.
    this.ajv = new Ajv({ strict: true, allErrors: true });
    formats.default(this.ajv);
    this.ajv.addSchema({ $id: "spec", definitions: strict(schemas ?? {}) });
    for (const [template, item] of Object.entries(spec["paths"])) {
      if (!isObject(item)) continue;
      const source = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+");
      for (const [method, operation] of Object.entries(item)) {
        if (!isObject(operation) || !isObject(operation["responses"])) continue;
        this.operations.push({
          method: method.toUpperCase(),
          template,
          pattern: new RegExp(`^${source}$`),
          responses: operation["responses"],
        });
      }
    }
  }

  /** A `fetch` that checks every response it returns. */
  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = input instanceof Request ? input : new Request(input, init);
    const response = await fetch(request);
    await this.check(request.method, new URL(request.url), response.clone());
    return response;
  };

  private fail(what: string, message: string): never {
    this.failures.push(`${what}: ${message}`);
    throw new Error(`spec mismatch: ${what}: ${message}`);
  }

  private async check(method: string, url: URL, response: Response): Promise<void> {
    const what = `${method} ${url.pathname} → ${response.status}`;
    const operation = this.operations.find((o) => o.method === method && o.pattern.test(url.pathname));
    if (operation === undefined) this.fail(what, "no operation of the spec has this method and path");
    const documented = operation.responses[String(response.status)] ?? operation.responses["default"];
    if (!isObject(documented)) {
      const listed = Object.keys(operation.responses).join(", ");
      this.fail(what, `status not documented for ${method} ${operation.template} (documented: ${listed})`);
    }
    if (response.status >= 500) this.fail(what, "a server error");
    const key = `${method} ${operation.template} ${response.status}`;
    this.seen.set(key, (this.seen.get(key) ?? 0) + 1);

    for (const [name, header] of Object.entries(isObject(documented["headers"]) ? documented["headers"] : {})) {
      if (!isObject(header)) continue;
      const value = response.headers.get(name);
      if (value === null) {
        if (header["required"] === true) this.fail(what, `required header ${name} missing`);
        continue;
      }
      const schema = isObject(header["schema"]) ? header["schema"] : {};
      const typed = schema["type"] === "integer" && /^-?\d+$/.test(value) ? Number(value) : value;
      this.validate(what, `header ${name}`, schema, typed);
    }

    const body = Buffer.from(await response.arrayBuffer());
    const content = isObject(documented["content"]) ? documented["content"] : {};
    if (body.length === 0 && Object.keys(content).length === 0) return;
    const contentType = response.headers.get("content-type") ?? "";
    const media = Object.entries(content).find(([k]) => contentTypeMatches(k, contentType));
    if (media === undefined) {
      this.fail(what, `content type "${contentType}" not documented (documented: ${Object.keys(content).join(", ")})`);
    }
    const [mediaKey, mediaObject] = media;
    const schema = isObject(mediaObject) && isObject(mediaObject["schema"]) ? mediaObject["schema"] : {};
    if (!mediaType(mediaKey).essence.endsWith("json")) {
      if (schema["format"] !== "binary") this.fail(what, `${mediaKey} is neither JSON nor binary`);
      return;
    }
    let parsed: Json;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      this.fail(what, `a ${mediaKey} body that is not JSON`);
    }
    this.validate(what, "body", schema, parsed);
  }

  private validate(what: string, part: string, schema: JsonObject, value: Json): void {
    const id = createHash("sha256").update(JSON.stringify(schema)).digest("hex");
    let validator = this.validators.get(id);
    if (validator === undefined) {
      validator = this.ajv.compile(rebase(strict(schema)) as object);
      this.validators.set(id, validator);
    }
    if (!validator(value)) {
      const errors = (validator.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
      this.fail(what, `${part} does not match the spec: ${errors.join("; ")}; ${JSON.stringify(value)}`);
    }
  }
}

/** An inline schema whose nested `$ref`s point into the `spec` schema. */
function rebase(schema: Json): Json {
  if (Array.isArray(schema)) return schema.map(rebase);
  if (!isObject(schema)) return schema;
  return Object.fromEntries(
    Object.entries(schema).map(([k, v]) => [k, k === "$ref" && typeof v === "string" ? `spec${v}` : rebase(v)]),
  );
}
