//! Tiny root filesystems for chroot tests, built at test time.
//!
//! A tree holds busybox with a symlink per applet (`busybox --list-full`), bash (on_chroot runs
//! `capsh … --`, which starts `/bin/bash` inside the chroot) with the shared libraries it
//! needs, `/etc/hostname`, and empty `proc dev sys run tmp` directories.
//!
//! * [`host_tree`]: the host's busybox and bash (`busybox-static`, `bash`), libraries as `ldd`
//!   lists them;
//! * [`arm64_tree`]: `busybox-static`, `bash`, `libc6`, `libtinfo6` for arm64, fetched once
//!   with `apt-get download` into a cache directory and unpacked with `dpkg-deb -x` (needs
//!   `dpkg --add-architecture arm64 && apt-get update` done on the host, as `tests/run` does).
//!
//! Errors are skip reasons: what the host lacks, in words.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::which;

/// The empty directories every tree has.
const DIRS: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "run",
    "tmp",
    "etc",
    "root",
    "usr/local/bin",
];

/// Builds a tree for the host's architecture at `root`, with `hostname` in `/etc/hostname`.
pub fn host_tree(root: &Path, hostname: &str) -> Result<(), String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("busybox not found (apt-get install busybox-static)")?;
    let bash = which("bash").ok_or("bash not found")?;
    skeleton(root, hostname)?;
    copy_with_libraries(&busybox, root, Path::new("bin/busybox"))?;
    copy_with_libraries(&bash, root, Path::new("bin/bash"))?;
    link_applets(root, &busybox)
}

/// The arm64 packages a foreign tree is made of.
const ARM64_PACKAGES: &[&str] = &["busybox-static", "bash", "libc6", "libtinfo6"];

/// Builds an arm64 tree at `root` from packages downloaded into `cache` (reused when there).
/// Listing the applets runs the arm64 busybox, so binfmt emulation must already work.
pub fn arm64_tree(root: &Path, hostname: &str, cache: &Path) -> Result<(), String> {
    fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let mut debs = Vec::new();
    for package in ARM64_PACKAGES {
        let deb = match cached_deb(cache, package) {
            Some(deb) => deb,
            None => {
                let out = Command::new("apt-get")
                    .args(["download", &format!("{package}:arm64")])
                    .current_dir(cache)
                    .output()
                    .map_err(|e| format!("apt-get: {e}"))?;
                cached_deb(cache, package).ok_or_else(|| {
                    format!(
                        "apt-get download {package}:arm64 failed (needs `dpkg --add-architecture arm64 && apt-get update` and network): {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                })?
            }
        };
        debs.push(deb);
    }
    skeleton(root, hostname)?;
    for deb in &debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    }
    let busybox = root.join("bin/busybox");
    if !busybox.is_file() {
        return Err("busybox-static:arm64 did not contain /bin/busybox".into());
    }
    link_applets(root, &busybox)
}

fn cached_deb(cache: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with("_arm64.deb")
        })
        .collect();
    found.sort();
    found.pop()
}

fn skeleton(root: &Path, hostname: &str) -> Result<(), String> {
    for dir in DIRS {
        fs::create_dir_all(root.join(dir)).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    fs::write(root.join("etc/hostname"), format!("{hostname}\n")).map_err(|e| e.to_string())
}

/// Copies `binary` to `root/dest` and every library `ldd` lists to the same path in `root`.
fn copy_with_libraries(binary: &Path, root: &Path, dest: &Path) -> Result<(), String> {
    copy_file(binary, &root.join(dest))?;
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    // "not a dynamic executable" (static): nothing to copy.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let lib = Path::new(lib);
        let target = root.join(lib.strip_prefix("/").expect("absolute"));
        if !target.exists() {
            copy_file(lib, &target)?;
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::copy(from, to).map_err(|e| format!("copy {} → {}: {e}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// One symlink to /bin/busybox per applet, where nothing exists yet (bash stays bash).
fn link_applets(root: &Path, busybox: &Path) -> Result<(), String> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("{} --list-full: {e}", busybox.display()))?;
    if !out.status.success() {
        return Err(format!("{} --list-full failed", busybox.display()));
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = root.join(applet.trim_start_matches('/'));
        if fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    Ok(())
}

/// Writes an executable script at `root/path` (a fake command inside a tree).
pub fn write_script(root: &Path, path: &str, text: &str) {
    let file = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(file.parent().expect("a parent")).expect("script dir");
    fs::write(&file, text).expect("script");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
