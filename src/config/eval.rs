//! The one impure step of configuration: bash evaluates a fragment and we import its variables.
use std::collections::BTreeMap;
use std::path::Path;

use super::Env;
use crate::error::ConfigError;

/// What sourcing a fragment did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sourced {
    /// Variables the fragment set or changed (including ones set to the value they already had
    /// in `env` are NOT reported), name → value.
    pub changed: BTreeMap<String, String>,
    /// Lines the fragment wrote to stdout/stderr, to show the user as warnings.
    pub warnings: Vec<String>,
}

/// Sources `path` in a clean bash (no rc files, environment exactly `env`, `set -a`).
pub fn source_fragment(path: &Path, _env: &Env) -> Result<Sourced, ConfigError> {
    Err(ConfigError::new(format!(
        "{}: bash evaluation not written yet",
        path.display()
    )))
}
