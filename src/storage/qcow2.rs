//! The qcow2 chain: `WORK_DIR/image-<stage>.qcow2`, the first stage a fresh image holding an
//! ext4 filesystem (whole image, no partition table), each later stage an overlay backed by its
//! parent's image by a relative name (WORK_DIR can be moved).
//!
//! Image options: 128 KiB clusters with extended L2 entries (`extended_l2=on`), so each cluster
//! has 32 subclusters of 4 KiB, one ext4 block. That matters twice: a child layer allocates
//! only the 4 KiB blocks its stage writes instead of copying whole clusters up from its parent,
//! and a discard of any ext4 block range is aligned to subclusters. (With plain 64 KiB clusters
//! qemu-storage-daemon's FUSE export answers an unaligned hole punch with EOPNOTSUPP, and the
//! loop driver then switches discard off for the device: the first fstrim trims nothing and
//! every later one fails with "the discard operation is not supported".)
//!
//! The first half of this file is pure (names, argv builders, `qemu-img info` parsing); the
//! second is the store that runs them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::fuse::FuseExport;
use super::loopdev::LoopDevice;
use super::nbd::NbdDevice;
use super::{mounts, Attach, AttachedRoot, Backend, StageStore, Usage};
use crate::exec::cmd::LogSink;
use crate::exec::Cmd;

/// `qemu-img create -o` options of every stage image (see the module documentation).
pub const IMAGE_OPTIONS: &str = "cluster_size=128k,extended_l2=on";
/// The label of a stage image's root filesystem.
pub const FS_LABEL: &str = "ROOTFS";

/// `image-<stage>.qcow2`, in WORK_DIR.
pub fn image_name(stage: &str) -> String {
    format!("image-{stage}.qcow2")
}

/// `image-<stage>.fuse`, in WORK_DIR: the regular file the FUSE export is mounted on.
pub fn export_file_name(stage: &str) -> String {
    format!("image-{stage}.fuse")
}

/// `qemu-img` arguments creating `image` of `size` bytes, as an overlay of `backing` (a path
/// relative to `image`'s directory, stored as given) when there is one.
pub fn create_argv(image: &Path, backing: Option<&str>, size: u64) -> Vec<OsString> {
    let mut argv: Vec<OsString> = ["create", "-q", "-f", "qcow2", "-o", IMAGE_OPTIONS]
        .map(OsString::from)
        .to_vec();
    if let Some(backing) = backing {
        argv.extend(["-b", backing, "-F", "qcow2"].map(OsString::from));
    }
    argv.push(image.as_os_str().to_owned());
    argv.push(size.to_string().into());
    argv
}

pub fn info_argv(image: &Path) -> Vec<OsString> {
    vec![
        "info".into(),
        "--output=json".into(),
        image.as_os_str().to_owned(),
    ]
}

/// `mkfs.ext4` arguments for a stage's root filesystem. Features are mke2fs's defaults: this
/// filesystem never leaves the build (the export writes a new one from the tree), so what the
/// original chose for boot-time compatibility (no 64bit, no metadata_csum) does not apply
/// here. 4 KiB blocks always, also for small test images, to keep discards subcluster-aligned.
/// No blocks reserved for root (`-m 0`): nothing in a build needs that reserve, and without
/// CAP_SYS_RESOURCE (containers, this test machine) even root could not use it: the layer
/// would be "full" at 95%.
pub fn mkfs_argv(target: &Path) -> Vec<OsString> {
    let mut argv: Vec<OsString> = ["-q", "-F", "-b", "4096", "-m", "0", "-L", FS_LABEL]
        .map(OsString::from)
        .to_vec();
    argv.push(target.as_os_str().to_owned());
    argv
}

/// `mount` arguments for the stage filesystem on `device` (`/dev/loopN` bound to the FUSE
/// export, or `/dev/nbdN`).
pub fn mount_argv(device: &Path, rootfs: &Path) -> Vec<OsString> {
    vec![
        "-t".into(),
        "ext4".into(),
        device.as_os_str().to_owned(),
        rootfs.as_os_str().to_owned(),
    ]
}

/// What `qemu-img info --output=json` says about an image (the fields pigen uses).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    pub filename: String,
    pub format: String,
    pub virtual_size: u64,
    /// Bytes the image file occupies on disk.
    #[serde(default)]
    pub actual_size: u64,
    #[serde(default)]
    pub cluster_size: Option<u64>,
    /// The backing file name as stored in the image (relative for pigen's overlays).
    #[serde(default)]
    pub backing_filename: Option<String>,
    #[serde(default)]
    pub full_backing_filename: Option<String>,
    #[serde(default)]
    pub dirty_flag: bool,
}

pub fn parse_info(json: &str) -> anyhow::Result<ImageInfo> {
    serde_json::from_str(json).context("parsing `qemu-img info --output=json`")
}

pub fn info(image: &Path, log: &LogSink) -> anyhow::Result<ImageInfo> {
    let out = Cmd::new("qemu-img").args(info_argv(image)).output(log)?;
    parse_info(&out.stdout)
}

/// The size of a child layer: its parent's, or `BASE_QCOW2_SIZE` when that was raised since
/// (the child's filesystem is then grown to fill it).
pub fn child_size(parent_size: u64, base_size: u64) -> u64 {
    parent_size.max(base_size.div_ceil(512) * 512)
}

// ---------------------------------------------------------------------------------------------

/// The qcow2 chain in WORK_DIR, attached by `attach`.
pub struct Qcow2Store {
    work_dir: PathBuf,
    base_size: u64,
    attach: Attach,
    log: LogSink,
}

impl Qcow2Store {
    pub fn new(work_dir: &Path, base_size: u64, attach: Attach, log: &LogSink) -> Qcow2Store {
        Qcow2Store {
            work_dir: work_dir.to_path_buf(),
            base_size,
            attach,
            log: log.clone(),
        }
    }

    pub fn image(&self, stage: &str) -> PathBuf {
        self.work_dir.join(image_name(stage))
    }

    fn export_file(&self, stage: &str) -> PathBuf {
        self.work_dir.join(export_file_name(stage))
    }

    /// Attaches `stage`'s image and returns the root (not mounted yet); from here on its Drop
    /// releases what was attached.
    fn attach(&self, stage: &str, rootfs: &Path) -> anyhow::Result<Qcow2Root> {
        let image = self.image(stage);
        let (attachment, loop_device) = match self.attach {
            Attach::Fuse => {
                let mut export = FuseExport::start(&image, &self.export_file(stage), &self.log)?;
                let loop_device = export.attach_loop()?;
                (Attachment::Fuse(export), Some(loop_device))
            }
            Attach::Nbd => (
                Attachment::Nbd(NbdDevice::connect(&image, &self.log)?),
                None,
            ),
        };
        let device = match &loop_device {
            Some(l) => l.path().to_path_buf(),
            None => attachment.nbd_device().expect("nbd").to_path_buf(),
        };
        Ok(Qcow2Root {
            stage: stage.to_string(),
            rootfs: rootfs.to_path_buf(),
            image,
            attachment: Some(attachment),
            loop_device,
            device,
            mounted: false,
            base_size: self.base_size,
            log: self.log.clone(),
        })
    }

    fn prepare_rootfs(&self, stage: &str, rootfs: &Path) -> anyhow::Result<()> {
        mounts::ensure_nothing_mounted(rootfs, &format!("set up {stage}'s root at"))?;
        // A plain directory left from an earlier STAGE_STORE=dir build would be hidden by the
        // mount; it belongs to the stage being discarded.
        mounts::remove_all(rootfs)?;
        std::fs::create_dir_all(rootfs).with_context(|| format!("creating {}", rootfs.display()))
    }
}

impl StageStore for Qcow2Store {
    fn backend(&self) -> Backend {
        Backend::Qcow2(self.attach)
    }

    fn create(
        &self,
        stage: &str,
        parent: Option<&str>,
        rootfs: &Path,
    ) -> anyhow::Result<Box<dyn AttachedRoot>> {
        super::validate_stage_name(stage)?;
        let image = self.image(stage);
        // Check the parent first: a mistake there must not cost the stage's old layer.
        let (size, backing, grow) = match parent {
            None => (self.base_size, None, false),
            Some(parent) => {
                super::validate_stage_name(parent)?;
                let parent_image = self.image(parent);
                if !parent_image.is_file() {
                    bail!(
                        "{stage} builds on {parent}, whose image {} does not exist: build {parent} first",
                        parent_image.display()
                    );
                }
                let parent_info = info(&parent_image, &self.log)?;
                let size = child_size(parent_info.virtual_size, self.base_size);
                (
                    size,
                    Some(image_name(parent)),
                    size > parent_info.virtual_size,
                )
            }
        };
        self.prepare_rootfs(stage, rootfs)?;
        self.discard(stage)?;
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        Cmd::new("qemu-img")
            .args(create_argv(&image, backing.as_deref(), size))
            .output(&self.log)?;
        let mut root = self.attach(stage, rootfs)?;
        if parent.is_none() {
            root.make_filesystem()?;
        }
        if grow {
            root.grow()?;
        }
        root.mount()?;
        Ok(Box::new(root))
    }

    fn resume(&self, stage: &str, rootfs: &Path) -> anyhow::Result<Box<dyn AttachedRoot>> {
        super::validate_stage_name(stage)?;
        let image = self.image(stage);
        if !image.is_file() {
            bail!(
                "cannot continue {stage}: its image {} does not exist",
                image.display()
            );
        }
        mounts::ensure_nothing_mounted(rootfs, &format!("set up {stage}'s root at"))?;
        std::fs::create_dir_all(rootfs)
            .with_context(|| format!("creating {}", rootfs.display()))?;
        let mut root = self.attach(stage, rootfs)?;
        root.mount()?;
        Ok(Box::new(root))
    }

    fn exists(&self, stage: &str) -> bool {
        self.image(stage).is_file()
    }

    fn location(&self, stage: &str) -> PathBuf {
        self.image(stage)
    }

    fn discard(&self, stage: &str) -> anyhow::Result<()> {
        super::validate_stage_name(stage)?;
        mounts::remove_all(&self.export_file(stage))?;
        mounts::remove_all(&self.image(stage))
    }
}

enum Attachment {
    Fuse(FuseExport),
    Nbd(NbdDevice),
}

impl Attachment {
    fn nbd_device(&self) -> Option<&Path> {
        match self {
            Attachment::Fuse(_) => None,
            Attachment::Nbd(nbd) => Some(nbd.device()),
        }
    }

    fn stop(self) -> anyhow::Result<()> {
        match self {
            Attachment::Fuse(export) => export.stop(),
            Attachment::Nbd(nbd) => nbd.stop(),
        }
    }
}

/// A stage image attached and mounted at its rootfs.
pub struct Qcow2Root {
    stage: String,
    rootfs: PathBuf,
    image: PathBuf,
    attachment: Option<Attachment>,
    /// Our handle on the loop device bound to the FUSE export, until the mount holds it.
    loop_device: Option<LoopDevice>,
    /// The block device holding the filesystem (`/dev/loopN` or `/dev/nbdN`).
    device: PathBuf,
    mounted: bool,
    base_size: u64,
    log: LogSink,
}

impl Qcow2Root {
    fn make_filesystem(&mut self) -> anyhow::Result<()> {
        Cmd::new("mkfs.ext4")
            .args(mkfs_argv(&self.device))
            .output(&self.log)?;
        Ok(())
    }

    fn mount(&mut self) -> anyhow::Result<()> {
        Cmd::new("mount")
            .args(mount_argv(&self.device, &self.rootfs))
            .output(&self.log)?;
        self.mounted = true;
        // The mount is now the loop device's user: unmounting it detaches the device.
        if let Some(mut loop_device) = self.loop_device.take() {
            loop_device.release();
        }
        Ok(())
    }

    /// Grows the filesystem to the (larger) image. Offline, before mounting: growing online
    /// needs CAP_SYS_RESOURCE, which containers often drop; resize2fs wants a fresh check
    /// first (its exit code 1 means it fixed something, e.g. a counter).
    fn grow(&mut self) -> anyhow::Result<()> {
        Cmd::new("e2fsck")
            .args(["-f", "-p"])
            .arg(&self.device)
            .ok_codes(&[0, 1])
            .output(&self.log)?;
        Cmd::new("resize2fs").arg(&self.device).output(&self.log)?;
        Ok(())
    }

    /// The block device under the filesystem.
    pub fn device(&self) -> &Path {
        &self.device
    }

    fn trim(&self) {
        // Blocks freed by the stage return to ext4's free lists only when the journal commits
        // them: sync first, or fstrim skips them.
        if let Ok(dir) = std::fs::File::open(&self.rootfs) {
            use std::os::fd::AsRawFd;
            let _ = nix::unistd::syncfs(dir.as_raw_fd());
        }
        if let Err(e) = Cmd::new("fstrim").arg(&self.rootfs).output(&self.log) {
            tracing::warn!(
                "{e}; {} keeps the space its stage freed",
                self.image.display()
            );
        }
    }

    fn release(&mut self, lazy: bool) -> anyhow::Result<()> {
        let Some(attachment) = self.attachment.take() else {
            return Ok(());
        };
        if let Err(e) = mounts::unmount_all(&self.rootfs, &self.log, lazy) {
            // Keep the image attached: detaching under a mounted filesystem loses writes.
            self.attachment = Some(attachment);
            return Err(e);
        }
        self.mounted = false;
        self.loop_device = None;
        attachment.stop()
    }
}

impl AttachedRoot for Qcow2Root {
    fn stage(&self) -> &str {
        &self.stage
    }

    fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(&self.rootfs)
    }

    fn full_note(&self, step_output: &str) -> Option<String> {
        let usage = self.usage().ok()?;
        (usage.nearly_full() || super::mentions_no_space(step_output))
            .then(|| super::qcow2_full_message(&self.stage, &usage, &self.image, self.base_size))
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        if self.mounted {
            self.trim();
        }
        self.release(false)
            .with_context(|| format!("finishing {}'s layer", self.stage))
    }
}

impl Drop for Qcow2Root {
    fn drop(&mut self) {
        if let Err(e) = self.release(true) {
            tracing::warn!("releasing {}'s layer: {e:#}", self.stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(image_name("stage2"), "image-stage2.qcow2");
        assert_eq!(export_file_name("stage2"), "image-stage2.fuse");
    }

    #[test]
    fn create_argv_for_base_and_overlay() {
        assert_eq!(
            create_argv(Path::new("/w/image-stage0.qcow2"), None, 15_938_355_200),
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=128k,extended_l2=on",
                "/w/image-stage0.qcow2",
                "15938355200"
            ]
        );
        assert_eq!(
            create_argv(
                Path::new("/w/image-stage1.qcow2"),
                Some("image-stage0.qcow2"),
                15_938_355_200
            ),
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=128k,extended_l2=on",
                "-b",
                "image-stage0.qcow2",
                "-F",
                "qcow2",
                "/w/image-stage1.qcow2",
                "15938355200"
            ]
        );
        assert_eq!(
            info_argv(Path::new("/w/i.qcow2")),
            ["info", "--output=json", "/w/i.qcow2"]
        );
    }

    #[test]
    fn mkfs_and_mount_argv() {
        assert_eq!(
            mkfs_argv(Path::new("/dev/loop3")),
            [
                "-q",
                "-F",
                "-b",
                "4096",
                "-m",
                "0",
                "-L",
                "ROOTFS",
                "/dev/loop3"
            ]
        );
        assert_eq!(
            mount_argv(Path::new("/dev/loop3"), Path::new("/w/stage0/rootfs")),
            ["-t", "ext4", "/dev/loop3", "/w/stage0/rootfs"]
        );
    }

    #[test]
    fn parses_qemu_img_info() {
        // As printed by qemu-img 10.0 for an overlay.
        let json = r#"{
    "children": [
        {
            "name": "file",
            "info": {
                "children": [],
                "virtual-size": 54263808,
                "filename": "/w/image-stage1.qcow2",
                "format": "file",
                "actual-size": 1056768,
                "format-specific": {"type": "file", "data": {}},
                "dirty-flag": false
            }
        }
    ],
    "backing-filename-format": "qcow2",
    "virtual-size": 4294967296,
    "filename": "/w/image-stage1.qcow2",
    "cluster-size": 131072,
    "format": "qcow2",
    "actual-size": 1056768,
    "format-specific": {
        "type": "qcow2",
        "data": {"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false,
                 "refcount-bits": 16, "corrupt": false, "extended-l2": true}
    },
    "full-backing-filename": "/w/image-stage0.qcow2",
    "backing-filename": "image-stage0.qcow2",
    "dirty-flag": false
}"#;
        assert_eq!(
            parse_info(json).unwrap(),
            ImageInfo {
                filename: "/w/image-stage1.qcow2".into(),
                format: "qcow2".into(),
                virtual_size: 4_294_967_296,
                actual_size: 1_056_768,
                cluster_size: Some(131_072),
                backing_filename: Some("image-stage0.qcow2".into()),
                full_backing_filename: Some("/w/image-stage0.qcow2".into()),
                dirty_flag: false,
            }
        );
        let base = r#"{"virtual-size": 1024, "filename": "b.qcow2", "format": "qcow2"}"#;
        let info = parse_info(base).unwrap();
        assert_eq!(info.backing_filename, None);
        assert_eq!(info.actual_size, 0);
        assert!(parse_info("qemu-img: Could not open")
            .unwrap_err()
            .to_string()
            .contains("qemu-img info"));
    }

    #[test]
    fn child_layers_keep_or_grow_their_parents_size() {
        assert_eq!(child_size(1 << 30, 1 << 29), 1 << 30);
        assert_eq!(child_size(1 << 30, 2 << 30), 2 << 30);
        assert_eq!(child_size(1024, 1025), 1536); // qemu-img rounds to sectors
    }
}
