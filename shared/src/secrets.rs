//! Secrets from the environment or from files: `DATABASE_URL` or `DATABASE_URL_FILE`, and so on
//! (the Docker and Kubernetes secrets convention: the orchestrator mounts the secret as a file
//! and names it in `<VAR>_FILE`). The file's trailing line breaks are trimmed; setting both
//! forms stops start-up. An empty variable counts as unset, as everywhere in the configuration.

use std::{env, path::Path};

use secrecy::SecretString;

/// A secret setting that cannot be read. Names the variables and the file, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable and its `_FILE` form are both set.
    #[error("{var} and {file_var} are both set: set one of them")]
    Both {
        /// The variable.
        var: &'static str,
        /// Its `_FILE` form.
        file_var: &'static str,
    },
    /// The file cannot be read.
    #[error("{file_var}: cannot read {path:?}: {problem}")]
    Unreadable {
        /// The `_FILE` variable.
        file_var: &'static str,
        /// The file it names.
        path: String,
        /// Why it cannot be read.
        problem: String,
    },
    /// The file holds nothing (line breaks aside).
    #[error("{file_var}: {path:?} is empty")]
    Empty {
        /// The `_FILE` variable.
        file_var: &'static str,
        /// The file it names.
        path: String,
    },
}

/// The secret in `var`, or in the file named by `file_var`; `None` when neither is set.
pub fn read(var: &'static str, file_var: &'static str) -> Result<Option<SecretString>, SecretError> {
    let value = env::var(var).ok().filter(|v| !v.is_empty());
    let file = env::var(file_var).ok().filter(|v| !v.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(SecretError::Both { var, file_var }),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => from_file(file_var, Path::new(&path)).map(Some),
        (None, None) => Ok(None),
    }
}

fn from_file(file_var: &'static str, path: &Path) -> Result<SecretString, SecretError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SecretError::Unreadable {
        file_var,
        path: shown.clone(),
        problem: e.to_string(),
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::Empty { file_var, path: shown });
    }
    Ok(SecretString::from(value.to_owned()))
}
