//! Configuration: bash-style (or TOML) files → assignments → resolved, validated `Config`.
//!
//! Loading (`load`) follows the original's `source` order: `-c` files in order, each seeing the
//! variables of the files before it and the process environment; then `--set` overrides.
//! Resolution (`resolve`) applies defaults and validation in `build_vars` order and is pure.

pub mod eval;
pub mod parse;
pub mod resolve;
pub mod toml_file;
pub mod vars;

pub use resolve::{Arch, Compression, Config, HostFacts, Var};

#[cfg(test)]
mod parity_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ConfigError;

/// The environment a config is evaluated against: variable name → value.
pub type Env = BTreeMap<String, String>;

/// Where a variable's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A config file; `line` is known for files the static parser read.
    File { path: PathBuf, line: Option<usize> },
    /// `--set VAR=VALUE`.
    CommandLine,
    /// The environment pigen was started with.
    Environment,
    /// pigen's built-in default.
    Default,
    /// Computed from other variables (e.g. `USE_RASPI_SOURCE`).
    Derived,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{}", path.display(), line),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::CommandLine => f.write_str("--set"),
            Origin::Environment => f.write_str("environment"),
            Origin::Default => f.write_str("default"),
            Origin::Derived => f.write_str("derived"),
        }
    }
}

/// One assignment made by a config file or by `--set`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: String,
    pub origin: Origin,
}

/// What the config files and `--set` said, before defaults: the last assignment of each name
/// wins, in first-assignment order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub assignments: Vec<Assignment>,
    /// Non-fatal findings (bash's stderr, readonly reassignments), one line each.
    pub warnings: Vec<String>,
}

impl Loaded {
    pub fn get(&self, name: &str) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.name == name)
    }

    fn set(&mut self, assignment: Assignment) {
        match self
            .assignments
            .iter_mut()
            .find(|a| a.name == assignment.name)
        {
            Some(existing) => *existing = assignment,
            None => self.assignments.push(assignment),
        }
    }

    /// The environment a later file sees: the process environment overlaid with what the
    /// files before it set.
    fn overlay(&self, env: &Env) -> Env {
        let mut merged = env.clone();
        for a in &self.assignments {
            merged.insert(a.name.clone(), a.value.clone());
        }
        merged
    }
}

/// Reads every `-c` file in order, then applies `--set NAME=VALUE` overrides.
pub fn load(files: &[PathBuf], sets: &[String], env: &Env) -> Result<Loaded, ConfigError> {
    let mut loaded = Loaded::default();
    for path in files {
        let file_assignments = load_file(path, &loaded.overlay(env), &mut loaded.warnings)?;
        for a in file_assignments {
            loaded.set(a);
        }
    }
    for set in sets {
        let (name, value) = set.split_once('=').ok_or_else(|| {
            ConfigError::new(format!(
                "--set {set:?}: expected NAME=VALUE, e.g. --set TARGET_ARCH=amd64"
            ))
        })?;
        if !is_valid_name(name) {
            return Err(ConfigError::new(format!(
                "--set {set:?}: {name:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
            )));
        }
        loaded.set(Assignment {
            name: name.to_string(),
            value: value.to_string(),
            origin: Origin::CommandLine,
        });
    }
    Ok(loaded)
}

fn load_file(
    path: &Path,
    env: &Env,
    warnings: &mut Vec<String>,
) -> Result<Vec<Assignment>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(format!(
            "config file {}: cannot read it ({e}); check the path given to -c",
            path.display()
        ))
    })?;
    if path.extension().is_some_and(|ext| ext == "toml") {
        return toml_file::parse(&text, path);
    }
    let lookup = |name: &str| env.get(name).cloned();
    match parse::parse(&text, path, &lookup)? {
        parse::Parsed::Static(file) => {
            warnings.extend(file.warnings);
            Ok(file.assignments)
        }
        parse::Parsed::NeedsBash { .. } => {
            let sourced = eval::source_fragment(path, env)?;
            warnings.extend(sourced.warnings);
            Ok(sourced
                .changed
                .into_iter()
                .map(|(name, value)| Assignment {
                    name,
                    value,
                    origin: Origin::File {
                        path: path.to_path_buf(),
                        line: None,
                    },
                })
                .collect())
        }
    }
}

/// Shell variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}
