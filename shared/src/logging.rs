//! Log set-up shared by both binaries: `RUST_LOG` filters (default `info`), `LOG_FORMAT`
//! chooses text or JSON lines, and everything goes to stderr. Spans carry the context: the API
//! wraps each request in one with its `request_id`, the worker each job attempt in one with the
//! job id, kind, attempt and export id, so every line inside names them.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogFormat};

/// Installs the global subscriber. Fails (naming the variable) on an unknown `LOG_FORMAT`.
pub fn init() -> Result<(), ConfigError> {
    let format = LogFormat::from_env()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
