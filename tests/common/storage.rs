//! The storage tests' namespace runs (`tests/storage.rs`): each test's body runs in a private
//! mount + PID namespace like an `ns_test!` body (see the parent module), with two differences.
//!
//! * The re-run sees the host's /proc ([`Proc::Host`]), as the build does in pigen's own
//!   namespace, so the FUSE attachment has to find its daemon through the pid translation it
//!   does there.
//! * Its scratch directory is made outside the namespace, on a real disk (the target
//!   directory), and handed in as [`SCRATCH_VAR`]. After the run, the outer test checks from
//!   the host's namespace that nothing leaked (no mount at or below the scratch directory, no
//!   loop device backed by a file in it, no qemu-storage-daemon or qemu-nbd naming it) before
//!   deleting the directory.
//!
//! Each test says why it skips ([`missing_privilege`], [`missing_fuse`]) and returns.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pigen::exec::cmd::{Background, LogSink};
use pigen::exec::Cmd;
use pigen::storage::mounts;

use super::{inside, is_root, namespace_cmd, run_in_namespace, which, Proc};

/// The scratch directory, in the re-run inside the namespace.
pub const SCRATCH_VAR: &str = "PIGEN_TEST_NAMESPACE_SCRATCH";

/// Why this machine cannot run privileged storage tests, if it cannot.
pub fn missing_privilege() -> Option<String> {
    if !is_root() {
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

/// In the re-run inside the namespace: the scratch directory the outer run made.
pub fn scratch() -> PathBuf {
    PathBuf::from(std::env::var_os(SCRATCH_VAR).expect("the scratch directory"))
}

/// Runs `body(scratch)` inside a private mount + PID namespace (see the module docs), then
/// checks that nothing leaked. Call only after the skip checks.
pub fn in_namespace(test: &str, body: impl FnOnce(&Path)) {
    if inside(test) {
        body(&scratch());
        return;
    }
    let scratch = new_scratch(test);
    let result = run_in_namespace(test, &storage_cmd(test, &scratch));
    let leaks = leaks_after_exit(&scratch);
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(leaks.is_empty(), "{test} leaked: {}", leaks.join("; "));
    mounts::remove_all(&scratch).expect("removing the scratch directory");
}

/// Starts the inner run of `test` in the background (for tests that kill it).
pub fn spawn_in_namespace(test: &str, scratch: &Path) -> Background {
    storage_cmd(test, scratch)
        .spawn(&LogSink::default())
        .expect("starting unshare")
}

fn storage_cmd(test: &str, scratch: &Path) -> Cmd {
    namespace_cmd(test, Proc::Host).env(SCRATCH_VAR, scratch)
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
