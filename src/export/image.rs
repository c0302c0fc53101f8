//! [`assemble`]: the disk image of one export, from its tree, checked.
//!
//! In order: GRUB modules into the tree (PC), measure the tree, plan the layout, PARTUUIDs into
//! fstab/cmdline.txt and the filesystem UUID into grub.cfg, GRUB images (PC), then the image
//! file: partition table (`sfdisk`), ext4 root (`mkfs.ext4 -d`), FAT boot/ESP (`mkfs.fat` +
//! `mcopy`), GRUB boot code. Then it checks its own output: the partition table read back with
//! `sfdisk --json`, `e2fsck -f -n` on the root at its offset (e2fsprogs' `image?offset=`), and
//! `fsck.fat -n` on a sparse copy of the FAT partition.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::fs::{self as filesystems, in_tree, mkdir_in_tree, Ext4Root};
use super::grub;
use super::layout::{Layout, Role, Settings, Table, Target, BLOCK, MIB};
use super::measure::measure;
use super::ProgressFn;
use crate::config::Config;
use crate::exec::cmd::{Cmd, LogSink};

/// How [`assemble`] runs.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// `EXPORT_NAME` (`IMG_FILENAME` + `IMG_SUFFIX`): seeds the identifiers.
    pub name: &'a str,
    pub log: &'a LogSink,
    pub progress: Option<ProgressFn<'a>>,
}

/// What [`assemble`] made.
#[derive(Clone, Debug, Serialize)]
pub struct Assembled {
    pub image: PathBuf,
    pub layout: Layout,
    /// Byte offset and length of the root partition in the image (deploy extracts it as
    /// `N.root-ext4.img`, e.g. with [`copy_range_sparse`](super::fs::copy_range_sparse)).
    pub root_offset: u64,
    pub root_size: u64,
    /// PARTUUID of each partition, by role.
    pub partuuids: Vec<(Role, String)>,
    /// The root filesystem's UUID.
    pub root_fs_uuid: String,
    /// What was changed in the tree (placeholders, grub.cfg) and anything worth a look.
    pub notes: Vec<String>,
    /// Partitions, sizes and used space, for the build log.
    pub summary: String,
    /// How long each part took.
    pub timings: Vec<(String, Duration)>,
}

/// Makes `image` from `tree` as `config` says.
///
/// The tree is a writable export copy and is changed: placeholders in `/etc/fstab` and
/// `cmdline.txt` are filled, `/boot/grub/grub.cfg` is pointed at the new root, GRUB modules go
/// to `/boot/grub/<platform>`, `/boot/efi` is created for GPT. Once filled, placeholders are
/// gone: export a fresh copy for another name or date. Nothing may be mounted below the tree.
/// Needs root for PC images (GRUB runs in a chroot) and where a boot directory's content is
/// left out of the root (Raspberry Pi, GPT). A scratch directory `.<image name>.pigen-tmp` next
/// to the image is used and removed; on failure no image is left behind.
pub fn assemble(
    config: &Config,
    tree: &Path,
    image: &Path,
    options: &Options,
) -> anyhow::Result<Assembled> {
    let settings = Settings::from_config(config, options.name)?;
    assemble_with(&settings, tree, image, options)
}

/// [`assemble`] with the settings already taken from the configuration.
pub fn assemble_with(
    settings: &Settings,
    tree: &Path,
    image: &Path,
    options: &Options,
) -> anyhow::Result<Assembled> {
    let log = options.log;
    let mut timings = Vec::new();
    let mut notes = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, Duration)>| {
        timings.push((name.to_string(), clock.elapsed()));
        clock = Instant::now();
    };

    // What goes to the FAT partition; the GRUB modules the tree needs.
    let fat_dir = match settings.target {
        Target::RootfsRo => {
            // Layout::plan says it best.
            Layout::plan(settings, &Default::default())?;
            unreachable!("ROOTFS_RO layouts are refused by Layout::plan");
        }
        Target::Raspi => Some(raspi_boot_dir(tree)?),
        Target::PcMbr => None,
        Target::PcGpt(_) => {
            mkdir_in_tree(tree, "/boot/efi")?;
            Some("/boot/efi".to_string())
        }
    };
    if let Target::PcMbr | Target::PcGpt(_) = settings.target {
        grub::install_modules(tree, "i386-pc", "grub-pc-bin")?;
        if let Target::PcGpt(arch) = settings.target {
            let package = match arch {
                super::layout::EfiArch::X86_64 => "grub-efi-amd64-bin",
                super::layout::EfiArch::I386 => "grub-efi-ia32-bin",
            };
            grub::install_modules(tree, arch.grub_platform(), package)?;
        }
    }

    let usage = measure(tree, fat_dir.as_deref())?;
    let prefetch = filesystems::Prefetch::start(tree, usage.root.data_blocks * BLOCK);
    let layout = Layout::plan(settings, &usage)?;
    log.line(&format!("pigen: image layout: {}", layout.describe()));
    lap("measure", &mut timings);

    notes.extend(filesystems::write_partuuids(tree, &layout)?);
    let root = layout.root_partition().clone();
    let grub_images = match settings.target {
        Target::PcMbr | Target::PcGpt(_) => {
            notes.extend(grub::retarget_tree_grub_cfg(
                tree,
                &layout.root.uuid,
                &root.partuuid,
            )?);
            Some(grub::make_images(tree, &layout, log)?)
        }
        _ => None,
    };
    for note in &notes {
        log.line(&format!("pigen: {note}"));
    }
    lap("prepare tree", &mut timings);

    let scratch = Scratch::new(image)?;
    match fs::remove_file(image) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", image.display()))
        }
        _ => {}
    }
    fs::File::create(image)
        .and_then(|f| f.set_len(layout.image_size))
        .with_context(|| format!("creating {}", image.display()))?;
    // From here on a failure leaves no half-made image behind.
    let unfinished = Unfinished(Some(image));
    Cmd::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--wipe", "always", "-q"])
        .arg(image)
        .stdin(layout.sfdisk_script())
        .output(log)?;
    lap("partition table", &mut timings);

    let fat_host = match &layout.fat_dir {
        Some(dir) => in_tree(tree, dir)?,
        None => None,
    };
    filesystems::mkfs_ext4_root(
        &Ext4Root {
            image,
            offset: root.offset(),
            geometry: &layout.root,
            label: root.label.unwrap_or("ROOTFS"),
            tree,
            exclude: fat_host.as_deref(),
            scratch: &scratch.path,
            epoch: settings.epoch,
        },
        log,
        options.progress,
    )?;
    lap("root filesystem", &mut timings);

    if let Some(part) = layout.fat_partition() {
        filesystems::mkfs_fat(
            image,
            part.start,
            part.size,
            part.label.unwrap_or("BOOT"),
            &settings.fat_codepage,
            &layout.fat_volume_id,
            log,
        )?;
        let total = usage
            .fat_dir
            .as_ref()
            .map_or(0, |(_, fat)| fat.content_bytes());
        let source = if part.role == Role::Esp {
            let staging = scratch.path.join("esp");
            let images = grub_images
                .as_ref()
                .context("PC layouts make GRUB images")?;
            esp_staging(fat_host.as_deref(), &staging, images, &layout)?;
            Some(staging)
        } else {
            fat_host.clone()
        };
        if let Some(source) = source {
            filesystems::mcopy_dir(image, part.offset(), &source, total, log, options.progress)?;
        }
        lap("boot filesystem", &mut timings);
    }

    if let Some(images) = &grub_images {
        grub::write_bios_boot(image, &layout, images)?;
        lap("grub", &mut timings);
    }

    drop(prefetch);
    let summary = check(image, &layout, &scratch.path, log)?;
    lap("check", &mut timings);
    log.line(&format!("pigen: image {}:\n{summary}", image.display()));
    unfinished.finished();

    Ok(Assembled {
        image: image.to_path_buf(),
        root_offset: root.offset(),
        root_size: root.bytes(),
        partuuids: layout
            .partitions
            .iter()
            .map(|p| (p.role, p.partuuid.clone()))
            .collect(),
        root_fs_uuid: layout.root.uuid.clone(),
        layout,
        notes,
        summary,
        timings,
    })
}

/// The Raspberry Pi boot directory: `/boot/firmware` when the tree has it (Debian's
/// raspi-firmware and current Raspberry Pi OS), else `/boot`.
fn raspi_boot_dir(tree: &Path) -> anyhow::Result<String> {
    for dir in ["/boot/firmware", "/boot"] {
        if let Some(path) = in_tree(tree, dir)? {
            if fs::symlink_metadata(&path)?.is_dir() {
                return Ok(dir.to_string());
            }
        }
    }
    bail!("the tree has neither /boot/firmware nor /boot: nothing to put on the boot partition")
}

/// The ESP's content: the tree's `/boot/efi` (if any) plus GRUB's removable-path image and
/// its `grub.cfg`, which replace same-named files.
fn esp_staging(
    efi_dir: Option<&Path>,
    staging: &Path,
    images: &grub::GrubImages,
    layout: &Layout,
) -> anyhow::Result<()> {
    fs::create_dir_all(staging)?;
    if let Some(src) = efi_dir {
        copy_plain_tree(src, staging)?;
    }
    let efi = child_dir_ci(staging, "EFI")?;
    let boot = child_dir_ci(&efi, "BOOT")?;
    if let Some((file, bytes)) = &images.efi {
        fs::write(boot.join(file), bytes)?;
    }
    let label = layout.root_partition().label.unwrap_or("ROOTFS");
    fs::write(
        boot.join("grub.cfg"),
        grub::esp_grub_cfg(&layout.root.uuid, label),
    )?;
    Ok(())
}

/// `dir/name`, matching an existing entry regardless of case (FAT ignores case), created if
/// missing.
fn child_dir_ci(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .eq_ignore_ascii_case(name)
            && entry.file_type()?.is_dir()
        {
            return Ok(entry.path());
        }
    }
    let path = dir.join(name);
    fs::create_dir(&path)?;
    Ok(path)
}

/// Copies directories and regular files (what FAT holds), keeping modification times.
fn copy_plain_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        if meta.is_dir() {
            fs::create_dir_all(&to)?;
            copy_plain_tree(&from, &to)?;
        } else if meta.is_file() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            let mtime = nix::sys::time::TimeSpec::new(
                std::os::unix::fs::MetadataExt::mtime(&meta),
                std::os::unix::fs::MetadataExt::mtime_nsec(&meta),
            );
            nix::sys::stat::utimensat(
                None,
                &to,
                &mtime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )?;
        }
    }
    Ok(())
}

/// Removes the image when dropped before [`finished`](Self::finished).
struct Unfinished<'a>(Option<&'a Path>);

impl Unfinished<'_> {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(image) = self.0 {
            let _ = fs::remove_file(image);
        }
    }
}

/// A scratch directory next to the image, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(image: &Path) -> anyhow::Result<Scratch> {
        let name = image
            .file_name()
            .context("the image path has no file name")?
            .to_string_lossy();
        let path = image.with_file_name(format!(".{name}.pigen-tmp"));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing the old {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ----------------------------------------------------------------------------------------------
// Checks.

/// `sfdisk --json` output.
#[derive(Debug, Deserialize)]
pub struct SfdiskJson {
    pub partitiontable: SfdiskTable,
}

#[derive(Debug, Deserialize)]
pub struct SfdiskTable {
    pub label: String,
    pub id: Option<String>,
    #[serde(default)]
    pub partitions: Vec<SfdiskPartition>,
}

#[derive(Debug, Deserialize)]
pub struct SfdiskPartition {
    pub start: u64,
    pub size: u64,
    #[serde(rename = "type")]
    pub type_code: String,
    pub uuid: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub bootable: bool,
}

/// Reads the partition table back with `sfdisk --json`.
pub fn read_table(image: &Path, log: &LogSink) -> anyhow::Result<SfdiskTable> {
    let out = Cmd::new("sfdisk").arg("--json").arg(image).output(log)?;
    let parsed: SfdiskJson = serde_json::from_str(&out.stdout)
        .with_context(|| format!("parsing `sfdisk --json {}`", image.display()))?;
    Ok(parsed.partitiontable)
}

/// Differences between the table on disk and the layout, one line each.
pub fn table_mismatches(table: &SfdiskTable, layout: &Layout) -> Vec<String> {
    let mut bad = Vec::new();
    let (label, id) = match &layout.table {
        Table::Mbr { disk_id } => ("dos", format!("0x{disk_id:08x}")),
        Table::Gpt { disk_guid } => ("gpt", disk_guid.clone()),
    };
    if table.label != label {
        bad.push(format!("table type {} instead of {label}", table.label));
    }
    if !table
        .id
        .as_deref()
        .is_some_and(|i| i.eq_ignore_ascii_case(&id))
    {
        bad.push(format!("disk identifier {:?} instead of {id}", table.id));
    }
    if table.partitions.len() != layout.partitions.len() {
        bad.push(format!(
            "{} partitions instead of {}",
            table.partitions.len(),
            layout.partitions.len()
        ));
    }
    for (disk, want) in table.partitions.iter().zip(&layout.partitions) {
        let n = want.number;
        if (disk.start, disk.size) != (want.start, want.size) {
            bad.push(format!(
                "partition {n}: sectors {}+{} instead of {}+{}",
                disk.start, disk.size, want.start, want.size
            ));
        }
        if !disk.type_code.eq_ignore_ascii_case(want.type_code) {
            bad.push(format!(
                "partition {n}: type {} instead of {}",
                disk.type_code, want.type_code
            ));
        }
        if let Table::Gpt { .. } = layout.table {
            if !disk
                .uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&want.partuuid))
            {
                bad.push(format!(
                    "partition {n}: uuid {:?} instead of {}",
                    disk.uuid, want.partuuid
                ));
            }
            if disk.name.as_deref() != want.name {
                bad.push(format!(
                    "partition {n}: name {:?} instead of {:?}",
                    disk.name, want.name
                ));
            }
        } else if disk.bootable != want.bootable {
            bad.push(format!(
                "partition {n}: bootable {} instead of {}",
                disk.bootable, want.bootable
            ));
        }
    }
    bad
}

/// Reads the image back: partition table, `e2fsck -f -n` of the root, `fsck.fat -n` of the
/// FAT partition. Returns the summary for the log.
pub fn check(
    image: &Path,
    layout: &Layout,
    scratch: &Path,
    log: &LogSink,
) -> anyhow::Result<String> {
    let table = read_table(image, log)?;
    let bad = table_mismatches(&table, layout);
    if !bad.is_empty() {
        bail!(
            "the partition table of {} is not what pigen wrote:\n  {}",
            image.display(),
            bad.join("\n  ")
        );
    }
    let mut summary = layout.describe();
    let root = layout.root_partition();
    let at = ext_at(image, root.offset());
    Cmd::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&at)
        .output(log)
        .context("the root filesystem does not check clean")?;
    let stats = Cmd::new("dumpe2fs").arg("-h").arg(&at).output(log)?;
    let field = |name: &str| -> u64 {
        stats
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (blocks, free) = (field("Block count:"), field("Free blocks:"));
    let (inodes, free_inodes) = (field("Inode count:"), field("Free inodes:"));
    if blocks != layout.root.blocks {
        bail!(
            "the root filesystem has {blocks} blocks, pigen planned {}",
            layout.root.blocks
        );
    }
    summary += &format!(
        "  root: {} MiB used, {} MiB free of {} MiB; {} of {} inodes used; e2fsck clean\n",
        (blocks - free) * 4096 / MIB,
        free * 4096 / MIB,
        blocks * 4096 / MIB,
        inodes - free_inodes,
        inodes
    );
    if let Some(part) = layout.fat_partition() {
        let copy = scratch.join("fat-check.img");
        filesystems::copy_range_sparse(image, part.offset(), part.bytes(), &copy, 0)?;
        let out = Cmd::new("fsck.fat")
            .arg("-n")
            .arg(&copy)
            .output(log)
            .context("the FAT filesystem does not check clean")?;
        let _ = fs::remove_file(&copy);
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(" files, "))
            .unwrap_or("")
            .trim()
            .trim_start_matches(&format!("{}: ", copy.display()))
            .to_string();
        summary += &format!(
            "  {}: {line}; fsck.fat clean\n",
            format!("{:?}", part.role).to_lowercase()
        );
    }
    Ok(summary)
}

/// e2fsprogs' way to address a filesystem inside a file: `image?offset=<bytes>`.
pub fn ext_at(image: &Path, offset: u64) -> std::ffi::OsString {
    let mut s = image.as_os_str().to_os_string();
    s.push(format!("?offset={offset}"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::layout::{FatUsage, FsType, RootUsage, TreeUsage};

    fn layout(target: Target) -> Layout {
        let settings = Settings {
            target,
            boot_fstype: FsType::Vfat,
            boot_size: 256 << 20,
            root_margin: (0, 0),
            fat_codepage: "437".into(),
            seed: "s".into(),
            epoch: None,
        };
        let usage = TreeUsage {
            root: RootUsage {
                data_blocks: 1000,
                inodes: 100,
            },
            fat_dir: Some(("/boot".into(), FatUsage::default())),
        };
        Layout::plan(&settings, &usage).unwrap()
    }

    #[test]
    fn sfdisk_json_mbr_matches_layout() {
        let l = layout(Target::Raspi);
        let Table::Mbr { disk_id } = l.table else {
            panic!()
        };
        let json = format!(
            r#"{{"partitiontable": {{"label":"dos","id":"0x{disk_id:08x}","device":"x.img","unit":"sectors","sectorsize":512,
            "partitions":[{{"node":"x.img1","start":8192,"size":524288,"type":"c","bootable":true}},
                          {{"node":"x.img2","start":532480,"size":{},"type":"83"}}]}}}}"#,
            l.partitions[1].size
        );
        let t: SfdiskJson = serde_json::from_str(&json).unwrap();
        assert_eq!(
            table_mismatches(&t.partitiontable, &l),
            Vec::<String>::new()
        );
        let json = json
            .replace("\"type\":\"83\"", "\"type\":\"82\"")
            .replace(",\"bootable\":true", "");
        let t: SfdiskJson = serde_json::from_str(&json).unwrap();
        assert_eq!(
            table_mismatches(&t.partitiontable, &l),
            [
                "partition 1: bootable false instead of true",
                "partition 2: type 82 instead of 83"
            ]
        );
    }

    #[test]
    fn sfdisk_json_gpt_matches_layout() {
        let l = layout(Target::PcGpt(crate::export::layout::EfiArch::X86_64));
        let Table::Gpt { disk_guid } = &l.table else {
            panic!()
        };
        let parts: Vec<String> = l
            .partitions
            .iter()
            .map(|p| {
                format!(
                    r#"{{"node":"x","start":{},"size":{},"type":"{}","uuid":"{}","name":"{}"}}"#,
                    p.start,
                    p.size,
                    p.type_code,
                    p.partuuid.to_uppercase(),
                    p.name.unwrap()
                )
            })
            .collect();
        let json = format!(
            r#"{{"partitiontable":{{"label":"gpt","id":"{}","device":"x","unit":"sectors","firstlba":2048,"lastlba":9,"sectorsize":512,"partitions":[{}]}}}}"#,
            disk_guid.to_uppercase(),
            parts.join(",")
        );
        let t: SfdiskJson = serde_json::from_str(&json).unwrap();
        assert_eq!(
            table_mismatches(&t.partitiontable, &l),
            Vec::<String>::new()
        );
    }

    #[test]
    fn e2fsprogs_offset_syntax() {
        assert_eq!(ext_at(Path::new("/w/a.img"), 4096), "/w/a.img?offset=4096");
    }
}
