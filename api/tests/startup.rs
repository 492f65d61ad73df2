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
