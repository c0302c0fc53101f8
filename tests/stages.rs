//! The stock stage trees (`stages/`): shellcheck over every script, every script the plan runs
//! is executable, the examples plan cleanly, and the host side of the stage scripts does what
//! they promise — run with stand-ins for `bootstrap`, `on_chroot` and `log` (exported bash
//! functions, as pigen hands the real ones to scripts) on a scratch root. No root, no network.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn stages() -> PathBuf {
    Path::new(REPO).join("stages")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(&stages(), &mut files);
    files
}

/// Scripts: `*.sh`, files starting with a `#!…sh` line, and the `EXPORT_*` fragments.
fn scripts() -> Vec<(PathBuf, Option<&'static str>)> {
    all_files()
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("EXPORT_") {
                return Some((p, Some("bash")));
            }
            let first = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
                .unwrap_or_default();
            let shebang = first.starts_with("#!") && first.contains("sh");
            (name.ends_with(".sh") || shebang).then_some((p, None))
        })
        .collect()
}

#[test]
fn shellcheck_is_clean() {
    let Some(shellcheck) = common::which("shellcheck") else {
        return common::skip(
            "shellcheck_is_clean",
            "shellcheck is not installed (apt-get install shellcheck; tests/run installs it)",
        );
    };
    let scripts = scripts();
    assert!(scripts.len() > 10, "found only {scripts:?}");
    let mut failures = Vec::new();
    for (script, shell) in &scripts {
        let mut cmd = Command::new(&shellcheck);
        cmd.arg("-x").current_dir(script.parent().unwrap());
        if let Some(shell) = shell {
            cmd.args(["--shell", shell]);
        }
        let out = cmd.arg(script).output().unwrap();
        if !out.status.success() {
            failures.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
    }
    assert!(failures.is_empty(), "shellcheck:\n{}", failures.join("\n"));
}

/// The plan runs `prerun.sh` and `NN-run.sh` only when executable (as pi-gen): a stock script
/// without its exec bit would be skipped silently. Scripts installed into the image carry theirs.
#[test]
fn run_scripts_are_executable_and_start_with_bash_e() {
    for file in all_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let is_run = name == "prerun.sh"
            || (name.ends_with("-run.sh") && name.starts_with(|c: char| c.is_ascii_digit()));
        if !is_run {
            continue;
        }
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("#!/bin/bash -e\n"),
            "{} does not start with #!/bin/bash -e",
            file.display()
        );
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("set -x")),
            "{} traces its commands (set -x would print secrets)",
            file.display()
        );
    }
}

/// No archive host names in the stage trees or examples: mirrors come from DEB_SERVER,
/// DEB_SECURITY_SERVER, RASPI_SERVER, RASPBIAN_SERVER.
#[test]
fn no_urls_in_stage_trees_or_examples() {
    let mut files = all_files();
    walk(&Path::new(REPO).join("examples"), &mut files);
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let url = line.contains("http://") || line.contains("https://");
            // The examples may show a local proxy.
            let local = line.contains("://127.0.0.1");
            assert!(!url || local, "{}:{}: {line}", file.display(), n + 1);
        }
    }
}

#[test]
fn examples_plan_cleanly() {
    let dir = Path::new(REPO).join("examples");
    let mut configs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 6, "{configs:?}");
    for config in configs {
        let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
            .args(["plan", "--base-dir", REPO, "-c"])
            .arg(&config)
            .env_remove("STAGE_LIST")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", config.display());
        assert!(
            stderr.trim().is_empty(),
            "{}: warnings: {stderr}",
            config.display()
        );
        for stage in ["stage0", "stage1", "stage2"] {
            assert!(
                stdout.contains(&format!("{stage}/prerun.sh")),
                "{}: {stage} missing from the plan:\n{stdout}",
                config.display()
            );
        }
        assert!(stdout.contains("(IMG_SUFFIX=\"-lite\")"), "{stdout}");
    }
}

// ---------------------------------------------------------------------------------------------
// The host side of the stage scripts, with stand-in functions.

/// A scratch root and a log of what the stand-ins were asked to do.
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        let run = Run {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/sources.list.d",
            "etc/default",
            "etc/network",
            "etc/ssh",
            "var/lib/apt/lists",
            "var/log",
            "usr/sbin",
            "home/admin",
        ] {
            std::fs::create_dir_all(run.root().join(d)).unwrap();
        }
        run
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs `stages/<script>` in its directory with `vars` (plus a base set) and the stand-ins.
    fn script(&self, script: &str, vars: &[(&str, &str)]) -> Output {
        let path = stages().join(script);
        let mut env: BTreeMap<String, String> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            ("RELEASE", "bookworm"),
            ("TARGET_ARCH", "amd64"),
            ("TARGET_RASPI", "0"),
            ("RASPI_FIRMWARE", "raspberrypi"),
            ("USE_RASPI_SOURCE", "0"),
            ("IS_TESTING", "0"),
            ("DEB_SERVER", "http://mirror.test/debian"),
            ("FIRST_USER_NAME", "admin"),
            ("FIRST_USER_PASS", "s3cret-pass"),
            ("TARGET_HOSTNAME", "box"),
            ("TIMEZONE_DEFAULT", "Etc/UTC"),
            ("ENABLE_SSH", "1"),
            ("PUBKEY_ONLY_SSH", "0"),
            ("GPT_BIOS_UEFI", "0"),
            ("INSTALL_RECOMMENDS", "0"),
            ("REDUCED_FOOTPRINT", "0"),
            ("USE_QEMU", "0"),
            ("IMG_NAME", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let stage_dir = stages().join(script.split('/').next().unwrap());
        env.insert("STAGE_DIR".into(), stage_dir.display().to_string());
        env.insert("ROOTFS_DIR".into(), self.root().display().to_string());
        env.insert("CALLS".into(), self.log().display().to_string());
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let mut cmd = Command::new(&path);
        cmd.current_dir(path.parent().unwrap())
            .env_clear()
            .envs(&env);
        // Stand-ins, exported as bash functions the way pigen exports the real ones.
        cmd.env(
            "BASH_FUNC_bootstrap%%",
            r#"() { printf 'bootstrap'; printf ' [%s]' "$@"; echo; } >>"$CALLS""#,
        );
        cmd.env(
            "BASH_FUNC_on_chroot%%",
            r#"() { { echo "on_chroot $*"; cat; echo "on_chroot end"; } >>"$CALLS"; }"#,
        );
        cmd.env("BASH_FUNC_log%%", r#"() { echo "log $*" >>"$CALLS"; }"#);
        cmd.env(
            "BASH_FUNC_copy_previous%%",
            r#"() { echo copy_previous >>"$CALLS"; }"#,
        );
        cmd.env("BASH_FUNC_print_issue%%", r#"() { echo "issue of $1"; }"#);
        cmd.output().unwrap()
    }
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "script failed: {text}");
    text
}

fn failed(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "script succeeded: {text}");
    text
}

#[test]
fn stage0_prerun_bootstraps_with_debootstraps_mirror_by_default() {
    let run = Run::new();
    ok(&run.script("stage0/prerun.sh", &[("DEB_SERVER", "")]));
    let root = run.root().display().to_string();
    assert_eq!(run.calls(), format!("bootstrap [bookworm] [{root}]\n"));
}

#[test]
fn stage0_prerun_refuses_targets_it_cannot_build() {
    let run = Run::new();
    let err = failed(&run.script(
        "stage0/prerun.sh",
        &[("TARGET_ARCH", "i386"), ("RELEASE", "trixie")],
    ));
    assert!(err.contains("no i386 kernel"), "{err}");
    let err = failed(&run.script("stage0/prerun.sh", &[("TARGET_ARCH", "arm64")]));
    assert!(err.contains("amd64 and i386 only"), "{err}");
    let err = failed(&run.script(
        "stage0/prerun.sh",
        &[("TARGET_RASPI", "1"), ("TARGET_ARCH", "arm64")],
    ));
    assert!(err.contains("RASPI_SERVER"), "{err}");
    let err = failed(&run.script(
        "stage0/prerun.sh",
        &[
            ("TARGET_RASPI", "1"),
            ("TARGET_ARCH", "armhf"),
            ("RASPI_FIRMWARE", "debian"),
            ("USE_RASPI_SOURCE", "1"),
        ],
    ));
    assert!(err.contains("RASPBIAN_SERVER"), "{err}");
    assert_eq!(run.calls(), "", "nothing bootstrapped");
    // i386 up to bookworm and Debian's Raspberry Pi firmware need nothing more.
    ok(&run.script("stage0/prerun.sh", &[("TARGET_ARCH", "i386")]));
    ok(&run.script(
        "stage0/prerun.sh",
        &[
            ("TARGET_RASPI", "1"),
            ("RASPI_FIRMWARE", "debian"),
            ("RELEASE", "trixie"),
        ],
    ));
    assert_eq!(run.calls().lines().count(), 2);
}

#[test]
fn stage0_apt_sources_per_release() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("RELEASE", "bookworm")],
            "deb http://mirror.test/debian bookworm main contrib non-free non-free-firmware\n\
             deb http://mirror.test/debian-security bookworm-security main contrib non-free non-free-firmware\n\
             deb http://mirror.test/debian bookworm-updates main contrib non-free non-free-firmware\n",
        ),
        (
            &[("RELEASE", "bullseye"), ("DEB_SERVER", "http://mirror.test/debian/")],
            "deb http://mirror.test/debian/ bullseye main contrib non-free\n\
             deb http://mirror.test/debian-security bullseye-security main contrib non-free\n\
             deb http://mirror.test/debian/ bullseye-updates main contrib non-free\n",
        ),
        (
            &[("RELEASE", "buster"), ("DEB_SECURITY_SERVER", "http://sec.test/ds")],
            "deb http://mirror.test/debian buster main contrib non-free\n\
             deb http://sec.test/ds buster/updates main contrib non-free\n\
             deb http://mirror.test/debian buster-updates main contrib non-free\n",
        ),
        (
            &[("RELEASE", "forky"), ("IS_TESTING", "1")],
            "deb http://mirror.test/debian forky main contrib non-free non-free-firmware\n",
        ),
        (
            &[("RELEASE", "trixie"), ("DEB_SERVER", "http://cache.test:3142/deb")],
            "deb http://cache.test:3142/deb trixie main contrib non-free non-free-firmware\n\
             deb http://cache.test:3142/deb trixie-updates main contrib non-free non-free-firmware\n",
        ),
    ];
    for (vars, expected) in cases {
        let run = Run::new();
        ok(&run.script("stage0/00-configure-apt/00-run.sh", vars));
        assert_eq!(run.read("etc/apt/sources.list"), *expected, "{vars:?}");
        assert!(run.calls().contains("dist-upgrade -y"), "{}", run.calls());
    }
}

#[test]
fn stage0_apt_policy_proxy_and_raspberry_pi_archive() {
    let run = Run::new();
    ok(&run.script(
        "stage0/00-configure-apt/00-run.sh",
        &[
            ("APT_PROXY", "http://127.0.0.1:3142"),
            ("REDUCED_FOOTPRINT", "1"),
        ],
    ));
    assert_eq!(
        run.read("etc/apt/apt.conf.d/51cache"),
        "Acquire::http { Proxy \"http://127.0.0.1:3142\"; };\n"
    );
    assert!(run
        .read("etc/apt/apt.conf.d/00default-selection")
        .contains("Install-Recommends \"0\""));
    assert!(run
        .read("etc/dpkg/dpkg.cfg.d/01_nodoc")
        .contains("path-exclude /usr/share/doc/*"));
    assert!(!run
        .root()
        .join("etc/apt/sources.list.d/raspi.list")
        .exists());

    // Recommends allowed, no proxy: both files go.
    ok(&run.script(
        "stage0/00-configure-apt/00-run.sh",
        &[("INSTALL_RECOMMENDS", "1")],
    ));
    assert!(!run.root().join("etc/apt/apt.conf.d/51cache").exists());
    assert!(!run
        .root()
        .join("etc/apt/apt.conf.d/00default-selection")
        .exists());

    // The Raspberry Pi archive, with a stage tree that has its key.
    let stage = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(stage.path().join("files")).unwrap();
    std::fs::write(
        stage.path().join("files/raspberrypi-archive-keyring.gpg"),
        "key",
    )
    .unwrap();
    ok(&run.script(
        "stage0/00-configure-apt/00-run.sh",
        &[
            ("TARGET_RASPI", "1"),
            ("TARGET_ARCH", "arm64"),
            ("RASPI_SERVER", "http://rpi.test/debian"),
            ("STAGE_DIR", &stage.path().display().to_string()),
        ],
    ));
    assert_eq!(
        run.read("etc/apt/sources.list.d/raspi.list"),
        "deb [signed-by=/usr/share/keyrings/raspberrypi-archive-keyring.gpg] http://rpi.test/debian bookworm main\n"
    );
    assert_eq!(
        run.read("usr/share/keyrings/raspberrypi-archive-keyring.gpg"),
        "key"
    );
}

#[test]
fn stage0_defers_initramfs_and_picks_raspberry_pi_boot_lists() {
    let run = Run::new();
    ok(&run.script("stage0/02-firmware/00-run.sh", &[]));
    assert!(run
        .read("etc/kernel-img.conf")
        .contains("do_symlinks = yes"));
    assert!(run.calls().contains("dpkg-divert --local --rename"));
    let stub = run.root().join("usr/sbin/update-initramfs");
    assert!(std::fs::metadata(&stub).unwrap().permissions().mode() & 0o111 != 0);
    assert!(run
        .read("usr/sbin/update-initramfs")
        .contains("deferred by pigen"));

    let cases = [
        (
            "debian",
            "bookworm",
            "arm64",
            "raspi-firmware linux-image-arm64",
        ),
        (
            "debian",
            "bullseye",
            "armhf",
            "raspi-firmware linux-image-armmp",
        ),
        (
            "raspberrypi",
            "bullseye",
            "arm64",
            "raspberrypi-bootloader raspberrypi-kernel raspi-config rpi-eeprom",
        ),
        (
            "raspberrypi",
            "trixie",
            "arm64",
            "raspi-firmware linux-image-rpi-v8 linux-image-rpi-2712 raspi-config rpi-eeprom",
        ),
    ];
    for (firmware, release, arch, packages) in cases {
        let run = Run::new();
        ok(&run.script(
            "stage0/02-firmware/03-run.sh",
            &[
                ("TARGET_RASPI", "1"),
                ("RASPI_FIRMWARE", firmware),
                ("RELEASE", release),
                ("TARGET_ARCH", arch),
            ],
        ));
        assert!(
            run.calls()
                .contains(&format!("install --no-install-recommends -y {packages}\n")),
            "{firmware} {release} {arch}: {}",
            run.calls()
        );
    }
    // PC images: nothing.
    let run = Run::new();
    ok(&run.script("stage0/02-firmware/03-run.sh", &[]));
    assert_eq!(run.calls(), "");
}

#[test]
fn stage1_boot_files_fstab_and_user() {
    // Raspberry Pi archive, bookworm: /boot/firmware.
    let run = Run::new();
    let vars = [("TARGET_RASPI", "1"), ("TARGET_ARCH", "arm64")];
    ok(&run.script("stage1/00-boot-files/00-run.sh", &vars));
    let config = run.read("boot/firmware/config.txt");
    assert!(
        config.contains("arm_64bit=1") && config.contains("auto_initramfs=1"),
        "{config}"
    );
    assert!(run
        .read("boot/firmware/cmdline.txt")
        .contains(" root=ROOTDEV "));
    ok(&run.script("stage1/01-sys-tweaks/00-run.sh", &vars));
    let fstab = run.read("etc/fstab");
    assert!(
        fstab.contains("\nROOTDEV  /  ext4  defaults,noatime  0  1\n"),
        "{fstab}"
    );
    assert!(
        fstab.contains("\nBOOTDEV  /boot/firmware  vfat  defaults  0  2\n"),
        "{fstab}"
    );
    assert!(!fstab.contains("EFIDEV"), "{fstab}");
    // The password is read from the environment inside the chroot, never written into a script.
    let calls = run.calls();
    assert!(calls.contains("| chpasswd"), "{calls}");
    assert!(!calls.contains("s3cret-pass"), "{calls}");

    // Raspberry Pi archive, bullseye, armhf: /boot, 32-bit.
    let run = Run::new();
    let vars = [
        ("TARGET_RASPI", "1"),
        ("TARGET_ARCH", "armhf"),
        ("RELEASE", "bullseye"),
    ];
    ok(&run.script("stage1/00-boot-files/00-run.sh", &vars));
    let config = run.read("boot/config.txt");
    assert!(
        !config.contains("arm_64bit") && !config.contains("auto_initramfs"),
        "{config}"
    );
    ok(&run.script("stage1/01-sys-tweaks/00-run.sh", &vars));
    assert!(run.read("etc/fstab").contains("\nBOOTDEV  /boot  vfat"));

    // Debian's raspi-firmware: its defaults file carries the root and consoles.
    let run = Run::new();
    std::fs::write(
        run.root().join("etc/default/raspi-firmware"),
        "#CONSOLES=\"auto\"\n",
    )
    .unwrap();
    ok(&run.script(
        "stage1/00-boot-files/00-run.sh",
        &[
            ("TARGET_RASPI", "1"),
            ("RASPI_FIRMWARE", "debian"),
            ("TARGET_ARCH", "arm64"),
        ],
    ));
    let defaults = run.read("etc/default/raspi-firmware");
    assert!(defaults.starts_with("#CONSOLES=\"auto\"\n"), "{defaults}");
    assert!(
        defaults.contains("\nROOTPART=ROOTDEV\nCONSOLES=\"ttyS1,115200 tty1\"\n"),
        "{defaults}"
    );
    assert!(!run.root().join("boot/firmware/cmdline.txt").exists());

    // PC with GPT: root and ESP, no boot partition.
    let run = Run::new();
    ok(&run.script("stage1/01-sys-tweaks/00-run.sh", &[("GPT_BIOS_UEFI", "1")]));
    let fstab = run.read("etc/fstab");
    assert!(
        fstab.contains("\nEFIDEV  /boot/efi  vfat  umask=0077  0  1\n"),
        "{fstab}"
    );
    assert!(!fstab.contains("BOOTDEV"), "{fstab}");
    assert!(run.root().join("boot/efi").is_dir());
}

#[test]
fn stage2_wireless_without_plain_passphrase() {
    let run = Run::new();
    ok(&run.script(
        "stage2/02-net-tweaks/00-run.sh",
        &[
            ("TARGET_RASPI", "1"),
            ("WPA_COUNTRY", "DE"),
            ("WPA_ESSID", "home net"),
            ("WPA_PASSWORD", "correct horse"),
        ],
    ));
    let conf = run.read("etc/wpa_supplicant/wpa_supplicant.conf");
    assert!(conf.ends_with("country=DE\n"), "{conf}");
    let calls = run.calls();
    assert!(calls.contains("wpa_passphrase \"${WPA_ESSID}\""), "{calls}");
    assert!(!calls.contains("correct horse"), "{calls}");
    assert_eq!(
        run.read("var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan"),
        "0\n"
    );

    // An open network, no country: the SSID in hex, wireless soft-blocked.
    let run = Run::new();
    ok(&run.script(
        "stage2/02-net-tweaks/00-run.sh",
        &[("TARGET_RASPI", "1"), ("WPA_ESSID", "café \"x\"")],
    ));
    let conf = run.read("etc/wpa_supplicant/wpa_supplicant.conf");
    assert!(
        conf.contains("\tssid=636166c3a9202278220a\n")
            || conf.contains("\tssid=636166c3a920227822\n"),
        "{conf}"
    );
    assert!(conf.contains("key_mgmt=NONE"), "{conf}");
    assert_eq!(
        run.read("var/lib/systemd/rfkill/platform-fe300000.mmcnr:wlan"),
        "1\n"
    );
}

#[test]
fn stage2_ssh_and_bootloader() {
    let run = Run::new();
    ok(&run.script(
        "stage2/01-sys-tweaks/00-run.sh",
        &[
            ("ENABLE_SSH", "0"),
            ("PUBKEY_ONLY_SSH", "1"),
            ("PUBKEY_SSH_FIRST_USER", "ssh-ed25519 AAAA one"),
            ("PUBKEY2_SSH_FIRST_USER", "ssh-ed25519 BBBB two"),
        ],
    ));
    assert_eq!(
        run.read("home/admin/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two\n"
    );
    assert!(run
        .read("etc/ssh/sshd_config.d/50-pigen-pubkey-only.conf")
        .contains("PasswordAuthentication no"));
    let calls = run.calls();
    assert!(calls.contains("systemctl mask ssh.service"), "{calls}");
    assert!(
        calls.contains("systemctl enable pigen-ssh-host-keys.service"),
        "{calls}"
    );
    assert!(
        calls.contains("systemctl enable pigen-resize-rootfs.service"),
        "{calls}"
    );
    assert!(run
        .read("etc/systemd/system/pigen-ssh-host-keys.service")
        .contains("ExecStart=/usr/bin/ssh-keygen -A"));

    // PC GPT: EFI GRUB for UEFI_ARCH, a static grub.cfg booting the Debian symlinks.
    let run = Run::new();
    ok(&run.script(
        "stage2/04-bootloader/01-run.sh",
        &[("GPT_BIOS_UEFI", "1"), ("UEFI_ARCH", "x86_64")],
    ));
    assert!(
        run.calls().contains("-y grub-efi-amd64-bin\n"),
        "{}",
        run.calls()
    );
    let cfg = run.read("boot/grub/grub.cfg");
    assert!(
        cfg.contains("linux /vmlinuz root=ROOTDEV ro console=tty0 console=ttyS0,115200"),
        "{cfg}"
    );
    assert!(cfg.contains("initrd /initrd.img"), "{cfg}");
    let grub = run.read("etc/default/grub");
    assert!(
        grub.contains("GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\""),
        "{grub}"
    );
    assert!(grub.contains("GRUB_TIMEOUT=0"), "{grub}");
}

#[test]
fn export_image_finalise_leaves_nothing_of_the_build() {
    let run = Run::new();
    let root = run.root();
    for (file, content) in [
        ("etc/apt/apt.conf.d/51cache", "proxy"),
        ("etc/machine-id", "0123456789abcdef\n"),
        ("var/lib/dbus/machine-id", "0123456789abcdef\n"),
        ("etc/ssh/ssh_host_ed25519_key", "secret"),
        ("etc/ssh/ssh_host_ed25519_key.pub", "public"),
        ("var/lib/apt/lists/some_Packages", "index"),
        ("var/log/apt/history.log", "install foo"),
        ("etc/resolv.conf", "nameserver 10.0.0.1\n"),
        (
            "etc/fstab",
            "ROOTDEV / ext4 defaults 0 1\nBOOTDEV /boot/firmware vfat defaults 0 2\n",
        ),
        ("usr/bin/qemu-aarch64-static", "emulator"),
        ("etc/ld.so.preload", "/usr/lib/libfoo.so\n"),
    ] {
        let p = root.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    let vars = [("EXPORT_DIR", "/somewhere/stage2")];
    for script in [
        "export-image/00-allow-rerun/00-run.sh",
        "export-image/01-set-sources/01-run.sh",
        "export-image/02-network/01-run.sh",
        "export-image/04-finalise/01-run.sh",
    ] {
        ok(&run.script(script, &vars));
    }
    for gone in [
        "etc/apt/apt.conf.d/51cache",
        "var/lib/dbus/machine-id",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "var/lib/apt/lists/some_Packages",
        "usr/bin/qemu-aarch64-static",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }
    assert_eq!(run.read("etc/machine-id"), "");
    assert_eq!(run.read("etc/resolv.conf"), "");
    assert_eq!(
        std::fs::metadata(root.join("etc/resolv.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    assert_eq!(run.read("var/log/apt/history.log"), "");
    assert_eq!(run.read("etc/ld.so.preload"), "/usr/lib/libfoo.so\n");
    assert_eq!(run.read("etc/rpi-issue"), "issue of stage2\n");
    assert_eq!(run.read("boot/firmware/issue.txt"), "issue of stage2\n");
    assert_eq!(
        std::fs::read_link(root.join("etc/mtab")).unwrap(),
        Path::new("../proc/self/mounts")
    );
    // The image was brought up to date in the chroot (while the proxy was still configured).
    assert!(run.calls().contains("dist-upgrade -y"), "{}", run.calls());
}

#[test]
fn export_image_generates_the_initramfs_once() {
    let run = Run::new();
    ok(&run.script("export-image/03-initramfs/00-run.sh", &[]));
    let calls = run.calls();
    assert!(
        calls.contains("dpkg-divert --local --rename --remove /usr/sbin/update-initramfs"),
        "{calls}"
    );
    assert_eq!(
        calls.matches("update-initramfs -c -k all").count(),
        1,
        "{calls}"
    );
}
