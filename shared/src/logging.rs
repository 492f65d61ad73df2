//! Log set-up shared by both binaries: `RUST_LOG` filters (default `info`), `LOG_FORMAT`
//! chooses text or JSON lines, and everything goes to stderr. Spans carry the context: the API
//! wraps each request in one with its `request_id`, the worker each job attempt in one with the
//! job id, kind, attempt and export id, so every line inside names them.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogFormat, parse_var};

/// What `RUST_LOG` must be, in the start-up error.
const FILTER_EXPECTED: &str = "a tracing filter, e.g. info or warn,statement_worker=debug";

/// Installs the global subscriber. Fails (naming the variable) on an unknown `LOG_FORMAT` or a
/// malformed `RUST_LOG`, like every other malformed setting; unset, the filter is `info`.
pub fn init() -> Result<(), ConfigError> {
    let format = LogFormat::from_env()?;
    let filter = parse_var("RUST_LOG", FILTER_EXPECTED, EnvFilter::new("info"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
