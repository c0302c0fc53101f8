//! Errors the command line maps to exit codes: 2 for bad input, 1 for a failed build.

use std::fmt;

/// Bad input: one or more complete one-line messages (what, which value, where, how to fix).
/// Exit code 2; nothing on disk has been changed when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    pub fn new(line: impl Into<String>) -> Self {
        ConfigError(vec![line.into()])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}
