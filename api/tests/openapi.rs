//! The committed `openapi.yaml` is exactly what the code generates.

#[test]
fn committed_openapi_yaml_matches_the_generated_spec() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml"))
        .expect("openapi.yaml at the repository root");
    let generated = api::openapi_yaml();
    assert!(
        committed == generated,
        "openapi.yaml is out of date; regenerate it with `make openapi` \
         (cargo run -q -p statement-api -- openapi > openapi.yaml)"
    );
}

#[test]
fn every_operation_documents_its_problem_responses() {
    let spec: serde_json::Value = serde_json::from_str(&api::openapi_service().spec()).unwrap();
    let export = &spec["paths"]["/api/export"]["post"]["responses"];
    for status in ["400", "401", "403", "503"] {
        assert!(
            export[status]["content"]["application/problem+json"].is_object(),
            "POST /api/export lacks a problem+json {status}: {export}"
        );
    }
}
