//! MySQL/MariaDB TLS from `SOURCE_DATABASE_URL`, with the MySQL client's option names:
//!
//! - `ssl-mode=disabled` (the default): plain TCP.
//! - `ssl-mode=required`: TLS or no connection; the certificate is not verified unless
//!   `ssl-ca` is given, which makes it `verify_ca` (the MySQL client's rule).
//! - `ssl-mode=verify_ca`: the certificate chains to `ssl-ca` (or the built-in Mozilla roots).
//! - `ssl-mode=verify_identity`: that, and the certificate names the host connected to.
//!
//! Values are case-insensitive and `-` or `_` (`VERIFY_IDENTITY`, `verify-identity`, `require`).
//! `preferred` is refused: mysql_async cannot fall back to plain text. `ssl-cert` and `ssl-key`
//! (PEM; the key an RSA key in PKCS#1 form, all mysql_async reads) present a client certificate.

use std::{fmt, path::PathBuf};

use mysql_async::{ClientIdentity, SslOpts};

use super::{TlsConfigError, param, take_query_params};

/// The MySQL client's `--ssl-mode`, as far as mysql_async can follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text (the default).
    Disabled,
    /// TLS; the server's certificate is checked against `ssl-ca` when one is given.
    Required,
    /// TLS, with the server's certificate checked against the CA.
    VerifyCa,
    /// TLS, with the certificate checked and naming the host connected to.
    VerifyIdentity,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsConfigError> {
        Ok(match value.to_ascii_lowercase().replace('_', "-").as_str() {
            "disabled" | "disable" => Self::Disabled,
            "required" | "require" => Self::Required,
            "verify-ca" => Self::VerifyCa,
            "verify-identity" => Self::VerifyIdentity,
            _ => {
                return Err(TlsConfigError::Invalid {
                    setting: "ssl-mode",
                    expected: "disabled, required, verify_ca or verify_identity \
                               (preferred is not supported: no fallback to plain text)",
                    value: value.to_owned(),
                });
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disabled => "disabled",
            Self::Required => "required",
            Self::VerifyCa => "verify_ca",
            Self::VerifyIdentity => "verify_identity",
        })
    }
}

/// The URL's TLS settings as mysql_async options.
#[derive(Debug, Clone)]
pub struct MysqlTls {
    /// The `ssl-mode`.
    pub mode: SslMode,
    /// mysql_async's TLS options (`None`: plain text).
    pub ssl_opts: Option<SslOpts>,
}

const PARAMS: [&str; 4] = ["ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"];

/// Takes the TLS settings out of a `mysql://` URL: the rest of the URL (for
/// `Opts::from_url`, which refuses parameters it does not know) and the options.
pub fn from_url(url: &str) -> Result<(String, MysqlTls), TlsConfigError> {
    let (rest, params) = take_query_params(url, &PARAMS);
    let mode = param(&params, "ssl-mode").map(SslMode::parse).transpose()?.unwrap_or(SslMode::Disabled);
    let ca = param(&params, "ssl-ca").map(|path| readable("ssl-ca", path)).transpose()?;
    let identity = match (param(&params, "ssl-cert"), param(&params, "ssl-key")) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some(ClientIdentity::new(readable("ssl-cert", cert)?.into(), rsa_key(key)?.into()))
        }
        _ => return Err(TlsConfigError::Pair("ssl-cert", "ssl-key")),
    };
    let ssl_opts = match mode {
        SslMode::Disabled => None,
        _ => {
            let verify = mode != SslMode::Required || ca.is_some();
            let mut opts = SslOpts::default()
                .with_client_identity(identity)
                .with_danger_accept_invalid_certs(!verify)
                .with_danger_skip_domain_validation(mode != SslMode::VerifyIdentity);
            if let Some(ca) = ca {
                opts = opts.with_root_certs(vec![ca.into()]).with_disable_built_in_roots(true);
            }
            Some(opts)
        }
    };
    Ok((rest, MysqlTls { mode, ssl_opts }))
}

/// mysql_async reads the client key only as an RSA key in PKCS#1 PEM (or DER); anything else
/// (a PKCS#8 `BEGIN PRIVATE KEY`, as OpenSSL 3 writes by default) would fail at every connection
/// with "no private key found", so it stops start-up with the conversion to make.
fn rsa_key(path: &str) -> Result<PathBuf, TlsConfigError> {
    let key = readable("ssl-key", path)?;
    let bytes = std::fs::read(&key).map_err(|e| TlsConfigError::File {
        setting: "ssl-key",
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    match std::str::from_utf8(&bytes) {
        Ok(pem) if !pem.contains("-----BEGIN RSA PRIVATE KEY-----") => Err(TlsConfigError::File {
            setting: "ssl-key",
            path: path.to_owned(),
            problem: "expected an RSA key in PKCS#1 PEM (BEGIN RSA PRIVATE KEY); convert it with \
                      `openssl rsa -in KEY -traditional -out KEY.rsa`"
                .into(),
        }),
        _ => Ok(key),
    }
}

/// mysql_async reads the files when it connects; a path that cannot be read stops start-up.
fn readable(setting: &'static str, path: &str) -> Result<PathBuf, TlsConfigError> {
    std::fs::File::open(path).map(|_| PathBuf::from(path)).map_err(|e| TlsConfigError::File {
        setting,
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_removed_from_the_url() {
        let (rest, tls) = from_url("mysql://u:p@h/db?ssl-mode=VERIFY_IDENTITY&prefer_socket=false").unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode),
            ("mysql://u:p@h/db?prefer_socket=false", SslMode::VerifyIdentity)
        );
        assert!(tls.ssl_opts.is_some());
        let (_, plain) = from_url("mysql://u:p@h/db").unwrap();
        assert!(plain.mode == SslMode::Disabled && plain.ssl_opts.is_none());
        let bad = from_url("mysql://u:hunter2@h/db?ssl-mode=preferred").unwrap_err().to_string();
        assert!(bad.starts_with("ssl-mode: expected"), "{bad}");
        assert!(!bad.contains("hunter2"), "{bad}");
        let missing = from_url("mysql://h/db?ssl-mode=verify_ca&ssl-ca=/nonexistent.pem").unwrap_err();
        assert!(missing.to_string().starts_with("ssl-ca: cannot use"), "{missing}");
    }
}
