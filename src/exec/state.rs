//! `WORK_DIR/pigen-state.toml`: which stages are finished, for `pigen build --continue`.
//!
//! A stage is `building` from the moment its layer is created until its last step and unmount
//! succeeded, then `done`. `--continue` reuses `done` stages (in order, up to the first one
//! that is not) and rebuilds the rest; a half-built layer is never reused. The effective
//! configuration is recorded so that continuing with a different one is refused instead of
//! silently mixing two builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;

pub const FILE_NAME: &str = "pigen-state.toml";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Building,
    Done,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildState {
    pub version: u32,
    /// The build's `IMG_DATE`, reused by `--continue` so file names do not change overnight.
    pub img_date: String,
    pub stages: BTreeMap<String, StageStatus>,
    /// Effective variables (secrets as hashes).
    pub config: BTreeMap<String, String>,
}

/// Variables whose change does not make a finished stage stale.
const VOLATILE: &[&str] = &[
    "GIT_HASH",
    "PI_GEN_VERSION",
    "IMG_DATE",
    "IMG_FILENAME",
    "ARCHIVE_FILENAME",
    "ZIP_FILENAME",
];

impl BuildState {
    pub fn path(work_dir: &Path) -> PathBuf {
        work_dir.join(FILE_NAME)
    }

    pub fn new(config: &Config) -> BuildState {
        BuildState {
            version: 1,
            img_date: config.get("IMG_DATE").to_string(),
            stages: BTreeMap::new(),
            config: snapshot(config),
        }
    }

    /// The recorded state, if there is one.
    pub fn load(work_dir: &Path) -> anyhow::Result<Option<BuildState>> {
        let path = Self::path(work_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written to a temporary file and renamed, so a crash leaves the old or the new state.
    pub fn save(&self, work_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(work_dir);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn is_done(&self, stage: &str) -> bool {
        self.stages.get(stage) == Some(&StageStatus::Done)
    }

    /// What differs between the recorded configuration and `config`, one phrase per variable.
    pub fn config_changes(&self, config: &Config) -> Vec<String> {
        let now = snapshot(config);
        let mut changes = Vec::new();
        for (name, old) in &self.config {
            match now.get(name) {
                Some(new) if new != old => changes.push(format!(
                    "{name}: {} → {}",
                    shown(name, old),
                    shown(name, new)
                )),
                None => changes.push(format!("{name}: no longer set")),
                _ => {}
            }
        }
        for (name, new) in &now {
            if !self.config.contains_key(name) {
                changes.push(format!("{name}: newly set to {}", shown(name, new)));
            }
        }
        changes
    }
}

fn is_secret(name: &str) -> bool {
    crate::config::vars::lookup(name).is_some_and(|d| d.kind == crate::config::vars::Kind::Secret)
}

fn shown(name: &str, value: &str) -> String {
    if is_secret(name) {
        "(secret)".to_string()
    } else {
        format!("{value:?}")
    }
}

fn snapshot(config: &Config) -> BTreeMap<String, String> {
    config
        .vars
        .iter()
        .filter(|v| !VOLATILE.contains(&v.name.as_str()))
        .map(|v| {
            let value = if is_secret(&v.name) {
                format!("fnv1a:{:016x}", fnv1a(v.value.as_bytes()))
            } else {
                v.value.clone()
            };
            (v.name.clone(), value)
        })
        .collect()
}

/// A stable hash (the std hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
