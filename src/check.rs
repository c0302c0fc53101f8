//! `pigen check`: does this host have the tools, privileges, kernel features and disk space the
//! build needs? Run on its own and at the start of every `pigen build`.
//!
//! Split for testing: [`HostProbe::gather`] is the one impure step (PATH lookups, `/proc`,
//! `/dev`, `/sys`, statvfs, uname, euid); [`evaluate`] is pure and turns config + probe +
//! depends list into a [`CheckReport`]. Every host path the probe reads goes through
//! [`HostPaths`], so tests point it at a fake tree.
//!
//! Differences from pi-gen's `dependencies_check` (reference §7.1), on purpose:
//! - pigen's own list is built in (the `depends` file at the root of pigen's source); a
//!   `BASE_DIR/depends` adds the tools a stage tree's scripts need;
//! - tools needed only for some configurations (qemu-utils for qcow2 stages, the qemu-user
//!   emulator for a foreign TARGET_ARCH, xfsprogs, squashfs-tools) are required only
//!   when the configuration uses them;
//! - binfmt_misc is required only for a foreign TARGET_ARCH, and the handler itself is checked
//!   (registered, enabled, F flag), not just the mount;
//! - all findings are reported together, each with its exact fix, instead of stopping at the
//!   first.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::resolve::stage_name;
use crate::config::{Arch, Config};
use crate::error::ConfigError;
use crate::exec::cmd::{Cmd, LogSink};

/// pigen's own tool list: the `depends` file at the root of pigen's source tree.
pub const BUILTIN_DEPENDS: &str = include_str!("../depends");

/// Where binfmt_misc is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Directories holding binfmt registration files (`qemu-aarch64.conf`: one
/// `:name:type:offset:magic:mask:interpreter:flags` line), in systemd-binfmt's precedence order.
const BINFMT_D_DIRS: &[&str] = &[
    "/etc/binfmt.d",
    "/run/binfmt.d",
    "/usr/local/lib/binfmt.d",
    "/usr/lib/binfmt.d",
    "/lib/binfmt.d",
];

/// binfmt-support's format directory (`update-binfmts --enable NAME` reads `NAME` there).
const BINFMTS_SUPPORT_DIR: &str = "/usr/share/binfmts";

/// Searched after `PATH`: stage scripts and pigen run as root, and the root tools (losetup,
/// mkfs.*, capsh) live in the sbin directories, which a user's PATH often lacks. The runner must
/// put the same directories on the PATH of the commands it starts.
pub const SYSTEM_TOOL_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

const GIB: u64 = 1 << 30;
/// Free space in WORK_DIR below which the check fails: debootstrap alone does not fit.
pub const HARD_MIN_FREE: u64 = 2 * GIB;
/// The space estimate: this much, plus per-stage and per-export amounts.
pub const SPACE_BASE: u64 = 4 * GIB;
pub const SPACE_PER_STAGE: u64 = 2 * GIB;
pub const SPACE_PER_EXPORT: u64 = 2 * GIB;

// ----------------------------------------------------------------------------------------------
// The depends list.

/// One `tool[:package]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependsEntry {
    /// Looked up on PATH.
    pub tool: String,
    /// The Debian package providing it.
    pub package: String,
    /// `file:line`, for messages.
    pub origin: String,
}

/// Tools every build needs, in the order they are listed; each tool once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DependsList {
    pub entries: Vec<DependsEntry>,
}

impl DependsList {
    /// Parses a depends file: `#` starts a comment (to the end of the line), entries are
    /// separated by white space (one a line, or several), each `tool` or `tool:package`.
    /// `source` names the file in messages. A tool listed twice keeps its first entry.
    pub fn parse(text: &str, source: &str) -> Result<DependsList, ConfigError> {
        let mut list = DependsList::default();
        let mut errors = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let origin = format!("{source}:{}", index + 1);
            let content = line.split('#').next().unwrap_or("");
            for word in content.split_whitespace() {
                let (tool, package) = word.split_once(':').unwrap_or((word, word));
                if tool.is_empty() || tool.contains('/') || !is_package_name(package) {
                    errors.push(format!(
                        "{origin}: {word:?} is not a depends entry; write <tool>[:<debian-package>], e.g. mkfs.fat:dosfstools"
                    ));
                    continue;
                }
                list.push(DependsEntry {
                    tool: tool.to_string(),
                    package: package.to_string(),
                    origin: origin.clone(),
                });
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// pigen's own list ([`BUILTIN_DEPENDS`]).
    pub fn builtin() -> DependsList {
        DependsList::parse(BUILTIN_DEPENDS, "depends (built in)")
            .expect("the built-in depends file parses (tested)")
    }

    /// The built-in list plus `base_dir/depends` when that file exists.
    pub fn load(base_dir: &Path) -> Result<DependsList, ConfigError> {
        let mut list = DependsList::builtin();
        let path = base_dir.join("depends");
        match std::fs::read_to_string(&path) {
            Ok(text) => list.merge(DependsList::parse(&text, &path.display().to_string())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::new(format!(
                    "{}: cannot read it ({e}); fix its permissions or remove it",
                    path.display()
                )))
            }
        }
        Ok(list)
    }

    /// Adds `other`'s entries for tools not listed yet.
    pub fn merge(&mut self, other: DependsList) {
        for entry in other.entries {
            self.push(entry);
        }
    }

    fn push(&mut self, entry: DependsEntry) {
        if !self.entries.iter().any(|e| e.tool == entry.tool) {
            self.entries.push(entry);
        }
    }
}

/// Debian package name: lower-case letters, digits, `+`, `-`, `.`; at least two characters,
/// starting with a letter or digit.
fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

// ----------------------------------------------------------------------------------------------
// Tools needed only for some configurations.

/// A tool the configuration needs: any one of `tools` will do; `packages` provide the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub tools: Vec<String>,
    pub packages: Vec<String>,
    /// Why this configuration needs it, e.g. `BOOT_FSTYPE=xfs`.
    pub reason: String,
}

fn requirement(tools: &[&str], packages: &[&str], reason: impl Into<String>) -> Requirement {
    Requirement {
        tools: tools.iter().map(|t| t.to_string()).collect(),
        packages: packages.iter().map(|p| p.to_string()).collect(),
        reason: reason.into(),
    }
}

/// Whether building `config`'s target on a host of machine type `machine` needs qemu-user.
pub fn needs_emulation(config: &Config, machine: &str) -> bool {
    !config.target_arch.runs_natively_on(machine)
}

/// The packages providing a static qemu-user emulator with an F-flag binfmt registration.
/// `qemu-user-static` on Debian up to trixie (a transitional package there) and Ubuntu; where
/// apt no longer knows it, `qemu-user` is the static build and `qemu-user-binfmt` registers it.
fn emulator_packages(qemu_user_static_in_apt: Option<bool>) -> Vec<String> {
    match qemu_user_static_in_apt {
        Some(false) => vec!["qemu-user".into(), "qemu-user-binfmt".into()],
        _ => vec!["qemu-user-static".into()],
    }
}

/// The emulator's names, preferred first: qemu-user-static up to qemu 10.0 installs
/// `qemu-<name>-static`; newer Debian ships the static emulator as `qemu-<name>` (qemu-user).
fn emulator_tools(qemu_name: &str) -> [String; 2] {
    [
        format!("qemu-{qemu_name}-static"),
        format!("qemu-{qemu_name}"),
    ]
}

/// Tools `config` needs beyond the depends list. `qemu_user_static_in_apt` picks the emulator's
/// package (see [`HostProbe::qemu_user_static_in_apt`]).
pub fn conditional_requirements(
    config: &Config,
    machine: &str,
    qemu_user_static_in_apt: Option<bool>,
) -> Vec<Requirement> {
    let mut reqs = Vec::new();
    if config.get("STAGE_STORE") == "qcow2" {
        for tool in ["qemu-img", "qemu-nbd", "qemu-storage-daemon"] {
            reqs.push(requirement(&[tool], &["qemu-utils"], "STAGE_STORE=qcow2"));
        }
    } else if config.flag("OUTPUT_QCOW2") || config.flag("USE_QEMU") {
        let why = if config.flag("USE_QEMU") {
            "USE_QEMU=1"
        } else {
            "OUTPUT_QCOW2=1"
        };
        reqs.push(requirement(&["qemu-img"], &["qemu-utils"], why));
    }
    if needs_emulation(config, machine) {
        reqs.push(Requirement {
            tools: emulator_tools(config.target_arch.qemu_name()).to_vec(),
            packages: emulator_packages(qemu_user_static_in_apt),
            reason: format!(
                "TARGET_ARCH={} on this {machine} host",
                config.target_arch.as_str()
            ),
        });
    }
    if config.get("BOOT_FSTYPE") == "xfs" {
        reqs.push(requirement(&["mkfs.xfs"], &["xfsprogs"], "BOOT_FSTYPE=xfs"));
    }
    if config.flag("ROOTFS_RO") {
        reqs.push(requirement(
            &["mksquashfs"],
            &["squashfs-tools"],
            "ROOTFS_RO=1",
        ));
    }
    reqs
}

/// Looked up besides the required tools: for optional rows and fixes.
const OPTIONAL_TOOLS: &[&str] = &["git", "update-binfmts"];

// ----------------------------------------------------------------------------------------------
// Host facts.

/// Where the probe looks. `HostPaths::system()` on a real host; tests use a fake tree.
/// WORK_DIR is measured where the config puts it, not under `root`.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// Prefix for the system paths read (`/proc`, `/sys`, `/dev`, `/lib/modules`, binfmt
    /// registration files): `/` on a real host.
    pub root: PathBuf,
    /// Directories searched for tools, in order (not under `root`).
    pub tool_dirs: Vec<PathBuf>,
}

impl HostPaths {
    /// This host: `/`, and `PATH` followed by [`SYSTEM_TOOL_DIRS`].
    pub fn system() -> HostPaths {
        HostPaths {
            root: PathBuf::from("/"),
            tool_dirs: search_path(std::env::var_os("PATH").as_deref()),
        }
    }

    /// `abs` (an absolute system path) under `root`.
    pub fn under(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// The directories tools are looked up in: the absolute entries of `path_var`, then
/// [`SYSTEM_TOOL_DIRS`] not already listed.
pub fn search_path(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let from_env = path_var
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in from_env
        .into_iter()
        .chain(SYSTEM_TOOL_DIRS.iter().map(PathBuf::from))
    {
        if dir.is_absolute() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The first executable regular file named `tool` in `dirs` (what bash's `hash` finds).
pub fn find_tool(tool: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(tool)).find(|candidate| {
        std::fs::metadata(candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether the kernel can provide nbd devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbdModule {
    /// `/sys/module/nbd` exists (loaded or built in).
    Loaded,
    /// Listed for the running kernel under `/lib/modules/<release>`; `modprobe nbd` would load it.
    Available,
    /// Neither.
    Absent,
}

/// A binfmt registration file for a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinfmtConf {
    /// The system path (without the probe's root prefix), as shown in fixes.
    pub path: PathBuf,
    pub content: String,
}

/// Free space where WORK_DIR is (or will be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeSpace {
    /// WORK_DIR or its nearest existing ancestor, the directory actually measured.
    pub measured: PathBuf,
    /// Bytes available outside the root reserve (`f_bavail`), so the estimate keeps a margin.
    pub available: u64,
}

/// Everything `evaluate` needs to know about the host, gathered in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProbe {
    /// `uname -m`, e.g. `x86_64`.
    pub machine: String,
    /// `uname -r`.
    pub kernel_release: String,
    pub euid: u32,
    /// Tools looked up and found: name → path. A name asked for but absent is missing.
    pub tools: BTreeMap<String, PathBuf>,
    /// `BINFMT_DIR/status` exists.
    pub binfmt_mounted: bool,
    /// Registered binfmt_misc handlers: name → contents of `BINFMT_DIR/<name>`.
    pub binfmt_handlers: BTreeMap<String, String>,
    /// `qemu-*.conf` registration files: handler name → first one found in precedence order.
    pub binfmt_confs: BTreeMap<String, BinfmtConf>,
    /// Formats binfmt-support knows: name → contents of `/usr/share/binfmts/<name>` (qemu
    /// ones only).
    pub binfmt_support_formats: BTreeMap<String, String>,
    /// `/dev/loop-control` exists.
    pub loop_control: bool,
    /// `/dev/fuse` exists.
    pub dev_fuse: bool,
    /// `/dev/nbd0` exists.
    pub nbd_device: bool,
    pub nbd_module: NbdModule,
    /// `None` when statvfs failed.
    pub free_space: Option<FreeSpace>,
    /// Whether apt has a candidate for `qemu-user-static`; asked only when the emulator is
    /// needed and missing (`None`: not asked, or apt-cache failed).
    pub qemu_user_static_in_apt: Option<bool>,
}

impl HostProbe {
    /// Looks at the host. Reads files and runs `apt-cache policy` at most once; never changes
    /// anything.
    pub fn gather(paths: &HostPaths, config: &Config, depends: &DependsList) -> HostProbe {
        let (machine, kernel_release) = match nix::sys::utsname::uname() {
            Ok(u) => (
                u.machine().to_string_lossy().into_owned(),
                u.release().to_string_lossy().into_owned(),
            ),
            Err(_) => (std::env::consts::ARCH.to_string(), String::new()),
        };
        let euid = nix::unistd::geteuid().as_raw();

        let requirements = conditional_requirements(config, &machine, None);
        let wanted: BTreeSet<&str> = depends
            .entries
            .iter()
            .map(|e| e.tool.as_str())
            .chain(
                requirements
                    .iter()
                    .flat_map(|r| r.tools.iter().map(String::as_str)),
            )
            .chain(OPTIONAL_TOOLS.iter().copied())
            .collect();
        let tools: BTreeMap<String, PathBuf> = wanted
            .into_iter()
            .filter_map(|t| find_tool(t, &paths.tool_dirs).map(|p| (t.to_string(), p)))
            .collect();

        let binfmt = BinfmtFacts::gather(paths);
        let nbd_module = if paths.under("/sys/module/nbd").exists() {
            NbdModule::Loaded
        } else if nbd_in_modules(&paths.under("/lib/modules").join(&kernel_release)) {
            NbdModule::Available
        } else {
            NbdModule::Absent
        };

        let free_space = config
            .work_dir
            .ancestors()
            .find(|p| p.exists())
            .and_then(|dir| {
                let st = nix::sys::statvfs::statvfs(dir).ok()?;
                Some(FreeSpace {
                    measured: dir.to_path_buf(),
                    available: (st.blocks_available() as u64)
                        .saturating_mul(st.fragment_size() as u64),
                })
            });

        let emulator_missing = needs_emulation(config, &machine)
            && !emulator_tools(config.target_arch.qemu_name())
                .iter()
                .any(|t| tools.contains_key(t));
        let qemu_user_static_in_apt = if emulator_missing {
            apt_has_candidate("qemu-user-static")
        } else {
            None
        };

        HostProbe {
            machine,
            kernel_release,
            euid,
            tools,
            binfmt_mounted: binfmt.mounted,
            binfmt_handlers: binfmt.handlers,
            binfmt_confs: binfmt.confs,
            binfmt_support_formats: binfmt.support_formats,
            loop_control: paths.under("/dev/loop-control").exists(),
            dev_fuse: paths.under("/dev/fuse").exists(),
            nbd_device: paths.under("/dev/nbd0").exists(),
            nbd_module,
            free_space,
            qemu_user_static_in_apt,
        }
    }
}

impl HostProbe {
    /// Only what the emulation check needs for `arch` (see [`emulation_report`]): machine,
    /// the emulator and `update-binfmts` on PATH, binfmt_misc state; every other fact is
    /// left empty. Used when a build starts, by `exec::chroot::ensure_binfmt`.
    pub fn for_emulation(paths: &HostPaths, arch: Arch) -> HostProbe {
        let (machine, kernel_release) = match nix::sys::utsname::uname() {
            Ok(u) => (
                u.machine().to_string_lossy().into_owned(),
                u.release().to_string_lossy().into_owned(),
            ),
            Err(_) => (std::env::consts::ARCH.to_string(), String::new()),
        };
        let emulators = emulator_tools(arch.qemu_name());
        let tools: BTreeMap<String, PathBuf> = emulators
            .iter()
            .map(String::as_str)
            .chain(["update-binfmts"])
            .filter_map(|t| find_tool(t, &paths.tool_dirs).map(|p| (t.to_string(), p)))
            .collect();
        let emulator_missing =
            !arch.runs_natively_on(&machine) && !emulators.iter().any(|t| tools.contains_key(t));
        let binfmt = BinfmtFacts::gather(paths);
        HostProbe {
            machine,
            kernel_release,
            euid: nix::unistd::geteuid().as_raw(),
            tools,
            binfmt_mounted: binfmt.mounted,
            binfmt_handlers: binfmt.handlers,
            binfmt_confs: binfmt.confs,
            binfmt_support_formats: binfmt.support_formats,
            loop_control: false,
            dev_fuse: false,
            nbd_device: false,
            nbd_module: NbdModule::Absent,
            free_space: None,
            qemu_user_static_in_apt: if emulator_missing {
                apt_has_candidate("qemu-user-static")
            } else {
                None
            },
        }
    }
}

/// The binfmt_misc part of a [`HostProbe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinfmtFacts {
    pub mounted: bool,
    pub handlers: BTreeMap<String, String>,
    pub confs: BTreeMap<String, BinfmtConf>,
    pub support_formats: BTreeMap<String, String>,
}

impl BinfmtFacts {
    /// Reads `BINFMT_DIR` (handlers), the binfmt.d directories (`qemu-*.conf`) and
    /// binfmt-support's formats (`qemu-*`), under `paths.root`.
    pub fn gather(paths: &HostPaths) -> BinfmtFacts {
        let binfmt_dir = paths.under(BINFMT_DIR);
        let mounted = binfmt_dir.join("status").exists();
        let handlers = if mounted {
            read_dir_names(&binfmt_dir)
                .into_iter()
                .filter(|n| n != "status" && n != "register")
                .filter_map(|n| {
                    let content = std::fs::read_to_string(binfmt_dir.join(&n)).ok()?;
                    Some((n, content))
                })
                .collect()
        } else {
            BTreeMap::new()
        };

        let mut confs = BTreeMap::new();
        for dir in BINFMT_D_DIRS {
            for file in read_dir_names(&paths.under(dir)) {
                let Some(name) = file.strip_suffix(".conf") else {
                    continue;
                };
                if !name.starts_with("qemu-") || confs.contains_key(name) {
                    continue;
                }
                let path = Path::new(dir).join(&file);
                if let Ok(content) = std::fs::read_to_string(paths.under(dir).join(&file)) {
                    confs.insert(name.to_string(), BinfmtConf { path, content });
                }
            }
        }
        let support_formats = read_dir_names(&paths.under(BINFMTS_SUPPORT_DIR))
            .into_iter()
            .filter(|n| n.starts_with("qemu-"))
            .filter_map(|n| {
                let content =
                    std::fs::read_to_string(paths.under(BINFMTS_SUPPORT_DIR).join(&n)).ok()?;
                Some((n, content))
            })
            .collect();
        BinfmtFacts {
            mounted,
            handlers,
            confs,
            support_formats,
        }
    }
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether `modules.dep` / `modules.builtin` of a kernel's module directory list nbd.
fn nbd_in_modules(dir: &Path) -> bool {
    ["modules.dep", "modules.builtin"].iter().any(|file| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
            text.lines().any(|line| {
                let path = line.split(':').next().unwrap_or("");
                let base = path.rsplit('/').next().unwrap_or("");
                base == "nbd.ko" || base.starts_with("nbd.ko.")
            })
        })
    }) || dir.join("kernel/drivers/block").is_dir()
        && read_dir_names(&dir.join("kernel/drivers/block"))
            .iter()
            .any(|n| n == "nbd.ko" || n.starts_with("nbd.ko."))
}

/// `apt-cache policy PACKAGE` has a candidate: Some(true/false); None when apt-cache failed.
fn apt_has_candidate(package: &str) -> Option<bool> {
    let out = Cmd::new("apt-cache")
        .args(["policy", package])
        .env("LC_ALL", "C")
        .output(&LogSink::default())
        .ok()?;
    let text = out.stdout;
    Some(
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("Candidate:"))
            .any(|c| c.trim() != "(none)"),
    )
}

// ----------------------------------------------------------------------------------------------
// The report.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// Informational: nothing to do.
    Info,
    /// The build may still work; read the detail.
    Warn,
    /// A required tool is not installed; the apt-get line fixes it.
    Missing,
    /// Any other requirement not met: the build would fail.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Missing => "missing",
            Status::Fail => "fail",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The exact command or change that fixes it.
    pub fix: Option<String>,
}

/// Everything `pigen check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub rows: Vec<Row>,
    /// Packages providing the missing tools, each once, in the order the tools are listed.
    pub apt_packages: Vec<String>,
}

impl CheckReport {
    /// Whether a build would fail: a tool is missing or a requirement is not met.
    pub fn would_fail(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.status, Status::Missing | Status::Fail))
    }

    /// The one command that installs every missing tool.
    pub fn apt_line(&self) -> Option<String> {
        (!self.apt_packages.is_empty())
            .then(|| format!("apt-get install -y {}", self.apt_packages.join(" ")))
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    fn push(&mut self, name: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.rows.push(Row {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
        });
    }

    fn push_fix(
        &mut self,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.rows.push(Row {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn add_packages(&mut self, packages: &[String]) {
        for p in packages {
            if !self.apt_packages.contains(p) {
                self.apt_packages.push(p.clone());
            }
        }
    }
}

impl fmt::Display for CheckReport {
    /// A short aligned table: check, status, detail, with the fix on the line below a row that
    /// has one; then a one-line verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        writeln!(f, "{:<width$}  {:<7}  DETAIL", "CHECK", "STATUS")?;
        for row in &self.rows {
            writeln!(f, "{:<width$}  {:<7}  {}", row.name, row.status, row.detail)?;
            if let Some(fix) = &row.fix {
                writeln!(f, "{:<width$}  {:<7}  fix: {fix}", "", "")?;
            }
        }
        // The "tools" row sums up the missing-tool rows below it: not counted again.
        let count = |s: Status| {
            self.rows
                .iter()
                .filter(|r| r.status == s && r.name != "tools")
                .count()
        };
        let (missing, failed, warned) = (
            count(Status::Missing),
            count(Status::Fail),
            count(Status::Warn),
        );
        if self.would_fail() {
            let mut parts = Vec::new();
            if missing > 0 {
                parts.push(format!("{missing} missing tool(s)"));
            }
            if failed > 0 {
                parts.push(format!("{failed} failed check(s)"));
            }
            if warned > 0 {
                parts.push(format!("{warned} warning(s)"));
            }
            write!(f, "A build would fail here: {}.", parts.join(", "))?;
            if missing > 0 {
                write!(f, " `pigen check --install` installs the missing tools.")?;
            }
            writeln!(f)
        } else if warned > 0 {
            writeln!(f, "Ready to build, with {warned} warning(s).")
        } else {
            writeln!(f, "Ready to build.")
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Evaluation.

/// The checks, from facts gathered earlier. Reads nothing but the stage tree (which stages
/// have an `EXPORT_IMAGE`, for the space estimate), as resolution itself does.
pub fn evaluate(config: &Config, probe: &HostProbe, depends: &DependsList) -> CheckReport {
    let mut report = CheckReport::default();
    check_root(&mut report, probe);
    check_tools(&mut report, config, probe, depends);
    check_emulation(&mut report, config.target_arch, probe);
    check_block_devices(&mut report, config, probe);
    check_space(&mut report, config, probe);
    report
}

fn check_root(report: &mut CheckReport, probe: &HostProbe) {
    if probe.euid == 0 {
        report.push("root", Status::Ok, "running as root (euid 0)");
    } else {
        report.push_fix(
            "root",
            Status::Fail,
            format!(
                "running as euid {}; building needs root (chroot, mounts, device nodes)",
                probe.euid
            ),
            "run pigen as root, e.g. sudo pigen build -c <config>",
        );
    }
}

fn check_tools(
    report: &mut CheckReport,
    config: &Config,
    probe: &HostProbe,
    depends: &DependsList,
) {
    let requirements =
        conditional_requirements(config, &probe.machine, probe.qemu_user_static_in_apt);
    let total = depends.entries.len() + requirements.len();
    let mut rows = Vec::new();
    let mut missing = 0;
    for entry in &depends.entries {
        if !probe.tools.contains_key(&entry.tool) {
            missing += 1;
            report.add_packages(std::slice::from_ref(&entry.package));
            rows.push(Row {
                name: entry.tool.clone(),
                status: Status::Missing,
                detail: format!(
                    "not on PATH; package {} (listed at {})",
                    entry.package, entry.origin
                ),
                fix: None,
            });
        }
    }
    for req in &requirements {
        let found = req
            .tools
            .iter()
            .find_map(|t| probe.tools.get(t).map(|p| (t, p)));
        let name = req.tools[0].clone();
        match found {
            Some((tool, path)) => rows.push(Row {
                name: tool.clone(),
                status: Status::Ok,
                detail: format!("{} (needed for {})", path.display(), req.reason),
                fix: None,
            }),
            None => {
                missing += 1;
                report.add_packages(&req.packages);
                let what = if req.tools.len() > 1 {
                    format!("none of {} on PATH", req.tools.join(", "))
                } else {
                    "not on PATH".to_string()
                };
                rows.push(Row {
                    name,
                    status: Status::Missing,
                    detail: format!(
                        "{what}; package {} (needed for {})",
                        req.packages.join(" + "),
                        req.reason
                    ),
                    fix: None,
                });
            }
        }
    }
    if missing == 0 {
        report.push(
            "tools",
            Status::Ok,
            format!("all {total} required tools found"),
        );
    } else {
        let line = report.apt_line().unwrap_or_default();
        report.push_fix(
            "tools",
            Status::Missing,
            format!("{missing} of {total} required tools missing (below)"),
            line,
        );
    }
    report.rows.extend(rows);

    if !probe.tools.contains_key("git") && config.get("GIT_HASH").is_empty() {
        report.push_fix(
            "git",
            Status::Info,
            "not found; GIT_HASH (written to /etc/rpi-issue) stays empty",
            "optional: apt-get install -y git, or set GIT_HASH in the config",
        );
    }
}

/// A handler's state, from `BINFMT_DIR/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinfmtHandler {
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
}

impl BinfmtHandler {
    /// Parses the kernel's `enabled` / `interpreter …` / `flags: …` lines.
    pub fn parse(content: &str) -> BinfmtHandler {
        let mut handler = BinfmtHandler {
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
        };
        for line in content.lines() {
            let line = line.trim();
            if line == "enabled" {
                handler.enabled = true;
            } else if let Some(i) = line.strip_prefix("interpreter ") {
                handler.interpreter = i.trim().to_string();
            } else if let Some(flags) = line.strip_prefix("flags:") {
                handler.flags = flags.trim().to_string();
            }
        }
        handler
    }

    /// F ("fix binary"): the kernel opened the interpreter at registration, so it works inside
    /// a chroot that does not contain it.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// The flags field of a binfmt registration line (`:name:type:offset:magic:mask:interp:flags`).
fn conf_flags(content: &str) -> Option<String> {
    let line = registration_line(content)?;
    let delim = line.chars().next()?;
    let fields: Vec<&str> = line.split(delim).collect();
    (fields.len() >= 7).then(|| fields.get(7).unwrap_or(&"").to_string())
}

/// Whether a binfmt-support format file registers with the F flag (`fix_binary yes`).
fn format_fixes_binary(content: &str) -> bool {
    content
        .lines()
        .any(|l| l.split_whitespace().eq(["fix_binary", "yes"]))
}

/// The handler that runs `qemu_name` binaries: `qemu-<name>` by name, else one whose
/// interpreter is that emulator.
fn find_handler<'a>(probe: &'a HostProbe, qemu_name: &str) -> Option<(&'a str, BinfmtHandler)> {
    if let Some((name, content)) = probe
        .binfmt_handlers
        .get_key_value(&format!("qemu-{qemu_name}"))
    {
        return Some((name.as_str(), BinfmtHandler::parse(content)));
    }
    let interpreters = [
        format!("qemu-{qemu_name}"),
        format!("qemu-{qemu_name}-static"),
        format!("{qemu_name}-binfmt-P"),
    ];
    probe.binfmt_handlers.iter().find_map(|(name, content)| {
        let handler = BinfmtHandler::parse(content);
        let base = handler.interpreter.rsplit('/').next().unwrap_or("");
        interpreters
            .iter()
            .any(|i| i == base)
            .then_some((name.as_str(), handler))
    })
}

/// The emulation rows alone (`binfmt_misc`, `qemu-<name>`, or one `emulation` info row for a
/// native target): what `ensure_binfmt` reports when it cannot set emulation up itself.
pub fn emulation_report(target: Arch, probe: &HostProbe) -> CheckReport {
    let mut report = CheckReport::default();
    check_emulation(&mut report, target, probe);
    report
}

fn check_emulation(report: &mut CheckReport, target: Arch, probe: &HostProbe) {
    let arch = target.as_str();
    if target.runs_natively_on(&probe.machine) {
        report.push(
            "emulation",
            Status::Info,
            format!(
                "not needed: this {} host runs {arch} binaries natively",
                probe.machine
            ),
        );
        return;
    }
    let qemu = target.qemu_name();
    let handler_name = format!("qemu-{qemu}");
    if probe.binfmt_mounted {
        report.push(
            "binfmt_misc",
            Status::Ok,
            format!("mounted at {BINFMT_DIR}"),
        );
    } else {
        report.push_fix(
            "binfmt_misc",
            Status::Fail,
            format!("not mounted at {BINFMT_DIR}; needed to run {arch} programs on this {} host", probe.machine),
            format!("mount -t binfmt_misc binfmt_misc {BINFMT_DIR}   (if the kernel lacks it: modprobe binfmt_misc first)"),
        );
        report.push_fix(
            &handler_name,
            Status::Fail,
            "cannot be checked until binfmt_misc is mounted",
            "mount binfmt_misc (row above), then run pigen check again",
        );
        return;
    }

    let emulator_installed = emulator_tools(qemu)
        .iter()
        .any(|t| probe.tools.contains_key(t));
    let packages = emulator_packages(probe.qemu_user_static_in_apt).join(" ");
    let register = || -> String {
        if !emulator_installed {
            return format!(
                "install the emulator (apt-get install -y {packages}, also in the tools line); its package registers {handler_name}; then run pigen check again"
            );
        }
        if let Some(conf) = probe
            .binfmt_confs
            .get(&handler_name)
            .filter(|c| conf_flags(&c.content).is_some_and(|f| f.contains('F')))
        {
            return format!("cat {} > {BINFMT_DIR}/register", conf.path.display());
        }
        if probe.tools.contains_key("update-binfmts")
            && probe
                .binfmt_support_formats
                .get(&handler_name)
                .is_some_and(|format| format_fixes_binary(format))
        {
            return format!("update-binfmts --enable {handler_name}");
        }
        if probe.binfmt_confs.contains_key(&handler_name)
            || probe.binfmt_support_formats.contains_key(&handler_name)
        {
            // A registration without F: the dynamic qemu-user of Debian 12 and older.
            return format!(
                "apt-get install -y {packages}   (its registration has the F flag), then run pigen check again"
            );
        }
        format!("apt-get install -y {packages} binfmt-support && update-binfmts --enable {handler_name}")
    };

    match find_handler(probe, qemu) {
        None => {
            let fix = register();
            report.push_fix(
                &handler_name,
                Status::Fail,
                format!("no binfmt_misc handler for {arch} ({qemu}) is registered"),
                fix,
            );
        }
        Some((name, handler)) if !handler.enabled => {
            report.push_fix(
                &handler_name,
                Status::Fail,
                format!("handler {name} is registered but disabled"),
                format!("echo 1 > {BINFMT_DIR}/{name}   (or: update-binfmts --enable {name})"),
            );
        }
        Some((name, handler)) if !handler.fix_binary() => {
            let fix = format!("echo -1 > {BINFMT_DIR}/{name}; then {}", register());
            report.push_fix(
                &handler_name,
                Status::Fail,
                format!(
                    "handler {name} lacks the F flag (flags: {}; interpreter {}), so the emulator would have to exist inside every stage's root filesystem",
                    if handler.flags.is_empty() { "none" } else { &handler.flags },
                    handler.interpreter
                ),
                fix,
            );
        }
        Some((name, handler)) => {
            report.push(
                &handler_name,
                Status::Ok,
                format!(
                    "handler {name} enabled, flags {}, interpreter {}",
                    handler.flags, handler.interpreter
                ),
            );
        }
    }
}

/// What it takes to run `target` binaries on this host: the next step `ensure_binfmt` can take
/// by itself, or that it cannot. Mirrors the fixes `pigen check` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BinfmtAction {
    /// Native target, or an enabled handler with the F flag is registered.
    Ready,
    /// `mount -t binfmt_misc binfmt_misc BINFMT_DIR`.
    Mount,
    /// `echo 1 > BINFMT_DIR/<handler>`: registered with the F flag but disabled.
    Enable { handler: String },
    /// Write `line` (from the registration file `from`, with the F flag) to
    /// `BINFMT_DIR/register`.
    Register { line: String, from: PathBuf },
    /// `update-binfmts --enable <name>` (its format has `fix_binary yes`).
    UpdateBinfmts { name: String },
    /// Needs the user (a package to install, a handler without F to replace): the emulation
    /// rows of [`emulation_report`] say what to do.
    Manual,
}

/// The registration line of a binfmt.d file: its first line that is not blank or a comment.
pub fn registration_line(content: &str) -> Option<&str> {
    content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
}

/// The next step towards running `target` binaries (pure; see [`BinfmtAction`]).
pub fn binfmt_action(target: Arch, probe: &HostProbe) -> BinfmtAction {
    if target.runs_natively_on(&probe.machine) {
        return BinfmtAction::Ready;
    }
    if !probe.binfmt_mounted {
        return BinfmtAction::Mount;
    }
    let qemu = target.qemu_name();
    match find_handler(probe, qemu) {
        Some((_, handler)) if handler.enabled && handler.fix_binary() => BinfmtAction::Ready,
        Some((name, handler)) if handler.fix_binary() => BinfmtAction::Enable {
            handler: name.to_string(),
        },
        // Registered without F: replacing the host's handler is the user's call.
        Some(_) => BinfmtAction::Manual,
        None => {
            let handler_name = format!("qemu-{qemu}");
            let emulator_installed = emulator_tools(qemu)
                .iter()
                .any(|t| probe.tools.contains_key(t));
            if !emulator_installed {
                return BinfmtAction::Manual;
            }
            if let Some(conf) = probe
                .binfmt_confs
                .get(&handler_name)
                .filter(|c| conf_flags(&c.content).is_some_and(|f| f.contains('F')))
            {
                if let Some(line) = registration_line(&conf.content) {
                    return BinfmtAction::Register {
                        line: line.to_string(),
                        from: conf.path.clone(),
                    };
                }
            }
            if probe.tools.contains_key("update-binfmts")
                && probe
                    .binfmt_support_formats
                    .get(&handler_name)
                    .is_some_and(|format| format_fixes_binary(format))
            {
                return BinfmtAction::UpdateBinfmts { name: handler_name };
            }
            BinfmtAction::Manual
        }
    }
}

fn check_block_devices(report: &mut CheckReport, config: &Config, probe: &HostProbe) {
    if config.get("STAGE_STORE") != "qcow2" {
        report.push(
            "block devices",
            Status::Info,
            format!(
                "not needed with STAGE_STORE={} (loop, FUSE and nbd serve qcow2 stages only)",
                config.get("STAGE_STORE")
            ),
        );
        return;
    }
    let attach = config.get("QCOW2_ATTACH");
    // `auto` uses qemu-nbd when /dev/nbd* exists, else FUSE + loop.
    let uses_fuse = attach == "fuse" || (attach != "nbd" && !probe.nbd_device);
    let how = if uses_fuse {
        format!("QCOW2_ATTACH={attach} uses FUSE (qemu-storage-daemon) + loop")
    } else {
        format!("QCOW2_ATTACH={attach} uses qemu-nbd")
    };

    let nbd_state = match (probe.nbd_device, probe.nbd_module) {
        (true, _) => "/dev/nbd0 present".to_string(),
        (false, NbdModule::Loaded) => "nbd module loaded but no /dev/nbd0".to_string(),
        (false, NbdModule::Available) => format!(
            "nbd module available for kernel {} but not loaded",
            probe.kernel_release
        ),
        (false, NbdModule::Absent) => {
            format!("no nbd module for kernel {}", probe.kernel_release)
        }
    };
    if attach == "nbd" {
        if probe.nbd_device {
            report.push("nbd", Status::Ok, format!("{nbd_state}; {how}"));
        } else {
            let fix = match probe.nbd_module {
                NbdModule::Absent => "set QCOW2_ATTACH=auto or fuse: the FUSE path (qemu-storage-daemon + loop) needs no nbd".to_string(),
                NbdModule::Available => "modprobe nbd max_part=16   (or set QCOW2_ATTACH=auto to use the FUSE path)".to_string(),
                NbdModule::Loaded => "create the device nodes (in a container: pass /dev/nbd0 … /dev/nbd15), or set QCOW2_ATTACH=auto to use the FUSE path".to_string(),
            };
            report.push_fix(
                "nbd",
                Status::Fail,
                format!("{nbd_state}; QCOW2_ATTACH=nbd needs it"),
                fix,
            );
        }
    } else if uses_fuse {
        let extra = if probe.nbd_module == NbdModule::Available {
            " (modprobe nbd max_part=16 would make auto use it)"
        } else {
            ""
        };
        report.push(
            "nbd",
            Status::Info,
            format!("{nbd_state}{extra}; not needed: the FUSE path (qemu-storage-daemon + loop) replaces it"),
        );
    } else {
        report.push("nbd", Status::Info, format!("{nbd_state}; {how}"));
    }

    let device = |report: &mut CheckReport, name: &str, present: bool, path: &str, fix: &str| {
        if !uses_fuse {
            report.push(
                name,
                Status::Info,
                format!(
                    "{path} {}; not needed while qemu-nbd attaches stage images",
                    if present { "present" } else { "absent" }
                ),
            );
        } else if present {
            report.push(name, Status::Ok, format!("{path} present; {how}"));
        } else {
            report.push_fix(name, Status::Fail, format!("{path} missing; {how}"), fix);
        }
    };
    device(
        report,
        "loop devices",
        probe.loop_control,
        "/dev/loop-control",
        "modprobe loop; in a container, start it with the loop devices (e.g. --privileged, or --device /dev/loop-control plus /dev/loopN)",
    );
    device(
        report,
        "fuse",
        probe.dev_fuse,
        "/dev/fuse",
        "modprobe fuse; in a container, pass --device /dev/fuse",
    );
}

/// Built stages (not skipped) and exports (stages with an `EXPORT_IMAGE` not skipped) → the
/// bytes the build is estimated to need in WORK_DIR.
pub fn space_estimate(stages: usize, exports: usize) -> u64 {
    SPACE_BASE + SPACE_PER_STAGE * stages as u64 + SPACE_PER_EXPORT * exports as u64
}

fn check_space(report: &mut CheckReport, config: &Config, probe: &HostProbe) {
    let stages = config
        .stage_list
        .iter()
        .filter(|d| !config.skip_stage_list.contains(&stage_name(d)))
        .count();
    let exports = config
        .stage_list
        .iter()
        .filter(|d| d.join("EXPORT_IMAGE").is_file())
        .filter(|d| !config.skip_images_list.contains(&stage_name(d)))
        .count();
    let needed = space_estimate(stages, exports);
    let how = format!(
        "estimate {} = {} + {} x {stages} stage(s) + {} x {exports} export(s)",
        gib(needed),
        gib(SPACE_BASE),
        gib(SPACE_PER_STAGE),
        gib(SPACE_PER_EXPORT)
    );
    let Some(free) = &probe.free_space else {
        report.push(
            "disk space",
            Status::Warn,
            format!(
                "cannot measure free space for WORK_DIR {}; {how}",
                config.work_dir.display()
            ),
        );
        return;
    };
    let detail = format!(
        "{} free on {}; {how}",
        gib(free.available),
        free.measured.display()
    );
    if free.available < HARD_MIN_FREE {
        report.push_fix(
            "disk space",
            Status::Fail,
            format!("{detail}; below the hard minimum of {}", gib(HARD_MIN_FREE)),
            "free space there, or set WORK_DIR to a file system with more room",
        );
    } else if free.available < needed {
        report.push_fix(
            "disk space",
            Status::Warn,
            format!("{detail}; the build may run out of space"),
            "free space there, or set WORK_DIR to a file system with more room",
        );
    } else {
        report.push("disk space", Status::Ok, detail);
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

// ----------------------------------------------------------------------------------------------
// Entry points.

/// `pigen check [--install]`, also run at the start of `pigen build`: reads the depends list
/// (built in + `base_dir/depends`), probes this host and evaluates. With `install`, when tools
/// are missing, runs `apt-get update` and the report's apt-get line, then checks again and
/// returns the new report. The caller maps `would_fail()` to exit code 1.
///
/// Errors: a malformed depends file ([`ConfigError`], bad input), or a failed apt-get run.
pub fn run_check(config: &Config, base_dir: &Path, install: bool) -> anyhow::Result<CheckReport> {
    let depends = DependsList::load(base_dir)?;
    let paths = HostPaths::system();
    let report = evaluate(
        config,
        &HostProbe::gather(&paths, config, &depends),
        &depends,
    );
    if !install || report.apt_packages.is_empty() {
        return Ok(report);
    }
    install_packages(&report.apt_packages)?;
    Ok(evaluate(
        config,
        &HostProbe::gather(&paths, config, &depends),
        &depends,
    ))
}

/// `apt-get update`, then `apt-get install -y PACKAGES`, output to the terminal.
pub fn install_packages(packages: &[String]) -> anyhow::Result<()> {
    let line = format!("apt-get install -y {}", packages.join(" "));
    if !nix::unistd::geteuid().is_root() {
        bail!("installing packages needs root; run: sudo pigen check --install (or: sudo {line})");
    }
    let run = |args: &[&str]| -> anyhow::Result<()> {
        Cmd::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run(&LogSink::default(), |line| eprintln!("{line}"))?;
        Ok(())
    };
    run(&["update"])?;
    let mut args = vec!["install", "-y"];
    args.extend(packages.iter().map(String::as_str));
    run(&args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolve::{resolve, HostFacts};
    use crate::config::{Assignment, Env, Loaded, Origin};
    use std::fs;

    /// A resolved config over a temporary BASE_DIR holding `stages/stage0/` (plus whatever
    /// `setup` adds), with `IMG_NAME=test` and `vars` set on the command line.
    fn config_in(vars: &[(&str, &str)], setup: impl FnOnce(&Path)) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        fs::create_dir_all(base.join("stages/stage0")).unwrap();
        let zoneinfo = dir.path().join("zoneinfo");
        fs::create_dir_all(zoneinfo.join("Europe")).unwrap();
        fs::write(zoneinfo.join("Europe/Berlin"), "TZif2").unwrap();
        setup(&base);
        let assignments = [("IMG_NAME", "test")]
            .iter()
            .chain(vars)
            .map(|(name, value)| Assignment {
                name: name.to_string(),
                value: value.to_string(),
                origin: Origin::CommandLine,
            })
            .collect();
        let loaded = Loaded {
            assignments,
            warnings: vec![],
        };
        let host = HostFacts {
            cwd: base.clone(),
            today_utc: "2026-01-01".into(),
            git_hash: None,
            zoneinfo_dir: zoneinfo,
        };
        let config = resolve(&loaded, &Env::new(), &base, &host).unwrap_or_else(|e| panic!("{e}"));
        (dir, config)
    }

    fn config(vars: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        config_in(vars, |_| {})
    }

    const GOOD_HANDLER: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    /// An x86_64 host, root, with every tool pigen could want and an arm64 handler.
    fn good_probe(depends: &DependsList) -> HostProbe {
        let mut tools = BTreeMap::new();
        let extra = [
            "qemu-img",
            "qemu-nbd",
            "qemu-storage-daemon",
            "qemu-aarch64-static",
            "qemu-arm-static",
            "mkfs.xfs",
            "bmaptool",
            "mksquashfs",
            "git",
        ];
        for tool in depends.entries.iter().map(|e| e.tool.as_str()).chain(extra) {
            tools.insert(tool.to_string(), Path::new("/usr/bin").join(tool));
        }
        HostProbe {
            machine: "x86_64".into(),
            kernel_release: "6.1.0-test".into(),
            euid: 0,
            tools,
            binfmt_mounted: true,
            binfmt_handlers: BTreeMap::from([(
                "qemu-aarch64".to_string(),
                GOOD_HANDLER.to_string(),
            )]),
            binfmt_confs: BTreeMap::new(),
            binfmt_support_formats: BTreeMap::new(),
            loop_control: true,
            dev_fuse: true,
            nbd_device: false,
            nbd_module: NbdModule::Absent,
            free_space: Some(FreeSpace {
                measured: PathBuf::from("/srv"),
                available: 100 * GIB,
            }),
            qemu_user_static_in_apt: None,
        }
    }

    fn status_of(report: &CheckReport, name: &str) -> Status {
        report
            .row(name)
            .unwrap_or_else(|| panic!("no row {name:?} in\n{report}"))
            .status
    }

    fn fix_of(report: &CheckReport, name: &str) -> String {
        report
            .row(name)
            .and_then(|r| r.fix.clone())
            .unwrap_or_else(|| panic!("no fix for {name:?} in\n{report}"))
    }

    // ---- depends parsing

    #[test]
    fn depends_comments_several_per_line_and_packages() {
        let text = "# header\nquilt  parted # trailing comment\n\trealpath:coreutils\n\n#bc\nxz:xz-utils quilt:other\n";
        let list = DependsList::parse(text, "depends").unwrap();
        let got: Vec<(&str, &str, &str)> = list
            .entries
            .iter()
            .map(|e| (e.tool.as_str(), e.package.as_str(), e.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("quilt", "quilt", "depends:2"),
                ("parted", "parted", "depends:2"),
                ("realpath", "coreutils", "depends:3"),
                ("xz", "xz-utils", "depends:6"),
            ]
        );
    }

    #[test]
    fn depends_bad_entries_name_their_line() {
        let err = DependsList::parse("ok\n:pkg tool:\nx:Bad_Pkg a:b:c\n", "f").unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(err.0[0].starts_with("f:2: \":pkg\""), "{err}");
        assert!(err.0[2].starts_with("f:3: \"x:Bad_Pkg\""), "{err}");
        assert!(err.0[3].contains("<tool>[:<debian-package>]"), "{err}");
    }

    #[test]
    fn builtin_depends_parses_and_leaves_conditional_tools_to_code() {
        let list = DependsList::builtin();
        let package = |tool: &str| {
            list.entries
                .iter()
                .find(|e| e.tool == tool)
                .map(|e| e.package.clone())
        };
        assert_eq!(package("sfdisk").as_deref(), Some("fdisk"));
        assert_eq!(package("mcopy").as_deref(), Some("mtools"));
        assert_eq!(package("losetup").as_deref(), Some("mount"));
        assert_eq!(package("capsh").as_deref(), Some("libcap2-bin"));
        for conditional in ["qemu-img", "mkfs.xfs", "bmaptool", "mksquashfs", "git"] {
            assert_eq!(
                package(conditional),
                None,
                "{conditional} is checked by code"
            );
        }
    }

    #[test]
    fn base_dir_depends_adds_tools() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("depends"), "bash fatattr\nkpartx\n").unwrap();
        let list = DependsList::load(dir.path()).unwrap();
        let builtin = DependsList::builtin();
        assert_eq!(list.entries.len(), builtin.entries.len() + 2);
        assert_eq!(list.entries[builtin.entries.len()].tool, "fatattr");
        assert!(list.entries[builtin.entries.len()]
            .origin
            .ends_with("depends:1"));
        // Without a file: the built-in list.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(DependsList::load(empty.path()).unwrap(), builtin);
    }

    // ---- evaluation

    #[test]
    fn all_present_passes() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let report = evaluate(&config, &good_probe(&depends), &depends);
        assert!(!report.would_fail(), "{report}");
        assert_eq!(report.apt_line(), None);
        assert_eq!(status_of(&report, "tools"), Status::Ok);
        assert_eq!(status_of(&report, "root"), Status::Ok);
        assert_eq!(status_of(&report, "qemu-aarch64"), Status::Ok);
        assert_eq!(status_of(&report, "qemu-aarch64-static"), Status::Ok);
        assert_eq!(status_of(&report, "disk space"), Status::Ok);
        assert!(report.row("git").is_none());
        assert!(
            report.to_string().ends_with("Ready to build.\n"),
            "{report}"
        );
    }

    #[test]
    fn missing_tools_give_one_apt_line_with_unique_packages_in_order() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        for tool in [
            "rsync",
            "fsck.fat",
            "debootstrap",
            "mkfs.fat",
            "sfdisk",
            "qemu-aarch64-static",
        ] {
            probe.tools.remove(tool);
        }
        let report = evaluate(&config, &probe, &depends);
        assert!(report.would_fail());
        assert_eq!(
            report.apt_packages,
            [
                "debootstrap",
                "fdisk",
                "dosfstools",
                "rsync",
                "qemu-user-static"
            ]
        );
        let line = "apt-get install -y debootstrap fdisk dosfstools rsync qemu-user-static";
        assert_eq!(report.apt_line().as_deref(), Some(line));
        assert_eq!(status_of(&report, "tools"), Status::Missing);
        assert_eq!(fix_of(&report, "tools"), line);
        assert_eq!(status_of(&report, "mkfs.fat"), Status::Missing);
        assert!(report
            .row("mkfs.fat")
            .unwrap()
            .detail
            .contains("package dosfstools"));
        let emulator = report.row("qemu-aarch64-static").unwrap();
        assert_eq!(emulator.status, Status::Missing);
        assert!(emulator
            .detail
            .contains("none of qemu-aarch64-static, qemu-aarch64"));
        // The apt-get line appears once in the printed report.
        assert_eq!(
            report
                .to_string()
                .matches("apt-get install -y debootstrap")
                .count(),
            1
        );
    }

    #[test]
    fn emulator_without_static_suffix_counts_and_new_debian_gets_qemu_user() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.tools.remove("qemu-aarch64-static");
        probe
            .tools
            .insert("qemu-aarch64".into(), "/usr/bin/qemu-aarch64".into());
        let report = evaluate(&config, &probe, &depends);
        assert_eq!(status_of(&report, "qemu-aarch64"), Status::Ok, "{report}");
        assert!(!report.would_fail(), "{report}");

        probe.tools.remove("qemu-aarch64");
        probe.qemu_user_static_in_apt = Some(false);
        let report = evaluate(&config, &probe, &depends);
        assert_eq!(report.apt_packages, ["qemu-user", "qemu-user-binfmt"]);
    }

    #[test]
    fn not_root_fails() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.euid = 1000;
        let report = evaluate(&config, &probe, &depends);
        assert!(report.would_fail());
        assert_eq!(status_of(&report, "root"), Status::Fail);
        assert!(fix_of(&report, "root").contains("sudo pigen"));
        assert_eq!(report.apt_line(), None);
    }

    #[test]
    fn foreign_arch_without_binfmt_mounted() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.binfmt_mounted = false;
        probe.binfmt_handlers.clear();
        let report = evaluate(&config, &probe, &depends);
        assert!(report.would_fail());
        assert_eq!(status_of(&report, "binfmt_misc"), Status::Fail);
        assert!(fix_of(&report, "binfmt_misc")
            .starts_with("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"));
        assert_eq!(status_of(&report, "qemu-aarch64"), Status::Fail);
    }

    #[test]
    fn handler_without_f_flag() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.binfmt_handlers.insert(
            "qemu-aarch64".into(),
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: OP\n".into(),
        );
        let report = evaluate(&config, &probe, &depends);
        assert!(report.would_fail());
        let row = report.row("qemu-aarch64").unwrap();
        assert_eq!(row.status, Status::Fail);
        assert!(
            row.detail.contains("lacks the F flag (flags: OP"),
            "{report}"
        );
        // Only a registration without F on disk (dynamic qemu-user-binfmt): install the static one.
        probe.binfmt_confs.insert(
            "qemu-aarch64".into(),
            BinfmtConf {
                path: "/usr/lib/binfmt.d/qemu-aarch64.conf".into(),
                content: ":qemu-aarch64:M::\\x7f\\x45:\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OP\n".into(),
            },
        );
        let fix = fix_of(&evaluate(&config, &probe, &depends), "qemu-aarch64");
        assert_eq!(fix, "echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64; then apt-get install -y qemu-user-static   (its registration has the F flag), then run pigen check again");
        // A registration with F on disk: re-register from it.
        probe.binfmt_confs.get_mut("qemu-aarch64").unwrap().content =
            ":qemu-aarch64:M::\\x7f\\x45:\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n".into();
        let fix = fix_of(&evaluate(&config, &probe, &depends), "qemu-aarch64");
        assert_eq!(fix, "echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64; then cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register");
    }

    #[test]
    fn disabled_handler() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.binfmt_handlers.insert(
            "qemu-aarch64".into(),
            GOOD_HANDLER.replace("enabled", "disabled"),
        );
        let report = evaluate(&config, &probe, &depends);
        assert!(report.would_fail());
        assert_eq!(status_of(&report, "qemu-aarch64"), Status::Fail);
        assert!(fix_of(&report, "qemu-aarch64")
            .starts_with("echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64"));
    }

    #[test]
    fn missing_handler_fix_depends_on_what_is_installed() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.binfmt_handlers.clear();
        // Emulator installed, nothing to register it with.
        let report = evaluate(&config, &probe, &depends);
        assert_eq!(status_of(&report, "qemu-aarch64"), Status::Fail);
        assert_eq!(
            fix_of(&report, "qemu-aarch64"),
            "apt-get install -y qemu-user-static binfmt-support && update-binfmts --enable qemu-aarch64"
        );
        // binfmt-support knows the format.
        probe
            .tools
            .insert("update-binfmts".into(), "/usr/sbin/update-binfmts".into());
        probe.binfmt_support_formats.insert(
            "qemu-aarch64".into(),
            "package qemu-user-static\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nfix_binary yes\n".into(),
        );
        let report = evaluate(&config, &probe, &depends);
        assert_eq!(
            fix_of(&report, "qemu-aarch64"),
            "update-binfmts --enable qemu-aarch64"
        );
        // ... but not when that format lacks the F flag (dynamic qemu-user's).
        probe.binfmt_support_formats.insert(
            "qemu-aarch64".into(),
            "package qemu-user-binfmt\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
                .into(),
        );
        let report = evaluate(&config, &probe, &depends);
        assert!(fix_of(&report, "qemu-aarch64").starts_with(
            "apt-get install -y qemu-user-static   (its registration has the F flag)"
        ));
        probe.binfmt_support_formats.clear();
        // Emulator not installed: install it first.
        probe.tools.remove("qemu-aarch64-static");
        let report = evaluate(&config, &probe, &depends);
        assert!(fix_of(&report, "qemu-aarch64")
            .starts_with("install the emulator (apt-get install -y qemu-user-static"));
    }

    #[test]
    fn handler_found_by_interpreter_under_another_name() {
        let (_dir, config) = config(&[("TARGET_ARCH", "armhf")]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.binfmt_handlers = BTreeMap::from([
            (
                "qemu-armeb".to_string(),
                "enabled\ninterpreter /usr/bin/qemu-armeb-static\nflags: F\n".to_string(),
            ),
            (
                "arm".to_string(),
                "enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: OCF\n".to_string(),
            ),
        ]);
        let report = evaluate(&config, &probe, &depends);
        let row = report.row("qemu-arm").unwrap();
        assert_eq!(row.status, Status::Ok, "{report}");
        assert!(row.detail.starts_with("handler arm enabled"));
    }

    #[test]
    fn native_arch_needs_no_binfmt() {
        for (arch, machine) in [
            ("amd64", "x86_64"),
            ("arm64", "aarch64"),
            ("i386", "x86_64"),
        ] {
            let (_dir, config) = config(&[("TARGET_ARCH", arch), ("TARGET_RASPI", "0")]);
            let depends = DependsList::builtin();
            let mut probe = good_probe(&depends);
            probe.machine = machine.into();
            probe.binfmt_mounted = false;
            probe.binfmt_handlers.clear();
            probe.tools.retain(|t, _| {
                !t.starts_with("qemu-")
                    || t == "qemu-img"
                    || t == "qemu-nbd"
                    || t == "qemu-storage-daemon"
            });
            let report = evaluate(&config, &probe, &depends);
            assert!(!report.would_fail(), "{arch} on {machine}:\n{report}");
            assert_eq!(status_of(&report, "emulation"), Status::Info);
            assert!(report.row("binfmt_misc").is_none());
        }
    }

    #[test]
    fn conditional_tools() {
        let depends = DependsList::builtin();
        // Not asked for: not required.
        let (_dir, plain) = config(&[]);
        let mut probe = good_probe(&depends);
        for tool in ["mkfs.xfs", "bmaptool", "mksquashfs"] {
            probe.tools.remove(tool);
        }
        assert!(!evaluate(&plain, &probe, &depends).would_fail());

        let (_dir, config) = config(&[
            ("TARGET_RASPI", "0"),
            ("BOOT_FSTYPE", "xfs"),
            ("BMAP", "1"),
            ("ROOTFS_RO", "1"),
        ]);
        let report = evaluate(&config, &probe, &depends);
        assert!(report.would_fail());
        assert_eq!(report.apt_packages, ["xfsprogs", "squashfs-tools"]);
        assert!(report
            .row("mkfs.xfs")
            .unwrap()
            .detail
            .contains("BOOT_FSTYPE=xfs"));
        assert!(
            report.row("bmaptool").is_none(),
            "pigen writes .bmap files itself"
        );
        assert!(report
            .row("mksquashfs")
            .unwrap()
            .detail
            .contains("ROOTFS_RO=1"));

        let report = evaluate(&config, &good_probe(&depends), &depends);
        assert!(!report.would_fail(), "{report}");
        assert_eq!(status_of(&report, "mkfs.xfs"), Status::Ok);
    }

    #[test]
    fn qemu_utils_only_for_qcow2() {
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        for tool in ["qemu-img", "qemu-nbd", "qemu-storage-daemon"] {
            probe.tools.remove(tool);
        }
        probe.loop_control = false;
        let (_dir, qcow2) = config(&[]);
        assert_eq!(
            evaluate(&qcow2, &probe, &depends).apt_packages,
            ["qemu-utils"]
        );

        let (_dir, dir_store) = config(&[("STAGE_STORE", "dir")]);
        let report = evaluate(&dir_store, &probe, &depends);
        assert!(!report.would_fail(), "{report}");
        assert_eq!(status_of(&report, "block devices"), Status::Info);

        let (_dir, dir_qcow2_out) = config(&[("STAGE_STORE", "dir"), ("OUTPUT_QCOW2", "1")]);
        let report = evaluate(&dir_qcow2_out, &probe, &depends);
        assert_eq!(report.apt_packages, ["qemu-utils"]);
        assert!(report
            .row("qemu-img")
            .unwrap()
            .detail
            .contains("OUTPUT_QCOW2=1"));
    }

    #[test]
    fn block_devices_follow_the_attach_method() {
        let depends = DependsList::builtin();
        let (_dir, auto) = config(&[]);
        let mut probe = good_probe(&depends);
        probe.loop_control = false;
        // auto without /dev/nbd0 → FUSE + loop: loop devices are required.
        let report = evaluate(&auto, &probe, &depends);
        assert_eq!(status_of(&report, "loop devices"), Status::Fail);
        assert_eq!(status_of(&report, "nbd"), Status::Info);
        assert!(report
            .row("nbd")
            .unwrap()
            .detail
            .contains("the FUSE path (qemu-storage-daemon + loop) replaces it"));
        // auto with /dev/nbd0 → qemu-nbd: loop and FUSE only informational.
        probe.nbd_device = true;
        probe.dev_fuse = false;
        let report = evaluate(&auto, &probe, &depends);
        assert!(!report.would_fail(), "{report}");
        assert_eq!(status_of(&report, "loop devices"), Status::Info);
        assert_eq!(status_of(&report, "fuse"), Status::Info);
        // nbd asked for but not there.
        let (_dir, nbd) = config(&[("QCOW2_ATTACH", "nbd")]);
        probe.nbd_device = false;
        probe.nbd_module = NbdModule::Available;
        let report = evaluate(&nbd, &probe, &depends);
        assert_eq!(status_of(&report, "nbd"), Status::Fail);
        assert!(fix_of(&report, "nbd").starts_with("modprobe nbd max_part=16"));
        // fuse asked for, /dev/fuse missing.
        let (_dir, fuse) = config(&[("QCOW2_ATTACH", "fuse")]);
        probe.loop_control = true;
        let report = evaluate(&fuse, &probe, &depends);
        assert_eq!(status_of(&report, "fuse"), Status::Fail);
        assert!(fix_of(&report, "fuse").contains("--device /dev/fuse"));
    }

    #[test]
    fn low_disk_space() {
        let depends = DependsList::builtin();
        let (_dir, config) = config(&[]);
        let mut probe = good_probe(&depends);
        // One stage, no export: 4 + 2 = 6 GiB.
        probe.free_space.as_mut().unwrap().available = 3 * GIB;
        let report = evaluate(&config, &probe, &depends);
        assert_eq!(status_of(&report, "disk space"), Status::Warn);
        assert!(!report.would_fail());
        let detail = &report.row("disk space").unwrap().detail;
        assert!(detail.starts_with("3.0 GiB free on /srv; estimate 6.0 GiB = 4.0 GiB + 2.0 GiB x 1 stage(s) + 2.0 GiB x 0 export(s)"), "{detail}");

        probe.free_space.as_mut().unwrap().available = GIB;
        let report = evaluate(&config, &probe, &depends);
        assert_eq!(status_of(&report, "disk space"), Status::Fail);
        assert!(report.would_fail());

        probe.free_space = None;
        assert_eq!(
            status_of(&evaluate(&config, &probe, &depends), "disk space"),
            Status::Warn
        );

        // An exporting stage adds 2 GiB; a skipped stage is not counted.
        let (_dir, exporting) = config_in(&[("SKIP_STAGE_LIST", "stage1")], |base| {
            fs::create_dir_all(base.join("stages/stage1")).unwrap();
            fs::write(
                base.join("stages/stage0/EXPORT_IMAGE"),
                "IMG_SUFFIX=-lite\n",
            )
            .unwrap();
        });
        probe.free_space = Some(FreeSpace {
            measured: "/srv".into(),
            available: 7 * GIB,
        });
        let report = evaluate(&exporting, &probe, &depends);
        assert_eq!(status_of(&report, "disk space"), Status::Warn);
        assert!(report
            .row("disk space")
            .unwrap()
            .detail
            .contains("estimate 8.0 GiB"));
    }

    #[test]
    fn table_is_aligned() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let mut probe = good_probe(&depends);
        probe.tools.remove("debootstrap");
        let text = evaluate(&config, &probe, &depends).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CHECK "), "{text}");
        let status_col = lines[0].find("STATUS").unwrap();
        let detail_col = lines[0].find("DETAIL").unwrap();
        for line in &lines[1..lines.len() - 1] {
            assert!(line.len() > detail_col, "{line:?}");
            assert_eq!(&line[status_col - 2..status_col], "  ", "{line:?}");
            assert_ne!(&line[detail_col..detail_col + 1], " ", "{line:?}");
        }
        assert!(
            text.contains("  fix: apt-get install -y debootstrap\n"),
            "{text}"
        );
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("A build would fail here: 1 missing tool(s)."),
            "{text}"
        );
    }

    // ---- parsing kernel and registration formats

    #[test]
    fn binfmt_formats() {
        let h = BinfmtHandler::parse(GOOD_HANDLER);
        assert!(h.enabled && h.fix_binary());
        assert_eq!(h.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert_eq!(h.flags, "POCF");
        assert!(!BinfmtHandler::parse("disabled\nflags: \n").enabled);
        assert_eq!(
            conf_flags(
                "# comment\n:qemu-arm:M::\\x7f:\\xff:/usr/libexec/qemu-binfmt/arm-binfmt-P:OCF\n"
            )
            .as_deref(),
            Some("OCF")
        );
        assert_eq!(conf_flags(",x,M,,m,k,/i").as_deref(), Some(""));
        assert_eq!(conf_flags("garbage"), None);
    }

    // ---- the probe

    #[test]
    fn probe_reads_a_fake_host_tree() {
        let (_dir, config) = config(&[]);
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let write = |rel: &str, content: &str| {
            let p = r.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        };
        write("proc/sys/fs/binfmt_misc/status", "enabled\n");
        write("proc/sys/fs/binfmt_misc/register", "");
        write("proc/sys/fs/binfmt_misc/qemu-aarch64", GOOD_HANDLER);
        write(
            "usr/lib/binfmt.d/qemu-aarch64.conf",
            ":qemu-aarch64:M::a:b:/x:OPF\n",
        );
        write(
            "etc/binfmt.d/qemu-aarch64.conf",
            ":qemu-aarch64:M::a:b:/y:F\n",
        );
        write("usr/lib/binfmt.d/other.conf", ":other:M::a:b:/z:F\n");
        write(
            "usr/share/binfmts/qemu-aarch64",
            "package qemu-user-static\nfix_binary yes\n",
        );
        write("dev/loop-control", "");
        fs::create_dir_all(r.join("sys/module/nbd")).unwrap();
        let bin = r.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for (tool, mode) in [
            ("bash", 0o755),
            ("qemu-aarch64-static", 0o755),
            ("sfdisk", 0o644),
        ] {
            let p = bin.join(tool);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        let paths = HostPaths {
            root: r.to_path_buf(),
            tool_dirs: vec![bin.clone()],
        };
        let probe = HostProbe::gather(&paths, &config, &DependsList::builtin());
        assert_eq!(probe.tools.get("bash"), Some(&bin.join("bash")));
        assert!(!probe.tools.contains_key("sfdisk"), "not executable");
        assert!(!probe.tools.contains_key("debootstrap"));
        assert!(probe.binfmt_mounted);
        assert_eq!(
            probe.binfmt_handlers.keys().collect::<Vec<_>>(),
            ["qemu-aarch64"]
        );
        let conf = &probe.binfmt_confs["qemu-aarch64"];
        assert_eq!(
            conf.path,
            Path::new("/etc/binfmt.d/qemu-aarch64.conf"),
            "/etc wins"
        );
        assert_eq!(probe.binfmt_confs.len(), 1);
        assert!(format_fixes_binary(
            &probe.binfmt_support_formats["qemu-aarch64"]
        ));
        assert!(probe.loop_control && !probe.dev_fuse && !probe.nbd_device);
        assert_eq!(probe.nbd_module, NbdModule::Loaded);
        // WORK_DIR does not exist yet: its nearest existing ancestor is measured.
        let free = probe.free_space.expect("statvfs of a temp dir works");
        assert!(config.work_dir.starts_with(&free.measured));
        assert!(free.measured.exists());
    }

    #[test]
    fn nbd_module_found_in_modules_dep() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/drivers/block/loop.ko.xz:\nkernel/drivers/block/nbd.ko.xz:\n",
        )
        .unwrap();
        assert!(nbd_in_modules(dir.path()));
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/drivers/block/xnbd.ko:\n",
        )
        .unwrap();
        assert!(!nbd_in_modules(dir.path()));
    }

    #[test]
    fn search_path_appends_system_dirs_once() {
        let dirs = search_path(Some(OsStr::new("/opt/bin:relative::/usr/bin")));
        assert_eq!(dirs[0], Path::new("/opt/bin"));
        assert_eq!(dirs[1], Path::new("/usr/bin"));
        assert_eq!(
            dirs.iter().filter(|d| *d == Path::new("/usr/bin")).count(),
            1
        );
        assert!(dirs.contains(&PathBuf::from("/usr/sbin")));
        assert!(!dirs.contains(&PathBuf::from("relative")));
    }

    /// The real probe on this machine: must not panic and must find bash.
    #[test]
    fn real_probe_on_this_host() {
        let (_dir, config) = config(&[]);
        let depends = DependsList::builtin();
        let probe = HostProbe::gather(&HostPaths::system(), &config, &depends);
        assert!(probe.tools.contains_key("bash"), "{probe:?}");
        assert!(!probe.machine.is_empty());
        let report = evaluate(&config, &probe, &depends);
        assert!(report.to_string().starts_with("CHECK "));
        // Visible with --nocapture: what `pigen check` says about this machine.
        println!("{report}");
    }
}
