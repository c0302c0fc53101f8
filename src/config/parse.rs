//! Native parser for the bash assignment subset used by nearly all pi-gen configs.
use std::path::Path;

use super::Assignment;
use crate::error::ConfigError;

/// A file the static parser understood completely.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticFile {
    /// In file order; a name may appear more than once (the last one wins).
    pub assignments: Vec<Assignment>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Static(StaticFile),
    /// The file uses a construct outside the subset (first one found): evaluate it with bash.
    NeedsBash {
        line: usize,
        construct: String,
    },
}

/// Parses `text` (the contents of `path`). `lookup` resolves names the file itself has not
/// assigned yet (earlier files, then the process environment).
pub fn parse(
    _text: &str,
    path: &Path,
    _lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    Err(ConfigError::new(format!(
        "{}: static parser not written yet",
        path.display()
    )))
}
