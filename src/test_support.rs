//! Test helpers: `Config` values built through the real resolver, and the fixture trees.
use std::path::{Path, PathBuf};

use crate::config::resolve::{resolve, HostFacts};
use crate::config::{Assignment, Config, Env, Loaded, Origin};
use crate::error::ConfigError;

/// `tests/fixtures`: its `stages/` holds the fixture stage trees.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What `scan` hands to the export fragments besides the config: a minimal process env.
pub fn process_env() -> Env {
    Env::from([("PATH".to_string(), "/usr/bin:/bin".to_string())])
}

/// Resolves `vars` (as if given by `--set`) on top of test defaults `IMG_NAME=test`,
/// `WORK_DIR=/w`, `DEPLOY_DIR=/d`, with `base_dir` as `BASE_DIR`, today = 2026-01-01 and a
/// zoneinfo directory holding `Europe/Berlin` (the default time zone).
pub fn try_config_at(base_dir: &Path, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut assignments: Vec<Assignment> = Vec::new();
    let defaults = [
        ("IMG_NAME", "test"),
        ("WORK_DIR", "/w"),
        ("DEPLOY_DIR", "/d"),
    ];
    for (name, value) in defaults.iter().chain(vars) {
        let assignment = Assignment {
            name: name.to_string(),
            value: value.to_string(),
            origin: Origin::CommandLine,
        };
        match assignments.iter_mut().find(|a| a.name == *name) {
            Some(existing) => *existing = assignment,
            None => assignments.push(assignment),
        }
    }
    let zoneinfo = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(zoneinfo.path().join("Europe")).expect("zoneinfo");
    std::fs::write(zoneinfo.path().join("Europe/Berlin"), "").expect("zoneinfo");
    let host = HostFacts {
        cwd: base_dir.to_path_buf(),
        today_utc: "2026-01-01".into(),
        git_hash: None,
        zoneinfo_dir: zoneinfo.path().to_path_buf(),
    };
    let loaded = Loaded {
        assignments,
        warnings: vec![],
    };
    resolve(&loaded, &Env::new(), base_dir, &host)
}

pub fn config_at(base_dir: &Path, vars: &[(&str, &str)]) -> Config {
    try_config_at(base_dir, vars).unwrap_or_else(|e| panic!("config: {e}"))
}

/// A config over the fixture stage trees.
pub fn fixture_config(vars: &[(&str, &str)]) -> Config {
    config_at(&fixtures(), vars)
}
