//! Helpers for the integration tests.
//!
//! # Skipping
//!
//! A test that cannot run on this machine (not root, a tool or device missing; the slow ones
//! also when `PIGEN_SKIP_SLOW` is set) prints why with [`skip`] (`SKIPPED <test>: <reason>`)
//! and passes.
//!
//! # Private namespaces
//!
//! A test that mounts anything runs its body in a private mount + PID namespace, so nothing it
//! mounts or starts can outlive it or reach the host, even when it fails half-way:
//!
//! ```ignore
//! mod common;
//! common::ns_test!(my_test, {
//!     // runs as root, as PID 1 of a new PID namespace, in a private mount namespace
//! });
//! ```
//!
//! `ns_test!(name, body)` defines `#[test] fn name()` that calls [`in_private_namespace`]. The
//! test re-runs its own test binary, filtered to itself ([`namespace_cmd`]):
//!
//! ```text
//! unshare --mount --pid --fork --kill-child --propagation private [--mount-proc] -- \
//!     <test binary> <test> --exact --nocapture --test-threads=1
//! ```
//!
//! with [`BODY_VAR`] naming the test; the re-run sees the variable ([`inside`]) and runs the
//! body. The outer run copies the inner output, prefixed `  | `, and fails unless the inner run
//! passed exactly that one test ([`run_in_namespace`]). Not root, or `unshare` missing: the
//! test prints why and passes (a skip). When the namespace's PID 1 (the inner test) exits, the
//! kernel kills whatever it left running and drops its mounts.
//!
//! [`storage`] runs storage tests the same way, with a scratch directory made outside the
//! namespace and a check from outside, afterwards, that nothing leaked.
//!
//! Use [`Scratch`] for directories that get mount points below them: it unmounts everything
//! below itself before deleting, so a failing test cannot delete through a bind mount of
//! `/dev` into the host's device nodes.
//!
//! [`rootfs`] builds the tiny busybox + bash root filesystems the chroot tests use;
//! [`pc_image`] a real bootable amd64 Debian system and its disk image, for the boot tests.
//!
//! Every test binary compiles this module (`mod common;`) and uses a different part of it.
#![allow(dead_code, unused_macros, unused_imports)] // each test crate uses a different subset
#![allow(clippy::disallowed_methods)] // tests start programs directly

pub mod pc_image;
pub mod rootfs;
pub mod storage;

use std::path::{Path, PathBuf};
use std::process::Command;

use pigen::exec::cmd::LogSink;
use pigen::exec::Cmd;

/// Set to the test's name in the re-run that executes the body.
pub const BODY_VAR: &str = "PIGEN_TEST_NAMESPACE_BODY";

/// Defines a `#[test]` whose body runs in a private mount + PID namespace (see the module
/// documentation). The test must be at the top level of its test crate (its name is the
/// function name).
macro_rules! ns_test {
    ($name:ident, $body:block) => {
        #[test]
        fn $name() {
            $crate::common::in_private_namespace(stringify!($name), || $body);
        }
    };
}
pub(crate) use ns_test;

/// Prints that `test` was skipped and why (the line `cargo test -- --nocapture` shows).
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The first executable `tool` on PATH or in the sbin/bin directories.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found
}

/// True in the re-run of `test` inside its namespace.
pub fn inside(test: &str) -> bool {
    std::env::var(BODY_VAR).as_deref() == Ok(test)
}

/// Which /proc the re-run inside the namespace sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// A /proc of the new PID namespace (`--mount-proc`): its numbers are the namespace's.
    Own,
    /// The host's /proc, as in pigen's own build namespace (`exec::namespace`), where pigen has
    /// to translate the pids of its children (`storage::fuse::proc_pid_of_child`).
    Host,
}

/// The re-run of `test` (its full name as the harness knows it) in a new private mount + PID
/// namespace, with [`BODY_VAR`] set (see the module documentation).
pub fn namespace_cmd(test: &str, proc: Proc) -> Cmd {
    let exe = std::env::current_exe().expect("the test binary's path");
    let unshare = which("unshare").map_or_else(|| "unshare".into(), PathBuf::into_os_string);
    Cmd::new(unshare)
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
        ])
        .args((proc == Proc::Own).then_some("--mount-proc"))
        .arg("--")
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(BODY_VAR, test)
}

/// Runs `cmd` (a [`namespace_cmd`] for `test`) to its end, copying each line it prints to
/// stderr as `  | line`. The error says how it failed: a failure exit, or a run that did not
/// pass exactly that one test.
pub fn run_in_namespace(test: &str, cmd: &Cmd) -> Result<(), String> {
    let mut passed = false;
    cmd.run(&LogSink::default(), |line| {
        passed |= line.contains("test result: ok. 1 passed");
        eprintln!("  | {line}");
    })
    .map_err(|e| format!("{test} failed inside its namespace: {e}"))?;
    if passed {
        Ok(())
    } else {
        Err(format!(
            "{test} failed inside its namespace: the re-run did not pass exactly one test"
        ))
    }
}

/// Runs `body` in a private mount + PID namespace with its own /proc, as root (see the module
/// documentation). `test_name` must be the test's full name as the harness knows it.
pub fn in_private_namespace(test_name: &str, body: impl FnOnce()) {
    if inside(test_name) {
        body();
        return;
    }
    if !is_root() {
        return skip(test_name, "needs root (mounts, chroot)");
    }
    if which("unshare").is_none() {
        return skip(test_name, "unshare (util-linux) not found");
    }
    if let Err(e) = run_in_namespace(test_name, &namespace_cmd(test_name, Proc::Own)) {
        panic!("{e}");
    }
}

/// Mount points at or below `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mountinfo(mp)))
        .filter(|mp| mp.starts_with(dir))
        .collect();
    found.sort();
    found.reverse();
    found
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A temporary directory that may get mount points below it. Dropping it first detaches
/// every mount below it (deepest first, lazily) and only then deletes it; if a mount cannot
/// be removed, the directory is left in place rather than deleted through the mount.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("pigen-test-")
            .tempdir()
            .expect("a temporary directory");
        Scratch { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("scratch dir").path()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        for mp in mounts_below(dir.path()) {
            let _ = Command::new("umount").arg("--lazy").arg(&mp).status();
        }
        let left = mounts_below(dir.path());
        if left.is_empty() {
            drop(dir);
        } else {
            eprintln!(
                "Scratch: not deleting {} because of mounts below it: {left:?}",
                dir.path().display()
            );
            let _ = dir.keep();
        }
    }
}

/// A resolved `Config` over `base` (a `BASE_DIR` with `stages/stage0`, created if missing),
/// built through pigen's own loader and resolver from `--set`-style `NAME=value` pairs on top
/// of `IMG_NAME=test`.
pub fn config(base: &Path, sets: &[&str]) -> pigen::config::Config {
    std::fs::create_dir_all(base.join("stages/stage0")).expect("stages/stage0");
    let env = pigen::config::Env::new();
    let mut all = vec!["IMG_NAME=test".to_string()];
    all.extend(sets.iter().map(|s| s.to_string()));
    let loaded = pigen::config::load(&[], &all, &env).unwrap_or_else(|e| panic!("config: {e}"));
    let host = pigen::config::HostFacts {
        cwd: base.to_path_buf(),
        today_utc: "2026-01-01".into(),
        git_hash: None,
        zoneinfo_dir: PathBuf::from("/usr/share/zoneinfo"),
    };
    pigen::config::resolve::resolve(&loaded, &env, base, &host)
        .unwrap_or_else(|e| panic!("config: {e}"))
}
