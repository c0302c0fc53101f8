//! The disk layout of an exported image, computed from the configuration and the measured tree
//! (pure: no I/O, golden-tested).
//!
//! | Target | Table | Partitions |
//! |---|---|---|
//! | Raspberry Pi (`TARGET_RASPI=1`) | MBR | 1: FAT32 `BOOT` (type `c`, bootable) from the tree's boot directory; 2: ext4 `ROOTFS` (type `83`) |
//! | PC (`TARGET_RASPI=0`) | MBR | 1: ext4 `ROOTFS` (type `83`, bootable) holding `/boot`; GRUB i386-pc in the gap before it |
//! | PC + `GPT_BIOS_UEFI=1` | GPT | 1: BIOS boot (1 MiB, GRUB core); 2: EFI system partition, FAT32 `EFISYS`; 3: ext4 `ROOTFS` |
//! | `ROOTFS_RO=1` | – | not implemented yet ([`Target::RootfsRo`] is an error) |
//!
//! Partitions holding filesystems start and end on 4 MiB boundaries (SD-card erase blocks); the
//! GPT BIOS boot partition sits at 1 MiB. FAT partitions are `BOOT_SIZE` (at least 64 MiB, the
//! smallest size that is still comfortably FAT32 with 512-byte clusters); the root partition is
//! as large as its content needs plus `ROOT_MARGIN` (see [`RootGeometry`]) and the image ends
//! where the last partition ends (GPT: plus 1 MiB for the backup table). A first-boot resize
//! grows the root partition to the medium.
//!
//! Every identifier is chosen here, up front, from a seed (`IMG_DATE` + the export name): the
//! MBR disk identifier (PARTUUIDs `<id>-01`, `<id>-02`), GPT disk and partition GUIDs, the root
//! filesystem's UUID and directory hash seed, the FAT volume id. Exporting the same tree twice
//! gives the same layout, and `/etc/fstab` and `cmdline.txt` can be written before any
//! filesystem exists.

use std::fmt::Write as _;

use anyhow::bail;
use serde::Serialize;

use crate::config::{resolve::parse_margin, resolve::parse_size, Arch, Config};

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
/// Start and size alignment of partitions holding filesystems.
pub const ALIGN: u64 = 4 * MIB;
/// The smallest FAT partition pigen makes (FAT32 needs 65525 clusters: 32 MiB with 512-byte
/// clusters; twice that leaves room for firmware updates).
pub const FAT_MIN: u64 = 64 * MIB;
/// ext4 block size of the root filesystem.
pub const BLOCK: u64 = 4096;

pub const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const TYPE_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// `-O` features of every ext filesystem pigen makes, as pi-gen makes them: no `huge_file`,
/// no `metadata_csum` (older e2fsprogs and U-Boot cannot read it), no `64bit` (32-bit block
/// numbers: up to 16 TiB, enough for any SD card or disk the image is grown to).
pub const EXT_FEATURES: &str = "^huge_file,^metadata_csum,^64bit";

/// What kind of image an export makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Raspberry Pi: MBR, FAT boot partition, ext4 root.
    Raspi,
    /// PC with BIOS GRUB: MBR, one ext4 root.
    PcMbr,
    /// PC bootable by BIOS and UEFI: GPT with BIOS boot partition, ESP and ext4 root.
    PcGpt(EfiArch),
    /// `ROOTFS_RO=1`: read-only squashfs root on a boot partition. Not implemented yet.
    RootfsRo,
}

/// The UEFI GRUB target (`UEFI_ARCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EfiArch {
    X86_64,
    I386,
}

impl EfiArch {
    pub fn parse(s: &str) -> Option<EfiArch> {
        match s {
            "x86_64" => Some(EfiArch::X86_64),
            "i386" => Some(EfiArch::I386),
            _ => None,
        }
    }

    /// GRUB's platform name: the directory under `/usr/lib/grub` and `grub-mkimage -O`.
    pub fn grub_platform(self) -> &'static str {
        match self {
            EfiArch::X86_64 => "x86_64-efi",
            EfiArch::I386 => "i386-efi",
        }
    }

    /// The removable-media boot file firmware looks for in `EFI/BOOT/`.
    pub fn removable_file(self) -> &'static str {
        match self {
            EfiArch::X86_64 => "BOOTX64.EFI",
            EfiArch::I386 => "BOOTIA32.EFI",
        }
    }
}

/// A filesystem type of a boot partition (`BOOT_FSTYPE`) or the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Vfat,
    Ext2,
    Ext4,
    Xfs,
}

impl FsType {
    pub fn parse(s: &str) -> Option<FsType> {
        match s {
            "vfat" => Some(FsType::Vfat),
            "ext2" => Some(FsType::Ext2),
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Ext2 => "ext2",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

/// What an export needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub target: Target,
    /// `BOOT_FSTYPE` (only `vfat` is reachable by the implemented layouts).
    pub boot_fstype: FsType,
    /// `BOOT_SIZE` in bytes.
    pub boot_size: u64,
    /// `ROOT_MARGIN`: percent of the content, plus bytes.
    pub root_margin: (u32, u64),
    /// `FAT_CODEPAGE`.
    pub fat_codepage: String,
    /// Seeds every identifier of the layout.
    pub seed: String,
    /// `SOURCE_DATE_EPOCH`, when the configuration sets it: the filesystems' own timestamps.
    pub epoch: Option<u64>,
}

impl Settings {
    /// The settings of the export named `export_name` (`EXPORT_NAME`, e.g. `2026-01-01-test-lite`).
    pub fn from_config(config: &Config, export_name: &str) -> anyhow::Result<Settings> {
        let target = if config.flag("ROOTFS_RO") {
            Target::RootfsRo
        } else if config.target_raspi {
            Target::Raspi
        } else {
            if !matches!(config.target_arch, Arch::Amd64 | Arch::I386) {
                bail!(
                    "TARGET_RASPI=0 makes a PC image booted by GRUB for BIOS/UEFI, which needs \
                     TARGET_ARCH=amd64 or i386, not {}",
                    config.target_arch.as_str()
                );
            }
            if config.flag("GPT_BIOS_UEFI") {
                let arch = config.get("UEFI_ARCH");
                let efi = EfiArch::parse(arch).ok_or_else(|| {
                    anyhow::anyhow!("UEFI_ARCH={arch:?}: expected x86_64 or i386")
                })?;
                Target::PcGpt(efi)
            } else {
                Target::PcMbr
            }
        };
        let boot_fstype = FsType::parse(config.get("BOOT_FSTYPE")).ok_or_else(|| {
            anyhow::anyhow!(
                "BOOT_FSTYPE={:?}: expected vfat, ext2, ext4 or xfs",
                config.get("BOOT_FSTYPE")
            )
        })?;
        let boot_size = parse_size(config.get("BOOT_SIZE")).ok_or_else(|| {
            anyhow::anyhow!("BOOT_SIZE={:?} is not a size", config.get("BOOT_SIZE"))
        })?;
        let root_margin = parse_margin(config.get("ROOT_MARGIN")).ok_or_else(|| {
            anyhow::anyhow!(
                "ROOT_MARGIN={:?}: write N%, a size, or N%+SIZE",
                config.get("ROOT_MARGIN")
            )
        })?;
        let date = match config.get("SOURCE_DATE_EPOCH") {
            "" => config.get("IMG_DATE"),
            epoch => epoch,
        };
        Ok(Settings {
            target,
            boot_fstype,
            boot_size,
            root_margin,
            fat_codepage: config.get("FAT_CODEPAGE").to_string(),
            seed: format!("{date}\n{export_name}"),
            epoch: config.get("SOURCE_DATE_EPOCH").parse().ok(),
        })
    }
}

/// What the root filesystem must hold, as measured by walking the tree (see `measure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RootUsage {
    /// 4 KiB blocks for file data, directories, long symlinks, xattr and extent blocks.
    pub data_blocks: u64,
    /// Inodes (hard links counted once).
    pub inodes: u64,
}

/// What a FAT partition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FatUsage {
    /// Sizes of the regular files.
    pub file_sizes: Vec<u64>,
    /// For each directory (the top one too): its number of 32-byte entries, long-name
    /// entries included.
    pub dir_slots: Vec<u64>,
}

impl FatUsage {
    /// Bytes the content takes in a FAT filesystem with `cluster`-byte clusters.
    pub fn bytes_with_cluster(&self, cluster: u64) -> u64 {
        let files: u64 = self.file_sizes.iter().map(|s| s.div_ceil(cluster)).sum();
        // The top directory of FAT32 is a cluster chain too; "." and ".." take two slots.
        let dirs: u64 = self
            .dir_slots
            .iter()
            .map(|slots| ((slots + 2) * 32).div_ceil(cluster).max(1))
            .sum();
        (files + dirs) * cluster
    }

    pub fn content_bytes(&self) -> u64 {
        self.file_sizes.iter().sum()
    }
}

/// Cluster size mkfs.fat picks for FAT32 of `bytes` (Microsoft's table, as dosfstools does).
pub fn fat32_cluster(bytes: u64) -> u64 {
    match bytes {
        b if b <= 260 * MIB => 512,
        b if b <= 8 << 30 => 4096,
        b if b <= 16 << 30 => 8192,
        b if b <= 32 << 30 => 16384,
        _ => 32768,
    }
}

/// Space in a FAT32 filesystem of `bytes` for files and directories: minus 32 reserved sectors
/// and two FATs of 4 bytes per cluster.
pub fn fat32_capacity(bytes: u64) -> u64 {
    let cluster = fat32_cluster(bytes);
    let usable = bytes.saturating_sub(32 * SECTOR);
    // Each cluster costs `cluster` bytes plus 8 bytes of FAT (two copies).
    let clusters = usable / (cluster + 8);
    clusters.saturating_sub(2) * cluster
}

/// The measured tree: the root filesystem's needs and, when the layout has a FAT partition
/// filled from the tree, the tree directory that becomes its content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeUsage {
    pub root: RootUsage,
    /// The tree directory (absolute inside the tree, e.g. `/boot/firmware`) whose content goes
    /// to the FAT partition (Raspberry Pi boot partition, PC ESP), and what it holds.
    pub fat_dir: Option<(String, FatUsage)>,
}

/// Why a partition exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// GPT BIOS boot partition: GRUB's core image, no filesystem.
    BiosBoot,
    /// EFI system partition.
    Esp,
    /// Raspberry Pi boot partition (firmware, kernels, config.txt, cmdline.txt).
    Boot,
    Root,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub number: u32,
    pub role: Role,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub size: u64,
    /// MBR type (`c`, `83`) or GPT type GUID.
    pub type_code: &'static str,
    /// GPT partition name.
    pub name: Option<&'static str>,
    /// MBR active flag.
    pub bootable: bool,
    pub fs: Option<FsType>,
    pub label: Option<&'static str>,
    /// As blkid prints it (lowercase): `1a2b3c4d-02` or a GUID.
    pub partuuid: String,
}

impl Partition {
    /// Byte offset in the image.
    pub fn offset(&self) -> u64 {
        self.start * SECTOR
    }

    pub fn bytes(&self) -> u64 {
        self.size * SECTOR
    }

    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Mbr { disk_id: u32 },
    Gpt { disk_guid: String },
}

/// How the root ext4 filesystem is made (`mkfs.ext4` options) and what it is sized for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootGeometry {
    /// Filesystem size in 4 KiB blocks (= the partition size).
    pub blocks: u64,
    /// `-N`: inodes requested.
    pub inodes: u64,
    /// `-J size=`: journal size in MiB.
    pub journal_mib: u64,
    /// Blocks the content needs (measured, plus a 1% + 1 MiB allowance for what the
    /// measurement cannot see, such as directory index blocks).
    pub content_blocks: u64,
    /// Blocks added for `ROOT_MARGIN`.
    pub margin_blocks: u64,
    /// Blocks for metadata: inode tables, bitmaps, superblock and group descriptor copies,
    /// blocks reserved for online growth, journal.
    pub overhead_blocks: u64,
    /// 5% reserved for root (`-m 5`).
    pub reserved_blocks: u64,
    /// `-U`.
    pub uuid: String,
    /// `-E hash_seed=`.
    pub hash_seed: String,
}

/// The whole image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub target: Target,
    pub table: Table,
    pub partitions: Vec<Partition>,
    /// Image file size in bytes.
    pub image_size: u64,
    pub root: RootGeometry,
    /// The tree directory copied into the FAT partition (and left empty in the root).
    pub fat_dir: Option<String>,
    /// FAT volume id (`mkfs.fat -i`), 8 hex digits.
    pub fat_volume_id: String,
}

impl Layout {
    /// Computes the layout for `settings` and the measured `usage`.
    pub fn plan(settings: &Settings, usage: &TreeUsage) -> anyhow::Result<Layout> {
        let ids = Ids::new(&settings.seed);
        let root = root_geometry(usage.root, settings.root_margin, &ids);
        let root_sectors = root.blocks * BLOCK / SECTOR;
        let fat_sectors = align_up(settings.boot_size.max(FAT_MIN), ALIGN) / SECTOR;
        let first = ALIGN / SECTOR;
        let fat_dir = usage.fat_dir.as_ref().map(|(dir, _)| dir.clone());
        let (table, partitions, image_size) = match settings.target {
            Target::RootfsRo => bail!(
                "ROOTFS_RO=1 (read-only squashfs root) is not implemented yet by the image \
                 export; build with ROOTFS_RO=0"
            ),
            Target::Raspi => {
                if settings.boot_fstype != FsType::Vfat {
                    bail!(
                        "BOOT_FSTYPE={} with TARGET_RASPI=1: the Raspberry Pi firmware reads \
                         only FAT; set BOOT_FSTYPE=vfat",
                        settings.boot_fstype.as_str()
                    );
                }
                let disk_id = ids.mbr_disk_id();
                let boot = Partition {
                    number: 1,
                    role: Role::Boot,
                    start: first,
                    size: fat_sectors,
                    type_code: "c",
                    name: None,
                    bootable: true,
                    fs: Some(FsType::Vfat),
                    label: Some("BOOT"),
                    partuuid: mbr_partuuid(disk_id, 1),
                };
                let root = Partition {
                    number: 2,
                    role: Role::Root,
                    start: boot.end(),
                    size: root_sectors,
                    type_code: "83",
                    name: None,
                    bootable: false,
                    fs: Some(FsType::Ext4),
                    label: Some("ROOTFS"),
                    partuuid: mbr_partuuid(disk_id, 2),
                };
                let size = root.end() * SECTOR;
                (Table::Mbr { disk_id }, vec![boot, root], size)
            }
            Target::PcMbr => {
                let disk_id = ids.mbr_disk_id();
                let root = Partition {
                    number: 1,
                    role: Role::Root,
                    start: first,
                    size: root_sectors,
                    type_code: "83",
                    name: None,
                    // Some BIOSes boot only from a disk with an active partition.
                    bootable: true,
                    fs: Some(FsType::Ext4),
                    label: Some("ROOTFS"),
                    partuuid: mbr_partuuid(disk_id, 1),
                };
                let size = root.end() * SECTOR;
                (Table::Mbr { disk_id }, vec![root], size)
            }
            Target::PcGpt(_) => {
                let bios = Partition {
                    number: 1,
                    role: Role::BiosBoot,
                    start: MIB / SECTOR,
                    size: MIB / SECTOR,
                    type_code: TYPE_BIOS_BOOT,
                    name: Some("BIOS boot partition"),
                    bootable: false,
                    fs: None,
                    label: None,
                    partuuid: ids.uuid("gpt-partition-1"),
                };
                let esp = Partition {
                    number: 2,
                    role: Role::Esp,
                    start: first,
                    size: fat_sectors,
                    type_code: TYPE_ESP,
                    name: Some("EFI System"),
                    bootable: false,
                    fs: Some(FsType::Vfat),
                    label: Some("EFISYS"),
                    partuuid: ids.uuid("gpt-partition-2"),
                };
                let root = Partition {
                    number: 3,
                    role: Role::Root,
                    start: esp.end(),
                    size: root_sectors,
                    type_code: TYPE_LINUX,
                    name: Some("Root filesystem"),
                    bootable: false,
                    fs: Some(FsType::Ext4),
                    label: Some("ROOTFS"),
                    partuuid: ids.uuid("gpt-partition-3"),
                };
                // The backup GPT (header + 128 entries = 33 sectors) after the last partition.
                let size = root.end() * SECTOR + MIB;
                let disk_guid = ids.uuid("gpt-disk");
                (Table::Gpt { disk_guid }, vec![bios, esp, root], size)
            }
        };
        let layout = Layout {
            target: settings.target,
            table,
            partitions,
            image_size,
            root,
            fat_dir,
            fat_volume_id: format!("{:08x}", ids.hash("fat-volume-id") as u32),
        };
        layout.check_fat_content(usage)?;
        Ok(layout)
    }

    pub fn partition(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    pub fn root_partition(&self) -> &Partition {
        self.partition(Role::Root)
            .expect("every implemented layout has a root partition")
    }

    /// The FAT partition filled from the tree: the Raspberry Pi boot partition or the ESP.
    pub fn fat_partition(&self) -> Option<&Partition> {
        self.partitions
            .iter()
            .find(|p| matches!(p.role, Role::Boot | Role::Esp) && p.fs == Some(FsType::Vfat))
    }

    /// A boot directory whose content does not fit the FAT partition is an error now, before
    /// anything is written, rather than a "disk full" from mcopy later.
    fn check_fat_content(&self, usage: &TreeUsage) -> anyhow::Result<()> {
        let (Some(part), Some((dir, fat))) = (self.fat_partition(), &usage.fat_dir) else {
            return Ok(());
        };
        let needed = fat.bytes_with_cluster(fat32_cluster(part.bytes()));
        // Room for what the export adds (GRUB's EFI image, a few MiB at most).
        let capacity = fat32_capacity(part.bytes()).saturating_sub(8 * MIB);
        if needed > capacity {
            bail!(
                "{dir} holds {} MiB ({} files), more than its {} MiB FAT partition can take \
                 ({} MiB usable); raise BOOT_SIZE to at least {}M",
                needed.div_ceil(MIB),
                fat.file_sizes.len(),
                part.bytes() / MIB,
                capacity / MIB,
                align_up(needed + part.bytes() - capacity, ALIGN) / MIB
            );
        }
        Ok(())
    }

    /// The `sfdisk` script that writes this partition table.
    pub fn sfdisk_script(&self) -> String {
        let mut s = String::new();
        match &self.table {
            Table::Mbr { disk_id } => {
                let _ = writeln!(s, "label: dos\nlabel-id: 0x{disk_id:08x}");
            }
            Table::Gpt { disk_guid } => {
                let _ = writeln!(s, "label: gpt\nlabel-id: {}", disk_guid.to_uppercase());
            }
        }
        s.push_str("unit: sectors\nsector-size: 512\n\n");
        for p in &self.partitions {
            let _ = write!(
                s,
                "start={}, size={}, type={}",
                p.start, p.size, p.type_code
            );
            if matches!(self.table, Table::Gpt { .. }) {
                let _ = write!(s, ", uuid={}", p.partuuid.to_uppercase());
            }
            if let Some(name) = p.name {
                let _ = write!(s, ", name=\"{name}\"");
            }
            if p.bootable {
                s.push_str(", bootable");
            }
            s.push('\n');
        }
        s
    }

    /// Human-readable table for the build log.
    pub fn describe(&self) -> String {
        let mut s = match &self.table {
            Table::Mbr { disk_id } => format!("MBR, disk identifier 0x{disk_id:08x}"),
            Table::Gpt { disk_guid } => format!("GPT, disk GUID {disk_guid}"),
        };
        let _ = writeln!(s, ", image {} MiB", self.image_size.div_ceil(MIB));
        for p in &self.partitions {
            let _ = writeln!(
                s,
                "  {}: {:<9} start {:>9} size {:>9} sectors ({:>6} MiB) {:<6} {:<7} PARTUUID={}",
                p.number,
                format!("{:?}", p.role).to_lowercase(),
                p.start,
                p.size,
                p.bytes() / MIB,
                p.fs.map_or("-", FsType::as_str),
                p.label.unwrap_or("-"),
                p.partuuid
            );
        }
        let r = &self.root;
        let _ = writeln!(
            s,
            "  root ext4: {} blocks = content {} + margin {} + metadata {} + reserved {} + free; \
             {} inodes, {} MiB journal, UUID {}",
            r.blocks,
            r.content_blocks,
            r.margin_blocks,
            r.overhead_blocks,
            r.reserved_blocks,
            r.inodes,
            r.journal_mib,
            r.uuid
        );
        s
    }

    /// `(placeholder, PARTUUID)` pairs for `/etc/fstab`: `BOOTDEV`, `EFIDEV`, `ROOTDEV` where
    /// the layout has such a partition.
    pub fn placeholders(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(p) = self.partition(Role::Boot) {
            out.push(("BOOTDEV", p.partuuid.clone()));
        }
        if let Some(p) = self.partition(Role::Esp) {
            out.push(("EFIDEV", p.partuuid.clone()));
        }
        out.push(("ROOTDEV", self.root_partition().partuuid.clone()));
        out
    }
}

fn mbr_partuuid(disk_id: u32, number: u32) -> String {
    format!("{disk_id:08x}-{number:02x}")
}

pub fn align_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

// ----------------------------------------------------------------------------------------------
// Deterministic identifiers.

/// Identifiers derived from the seed: FNV-1a over `domain` and the seed, finished with the
/// SplitMix64 mixer. Not cryptographic; they only need to differ between exports and repeat
/// for the same one.
pub struct Ids {
    seed: String,
}

impl Ids {
    pub fn new(seed: &str) -> Ids {
        Ids {
            seed: seed.to_string(),
        }
    }

    pub fn hash(&self, domain: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in domain
            .bytes()
            .chain(std::iter::once(0))
            .chain(self.seed.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // SplitMix64 finalizer: spreads FNV's weak low bits over the whole word.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    /// A version-4-formatted UUID, lowercase.
    pub fn uuid(&self, domain: &str) -> String {
        let hi = self.hash(&format!("{domain}/hi"));
        let lo = self.hash(&format!("{domain}/lo"));
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        b[8..].copy_from_slice(&lo.to_be_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// A non-zero 32-bit MBR disk identifier.
    pub fn mbr_disk_id(&self) -> u32 {
        match self.hash("mbr-disk-id") as u32 {
            0 => 0x5049_4745, // "PIGE"
            id => id,
        }
    }
}

// ----------------------------------------------------------------------------------------------
// ext4 sizing.

/// Blocks per group with 4 KiB blocks.
const BLOCKS_PER_GROUP: u64 = 32768;
const INODE_SIZE: u64 = 256;
const INODES_PER_BLOCK: u64 = BLOCK / INODE_SIZE;
/// Group descriptors are 32 bytes without `64bit`.
const DESCS_PER_BLOCK: u64 = BLOCK / 32;
const RESERVED_PERCENT: u64 = 5;
/// Bytes per inode of a default ext4 (`inode_ratio`), kept as the minimum density so the
/// grown filesystem has as many inodes as a freshly made one would.
const INODE_RATIO: u64 = 16384;

/// Sizes the root filesystem: content + `ROOT_MARGIN` + metadata + 5% reserved, in whole
/// 4 MiB units, with the inode count and journal size fixed so mkfs.ext4 makes exactly the
/// filesystem this computed.
pub fn root_geometry(usage: RootUsage, margin: (u32, u64), ids: &Ids) -> RootGeometry {
    let (percent, extra) = margin;
    // What the walk cannot see exactly: directory index and extent blocks of a fresh
    // filesystem, block-group boundaries splitting files. Calibrated in the tests against
    // mkfs.ext4 -d with ROOT_MARGIN=0.
    let content = usage.data_blocks + usage.data_blocks / 100 + 256;
    let margin_bytes = usage.data_blocks * BLOCK * u64::from(percent) / 100 + extra;
    let margin_blocks = margin_bytes.div_ceil(BLOCK);
    let needed = content + margin_blocks;
    let inodes_needed = usage.inodes
        + usage.inodes * u64::from(percent) / 100
        + extra / INODE_RATIO
        // The reserved inodes 1-10, lost+found, and some room.
        + 64;
    let unit = ALIGN / BLOCK;
    // mke2fs refuses a journal larger than half the free blocks: 32 MiB at least.
    let mut blocks = align_up(needed.max(8 * unit), unit);
    loop {
        let inodes = inodes_needed.max(blocks * BLOCK / INODE_RATIO);
        let overhead = ext4_overhead(blocks, inodes);
        let reserved = blocks * RESERVED_PERCENT / 100;
        let mut total = align_up(needed + overhead + reserved, unit).max(blocks);
        // mke2fs drops a last block group too small for its own metadata; keep it big enough.
        let rem = total % BLOCKS_PER_GROUP;
        let groups = total.div_ceil(BLOCKS_PER_GROUP);
        let last_group_min = 3
            + inode_table_blocks_per_group(inodes, groups)
            + reserved_gdt_blocks(total)
            + groups.div_ceil(DESCS_PER_BLOCK)
            + 64;
        if rem != 0 && rem < last_group_min {
            total = align_up(total - rem + last_group_min, unit);
        }
        if total == blocks {
            return RootGeometry {
                blocks,
                inodes,
                journal_mib: journal_blocks(blocks) * BLOCK / MIB,
                content_blocks: content,
                margin_blocks,
                overhead_blocks: overhead,
                reserved_blocks: reserved,
                uuid: ids.uuid("root-fs-uuid"),
                hash_seed: ids.uuid("root-fs-hash-seed"),
            };
        }
        blocks = total;
    }
}

fn inode_table_blocks_per_group(inodes: u64, groups: u64) -> u64 {
    let per_group = align_up(inodes.div_ceil(groups), INODES_PER_BLOCK).min(BLOCKS_PER_GROUP);
    per_group / INODES_PER_BLOCK
}

/// mke2fs's default journal size for a filesystem of `blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`); pigen passes it explicitly.
pub fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Group descriptor blocks reserved for online growth (`resize_inode`): enough descriptors
/// for 1024 times the size, at most 2^32 blocks, at most 1024 blocks (`calc_reserved_gdt_blocks`).
fn reserved_gdt_blocks(blocks: u64) -> u64 {
    let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
    let max_blocks = (blocks * 1024).min(u64::from(u32::MAX));
    let max_groups = max_blocks.div_ceil(BLOCKS_PER_GROUP);
    let reserved = max_groups
        .div_ceil(DESCS_PER_BLOCK)
        .saturating_sub(groups.div_ceil(DESCS_PER_BLOCK));
    reserved.min(BLOCK / 4)
}

/// Groups holding a superblock backup with `sparse_super`: 0, 1 and powers of 3, 5 and 7.
fn has_superblock(group: u64) -> bool {
    fn power_of(mut n: u64, base: u64) -> bool {
        while n > 1 && n.is_multiple_of(base) {
            n /= base;
        }
        n == 1
    }
    group <= 1 || power_of(group, 3) || power_of(group, 5) || power_of(group, 7)
}

/// Metadata blocks of an ext4 filesystem of `blocks` blocks and `inodes` inodes.
pub fn ext4_overhead(blocks: u64, inodes: u64) -> u64 {
    let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
    let inode_tables = groups * inode_table_blocks_per_group(inodes, groups);
    let bitmaps = 2 * groups;
    let descriptors = groups.div_ceil(DESCS_PER_BLOCK);
    let backups = (0..groups).filter(|g| has_superblock(*g)).count() as u64;
    let superblocks = backups * (1 + descriptors + reserved_gdt_blocks(blocks));
    // Root directory, lost+found (4 blocks), the resize inode's indirect block, and slack.
    let fixed = 32;
    inode_tables + bitmaps + superblocks + journal_blocks(blocks) + fixed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(target: Target) -> Settings {
        Settings {
            target,
            boot_fstype: FsType::Vfat,
            boot_size: 256 * MIB,
            root_margin: (10, 128 * MIB),
            fat_codepage: "437".into(),
            seed: "2026-01-01\n2026-01-01-test-lite".into(),
            epoch: None,
        }
    }

    /// About a Debian minbase tree with a kernel: 800 MiB in 14 000 inodes.
    fn usage(fat_dir: Option<&str>) -> TreeUsage {
        TreeUsage {
            root: RootUsage {
                data_blocks: 204_800,
                inodes: 14_000,
            },
            fat_dir: fat_dir.map(|d| {
                (
                    d.to_string(),
                    FatUsage {
                        file_sizes: vec![52_000, 8_000_000, 30_000],
                        dir_slots: vec![12, 4],
                    },
                )
            }),
        }
    }

    #[test]
    fn identifiers_are_deterministic_and_distinct() {
        let a = Ids::new("2026-01-01\nx");
        let b = Ids::new("2026-01-01\nx");
        let c = Ids::new("2026-01-01\ny");
        assert_eq!(a.uuid("d"), b.uuid("d"));
        assert_ne!(a.uuid("d"), c.uuid("d"));
        assert_ne!(a.uuid("d"), a.uuid("e"));
        assert_ne!(a.mbr_disk_id(), c.mbr_disk_id());
        let u = a.uuid("d");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4", "{u}");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn raspi_layout_golden() {
        let layout =
            Layout::plan(&settings(Target::Raspi), &usage(Some("/boot/firmware"))).unwrap();
        assert_eq!(
            layout.table,
            Table::Mbr {
                disk_id: 0xdf32e3e8
            }
        );
        assert_eq!(layout.fat_dir.as_deref(), Some("/boot/firmware"));
        let boot = &layout.partitions[0];
        assert_eq!(
            (
                boot.number,
                boot.role,
                boot.start,
                boot.size,
                boot.type_code
            ),
            (1, Role::Boot, 8192, 524_288, "c")
        );
        assert_eq!(
            (boot.fs, boot.label, boot.bootable),
            (Some(FsType::Vfat), Some("BOOT"), true)
        );
        assert_eq!(boot.partuuid, "df32e3e8-01");
        let root = &layout.partitions[1];
        assert_eq!(
            (
                root.number,
                root.role,
                root.start,
                root.size,
                root.type_code
            ),
            (2, Role::Root, 532_480, 2_310_144, "83")
        );
        assert_eq!((root.fs, root.label), (Some(FsType::Ext4), Some("ROOTFS")));
        assert_eq!(root.partuuid, "df32e3e8-02");
        assert_eq!(layout.image_size, (532_480 + 2_310_144) * 512);
        assert_eq!(
            layout.sfdisk_script(),
            "label: dos\nlabel-id: 0xdf32e3e8\nunit: sectors\nsector-size: 512\n\n\
             start=8192, size=524288, type=c, bootable\n\
             start=532480, size=2310144, type=83\n"
        );
        assert_eq!(
            layout.placeholders(),
            [
                ("BOOTDEV", "df32e3e8-01".to_string()),
                ("ROOTDEV", "df32e3e8-02".to_string())
            ]
        );
    }

    #[test]
    fn pc_mbr_layout_golden() {
        let layout = Layout::plan(&settings(Target::PcMbr), &usage(None)).unwrap();
        assert_eq!(layout.partitions.len(), 1, "no unused FAT partition");
        let root = &layout.partitions[0];
        assert_eq!(
            (
                root.number,
                root.role,
                root.start,
                root.size,
                root.type_code,
                root.bootable
            ),
            (1, Role::Root, 8192, 2_310_144, "83", true)
        );
        let Table::Mbr { disk_id } = layout.table else {
            panic!("MBR")
        };
        assert_eq!(root.partuuid, format!("{disk_id:08x}-01"));
        assert_eq!(layout.image_size, (8192 + 2_310_144) * 512);
        assert_eq!(
            layout.sfdisk_script(),
            format!(
                "label: dos\nlabel-id: 0x{disk_id:08x}\nunit: sectors\nsector-size: 512\n\n\
                 start=8192, size=2310144, type=83, bootable\n"
            )
        );
        assert_eq!(layout.placeholders(), [("ROOTDEV", root.partuuid.clone())]);
    }

    #[test]
    fn pc_gpt_layout_golden() {
        let layout = Layout::plan(
            &settings(Target::PcGpt(EfiArch::X86_64)),
            &usage(Some("/boot/efi")),
        )
        .unwrap();
        let Table::Gpt { disk_guid } = &layout.table else {
            panic!("GPT")
        };
        let p = &layout.partitions;
        assert_eq!(
            p.iter()
                .map(|p| (p.number, p.role, p.start, p.size, p.type_code, p.name))
                .collect::<Vec<_>>(),
            [
                (
                    1,
                    Role::BiosBoot,
                    2048,
                    2048,
                    TYPE_BIOS_BOOT,
                    Some("BIOS boot partition")
                ),
                (2, Role::Esp, 8192, 524_288, TYPE_ESP, Some("EFI System")),
                (
                    3,
                    Role::Root,
                    532_480,
                    2_310_144,
                    TYPE_LINUX,
                    Some("Root filesystem")
                ),
            ]
        );
        assert_eq!(p[1].label, Some("EFISYS"));
        assert_eq!(layout.image_size, (532_480 + 2_310_144 + 2048) * 512);
        let ids = Ids::new(&settings(Target::Raspi).seed);
        assert_eq!(disk_guid, &ids.uuid("gpt-disk"));
        assert_eq!(p[2].partuuid, ids.uuid("gpt-partition-3"));
        assert_eq!(
            layout.sfdisk_script(),
            format!(
                "label: gpt\nlabel-id: {}\nunit: sectors\nsector-size: 512\n\n\
                 start=2048, size=2048, type={TYPE_BIOS_BOOT}, uuid={}, name=\"BIOS boot partition\"\n\
                 start=8192, size=524288, type={TYPE_ESP}, uuid={}, name=\"EFI System\"\n\
                 start=532480, size=2310144, type={TYPE_LINUX}, uuid={}, name=\"Root filesystem\"\n",
                disk_guid.to_uppercase(),
                p[0].partuuid.to_uppercase(),
                p[1].partuuid.to_uppercase(),
                p[2].partuuid.to_uppercase(),
            )
        );
        assert_eq!(
            layout.placeholders(),
            [
                ("EFIDEV", p[1].partuuid.clone()),
                ("ROOTDEV", p[2].partuuid.clone())
            ]
        );
    }

    #[test]
    fn rootfs_ro_is_a_clear_not_implemented_error() {
        let err = Layout::plan(&settings(Target::RootfsRo), &usage(None)).unwrap_err();
        assert!(err.to_string().contains("not implemented yet"), "{err}");
    }

    #[test]
    fn raspi_needs_fat() {
        let mut s = settings(Target::Raspi);
        s.boot_fstype = FsType::Ext4;
        let err = Layout::plan(&s, &usage(Some("/boot"))).unwrap_err();
        assert!(err.to_string().contains("BOOT_FSTYPE=ext4"), "{err}");
    }

    #[test]
    fn boot_size_is_aligned_and_at_least_64m() {
        let mut s = settings(Target::Raspi);
        s.boot_size = 16 * MIB;
        let layout = Layout::plan(&s, &usage(Some("/boot"))).unwrap();
        assert_eq!(layout.partitions[0].bytes(), 64 * MIB);
        s.boot_size = 301 * MIB;
        let layout = Layout::plan(&s, &usage(Some("/boot"))).unwrap();
        assert_eq!(layout.partitions[0].bytes(), 304 * MIB);
        assert_eq!(layout.partitions[1].start, (4 + 304) * MIB / SECTOR);
    }

    #[test]
    fn boot_content_too_big_names_the_size_to_set() {
        let mut u = usage(Some("/boot/firmware"));
        u.fat_dir.as_mut().unwrap().1.file_sizes = vec![100 * MIB; 3];
        let err = Layout::plan(&settings(Target::Raspi), &u)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/boot/firmware holds 301 MiB (3 files)"),
            "{err}"
        );
        assert!(err.contains("raise BOOT_SIZE to at least"), "{err}");
    }

    #[test]
    fn same_seed_same_layout_other_name_other_ids() {
        let a = Layout::plan(&settings(Target::Raspi), &usage(Some("/boot"))).unwrap();
        let b = Layout::plan(&settings(Target::Raspi), &usage(Some("/boot"))).unwrap();
        assert_eq!(a, b);
        let mut s = settings(Target::Raspi);
        s.seed = "2026-01-01\n2026-01-01-test".into();
        let c = Layout::plan(&s, &usage(Some("/boot"))).unwrap();
        assert_ne!(a.partitions[1].partuuid, c.partitions[1].partuuid);
        assert_ne!(a.root.uuid, c.root.uuid);
        assert_ne!(a.fat_volume_id, c.fat_volume_id);
    }

    #[test]
    fn root_size_counts_content_margin_metadata_and_reserve() {
        let ids = Ids::new("s");
        let g = root_geometry(
            RootUsage {
                data_blocks: 204_800,
                inodes: 14_000,
            },
            (10, 128 * MIB),
            &ids,
        );
        // 800 MiB content: +1% +1 MiB allowance, +80 MiB +128 MiB margin.
        assert_eq!(g.content_blocks, 204_800 + 2_048 + 256);
        assert_eq!(g.margin_blocks, 20_480 + 32_768);
        assert_eq!(g.blocks % 1024, 0, "4 MiB units");
        assert_eq!(g.blocks, 288_768);
        assert_eq!(g.journal_mib, 32);
        assert_eq!(g.inodes, 288_768 * 4096 / 16384);
        assert_eq!(g.reserved_blocks, 288_768 / 20);
        let used = g.content_blocks + g.margin_blocks + g.overhead_blocks + g.reserved_blocks;
        assert!(used <= g.blocks, "{g:?}");
        assert!(
            g.blocks - used < 1024 + 64,
            "no more than alignment left over: {g:?}"
        );
    }

    #[test]
    fn many_small_files_get_enough_inodes() {
        let ids = Ids::new("s");
        let g = root_geometry(
            RootUsage {
                data_blocks: 100_000,
                inodes: 90_000,
            },
            (0, 0),
            &ids,
        );
        assert!(g.inodes >= 90_000 + 64, "{g:?}");
        // 90 000 inodes take 5 625 blocks of inode tables.
        assert!(g.overhead_blocks > 5_625, "{g:?}");
    }

    #[test]
    fn tiny_trees_still_make_a_valid_filesystem() {
        let g = root_geometry(
            RootUsage {
                data_blocks: 3,
                inodes: 5,
            },
            (0, 0),
            &Ids::new("s"),
        );
        assert_eq!(g.blocks, 8192, "{g:?}");
        assert_eq!(g.journal_mib, 4);
    }

    #[test]
    fn last_block_group_is_never_too_small() {
        for data in (30_000..40_000).step_by(97) {
            let g = root_geometry(
                RootUsage {
                    data_blocks: data,
                    inodes: 1000,
                },
                (0, 0),
                &Ids::new("s"),
            );
            let rem = g.blocks % BLOCKS_PER_GROUP;
            assert!(rem == 0 || rem >= 1024, "{g:?}");
        }
    }

    #[test]
    fn superblock_backup_groups() {
        let groups: Vec<u64> = (0..50).filter(|g| has_superblock(*g)).collect();
        assert_eq!(groups, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn reserved_gdt_blocks_follow_mke2fs() {
        // 1 GiB: room for 1 TiB = 8192 groups = 64 descriptor blocks, minus the 1 in use.
        assert_eq!(reserved_gdt_blocks(262_144), 63);
        // 16 GiB and more: capped by 2^32 blocks, then by 1024.
        assert_eq!(reserved_gdt_blocks(4 << 20), 1023);
        assert_eq!(reserved_gdt_blocks(1 << 30), 1024 - 256);
    }

    #[test]
    fn fat_usage_rounds_to_clusters() {
        let fat = FatUsage {
            file_sizes: vec![1, 512, 513, 0],
            dir_slots: vec![3, 40],
        };
        // Files: 1 + 1 + 2 + 0 clusters; dirs: 5*32=160 -> 1, 42*32=1344 -> 3.
        assert_eq!(fat.bytes_with_cluster(512), (4 + 1 + 3) * 512);
        assert_eq!(fat32_cluster(256 * MIB), 512);
        assert_eq!(fat32_cluster(300 * MIB), 4096);
        assert!(fat32_capacity(256 * MIB) > 250 * MIB);
        assert!(fat32_capacity(256 * MIB) < 256 * MIB);
    }
}
