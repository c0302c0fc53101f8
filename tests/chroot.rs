//! Root integration tests of the stage script functions (`shell/functions.bash`) and the
//! chroot helpers (`pigen::exec::chroot`), against tiny busybox + bash trees built at test
//! time. Every test runs in a private mount + PID namespace (`common::ns_test!`), and prints
//! a reason and passes where this machine lacks root or a tool.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{mounts_below, ns_test, rootfs, skip, which, Scratch};
use pigen::config::{Arch, Env};
use pigen::exec::chroot::{
    apt_install_script, chroot_script_cmd, debconf_script, ensure_binfmt, ResolvConfGuard,
};
use pigen::exec::cmd::{CmdOutput, LogSink};
use pigen::exec::env::{script_env, StageVars};
use pigen::exec::Cmd;

const HOSTNAME: &str = "fixture-host";

/// A stage with a tree at its `ROOTFS_DIR` and the environment its scripts get.
struct Stage {
    scratch: Scratch,
    vars: StageVars,
    env: Env,
}

impl Stage {
    fn rootfs(&self) -> &Path {
        &self.vars.rootfs_dir
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.rootfs().join(rel)
    }

    /// `script` through `on_chroot` (stdin), as the executor runs chroot steps.
    fn chroot(&self, script: &str) -> CmdOutput {
        chroot_script_cmd(&self.env, script)
            .output(&LogSink::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `script` in a host bash with the stage environment (as a stage's `NN-run.sh`).
    fn host_bash(&self, script: &str) -> CmdOutput {
        Cmd::new("bash")
            .args(["-c", script])
            .env_clear()
            .envs(&self.env)
            .output(&LogSink::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Whether every tool is on PATH; prints the skip reason for the first missing one.
fn tools_present(test: &str, tools: &[&str]) -> bool {
    for tool in tools {
        if which(tool).is_none() {
            skip(test, &format!("{tool} not found"));
            return false;
        }
    }
    true
}

/// A stage0 of `arch` over a fresh scratch dir, its rootfs a host tree; `None` when the host
/// cannot build one (reason printed).
fn stage(test: &str, arch: &str, sets: &[&str]) -> Option<Stage> {
    if !tools_present(test, &["capsh", "mountpoint", "setarch", "realpath"]) {
        return None;
    }
    let scratch = Scratch::new();
    let base = scratch.path().join("base");
    let work = scratch.path().join("work");
    let mut all = vec![
        format!("WORK_DIR={}", work.display()),
        format!("TARGET_ARCH={arch}"),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let config = common::config(&base, &all);
    let vars = StageVars::for_stage(base.join("stages/stage0"), &work);
    fs::create_dir_all(&vars.stage_work_dir).unwrap();
    if arch == "arm64" {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-debs");
        if let Err(reason) = rootfs::arm64_tree(&vars.rootfs_dir, HOSTNAME, &cache) {
            skip(test, &reason);
            return None;
        }
    } else if let Err(reason) = rootfs::host_tree(&vars.rootfs_dir, HOSTNAME) {
        skip(test, &reason);
        return None;
    }
    let process = Env::from([(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )]);
    let env = script_env(&config, &process, &vars);
    Some(Stage { scratch, vars, env })
}

/// The chroot mounts on_chroot makes, relative to the rootfs.
const CHROOT_MOUNTS: &[&str] = &["proc", "dev", "dev/pts", "sys", "run"];

ns_test!(run_chroot_script_sees_the_tree_and_its_mounts, {
    let test = "run_chroot_script_sees_the_tree_and_its_mounts";
    let Some(s) = stage(test, "amd64", &[]) else {
        return;
    };
    let out = s.chroot(
        "cat /etc/hostname\n\
         pwd\n\
         test -r /proc/self/status && echo proc\n\
         test -c /dev/null && echo dev\n\
         test -d /sys/kernel && echo sys\n\
         touch /run/x && echo run\n\
         echo \"$LC_ALL $LANG $LC_MEASUREMENT\"\n",
    );
    assert_eq!(
        out.stdout,
        format!("{HOSTNAME}\n/\nproc\ndev\nsys\nrun\nen_US.UTF-8 en_US.UTF-8 en_US.UTF-8\n")
    );
    let mut expected: Vec<PathBuf> = CHROOT_MOUNTS.iter().map(|m| s.path(m)).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(mounts_below(s.rootfs()), expected);
    assert!(
        fs::read_dir(s.path("dev/pts")).unwrap().count() > 0,
        "devpts bound"
    );

    // A second run mounts nothing twice; the locale stays out of the calling shell.
    let out =
        s.host_bash("set -eu; on_chroot <<< 'echo again'; echo \"caller LC_ALL=${LC_ALL-unset}\"");
    assert_eq!(out.stdout, "again\ncaller LC_ALL=unset\n");
    assert_eq!(mounts_below(s.rootfs()), expected);

    // unmount takes everything below ROOTFS_DIR, and nothing of a sibling sharing its prefix.
    let sibling = s.scratch.path().join("work/stage0/rootfs2");
    fs::create_dir_all(&sibling).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sibling)
        .status()
        .unwrap();
    assert!(status.success());
    let out = s.host_bash("set -eu; unmount \"$ROOTFS_DIR\"; echo done");
    assert_eq!(out.stdout, "done\n");
    assert_eq!(mounts_below(s.rootfs()), Vec::<PathBuf>::new());
    assert_eq!(mounts_below(&sibling), vec![sibling.clone()]);
});

ns_test!(on_chroot_refuses_a_symlinked_mount_point, {
    let test = "on_chroot_refuses_a_symlinked_mount_point";
    let Some(s) = stage(test, "amd64", &[]) else {
        return;
    };
    let elsewhere = s.scratch.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::remove_dir(s.path("run")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, s.path("run")).unwrap();
    let err = chroot_script_cmd(&s.env, "true")
        .output(&LogSink::default())
        .unwrap_err();
    assert!(
        err.tail
            .iter()
            .any(|l| l.contains("is a symlink; refusing to mount over it")),
        "{err}"
    );
    assert!(mounts_below(&elsewhere).is_empty());
});

ns_test!(cap_setfcap_is_dropped_in_the_chroot, {
    let test = "cap_setfcap_is_dropped_in_the_chroot";
    let Some(s) = stage(test, "amd64", &[]) else {
        return;
    };
    let out = s.chroot("grep CapBnd /proc/self/status\n");
    let hex = out
        .stdout
        .trim()
        .strip_prefix("CapBnd:")
        .unwrap_or_else(|| panic!("{}", out.stdout))
        .trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SETFCAP: u32 = 31;
    assert_eq!(mask & (1 << CAP_SETFCAP), 0, "CapBnd {hex}");
    assert_ne!(
        mask & (1 << CAP_SYS_ADMIN),
        0,
        "CapBnd {hex}: only SETFCAP goes"
    );
});

ns_test!(uname_machine_follows_the_target, {
    let test = "uname_machine_follows_the_target";
    if std::env::consts::ARCH != "x86_64" {
        return skip(test, "needs an x86_64 host");
    }
    for (arch, machine) in [("amd64", "x86_64"), ("i386", "i686")] {
        let Some(s) = stage(test, arch, &[]) else {
            return;
        };
        assert_eq!(
            s.chroot("uname -m\n").stdout,
            format!("{machine}\n"),
            "{arch}"
        );
    }
});

ns_test!(debconf_values_are_expanded_inside_the_chroot, {
    let test = "debconf_values_are_expanded_inside_the_chroot";
    let Some(s) = stage(test, "amd64", &["LOCALE_DEFAULT=de_DE.UTF-8"]) else {
        return;
    };
    rootfs::write_script(
        s.rootfs(),
        "usr/bin/debconf-set-selections",
        "#!/bin/sh\ncat > /debconf.out\n",
    );
    let content = "# comment\n\
        locales locales/default_environment_locale select ${LOCALE_DEFAULT}\n\
        x x/y string $(cat /etc/hostname)\n";
    s.chroot(&debconf_script(content));
    assert_eq!(
        fs::read_to_string(s.path("debconf.out")).unwrap(),
        format!(
            "# comment\n\
             locales locales/default_environment_locale select de_DE.UTF-8\n\
             x x/y string {HOSTNAME}\n"
        )
    );
});

ns_test!(apt_script_passes_each_word_and_cleans, {
    let test = "apt_script_passes_each_word_and_cleans";
    let Some(s) = stage(test, "amd64", &[]) else {
        return;
    };
    rootfs::write_script(
        s.rootfs(),
        "usr/bin/apt-get",
        "#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done >> /apt.argv\necho \"DEBIAN_FRONTEND=$DEBIAN_FRONTEND\" >> /apt.argv\n",
    );
    s.chroot(&apt_install_script(&["vim", "a b", "$HOME"], false));
    assert_eq!(
        fs::read_to_string(s.path("apt.argv")).unwrap(),
        "[-o]\n[Acquire::Retries=3]\n[-o]\n[Dpkg::Options::=--force-confdef]\n[-o]\n\
         [Dpkg::Options::=--force-confold]\n[install]\n[--no-install-recommends]\n[-y]\n\
         [vim]\n[a b]\n[$HOME]\nDEBIAN_FRONTEND=noninteractive\n[clean]\nDEBIAN_FRONTEND=noninteractive\n"
    );
});

ns_test!(host_script_in_pi_gen_style, {
    let test = "host_script_in_pi_gen_style";
    let Some(s) = stage(test, "amd64", &[]) else {
        return;
    };
    let sub = s.vars.stage_dir.join("00-test");
    fs::create_dir_all(sub.join("files")).unwrap();
    fs::write(sub.join("files/x"), "content of x\n").unwrap();
    fs::write(sub.join("files/key"), "KEY DATA\n").unwrap();
    rootfs::write_script(
        s.rootfs(),
        "usr/bin/fake-key",
        "#!/bin/bash -e\necho \"args: $*\" > /key.out\ncat >> /key.out\n",
    );
    let script = sub.join("00-run.sh");
    fs::write(
        &script,
        r#"#!/bin/bash -e

install -m 644 files/x "${ROOTFS_DIR}/etc/x"

on_chroot << EOF
echo "\$(cat /etc/x) seen by \$(cat /etc/hostname) as ${TARGET_ARCH}" > /etc/y
EOF

on_chroot fake-key add - < files/key
log "100% done"
"#,
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Cmd::new(&script)
        .current_dir(&sub)
        .env_clear()
        .envs(&s.env)
        .output(&LogSink::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fs::read_to_string(s.path("etc/y")).unwrap(),
        format!("content of x seen by {HOSTNAME} as amd64\n")
    );
    assert_eq!(
        fs::read_to_string(s.path("key.out")).unwrap(),
        "args: add -\nKEY DATA\n"
    );
    assert!(out.stdout.ends_with("] 100% done\n"), "{}", out.stdout);
    let log = fs::read_to_string(&s.env["LOG_FILE"]).unwrap();
    assert!(log.ends_with("] 100% done\n"), "{log}");
});

ns_test!(resolv_conf_is_usable_and_replaceable_in_the_chroot, {
    let test = "resolv_conf_is_usable_and_replaceable_in_the_chroot";
    let Some(s) = stage(test, "amd64", &[]) else {
        return;
    };
    let host = s.scratch.path().join("host-resolv.conf");
    fs::write(&host, "nameserver 192.0.2.1\n").unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        s.path("etc/resolv.conf"),
    )
    .unwrap();
    let guard = ResolvConfGuard::install_from(&host, s.rootfs()).unwrap();
    assert_eq!(
        s.chroot("cat /etc/resolv.conf\n").stdout,
        "nameserver 192.0.2.1\n"
    );
    // Scripts may delete and rewrite it (a bind mount would fail with EBUSY here).
    s.chroot("rm /etc/resolv.conf\necho 'nameserver 192.0.2.2' > /etc/resolv.conf\n");
    guard.finish().unwrap();
    assert_eq!(
        fs::read_to_string(s.path("etc/resolv.conf")).unwrap(),
        "nameserver 192.0.2.2\n"
    );

    // Untouched by the stage: the symlink comes back.
    fs::remove_file(s.path("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink("../run/x", s.path("etc/resolv.conf")).unwrap();
    let guard = ResolvConfGuard::install_from(&host, s.rootfs()).unwrap();
    s.chroot("grep -q 192.0.2.1 /etc/resolv.conf\n");
    guard.finish().unwrap();
    assert_eq!(
        fs::read_link(s.path("etc/resolv.conf")).unwrap(),
        PathBuf::from("../run/x")
    );
});

ns_test!(copy_previous_and_bootstrap, {
    let test = "copy_previous_and_bootstrap";
    if !tools_present(test, &["rsync", "capsh", "setarch"]) {
        return;
    }
    let scratch = Scratch::new();
    let base = scratch.path().join("base");
    let work = scratch.path().join("work");
    let config = common::config(
        &base,
        &[
            &format!("WORK_DIR={}", work.display()),
            "TARGET_ARCH=i386",
            "RELEASE=bookworm",
            "APT_PROXY=http://192.0.2.9:3142",
        ],
    );
    let stage0 = StageVars::for_stage(base.join("stages/stage0"), &work);
    let stage1 = StageVars::for_stage(base.join("stages/stage1"), &work).after(&stage0);
    fs::create_dir_all(stage0.rootfs_dir.join("var/cache/apt/archives")).unwrap();
    fs::create_dir_all(&stage1.stage_work_dir).unwrap();
    fs::write(stage0.rootfs_dir.join("a"), "a").unwrap();
    fs::hard_link(stage0.rootfs_dir.join("a"), stage0.rootfs_dir.join("b")).unwrap();
    fs::write(
        stage0.rootfs_dir.join("var/cache/apt/archives/x.deb"),
        "deb",
    )
    .unwrap();
    // A fake debootstrap first on PATH: records what bootstrap gives it.
    let bin = scratch.path().join("bin");
    rootfs::write_script(
        scratch.path(),
        "bin/debootstrap",
        "#!/bin/bash\n\
         echo \"argv: $*\"\n\
         echo \"machine: $(uname -m) proxy: $http_proxy $https_proxy\"\n\
         target=\"${@: -1}\"; case \"$target\" in http*) target=\"${@: -2:1}\";; esac\n\
         if [ -n \"${FAIL:-}\" ]; then\n\
           mkdir -p \"$target/debootstrap\"\n\
           for i in $(seq 1 40); do echo \"line $i\"; done > \"$target/debootstrap/debootstrap.log\"\n\
           echo 'E: Couldn'\\''t find these debs: gnupg' >> \"$target/debootstrap/debootstrap.log\"\n\
           exit 1\n\
         fi\n",
    );
    let process = Env::from([(
        "PATH".to_string(),
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )]);
    let env = script_env(&config, &process, &stage1);
    let bash = |script: &str| {
        Cmd::new("bash")
            .args(["-c", script])
            .env_clear()
            .envs(&env)
            .any_code()
            .output(&LogSink::default())
            .unwrap()
    };

    let out = bash("set -eu; copy_previous");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let root1 = &stage1.rootfs_dir;
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(root1.join("a")).unwrap().ino(),
        fs::metadata(root1.join("b")).unwrap().ino(),
        "hard links kept"
    );
    assert!(!root1.join("var/cache/apt/archives/x.deb").exists());

    let target = scratch.path().join("target");
    let out = bash(&format!(
        "set -eu; bootstrap bookworm {}; echo ok",
        target.display()
    ));
    assert_eq!(
        out.stdout,
        format!(
            "argv: --arch i386 --include gnupg --components main,contrib,non-free,non-free-firmware bookworm {}\n\
             machine: i686 proxy: http://192.0.2.9:3142 http://192.0.2.9:3142\nok\n",
            target.display()
        )
    );
    let out = bash(&format!(
        "set -eu; bootstrap bullseye {} http://mirror.invalid/debian; echo ok",
        target.display()
    ));
    assert!(out.stdout.starts_with(&format!(
        "argv: --arch i386 --include gnupg --components main,contrib,non-free bullseye {} http://mirror.invalid/debian\n",
        target.display()
    )), "{}", out.stdout);

    let out = bash(&format!(
        "set -eu; export FAIL=1; bootstrap bookworm {} && echo unexpected",
        target.display()
    ));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("bootstrap: debootstrap bookworm"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("    E: Couldn't find these debs: gnupg"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("line 10\n"),
        "only the tail: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Directory not empty"),
        "{}",
        out.stderr
    );
    let kept = stage1.stage_work_dir.join("debootstrap.log");
    assert!(out.stdout.contains(&format!(
        "bootstrap failed: please check {}",
        kept.display()
    )));
    assert!(fs::read_to_string(kept).unwrap().ends_with("gnupg\n"));
});

ns_test!(unmount_image_detaches_its_loop_device, {
    let test = "unmount_image_detaches_its_loop_device";
    if !tools_present(test, &["losetup", "mkfs.ext4", "mount"]) {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        return skip(test, "no /dev/loop-control");
    }
    let scratch = Scratch::new();
    let img = scratch.path().join("x.img");
    let mnt = scratch.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("bash")
            .args(["-euc", script, "bash"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    sh("truncate -s 16M \"$1\"; mkfs.ext4 -q \"$1\"");
    let loop_dev = sh("losetup --find --show \"$1\"");
    // Detach even when an assertion below fails.
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(loop_dev.clone());
    sh(&format!(
        "mount {loop_dev} \"$2\"; mkdir -p \"$2/sub\"; mount -t tmpfs tmpfs \"$2/sub\""
    ));
    assert_eq!(mounts_below(&mnt).len(), 2);
    let env = Env::from([(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )])
    .into_iter()
    .chain(pigen::exec::env::bash_functions().unwrap().clone())
    .collect::<Env>();
    let out = Cmd::new("bash")
        .args(["-euc", "unmount_image \"$1\"", "bash"])
        .arg(&img)
        .env_clear()
        .envs(&env)
        .output(&LogSink::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.stderr, "");
    assert!(mounts_below(&mnt).is_empty());
    assert_eq!(
        sh("losetup --noheadings --output NAME --associated \"$1\""),
        ""
    );
});

ns_test!(foreign_arm64_runs_through_binfmt_with_nothing_copied, {
    let test = "foreign_arm64_runs_through_binfmt_with_nothing_copied";
    if let Err(e) = ensure_binfmt(Arch::Arm64) {
        return skip(test, &format!("{e:#}"));
    }
    let Some(s) = stage(test, "arm64", &[]) else {
        return;
    };
    let out = s.chroot("uname -m\ncat /etc/hostname\n");
    assert_eq!(out.stdout, format!("aarch64\n{HOSTNAME}\n"));
    let out = s.host_bash("on_chroot <<< 'echo \"$BASH_VERSION\"'");
    assert!(
        out.stdout.starts_with('5'),
        "real arm64 bash: {}",
        out.stdout
    );
    // Nothing of qemu inside the tree (F flag: the kernel holds the emulator open).
    let out = std::process::Command::new("find")
        .arg(s.rootfs())
        .args(["-xdev", "-name", "qemu*"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
});
