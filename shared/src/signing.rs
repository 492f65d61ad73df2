//! HMAC-signed, expiring download URLs for local storage.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Least key material `SIGNING_SECRET` must carry: HMAC-SHA-256's own output size.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// How many bytes of key material a configured secret carries: a hex string half its length, a
/// base64 string three quarters of it (so `openssl rand -hex 16`, 32 characters, counts as the
/// 16 bytes it is), anything else its length in bytes.
/// A secret of fewer than 8 distinct characters (`aaaa…`, `0000…`) is a placeholder, not a key:
/// it counts as no more than its distinct characters.
pub(crate) fn key_material_bytes(secret: &str) -> usize {
    let secret = secret.trim();
    let distinct = secret.bytes().collect::<std::collections::HashSet<u8>>().len();
    if distinct < 8 {
        return distinct;
    }
    if secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return secret.len() / 2;
    }
    let unpadded = secret.trim_end_matches('=');
    if unpadded.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/-_".contains(&b)) {
        return unpadded.len() * 6 / 8;
    }
    secret.len()
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The link's time is up.
    #[error("the download link has expired")]
    Expired,
    /// The signature does not match the key and expiry.
    #[error("the download link is not valid")]
    Invalid,
}

/// Signs and verifies `(object key, expiry)` pairs.
#[derive(Clone)]
pub struct UrlSigner {
    key: SecretSlice<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    /// A signer with this HMAC key.
    pub fn new(key: &[u8]) -> Self {
        Self { key: SecretSlice::from(key.to_vec()) }
    }

    /// A signer with a random key: URLs stop working when the process restarts.
    pub fn random() -> Self {
        let key: Vec<u8> =
            [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].iter().flat_map(|u| *u.as_bytes()).collect();
        Self::new(&key)
    }

    /// The MAC of a link: `key \n expires`, and `\n link id` when it has one. A link id is not
    /// a number, so no link without one signs the same message as a link with one.
    fn mac(&self, object_key: &str, expires: i64, link: Option<Uuid>) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(self.key.expose_secret()).expect("HMAC takes any key length");
        mac.update(object_key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        if let Some(link) = link {
            mac.update(b"\n");
            mac.update(link.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
        }
        mac
    }

    /// Hex HMAC-SHA256 of the key and the expiry (unix seconds): a link without an id, as
    /// links were signed before they had one.
    pub fn sign(&self, object_key: &str, expires: i64) -> String {
        hex::encode(self.mac(object_key, expires, None).finalize().into_bytes())
    }

    /// Hex HMAC-SHA256 of the key, the expiry (unix seconds) and the link's id.
    pub fn sign_link(&self, object_key: &str, expires: i64, link: Uuid) -> String {
        hex::encode(self.mac(object_key, expires, Some(link)).finalize().into_bytes())
    }

    /// Checks the signature (in constant time) of the key, the expiry and the link id if the
    /// link has one (links minted before ids were added have none and keep working), then the
    /// expiry.
    pub fn verify(
        &self,
        object_key: &str,
        expires: i64,
        link: Option<Uuid>,
        signature: &str,
    ) -> Result<(), SignatureError> {
        let bytes = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.mac(object_key, expires, link).verify_slice(&bytes).map_err(|_| SignatureError::Invalid)?;
        if OffsetDateTime::now_utc().unix_timestamp() > expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_key_and_expiry() {
        let signer = UrlSigner::new(b"test key");
        let future = OffsetDateTime::now_utc().unix_timestamp() + 60;
        let sig = signer.sign("exports/a.csv", future);
        assert_eq!(signer.verify("exports/a.csv", future, None, &sig), Ok(()));
        assert_eq!(signer.verify("exports/b.csv", future, None, &sig), Err(SignatureError::Invalid));
        assert_eq!(signer.verify("exports/a.csv", future + 1, None, &sig), Err(SignatureError::Invalid));
        assert_eq!(signer.verify("exports/a.csv", future, None, "zz"), Err(SignatureError::Invalid));
        assert_eq!(
            UrlSigner::new(b"other").verify("exports/a.csv", future, None, &sig),
            Err(SignatureError::Invalid)
        );
        let past = OffsetDateTime::now_utc().unix_timestamp() - 1;
        let sig = signer.sign("exports/a.csv", past);
        assert_eq!(signer.verify("exports/a.csv", past, None, &sig), Err(SignatureError::Expired));
    }

    #[test]
    fn a_link_id_is_bound_to_its_signature_and_cannot_be_added_or_dropped() {
        let signer = UrlSigner::new(b"test key");
        let future = OffsetDateTime::now_utc().unix_timestamp() + 60;
        let (link, other) = (Uuid::new_v4(), Uuid::new_v4());
        let sig = signer.sign_link("exports/a.csv", future, link);
        assert_eq!(signer.verify("exports/a.csv", future, Some(link), &sig), Ok(()));
        assert_eq!(signer.verify("exports/a.csv", future, Some(other), &sig), Err(SignatureError::Invalid));
        assert_eq!(
            signer.verify("exports/a.csv", future, None, &sig),
            Err(SignatureError::Invalid),
            "id dropped"
        );
        let old = signer.sign("exports/a.csv", future);
        assert_eq!(
            signer.verify("exports/a.csv", future, Some(link), &old),
            Err(SignatureError::Invalid),
            "id added"
        );
        assert_eq!(signer.verify("exports/b.csv", future, Some(link), &sig), Err(SignatureError::Invalid));
    }

    #[test]
    fn key_material_counts_what_an_encoded_secret_decodes_to() {
        let hex_32 = "9c1f4e7a2b8d03f6a5e9c7b1d4f2a8e06b3c9d1e7f5a2b4c8e0d6f3a1b9c7e5d";
        assert_eq!(key_material_bytes(hex_32), 32, "openssl rand -hex 32");
        assert_eq!(key_material_bytes(&hex_32[..32]), 16, "openssl rand -hex 16: 32 characters, 16 bytes");
        assert_eq!(
            key_material_bytes("q83vEjRWeJq8zqs3RWeJq83vEjRWeJq8zqs3RWeJq8w="),
            32,
            "openssl rand -base64 32"
        );
        assert_eq!(key_material_bytes("change-me"), 6);
        assert_eq!(key_material_bytes("a passphrase with spaces that is long enough"), 44);
        assert_eq!(key_material_bytes(&"0".repeat(64)), 1, "a placeholder, however long");
        assert_eq!(key_material_bytes(&"ab".repeat(40)), 2);
    }
}
