//! Real builds (root, network to Debian's archive): stage0 = `bootstrap` (debootstrap
//! --variant=minbase), stage1 = debconf, packages, a quilt patch, run.sh and run-chroot.sh —
//! for amd64 natively and for arm64 through qemu-user (binfmt_misc with the F flag).
//! Each takes a few minutes; `PIGEN_SKIP_SLOW=1` skips them (printing why).
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Scratch;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_exec(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn skip_reason() -> Option<String> {
    if !common::is_root() {
        return Some("needs root".into());
    }
    if std::env::var_os("PIGEN_SKIP_SLOW").is_some() {
        return Some("PIGEN_SKIP_SLOW is set".into());
    }
    for tool in [
        "debootstrap",
        "quilt",
        "capsh",
        "qemu-img",
        "qemu-storage-daemon",
        "debugfs",
    ] {
        if common::which(tool).is_none() {
            return Some(format!("{tool} is not installed (tests/run installs it)"));
        }
    }
    None
}

/// Reads files of a stage's qcow2 root without mounting it.
struct Image {
    raw: PathBuf,
}

impl Image {
    fn open(qcow2: &Path, scratch: &Path) -> Image {
        let raw = scratch.join("flat.raw");
        let status = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(qcow2)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(status.success(), "qemu-img convert {}", qcow2.display());
        Image { raw }
    }

    fn debugfs(&self, request: &str) -> String {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.raw)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cat_bytes(&self, path: &str) -> Vec<u8> {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(&self.raw)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        out.stdout
    }

    fn cat(&self, path: &str) -> String {
        self.debugfs(&format!("cat {path}"))
    }
}

fn real_build(arch: &str, elf_machine: u16) {
    let scratch = Scratch::new();
    let base = scratch.path().join("base");
    let stages = base.join("stages");
    write_exec(
        &stages.join("stage0/prerun.sh"),
        "#!/bin/bash -e\n\nbootstrap \"${RELEASE}\" \"${ROOTFS_DIR}\" \"\" --variant=minbase\n",
    );
    let sub = stages.join("stage1/00-setup");
    write_exec(
        &stages.join("stage1/prerun.sh"),
        "#!/bin/bash -e\nif [ ! -d \"${ROOTFS_DIR}\" ]; then\n\tcopy_previous\nfi\n",
    );
    write(
        &sub.join("00-debconf"),
        "tzdata tzdata/Areas select Europe\ntzdata tzdata/Zones/Europe select ${TIMEZONE_CITY}\n",
    );
    write(&sub.join("00-packages"), "tzdata\nless # a pager\n");
    write(&sub.join("00-patches/series"), "01-issue.diff\n");
    write(&sub.join("00-run.sh"), "#!/bin/bash -e\ninstall -m 644 /dev/null \"${ROOTFS_DIR}/etc/from-run-sh\"\necho \"${TARGET_HOSTNAME}\" > \"${ROOTFS_DIR}/etc/hostname\"\n");
    std::fs::set_permissions(
        sub.join("00-run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(
        &sub.join("00-run-chroot.sh"),
        "dpkg --print-architecture > /etc/chroot-arch\nuname -m > /etc/chroot-uname\n",
    );
    write(&base.join("build.cfg"), &format!(
        "IMG_NAME=real-{arch}\nTARGET_RASPI=0\nTARGET_ARCH={arch}\nRELEASE=bookworm\nTARGET_HOSTNAME=real-{arch}\nTIMEZONE_CITY=Berlin\nSTAGE_LIST=\"stage0 stage1\"\nBASE_QCOW2_SIZE=4G\n"
    ));
    // The patch needs /etc/issue's content as debootstrap leaves it: written after stage0.
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["build", "-c"])
        .arg(base.join("build.cfg"))
        .arg("--set")
        .arg("STAGE_LIST=stage0")
        .current_dir(&base)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stage0:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let work = base.join(format!("work/real-{arch}"));
    let issue = Image::open(&work.join("image-stage0.qcow2"), scratch.path()).cat("/etc/issue");
    assert!(issue.starts_with("Debian GNU/Linux 12"), "{issue:?}");
    let first = issue.lines().next().unwrap();
    write(
        &sub.join("00-patches/01-issue.diff"),
        &format!("--- a/rootfs/etc/issue\n+++ b/rootfs/etc/issue\n@@ -1,2 +1,2 @@\n-{first}\n+Built by pigen \\n \\l\n \n"),
    );

    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["build", "-c"])
        .arg(base.join("build.cfg"))
        .args(["--set", "SKIP_STAGE_LIST=stage0"])
        .current_dir(&base)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stage1:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let image = Image::open(&work.join("image-stage1.qcow2"), scratch.path());
    assert_eq!(image.cat("/etc/chroot-arch"), format!("{arch}\n"));
    assert_eq!(image.cat("/etc/hostname"), format!("real-{arch}\n"));
    assert!(
        image.cat("/etc/issue").starts_with("Built by pigen"),
        "{}",
        image.cat("/etc/issue")
    );
    // debconf-set-selections stored the value expanded in the chroot (tzdata itself may be
    // installed already, so its postinst need not have run).
    let debconf = image.cat("/var/cache/debconf/config.dat");
    assert!(
        debconf
            .contains("Name: tzdata/Zones/Europe\nTemplate: tzdata/Zones/Europe\nValue: Berlin\n"),
        "debconf database: {debconf}"
    );
    let status = image.cat("/var/lib/dpkg/status");
    assert!(
        status.contains("Package: less\nStatus: install ok installed"),
        "less installed"
    );
    assert!(
        !image
            .debugfs("ls -l /var/cache/apt/archives")
            .contains(".deb"),
        "apt-get clean ran"
    );
    assert!(
        image.cat("/etc/resolv.conf").is_empty(),
        "no host resolv.conf in the image"
    );
    // The installed binary is for the target architecture.
    let bytes = image.cat_bytes("/usr/bin/less");
    assert!(bytes.len() > 20 && &bytes[..4] == b"\x7fELF");
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    assert_eq!(machine, elf_machine, "ELF machine of /usr/bin/less");
    // Nothing of qemu was copied into the root filesystem.
    assert!(
        !image.debugfs("ls /usr/bin").contains("qemu-"),
        "no qemu binary in the image"
    );
}

#[test]
fn real_debootstrap_two_stages_amd64() {
    if let Some(reason) = skip_reason() {
        common::skip("real_debootstrap_two_stages_amd64", &reason);
        return;
    }
    real_build("amd64", 62);
}

#[test]
fn real_debootstrap_two_stages_arm64() {
    if let Some(reason) = skip_reason() {
        common::skip("real_debootstrap_two_stages_arm64", &reason);
        return;
    }
    if common::which("qemu-aarch64-static")
        .or_else(|| common::which("qemu-aarch64"))
        .is_none()
    {
        common::skip(
            "real_debootstrap_two_stages_arm64",
            "no qemu-aarch64 user emulator (apt-get install qemu-user-static)",
        );
        return;
    }
    real_build("arm64", 183);
}
