//! Where a stage's root filesystem lives (SEAM: the one place with two real implementations).
//!
//! `qcow2` (default): `WORK_DIR/image-<stage>.qcow2`, the first stage a fresh image holding an
//! ext4 filesystem (no partition table: partitions are made at export), each later stage a
//! qcow2 overlay backed by its parent's image (relative backing path). Attached as a block
//! device by qemu-nbd (`/dev/nbd*`) or by qemu-storage-daemon's FUSE export + a loop device,
//! and mounted at `ROOTFS_DIR`; `finish` trims, so each layer keeps only what its stage
//! changed. See `qcow2.rs`, `fuse.rs`, `nbd.rs`.
//! `dir`: `WORK_DIR/<stage>/rootfs` directories, a child made by copying its parent with hard
//! links, ACLs, xattrs and file capabilities preserved. See `dir.rs`.
//!
//! `open` is the one place that picks the backend and the attach method.
//!
//! Everything here is expected to run inside the build's private mount + PID namespace (see
//! `exec::namespace`), so a crash can leak nothing; `Drop` still releases what it can, and
//! helpers are started with a parent-death signal. Deleting never crosses a mount point
//! (`mounts::remove_all`).

pub mod dir;
pub mod fuse;
pub mod loopdev;
pub mod mounts;
pub mod nbd;
pub mod qcow2;

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::Config;
use crate::exec::cmd::LogSink;

/// A stage root that is ready to be written: mounted (qcow2) or created (dir) at `rootfs`.
/// Dropping it releases everything (unmount everything below `rootfs`, lazily if need be,
/// detach, stop helpers) on a best-effort basis; `finish` does the same but reports failures.
pub trait AttachedRoot {
    /// The stage this root belongs to.
    fn stage(&self) -> &str;
    fn rootfs(&self) -> &Path;
    /// Space of the root filesystem (for qcow2 the stage image's filesystem, for dir the host
    /// filesystem holding the directory).
    fn usage(&self) -> anyhow::Result<Usage>;
    /// For a failed step: when the root looks full (nearly full now, or the step's output says
    /// it ran out of space), the message telling the user which stage, how full, and what to
    /// do (raise BASE_QCOW2_SIZE, or free host space for dir).
    fn full_note(&self, step_output: &str) -> Option<String>;
    /// Trim (qcow2: discards reach the image), unmount everything at and below `rootfs`
    /// (chroot mounts included), detach. A mount still busy (a process left running in the
    /// chroot) is an error; the root is then released as on drop: detached lazily, and
    /// whatever still writes there loses its writes.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

pub trait StageStore {
    fn backend(&self) -> Backend;
    /// Prepares the writable root of `stage` at `rootfs`: an empty filesystem when `parent` is
    /// `None`, else a copy-on-write child (qcow2) or full copy (dir) of `parent`'s finished
    /// root. Whatever `stage` had before (a half-built layer) is discarded first; anything
    /// mounted at or below `rootfs` is refused, never removed through.
    fn create(
        &self,
        stage: &str,
        parent: Option<&str>,
        rootfs: &Path,
    ) -> anyhow::Result<Box<dyn AttachedRoot>>;
    /// Attaches `stage`'s existing root at `rootfs` as it is, for writing (continuing a
    /// stage). No growth, no copy.
    fn resume(&self, stage: &str, rootfs: &Path) -> anyhow::Result<Box<dyn AttachedRoot>>;
    /// Whether `stage` has a root to build on (its image or directory exists).
    fn exists(&self, stage: &str) -> bool;
    /// The file or directory holding `stage`'s root, for messages.
    fn location(&self, stage: &str) -> PathBuf;
    /// Deletes `stage`'s layer (refusing when anything is mounted in it). The caller discards
    /// the layers of later stages too: a qcow2 child of a deleted or re-created image is void.
    fn discard(&self, stage: &str) -> anyhow::Result<()>;
}

/// How stage roots are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Qcow2(Attach),
    Dir,
}

/// How a qcow2 image becomes a block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// qemu-nbd on `/dev/nbdN`.
    Nbd,
    /// qemu-storage-daemon's FUSE export + a loop device.
    Fuse,
}

/// What the choice of attach method depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBlock {
    /// `/dev/nbd0` exists (nbd module loaded, device nodes present).
    pub nbd_device: bool,
    /// `/sys/module/nbd` exists (module loaded, maybe without device nodes in a container).
    pub nbd_module: bool,
}

impl HostBlock {
    pub fn probe() -> HostBlock {
        HostBlock {
            nbd_device: nbd::device_present(),
            nbd_module: Path::new("/sys/module/nbd").exists(),
        }
    }
}

/// Picks the backend from `STAGE_STORE` and `QCOW2_ATTACH`. `auto` takes nbd only when
/// `/dev/nbd0` exists: a loaded module without device nodes (a container) cannot be used,
/// while FUSE + loop works wherever /dev/fuse does.
pub fn choose(stage_store: &str, qcow2_attach: &str, host: &HostBlock) -> anyhow::Result<Backend> {
    match (stage_store, qcow2_attach) {
        ("dir", _) => Ok(Backend::Dir),
        ("qcow2" | "", "fuse") => Ok(Backend::Qcow2(Attach::Fuse)),
        ("qcow2" | "", "nbd") if host.nbd_device => Ok(Backend::Qcow2(Attach::Nbd)),
        ("qcow2" | "", "nbd") => {
            let why = if host.nbd_module {
                "the nbd module is loaded but /dev/nbd0 does not exist (in a container, pass the /dev/nbd* devices)"
            } else {
                "the nbd module is not loaded (modprobe nbd)"
            };
            bail!("QCOW2_ATTACH=nbd, but {why}; or set QCOW2_ATTACH=auto or fuse to attach images with qemu-storage-daemon and a loop device")
        }
        ("qcow2" | "", "auto" | "") if host.nbd_device => Ok(Backend::Qcow2(Attach::Nbd)),
        ("qcow2" | "", "auto" | "") => Ok(Backend::Qcow2(Attach::Fuse)),
        ("qcow2" | "", other) => {
            bail!("QCOW2_ATTACH={other:?}: must be one of auto, nbd, fuse")
        }
        (other, _) => bail!("STAGE_STORE={other:?}: must be one of qcow2, dir"),
    }
}

/// Everything a store needs, for callers without a `Config` (tests, tools).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub backend: Backend,
    pub work_dir: PathBuf,
    /// Virtual size of a first stage's image, and the least of every later one (bytes).
    pub base_size: u64,
}

/// The stage store the config asks for. Every command's output goes to `log`.
pub fn open(config: &Config, log: &LogSink) -> anyhow::Result<Box<dyn StageStore>> {
    let backend = choose(
        config.get("STAGE_STORE"),
        config.get("QCOW2_ATTACH"),
        &HostBlock::probe(),
    )?;
    Ok(open_with(
        &StoreOptions {
            backend,
            work_dir: config.work_dir.clone(),
            base_size: config.base_qcow2_size,
        },
        log,
    ))
}

pub fn open_with(options: &StoreOptions, log: &LogSink) -> Box<dyn StageStore> {
    match options.backend {
        Backend::Qcow2(attach) => Box::new(qcow2::Qcow2Store::new(
            &options.work_dir,
            options.base_size,
            attach,
            log,
        )),
        Backend::Dir => Box::new(dir::DirStore::new(&options.work_dir, log)),
    }
}

/// Stage names become file names in WORK_DIR: one plain path component.
pub fn validate_stage_name(stage: &str) -> anyhow::Result<()> {
    if stage.is_empty()
        || stage == "."
        || stage == ".."
        || stage.contains('/')
        || stage.contains('\0')
    {
        bail!("{stage:?} cannot name a stage layer: it must be a plain file name");
    }
    Ok(())
}

/// Space in a filesystem. Free is what is available to the build (`f_bavail`): blocks reserved
/// for root are usable only with CAP_SYS_RESOURCE, which a container may not grant. Stage
/// images reserve none (`mkfs -m 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
}

impl Usage {
    pub fn of(path: &Path) -> anyhow::Result<Usage> {
        let st = nix::sys::statvfs::statvfs(path)
            .map_err(|e| anyhow::anyhow!("statvfs {}: {e}", path.display()))?;
        let unit = st.fragment_size() as u64;
        let total = st.blocks() as u64 * unit;
        let free = st.blocks_available() as u64 * unit;
        Ok(Usage {
            total,
            used: total.saturating_sub(free),
        })
    }

    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used)
    }

    /// Used share, in whole percent, rounded down (so 100% means no block left).
    pub fn percent(&self) -> u64 {
        if self.total == 0 {
            return 100;
        }
        (u128::from(self.used) * 100 / u128::from(self.total)) as u64
    }

    /// Less than 2% or 16 MiB left.
    pub fn nearly_full(&self) -> bool {
        self.free() < (self.total / 50).max(16 << 20)
    }
}

/// Whether a step's output says it ran out of space (ENOSPC or apt's own check).
pub fn mentions_no_space(output: &str) -> bool {
    output.contains("No space left on device")
        || output.contains("not enough free space")
        || output.contains("don't have enough free space")
        || output.contains("ENOSPC")
}

/// Bytes as a human reads them: `512 B`, `15.0 MiB`, `14.8 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A size in BASE_QCOW2_SIZE syntax: whole GiB as `NG`, else whole MiB as `NM`, else bytes.
pub fn size_setting(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes.is_multiple_of(GIB) && bytes > 0 {
        format!("{}G", bytes / GIB)
    } else if bytes.is_multiple_of(MIB) && bytes > 0 {
        format!("{}M", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

/// A roomier BASE_QCOW2_SIZE to suggest: half as much again as `current`, in whole GiB.
pub fn suggested_size(current: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    (current + current / 2).div_ceil(GIB).max(1) * GIB
}

/// The "layer full" message for a qcow2 stage.
pub fn qcow2_full_message(stage: &str, usage: &Usage, image: &Path, base_size: u64) -> String {
    let image_size = usage.total.max(base_size);
    format!(
        "{stage}'s root filesystem is full: {} of {} used ({}%) in {}. Raise BASE_QCOW2_SIZE \
         (now {}), e.g. BASE_QCOW2_SIZE={}, and build {stage} again: its layer is then \
         re-created at the new size (earlier stages keep theirs).",
        human(usage.used),
        human(usage.total),
        usage.percent(),
        image.display(),
        size_setting(base_size),
        size_setting(suggested_size(image_size)),
    )
}

/// The "layer full" message for a dir stage: the host filesystem filled up.
pub fn dir_full_message(stage: &str, usage: &Usage, layer: &Path) -> String {
    format!(
        "{stage}'s root filesystem is full: the host filesystem holding {} has {} of {} used \
         ({}%). Free space there or point WORK_DIR at a larger disk (STAGE_STORE=dir keeps a \
         full copy per stage; STAGE_STORE=qcow2 keeps only each stage's changes).",
        layer.display(),
        human(usage.used),
        human(usage.total),
        usage.percent(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NBD: HostBlock = HostBlock {
        nbd_device: true,
        nbd_module: true,
    };
    const MODULE_ONLY: HostBlock = HostBlock {
        nbd_device: false,
        nbd_module: true,
    };
    const NO_NBD: HostBlock = HostBlock {
        nbd_device: false,
        nbd_module: false,
    };

    #[test]
    fn backend_choice_for_each_setting_and_kernel() {
        use Attach::*;
        let cases = [
            ("qcow2", "auto", NBD, Backend::Qcow2(Nbd)),
            ("qcow2", "auto", MODULE_ONLY, Backend::Qcow2(Fuse)),
            ("qcow2", "auto", NO_NBD, Backend::Qcow2(Fuse)),
            ("qcow2", "fuse", NBD, Backend::Qcow2(Fuse)),
            ("qcow2", "fuse", NO_NBD, Backend::Qcow2(Fuse)),
            ("qcow2", "nbd", NBD, Backend::Qcow2(Nbd)),
            ("dir", "nbd", NO_NBD, Backend::Dir),
            ("dir", "auto", NBD, Backend::Dir),
        ];
        for (store, attach, host, want) in cases {
            assert_eq!(
                choose(store, attach, &host).unwrap(),
                want,
                "{store} {attach} {host:?}"
            );
        }
    }

    #[test]
    fn nbd_without_the_kernel_says_what_to_do() {
        let err = choose("qcow2", "nbd", &NO_NBD).unwrap_err().to_string();
        assert_eq!(err, "QCOW2_ATTACH=nbd, but the nbd module is not loaded (modprobe nbd); or set QCOW2_ATTACH=auto or fuse to attach images with qemu-storage-daemon and a loop device");
        let err = choose("qcow2", "nbd", &MODULE_ONLY)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/dev/nbd0 does not exist"), "{err}");
        assert!(choose("zfs", "auto", &NBD).is_err());
        assert!(choose("qcow2", "iscsi", &NBD).is_err());
    }

    #[test]
    fn stage_names_are_plain_file_names() {
        validate_stage_name("stage2").unwrap();
        validate_stage_name("export-image.lite").unwrap();
        for bad in ["", ".", "..", "a/b", "/abs"] {
            assert!(validate_stage_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_arithmetic() {
        let gib = 1u64 << 30;
        let u = Usage {
            total: 15 * gib,
            used: 15 * gib - 100 * (1 << 20),
        };
        assert_eq!(u.percent(), 99);
        assert!(u.nearly_full());
        let half = Usage {
            total: 10 * gib,
            used: 5 * gib,
        };
        assert_eq!(half.percent(), 50);
        assert!(!half.nearly_full());
        // Small filesystems: 16 MiB left counts as full.
        let small = Usage {
            total: 64 << 20,
            used: 50 << 20,
        };
        assert!(small.nearly_full());
        assert_eq!(Usage { total: 0, used: 0 }.percent(), 100);
        let live = Usage::of(Path::new("/")).unwrap();
        assert!(live.total > 0 && live.used <= live.total);
    }

    #[test]
    fn sizes_for_people_and_for_the_setting() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(15_938_355_200), "14.8 GiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(size_setting(15_938_355_200), "15200M");
        assert_eq!(size_setting(20 << 30), "20G");
        assert_eq!(size_setting(1000), "1000");
        assert_eq!(suggested_size(15_938_355_200), 23 << 30);
        assert_eq!(suggested_size(64 << 20), 1 << 30);
    }

    #[test]
    fn full_messages_name_stage_fill_and_fix() {
        let usage = Usage {
            total: 15_600_000_000,
            used: 15_590_000_000,
        };
        assert_eq!(
            qcow2_full_message(
                "stage3",
                &usage,
                Path::new("/w/image-stage3.qcow2"),
                15_938_355_200
            ),
            "stage3's root filesystem is full: 14.5 GiB of 14.5 GiB used (99%) in \
             /w/image-stage3.qcow2. Raise BASE_QCOW2_SIZE (now 15200M), e.g. \
             BASE_QCOW2_SIZE=23G, and build stage3 again: its layer is then re-created at the \
             new size (earlier stages keep theirs)."
        );
        assert_eq!(
            dir_full_message("stage3", &usage, Path::new("/w/stage3/rootfs")),
            "stage3's root filesystem is full: the host filesystem holding /w/stage3/rootfs \
             has 14.5 GiB of 14.5 GiB used (99%). Free space there or point WORK_DIR at a larger \
             disk (STAGE_STORE=dir keeps a full copy per stage; STAGE_STORE=qcow2 keeps only \
             each stage's changes)."
        );
        assert!(mentions_no_space(
            "cp: error writing 'x': No space left on device"
        ));
        assert!(mentions_no_space(
            "E: You don't have enough free space in /var/cache/apt/archives/."
        ));
        assert!(!mentions_no_space("E: Unable to locate package foo"));
    }

    #[test]
    fn open_picks_the_configured_backend() {
        use crate::test_support::fixture_config;
        let config = fixture_config(&[("STAGE_STORE", "dir"), ("WORK_DIR", "/w")]);
        let store = open(&config, &LogSink::default()).unwrap();
        assert_eq!(store.backend(), Backend::Dir);
        assert_eq!(store.location("stage1"), Path::new("/w/stage1/rootfs"));
        let config = fixture_config(&[("QCOW2_ATTACH", "fuse")]);
        let store = open(&config, &LogSink::default()).unwrap();
        assert_eq!(store.backend(), Backend::Qcow2(Attach::Fuse));
        assert_eq!(store.location("stage1"), Path::new("/w/image-stage1.qcow2"));
        assert!(!store.exists("stage1"));
    }
}
