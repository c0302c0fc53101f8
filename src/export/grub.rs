//! GRUB for PC images, installed without `grub-install` (which needs the image attached as a
//! block device and `/dev` in the chroot):
//!
//! * BIOS: `grub-mkimage -O i386-pc` run inside the target tree (so the tree's GRUB version
//!   builds its own image) makes `core.img` with the root partition as prefix relative to the
//!   boot disk (`(,msdos1)/boot/grub`, `(,gpt3)/boot/grub`). The first 440 bytes of the tree's
//!   `boot.img` go over the image's MBR (partition table and disk identifier stay), patched as
//!   `grub-bios-setup` patches them: the sector of `core.img` and the boot-drive workaround
//!   for hard disks. `core.img` goes to sector 1 (MBR: the gap before the first partition at
//!   4 MiB) or into the BIOS boot partition (GPT), its first sector's block list pointing at
//!   the rest of it. (`grub-bios-setup` itself needs `/dev` and probes the device holding its
//!   directory, so it cannot work on a plain image file.)
//! * UEFI: `grub-mkimage -O x86_64-efi` (`i386-efi`) → `EFI/BOOT/BOOTX64.EFI` (`BOOTIA32.EFI`)
//!   on the ESP, the removable-media path every firmware boots, with `EFI/BOOT/grub.cfg`
//!   finding the root filesystem by its UUID (label `ROOTFS` as fallback) and loading its
//!   `/boot/grub/grub.cfg`.
//! * As grub-install does, the modules go to `/boot/grub/<platform>/` in the tree, so
//!   `insmod` in the tree's `grub.cfg` finds them.
//! * The tree's `/boot/grub/grub.cfg` (written by `update-grub` in a stage, inside a chroot
//!   where `/` was another filesystem) names the filesystem UUID of that stage; it is pointed
//!   at the exported root filesystem's UUID.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context};

use super::fs::{in_tree, mkdir_in_tree, replace_file, write_new_file};
use super::layout::{Layout, Role, Table, Target, SECTOR};
use crate::exec::cmd::{Cmd, LogSink};

/// Modules built into the BIOS core image: enough to read the root filesystem and run its
/// grub.cfg even if `/boot/grub/i386-pc` is missing.
pub const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "part_gpt",
    "ext2",
    "search",
    "search_fs_uuid",
    "search_label",
    "normal",
    "linux",
    "configfile",
    "echo",
    "test",
];

/// Modules built into the EFI image.
pub const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "search",
    "search_fs_uuid",
    "search_label",
    "normal",
    "linux",
    "configfile",
    "echo",
    "test",
    "gzio",
    "all_video",
    "efi_gop",
];

/// Offsets in `boot.img` (grub-core/boot/i386/pc/boot.S).
const BOOT_KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE_CHECK: usize = 0x66;
/// Boot code ends here; the disk identifier and partition table follow.
pub const MBR_CODE_BYTES: usize = 440;
/// The first block list entry at the end of core.img's first sector (diskboot.S):
/// start (u64), length (u16), segment (u16).
const CORE_BLOCKLIST: usize = 0x200 - 12;

/// What the image gets from GRUB.
#[derive(Clone, Debug)]
pub struct GrubImages {
    pub boot_img: Vec<u8>,
    pub core_img: Vec<u8>,
    /// `(file name in EFI/BOOT, image)`.
    pub efi: Option<(&'static str, Vec<u8>)>,
}

/// GRUB's prefix in the BIOS core image: the root partition of the boot disk.
pub fn bios_prefix(layout: &Layout) -> String {
    let number = layout.root_partition().number;
    match layout.table {
        Table::Mbr { .. } => format!("(,msdos{number})/boot/grub"),
        Table::Gpt { .. } => format!("(,gpt{number})/boot/grub"),
    }
}

/// `EFI/BOOT/grub.cfg`: find the root filesystem, continue with its GRUB configuration.
pub fn esp_grub_cfg(root_fs_uuid: &str, root_label: &str) -> String {
    format!(
        "# Written by pigen: find the root filesystem and load its GRUB configuration.\n\
         if search --no-floppy --fs-uuid --set=root {root_fs_uuid}; then\n\
         \x20   true\n\
         else\n\
         \x20   search --no-floppy --label --set=root {root_label}\n\
         fi\n\
         set prefix=($root)/boot/grub\n\
         configfile $prefix/grub.cfg\n"
    )
}

/// Copies the GRUB modules of `platform` from `/usr/lib/grub/<platform>` to
/// `/boot/grub/<platform>` in the tree, as grub-install does. Errors when the tree lacks them,
/// naming the package.
pub fn install_modules(tree: &Path, platform: &str, package: &str) -> anyhow::Result<()> {
    let Some(src) = in_tree(tree, &format!("/usr/lib/grub/{platform}"))? else {
        bail!(
            "the tree has no /usr/lib/grub/{platform}: install {package} in a stage (GRUB for \
             a PC image comes from the image itself)"
        );
    };
    let dst = mkdir_in_tree(tree, &format!("/boot/grub/{platform}"))?;
    let mut names: Vec<String> = fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mod") || n.ends_with(".lst"))
        .collect();
    names.sort();
    for name in names {
        let content = fs::read(src.join(&name))?;
        write_new_file(&dst, &name, &content, 0o644)?;
    }
    Ok(())
}

/// Runs `grub-mkimage` inside the tree for the BIOS core image and, for GPT layouts, the EFI
/// image; keeps copies of `core.img` and `boot.img` in `/boot/grub/i386-pc` (as grub-install).
pub fn make_images(tree: &Path, layout: &Layout, log: &LogSink) -> anyhow::Result<GrubImages> {
    let boot_path = in_tree(tree, "/usr/lib/grub/i386-pc/boot.img")?.context(
        "the tree has no /usr/lib/grub/i386-pc/boot.img: install grub-pc-bin in a stage",
    )?;
    let boot_img = fs::read(&boot_path)?;
    let dir_name = format!("pigen-grub-{}", std::process::id());
    let tmp = mkdir_in_tree(tree, &format!("/tmp/{dir_name}"))?;
    let result = (|| {
        let inside = format!("/tmp/{dir_name}");
        Cmd::new("chroot")
            .arg(tree)
            .args(["grub-mkimage", "-O", "i386-pc", "-o"])
            .arg(format!("{inside}/core.img"))
            .arg("-p")
            .arg(bios_prefix(layout))
            .args(BIOS_MODULES)
            .output(log)?;
        let core_img = fs::read(tmp.join("core.img"))?;
        let efi = match layout.target {
            Target::PcGpt(arch) => {
                let file = arch.removable_file();
                Cmd::new("chroot")
                    .arg(tree)
                    .args(["grub-mkimage", "-O", arch.grub_platform(), "-o"])
                    .arg(format!("{inside}/{file}"))
                    .args(["-p", "/EFI/BOOT"])
                    .args(EFI_MODULES)
                    .output(log)?;
                Some((file, fs::read(tmp.join(file))?))
            }
            _ => None,
        };
        anyhow::Ok(GrubImages {
            boot_img,
            core_img,
            efi,
        })
    })();
    let _ = fs::remove_dir_all(&tmp);
    let images = result?;
    let dir = mkdir_in_tree(tree, "/boot/grub/i386-pc")?;
    write_new_file(&dir, "boot.img", &images.boot_img, 0o644)?;
    write_new_file(&dir, "core.img", &images.core_img, 0o644)?;
    Ok(images)
}

/// `boot.img` with the sector of core.img filled in and the boot-drive check enabled (what
/// grub-bios-setup does for a hard disk).
pub fn patch_boot_img(boot_img: &[u8], core_sector: u64) -> anyhow::Result<Vec<u8>> {
    if boot_img.len() != 512 || boot_img[510..] != [0x55, 0xaa] {
        bail!("boot.img is not a 512-byte boot sector");
    }
    let mut b = boot_img.to_vec();
    b[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&core_sector.to_le_bytes());
    // Replace the jump over the check by two nops: a BIOS passing a bogus drive number in DL
    // (not 0x80..) then boots from 0x80.
    b[BOOT_DRIVE_CHECK] = 0x90;
    b[BOOT_DRIVE_CHECK + 1] = 0x90;
    Ok(b)
}

/// `core.img` whose first sector loads the rest from `core_sector + 1` on.
pub fn patch_core_img(core_img: &[u8], core_sector: u64) -> anyhow::Result<Vec<u8>> {
    if core_img.len() < 1024 {
        bail!("core.img is too short ({} bytes)", core_img.len());
    }
    let mut c = core_img.to_vec();
    let at = CORE_BLOCKLIST;
    let start = u64::from_le_bytes(c[at..at + 8].try_into().expect("8 bytes"));
    let len = u16::from_le_bytes(c[at + 8..at + 10].try_into().expect("2 bytes"));
    let sectors = core_img.len().div_ceil(SECTOR as usize) as u64;
    if start != 2 || u64::from(len) != sectors - 1 {
        bail!(
            "core.img's block list is not the one grub-mkimage writes (start {start}, length \
             {len}, expected 2 and {}): unknown GRUB version",
            sectors - 1
        );
    }
    c[at..at + 8].copy_from_slice(&(core_sector + 1).to_le_bytes());
    Ok(c)
}

/// Where core.img goes: `(first sector, sectors available)`.
pub fn core_area(layout: &Layout) -> (u64, u64) {
    match layout.partition(Role::BiosBoot) {
        Some(p) => (p.start, p.size),
        None => {
            let first = layout
                .partitions
                .iter()
                .map(|p| p.start)
                .min()
                .unwrap_or(2048);
            (1, first - 1)
        }
    }
}

/// Writes the BIOS boot code: boot.img's code over the MBR, core.img into its area.
pub fn write_bios_boot(image: &Path, layout: &Layout, images: &GrubImages) -> anyhow::Result<()> {
    let (sector, room) = core_area(layout);
    let sectors = images.core_img.len().div_ceil(SECTOR as usize) as u64;
    if sectors > room {
        bail!(
            "GRUB's core.img ({} bytes) does not fit the {} sectors before the first partition",
            images.core_img.len(),
            room
        );
    }
    let boot = patch_boot_img(&images.boot_img, sector)?;
    let core = patch_core_img(&images.core_img, sector)?;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr)?;
    if mbr[510..] != [0x55, 0xaa] {
        bail!("{} has no partition table to keep", image.display());
    }
    mbr[..MBR_CODE_BYTES].copy_from_slice(&boot[..MBR_CODE_BYTES]);
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&mbr)?;
    f.seek(SeekFrom::Start(sector * SECTOR))?;
    f.write_all(&core)?;
    f.sync_all()?;
    Ok(())
}

/// Points a `grub.cfg` made by `update-grub` in a stage at the exported root filesystem:
///
/// * every filesystem UUID it searches for (`search … --fs-uuid … <uuid>`,
///   `search.fs_uuid <uuid>`) or passes as `root=UUID=<uuid>` becomes `fs_uuid`;
/// * on kernel lines (`linux`, `linux16`, `linuxefi`), a root given as a device
///   (`root=/dev/…`, what grub-mkconfig writes when the stage's device had no UUID link),
///   `root=PARTUUID=…` or the placeholder `root=ROOTDEV` becomes `root=PARTUUID=<partuuid>`.
///
/// Returns the new text and what was replaced.
pub fn retarget_grub_cfg(text: &str, fs_uuid: &str, partuuid: &str) -> (String, Vec<String>) {
    let mut old_uuids: Vec<String> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"search") if words.iter().any(|w| *w == "--fs-uuid" || *w == "-u") => {
                if let Some(last) = words.last().filter(|w| !w.starts_with('-')) {
                    old_uuids.push(last.to_string());
                }
            }
            Some(&"search.fs_uuid") => {
                if let Some(u) = words.get(1) {
                    old_uuids.push(u.to_string());
                }
            }
            _ => {}
        }
        old_uuids.extend(
            words
                .iter()
                .filter_map(|w| w.strip_prefix("root=UUID="))
                .map(str::to_string),
        );
    }
    let mut replaced = Vec::new();
    let mut out = text.to_string();
    old_uuids.retain(|o| o != fs_uuid);
    old_uuids.sort();
    old_uuids.dedup();
    for old in old_uuids {
        out = out.replace(&old, fs_uuid);
        replaced.push(format!("UUID {old} -> {fs_uuid}"));
    }
    let new_root = format!("root=PARTUUID={partuuid}");
    let mut lines = String::with_capacity(out.len());
    for line in out.split_inclusive('\n') {
        let kernel_line = matches!(
            line.split_whitespace().next(),
            Some("linux" | "linux16" | "linuxefi")
        );
        if !kernel_line {
            lines.push_str(line);
            continue;
        }
        let mut rewritten = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(at) = rest.find("root=") {
            let boundary = at == 0 || rest[..at].ends_with(char::is_whitespace);
            let value_end = rest[at..]
                .find(char::is_whitespace)
                .map_or(rest.len(), |e| at + e);
            let word = &rest[at..value_end];
            let value = &word["root=".len()..];
            let device =
                value.starts_with("/dev/") || value.starts_with("PARTUUID=") || value == "ROOTDEV";
            rewritten.push_str(&rest[..at]);
            if boundary && device && word != new_root {
                rewritten.push_str(&new_root);
                replaced.push(format!("{word} -> {new_root}"));
            } else {
                rewritten.push_str(word);
            }
            rest = &rest[value_end..];
        }
        rewritten.push_str(rest);
        lines.push_str(&rewritten);
    }
    replaced.sort();
    replaced.dedup();
    (lines, replaced)
}

/// Applies [`retarget_grub_cfg`] to the tree's `/boot/grub/grub.cfg`. Returns notes; a tree
/// without one gets a note saying so (GRUB then stops at its prompt).
pub fn retarget_tree_grub_cfg(
    tree: &Path,
    fs_uuid: &str,
    partuuid: &str,
) -> anyhow::Result<Vec<String>> {
    let Some(path) = in_tree(tree, "/boot/grub/grub.cfg")? else {
        return Ok(vec![
            "/boot/grub/grub.cfg is missing: GRUB will stop at its prompt (run update-grub in \
             a stage)"
                .into(),
        ]);
    };
    let meta = fs::symlink_metadata(&path)?;
    if !meta.is_file() {
        bail!("/boot/grub/grub.cfg in the tree is not a regular file");
    }
    let text = fs::read_to_string(&path).context("reading /boot/grub/grub.cfg")?;
    let (new, replaced) = retarget_grub_cfg(&text, fs_uuid, partuuid);
    if new != text {
        replace_file(&path, new.as_bytes(), &meta)?;
    }
    Ok(replaced
        .into_iter()
        .map(|r| format!("/boot/grub/grub.cfg: {r}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xeb;
        b[BOOT_KERNEL_SECTOR] = 1;
        b[BOOT_DRIVE_CHECK] = 0xeb;
        b[BOOT_DRIVE_CHECK + 1] = 0x05;
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    fn core_img(sectors: usize) -> Vec<u8> {
        let mut c = vec![0xccu8; sectors * 512 - 100];
        c[CORE_BLOCKLIST..CORE_BLOCKLIST + 8].copy_from_slice(&2u64.to_le_bytes());
        c[CORE_BLOCKLIST + 8..CORE_BLOCKLIST + 10]
            .copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
        c[CORE_BLOCKLIST + 10..CORE_BLOCKLIST + 12].copy_from_slice(&0x0820u16.to_le_bytes());
        c
    }

    #[test]
    fn boot_img_gets_core_sector_and_drive_check() {
        let b = patch_boot_img(&boot_img(), 2048).unwrap();
        assert_eq!(&b[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&b[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(b[0], 0xeb);
        assert!(patch_boot_img(&[0u8; 512], 1).is_err());
    }

    #[test]
    fn core_img_block_list_points_after_its_first_sector() {
        let c = patch_core_img(&core_img(269), 2048).unwrap();
        assert_eq!(&c[0x1f4..0x1fc], &2049u64.to_le_bytes());
        assert_eq!(&c[0x1fc..0x1fe], &268u16.to_le_bytes());
        assert_eq!(&c[0x1fe..0x200], &0x0820u16.to_le_bytes());
        let same = patch_core_img(&core_img(10), 1).unwrap();
        assert_eq!(same, core_img(10), "sector 1 is what grub-mkimage assumes");
        let mut odd = core_img(10);
        odd[CORE_BLOCKLIST] = 7;
        assert!(patch_core_img(&odd, 1).is_err());
    }

    #[test]
    fn esp_config() {
        assert_eq!(
            esp_grub_cfg("0123", "ROOTFS"),
            "# Written by pigen: find the root filesystem and load its GRUB configuration.\n\
             if search --no-floppy --fs-uuid --set=root 0123; then\n    true\nelse\n    \
             search --no-floppy --label --set=root ROOTFS\nfi\n\
             set prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n"
        );
    }

    #[test]
    fn grub_cfg_points_at_the_new_filesystem() {
        let cfg = "\
insmod ext2
set root='hd0,msdos1'
if [ x$feature_platform_search_hint = xy ]; then
  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint='hd0,msdos1'  8d1c2a3e-0000-4000-8000-000000000001
else
  search --no-floppy --fs-uuid --set=root 8d1c2a3e-0000-4000-8000-000000000001
fi
\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=UUID=8d1c2a3e-0000-4000-8000-000000000001 ro quiet
menuentry 'x' { linux /vmlinuz root=PARTUUID=deadbeef-01 ro }
menuentry 'y' {
\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=/dev/vda ro console=ttyS0,115200 nfsroot=x
\tlinux /vmlinuz root=ROOTDEV ro
}
echo root=/dev/sda1
";
        let (out, replaced) =
            retarget_grub_cfg(cfg, "11111111-2222-4333-8444-555555555555", "abcd0123-01");
        assert_eq!(
            out,
            "\
insmod ext2
set root='hd0,msdos1'
if [ x$feature_platform_search_hint = xy ]; then
  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint='hd0,msdos1'  11111111-2222-4333-8444-555555555555
else
  search --no-floppy --fs-uuid --set=root 11111111-2222-4333-8444-555555555555
fi
\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=UUID=11111111-2222-4333-8444-555555555555 ro quiet
menuentry 'x' { linux /vmlinuz root=PARTUUID=deadbeef-01 ro }
menuentry 'y' {
\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=PARTUUID=abcd0123-01 ro console=ttyS0,115200 nfsroot=x
\tlinux /vmlinuz root=PARTUUID=abcd0123-01 ro
}
echo root=/dev/sda1
"
        );
        assert_eq!(
            replaced,
            [
                "UUID 8d1c2a3e-0000-4000-8000-000000000001 -> 11111111-2222-4333-8444-555555555555",
                "root=/dev/vda -> root=PARTUUID=abcd0123-01",
                "root=ROOTDEV -> root=PARTUUID=abcd0123-01",
            ]
        );
        let (same, none) =
            retarget_grub_cfg(&out, "11111111-2222-4333-8444-555555555555", "abcd0123-01");
        assert_eq!((same, none.len()), (out, 0));
    }
}
