//! Where a stage's root filesystem lives (SEAM: the one place with two real implementations).
//!
//! `qcow2` (default): `WORK_DIR/image-<stage>.qcow2`, the first stage a fresh image holding an
//! ext4 filesystem (no partition table: partitions are made at export), each later stage a
//! qcow2 overlay backed by its parent's image (relative backing path). Attached as a block
//! device by qemu-nbd (`/dev/nbd*`) or by qemu-storage-daemon's FUSE export + a loop device,
//! and mounted at `ROOTFS_DIR` with discards reaching the image.
//! `dir`: `WORK_DIR/<stage>/rootfs` directories, a child made by copying its parent with hard
//! links, ACLs, xattrs and file capabilities preserved.
//!
//! Everything here is expected to run inside the build's private mount + PID namespace (see
//! `exec::namespace`), so a crash can leak nothing; `Drop` still releases what it can.

use std::path::{Path, PathBuf};

/// A stage root that is ready to be written: mounted (qcow2) or created (dir) at `rootfs`.
/// Dropping it releases everything (unmount everything below `rootfs`, detach, stop helpers)
/// on a best-effort basis; `finish` does the same but reports failures.
pub trait AttachedRoot {
    fn rootfs(&self) -> &Path;
    /// Bytes used and total of the root filesystem (for "layer full" messages).
    fn usage(&self) -> anyhow::Result<(u64, u64)>;
    /// Trim, unmount everything below `rootfs` (chroot mounts included), detach.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

pub trait StageStore {
    /// Prepares the writable root of `stage` at `rootfs`: an empty filesystem when `parent` is
    /// `None`, else a copy-on-write child (qcow2) or full copy (dir) of `parent`'s finished
    /// root. Whatever `stage` had before (a half-built layer) is discarded first.
    fn create(
        &self,
        stage: &str,
        parent: Option<&str>,
        rootfs: &Path,
    ) -> anyhow::Result<Box<dyn AttachedRoot>>;
    /// Whether `stage` has a root to build on (its image or directory exists).
    fn exists(&self, stage: &str) -> bool;
    /// The file or directory holding `stage`'s root, for messages.
    fn location(&self, stage: &str) -> PathBuf;
}
