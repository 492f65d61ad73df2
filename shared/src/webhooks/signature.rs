//! Endpoint secrets and Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! A secret is 32 random bytes, shown to its client once as `whsec_` + base64. A delivery is
//! signed with `v1,` + base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}"));
//! during a rotation's overlap it carries one signature per secret, space-separated, and a
//! receiver accepts it when any of them verifies.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;
/// What a secret's text starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing key. Never printed: its `Debug` says nothing of it.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new secret from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random generator works");
        Self(SecretSlice::from(bytes))
    }

    /// A stored secret's bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(SecretSlice::from(bytes))
    }

    /// The bytes to store.
    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The text a client is given once (and configures its verifier with): `whsec_` + base64.
    pub fn to_text(&self) -> SecretString {
        SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(self.bytes())))
    }

    /// `v1,` + the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under this secret.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.bytes()).expect("HMAC takes a key of any size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header's value: one signature per secret (the current one first),
/// space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.into_iter().map(|secret| secret.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The specification's example (and the reference libraries' test): this secret, id,
        // timestamp and body give this signature.
        let secret = Secret::from_bytes(STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_random_whsec_text_and_never_printed() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a.bytes(), b.bytes());
        let text = a.to_text();
        let encoded = text.expose_secret().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap(), a.bytes());
        assert_eq!(format!("{a:?}"), "Secret(..)");
        let header = signature_header([&a, &b], "evt", 1, b"{}");
        assert_eq!(header, format!("{} {}", a.sign("evt", 1, b"{}"), b.sign("evt", 1, b"{}")));
    }
}
