//! Start-up refuses settings that would make the service unsafe, naming the setting and never
//! echoing a secret.

use std::process::Command;

/// Runs `statement-api serve` with `vars` against a Postgres port nothing listens on: a setting
/// that passes its check gets as far as connecting, and fails there instead.
fn serve_with(vars: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_statement-api"))
        .arg("serve")
        .envs(vars.iter().copied())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
        .env("API_BIND", "127.0.0.1:0")
        .output()
        .expect("statement-api runs");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_signing_secret_shorter_than_32_bytes_of_key_material_stops_start_up_without_being_logged() {
    for weak in [
        "change-me-to-32-random-bytes-hex", // the old .env.example placeholder: 24 bytes of base64
        "0123456789abcdef0123456789abcdef", // `openssl rand -hex 16`: 32 characters, 16 bytes
        "a short passphrase, 31 bytes...",
        "00000000000000000000000000000000000000000000000000000000000000000000", // long, but one character
    ] {
        let stderr = serve_with(&[("SIGNING_SECRET", weak)]);
        assert!(
            stderr.contains("SIGNING_SECRET") && stderr.contains("at least 32 bytes"),
            "{weak}: {stderr}"
        );
        assert!(!stderr.contains(weak), "the secret itself is printed: {stderr}");
    }
}

#[test]
fn a_signing_secret_with_32_bytes_of_key_material_is_accepted() {
    // `openssl rand -hex 32`: the check passes, and start-up goes on to Postgres (which is not there).
    let stderr =
        serve_with(&[("SIGNING_SECRET", "9c1f4e7a2b8d03f6a5e9c7b1d4f2a8e06b3c9d1e7f5a2b4c8e0d6f3a1b9c7e5d")]);
    assert!(!stderr.contains("SIGNING_SECRET"), "{stderr}");
    assert!(stderr.contains("migrations"), "start-up got as far as Postgres: {stderr}");
}

#[test]
fn a_malformed_log_filter_stops_start_up_naming_the_variable() {
    let stderr = serve_with(&[("RUST_LOG", "warn,api=chatty")]);
    assert!(stderr.contains("RUST_LOG") && stderr.contains("tracing filter"), "{stderr}");
}

/// `serve_with` on S3 storage, with `vars` on top.
fn serve_on_s3(vars: &[(&str, &str)]) -> String {
    let mut all = vec![("STORAGE_BACKEND", "s3"), ("S3_BUCKET", "exports")];
    all.extend_from_slice(vars);
    serve_with(&all)
}

#[test]
fn s3_settings_that_do_not_go_together_stop_start_up_naming_the_setting() {
    let kms_key_without_kms = "S3_SSE_KMS_KEY_ID is set but S3_SSE is not aws:kms";
    for (vars, message) in [
        (
            vec![("S3_SSE", "aes256")],
            r#"S3_SSE: expected AES256 (SSE-S3) or aws:kms (SSE-KMS), got "aes256""#,
        ),
        (vec![("S3_SSE", "sse-c")], "S3_SSE: expected AES256 (SSE-S3) or aws:kms (SSE-KMS)"),
        (vec![("S3_SSE_KMS_KEY_ID", "alias/exports")], kms_key_without_kms),
        (vec![("S3_SSE", "AES256"), ("S3_SSE_KMS_KEY_ID", "alias/exports")], kms_key_without_kms),
        (vec![("S3_CHECKSUM", "md5")], r#"S3_CHECKSUM: expected sha256 or none, got "md5""#),
        (
            vec![("S3_PUBLIC_ENDPOINT", "files.example.com")],
            "S3_PUBLIC_ENDPOINT: expected an http:// or https:// URL",
        ),
        (vec![("S3_ENDPOINT", "minio:9000")], "S3_ENDPOINT: expected an http:// or https:// URL"),
        (
            vec![("S3_ACCESS_KEY_ID", "AKIAEXAMPLE")],
            "S3_SECRET_ACCESS_KEY is required when S3_ACCESS_KEY_ID is set",
        ),
        (
            vec![("S3_SECRET_ACCESS_KEY", "a-secret-that-must-not-be-printed")],
            "S3_ACCESS_KEY_ID is required when S3_SECRET_ACCESS_KEY is set",
        ),
    ] {
        let stderr = serve_on_s3(&vars);
        assert!(stderr.contains(message), "{vars:?}: {stderr}");
        assert!(!stderr.contains("a-secret-that-must-not-be-printed"), "{stderr}");
    }
}

#[test]
fn valid_s3_encryption_checksum_and_public_endpoint_settings_are_accepted() {
    for vars in [
        vec![("S3_SSE", "AES256"), ("S3_CHECKSUM", "none")],
        vec![("S3_SSE", "aws:kms")],
        vec![
            ("S3_SSE", "aws:kms"),
            ("S3_SSE_KMS_KEY_ID", "arn:aws:kms:eu-west-1:123456789012:alias/exports"),
        ],
        vec![("S3_ENDPOINT", "http://minio:9000"), ("S3_PUBLIC_ENDPOINT", "https://files.example.com/")],
    ] {
        // The check passes, and start-up goes on to Postgres (which is not there).
        let stderr = serve_on_s3(&vars);
        assert!(!stderr.contains("S3_"), "{vars:?}: {stderr}");
        assert!(stderr.contains("migrations"), "{vars:?}: start-up got as far as Postgres: {stderr}");
    }
}
