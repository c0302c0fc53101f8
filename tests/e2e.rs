//! End to end (root, network, QEMU; minutes): build the shipped example configs with the stock
//! stages, check each image's hygiene without mounting it, then boot it with `pigen boot` and
//! check over the serial console that every configured value is visible on the running system.
//!
//! - `debian_amd64_lite_builds_and_boots`: `examples/debian-amd64-lite.cfg` (about 4 minutes);
//! - `raspi_arm64_debian_firmware_builds_and_boots`: `examples/raspi-arm64-debian-firmware-lite.cfg`
//!   through qemu-user, booted on QEMU's `raspi3b` (about 15 minutes; the one mkinitramfs
//!   under qemu-user takes about half of it).
//!
//! The two run one after the other (the machine they were measured on has two cores).
//! `PIGEN_SKIP_SLOW=1` skips both, `PIGEN_SKIP_RASPI_E2E=1` the Raspberry Pi one.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::Scratch;

/// One end-to-end build at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn skip_reason(repo: &Path, tools: &[&str]) -> Option<String> {
    if !common::is_root() {
        return Some("needs root".into());
    }
    if std::env::var_os("PIGEN_SKIP_SLOW").is_some() {
        return Some("PIGEN_SKIP_SLOW is set".into());
    }
    if !repo.join("stages/stage2/EXPORT_IMAGE").exists() {
        return Some("the stock stage trees are not in this checkout".into());
    }
    for tool in tools {
        if common::which(tool).is_none() {
            return Some(format!("{tool} is not installed (tests/run installs it)"));
        }
    }
    None
}

/// Whether `needle` occurs anywhere in the file (read in chunks).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&buf[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep);
    }
}

/// An example built into a scratch directory: `pigen build -c EXAMPLE --set ...` with
/// `IMG_FILENAME=e2e` and no compression.
struct Built {
    _scratch: Scratch,
    work: PathBuf,
    /// `deploy/e2e/`.
    dir: PathBuf,
    image: PathBuf,
    root: PathBuf,
}

fn build_example(repo: &Path, example: &str, sets: &[String]) -> Built {
    let scratch = Scratch::new();
    let work = scratch.path().join("work");
    let deploy = scratch.path().join("deploy");
    let mut build = Command::new(env!("CARGO_BIN_EXE_pigen"));
    build
        .args(["build", "-c", example])
        .arg("--set")
        .arg(format!("WORK_DIR={}", work.display()))
        .arg("--set")
        .arg(format!("DEPLOY_DIR={}", deploy.display()))
        .args([
            "--set",
            "IMG_FILENAME=e2e",
            "--set",
            "DEPLOY_COMPRESSION=none",
        ])
        .current_dir(repo)
        .stdin(Stdio::null());
    for set in sets {
        build.arg("--set").arg(set);
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "build of {example} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = deploy.join("e2e");
    let image = dir.join("e2e-lite.img");
    let root = dir.join("e2e-lite.root-ext4.img");
    assert!(
        image.exists() && root.exists(),
        "deployed: {:?}",
        std::fs::read_dir(&dir).map(|d| d.count())
    );
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    Built {
        _scratch: scratch,
        work,
        dir,
        image,
        root,
    }
}

impl Built {
    /// `debugfs -R REQUEST` on the deployed root filesystem image.
    fn debugfs(&self, request: &str) -> String {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.root)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Image hygiene, read without mounting: the checks every image must pass.
    fn check_hygiene(&self, user: &str, password: &str) {
        assert!(
            self.debugfs("cat /etc/machine-id").is_empty(),
            "machine-id is empty"
        );
        assert!(
            self.debugfs("cat /etc/resolv.conf").trim().is_empty(),
            "no build host resolv.conf"
        );
        assert!(
            !self.debugfs("ls /etc/apt/apt.conf.d").contains("51cache"),
            "no APT proxy config"
        );
        assert!(
            !self.debugfs("ls /etc/ssh").contains("ssh_host_"),
            "no SSH host keys baked in"
        );
        assert!(
            !self.debugfs("ls /usr/bin").contains("qemu-"),
            "no qemu binary"
        );
        assert!(
            self.debugfs("ls /var/lib/apt/lists")
                .split_whitespace()
                .all(|name| !name.ends_with("_Packages")),
            "apt lists cleaned"
        );
        assert!(
            self.debugfs("cat /etc/rpi-issue").contains("pigen"),
            "issue file names pigen"
        );
        let shadow = self.debugfs("cat /etc/shadow");
        assert!(
            shadow.lines().any(|l| l.starts_with(&format!("{user}:$"))),
            "the password is stored hashed"
        );
        assert!(
            shadow
                .lines()
                .any(|l| l.starts_with("root:*") || l.starts_with("root:!")),
            "root is locked"
        );
        // The password itself is nowhere: not in the image, not in the build log.
        assert!(
            !file_contains(&self.image, password.as_bytes()),
            "plain password in the image"
        );
        assert!(
            !file_contains(&self.work.join("build.log"), password.as_bytes()),
            "plain password in build.log"
        );
    }

    /// `pigen boot` on the image, logging in as `user`; every `expect` must hold.
    fn boot(&self, user: &str, password: &str, expects: &[&str]) {
        let mut boot = Command::new(env!("CARGO_BIN_EXE_pigen"));
        boot.arg("boot")
            .arg(&self.image)
            .args(["--timeout", "900", "--user", user, "--password", password])
            .stdin(Stdio::null());
        for expect in expects {
            boot.args(["--expect", expect]);
        }
        let out = boot.output().unwrap();
        assert!(
            out.status.success(),
            "pigen boot failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn debian_amd64_lite_builds_and_boots() {
    const PASSWORD: &str = "Pig3n-e2e-secret";
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Some(reason) = skip_reason(&repo, &["debootstrap", "qemu-system-x86_64", "debugfs"]) {
        common::skip("debian_amd64_lite_builds_and_boots", &reason);
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let built = build_example(
        &repo,
        "examples/debian-amd64-lite.cfg",
        &[
            "TARGET_HOSTNAME=pigen-e2e".to_string(),
            "FIRST_USER_NAME=tester".to_string(),
            format!("FIRST_USER_PASS={PASSWORD}"),
            "LOCALE_DEFAULT=en_GB.UTF-8".to_string(),
            "KEYBOARD_KEYMAP=de".to_string(),
            "KEYBOARD_LAYOUT=German".to_string(),
            "TIMEZONE_DEFAULT=Europe/Berlin".to_string(),
            "ENABLE_SSH=1".to_string(),
        ],
    );
    built.check_hygiene("tester", PASSWORD);
    built.boot(
        "tester",
        PASSWORD,
        &[
            "hostname=pigen-e2e",
            "user=tester",
            "timezone=Europe/Berlin",
            "locale=en_GB.UTF-8",
            "keymap=de",
            "ssh=enabled",
            "root-grown=yes",
        ],
    );
}

/// The MBR disk identifier (without `0x`) and each partition's start in bytes and type, read
/// with the export's own `sfdisk --json` reader.
fn mbr_table(image: &Path) -> (String, Vec<(u64, String)>) {
    let table = pigen::export::image::read_table(image, &Default::default()).unwrap();
    assert_eq!(table.label, "dos", "an MBR: {table:?}");
    let id = table
        .id
        .as_deref()
        .unwrap()
        .trim_start_matches("0x")
        .to_lowercase();
    let partitions = table
        .partitions
        .iter()
        .map(|p| (p.start * pigen::export::layout::SECTOR, p.type_code.clone()))
        .collect();
    (id, partitions)
}

#[test]
fn raspi_arm64_debian_firmware_builds_and_boots() {
    const PASSWORD: &str = "Pig3n-pi-secret";
    const WIFI_PASSPHRASE: &str = "pigen-wifi-passphrase";
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut reason = skip_reason(
        &repo,
        &["debootstrap", "qemu-system-aarch64", "debugfs", "mtype"],
    );
    if std::env::var_os("PIGEN_SKIP_RASPI_E2E").is_some() {
        reason = Some("PIGEN_SKIP_RASPI_E2E is set".into());
    }
    if reason.is_none() && !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        reason = Some(
            "no qemu-aarch64 binfmt_misc handler (tests/run registers it: qemu-user-static, \
             binfmt-support)"
                .into(),
        );
    }
    if let Some(reason) = reason {
        common::skip("raspi_arm64_debian_firmware_builds_and_boots", &reason);
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let built = build_example(
        &repo,
        "examples/raspi-arm64-debian-firmware-lite.cfg",
        &[
            "TARGET_HOSTNAME=pigen-pi".to_string(),
            "FIRST_USER_NAME=pitester".to_string(),
            format!("FIRST_USER_PASS={PASSWORD}"),
            "LOCALE_DEFAULT=fr_FR.UTF-8".to_string(),
            "KEYBOARD_KEYMAP=fr".to_string(),
            "KEYBOARD_LAYOUT=French".to_string(),
            "TIMEZONE_DEFAULT=America/New_York".to_string(),
            "ENABLE_SSH=0".to_string(),
            "WPA_COUNTRY=FR".to_string(),
            "WPA_ESSID=pigen-net".to_string(),
            format!("WPA_PASSWORD={WIFI_PASSPHRASE}"),
        ],
    );
    built.check_hygiene("pitester", PASSWORD);

    // The wireless network is configured with a derived PSK, never the passphrase.
    let wpa = built.debugfs("cat /etc/wpa_supplicant/wpa_supplicant.conf");
    assert!(
        wpa.contains("ssid=\"pigen-net\"") && wpa.contains("country=FR"),
        "{wpa}"
    );
    assert!(
        wpa.lines()
            .any(|l| l.trim().starts_with("psk=") && !l.contains('"')),
        "a hashed PSK: {wpa}"
    );
    assert!(
        !file_contains(&built.image, WIFI_PASSPHRASE.as_bytes()),
        "plain Wi-Fi passphrase in the image"
    );
    // With a country the built-in wireless is not soft-blocked (Debian's kernel names it mmc).
    assert_eq!(
        built
            .debugfs("cat /var/lib/systemd/rfkill/platform-3f300000.mmc:wlan")
            .trim(),
        "0"
    );

    // MBR: FAT boot partition, then the root; their PARTUUIDs in fstab and cmdline.txt.
    let (disk_id, partitions) = mbr_table(&built.image);
    assert_eq!(
        partitions.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
        ["c", "83"],
        "{partitions:?}"
    );
    let fstab = built.debugfs("cat /etc/fstab");
    for (number, mount_point) in [(1, "/boot/firmware"), (2, "/")] {
        let partuuid = format!("PARTUUID={disk_id}-{number:02}");
        assert!(
            fstab.lines().any(|l| {
                let mut fields = l.split_whitespace();
                fields.next() == Some(&partuuid) && fields.next() == Some(mount_point)
            }),
            "{partuuid} on {mount_point} in fstab:\n{fstab}"
        );
    }
    let fat = format!("{}@@{}", built.image.display(), partitions[0].0);
    let mtype = |file: &str| {
        let out = Command::new("mtype")
            .args(["-i", &fat, &format!("::{file}")])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "mtype {file}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cmdline = mtype("cmdline.txt");
    assert!(
        cmdline.contains(&format!("root=PARTUUID={disk_id}-02"))
            && cmdline.contains("console=ttyS1,115200"),
        "cmdline.txt: {cmdline}"
    );
    let config_txt = mtype("config.txt");
    assert!(
        config_txt.contains("kernel=vmlinuz-") && config_txt.contains("initramfs initrd.img-"),
        "config.txt names Debian's kernel and initramfs: {config_txt}"
    );
    assert!(built.dir.join("e2e-lite.info").exists());

    built.boot(
        "pitester",
        PASSWORD,
        &[
            "hostname=pigen-pi",
            "user=pitester",
            "timezone=America/New_York",
            "locale=fr_FR.UTF-8",
            "keymap=fr",
            "ssh=disabled",
            "root-grown=yes",
        ],
    );
}
