//! End to end (root, network, QEMU; several minutes): build the amd64 lite image from the
//! shipped example config with the stock stages, check the image's hygiene without mounting
//! it, then boot it with `pigen boot` and check over the serial console that every configured
//! value is visible on the running system. `PIGEN_SKIP_SLOW=1` skips it.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Scratch;

const PASSWORD: &str = "Pig3n-e2e-secret";

fn skip_reason(repo: &Path) -> Option<String> {
    if !common::is_root() {
        return Some("needs root".into());
    }
    if std::env::var_os("PIGEN_SKIP_SLOW").is_some() {
        return Some("PIGEN_SKIP_SLOW is set".into());
    }
    if !repo.join("stages/stage2/EXPORT_IMAGE").exists() {
        return Some("the stock stage trees are not in this checkout".into());
    }
    for tool in ["debootstrap", "qemu-system-x86_64", "debugfs"] {
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

#[test]
fn debian_amd64_lite_builds_and_boots() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Some(reason) = skip_reason(&repo) {
        common::skip("debian_amd64_lite_builds_and_boots", &reason);
        return;
    }
    let scratch = Scratch::new();
    let work = scratch.path().join("work");
    let deploy = scratch.path().join("deploy");
    let sets = [
        format!("WORK_DIR={}", work.display()),
        format!("DEPLOY_DIR={}", deploy.display()),
        "IMG_FILENAME=e2e".to_string(),
        "DEPLOY_COMPRESSION=none".to_string(),
        "TARGET_HOSTNAME=pigen-e2e".to_string(),
        "FIRST_USER_NAME=tester".to_string(),
        format!("FIRST_USER_PASS={PASSWORD}"),
        "LOCALE_DEFAULT=en_GB.UTF-8".to_string(),
        "KEYBOARD_KEYMAP=de".to_string(),
        "KEYBOARD_LAYOUT=German".to_string(),
        "TIMEZONE_DEFAULT=Europe/Berlin".to_string(),
        "ENABLE_SSH=1".to_string(),
    ];
    let mut build = Command::new(env!("CARGO_BIN_EXE_pigen"));
    build
        .args(["build", "-c", "examples/debian-amd64-lite.cfg"])
        .current_dir(&repo)
        .stdin(Stdio::null());
    for set in &sets {
        build.arg("--set").arg(set);
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "build failed:\n{}\n{}",
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

    // Image hygiene, read without mounting.
    let debugfs = |request: &str| {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&root)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        debugfs("cat /etc/machine-id").is_empty(),
        "machine-id is empty"
    );
    assert!(
        debugfs("cat /etc/resolv.conf").trim().is_empty(),
        "no build host resolv.conf"
    );
    assert!(
        !debugfs("ls /etc/apt/apt.conf.d").contains("51cache"),
        "no APT proxy config"
    );
    assert!(
        !debugfs("ls /etc/ssh").contains("ssh_host_"),
        "no SSH host keys baked in"
    );
    assert!(!debugfs("ls /usr/bin").contains("qemu-"), "no qemu binary");
    assert!(
        debugfs("cat /etc/rpi-issue").contains("pigen"),
        "issue file names pigen"
    );
    let shadow = debugfs("cat /etc/shadow");
    assert!(
        shadow.lines().any(|l| l.starts_with("tester:$")),
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
        !file_contains(&image, PASSWORD.as_bytes()),
        "plain password in the image"
    );
    assert!(
        !file_contains(&work.join("build.log"), PASSWORD.as_bytes()),
        "plain password in build.log"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .arg("boot")
        .arg(&image)
        .args([
            "--timeout",
            "600",
            "--user",
            "tester",
            "--password",
            PASSWORD,
        ])
        .args(["--expect", "hostname=pigen-e2e", "--expect", "user=tester"])
        .args([
            "--expect",
            "timezone=Europe/Berlin",
            "--expect",
            "locale=en_GB.UTF-8",
        ])
        .args([
            "--expect",
            "keymap=de",
            "--expect",
            "ssh=enabled",
            "--expect",
            "root-grown=yes",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pigen boot failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
