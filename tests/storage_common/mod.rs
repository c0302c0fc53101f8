//! Helpers for root-only integration tests whose body mounts things.
//!
//! `in_namespace(test, body)` runs `body` in a private mount namespace and PID namespace, so
//! nothing it mounts or starts can outlive it even when it panics or is killed. The test
//! re-executes its own binary, filtered to itself:
//!
//! ```text
//! unshare --mount --pid --fork --kill-child --propagation private \
//!     <test binary> --exact <test> --nocapture --test-threads=1
//! ```
//!
//! with `PIGEN_NS_TEST=<test>` and `PIGEN_NS_SCRATCH=<dir>` in its environment. Seeing those,
//! the inner run calls `body(dir)`; the outer run streams its output, fails when it fails, and
//! then checks from the host's namespace that nothing leaked (no mount at or below the scratch
//! directory, no loop device backed by a file in it, no qemu-storage-daemon or qemu-nbd naming
//! it) before deleting the scratch directory.
//!
//! Each test says why it skips (not root, no unshare, no /dev/fuse, no nbd) and returns.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pigen::exec::cmd::{Background, LogSink};
use pigen::exec::Cmd;
use pigen::storage::mounts;

const TEST_VAR: &str = "PIGEN_NS_TEST";
const SCRATCH_VAR: &str = "PIGEN_NS_SCRATCH";

/// Why this machine cannot run privileged storage tests, if it cannot.
pub fn missing_privilege() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (mounts, loop devices)".into());
    }
    if which("unshare").is_none() {
        return Some("needs unshare (util-linux)".into());
    }
    None
}

/// Why FUSE-attached qcow2 tests cannot run here, if they cannot.
pub fn missing_fuse() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    for tool in ["qemu-img", "qemu-storage-daemon", "mkfs.ext4", "losetup"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Prints the reason and returns true when `reason` is set.
pub fn skip(test: &str, reason: Option<String>) -> bool {
    match reason {
        Some(reason) => {
            eprintln!("SKIP {test}: {reason}");
            true
        }
        None => false,
    }
}

/// True in the re-executed run of `test` (inside the namespace).
pub fn inside(test: &str) -> bool {
    std::env::var(TEST_VAR).as_deref() == Ok(test)
}

/// Runs `body(scratch)` inside a private mount + PID namespace (see the module docs), then
/// checks that nothing leaked. Call only after the skip checks.
pub fn in_namespace(test: &str, body: impl FnOnce(&Path)) {
    if inside(test) {
        let scratch = PathBuf::from(std::env::var_os(SCRATCH_VAR).expect("scratch dir"));
        body(&scratch);
        return;
    }
    let scratch = new_scratch(test);
    let result = namespace_cmd(test, &scratch).run(&LogSink::default(), |line| {
        eprintln!("  | {line}");
    });
    let leaks = leaks_after_exit(&scratch);
    if let Err(e) = result {
        panic!("{test} failed inside its namespace: {e}");
    }
    assert!(leaks.is_empty(), "{test} leaked: {}", leaks.join("; "));
    mounts::remove_all(&scratch).expect("removing the scratch directory");
}

/// Starts the inner run of `test` in the background (for tests that kill it).
pub fn spawn_in_namespace(test: &str, scratch: &Path) -> Background {
    namespace_cmd(test, scratch)
        .spawn(&LogSink::default())
        .expect("starting unshare")
}

fn namespace_cmd(test: &str, scratch: &Path) -> Cmd {
    let exe = std::env::current_exe().expect("test binary");
    Cmd::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
        ])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(TEST_VAR, test)
        .env(SCRATCH_VAR, scratch)
}

/// A fresh directory for one test, on a real disk (the target directory), canonical.
pub fn new_scratch(test: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("storage-{test}-{}", std::process::id()));
    mounts::remove_all(&dir).expect("removing an old scratch directory");
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    std::fs::canonicalize(&dir).expect("canonical scratch")
}

/// What is left of a finished namespace run, seen from here: mounts at or below `scratch`,
/// loop devices backed by files in it, helper processes naming it. The kernel tears a dead
/// namespace down asynchronously, so this waits up to 10 s for things to go.
pub fn leaks_after_exit(scratch: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaks = leaks(scratch);
        if leaks.is_empty() || Instant::now() >= deadline {
            return leaks;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mounts, loop devices and helper processes that refer to `scratch` right now.
pub fn leaks(scratch: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for m in mounts::mounts_at_or_below(scratch).expect("mountinfo") {
        found.push(format!("mount {} ({})", m.mount_point.display(), m.fs_type));
    }
    let scratch_text = scratch.to_string_lossy().into_owned();
    let loops = Cmd::new("losetup")
        .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
        .output(&LogSink::default())
        .map(|o| o.stdout)
        .unwrap_or_default();
    for line in loops.lines().filter(|l| l.contains(&scratch_text)) {
        found.push(format!("loop device {}", line.trim()));
    }
    for helper in ["qemu-storage-daemon", "qemu-nbd"] {
        let procs = Cmd::new("pgrep")
            .args(["-a", "-f", helper])
            .any_code()
            .output(&LogSink::default())
            .map(|o| o.stdout)
            .unwrap_or_default();
        for line in procs.lines().filter(|l| l.contains(&scratch_text)) {
            found.push(format!("process {line}"));
        }
    }
    found
}

/// Runs a command that must succeed; returns its stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    Cmd::new(program)
        .args(args)
        .output(&LogSink::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .stdout
}
