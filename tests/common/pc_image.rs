//! A real, bootable amd64 Debian bookworm system, for the tests that boot images
//! (`tests/export_boot.rs`, `tests/boot.rs`): debootstrapped once (minbase with a kernel, GRUB
//! and systemd) and cached under `CARGO_TARGET_TMPDIR`, made bootable with a serial console
//! and the real `grub-mkconfig`, and exported with pigen's own `assemble`.
//!
//! Needs root, network (the first time) and a private mount namespace (`ns_test!`): making
//! the tree bootable mounts proc, sys and dev into it for `grub-mkconfig`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use pigen::exec::cmd::LogSink;
use pigen::export::image::{assemble, Assembled, Options};

use super::{mounts_below, which};

/// What debootstrap installs besides minbase: a kernel, GRUB for BIOS and UEFI (pigen's export
/// takes the boot code from the tree), systemd with D-Bus (so `systemctl` answers users, as
/// on full images), and fdisk (tests grow the root partition on the first boot with sfdisk).
pub const PACKAGES: &str = "linux-image-amd64,grub-pc-bin,grub-efi-amd64-bin,systemd-sysv,udev,\
                            initramfs-tools,e2fsprogs,fdisk,dbus";
pub const RELEASE: &str = "bookworm";

/// Tools the helpers run.
pub const TOOLS: &[&str] = &[
    "debootstrap",
    "mkfs.ext4",
    "mkfs.fat",
    "mcopy",
    "sfdisk",
    "e2fsck",
    "fsck.fat",
    "chroot",
];

/// Why the helpers cannot run here, if they cannot.
pub fn missing_tool() -> Option<String> {
    TOOLS
        .iter()
        .find(|t| which(t).is_none())
        .map(|t| format!("{t} is not installed (tests/run installs it)"))
}

pub fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Where the debootstrapped tree is cached: named after the package list, so a changed list
/// bootstraps again.
fn cache_dir() -> PathBuf {
    let key = format!("{RELEASE} {PACKAGES}");
    // FNV-1a: stable across runs and Rust versions (unlike DefaultHasher).
    let hash = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("debootstrap-{RELEASE}-amd64-{:08x}", hash as u32))
}

/// A fresh copy of the debootstrapped tree at `tree`: from `PIGEN_TEST_EXPORT_TREE` when set,
/// else from the cache (debootstrapping into it first when it is not there yet).
pub fn debootstrapped(tree: &Path) {
    let started = Instant::now();
    let source = match std::env::var_os("PIGEN_TEST_EXPORT_TREE") {
        Some(src) => PathBuf::from(src),
        None => {
            let cache = cache_dir();
            if !cache.is_dir() {
                let partial = cache.with_extension("partial");
                let _ = std::fs::remove_dir_all(&partial);
                run(Command::new("debootstrap")
                    .args([
                        "--variant=minbase",
                        &format!("--include={PACKAGES}"),
                        RELEASE,
                    ])
                    .arg(&partial)
                    .stdout(Stdio::null()));
                // debootstrap can leave /proc mounted (in this test's namespace).
                for mount in mounts_below(&partial) {
                    run(Command::new("umount").arg(&mount));
                }
                std::fs::rename(&partial, &cache).unwrap();
                println!(
                    "debootstrapped into {} in {:?}",
                    cache.display(),
                    started.elapsed()
                );
            }
            cache
        }
    };
    run(Command::new("cp").arg("-a").arg(&source).arg(tree));
    for mount in mounts_below(tree) {
        run(Command::new("umount").arg(&mount));
    }
    println!("tree ready in {:?}", started.elapsed());
}

/// Makes `tree` bootable as a stage would: `hostname`, fstab placeholders, GRUB on the serial
/// console and a grub.cfg from grub-mkconfig (run in a chroot whose / is some other
/// filesystem). The chroot mounts are gone before it returns.
pub fn make_bootable(tree: &Path, hostname: &str) {
    write(&tree.join("etc/hostname"), &format!("{hostname}\n"));
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

/// Sets `user`'s password in the tree (`root` included), creating the user (with a home and
/// bash) when missing.
pub fn set_password(tree: &Path, user: &str, password: &str) {
    if user != "root" {
        run(Command::new("chroot")
            .arg(tree)
            .args(["useradd", "-m", "-s", "/bin/bash", user]));
    }
    run(Command::new("chroot").arg(tree).args([
        "sh",
        "-c",
        &format!("echo '{user}:{password}' | chpasswd"),
    ]));
}

/// Assembles `image` from `tree` with pigen's export, configured by `sets` (`NAME=value`).
pub fn export(base: &Path, tree: &Path, image: &Path, sets: &[&str]) -> Assembled {
    let config = super::config(base, sets);
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
