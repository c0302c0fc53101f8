//! The environment stage scripts run with: every config variable, the per-stage variables of
//! the original (`STAGE`, `ROOTFS_DIR`, …), and the bash functions of `shell/functions.bash`
//! exported as `BASH_FUNC_<name>%%` entries (what `export -f` produces).

use std::path::PathBuf;

/// The per-stage variables (`STAGE`, `STAGE_DIR`, …) as the original sets them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageVars {
    pub stage: String,
    pub stage_dir: PathBuf,
    pub stage_work_dir: PathBuf,
    pub rootfs_dir: PathBuf,
    pub prev_stage: Option<String>,
    pub prev_stage_dir: Option<PathBuf>,
    pub prev_rootfs_dir: Option<PathBuf>,
    /// During an export: the exported stage's dir and rootfs.
    pub export_dir: Option<PathBuf>,
    pub export_rootfs_dir: Option<PathBuf>,
    /// Set by `EXPORT_IMAGE` during an export.
    pub img_suffix: Option<String>,
}
