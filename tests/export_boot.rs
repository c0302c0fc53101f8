//! End to end (root, network, slow): debootstrap a real amd64 bookworm system with a kernel and
//! GRUB, generate its grub.cfg with the real grub-mkconfig, assemble an MBR image and a GPT
//! (`GPT_BIOS_UEFI=1`) image from it, and boot them in QEMU (TCG) until `login:` appears on the
//! serial console: MBR with SeaBIOS, GPT with SeaBIOS and with OVMF (UEFI).
//!
//! `PIGEN_SKIP_SLOW=1` skips it (printing why). The debootstrapped tree is cached under
//! `CARGO_TARGET_TMPDIR` (see `common::pc_image`); `PIGEN_TEST_EXPORT_TREE=<dir>` uses a copy
//! of another already debootstrapped tree instead.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pc_image::{self, run};
use pigen::export::image::Assembled;
use pigen::export::layout::Table;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn skip_reason() -> Option<String> {
    if std::env::var_os("PIGEN_SKIP_SLOW").is_some() {
        return Some("PIGEN_SKIP_SLOW is set".into());
    }
    if let Some(why) = pc_image::missing_tool() {
        return Some(why);
    }
    if common::which("qemu-system-x86_64").is_none() {
        return Some("qemu-system-x86_64 is not installed (tests/run installs it)".into());
    }
    if !Path::new(OVMF).exists() {
        return Some(format!(
            "{OVMF} is missing (package ovmf; tests/run installs it)"
        ));
    }
    None
}

/// The tree: debootstrapped (cached, or copied from `PIGEN_TEST_EXPORT_TREE`), with a root
/// password, fstab placeholders, a serial console and a grub.cfg from grub-mkconfig.
fn prepare_tree(tree: &Path) {
    pc_image::debootstrapped(tree);
    pc_image::set_password(tree, "root", "pigen");
    pc_image::make_bootable(tree, "pigen-export-test");
}

/// Every kernel line of the tree's grub.cfg boots the exported root.
fn assert_grub_cfg_targets(tree: &Path, made: &Assembled) {
    let cfg = std::fs::read_to_string(tree.join("boot/grub/grub.cfg")).unwrap();
    let root = &made.layout.root_partition().partuuid;
    let kernel_lines: Vec<&str> = cfg
        .lines()
        .filter(|l| l.trim_start().starts_with("linux"))
        .collect();
    assert!(!kernel_lines.is_empty(), "{cfg}");
    for line in kernel_lines {
        assert!(
            line.contains(&format!("root=PARTUUID={root} "))
                || line.contains(&format!("root=UUID={} ", made.root_fs_uuid)),
            "{line}"
        );
    }
}

/// Boots `image` in QEMU until `login:` appears on the serial console, or the timeout.
fn boot(image: &Path, uefi: bool, serial: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel", "tcg", "-m", "1024", "-smp", "2", "-display", "none",
    ])
    .args(["-monitor", "none", "-no-reboot", "-net", "none"])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    .arg("-drive")
    .arg(format!("file={},format=raw", image.display()))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if uefi {
        cmd.args(["-bios", OVMF]);
    }
    let mut child = cmd.spawn().map_err(|e| format!("qemu: {e}"))?;
    let result = loop {
        std::thread::sleep(Duration::from_secs(2));
        let text = std::fs::read(serial).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        if text.contains("login:") {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("qemu exited ({status}) before login:"));
        }
        if started.elapsed() > BOOT_TIMEOUT {
            break Err(format!("no login: after {BOOT_TIMEOUT:?}"));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    if result.is_err() {
        let text = std::fs::read(serial).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "serial console tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    result
}

common::ns_test!(mbr_and_gpt_images_boot_to_login, {
    let name = "mbr_and_gpt_images_boot_to_login";
    if let Some(why) = skip_reason() {
        return common::skip(name, &why);
    }
    let scratch = common::Scratch::new();
    let base = scratch.path().join("base");
    let tree = scratch.path().join("tree");
    prepare_tree(&tree);
    let gpt_tree = scratch.path().join("tree-gpt");
    run(Command::new("cp").arg("-a").arg(&tree).arg(&gpt_tree));

    let common_sets = ["TARGET_RASPI=0", "TARGET_ARCH=amd64", "IMG_DATE=2026-01-01"];
    let mbr_image = scratch.path().join("mbr.img");
    let mbr = pc_image::export(&base, &tree, &mbr_image, &common_sets);
    assert!(matches!(mbr.layout.table, Table::Mbr { .. }));
    assert_eq!(mbr.layout.partitions.len(), 1);
    let fstab = std::fs::read_to_string(tree.join("etc/fstab")).unwrap();
    assert!(
        fstab.starts_with(&format!("PARTUUID={} / ext4", mbr.partuuids[0].1)),
        "{fstab}"
    );
    assert!(fstab.contains("# pigen: no EFIDEV partition in this image: EFIDEV /boot/efi"));
    assert_grub_cfg_targets(&tree, &mbr);

    let mut gpt_sets = common_sets.to_vec();
    gpt_sets.push("GPT_BIOS_UEFI=1");
    let gpt_image = scratch.path().join("gpt.img");
    let gpt = pc_image::export(&base, &gpt_tree, &gpt_image, &gpt_sets);
    assert!(matches!(gpt.layout.table, Table::Gpt { .. }));
    assert_eq!(gpt.layout.partitions.len(), 3);
    assert_grub_cfg_targets(&gpt_tree, &gpt);
    let fstab = std::fs::read_to_string(gpt_tree.join("etc/fstab")).unwrap();
    assert!(
        fstab.contains(&format!("PARTUUID={} /boot/efi vfat", gpt.partuuids[1].1)),
        "{fstab}"
    );

    let mut failures = Vec::new();
    for (what, image, uefi) in [
        ("MBR, BIOS", &mbr_image, false),
        ("GPT, BIOS", &gpt_image, false),
        ("GPT, UEFI", &gpt_image, true),
    ] {
        let serial: PathBuf = scratch
            .path()
            .join(format!("serial-{}.log", what.replace(", ", "-")));
        match boot(image, uefi, &serial) {
            Ok(took) => println!("{what}: login: after {took:?}"),
            Err(e) => {
                println!("{what}: {e}");
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
});
