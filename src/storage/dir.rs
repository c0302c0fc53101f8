//! `STAGE_STORE=dir`: each stage's root is the directory `WORK_DIR/<stage>/rootfs`, a child a
//! full copy of its parent by `rsync -aHAXx --numeric-ids`: hard links (-H), ACLs (-A), xattrs
//! (-X, which as root includes `security.capability`, i.e. file capabilities), devices,
//! owners by number, and never crossing into a mount (-x: a chroot mount left in the parent is
//! not copied). For hosts without qemu-img; costs a full copy per stage.
//!
//! When the caller wants the root somewhere else than the layer directory, the layer is
//! bind-mounted there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{mounts, AttachedRoot, Backend, StageStore, Usage};
use crate::exec::cmd::LogSink;
use crate::exec::Cmd;

/// `rsync` arguments copying the tree `from` into `to` (both directories; `to` is created).
pub fn copy_argv(from: &Path, to: &Path) -> Vec<OsString> {
    let mut from = from.as_os_str().to_owned();
    from.push("/");
    let mut to = to.as_os_str().to_owned();
    to.push("/");
    vec!["-aHAXx".into(), "--numeric-ids".into(), from, to]
}

pub struct DirStore {
    work_dir: PathBuf,
    log: LogSink,
}

impl DirStore {
    pub fn new(work_dir: &Path, log: &LogSink) -> DirStore {
        DirStore {
            work_dir: work_dir.to_path_buf(),
            log: log.clone(),
        }
    }

    fn layer(&self, stage: &str) -> PathBuf {
        self.work_dir.join(stage).join("rootfs")
    }

    /// Hands out `layer` at `rootfs` (bind mount when they differ).
    fn present(&self, stage: &str, layer: PathBuf, rootfs: &Path) -> anyhow::Result<DirRoot> {
        let bound = mounts::canonical(&layer)? != mounts::canonical(rootfs)?;
        if bound {
            mounts::ensure_nothing_mounted(rootfs, &format!("set up {stage}'s root at"))?;
            mounts::remove_all(rootfs)?;
            std::fs::create_dir_all(rootfs)
                .with_context(|| format!("creating {}", rootfs.display()))?;
            Cmd::new("mount")
                .arg("--bind")
                .arg(&layer)
                .arg(rootfs)
                .output(&self.log)?;
        }
        Ok(DirRoot {
            stage: stage.to_string(),
            rootfs: rootfs.to_path_buf(),
            layer,
            active: true,
            log: self.log.clone(),
        })
    }
}

impl StageStore for DirStore {
    fn backend(&self) -> Backend {
        Backend::Dir
    }

    fn create(
        &self,
        stage: &str,
        parent: Option<&str>,
        rootfs: &Path,
    ) -> anyhow::Result<Box<dyn AttachedRoot>> {
        super::validate_stage_name(stage)?;
        let layer = self.layer(stage);
        let source = match parent {
            None => None,
            Some(parent) => {
                super::validate_stage_name(parent)?;
                let source = self.layer(parent);
                if !source.is_dir() {
                    bail!(
                        "{stage} builds on {parent}, whose root {} does not exist: build {parent} first",
                        source.display()
                    );
                }
                mounts::ensure_nothing_mounted(&source, &format!("copy {parent}'s root from"))?;
                Some(source)
            }
        };
        mounts::ensure_nothing_mounted(rootfs, &format!("set up {stage}'s root at"))?;
        self.discard(stage)?;
        match source {
            None => std::fs::create_dir_all(&layer)
                .with_context(|| format!("creating {}", layer.display()))?,
            Some(source) => {
                let stage_dir = layer.parent().expect("WORK_DIR/<stage>/rootfs");
                std::fs::create_dir_all(stage_dir)
                    .with_context(|| format!("creating {}", stage_dir.display()))?;
                Cmd::new("rsync")
                    .args(copy_argv(&source, &layer))
                    .output(&self.log)?;
            }
        }
        Ok(Box::new(self.present(stage, layer, rootfs)?))
    }

    fn resume(&self, stage: &str, rootfs: &Path) -> anyhow::Result<Box<dyn AttachedRoot>> {
        super::validate_stage_name(stage)?;
        let layer = self.layer(stage);
        if !layer.is_dir() {
            bail!(
                "cannot continue {stage}: its root {} does not exist",
                layer.display()
            );
        }
        Ok(Box::new(self.present(stage, layer, rootfs)?))
    }

    fn exists(&self, stage: &str) -> bool {
        self.layer(stage).is_dir()
    }

    fn location(&self, stage: &str) -> PathBuf {
        self.layer(stage)
    }

    fn discard(&self, stage: &str) -> anyhow::Result<()> {
        super::validate_stage_name(stage)?;
        mounts::remove_all(&self.layer(stage))
    }
}

/// A stage root directory, bind-mounted at `rootfs` when that is elsewhere.
pub struct DirRoot {
    stage: String,
    rootfs: PathBuf,
    layer: PathBuf,
    active: bool,
    log: LogSink,
}

impl DirRoot {
    fn release(&mut self, lazy: bool) -> anyhow::Result<()> {
        if !self.active {
            return Ok(());
        }
        // Chroot mounts, then the bind mount when there is one.
        mounts::unmount_all(&self.rootfs, &self.log, lazy)?;
        self.active = false;
        Ok(())
    }
}

impl AttachedRoot for DirRoot {
    fn stage(&self) -> &str {
        &self.stage
    }

    fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(&self.layer)
    }

    fn full_note(&self, step_output: &str) -> Option<String> {
        let usage = self.usage().ok()?;
        (usage.nearly_full() || super::mentions_no_space(step_output))
            .then(|| super::dir_full_message(&self.stage, &usage, &self.layer))
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.release(false)
            .with_context(|| format!("finishing {}'s root", self.stage))
    }
}

impl Drop for DirRoot {
    fn drop(&mut self) {
        if let Err(e) = self.release(true) {
            tracing::warn!("releasing {}'s root: {e:#}", self.stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_argv_is_exact() {
        assert_eq!(
            copy_argv(Path::new("/w/stage1/rootfs"), Path::new("/w/stage2/rootfs")),
            [
                "-aHAXx",
                "--numeric-ids",
                "/w/stage1/rootfs/",
                "/w/stage2/rootfs/"
            ]
        );
    }
}
