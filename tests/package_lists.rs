//! Package lists cannot rot silently (issue 5 §5): for every release × architecture the stock
//! stages support, every package list of stages 0–2 that the plan picks for that target — plus
//! the lists the stage scripts pick themselves (`stage0/02-firmware/raspi-boot-*`,
//! `stage2/04-bootloader/gpt-packages-*`) — must resolve with apt's resolver against Debian's
//! real archive indices: `apt-get install --simulate --no-install-recommends <every word>`.
//!
//! apt runs with a private configuration (`APT_CONFIG`): its own sources, state, cache and
//! trusted keys (`debian-archive-keyring`), `APT::Architecture` = the target's, an empty dpkg
//! status. The indices stay in `CARGO_TARGET_TMPDIR/apt/<release>-<arch>` between runs, so a
//! rerun only fetches what changed. The mirror is `DEB_SERVER` from the environment, else
//! debootstrap's default (the one pigen's builds use when `DEB_SERVER` is unset).
//!
//! The Raspberry Pi archive is not reachable here: the words of `raspi-boot-raspberrypi*` lists
//! are checked by name against `tests/raspi-packages.txt`.
//!
//! Each test skips with a printed reason when apt, the keyring or the archive is missing.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

fn repo() -> &'static Path {
    Path::new(REPO)
}

/// What a target is built from: the words apt must resolve and those checked by name only.
#[derive(Debug, Default)]
struct Lists {
    /// (list file, words) resolved with apt.
    debian: Vec<(String, Vec<String>)>,
    /// (list file, words) of the Raspberry Pi archive.
    raspberrypi: Vec<(String, Vec<String>)>,
}

/// Words of a list file: `#` starts a comment, words are separated by white space.
fn words(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
        .map(str::to_string)
        .collect()
}

fn is_raspi(arch: &str) -> bool {
    matches!(arch, "arm64" | "armhf")
}

/// The package steps of `pigen plan --json` for stages 0–2 of this target.
fn plan_lists(release: &str, arch: &str) -> Vec<(String, Vec<String>)> {
    let raspi = if is_raspi(arch) { "1" } else { "0" };
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["plan", "--json", "--base-dir", REPO])
        .args(["--set", "IMG_NAME=package-lists"])
        .args(["--set", &format!("RELEASE={release}")])
        .args(["--set", &format!("TARGET_ARCH={arch}")])
        .args(["--set", &format!("TARGET_RASPI={raspi}")])
        .args(["--set", "STAGE_LIST=stage0 stage1 stage2"])
        .env_remove("STAGE_LIST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pigen plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut lists = Vec::new();
    for stage in plan["stages"].as_array().unwrap() {
        for step in stage["steps"].as_array().unwrap() {
            if step["kind"] == "packages" && step["skipped"].is_null() {
                let words: Vec<String> = step["packages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect();
                lists.push((step["id"].as_str().unwrap().to_string(), words));
            }
        }
    }
    lists
}

/// The first existing of `dir/<stem>-RELEASE-ARCH`, `-RELEASE`, `-ARCH`, `<stem>` — the
/// selection `stage0/02-firmware/03-run.sh` makes.
fn pick(dir: &Path, stem: &str, release: &str, arch: &str) -> Option<PathBuf> {
    [
        format!("{stem}-{release}-{arch}"),
        format!("{stem}-{release}"),
        format!("{stem}-{arch}"),
        stem.to_string(),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn target_lists(release: &str, arch: &str) -> Lists {
    let mut lists = Lists {
        debian: plan_lists(release, arch),
        ..Lists::default()
    };
    if is_raspi(arch) {
        let dir = repo().join("stages/stage0/02-firmware");
        let debian = pick(&dir, "raspi-boot-debian", release, arch)
            .unwrap_or_else(|| panic!("no raspi-boot-debian list for {release} {arch}"));
        lists.debian.push((rel(&debian), words(&debian)));
        let rpi = pick(&dir, "raspi-boot-raspberrypi", release, arch)
            .unwrap_or_else(|| panic!("no raspi-boot-raspberrypi list for {release} {arch}"));
        lists.raspberrypi.push((rel(&rpi), words(&rpi)));
    } else {
        // GPT_BIOS_UEFI=1 with the UEFI_ARCH pigen derives from TARGET_ARCH.
        let uefi = if arch == "amd64" { "x86_64" } else { "i386" };
        let gpt = repo().join(format!("stages/stage2/04-bootloader/gpt-packages-{uefi}"));
        lists.debian.push((rel(&gpt), words(&gpt)));
    }
    lists
}

/// `(release, package) → architectures` from tests/raspi-packages.txt.
fn raspi_archive_names() -> Vec<(String, Vec<String>, String)> {
    let path = repo().join("tests/raspi-packages.txt");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split('#').next().unwrap().split_whitespace().collect();
            match w.as_slice() {
                [] => None,
                [release, arches, package] => Some((
                    release.to_string(),
                    arches.split(',').map(str::to_string).collect(),
                    package.to_string(),
                )),
                _ => panic!("tests/raspi-packages.txt: bad line: {l}"),
            }
        })
        .collect()
}

/// The mirror debootstrap uses by default (`DEF_MIRROR=` in the debootstrap script).
fn mirror() -> Option<String> {
    if let Ok(m) = std::env::var("DEB_SERVER") {
        if !m.is_empty() {
            return Some(m);
        }
    }
    let script = std::fs::read_to_string(common::which("debootstrap")?).ok()?;
    script.lines().find_map(|l| {
        l.trim()
            .strip_prefix("DEF_MIRROR=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// A private apt for one release and architecture, its indices cached between runs.
struct Apt {
    config: PathBuf,
}

impl Apt {
    fn new(release: &str, arch: &str, mirror: &str) -> Apt {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("apt")
            .join(format!("{release}-{arch}"));
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").unwrap();
        }
        let components = if release == "bullseye" {
            "main contrib non-free"
        } else {
            "main contrib non-free non-free-firmware"
        };
        std::fs::write(
            dir.join("etc/sources.list"),
            format!("deb [signed-by={KEYRING}] {mirror} {release} {components}\n"),
        )
        .unwrap();
        let d = dir.display();
        let config = dir.join("apt.conf");
        std::fs::write(
            &config,
            format!(
                "Dir::State \"{d}\";\n\
                 Dir::State::lists \"{d}/lists\";\n\
                 Dir::State::status \"{d}/status\";\n\
                 Dir::Cache \"{d}/cache\";\n\
                 Dir::Etc::sourcelist \"{d}/etc/sources.list\";\n\
                 Dir::Etc::sourceparts \"{d}/etc/sources.list.d\";\n\
                 Dir::Etc::parts \"{d}/etc/apt.conf.d\";\n\
                 Dir::Etc::preferences \"{d}/etc/preferences\";\n\
                 Dir::Etc::preferencesparts \"{d}/etc/preferences.d\";\n\
                 Dir::Etc::trusted \"{d}/etc/trusted.gpg\";\n\
                 Dir::Etc::trustedparts \"{d}/etc/trusted.gpg.d\";\n\
                 APT::Architecture \"{arch}\";\n\
                 APT::Architectures {{ \"{arch}\"; }};\n\
                 Acquire::Languages \"none\";\n\
                 Acquire::Retries \"3\";\n\
                 APT::Sandbox::User \"root\";\n\
                 Debug::NoLocking \"true\";\n"
            ),
        )
        .unwrap();
        Apt { config }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("apt-get")
            .args(args)
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_target(test: &str, release: &str, arch: &str) {
    let lists = target_lists(release, arch);

    // The Raspberry Pi archive's names, by name.
    let known = raspi_archive_names();
    let mut unknown = Vec::new();
    for (file, words) in &lists.raspberrypi {
        for w in words {
            let listed = known
                .iter()
                .any(|(r, arches, p)| r == release && p == w && arches.iter().any(|a| a == arch));
            if !listed {
                unknown.push(format!("{file}: {w}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "Raspberry Pi archive packages for {release} {arch} missing from tests/raspi-packages.txt \
         (check them in the archive, then add them):\n  {}",
        unknown.join("\n  ")
    );

    // Debian's, with apt.
    if common::which("apt-get").is_none() {
        return common::skip(test, "apt-get is not installed");
    }
    if !Path::new(KEYRING).is_file() {
        return common::skip(
            test,
            &format!("{KEYRING} is missing (apt-get install debian-archive-keyring)"),
        );
    }
    let Some(mirror) = mirror() else {
        return common::skip(
            test,
            "no mirror: DEB_SERVER is unset and debootstrap is not installed",
        );
    };
    let apt = Apt::new(release, arch, &mirror);
    let update = apt.run(&["-q", "-o", "APT::Update::Error-Mode=any", "update"]);
    if !update.status.success() {
        return common::skip(
            test,
            &format!(
                "cannot fetch {release} {arch} indices from {mirror}:\n{}",
                output_text(&update)
            ),
        );
    }
    let mut args = vec!["-q", "install", "--simulate", "--no-install-recommends"];
    let all: Vec<&str> = lists
        .debian
        .iter()
        .flat_map(|(_, w)| w.iter().map(String::as_str))
        .collect();
    assert!(!all.is_empty(), "no packages planned for {release} {arch}");
    args.extend(&all);
    let out = apt.run(&args);
    if !out.status.success() {
        // Say which list holds a package apt does not know.
        let text = output_text(&out);
        let culprits: Vec<String> = lists
            .debian
            .iter()
            .flat_map(|(file, words)| {
                words
                    .iter()
                    .filter(|w| {
                        text.contains(&format!("package {w}")) || text.contains(&format!(" {w} :"))
                    })
                    .map(move |w| format!("{file}: {w}"))
            })
            .collect();
        panic!(
            "{release} {arch}: apt cannot install the planned lists\n{}\napt-get said:\n{text}",
            culprits.join("\n")
        );
    }
}

/// The targets the stock stages support. Not here: trixie × i386 (Debian has no i386 kernel
/// from trixie on; stage0/prerun.sh refuses it, see tests/stages.rs).
macro_rules! target {
    ($name:ident, $release:literal, $arch:literal) => {
        #[test]
        fn $name() {
            check_target(stringify!($name), $release, $arch);
        }
    };
}

target!(bullseye_amd64, "bullseye", "amd64");
target!(bullseye_i386, "bullseye", "i386");
target!(bullseye_arm64, "bullseye", "arm64");
target!(bullseye_armhf, "bullseye", "armhf");
target!(bookworm_amd64, "bookworm", "amd64");
target!(bookworm_i386, "bookworm", "i386");
target!(bookworm_arm64, "bookworm", "arm64");
target!(bookworm_armhf, "bookworm", "armhf");
target!(trixie_amd64, "trixie", "amd64");
target!(trixie_arm64, "trixie", "arm64");
target!(trixie_armhf, "trixie", "armhf");

/// Every list a stage script picks itself is one this test knows how to check: files outside
/// the plan's `NN-packages*` naming that hold package names must belong to a known family.
#[test]
fn script_picked_lists_are_all_checked() {
    let known = [
        ("stages/stage0/02-firmware", "raspi-boot-"),
        ("stages/stage2/04-bootloader", "gpt-packages-"),
    ];
    let mut strays = Vec::new();
    for stage in ["stage0", "stage1", "stage2", "export-image"] {
        let dir = repo().join("stages").join(stage);
        for sub in std::fs::read_dir(&dir).unwrap().flatten() {
            if !sub.path().is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(sub.path()).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(|c: char| c.is_ascii_digit()) || !entry.path().is_file() {
                    continue;
                }
                let looks_like_list = name.contains("packages") || name.starts_with("raspi-boot");
                let sub_rel = rel(&sub.path());
                let covered = known
                    .iter()
                    .any(|(d, p)| sub_rel == *d && name.starts_with(p));
                if looks_like_list && !covered {
                    strays.push(format!("{sub_rel}/{name}"));
                }
            }
        }
    }
    assert!(
        strays.is_empty(),
        "package lists that tests/package_lists.rs does not check: {strays:?}"
    );
}

/// Every name in tests/raspi-packages.txt is used by a list (the file documents what the stages
/// rely on, nothing more).
#[test]
fn raspi_package_names_are_all_used() {
    let dir = repo().join("stages/stage0/02-firmware");
    let mut used = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("raspi-boot-raspberrypi") {
            used.extend(words(&entry.path()));
        }
    }
    for (release, _, package) in raspi_archive_names() {
        assert!(
            used.contains(&package),
            "tests/raspi-packages.txt lists {package} ({release}) but no raspi-boot-raspberrypi list uses it"
        );
    }
}
