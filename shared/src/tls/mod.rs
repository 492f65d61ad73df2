//! TLS to the two databases, configured from their URLs the way their own clients are:
//! libpq's `sslmode`, `sslrootcert`, `sslcert`, `sslkey` for Postgres ([`postgres`]), the MySQL
//! client's `ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key` for the source ([`mysql`]). Both use
//! rustls with the aws-lc-rs provider (the one object_store already brings).

pub mod mysql;
pub mod postgres;

/// A TLS setting in a database URL that cannot be used. Names the setting, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A value the setting does not take.
    #[error("{setting}: expected {expected}, got {value:?}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What it takes.
        expected: &'static str,
        /// What it got.
        value: String,
    },
    /// A certificate or key file that cannot be used.
    #[error("{setting}: cannot use {path:?}: {problem}")]
    File {
        /// The setting.
        setting: &'static str,
        /// The file it names.
        path: String,
        /// Why it cannot be used.
        problem: String,
    },
    /// One of two settings that go together (a client certificate and its key).
    #[error("{0} and {1} must be given together")]
    Pair(&'static str, &'static str),
    /// Anything else wrong with a setting.
    #[error("{setting}: {problem}")]
    Other {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Removes the query parameters named in `names` from `url` and returns the rest of the URL
/// with them, percent-decoded, in the order given.
pub(crate) fn take_query_params(url: &str, names: &[&str]) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if names.contains(&key) {
            taken.push((key.to_owned(), percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (rest, taken)
}

/// The last value given for `name`, as libpq and the MySQL client take it.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_named_parameters_and_keeps_the_rest() {
        let (rest, taken) = take_query_params(
            "postgres://u:p@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(rest, "postgres://u:p@h/db?application_name=x");
        assert_eq!(
            taken,
            [("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/tmp/ca.pem".into())]
        );
        let (rest, taken) = take_query_params("postgres://h/db?sslmode=require", &["sslmode"]);
        assert_eq!((rest.as_str(), param(&taken, "sslmode")), ("postgres://h/db", Some("require")));
        assert_eq!(take_query_params("mysql://h/db", &["ssl-mode"]).0, "mysql://h/db");
    }
}
