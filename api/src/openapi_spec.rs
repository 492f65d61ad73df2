//! The published OpenAPI document. poem-openapi generates it from the operations and their
//! types; `finish` adds what poem-openapi cannot express:
//!
//! - response header names as HTTP spells them (`Retry-After`: poem-openapi upper-cases them);
//! - `additionalProperties: false` on every request body schema: bodies are read by
//!   `input::StrictJson`, which refuses unknown fields (poem-openapi's `deny_unknown_fields`
//!   does not say so in the schema);
//! - the local-storage download `GET /files/…`, a plain poem route (`files.rs`) whose object
//!   key spans several path segments, described with one parameter per segment.
//!
//! The served spec (`/openapi.json`, `/openapi.yaml`) and the committed `openapi.yaml` both come
//! from [`published`] and differ only in `servers`: the service's own `PUBLIC_BASE_URL`, or the
//! quick start's address.

use serde_yaml::{Mapping, Value};

/// The spec in both of its served forms, and the Swagger UI page showing it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub json: String,
    pub yaml: String,
    /// The Swagger UI page (`/docs`). poem-openapi's own page embeds the spec as generated,
    /// before `finish`; this is that page with the finished spec in its place.
    pub docs: String,
}

/// The spec of a service reachable at `public_base_url`.
pub fn published(public_base_url: &str) -> Spec {
    let server = poem_openapi::ServerObject::new(public_base_url).description(
        "This service (its `PUBLIC_BASE_URL`; the committed openapi.yaml names the quick start's).",
    );
    let generated = crate::openapi_service().server(server).spec_yaml();
    let mut doc: Value = serde_yaml::from_str(&generated).expect("poem-openapi writes valid YAML");
    finish(&mut doc);
    let json = serde_json::to_string_pretty(&doc).expect("a YAML document with string keys is JSON");
    let service = crate::openapi_service();
    let (page, generated) = (service.swagger_ui_html(), service.spec());
    assert!(page.contains(&generated), "poem-openapi's Swagger UI page embeds its spec verbatim");
    Spec {
        docs: page.replacen(&generated, &json, 1),
        yaml: serde_yaml::to_string(&doc).expect("a YAML value serializes"),
        json,
    }
}

/// The committed `openapi.yaml`: the spec of the quick start (`make run`, the default `API_BIND`).
pub fn committed() -> Spec {
    published(&format!("http://{}", shared::config::DEFAULT_API_BIND))
}

fn finish(doc: &mut Value) {
    canonical_header_names(doc);
    close_request_bodies(doc);
    let download: Value = serde_yaml::from_str(DOWNLOAD).expect("DOWNLOAD is valid YAML");
    let paths = doc["paths"].as_mapping_mut().expect("the spec has paths");
    paths.insert(DOWNLOAD_PATH.into(), download);
}

/// Every operation of every path, with its method.
fn operations(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    let paths = doc.get_mut("paths").and_then(Value::as_mapping_mut).into_iter();
    paths
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_mapping_mut)
        .flat_map(|item| item.values_mut())
}

/// `RETRY-AFTER` → `Retry-After`.
fn canonical_header_names(doc: &mut Value) {
    for operation in operations(doc) {
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_mapping_mut) else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(headers) = response.get_mut("headers").and_then(Value::as_mapping_mut) else { continue };
            *headers = std::mem::take(headers)
                .into_iter()
                .map(|(name, header)| (name.as_str().map_or(name.clone(), |n| canonical(n).into()), header))
                .collect::<Mapping>();
        }
    }
}

fn canonical(header: &str) -> String {
    // The one name HTTP does not spell word by word (RFC 9110 §8.8.3).
    if header.eq_ignore_ascii_case("etag") {
        return "ETag".to_owned();
    }
    let words = header.split('-').map(|word| {
        let mut chars = word.chars();
        chars.next().map_or_else(String::new, |first| {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        })
    });
    words.collect::<Vec<_>>().join("-")
}

/// Sets `additionalProperties: false` on the schema of every request body.
fn close_request_bodies(doc: &mut Value) {
    let mut names = Vec::new();
    for operation in operations(doc) {
        let Some(content) = operation.get_mut("requestBody").and_then(|b| b.get_mut("content")) else {
            continue;
        };
        for media in content.as_mapping_mut().into_iter().flat_map(|c| c.values_mut()) {
            match media["schema"].get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    names.push(reference.trim_start_matches("#/components/schemas/").to_owned())
                }
                None => close(&mut media["schema"]),
            }
        }
    }
    for name in names {
        close(&mut doc["components"]["schemas"][name.as_str()]);
    }
}

fn close(schema: &mut Value) {
    let schema = schema.as_mapping_mut().expect("a request body schema is an object schema");
    schema.insert("additionalProperties".into(), false.into());
}

/// The path of a local download link: `{PUBLIC_BASE_URL}/files/` and the object key that the
/// worker writes, `exports/{reference_id}/{upload_id}/{file_name}` (`worker/src/jobs/
/// export_statement.rs`), one parameter per segment.
pub const DOWNLOAD_PATH: &str = "/files/exports/{reference_id}/{upload_id}/{file_name}";

/// `GET` [`DOWNLOAD_PATH`], as `files::download` answers it.
const DOWNLOAD: &str = r#"
get:
  tags:
  - Exports
  summary: Download an export's file (local storage)
  description: |-
    `file_url` of a COMPLETED export, when the service stores files on local disk: this path
    with `expires`, `link` and `signature`, valid until `file_url_expires_at`. No API key is
    needed: the signature is the permission. With S3 storage `file_url` is a pre-signed S3 URL
    instead (S3 serves `Range` itself; verify against the export's `sha256`).

    Resumable and verifiable: `Accept-Ranges: bytes`; one byte range per request
    (`Range: bytes=first-last`, `bytes=first-` or `bytes=-suffix`) is answered `206` with
    `Content-Range`, a range with no byte in the file `416` with `Content-Range: bytes */{size}`;
    a `Range` of several ranges, or one that is not a byte range, gets the whole file (`200`).
    `If-Range` with the `ETag` honours the range, anything else gets the whole file. The `ETag`
    is strong: the file's SHA-256 (the export's `sha256`), quoted; `If-None-Match` naming it is
    `304`. `Repr-Digest` (RFC 9530) carries the SHA-256 of the whole file, on a `206` too.
    `HEAD` answers the headers of a `200` without the body (it ignores `Range`).
  operationId: download_file
  parameters:
  - name: reference_id
    in: path
    required: true
    description: The export's `reference_id`.
    schema:
      type: string
      format: uuid
  - name: upload_id
    in: path
    required: true
    description: The attempt that wrote the file.
    schema:
      type: string
      pattern: ^[0-9a-f]{32}$
  - name: file_name
    in: path
    required: true
    description: '`statement_{account_id}_{date_from}_{date_to}.csv` (or `.csv.gz`).'
    schema:
      type: string
      pattern: ^statement_[A-Za-z0-9._-]+\.csv(\.gz)?$
  - name: expires
    in: query
    required: true
    description: When the link stops working (Unix time), as `file_url` gives it.
    schema:
      type: integer
      format: int64
  - name: link
    in: query
    required: false
    description: |-
      The link's id, as `file_url` gives it (signed with the rest: a download is recorded
      against its link). Links minted before links had ids have none.
    schema:
      type: string
      format: uuid
  - name: signature
    in: query
    required: true
    description: The link's signature, as `file_url` gives it.
    schema:
      type: string
  - name: Range
    in: header
    required: false
    description: 'One byte range: `bytes=0-1048575`, `bytes=1048576-` or `bytes=-1024`.'
    schema:
      type: string
  - name: If-Range
    in: header
    required: false
    description: The `ETag` of the part already held; the range is sent only if the file is still that one.
    schema:
      type: string
  - name: If-None-Match
    in: header
    required: false
    description: '`ETag`s of copies already held: `304` when one is this file.'
    schema:
      type: string
  responses:
    '200':
      description: |-
        The file, as the export describes it (`file_size` bytes, `sha256`): CSV, or for
        `format: csv.gz` the same CSV gzip-compressed.
      headers:
        Content-Disposition:
          description: '`attachment; filename="{file_name}"`'
          required: true
          schema:
            type: string
        Accept-Ranges:
          description: '`bytes`'
          required: true
          schema:
            type: string
        ETag:
          description: The file's SHA-256 in hex (the export's `sha256`), quoted; a strong validator.
          required: true
          schema:
            type: string
            pattern: ^"[0-9a-f]{64}"$
        Repr-Digest:
          description: '`sha-256=:{base64 of the SHA-256}:` (RFC 9530).'
          required: true
          schema:
            type: string
            pattern: '^sha-256=:[A-Za-z0-9+/]{43}=:$'
      content:
        text/csv; charset=utf-8:
          schema:
            type: string
            format: binary
        application/gzip:
          schema:
            type: string
            format: binary
    '206':
      description: The bytes of the one range asked for (`Content-Range`).
      headers:
        Content-Range:
          description: '`bytes {first}-{last}/{file_size}`'
          required: true
          schema:
            type: string
            pattern: ^bytes [0-9]+-[0-9]+/[0-9]+$
        Content-Disposition:
          description: '`attachment; filename="{file_name}"`'
          required: true
          schema:
            type: string
        Accept-Ranges:
          description: '`bytes`'
          required: true
          schema:
            type: string
        ETag:
          description: As for `200`.
          required: true
          schema:
            type: string
            pattern: ^"[0-9a-f]{64}"$
        Repr-Digest:
          description: The SHA-256 of the whole file (not of the range), as for `200`.
          required: true
          schema:
            type: string
            pattern: '^sha-256=:[A-Za-z0-9+/]{43}=:$'
      content:
        text/csv; charset=utf-8:
          schema:
            type: string
            format: binary
        application/gzip:
          schema:
            type: string
            format: binary
    '304':
      description: '`If-None-Match` names this file: the copy held is current.'
      headers:
        ETag:
          description: As for `200`.
          required: true
          schema:
            type: string
            pattern: ^"[0-9a-f]{64}"$
    '403':
      description: The link is expired, altered or incomplete; read the export again for a new one.
      content:
        application/problem+json:
          schema:
            $ref: '#/components/schemas/Problem'
    '404':
      description: The file no longer exists; request the statement again.
      content:
        application/problem+json:
          schema:
            $ref: '#/components/schemas/Problem'
    '416':
      description: The range holds no byte of the file.
      headers:
        Content-Range:
          description: '`bytes */{file_size}`'
          required: true
          schema:
            type: string
            pattern: ^bytes \*/[0-9]+$
      content:
        application/problem+json:
          schema:
            $ref: '#/components/schemas/Problem'
    '503':
      description: Storage or the database is unavailable; retry after the given seconds.
      headers:
        Retry-After:
          required: true
          schema:
            type: integer
            format: int64
      content:
        application/problem+json:
          schema:
            $ref: '#/components/schemas/Problem'
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_doc() -> serde_json::Value {
        serde_json::from_str(&committed().json).unwrap()
    }

    /// Every value of `key` anywhere in the document but in examples.
    fn all_values<'a>(value: &'a serde_json::Value, key: &str, found: &mut Vec<&'a serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(v) = map.get(key) {
                    found.push(v);
                }
                map.iter().filter(|(k, _)| *k != "example").for_each(|(_, v)| all_values(v, key, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| all_values(v, key, found)),
            _ => {}
        }
    }

    #[test]
    fn every_format_is_one_validators_and_generators_know() {
        // OpenAPI 3.0's own formats, and `uuid` (JSON Schema's, which every generator knows).
        let known = ["int32", "int64", "float", "double", "date", "date-time", "uuid", "binary"];
        let doc = committed_doc();
        let mut formats = Vec::new();
        all_values(&doc, "format", &mut formats);
        assert!(formats.contains(&&serde_json::json!("date")), "date_from has format: date");
        for format in formats {
            // A schema property named `format` (ExportDetails.format) is an object, not a format.
            if let Some(format) = format.as_str() {
                assert!(known.contains(&format), "non-standard format {format}");
            }
        }
    }

    #[test]
    fn header_names_are_spelled_as_http_spells_them() {
        let doc = committed_doc();
        let mut headers = Vec::new();
        all_values(&doc, "headers", &mut headers);
        let names: Vec<&String> = headers.iter().flat_map(|h| h.as_object().unwrap().keys()).collect();
        assert!(names.iter().any(|n| *n == "Retry-After"), "{names:?}");
        for name in names {
            assert_eq!(*name, canonical(name));
        }
        assert_eq!(canonical("RETRY-AFTER"), "Retry-After");
        assert_eq!(canonical("x-request-id"), "X-Request-Id");
        assert_eq!(canonical("ETAG"), "ETag");
    }

    #[test]
    fn request_bodies_refuse_unknown_properties_as_the_server_does() {
        let doc = committed_doc();
        let schema = &doc["components"]["schemas"]["ExportRequest"];
        assert_eq!(schema["additionalProperties"], false);
        // Responses stay open: a later release may add fields.
        assert!(doc["components"]["schemas"]["ExportDetails"].get("additionalProperties").is_none());
    }

    #[test]
    fn no_optional_property_has_a_default() {
        // openapi-typescript types a property with a default as always present.
        let doc = committed_doc();
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            for (property, definition) in schema["properties"].as_object().into_iter().flatten() {
                assert!(definition.get("default").is_none(), "{name}.{property} has a default");
            }
        }
    }

    #[test]
    fn the_served_spec_differs_from_the_committed_one_only_in_its_server() {
        let mut served: serde_json::Value =
            serde_json::from_str(&published("https://x.example").json).unwrap();
        assert_eq!(served["servers"][0]["url"], "https://x.example");
        let mut committed = committed_doc();
        assert_eq!(committed["servers"][0]["url"], "http://127.0.0.1:8080");
        served["servers"].take();
        committed["servers"].take();
        assert_eq!(served, committed);
    }

    #[test]
    fn the_download_path_has_one_parameter_per_key_segment() {
        let doc = committed_doc();
        let operation = &doc["paths"][DOWNLOAD_PATH]["get"];
        let in_path: Vec<&str> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let templated: Vec<&str> = DOWNLOAD_PATH
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(in_path, templated);
        assert_eq!(
            operation["responses"]["403"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
    }
}
