//! `pigen boot` for real (root, network the first time, slow): a debootstrapped amd64 bookworm
//! system with a user, a locale, a keyboard layout, a time zone and a first-boot service that
//! grows the root partition, exported with pigen's `assemble` into an MBR image, booted with
//! `pigen boot` in QEMU (TCG):
//!
//! * every `--expect` holds: exit 0, and the image file is unchanged afterwards;
//! * a GPT export of the same tree (BIOS boot + ESP), compressed with zstd, booted with
//!   `--uefi` (OVMF) and `--expect hostname=wrong`: exit 1, the failure names the check, the
//!   console tail and the transcript are printed; the root grew there too.
//!
//! `PIGEN_SKIP_SLOW=1` skips it (printing why). One boot takes about 1–2 minutes.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::pc_image::{self, run, write};

const HOSTNAME: &str = "pigen-boot-test";
const USER: &str = "alice";
const PASSWORD: &str = "wonder land";

fn skip_reason() -> Option<String> {
    if std::env::var_os("PIGEN_SKIP_SLOW").is_some() {
        return Some("PIGEN_SKIP_SLOW is set".into());
    }
    if let Some(why) = pc_image::missing_tool() {
        return Some(why);
    }
    for tool in ["qemu-system-x86_64", "qemu-img", "debugfs", "zstd"] {
        if common::which(tool).is_none() {
            return Some(format!("{tool} is not installed (tests/run installs it)"));
        }
    }
    if !Path::new("/usr/share/ovmf/OVMF.fd").exists() {
        return Some("OVMF is missing (package ovmf; tests/run installs it)".into());
    }
    None
}

/// What the image is set up to have, beyond hostname and user: the values `--expect` checks.
fn customize(tree: &Path) {
    pc_image::set_password(tree, USER, PASSWORD);
    write(&tree.join("etc/default/locale"), "LANG=\"en_GB.UTF-8\"\n");
    write(
        &tree.join("etc/default/keyboard"),
        "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"de\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n",
    );
    let _ = std::fs::remove_file(tree.join("etc/localtime"));
    std::os::unix::fs::symlink(
        "/usr/share/zoneinfo/Europe/Berlin",
        tree.join("etc/localtime"),
    )
    .unwrap();
    write(&tree.join("etc/timezone"), "Europe/Berlin\n");
    // A first-boot resize as stage2 does it, with the tools minbase + fdisk has: move a GPT
    // backup header to the end of the (bigger) disk, grow the root partition to the end, tell
    // the kernel, grow ext4 online.
    write(
        &tree.join("usr/local/sbin/grow-root"),
        "#!/bin/sh\nset -e\n\
         part=$(findmnt -n -o SOURCE /)\nname=${part#/dev/}\n\
         disk=/dev/$(basename \"$(readlink -f /sys/class/block/$name/..)\")\n\
         number=$(cat /sys/class/block/$name/partition)\n\
         sfdisk --relocate gpt-bak-std \"$disk\" 2>/dev/null || true\n\
         echo ', +' | sfdisk --force --no-reread --no-tell-kernel -N \"$number\" \"$disk\"\n\
         partx -u \"$disk\"\nresize2fs \"$part\"\n",
    );
    run(Command::new("chmod")
        .arg("755")
        .arg(tree.join("usr/local/sbin/grow-root")));
    write(
        &tree.join("etc/systemd/system/grow-root.service"),
        "[Unit]\nDescription=Grow the root filesystem\n\n\
         [Service]\nType=oneshot\nExecStart=/usr/local/sbin/grow-root\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    );
    std::fs::create_dir_all(tree.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/grow-root.service",
        tree.join("etc/systemd/system/multi-user.target.wants/grow-root.service"),
    )
    .unwrap();
}

fn pigen_boot(image: &Path, extra: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .arg("boot")
        .arg(image)
        .args(["--user", USER, "--password", PASSWORD, "--timeout", "600"])
        .args(extra)
        .output()
        .unwrap();
    println!(
        "pigen boot {} {extra:?}: {} after {:?}\n--- stdout\n{}--- stderr\n{}",
        image.display(),
        out.status,
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

common::ns_test!(boot_checks_a_debootstrapped_pc_image, {
    let name = "boot_checks_a_debootstrapped_pc_image";
    if let Some(why) = skip_reason() {
        return common::skip(name, &why);
    }
    let scratch = common::Scratch::new();
    let tree = scratch.path().join("tree");
    pc_image::debootstrapped(&tree);
    customize(&tree);
    pc_image::make_bootable(&tree, HOSTNAME);
    let gpt_tree = scratch.path().join("tree-gpt");
    run(Command::new("cp").arg("-a").arg(&tree).arg(&gpt_tree));
    let sets = ["TARGET_RASPI=0", "TARGET_ARCH=amd64", "IMG_DATE=2026-01-01"];
    let image = scratch.path().join("boot-test.img");
    pc_image::export(&scratch.path().join("base"), &tree, &image, &sets);
    let gpt_image = scratch.path().join("boot-test-gpt.img");
    let mut gpt_sets = sets.to_vec();
    gpt_sets.push("GPT_BIOS_UEFI=1");
    pc_image::export(
        &scratch.path().join("base"),
        &gpt_tree,
        &gpt_image,
        &gpt_sets,
    );
    let before = sha256(&image);
    let transcript = scratch.path().join("console.log");

    let out = pigen_boot(
        &image,
        &[
            "--expect",
            &format!("hostname={HOSTNAME}"),
            "--expect",
            &format!("user={USER}"),
            "--expect",
            "locale=en_GB.utf8",
            "--expect",
            "timezone=Europe/Berlin",
            "--expect",
            "keymap=de",
            "--expect",
            "ssh=disabled",
            "--expect",
            "rootfs=grown",
            "--transcript",
            transcript.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "expected a pass");
    for line in [
        "ok   hostname  pigen-boot-test (as expected)",
        "ok   user      alice (as expected)",
        "ok   locale    en_GB.UTF-8 (as expected)",
        "ok   timezone  Europe/Berlin (as expected)",
        "ok   keymap    de (as expected)",
        "ok   ssh       absent (as expected)",
        "ok   rootfs    grown (as expected); ",
    ] {
        assert!(stdout.contains(line), "missing {line:?}");
    }
    assert!(stdout.contains("PASS ("), "{stdout}");
    let console = std::fs::read_to_string(&transcript).unwrap();
    assert!(console.contains("login:"), "{console}");
    assert!(!console.contains(PASSWORD), "the password was echoed");
    assert_eq!(sha256(&image), before, "pigen boot changed the image");

    // UEFI, a compressed deploy output and an expectation that does not hold.
    run(Command::new("zstd").args(["-q", "-T0"]).arg(&gpt_image));
    let compressed = gpt_image.with_extension("img.zst");
    std::fs::remove_file(&gpt_image).unwrap();
    let out = pigen_boot(&compressed, &["--uefi", "--expect", "hostname=wrong"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected a failure");
    assert!(stdout.contains(": PC x86_64, UEFI (OVMF)\n"), "{stdout}");
    assert!(stdout.contains("       rootfs    grown; "), "{stdout}");
    assert!(
        stdout.contains("FAIL hostname  pigen-boot-test (expected wrong)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hostname is \"pigen-boot-test\", expected \"wrong\""),
        "{stdout}"
    );
    assert!(stderr.contains("last console lines:"), "{stderr}");
    let path = stderr
        .lines()
        .find_map(|l| l.strip_prefix("console transcript: "))
        .expect("the transcript's path");
    assert!(Path::new(path).is_file(), "{path}");
    let _ = std::fs::remove_file(path);
});

// ---------------------------------------------------------------------------------------------
// Detection, without booting (`--dry-run`), on small images made here: no root needed.

/// An ELF header for `machine` (class 2: 64-bit) that `pigen boot` reads the architecture from.
fn elf(class: u8, machine: u16) -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', class, 1, 1, 0];
    h.resize(64, 0);
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

const AARCH64: (u8, u16) = (2, 183);
const ARM: (u8, u16) = (1, 40);
const I386: (u8, u16) = (1, 3);

/// A root tree with `/sbin/init` → `/lib/systemd/systemd` (an ELF header for `arch`) and the
/// extra files given (path, content).
fn root_tree(dir: &Path, arch: (u8, u16), files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir.join("lib/systemd")).unwrap();
    std::fs::create_dir_all(dir.join("sbin")).unwrap();
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    std::fs::write(dir.join("lib/systemd/systemd"), elf(arch.0, arch.1)).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/systemd", dir.join("sbin/init")).unwrap();
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A 64 MiB image: with `fat` files, MBR partition 1 FAT (type c) holding them and partition
/// 2 ext4 from `root`; without, one ext4 partition (a PC image).
fn small_image(image: &Path, fat: Option<&[(&str, &[u8])]>, root: &Path) {
    let f = std::fs::File::create(image).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let (script, root_start) = match fat {
        Some(_) => (
            "label: dos\nlabel-id: 0x1a2b3c4d\nstart=2048, size=32768, type=c\nstart=34816, type=83\n",
            34816u64,
        ),
        None => (
            "label: dos\nlabel-id: 0x1a2b3c4d\nstart=2048, type=83, bootable\n",
            2048,
        ),
    };
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    if let Some(files) = fat {
        run(Command::new("mkfs.fat")
            .args(["--offset", "2048"])
            .arg(image)
            .arg("16384")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()));
        let staging = image.with_extension("fat");
        std::fs::create_dir_all(&staging).unwrap();
        for (name, content) in files {
            std::fs::write(staging.join(name), content).unwrap();
        }
        let mut at = image.as_os_str().to_os_string();
        at.push("@@1048576");
        let names: Vec<_> = files.iter().map(|(n, _)| staging.join(n)).collect();
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&at)
            .args(&names)
            .arg("::/"));
    }
    let size_k = ((64 << 20) - root_start * 512) / 1024;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E"])
        .arg(format!("offset={}", root_start * 512))
        .arg("-d")
        .arg(root)
        .arg(image)
        .arg(format!("{size_k}k")));
}

fn dry_run(image: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["boot", "--dry-run"])
        .arg(image)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("--- stdout\n{stdout}--- stderr\n{stderr}");
    (out.status.code(), stdout, stderr)
}

fn image_tools_missing() -> Option<String> {
    [
        "sfdisk",
        "mkfs.fat",
        "mcopy",
        "mdir",
        "mkfs.ext4",
        "debugfs",
    ]
    .iter()
    .find(|t| common::which(t).is_none())
    .map(|t| format!("{t} is not installed"))
}

const CMDLINE: &[u8] =
    b"console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rw fsck.repair=yes rootwait\n";

#[test]
fn debian_raspi_firmware_layout_boots_as_raspi3b() {
    if let Some(why) = image_tools_missing() {
        return common::skip("debian_raspi_firmware_layout_boots_as_raspi3b", &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    root_tree(&root, AARCH64, &[]);
    let image = dir.path().join("pi.img");
    let config = b"[all]\narm_64bit=1\nkernel=vmlinuz-6.1.0-18-arm64\n\
                   initramfs initrd.img-6.1.0-18-arm64 followkernel\n";
    small_image(
        &image,
        Some(&[
            ("config.txt", config),
            ("cmdline.txt", CMDLINE),
            ("vmlinuz-6.1.0-18-arm64", b"kernel"),
            ("initrd.img-6.1.0-18-arm64", b"initrd"),
            ("bcm2837-rpi-3-b.dtb", b"dtb"),
            ("bcm2711-rpi-4-b.dtb", b"dtb4"),
        ]),
        &root,
    );
    let (code, stdout, _) = dry_run(&image, &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with(
            "Raspberry Pi image (arm64), root filesystem on partition 2 (47 MiB); booting it as \
             Raspberry Pi 3 B (raspi3b); kernel vmlinuz-6.1.0-18-arm64 (boot partition), \
             initramfs initrd.img-6.1.0-18-arm64 (boot partition), device tree \
             bcm2837-rpi-3-b.dtb (boot partition)\nqemu-system-aarch64 -accel tcg -serial null -M raspi3b -m 1G \
             -kernel "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            " -append 'console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rw \
             fsck.repair=yes rootwait console=ttyS1,115200 \
             systemd.wants=serial-getty@ttyS1.service' -drive "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(",format=qcow2,if=sd,cache=unsafe "),
        "{stdout}"
    );
    // KVM cannot run it.
    let (code, _, stderr) = dry_run(&image, &["--accel", "kvm"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("KVM cannot run an ARM guest"), "{stderr}");
}

#[test]
fn kernel_in_the_root_filesystem_and_armhf() {
    if let Some(why) = image_tools_missing() {
        return common::skip("kernel_in_the_root_filesystem_and_armhf", &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    root_tree(
        &root,
        AARCH64,
        &[
            ("boot/vmlinuz-6.1.0-18-arm64", b"kernel"),
            ("boot/initrd.img-6.1.0-18-arm64", b"initrd"),
            (
                "usr/lib/linux-image-6.1.0-18-arm64/broadcom/bcm2837-rpi-3-b.dtb",
                b"dtb",
            ),
        ],
    );
    let image = dir.path().join("pi.img");
    small_image(
        &image,
        Some(&[("config.txt", b"arm_64bit=1\n"), ("cmdline.txt", CMDLINE)]),
        &root,
    );
    let (code, stdout, _) = dry_run(&image, &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(
            "booting it as Raspberry Pi 3 B (raspi3b); kernel /boot/vmlinuz-6.1.0-18-arm64 \
             (root filesystem), initramfs /boot/initrd.img-6.1.0-18-arm64 (root filesystem), \
             device tree /usr/lib/linux-image-6.1.0-18-arm64/broadcom/bcm2837-rpi-3-b.dtb \
             (root filesystem)\n"
        ),
        "{stdout}"
    );

    // Debian armhf (armmp kernel): the generic ARMv7 machine.
    let root = dir.path().join("root-armhf");
    root_tree(&root, ARM, &[]);
    let image = dir.path().join("pi-armhf.img");
    small_image(
        &image,
        Some(&[
            ("config.txt", b"kernel=vmlinuz-6.1.0-18-armmp\n"),
            (
                "cmdline.txt",
                b"console=tty1 root=/dev/mmcblk0p2 rootwait\n",
            ),
            ("vmlinuz-6.1.0-18-armmp", b"kernel"),
            ("initrd.img-6.1.0-18-armmp", b"initrd"),
            ("bcm2836-rpi-2-b.dtb", b"dtb"),
        ]),
        &root,
    );
    let (code, stdout, _) = dry_run(&image, &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("Raspberry Pi image (armhf)") && stdout.contains("generic ARMv7 (virt)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("qemu-system-arm -accel tcg -M virt -cpu cortex-a15"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-append 'console=tty1 root=/dev/vda2 rootwait console=ttyAMA0,115200"),
        "{stdout}"
    );
}

#[test]
fn i386_pc_image_and_bad_input() {
    if let Some(why) = image_tools_missing() {
        return common::skip("i386_pc_image_and_bad_input", &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    root_tree(&root, I386, &[]);
    let image = dir.path().join("pc.img");
    small_image(&image, None, &root);
    let (code, stdout, _) = dry_run(&image, &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with(
            "PC MBR image (i386), root filesystem on partition 1 (63 MiB); booting it as PC i386, \
             BIOS (SeaBIOS)\nqemu-system-i386 -accel tcg -m 1024 -smp 2 "
        ),
        "{stdout}"
    );
    let (code, _, stderr) = dry_run(&image, &["--uefi"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--uefi: the image has no EFI system partition"),
        "{stderr}"
    );

    // Not a disk image: the partition table says so (exit 1).
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let (code, _, stderr) = dry_run(&junk, &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("sfdisk"), "{stderr}");
    // Usage errors (exit 2): a missing file, an unknown check.
    let (code, _, stderr) = dry_run(&dir.path().join("nope.img"), &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("nope.img: No such file or directory"),
        "{stderr}"
    );
    let (code, _, stderr) = dry_run(&image, &["--expect", "host=x"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("pigen: error: --expect \"host=x\": no check named \"host\"; use one of hostname, user, locale, timezone, keymap, ssh, system, rootfs"),
        "{stderr}"
    );
}
