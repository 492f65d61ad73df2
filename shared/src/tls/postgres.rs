//! Postgres TLS from the URL, as libpq reads it.
//!
//! - `sslmode=disable`: plain TCP.
//! - `sslmode=prefer` (the default, as in libpq): TLS when the server offers it, no verification.
//! - `sslmode=require`: TLS or no connection; the certificate is not verified unless
//!   `sslrootcert` is given, which makes it `verify-ca` (libpq's rule, kept for compatibility).
//! - `sslmode=verify-ca`: the certificate chains to `sslrootcert` (or the platform's roots).
//! - `sslmode=verify-full`: that, and the certificate names the host connected to.
//!
//! `sslrootcert=<PEM file>` (or `system`: the platform's roots, which is also what verifying
//! without `sslrootcert` uses); `sslcert` and `sslkey` (PEM) present a client certificate.

use std::{fmt, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{TlsConfigError, param, take_query_params};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS; the certificate is checked against `sslrootcert` when one is given.
    Require,
    /// TLS, with the server's certificate checked against the CA.
    VerifyCa,
    /// TLS, with the certificate checked and naming the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsConfigError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // `allow` (plain text first) has no equivalent in tokio-postgres.
            _ => {
                return Err(TlsConfigError::Invalid {
                    setting: "sslmode",
                    expected: "disable, prefer, require, verify-ca or verify-full",
                    value: value.to_owned(),
                });
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The URL's TLS settings, made into a connector.
#[derive(Clone)]
pub struct PgTls {
    /// The `sslmode`.
    pub mode: SslMode,
    /// The connector for tokio-postgres.
    pub connector: MakeRustlsConnect,
}

const PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Takes the TLS settings out of a `postgres://` URL: the rest of the URL (for
/// `tokio_postgres::Config`, which knows neither `verify-*` nor the file settings), and the
/// connector. Call [`PgTls::apply`] on the parsed config.
pub fn from_url(url: &str) -> Result<(String, PgTls), TlsConfigError> {
    let (rest, params) = take_query_params(url, &PARAMS);
    let mode = param(&params, "sslmode").map(SslMode::parse).transpose()?.unwrap_or(SslMode::Prefer);
    let roots = match param(&params, "sslrootcert") {
        Some("system") => Some(platform_roots()?),
        Some(path) => Some(roots_from_file(path)?),
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => Some(platform_roots()?),
        None => None,
    };
    let provider = Arc::new(aws_lc_rs::default_provider());
    let webpki = match roots {
        Some(roots) if roots_matter(mode) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsConfigError::Other { setting: "sslrootcert", problem: e.to_string() })?,
        ),
        _ => None,
    };
    let verifier = Verifier { mode, webpki, provider: provider.clone() };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Other { setting: "sslmode", problem: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match (param(&params, "sslcert"), param(&params, "sslkey")) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_error("sslcert", cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("sslkey", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsConfigError::Other { setting: "sslcert", problem: e.to_string() })?
        }
        _ => return Err(TlsConfigError::Pair("sslcert", "sslkey")),
    };
    Ok((rest, PgTls { mode, connector: MakeRustlsConnect::new(config) }))
}

/// `prefer` never verifies (as in libpq); every other mode that has roots does.
fn roots_matter(mode: SslMode) -> bool {
    matches!(mode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
}

impl PgTls {
    /// Sets tokio-postgres's own mode: whether to ask for TLS and whether to insist on it.
    pub fn apply(&self, config: &mut tokio_postgres::Config) {
        config.ssl_mode(match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
    }
}

fn file_error(setting: &'static str, path: &str, e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::File { setting, path: path.to_owned(), problem: e.to_string() }
}

fn roots_from_file(path: &str) -> Result<RootCertStore, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("sslrootcert", path, e))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(file_error("sslrootcert", path, "no usable PEM certificate in it"));
    }
    Ok(roots)
}

fn platform_roots() -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Err(TlsConfigError::Other {
            setting: "sslrootcert",
            problem: "not given, and the platform has no root certificates to verify with".into(),
        });
    }
    Ok(roots)
}

/// Verifies as the mode asks. (A refusal is reported with the mode by `db::DbError::Connect`.)
#[derive(Debug)]
struct Verifier {
    mode: SslMode,
    /// `None`: encrypt without verifying (`prefer`, `require` without `sslrootcert`).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => Ok(verified),
            // The name is checked after the chain: the chain is good, and only verify-full
            // asks for the name.
            Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.mode != SslMode::VerifyFull => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_removed_from_the_url() {
        let (rest, tls) = from_url("postgres://u@h/db?sslmode=require&application_name=a").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u@h/db?application_name=a", SslMode::Require));
        assert_eq!(from_url("postgres://u@h/db").unwrap().1.mode, SslMode::Prefer);
        let bad = from_url("postgres://u:hunter2@h/db?sslmode=verify_full").err().unwrap().to_string();
        assert!(bad.starts_with("sslmode: expected"), "{bad}");
        assert!(!bad.contains("hunter2"), "{bad}");
        let missing = from_url("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(missing.starts_with("sslrootcert: cannot use \"/nonexistent/ca.pem\""), "{missing}");
        let half = from_url("postgres://h/db?sslmode=require&sslcert=/tmp/c.pem").err().unwrap();
        assert_eq!(half.to_string(), "sslcert and sslkey must be given together");
    }
}
