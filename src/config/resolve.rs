//! Pure resolution: what the config files said + environment + host facts → a validated
//! `Config`. Defaults are applied in the table order of `vars.rs` (the order of the original's
//! `build_vars`); every problem becomes one line naming the variable, its value, where the value
//! came from and what is allowed. Nothing here touches the disk except reading directory
//! listings (stage discovery) and the host's zoneinfo.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::vars::{self, Kind, VarDef, VARS};
use super::{Env, Loaded, Origin};
use crate::error::ConfigError;

/// Host facts resolution depends on, gathered once by the caller (`HostFacts::gather`) so
/// that `resolve` stays deterministic and testable.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// Relative `STAGE_LIST` entries that are not under `BASE_DIR/stages` are looked up here.
    pub cwd: PathBuf,
    /// Today's UTC date, `YYYY-MM-DD`.
    pub today_utc: String,
    /// `git rev-parse HEAD` in `BASE_DIR`, when it is a git checkout.
    pub git_hash: Option<String>,
    /// Normally `/usr/share/zoneinfo`.
    pub zoneinfo_dir: PathBuf,
}

impl HostFacts {
    pub fn gather(base_dir: &Path) -> HostFacts {
        let git_hash = crate::exec::Cmd::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(base_dir)
            .output(&crate::exec::cmd::LogSink::default())
            .ok()
            .map(|o| o.stdout.trim().to_string())
            .filter(|h| !h.is_empty());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        HostFacts {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            today_utc: utc_date(now),
            git_hash,
            zoneinfo_dir: PathBuf::from("/usr/share/zoneinfo"),
        }
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC), by the civil-from-days algorithm.
pub fn utc_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The target architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Arm64,
    Armhf,
    I386,
    Amd64,
}

impl Arch {
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "arm64" => Some(Arch::Arm64),
            "armhf" => Some(Arch::Armhf),
            "i386" => Some(Arch::I386),
            "amd64" => Some(Arch::Amd64),
            _ => None,
        }
    }

    /// Debian's name, as `dpkg --print-architecture` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::I386 => "i386",
            Arch::Amd64 => "amd64",
        }
    }

    /// Name of the qemu-user emulator and of its binfmt_misc handler (`qemu-<name>`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64",
            Arch::Armhf => "arm",
            Arch::I386 => "i386",
            Arch::Amd64 => "x86_64",
        }
    }

    /// Whether a host of machine type `uname -m` runs this architecture's binaries natively.
    pub fn runs_natively_on(self, host_machine: &str) -> bool {
        matches!(
            (self, host_machine),
            (Arch::Amd64, "x86_64")
                | (Arch::I386, "x86_64" | "i686" | "i586" | "i386")
                | (Arch::Arm64, "aarch64")
                | (Arch::Armhf, "armv7l" | "armv8l")
        )
    }
}

/// How the deployed image is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zip,
    Xz,
    Gz,
    Zstd,
    None,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "zip" => Some(Compression::Zip),
            "xz" => Some(Compression::Xz),
            "gz" => Some(Compression::Gz),
            "zstd" => Some(Compression::Zstd),
            "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// The `DEPLOY_COMPRESSION` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zip => "zip",
            Compression::Xz => "xz",
            Compression::Gz => "gz",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// Allowed `COMPRESSION_LEVEL`s.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Zstd => 1..=19,
            _ => 0..=9,
        }
    }
}

/// One effective variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Var {
    pub name: String,
    pub value: String,
    pub origin: Origin,
    /// Known to pigen (listed in `vars.rs`), as opposed to a config's own variable.
    pub known: bool,
}

/// The resolved, validated configuration. Immutable once built.
#[derive(Clone, Debug)]
pub struct Config {
    /// Every effective variable: known ones in table order, then the config's own ones. All of
    /// them are exported to stage scripts.
    pub vars: Vec<Var>,
    pub base_dir: PathBuf,
    /// Where stage directories and `export-image` live: `BASE_DIR/stages`, or `BASE_DIR` itself
    /// for a pi-gen checkout (stage directories at the top level).
    pub stages_root: PathBuf,
    pub work_dir: PathBuf,
    pub deploy_dir: PathBuf,
    pub img_name: String,
    pub img_filename: String,
    pub target_raspi: bool,
    pub target_arch: Arch,
    pub release: String,
    pub install_recommends: bool,
    pub reduced_footprint: bool,
    pub use_qemu: bool,
    /// Absolute stage directories, in build order.
    pub stage_list: Vec<PathBuf>,
    pub skip_stage_list: Vec<String>,
    pub skip_images_list: Vec<String>,
    pub compression: Compression,
    pub compression_level: u32,
    pub base_qcow2_size: u64,
    /// Non-fatal findings, one line each.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|v| v.name == name)
    }

    /// The value, or "" when unset.
    pub fn get(&self, name: &str) -> &str {
        self.var(name).map_or("", |v| v.value.as_str())
    }

    pub fn flag(&self, name: &str) -> bool {
        self.get(name) == "1"
    }

    /// Variables handed to stage scripts (and to `EXPORT_IMAGE` fragments): every effective
    /// variable, on top of pigen's own environment.
    pub fn script_env(&self, process_env: &Env) -> Env {
        let mut env = process_env.clone();
        for v in &self.vars {
            env.insert(v.name.clone(), v.value.clone());
        }
        env.insert("BASE_DIR".into(), self.base_dir.display().to_string());
        env
    }
}

/// Parses a size in qemu-img syntax (`15200M`, `4G`, `1.5G`, `512`; k/M/G/T are powers of
/// 1024, an optional `iB`/`B` after the letter is accepted) into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `ROOT_MARGIN`: `N%`, a size, or `N%+SIZE` → (percent, bytes).
pub fn parse_margin(text: &str) -> Option<(u32, u64)> {
    let text = text.trim();
    let (pct, rest) = match text.split_once('%') {
        Some((p, rest)) => (p.trim().parse::<u32>().ok()?, rest.trim()),
        None => (0, text),
    };
    let bytes = match rest.strip_prefix('+').unwrap_or(rest).trim() {
        "" if text.contains('%') && !rest.starts_with('+') => 0,
        s => parse_size(s)?,
    };
    Some((pct, bytes))
}

const MIB: u64 = 1 << 20;

struct Resolver<'a> {
    loaded: &'a Loaded,
    env: &'a Env,
    base_dir: &'a Path,
    stages_root: PathBuf,
    host: &'a HostFacts,
    vars: Vec<Var>,
    errors: Vec<String>,
    /// Variables already reported, so each gets one line.
    refused: Vec<String>,
    warnings: Vec<String>,
}

/// Resolves and validates. `base_dir` is absolute.
pub fn resolve(
    loaded: &Loaded,
    env: &Env,
    base_dir: &Path,
    host: &HostFacts,
) -> Result<Config, ConfigError> {
    let stages_root = if base_dir.join("stages").is_dir() {
        base_dir.join("stages")
    } else {
        base_dir.to_path_buf()
    };
    let mut r = Resolver {
        loaded,
        env,
        base_dir,
        stages_root,
        host,
        vars: Vec::new(),
        errors: Vec::new(),
        refused: Vec::new(),
        warnings: loaded.warnings.clone(),
    };
    for def in VARS {
        r.resolve_known(def);
    }
    r.add_config_extras();
    r.validate();
    let stage_list = r.stage_list();
    r.check_skip_lists(&stage_list);
    if !r.errors.is_empty() {
        return Err(ConfigError(r.errors));
    }
    let compression =
        Compression::parse(r.value("DEPLOY_COMPRESSION")).unwrap_or(Compression::None);
    Ok(Config {
        base_dir: base_dir.to_path_buf(),
        stages_root: r.stages_root.clone(),
        work_dir: PathBuf::from(r.value("WORK_DIR")),
        deploy_dir: PathBuf::from(r.value("DEPLOY_DIR")),
        img_name: r.value("IMG_NAME").to_string(),
        img_filename: r.value("IMG_FILENAME").to_string(),
        target_raspi: r.value("TARGET_RASPI") == "1",
        target_arch: Arch::parse(r.value("TARGET_ARCH")).unwrap_or(Arch::Arm64),
        release: r.value("RELEASE").to_string(),
        install_recommends: r.value("INSTALL_RECOMMENDS") == "1",
        reduced_footprint: r.value("REDUCED_FOOTPRINT") == "1",
        use_qemu: r.value("USE_QEMU") == "1",
        stage_list,
        skip_stage_list: words(r.value("SKIP_STAGE_LIST")),
        skip_images_list: words(r.value("SKIP_IMAGES_LIST")),
        compression,
        compression_level: r.value("COMPRESSION_LEVEL").parse().unwrap_or(6),
        base_qcow2_size: parse_size(r.value("BASE_QCOW2_SIZE")).unwrap_or(0),
        warnings: r.warnings,
        vars: r.vars,
    })
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

impl Resolver<'_> {
    fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|v| v.name == name)
    }

    /// Resolved value so far, "" when unset.
    fn value(&self, name: &str) -> &str {
        self.var(name).map_or("", |v| v.value.as_str())
    }

    /// The user's value: a non-empty config value, else a non-empty environment value (an
    /// empty value means "use the default", as `${VAR:-default}` does in the original).
    fn given(&self, name: &str) -> Option<(String, Origin)> {
        if let Some(a) = self.loaded.get(name) {
            // The config replaced the environment's value, as `source` would.
            return (!a.value.is_empty()).then(|| (a.value.clone(), a.origin.clone()));
        }
        self.env
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| (v.clone(), Origin::Environment))
    }

    fn push(&mut self, name: &str, value: String, origin: Origin, known: bool) {
        self.vars.push(Var {
            name: name.to_string(),
            value,
            origin,
            known,
        });
    }

    fn resolve_known(&mut self, def: &VarDef) {
        if let vars::DefaultRule::Forced(_) = def.default {
            if let Some(a) = self.loaded.get(def.name) {
                self.warnings.push(format!(
                    "{}={:?} ({}): pigen computes {} itself; this value is ignored",
                    def.name, a.value, a.origin, def.name
                ));
            }
            if let Some(value) = self.computed(def.name) {
                self.push(def.name, value, Origin::Derived, true);
            }
            return;
        }
        let resolved = match self.given(def.name) {
            Some(given) => Some(given),
            None => match def.default {
                vars::DefaultRule::Unset => None,
                vars::DefaultRule::Value(v) => Some((v.to_string(), Origin::Default)),
                vars::DefaultRule::Computed(_) | vars::DefaultRule::Forced(_) => {
                    self.computed(def.name).map(|v| (v, Origin::Default))
                }
            },
        };
        if let Some((value, origin)) = resolved {
            self.push(def.name, value, origin, true);
        }
    }

    /// Computed defaults; may read any variable resolved before this one.
    fn computed(&self, name: &str) -> Option<String> {
        let v = |n| self.value(n);
        Some(match name {
            "IMG_DATE" => match self.env.get("SOURCE_DATE_EPOCH").and_then(|s| s.parse().ok()) {
                Some(epoch) => utc_date(epoch),
                None => self.host.today_utc.clone(),
            },
            "IMG_FILENAME" => format!("{}-{}", v("IMG_DATE"), v("IMG_NAME")),
            "ARCHIVE_FILENAME" | "ZIP_FILENAME" => format!("image_{}-{}", v("IMG_DATE"), v("IMG_NAME")),
            "WORK_DIR" => self.base_dir.join("work").join(v("IMG_NAME")).display().to_string(),
            "DEPLOY_DIR" => self.base_dir.join("deploy").display().to_string(),
            "DEPLOY_COMPRESSION" => if v("DEPLOY_ZIP") == "0" { "none" } else { "zip" }.to_string(),
            "LOG_FILE" => Path::new(v("WORK_DIR")).join("build.log").display().to_string(),
            "PI_GEN_VERSION" => env!("CARGO_PKG_VERSION").to_string(),
            "GIT_HASH" => self.host.git_hash.clone()?,
            "IS_TESTING" => {
                let old = ["jessie", "stretch"];
                if vars::RELEASES.contains(&v("RELEASE")) || old.contains(&v("RELEASE")) { "0" } else { "1" }.to_string()
            }
            "USE_RASPI_SOURCE" => flag(
                v("PREFER_RASPI_SOURCE") == "1" && v("TARGET_RASPI") == "1" && v("TARGET_ARCH") == "armhf",
            ),
            "USE_QCOW2" => flag(v("STAGE_STORE") == "qcow2"),
            "CLEAN" => "1".to_string(),
            "BOOT_FSOPTIONS" => format!(
                "rw,noatime,fmask=0022,dmask=0022,codepage={},iocharset=ascii,shortname=mixed,errors=remount-ro",
                v("FAT_CODEPAGE")
            ),
            "UEFI_ARCH" => match (v("GPT_BIOS_UEFI"), v("TARGET_ARCH")) {
                ("1", "amd64") => "x86_64".to_string(),
                ("1", "i386") => "i386".to_string(),
                _ => return None,
            },
            "STAGE_LIST" => discover_stages(&self.stages_root).join(" "),
            _ => return None,
        })
    }

    /// Variables the config set that pigen does not know: exported to scripts all the same.
    fn add_config_extras(&mut self) {
        for a in &self.loaded.assignments {
            if vars::lookup(&a.name).is_some() {
                continue;
            }
            if vars::RUNTIME_VARS.contains(&a.name.as_str()) {
                self.warnings.push(format!(
                    "{}={:?} ({}): pigen sets {} for each stage; this value is ignored",
                    a.name, a.value, a.origin, a.name
                ));
                continue;
            }
            if let Some(known) = did_you_mean(&a.name) {
                self.warnings.push(format!(
                    "{} ({}): unknown variable; did you mean {known}?",
                    a.name, a.origin
                ));
            }
            self.vars.push(Var {
                name: a.name.clone(),
                value: a.value.clone(),
                origin: a.origin.clone(),
                known: false,
            });
        }
    }

    /// Records an error about `name`'s current value (the first problem only).
    fn bad(&mut self, name: &str, problem: impl AsRef<str>) {
        if self.refused.iter().any(|n| n == name) {
            return;
        }
        self.refused.push(name.to_string());
        let secret = vars::lookup(name).is_some_and(|d| d.kind == Kind::Secret);
        let line = match self.var(name) {
            Some(var) if secret => format!(
                "{name}=<hidden, {} characters> ({}): {}",
                var.value.chars().count(),
                var.origin,
                problem.as_ref()
            ),
            Some(var) => format!(
                "{name}={:?} ({}): {}",
                var.value,
                var.origin,
                problem.as_ref()
            ),
            None => format!("{name} is not set: {}", problem.as_ref()),
        };
        self.errors.push(line);
    }

    fn validate(&mut self) {
        // Kinds first: flags, choices, sizes.
        for def in VARS {
            let Some(var) = self.var(def.name) else {
                continue;
            };
            let value = var.value.clone();
            match def.kind {
                Kind::Flag if value != "0" && value != "1" => {
                    self.bad(def.name, "must be 0 or 1");
                }
                Kind::Choice(allowed) if !allowed.contains(&value.as_str()) => {
                    self.bad(def.name, format!("must be one of {}", allowed.join(", ")));
                }
                Kind::Size => {
                    let percent_ok = def.name == "ROOTFS_RO_OVERLAY_TMPFS_SIZE"
                        && value.strip_suffix('%').is_some_and(|n| {
                            n.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n))
                        });
                    if !percent_ok && parse_size(&value).is_none() {
                        self.bad(def.name, "not a size; write a number with an optional K, M, G or T suffix, e.g. 15200M or 4G");
                    }
                }
                _ => {}
            }
        }

        if self.value("IMG_NAME").is_empty() {
            self.bad(
                "IMG_NAME",
                "it is required; set IMG_NAME=<name> in the config file (-c) or the environment",
            );
        }
        for name in ["IMG_NAME", "IMG_FILENAME", "IMG_SUFFIX", "ARCHIVE_FILENAME"] {
            let value = self.value(name);
            if value.contains('/') || value.chars().any(char::is_control) {
                self.bad(
                    name,
                    "is used in file names; remove '/' and control characters",
                );
            }
        }

        let user = self.value("FIRST_USER_NAME").to_string();
        let user_ok = user.len() <= 32
            && user.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !user_ok {
            self.bad(
                "FIRST_USER_NAME",
                "must match ^[a-z][-a-z0-9_]*$ (at most 32 characters), e.g. pi",
            );
        }

        let host = self.value("TARGET_HOSTNAME").to_string();
        let host_ok = !host.is_empty()
            && host.len() <= 63
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !host.starts_with('-')
            && !host.ends_with('-');
        if !host_ok {
            self.bad("TARGET_HOSTNAME", "must be a host name label: letters, digits and '-', 1 to 63 characters, not starting or ending with '-'");
        }

        let wpa = self.value("WPA_PASSWORD").chars().count();
        if self.var("WPA_PASSWORD").is_some() && !(8..=63).contains(&wpa) {
            self.bad(
                "WPA_PASSWORD",
                "must be between 8 and 63 characters; leave it unset for an open network",
            );
        }
        let country = self.value("WPA_COUNTRY").to_string();
        let two_capitals = country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase());
        if !country.is_empty() && !two_capitals {
            self.bad(
                "WPA_COUNTRY",
                "must be a two-letter ISO 3166 country code in capitals, e.g. GB or DE",
            );
        }

        if self.value("PUBKEY_ONLY_SSH") == "1" && self.value("PUBKEY_SSH_FIRST_USER").is_empty() {
            self.bad("PUBKEY_ONLY_SSH", "needs PUBKEY_SSH_FIRST_USER set to a valid SSH public key (otherwise nobody could log in over SSH)");
        }

        let raspi = self.value("TARGET_RASPI") == "1";
        let arch = self.value("TARGET_ARCH").to_string();
        if self.value("GPT_BIOS_UEFI") == "1" {
            if raspi {
                self.bad("GPT_BIOS_UEFI", "not supported with TARGET_RASPI=1 (the Raspberry Pi boots from MBR); set TARGET_RASPI=0 or GPT_BIOS_UEFI=0");
            } else if self.var("UEFI_ARCH").is_none() {
                self.bad("GPT_BIOS_UEFI", format!("GPT BIOS/UEFI not supported on target arch {arch}; use TARGET_ARCH=amd64 or i386"));
            }
        } else if let Some(uefi) = self.var("UEFI_ARCH") {
            if uefi.origin != Origin::Default {
                self.bad("UEFI_ARCH", "is only used with GPT_BIOS_UEFI=1 (an MBR image has no EFI partition); set GPT_BIOS_UEFI=1 or remove UEFI_ARCH");
            }
        }

        let release = self.value("RELEASE").to_string();
        if release.is_empty()
            || !release
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            self.bad(
                "RELEASE",
                format!(
                    "not a Debian release code name; use one of {}",
                    vars::RELEASES.join(", ")
                ),
            );
        } else if !vars::RELEASES.contains(&release.as_str()) {
            let origin = self
                .var("RELEASE")
                .map(|v| v.origin.to_string())
                .unwrap_or_default();
            self.warnings.push(format!(
                "RELEASE={release:?} ({origin}): not one of {}; building it as a testing release (IS_TESTING=1)",
                vars::RELEASES.join(", ")
            ));
        } else if release == "buster" && self.value("DEB_SERVER").is_empty() {
            self.warnings.push("RELEASE=\"buster\": buster has moved to Debian's archive host; set DEB_SERVER to a mirror that still carries it".to_string());
        }

        if raspi && self.value("BOOT_FSTYPE") != "vfat" {
            self.bad("BOOT_FSTYPE", "must be vfat with TARGET_RASPI=1 (the Raspberry Pi firmware reads only FAT); set BOOT_FSTYPE=vfat");
        }
        if let Some(bytes) = parse_size(self.value("BASE_QCOW2_SIZE")) {
            if bytes < 512 * MIB {
                self.bad("BASE_QCOW2_SIZE", "is less than 512M, too small for any root filesystem; did you forget the M or G suffix?");
            }
        }
        if let Some(bytes) = parse_size(self.value("BOOT_SIZE")) {
            if bytes < 16 * MIB {
                self.bad("BOOT_SIZE", "is less than 16M, too small for a boot partition; did you forget the M suffix?");
            }
        }
        if parse_margin(self.value("ROOT_MARGIN")).is_none() {
            self.bad("ROOT_MARGIN", "write N%, a size, or N%+SIZE, e.g. 10%+128M");
        }

        if let Some(compression) = Compression::parse(self.value("DEPLOY_COMPRESSION")) {
            let levels = compression.levels();
            let ok = self
                .value("COMPRESSION_LEVEL")
                .parse::<u32>()
                .is_ok_and(|l| levels.contains(&l));
            if !ok {
                self.bad(
                    "COMPRESSION_LEVEL",
                    format!(
                        "must be a number from {} to {} for DEPLOY_COMPRESSION={}",
                        levels.start(),
                        levels.end(),
                        self.value("DEPLOY_COMPRESSION")
                    ),
                );
            }
        }

        let tz = self.value("TIMEZONE_DEFAULT").to_string();
        if tz.is_empty() || tz.starts_with('/') || tz.split('/').any(|p| p == ".." || p.is_empty())
        {
            self.bad(
                "TIMEZONE_DEFAULT",
                "must be a zone name such as Europe/Berlin or UTC",
            );
        } else if self.host.zoneinfo_dir.is_dir() {
            if !self.host.zoneinfo_dir.join(&tz).is_file() {
                self.bad("TIMEZONE_DEFAULT", format!(
                    "no such time zone under {}; pick one listed by `timedatectl list-timezones`, e.g. Europe/Berlin",
                    self.host.zoneinfo_dir.display()
                ));
            }
        } else {
            self.warnings.push(format!(
                "TIMEZONE_DEFAULT={tz:?}: cannot check it, {} is missing on this host (apt-get install tzdata)",
                self.host.zoneinfo_dir.display()
            ));
        }

        let locale = self.value("LOCALE_DEFAULT").to_string();
        if !locale_looks_valid(&locale) {
            self.bad(
                "LOCALE_DEFAULT",
                "must look like ll_CC.CHARSET, e.g. en_US.UTF-8 or de_DE.UTF-8",
            );
        }

        let proxy = self.value("APT_PROXY").to_string();
        let http = proxy.starts_with("http://") || proxy.starts_with("https://");
        if !proxy.is_empty() && !http {
            self.bad(
                "APT_PROXY",
                "must be an http:// or https:// URL, e.g. http://127.0.0.1:3142",
            );
        }

        let work_dir = self.value("WORK_DIR").to_string();
        if work_dir.chars().any(char::is_whitespace) {
            self.bad("WORK_DIR", "contains white space, which debootstrap cannot handle; choose a path without spaces");
        }
        if !Path::new(&work_dir).is_absolute() {
            self.bad("WORK_DIR", "must be an absolute path");
        }
        let deploy_dir = self.value("DEPLOY_DIR").to_string();
        if deploy_dir.trim_end_matches('/').is_empty() {
            self.bad(
                "DEPLOY_DIR",
                "must not be the root directory; choose a directory for the images",
            );
        }

        if self.value("ENABLE_SSH") == "1"
            && self.value("PUBKEY_ONLY_SSH") != "1"
            && self.value("FIRST_USER_PASS") == vars::DEFAULT_FIRST_USER_PASS
        {
            self.warnings.push(format!(
                "ENABLE_SSH=1 with FIRST_USER_PASS left at the default {:?}: anyone who can reach \
                 the device can log in as {}; set FIRST_USER_PASS, or PUBKEY_SSH_FIRST_USER with \
                 PUBKEY_ONLY_SSH=1",
                vars::DEFAULT_FIRST_USER_PASS,
                self.value("FIRST_USER_NAME")
            ));
        }
        if self.value("RASPI_FIRMWARE") == "debian"
            && !raspi
            && self.loaded.get("RASPI_FIRMWARE").is_some()
        {
            self.warnings
                .push("RASPI_FIRMWARE=\"debian\": ignored with TARGET_RASPI=0".to_string());
        }
        if self.value("PREFER_RASPI_SOURCE") == "1" && self.value("USE_RASPI_SOURCE") != "1" {
            self.warnings.push(format!(
                "PREFER_RASPI_SOURCE=\"1\": only used with TARGET_RASPI=1 and TARGET_ARCH=armhf (here TARGET_RASPI={}, TARGET_ARCH={arch})",
                self.value("TARGET_RASPI")
            ));
        }
    }

    /// `STAGE_LIST` words → absolute stage directories. A relative name is looked up under
    /// `BASE_DIR/stages` first, then the current directory (the original used the latter only);
    /// `*`, `?` in the last component are expanded as bash would.
    fn stage_list(&mut self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for word in words(self.value("STAGE_LIST")) {
            let candidates: Vec<PathBuf> = if Path::new(&word).is_absolute() {
                vec![PathBuf::from(&word)]
            } else {
                vec![self.stages_root.join(&word), self.host.cwd.join(&word)]
            };
            let found: Vec<PathBuf> = candidates
                .iter()
                .map(|c| expand_glob(c))
                .find(|matches| !matches.is_empty())
                .unwrap_or_default();
            if found.is_empty() {
                let tried: Vec<String> =
                    candidates.iter().map(|c| c.display().to_string()).collect();
                self.bad("STAGE_LIST", format!(
                    "stage {word:?} not found (looked for {}); fix the name or give the stage directory's path",
                    tried.join(" and ")
                ));
                continue;
            }
            for dir in found {
                let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
                let name = stage_name(&dir);
                if dirs.iter().any(|d: &PathBuf| stage_name(d) == name) {
                    self.bad("STAGE_LIST", format!(
                        "two stages are named {name:?}; stage names must be unique because they name work directories and images"
                    ));
                }
                dirs.push(dir);
            }
        }
        if dirs.is_empty() && self.errors.is_empty() {
            self.bad("STAGE_LIST", format!(
                "no stages to build (no stage* directory in {}); set STAGE_LIST or run pigen from a directory holding stages/",
                self.stages_root.display()
            ));
        }
        dirs
    }

    fn check_skip_lists(&mut self, stage_list: &[PathBuf]) {
        let names: Vec<String> = stage_list.iter().map(|d| stage_name(d)).collect();
        for list in ["SKIP_STAGE_LIST", "SKIP_IMAGES_LIST"] {
            for word in words(self.value(list)) {
                if !names.contains(&word) && word != "export-image" {
                    self.warnings.push(format!(
                        "{list} names {word:?}, which is not in STAGE_LIST; it has no effect"
                    ));
                }
            }
        }
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// The basename of a stage directory: `STAGE` in scripts.
pub fn stage_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every `stage*` directory of `root`, sorted bytewise (bash's glob order in the C locale).
fn discover_stages(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stage"))
        .collect();
    names.sort();
    names
}

/// Expands `*` and `?` in the last component of `path`; a path without them is returned when
/// it is a directory. Matches are directories, sorted bytewise.
fn expand_glob(path: &Path) -> Vec<PathBuf> {
    let pattern = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !pattern.contains(['*', '?']) {
        return if path.is_dir() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let mut matches: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && glob_match(pattern.as_bytes(), name.as_bytes())
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    matches.sort();
    matches
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn locale_looks_valid(locale: &str) -> bool {
    if matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8") {
        return true;
    }
    let (base, _modifier) = locale.split_once('@').unwrap_or((locale, ""));
    let (lang_country, _charset) = base.split_once('.').unwrap_or((base, ""));
    let (lang, country) = lang_country.split_once('_').unwrap_or((lang_country, ""));
    (2..=3).contains(&lang.len())
        && lang.chars().all(|c| c.is_ascii_lowercase())
        && (country.is_empty()
            || (country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase())))
}

/// A known variable within edit distance 2 (or equal ignoring case) of `name`.
fn did_you_mean(name: &str) -> Option<&'static str> {
    let known = VARS
        .iter()
        .map(|v| v.name)
        .chain(vars::RUNTIME_VARS.iter().copied());
    known
        .map(|k| {
            (
                k,
                if k.eq_ignore_ascii_case(name) {
                    0
                } else {
                    edit_distance(k, name)
                },
            )
        })
        .filter(|&(_, d)| d <= 2.min(name.len() / 4).max(1))
        .min_by_key(|&(_, d)| d)
        .map(|(k, _)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Assignment;

    /// A base dir with `stages/stage0..stage2` and a zoneinfo dir knowing two zones.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for stage in ["stage0", "stage1", "stage2", "export-image"] {
                std::fs::create_dir_all(dir.path().join("base/stages").join(stage)).unwrap();
            }
            std::fs::create_dir_all(dir.path().join("zoneinfo/Europe")).unwrap();
            std::fs::write(dir.path().join("zoneinfo/Europe/Berlin"), "").unwrap();
            std::fs::write(dir.path().join("zoneinfo/UTC"), "").unwrap();
            Fixture { dir }
        }

        fn base(&self) -> PathBuf {
            self.dir.path().join("base")
        }

        fn host(&self) -> HostFacts {
            HostFacts {
                cwd: self.dir.path().to_path_buf(),
                today_utc: "2026-11-28".into(),
                git_hash: Some("abc123".into()),
                zoneinfo_dir: self.dir.path().join("zoneinfo"),
            }
        }

        fn resolve_env(
            &self,
            config: &[(&str, &str)],
            env: &[(&str, &str)],
        ) -> Result<Config, ConfigError> {
            let loaded = Loaded {
                assignments: config
                    .iter()
                    .enumerate()
                    .map(|(i, (n, v))| Assignment {
                        name: n.to_string(),
                        value: v.to_string(),
                        origin: Origin::File {
                            path: "my.cfg".into(),
                            line: Some(i + 1),
                        },
                    })
                    .collect(),
                warnings: vec![],
            };
            let env: Env = env
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            resolve(&loaded, &env, &self.base(), &self.host())
        }

        fn resolve(&self, config: &[(&str, &str)]) -> Result<Config, ConfigError> {
            self.resolve_env(config, &[])
        }

        /// The single error line for a config that is valid except for `config`'s last entry.
        fn error(&self, config: &[(&str, &str)]) -> String {
            let mut all = vec![("IMG_NAME", "test")];
            all.extend_from_slice(config);
            let err = self.resolve(&all).expect_err("config should be refused");
            assert_eq!(
                err.0.len(),
                1,
                "expected exactly one error, got {:?}",
                err.0
            );
            err.0[0].clone()
        }
    }

    #[test]
    fn defaults_follow_the_original_except_where_documented() {
        let f = Fixture::new();
        let cfg = f.resolve(&[("IMG_NAME", "MyOS")]).unwrap();
        assert_eq!(cfg.get("IMG_DATE"), "2026-11-28");
        assert_eq!(cfg.get("IMG_FILENAME"), "2026-11-28-MyOS");
        assert_eq!(cfg.work_dir, f.base().join("work/MyOS"));
        assert_eq!(cfg.deploy_dir, f.base().join("deploy"));
        assert_eq!(
            cfg.get("LOG_FILE"),
            f.base().join("work/MyOS/build.log").display().to_string()
        );
        assert_eq!(cfg.get("TARGET_HOSTNAME"), "raspberrypi");
        assert_eq!(cfg.get("FIRST_USER_NAME"), "pi");
        assert_eq!(cfg.get("TARGET_ARCH"), "arm64");
        assert_eq!(cfg.get("DEPLOY_COMPRESSION"), "zip");
        assert_eq!(cfg.compression, Compression::Zip);
        assert_eq!(cfg.get("COMPRESSION_LEVEL"), "6");
        assert_eq!(cfg.get("BASE_QCOW2_SIZE"), "15200M");
        assert_eq!(cfg.base_qcow2_size, 15200 * MIB);
        assert_eq!(cfg.get("IS_TESTING"), "0");
        assert_eq!(cfg.get("USE_RASPI_SOURCE"), "0");
        assert_eq!(cfg.get("USE_QCOW2"), "1");
        assert_eq!(cfg.get("GIT_HASH"), "abc123");
        assert!(cfg.get("BOOT_FSOPTIONS").contains("codepage=437"));
        assert!(cfg.var("WPA_ESSID").is_none(), "WPA_* stay unset");
        assert!(
            cfg.var("DEB_SERVER").is_none(),
            "debootstrap picks its own mirror"
        );
        assert!(cfg.var("UEFI_ARCH").is_none());
        let names: Vec<String> = cfg.stage_list.iter().map(|d| stage_name(d)).collect();
        assert_eq!(names, ["stage0", "stage1", "stage2"]);
        assert_eq!(cfg.get("STAGE_LIST"), "stage0 stage1 stage2");
        assert_eq!(
            cfg.var("IMG_NAME").unwrap().origin,
            Origin::File {
                path: "my.cfg".into(),
                line: Some(1)
            }
        );
        assert_eq!(cfg.var("RELEASE").unwrap().origin, Origin::Default);
    }

    #[test]
    fn precedence_is_config_then_environment_then_default() {
        let f = Fixture::new();
        let cfg = f
            .resolve_env(
                &[
                    ("IMG_NAME", "cfg"),
                    ("TARGET_HOSTNAME", ""),
                    ("FIRST_USER_NAME", "alice"),
                ],
                &[
                    ("IMG_NAME", "env"),
                    ("TARGET_HOSTNAME", "envhost"),
                    ("FIRST_USER_NAME", "bob"),
                    ("RELEASE", "bookworm"),
                ],
            )
            .unwrap();
        assert_eq!(cfg.get("IMG_NAME"), "cfg");
        assert_eq!(cfg.get("FIRST_USER_NAME"), "alice");
        assert_eq!(cfg.get("RELEASE"), "bookworm");
        assert_eq!(cfg.var("RELEASE").unwrap().origin, Origin::Environment);
        // An empty config value means "use the default", even over the environment.
        assert_eq!(cfg.get("TARGET_HOSTNAME"), "raspberrypi");
        assert_eq!(cfg.var("TARGET_HOSTNAME").unwrap().origin, Origin::Default);
    }

    #[test]
    fn computed_defaults_use_earlier_values() {
        let f = Fixture::new();
        let cfg = f
            .resolve(&[
                ("IMG_NAME", "x"),
                ("IMG_DATE", "2020-01-02"),
                ("DEPLOY_ZIP", "0"),
                ("FAT_CODEPAGE", "850"),
                ("TARGET_RASPI", "0"),
                ("TARGET_ARCH", "amd64"),
                ("GPT_BIOS_UEFI", "1"),
                ("RELEASE", "forky"),
                ("STAGE_STORE", "dir"),
            ])
            .unwrap();
        assert_eq!(cfg.get("IMG_FILENAME"), "2020-01-02-x");
        assert_eq!(cfg.get("ARCHIVE_FILENAME"), "image_2020-01-02-x");
        assert_eq!(cfg.compression, Compression::None);
        assert!(cfg.get("BOOT_FSOPTIONS").contains("codepage=850"));
        assert_eq!(cfg.get("UEFI_ARCH"), "x86_64");
        assert_eq!(cfg.get("IS_TESTING"), "1");
        assert_eq!(cfg.get("USE_QCOW2"), "0");
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.contains("RELEASE=\"forky\"") && w.contains("testing")));
    }

    #[test]
    fn source_date_epoch_sets_img_date() {
        let f = Fixture::new();
        let cfg = f
            .resolve_env(&[("IMG_NAME", "x")], &[("SOURCE_DATE_EPOCH", "1700000000")])
            .unwrap();
        assert_eq!(cfg.get("IMG_DATE"), "2023-11-14");
    }

    #[test]
    fn forced_values_ignore_the_config_with_a_warning() {
        let f = Fixture::new();
        let cfg = f
            .resolve(&[
                ("IMG_NAME", "x"),
                ("USE_RASPI_SOURCE", "1"),
                ("LOG_FILE", "/tmp/l"),
            ])
            .unwrap();
        assert_eq!(cfg.get("USE_RASPI_SOURCE"), "0");
        assert!(cfg.get("LOG_FILE").ends_with("work/x/build.log"));
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.starts_with("USE_RASPI_SOURCE=\"1\" (my.cfg:2): pigen computes")));
    }

    #[test]
    fn raspi_source_only_for_armhf_raspi() {
        let f = Fixture::new();
        let cfg = f
            .resolve(&[
                ("IMG_NAME", "x"),
                ("PREFER_RASPI_SOURCE", "1"),
                ("TARGET_ARCH", "armhf"),
            ])
            .unwrap();
        assert_eq!(cfg.get("USE_RASPI_SOURCE"), "1");
        let cfg = f
            .resolve(&[("IMG_NAME", "x"), ("PREFER_RASPI_SOURCE", "1")])
            .unwrap();
        assert_eq!(cfg.get("USE_RASPI_SOURCE"), "0");
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.starts_with("PREFER_RASPI_SOURCE")));
    }

    #[test]
    fn config_variables_unknown_to_pigen_are_kept_and_near_misses_warned() {
        let f = Fixture::new();
        let cfg = f
            .resolve(&[
                ("IMG_NAME", "x"),
                ("MY_THING", "1"),
                ("TARGET_HOSTNAM", "h"),
                ("enable_ssh", "1"),
            ])
            .unwrap();
        let mine = cfg.var("MY_THING").unwrap();
        assert!(!mine.known);
        assert!(cfg.var("TARGET_HOSTNAM").is_some());
        assert!(cfg.warnings.contains(
            &"TARGET_HOSTNAM (my.cfg:3): unknown variable; did you mean TARGET_HOSTNAME?"
                .to_string()
        ));
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.contains("enable_ssh") && w.contains("ENABLE_SSH")));
        assert!(!cfg.warnings.iter().any(|w| w.contains("MY_THING")));
    }

    #[test]
    fn ssh_with_the_default_password_is_warned_about() {
        let f = Fixture::new();
        let warned = |config: &[(&str, &str)]| {
            let mut all = vec![("IMG_NAME", "t")];
            all.extend_from_slice(config);
            f.resolve(&all)
                .unwrap()
                .warnings
                .iter()
                .any(|w| w.starts_with("ENABLE_SSH=1 with FIRST_USER_PASS left at the default"))
        };
        assert!(warned(&[("ENABLE_SSH", "1")]));
        assert!(!warned(&[("ENABLE_SSH", "0")]));
        assert!(!warned(&[
            ("ENABLE_SSH", "1"),
            ("FIRST_USER_PASS", "s3cret")
        ]));
        assert!(!warned(&[
            ("ENABLE_SSH", "1"),
            ("PUBKEY_SSH_FIRST_USER", "ssh-ed25519 AAAA x"),
            ("PUBKEY_ONLY_SSH", "1")
        ]));
    }

    #[test]
    fn img_name_is_required() {
        let f = Fixture::new();
        let err = f.resolve(&[]).unwrap_err();
        assert_eq!(
            err.0,
            ["IMG_NAME is not set: it is required; set IMG_NAME=<name> in the config file (-c) or the environment"]
        );
    }

    #[test]
    fn each_rule_gives_one_line_with_value_origin_and_fix() {
        let f = Fixture::new();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("FIRST_USER_NAME", "Pi")], "FIRST_USER_NAME=\"Pi\" (my.cfg:2): must match ^[a-z][-a-z0-9_]*$"),
            (&[("FIRST_USER_NAME", "1pi")], "FIRST_USER_NAME=\"1pi\" (my.cfg:2): must match"),
            (&[("WPA_PASSWORD", "short")], "WPA_PASSWORD=<hidden, 5 characters> (my.cfg:2): must be between 8 and 63 characters"),
            (&[("WPA_PASSWORD", &"x".repeat(64))], "WPA_PASSWORD=<hidden, 64 characters> (my.cfg:2): must be between 8 and 63"),
            (&[("PUBKEY_ONLY_SSH", "1")], "PUBKEY_ONLY_SSH=\"1\" (my.cfg:2): needs PUBKEY_SSH_FIRST_USER"),
            (&[("GPT_BIOS_UEFI", "1")], "GPT_BIOS_UEFI=\"1\" (my.cfg:2): not supported with TARGET_RASPI=1"),
            (&[("TARGET_RASPI", "0"), ("GPT_BIOS_UEFI", "1")], "GPT_BIOS_UEFI=\"1\" (my.cfg:3): GPT BIOS/UEFI not supported on target arch arm64"),
            (&[("TARGET_RASPI", "0"), ("TARGET_ARCH", "amd64"), ("UEFI_ARCH", "x86_64")], "UEFI_ARCH=\"x86_64\" (my.cfg:4): is only used with GPT_BIOS_UEFI=1"),
            (&[("TARGET_ARCH", "arm46")], "TARGET_ARCH=\"arm46\" (my.cfg:2): must be one of arm64, armhf, i386, amd64"),
            (&[("RELEASE", "Bookworm")], "RELEASE=\"Bookworm\" (my.cfg:2): not a Debian release code name"),
            (&[("BOOT_FSTYPE", "ntfs")], "BOOT_FSTYPE=\"ntfs\" (my.cfg:2): must be one of vfat, ext2, ext4, xfs"),
            (&[("BOOT_FSTYPE", "ext4")], "BOOT_FSTYPE=\"ext4\" (my.cfg:2): must be vfat with TARGET_RASPI=1"),
            (&[("BASE_QCOW2_SIZE", "lots")], "BASE_QCOW2_SIZE=\"lots\" (my.cfg:2): not a size"),
            (&[("BASE_QCOW2_SIZE", "15")], "BASE_QCOW2_SIZE=\"15\" (my.cfg:2): is less than 512M"),
            (&[("ROOTFS_RO_OVERLAY_TMPFS_SIZE", "big")], "ROOTFS_RO_OVERLAY_TMPFS_SIZE=\"big\" (my.cfg:2): not a size"),
            (&[("ENABLE_SSH", "yes")], "ENABLE_SSH=\"yes\" (my.cfg:2): must be 0 or 1"),
            (&[("TARGET_RASPI", "2")], "TARGET_RASPI=\"2\" (my.cfg:2): must be 0 or 1"),
            (&[("TIMEZONE_DEFAULT", "Mars/Olympus")], "TIMEZONE_DEFAULT=\"Mars/Olympus\" (my.cfg:2): no such time zone under"),
            (&[("TIMEZONE_DEFAULT", "../../etc/passwd")], "TIMEZONE_DEFAULT=\"../../etc/passwd\" (my.cfg:2): must be a zone name"),
            (&[("APT_PROXY", "cacher:3142")], "APT_PROXY=\"cacher:3142\" (my.cfg:2): must be an http:// or https:// URL"),
            (&[("STAGE_LIST", "stage0 stage9")], "STAGE_LIST=\"stage0 stage9\" (my.cfg:2): stage \"stage9\" not found"),
            (&[("WORK_DIR", "/tmp/my work")], "WORK_DIR=\"/tmp/my work\" (my.cfg:2): contains white space"),
            (&[("WORK_DIR", "work")], "WORK_DIR=\"work\" (my.cfg:2): must be an absolute path"),
            (&[("DEPLOY_DIR", "/")], "DEPLOY_DIR=\"/\" (my.cfg:2): must not be the root directory"),
            (&[("DEPLOY_COMPRESSION", "rar")], "DEPLOY_COMPRESSION=\"rar\" (my.cfg:2): must be one of zip, xz, gz, zstd, none"),
            (&[("COMPRESSION_LEVEL", "12")], "COMPRESSION_LEVEL=\"12\" (my.cfg:2): must be a number from 0 to 9 for DEPLOY_COMPRESSION=zip"),
            (&[("TARGET_HOSTNAME", "my_host")], "TARGET_HOSTNAME=\"my_host\" (my.cfg:2): must be a host name label"),
            (&[("WPA_COUNTRY", "de")], "WPA_COUNTRY=\"de\" (my.cfg:2): must be a two-letter ISO 3166 country code"),
            (&[("LOCALE_DEFAULT", "english")], "LOCALE_DEFAULT=\"english\" (my.cfg:2): must look like ll_CC.CHARSET"),
            (&[("ROOT_MARGIN", "ten percent")], "ROOT_MARGIN=\"ten percent\" (my.cfg:2): write N%, a size, or N%+SIZE"),
            (&[("STAGE_STORE", "zfs")], "STAGE_STORE=\"zfs\" (my.cfg:2): must be one of qcow2, dir"),
            (&[("IMG_SUFFIX", "-a/b")], "IMG_SUFFIX=\"-a/b\" (my.cfg:2): is used in file names"),
        ];
        for (config, expected) in cases {
            let line = f.error(config);
            assert!(
                line.starts_with(expected),
                "for {config:?}:\n  got      {line}\n  expected {expected}…"
            );
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn all_errors_are_reported_together() {
        let f = Fixture::new();
        let err = f
            .resolve(&[("TARGET_ARCH", "x"), ("ENABLE_SSH", "maybe")])
            .unwrap_err();
        assert_eq!(err.0.len(), 3, "{:?}", err.0);
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let f = Fixture::new();
        let line = f.error(&[("WPA_PASSWORD", "hunter2")]);
        assert!(!line.contains("hunter2"));
    }

    #[test]
    fn environment_origin_is_named() {
        let f = Fixture::new();
        let err = f
            .resolve_env(&[("IMG_NAME", "x")], &[("TARGET_ARCH", "sparc")])
            .unwrap_err();
        assert!(
            err.0[0].starts_with("TARGET_ARCH=\"sparc\" (environment): must be one of"),
            "{:?}",
            err.0
        );
    }

    #[test]
    fn stage_list_resolution() {
        let f = Fixture::new();
        let outside = f.dir.path().join("mystage");
        std::fs::create_dir(&outside).unwrap();
        let cfg = f
            .resolve(&[
                ("IMG_NAME", "x"),
                (
                    "STAGE_LIST",
                    &format!("stage0 stage1 {} mystage stage2", outside.display()),
                ),
            ])
            .unwrap_err();
        // mystage twice: once absolute, once found relative to the cwd.
        assert!(
            cfg.0[0].contains("two stages are named \"mystage\""),
            "{:?}",
            cfg.0
        );
        let cfg = f.resolve(&[
            ("IMG_NAME", "x"),
            ("STAGE_LIST", "stage0 stage1 mystage stage*"),
        ]);
        let err = cfg.unwrap_err();
        assert!(
            err.0[0].contains("two stages are named \"stage0\""),
            "{:?}",
            err.0
        );
        let cfg = f.resolve(&[
            ("IMG_NAME", "x"),
            ("STAGE_LIST", "stage[0] stage1 mystage stage2"),
        ]);
        assert!(cfg.is_err(), "no bracket globs");
        let cfg = f
            .resolve(&[("IMG_NAME", "x"), ("STAGE_LIST", "stage? mystage")])
            .unwrap();
        let names: Vec<String> = cfg.stage_list.iter().map(|d| stage_name(d)).collect();
        assert_eq!(names, ["stage0", "stage1", "stage2", "mystage"]);
        assert_eq!(cfg.stage_list[3], std::fs::canonicalize(&outside).unwrap());
    }

    #[test]
    fn skip_lists_naming_unknown_stages_warn() {
        let f = Fixture::new();
        let cfg = f
            .resolve(&[("IMG_NAME", "x"), ("SKIP_STAGE_LIST", "stage0 stage5")])
            .unwrap();
        assert_eq!(cfg.skip_stage_list, ["stage0", "stage5"]);
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.contains("\"stage5\", which is not in STAGE_LIST")));
    }

    #[test]
    fn sizes_and_margins() {
        assert_eq!(parse_size("15200M"), Some(15200 * MIB));
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("256MiB"), Some(256 * MIB));
        assert_eq!(parse_size("2k"), Some(2048));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("-1G"), None);
        assert_eq!(parse_margin("10%+128M"), Some((10, 128 * MIB)));
        assert_eq!(parse_margin("20%"), Some((20, 0)));
        assert_eq!(parse_margin("200M"), Some((0, 200 * MIB)));
        assert_eq!(parse_margin("x%"), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_798_675_200), "2026-12-31");
    }

    #[test]
    fn did_you_mean_is_conservative() {
        assert_eq!(did_you_mean("TARGET_HOSTNAM"), Some("TARGET_HOSTNAME"));
        assert_eq!(did_you_mean("IMG_NAM"), Some("IMG_NAME"));
        assert_eq!(did_you_mean("MY_OWN_VAR"), None);
        assert_eq!(did_you_mean("IMG"), None);
    }
}
