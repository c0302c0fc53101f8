//! `-c build.toml`: a flat table of the same variable names as the bash configs.
use std::path::Path;

use super::Assignment;
use crate::error::ConfigError;

pub fn parse(_text: &str, path: &Path) -> Result<Vec<Assignment>, ConfigError> {
    Err(ConfigError::new(format!(
        "{}: TOML configs not written yet",
        path.display()
    )))
}
