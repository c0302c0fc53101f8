//! End to end (root, network, slow): debootstrap a real amd64 bookworm system with a kernel and
//! GRUB, generate its grub.cfg with the real grub-mkconfig, assemble an MBR image and a GPT
//! (`GPT_BIOS_UEFI=1`) image from it, and boot them in QEMU (TCG) until `login:` appears on the
//! serial console: MBR with SeaBIOS, GPT with SeaBIOS and with OVMF (UEFI).
//!
//! `PIGEN_SKIP_SLOW=1` skips it (printing why). `PIGEN_TEST_EXPORT_TREE=<dir>` uses a copy of
//! an already debootstrapped tree instead of running debootstrap (for quicker reruns).
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pigen::exec::cmd::LogSink;
use pigen::export::image::{assemble, Assembled, Options};
use pigen::export::layout::Table;

const PACKAGES: &str =
    "linux-image-amd64,grub-pc-bin,grub-efi-amd64-bin,systemd-sysv,udev,initramfs-tools,e2fsprogs";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn skip_reason() -> Option<String> {
    if std::env::var_os("PIGEN_SKIP_SLOW").is_some() {
        return Some("PIGEN_SKIP_SLOW is set".into());
    }
    for tool in [
        "debootstrap",
        "qemu-system-x86_64",
        "mkfs.ext4",
        "mkfs.fat",
        "mcopy",
        "sfdisk",
        "e2fsck",
        "fsck.fat",
        "chroot",
    ] {
        if common::which(tool).is_none() {
            return Some(format!("{tool} is not installed (tests/run installs it)"));
        }
    }
    if !Path::new(OVMF).exists() {
        return Some(format!(
            "{OVMF} is missing (package ovmf; tests/run installs it)"
        ));
    }
    None
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The tree: debootstrapped (or copied from `PIGEN_TEST_EXPORT_TREE`), with a root password,
/// fstab placeholders, a serial console and a grub.cfg from grub-mkconfig. The chroot mounts
/// live in this test's private namespace and are gone before the export.
fn prepare_tree(tree: &Path) {
    let started = Instant::now();
    match std::env::var_os("PIGEN_TEST_EXPORT_TREE") {
        Some(src) => run(Command::new("cp").arg("-a").arg(&src).arg(tree)),
        None => run(Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={PACKAGES}"),
                "bookworm",
            ])
            .arg(tree)
            .stdout(Stdio::null())),
    }
    println!("tree ready in {:?}", started.elapsed());
    // debootstrap can leave /proc mounted; the namespace keeps it from the host, and the
    // export refuses a tree with mounts, so take it down.
    for mount in common::mounts_below(tree) {
        run(Command::new("umount").arg(&mount));
    }
    run(Command::new("chroot")
        .arg(tree)
        .args(["sh", "-c", "echo root:pigen | chpasswd"]));
    write(&tree.join("etc/hostname"), "pigen-export-test\n");
    write(
        &tree.join("etc/fstab"),
        "ROOTDEV / ext4 defaults,noatime 0 1\nEFIDEV /boot/efi vfat defaults 0 2\n",
    );
    write(
        &tree.join("etc/default/grub"),
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200\"\n\
         GRUB_TERMINAL=\"serial console\"\n\
         GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n\
         GRUB_DISABLE_OS_PROBER=true\n",
    );
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    // update-grub as a stage would run it: in a chroot whose / is some other filesystem.
    for (dir, args) in [
        ("proc", vec!["-t", "proc", "proc"]),
        ("sys", vec!["--bind", "/sys"]),
        ("dev", vec!["--bind", "/dev"]),
    ] {
        run(Command::new("mount").args(&args).arg(tree.join(dir)));
    }
    run(Command::new("chroot")
        .arg(tree)
        .args(["grub-mkconfig", "-o", "/boot/grub/grub.cfg"]));
    for dir in ["dev", "sys", "proc"] {
        run(Command::new("umount").arg(tree.join(dir)));
    }
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

fn export(base: &Path, tree: &Path, image: &Path, sets: &[&str]) -> Assembled {
    let config = common::config(base, sets);
    let log = LogSink::default();
    let options = Options {
        name: "2026-01-01-export-boot",
        log: &log,
        progress: None,
    };
    let started = Instant::now();
    let made = assemble(&config, tree, image, &options).unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "assembled {} in {:?}:\n{}",
        image.display(),
        started.elapsed(),
        made.summary
    );
    for (phase, took) in &made.timings {
        println!("  {phase}: {took:?}");
    }
    for note in &made.notes {
        println!("  note: {note}");
    }
    made
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
    let mbr = export(&base, &tree, &mbr_image, &common_sets);
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
    let gpt = export(&base, &gpt_tree, &gpt_image, &gpt_sets);
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
