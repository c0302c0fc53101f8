//! What kind of image this is, from its partition table (`sfdisk --json`) and the listing of
//! its FAT partition; which architecture its root filesystem is for (ELF header of init); and
//! for Raspberry Pi images, which kernel, initramfs and device tree to hand QEMU.

use crate::config::Arch;
use crate::export::image::{SfdiskPartition, SfdiskTable};
use crate::export::layout::{TYPE_BIOS_BOOT, TYPE_ESP, TYPE_LINUX};

/// Bytes per sector in image files.
pub const SECTOR: u64 = 512;

/// GPT root partition types of the Discoverable Partitions Specification (x86-64, x86, arm64,
/// arm32), accepted besides the generic Linux type.
const GPT_ROOT_TYPES: &[&str] = &[
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "44479540-F297-41B2-9AF7-D131D5F0458A",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
];

/// MBR types of FAT partitions (FAT32 LBA, FAT32, FAT16 LBA) a Raspberry Pi boots from.
const MBR_FAT_TYPES: &[&str] = &["c", "b", "e"];

/// A partition, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1-based, as the kernel numbers it.
    pub number: usize,
    pub offset: u64,
    pub bytes: u64,
}

impl Part {
    fn of(number: usize, p: &SfdiskPartition) -> Part {
        Part {
            number,
            offset: p.start * SECTOR,
            bytes: p.size * SECTOR,
        }
    }
}

/// How the image boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Platform {
    /// A PC: GRUB (or another boot loader) from the MBR and/or an EFI system partition.
    Pc {
        gpt: bool,
        /// BIOS can boot it: an MBR disk, or GPT with a BIOS boot partition.
        bios: bool,
        /// It has an EFI system partition (UEFI can boot it).
        esp: bool,
    },
    /// A Raspberry Pi: FAT partition with `config.txt`; kernel files come from the image.
    Raspi { fat: Part },
}

/// What the partition table and the FAT listing say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub platform: Platform,
    /// The root filesystem's partition: the last Linux one.
    pub root: Part,
}

/// The partition whose FAT listing [`detect`] wants (an MBR FAT partition), if any.
pub fn fat_candidate(table: &SfdiskTable) -> Option<Part> {
    if table.label != "dos" {
        return None;
    }
    table
        .partitions
        .iter()
        .enumerate()
        .find(|(_, p)| MBR_FAT_TYPES.contains(&p.type_code.to_ascii_lowercase().as_str()))
        .map(|(i, p)| Part::of(i + 1, p))
}

/// Classifies the image: an MBR whose FAT partition (see [`fat_candidate`]) holds `config.txt`
/// is a Raspberry Pi image; any other MBR, and GPT, are PCs. `fat_listing`: the file names in
/// the FAT partition's top directory (any case).
pub fn detect(table: &SfdiskTable, fat_listing: Option<&[String]>) -> Result<Detected, String> {
    let gpt = match table.label.as_str() {
        "dos" => false,
        "gpt" => true,
        other => {
            return Err(format!(
                "partition table type {other:?}: pigen boot knows MBR (dos) and GPT disks"
            ))
        }
    };
    let is_linux = |p: &SfdiskPartition| {
        if gpt {
            p.type_code.eq_ignore_ascii_case(TYPE_LINUX)
                || GPT_ROOT_TYPES
                    .iter()
                    .any(|t| p.type_code.eq_ignore_ascii_case(t))
        } else {
            p.type_code.eq_ignore_ascii_case("83")
        }
    };
    let root = table
        .partitions
        .iter()
        .enumerate()
        .rfind(|(_, p)| is_linux(p))
        .map(|(i, p)| Part::of(i + 1, p))
        .ok_or_else(|| {
            format!(
                "no Linux partition in the {} partition table: nothing to boot",
                if gpt { "GPT" } else { "MBR" }
            )
        })?;
    let has_type = |t: &str| {
        table
            .partitions
            .iter()
            .any(|p| p.type_code.eq_ignore_ascii_case(t))
    };
    if gpt {
        return Ok(Detected {
            platform: Platform::Pc {
                gpt: true,
                bios: has_type(TYPE_BIOS_BOOT),
                esp: has_type(TYPE_ESP),
            },
            root,
        });
    }
    if let (Some(fat), Some(listing)) = (fat_candidate(table), fat_listing) {
        if listing.iter().any(|n| n.eq_ignore_ascii_case("config.txt")) {
            return Ok(Detected {
                platform: Platform::Raspi { fat },
                root,
            });
        }
    }
    Ok(Detected {
        platform: Platform::Pc {
            gpt: false,
            bios: true,
            esp: has_type("ef"),
        },
        root,
    })
}

/// File names in the top directory from `mdir -b` output (`::/config.txt`, `::/overlays/`);
/// directories are left out.
pub fn parse_mdir(output: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("::/").or_else(|| l.strip_prefix("::")))
        .filter(|n| !n.is_empty() && !n.ends_with('/'))
        .map(str::to_string)
        .collect()
}

/// The architecture an ELF file is for (its header's class and machine).
pub fn elf_arch(header: &[u8]) -> Result<Arch, String> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        other => return Err(format!("unknown ELF byte order {other}")),
    };
    match (header[4], machine) {
        (2, 62) => Ok(Arch::Amd64),
        (1, 3) => Ok(Arch::I386),
        (2, 183) => Ok(Arch::Arm64),
        (1, 40) => Ok(Arch::Armhf),
        (class, machine) => Err(format!(
            "ELF class {class}, machine {machine}: not amd64, i386, arm64 or armhf"
        )),
    }
}

/// The target of a symbolic link from `debugfs -R "stat PATH"` output (`Fast link dest:
/// "…"`); `None` when the file is not a (fast) symbolic link.
pub fn debugfs_link_target(stat: &str) -> Option<String> {
    if !stat.contains("Type: symlink") {
        return None;
    }
    let line = stat
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fast link dest:"))?;
    let target = line.trim();
    Some(
        target
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(target)
            .to_string(),
    )
}

/// Where the link at `path` (absolute, inside the image) with `target` points, as an absolute
/// path inside the image with `.` and `..` resolved.
pub fn resolve_link(path: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// File names (not directories) from `debugfs -R "ls -p DIR"` output: lines
/// `/inode/mode/uid/gid/name/size/`.
pub fn parse_debugfs_ls(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.trim().split('/').collect();
            // ["", inode, mode, uid, gid, name, size, ""]
            if fields.len() < 7 {
                return None;
            }
            let mode = u32::from_str_radix(fields[2], 8).ok()?;
            let name = fields[5];
            let regular = mode & 0o170000 == 0o100000;
            (regular && !name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// What `config.txt` says about the kernel (for a Raspberry Pi 3, the board QEMU emulates).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigTxt {
    pub kernel: Option<String>,
    pub initramfs: Option<String>,
    pub arm_64bit: bool,
    pub auto_initramfs: bool,
}

/// Reads `config.txt`: lines in `[all]`, `[pi3]` and before any section count; other
/// sections (other boards, conditional filters) are skipped.
pub fn parse_config_txt(text: &str) -> ConfigTxt {
    let mut config = ConfigTxt::default();
    let mut active = true;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            active = matches!(section.trim(), "all" | "pi3");
            continue;
        }
        if !active {
            continue;
        }
        if let Some(rest) = line.strip_prefix("initramfs") {
            if rest.starts_with(char::is_whitespace) {
                if let Some(file) = rest.split_whitespace().next() {
                    config.initramfs = Some(file.to_string());
                }
                continue;
            }
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            match key.trim() {
                "kernel" => config.kernel = Some(value.to_string()),
                "arm_64bit" => config.arm_64bit = value == "1",
                "auto_initramfs" => config.auto_initramfs = value == "1",
                _ => {}
            }
        }
    }
    config
}

/// Where a file QEMU needs comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file in the FAT partition's top directory.
    Fat(String),
    /// A path in the root filesystem.
    Root(String),
}

impl Source {
    /// The file's name without its directory.
    pub fn file_name(&self) -> &str {
        match self {
            Source::Fat(name) => name,
            Source::Root(path) => path.rsplit('/').next().unwrap_or(path),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Fat(name) => write!(f, "{name} (boot partition)"),
            Source::Root(path) => write!(f, "{path} (root filesystem)"),
        }
    }
}

/// How QEMU boots a Raspberry Pi image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiBoot {
    pub machine: PiMachine,
    pub kernel: Source,
    pub initrd: Option<Source>,
    /// `None` for `virt` (QEMU makes the device tree).
    pub dtb: Option<Source>,
    /// The UART the console is on.
    pub serial: PiSerial,
}

/// The serial port a Raspberry Pi image's console is on under QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiSerial {
    /// The PL011, `ttyAMA0`: QEMU's first serial port (raspi2b, virt, and the Raspberry Pi
    /// kernel's own device trees).
    Pl011,
    /// The mini UART, `ttyS1`: QEMU's second serial port on raspi3b. With the mainline device
    /// tree (Debian's kernels) the Pi 3's PL011 belongs to Bluetooth and has no tty.
    MiniUart,
}

impl PiSerial {
    pub fn tty(self) -> &'static str {
        match self {
            PiSerial::Pl011 => "ttyAMA0",
            PiSerial::MiniUart => "ttyS1",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiMachine {
    /// `qemu-system-aarch64 -M raspi3b`: arm64 kernels with a Pi 3 B device tree.
    Raspi3b,
    /// `qemu-system-arm -M raspi2b`: the Raspberry Pi kernel for ARMv7 (`kernel7.img`).
    Raspi2b,
    /// `qemu-system-arm -M virt`: generic ARMv7 kernels (Debian's armmp), virtio disk.
    VirtArm,
    /// `qemu-system-aarch64 -M virt`: an arm64 kernel without a Pi 3 device tree in the image.
    VirtArm64,
}

/// Device trees for the Raspberry Pi 3 B: the mainline name (Debian's kernels) and the
/// Raspberry Pi kernel's.
const PI3_DTBS: &[&str] = &[
    "bcm2837-rpi-3-b.dtb",
    "bcm2710-rpi-3-b.dtb",
    "bcm2837-rpi-3-b-plus.dtb",
    "bcm2710-rpi-3-b-plus.dtb",
];
const PI2_DTBS: &[&str] = &["bcm2709-rpi-2-b.dtb", "bcm2836-rpi-2-b.dtb"];

/// Picks the kernel, initramfs and device tree of a Raspberry Pi image. Supported layouts:
///
/// 1. `config.txt` names the kernel (`kernel=`) and initramfs (`initramfs FILE`) on the boot
///    partition: Debian's raspi-firmware (`vmlinuz-<version>`, `initrd.img-<version>`);
/// 2. the Raspberry Pi firmware's default names: `kernel8.img` (arm64) or `kernel7.img`
///    (armhf) with `initramfs8` / `initramfs7` when present (`auto_initramfs=1` or
///    `initramfs`); Raspberry Pi OS;
/// 3. `vmlinuz-*` and `initrd.img-*` on the boot partition without a `kernel=` line;
/// 4. no kernel on the boot partition: the newest `/boot/vmlinuz-*` and its
///    `/boot/initrd.img-*` in the root filesystem (`root_boot`: names in `/boot`).
///
/// The device tree comes from the boot partition; else `dtb_in_root` is asked for the kernel
/// version's `/usr/lib/linux-image-<version>/broadcom/` (Debian), else the machine is `virt`.
pub fn pi_boot_files(
    arch: Arch,
    fat: &[String],
    config: &ConfigTxt,
    root_boot: &[String],
    dtb_in_root: &dyn Fn(&str) -> Option<String>,
) -> Result<PiBoot, String> {
    let on_fat = |name: &str| fat.iter().find(|n| n.eq_ignore_ascii_case(name)).cloned();
    let arm64 = arch == Arch::Arm64;
    let (default_kernel, default_initramfs) = if arm64 {
        ("kernel8.img", "initramfs8")
    } else {
        ("kernel7.img", "initramfs7")
    };

    let mut kernel = config.kernel.as_deref().and_then(on_fat).map(Source::Fat);
    let mut rpi_kernel = false;
    if kernel.is_none() {
        if let Some(name) = on_fat(default_kernel) {
            kernel = Some(Source::Fat(name));
            rpi_kernel = true;
        }
    }
    if kernel.is_none() {
        if let Some(name) = newest_versioned(fat, "vmlinuz-") {
            kernel = Some(Source::Fat(name));
        }
    }
    if kernel.is_none() {
        if let Some(name) = newest_versioned(root_boot, "vmlinuz-") {
            kernel = Some(Source::Root(format!("/boot/{name}")));
        }
    }
    let Some(kernel) = kernel else {
        return Err(format!(
            "no kernel found: neither config.txt's kernel= ({}), {default_kernel} nor vmlinuz-* on \
             the boot partition, nor /boot/vmlinuz-* in the root filesystem",
            config.kernel.as_deref().unwrap_or("unset")
        ));
    };
    let version = kernel
        .file_name()
        .strip_prefix("vmlinuz-")
        .map(str::to_string);

    let initrd = if let Some(name) = config.initramfs.as_deref().and_then(on_fat) {
        Some(Source::Fat(name))
    } else if rpi_kernel {
        on_fat(default_initramfs).map(Source::Fat)
    } else if let Some(version) = &version {
        let name = format!("initrd.img-{version}");
        match &kernel {
            Source::Fat(_) => on_fat(&name).map(Source::Fat),
            Source::Root(_) => root_boot
                .iter()
                .find(|n| **n == name)
                .map(|n| Source::Root(format!("/boot/{n}"))),
        }
    } else {
        None
    };

    let wanted: &[&str] = if arm64 { PI3_DTBS } else { PI2_DTBS };
    let mut dtb = wanted.iter().find_map(|n| on_fat(n)).map(Source::Fat);
    if dtb.is_none() {
        if let Some(version) = &version {
            dtb = wanted
                .iter()
                .find_map(|n| dtb_in_root(&format!("/usr/lib/linux-image-{version}/broadcom/{n}")))
                .map(Source::Root);
        }
    }
    let machine = match (arm64, &dtb, rpi_kernel) {
        (true, Some(_), _) => PiMachine::Raspi3b,
        (true, None, _) => PiMachine::VirtArm64,
        (false, Some(_), true) => PiMachine::Raspi2b,
        // Debian's armmp kernel: virt is what it is made for; its Pi 2 support under QEMU's
        // raspi2b is untested.
        (false, _, _) => PiMachine::VirtArm,
    };
    let dtb = match machine {
        PiMachine::Raspi3b | PiMachine::Raspi2b => dtb,
        PiMachine::VirtArm | PiMachine::VirtArm64 => None,
    };
    let mainline_pi3 = machine == PiMachine::Raspi3b
        && dtb
            .as_ref()
            .is_some_and(|d| d.file_name().starts_with("bcm2837"));
    let serial = if mainline_pi3 {
        PiSerial::MiniUart
    } else {
        PiSerial::Pl011
    };
    Ok(PiBoot {
        machine,
        kernel,
        initrd,
        dtb,
        serial,
    })
}

/// The name with the highest version among `<prefix><version>` names (Debian's version order
/// approximated: numeric parts compare as numbers).
pub fn newest_versioned(names: &[String], prefix: &str) -> Option<String> {
    names
        .iter()
        .filter(|n| n.starts_with(prefix) && n.len() > prefix.len())
        .max_by(|a, b| version_key(&a[prefix.len()..]).cmp(&version_key(&b[prefix.len()..])))
        .cloned()
}

fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut chars = v.chars().peekable();
    while chars.peek().is_some() {
        let digits: String = std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
        let text: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_ascii_digit())).collect();
        key.push((digits.parse().unwrap_or(0), text));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::image::SfdiskJson;

    fn table(json: &str) -> SfdiskTable {
        serde_json::from_str::<SfdiskJson>(json)
            .unwrap()
            .partitiontable
    }

    const PI_MBR: &str = r#"{"partitiontable":{"label":"dos","id":"0x1a2b3c4d","device":"p.img","unit":"sectors","sectorsize":512,
        "partitions":[{"node":"p.img1","start":8192,"size":1048576,"type":"c","bootable":true},
                      {"node":"p.img2","start":1056768,"size":4194304,"type":"83"}]}}"#;
    const PC_MBR: &str = r#"{"partitiontable":{"label":"dos","id":"0x1a2b3c4d","device":"p.img","unit":"sectors","sectorsize":512,
        "partitions":[{"node":"p.img1","start":2048,"size":4194304,"type":"83","bootable":true}]}}"#;
    const PC_GPT: &str = r#"{"partitiontable":{"label":"gpt","id":"AB","device":"g.img","unit":"sectors","firstlba":34,"lastlba":9,"sectorsize":512,
        "partitions":[{"node":"g.img1","start":2048,"size":2048,"type":"21686148-6449-6E6F-744E-656564454649","uuid":"A"},
                      {"node":"g.img2","start":4096,"size":262144,"type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B","uuid":"B"},
                      {"node":"g.img3","start":266240,"size":4194304,"type":"0FC63DAF-8483-4772-8E79-3D69D8477DE4","uuid":"C"}]}}"#;

    #[test]
    fn raspberry_pi_mbr_with_config_txt() {
        let t = table(PI_MBR);
        let fat = fat_candidate(&t).unwrap();
        assert_eq!(
            fat,
            Part {
                number: 1,
                offset: 8192 * 512,
                bytes: 1048576 * 512
            }
        );
        let listing = parse_mdir("::/bootcode.bin\n::/CONFIG.TXT\n::/overlays/\n");
        assert_eq!(listing, ["bootcode.bin", "CONFIG.TXT"]);
        let d = detect(&t, Some(&listing)).unwrap();
        assert_eq!(d.platform, Platform::Raspi { fat });
        assert_eq!(
            d.root,
            Part {
                number: 2,
                offset: 1056768 * 512,
                bytes: 4194304 * 512
            }
        );
        // A FAT partition without config.txt: a PC.
        let d = detect(&t, Some(&["EFI".to_string()])).unwrap();
        assert_eq!(
            d.platform,
            Platform::Pc {
                gpt: false,
                bios: true,
                esp: false
            }
        );
    }

    #[test]
    fn pc_layouts() {
        let t = table(PC_MBR);
        assert_eq!(fat_candidate(&t), None);
        let d = detect(&t, None).unwrap();
        assert_eq!(
            d.platform,
            Platform::Pc {
                gpt: false,
                bios: true,
                esp: false
            }
        );
        assert_eq!(d.root.number, 1);
        let t = table(PC_GPT);
        let d = detect(&t, None).unwrap();
        assert_eq!(
            d.platform,
            Platform::Pc {
                gpt: true,
                bios: true,
                esp: true
            }
        );
        assert_eq!(d.root.number, 3);
        let uefi_only = PC_GPT.replace(
            "21686148-6449-6E6F-744E-656564454649",
            "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        );
        let d = detect(&table(&uefi_only), None).unwrap();
        assert_eq!(
            d.platform,
            Platform::Pc {
                gpt: true,
                bios: false,
                esp: true
            }
        );
    }

    #[test]
    fn tables_without_a_root() {
        let no_linux = PC_MBR.replace("\"83\"", "\"7\"");
        assert_eq!(
            detect(&table(&no_linux), None).unwrap_err(),
            "no Linux partition in the MBR partition table: nothing to boot"
        );
        let odd = PC_MBR.replace("\"dos\"", "\"sun\"");
        assert!(detect(&table(&odd), None).unwrap_err().contains("\"sun\""));
    }

    #[test]
    fn elf_headers() {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(20, 0);
        h[18] = 62;
        assert_eq!(elf_arch(&h), Ok(Arch::Amd64));
        h[18] = 183;
        assert_eq!(elf_arch(&h), Ok(Arch::Arm64));
        h[4] = 1;
        h[18] = 3;
        assert_eq!(elf_arch(&h), Ok(Arch::I386));
        h[18] = 40;
        assert_eq!(elf_arch(&h), Ok(Arch::Armhf));
        h[18] = 8;
        assert!(elf_arch(&h).unwrap_err().contains("machine 8"));
        assert!(elf_arch(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn symlinks_in_the_image() {
        let stat = "Inode: 14   Type: symlink    Mode:  0777   Flags: 0x0\n\
                    Fast link dest: \"../lib/systemd/systemd\"\n";
        assert_eq!(
            debugfs_link_target(stat).as_deref(),
            Some("../lib/systemd/systemd")
        );
        assert_eq!(debugfs_link_target("Inode: 20   Type: regular"), None);
        assert_eq!(
            resolve_link("/sbin/init", "../lib/systemd/systemd"),
            "/lib/systemd/systemd"
        );
        assert_eq!(
            resolve_link("/sbin/init", "/lib/systemd/systemd"),
            "/lib/systemd/systemd"
        );
        assert_eq!(
            resolve_link("/usr/sbin/init", "../../../../bin/x"),
            "/bin/x"
        );
        assert_eq!(resolve_link("/sbin/init", "./systemd"), "/sbin/systemd");
    }

    #[test]
    fn debugfs_listing() {
        let out = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n\
                   /131/100644/0/0/vmlinuz-6.1.0-18-arm64/31457792/\n\
                   /132/120777/0/0/initrd.img/30/\n/140/040755/0/0/grub//\n";
        assert_eq!(parse_debugfs_ls(out), ["vmlinuz-6.1.0-18-arm64"]);
    }

    #[test]
    fn config_txt_sections() {
        let text = "# Debian raspi-firmware\n[pi4]\nkernel=vmlinuz-pi4\n[all]\narm_64bit=1\n\
                    kernel=vmlinuz-6.1.0-18-arm64\n# comment\n\
                    initramfs initrd.img-6.1.0-18-arm64 followkernel\n[cm4]\nkernel=nope\n";
        assert_eq!(
            parse_config_txt(text),
            ConfigTxt {
                kernel: Some("vmlinuz-6.1.0-18-arm64".into()),
                initramfs: Some("initrd.img-6.1.0-18-arm64".into()),
                arm_64bit: true,
                auto_initramfs: false,
            }
        );
        let rpi = "dtparam=audio=on\narm_64bit=1\nauto_initramfs=1\n";
        let c = parse_config_txt(rpi);
        assert!(c.arm_64bit && c.auto_initramfs && c.kernel.is_none());
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn debian_raspi_firmware_layout() {
        let fat = names(&[
            "config.txt",
            "cmdline.txt",
            "vmlinuz-6.1.0-17-arm64",
            "vmlinuz-6.1.0-18-arm64",
            "initrd.img-6.1.0-18-arm64",
            "initrd.img-6.1.0-17-arm64",
            "bcm2837-rpi-3-b.dtb",
            "bcm2711-rpi-4-b.dtb",
        ]);
        let config = parse_config_txt(
            "arm_64bit=1\nkernel=vmlinuz-6.1.0-17-arm64\ninitramfs initrd.img-6.1.0-17-arm64 followkernel\n",
        );
        let boot = pi_boot_files(Arch::Arm64, &fat, &config, &[], &|_| None).unwrap();
        assert_eq!(
            boot,
            PiBoot {
                machine: PiMachine::Raspi3b,
                kernel: Source::Fat("vmlinuz-6.1.0-17-arm64".into()),
                initrd: Some(Source::Fat("initrd.img-6.1.0-17-arm64".into())),
                dtb: Some(Source::Fat("bcm2837-rpi-3-b.dtb".into())),
                serial: PiSerial::MiniUart,
            }
        );
        // No kernel= line: the newest vmlinuz-* and its initrd.
        let boot = pi_boot_files(Arch::Arm64, &fat, &ConfigTxt::default(), &[], &|_| None).unwrap();
        assert_eq!(boot.kernel, Source::Fat("vmlinuz-6.1.0-18-arm64".into()));
        assert_eq!(
            boot.initrd,
            Some(Source::Fat("initrd.img-6.1.0-18-arm64".into()))
        );
    }

    #[test]
    fn raspberry_pi_os_layout() {
        let fat = names(&[
            "config.txt",
            "kernel8.img",
            "kernel_2712.img",
            "initramfs8",
            "bcm2710-rpi-3-b.dtb",
        ]);
        let config = parse_config_txt("arm_64bit=1\nauto_initramfs=1\n");
        let boot = pi_boot_files(Arch::Arm64, &fat, &config, &[], &|_| None).unwrap();
        assert_eq!(
            boot,
            PiBoot {
                machine: PiMachine::Raspi3b,
                kernel: Source::Fat("kernel8.img".into()),
                initrd: Some(Source::Fat("initramfs8".into())),
                dtb: Some(Source::Fat("bcm2710-rpi-3-b.dtb".into())),
                serial: PiSerial::Pl011,
            }
        );
        let fat = names(&["config.txt", "kernel7.img", "bcm2709-rpi-2-b.dtb"]);
        let boot = pi_boot_files(Arch::Armhf, &fat, &ConfigTxt::default(), &[], &|_| None).unwrap();
        assert_eq!(boot.machine, PiMachine::Raspi2b);
        assert_eq!(boot.serial, PiSerial::Pl011);
        assert_eq!(boot.initrd, None);
        assert_eq!(boot.dtb, Some(Source::Fat("bcm2709-rpi-2-b.dtb".into())));
    }

    #[test]
    fn kernel_in_the_root_filesystem() {
        let root_boot = names(&[
            "config-6.1.0-18-arm64",
            "vmlinuz-6.1.0-9-arm64",
            "vmlinuz-6.1.0-18-arm64",
            "initrd.img-6.1.0-18-arm64",
        ]);
        let dtb = |path: &str| {
            (path == "/usr/lib/linux-image-6.1.0-18-arm64/broadcom/bcm2837-rpi-3-b.dtb")
                .then(|| path.to_string())
        };
        let boot = pi_boot_files(
            Arch::Arm64,
            &names(&["config.txt", "cmdline.txt"]),
            &ConfigTxt::default(),
            &root_boot,
            &dtb,
        )
        .unwrap();
        assert_eq!(
            boot,
            PiBoot {
                machine: PiMachine::Raspi3b,
                kernel: Source::Root("/boot/vmlinuz-6.1.0-18-arm64".into()),
                initrd: Some(Source::Root("/boot/initrd.img-6.1.0-18-arm64".into())),
                dtb: Some(Source::Root(
                    "/usr/lib/linux-image-6.1.0-18-arm64/broadcom/bcm2837-rpi-3-b.dtb".into()
                )),
                serial: PiSerial::MiniUart,
            }
        );
        // armmp: virt, no device tree.
        let boot = pi_boot_files(
            Arch::Armhf,
            &names(&[
                "config.txt",
                "vmlinuz-6.1.0-18-armmp",
                "initrd.img-6.1.0-18-armmp",
                "bcm2836-rpi-2-b.dtb",
            ]),
            &ConfigTxt::default(),
            &[],
            &|_| None,
        )
        .unwrap();
        assert_eq!(boot.machine, PiMachine::VirtArm);
        assert_eq!(boot.serial, PiSerial::Pl011);
        assert_eq!(boot.dtb, None);
        let err = pi_boot_files(
            Arch::Arm64,
            &names(&["config.txt"]),
            &ConfigTxt::default(),
            &[],
            &|_| None,
        )
        .unwrap_err();
        assert!(err.starts_with("no kernel found"), "{err}");
    }

    #[test]
    fn version_order() {
        let n = names(&[
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-18-amd64",
            "vmlinuz-5.10.0-28-amd64",
        ]);
        assert_eq!(
            newest_versioned(&n, "vmlinuz-").as_deref(),
            Some("vmlinuz-6.1.0-18-amd64")
        );
        assert_eq!(newest_versioned(&n, "initrd.img-"), None);
    }
}
