//! `pigen build` for real (root): a two-stage tree on a tiny busybox + bash root filesystem,
//! every step kind, both storage backends, resume after SIGKILL, Ctrl-C and SIGTERM — and after
//! each run, nothing of the build left: no mount, loop device or helper process.
//! pigen isolates itself (its own mount + PID namespaces), so these tests run it directly.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Scratch;

/// Skips (with the reason printed) unless this machine can run builds.
fn can_build(test: &str) -> bool {
    if !common::is_root() {
        common::skip(test, "needs root");
        return false;
    }
    for tool in [
        "quilt",
        "capsh",
        "qemu-img",
        "qemu-storage-daemon",
        "debugfs",
        "rsync",
    ] {
        if common::which(tool).is_none() {
            common::skip(
                test,
                &format!("{tool} is not installed (tests/run installs it)"),
            );
            return false;
        }
    }
    if !Path::new("/dev/fuse").exists() || !Path::new("/dev/loop-control").exists() {
        common::skip(test, "no /dev/fuse or /dev/loop-control");
        return false;
    }
    true
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_exec(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A BASE_DIR with a template root filesystem and a stage tree written in the original's style.
struct Tree {
    scratch: Scratch,
}

impl Tree {
    fn new(store: &str) -> Tree {
        let scratch = Scratch::new();
        let dir = scratch.path();
        let template = dir.join("template");
        common::rootfs::host_tree(&template, "template-host").expect("template tree");
        // Fake apt-get and debconf-set-selections that record what they were given.
        write_exec(
            &template.join("usr/bin/apt-get"),
            "#!/bin/sh\necho \"$*\" >> /var/log/apt-args\n",
        );
        write_exec(
            &template.join("usr/bin/debconf-set-selections"),
            "#!/bin/sh\ncat >> /var/log/debconf-in\n",
        );
        std::fs::create_dir_all(template.join("var/log")).unwrap();
        write(&template.join("etc/motd"), "hello\n");

        let base = dir.join("base");
        let stages = base.join("stages");
        // stage0: "bootstrap" by copying the template (what debootstrap would do).
        write_exec(
            &stages.join("stage0/prerun.sh"),
            "#!/bin/bash -e\ncp -a \"${TEMPLATE}/.\" \"${ROOTFS_DIR}/\"\n",
        );
        write_exec(
            &stages.join("stage0/00-base/00-run.sh"),
            "#!/bin/bash -e\necho stage0 > \"${ROOTFS_DIR}/etc/stage0\"\n",
        );
        // stage1: every step kind.
        write_exec(
            &stages.join("stage1/prerun.sh"),
            "#!/bin/bash -e\n\nif [ ! -d \"${ROOTFS_DIR}\" ]; then\n\tcopy_previous\nfi\n",
        );
        let sub = stages.join("stage1/00-configure");
        write(
            &sub.join("00-debconf"),
            "# comment\nlocales locales/default_environment_locale select ${LOCALE_DEFAULT}\n",
        );
        write(&sub.join("00-packages"), "foo bar # the first two\nbaz\n");
        write(&sub.join("00-packages-nr"), "nr-one\n");
        write(&sub.join("00-patches/series"), "01-motd.diff\n");
        write(
            &sub.join("00-patches/01-motd.diff"),
            "--- a/rootfs/etc/motd\n+++ b/rootfs/etc/motd\n@@ -1 +1 @@\n-hello\n+patched\n",
        );
        write(&sub.join("files/greeting"), "hi there\n");
        write_exec(
            &sub.join("00-run.sh"),
            "#!/bin/bash -e\n\ninstall -m 644 files/greeting \"${ROOTFS_DIR}/etc/greeting\"\nlog \"100% of ${STAGE} done\"\non_chroot << EOF\necho \"${TARGET_HOSTNAME}\" > /etc/hostname-from-heredoc\nEOF\n",
        );
        write(
            &sub.join("00-run-chroot.sh"),
            "echo \"in chroot $(cat /etc/hostname)\" > /etc/from-chroot\n",
        );
        write(
            &sub.join("01-run.sh"),
            "#!/bin/bash -e\necho should-not-run > \"${ROOTFS_DIR}/etc/not-executable\"\n",
        );
        write(
            &base.join("build.cfg"),
            &format!(
                "IMG_NAME=buildtest\nTARGET_RASPI=0\nTARGET_ARCH=amd64\nTARGET_HOSTNAME=builder\nSTAGE_LIST=\"stage0 stage1\"\nSTAGE_STORE={store}\nBASE_QCOW2_SIZE=1G\nTEMPLATE={}\n",
                template.display()
            ),
        );
        Tree { scratch }
    }

    fn base(&self) -> PathBuf {
        self.scratch.path().join("base")
    }

    fn work(&self) -> PathBuf {
        self.base().join("work/buildtest")
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pigen"));
        cmd.arg("build")
            .arg("-c")
            .arg(self.base().join("build.cfg"))
            .args(extra)
            .current_dir(self.base());
        cmd
    }

    fn build(&self, extra: &[&str]) -> Output {
        self.command(extra).stdin(Stdio::null()).output().unwrap()
    }

    /// A file of `stage`'s finished root, read without mounting anything.
    fn read(&self, stage: &str, path: &str) -> Option<String> {
        let dir_root = self.work().join(stage).join("rootfs");
        let image = self.work().join(format!("image-{stage}.qcow2"));
        if !image.exists() {
            return std::fs::read_to_string(dir_root.join(path.trim_start_matches('/'))).ok();
        }
        let raw = self.scratch.path().join(format!("{stage}.raw"));
        let status = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&image)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(status.success());
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(&raw)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&raw);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        (!err.contains("File not found")).then_some(text)
    }

    /// Whatever the build could have left behind on the host.
    fn leftovers(&self) -> Vec<String> {
        let dir = self.scratch.path().display().to_string();
        let mut found = Vec::new();
        for mp in common::mounts_below(self.scratch.path()) {
            found.push(format!("mount {}", mp.display()));
        }
        for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
            let backing = entry.path().join("loop/backing_file");
            if let Ok(file) = std::fs::read_to_string(&backing) {
                if file.contains(&dir) {
                    found.push(format!(
                        "loop device {} on {}",
                        entry.file_name().to_string_lossy(),
                        file.trim()
                    ));
                }
            }
        }
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&dir)
                    && !cmdline.contains("cargo")
                    && entry.file_name() != "self"
                {
                    found.push(format!(
                        "process {}: {}",
                        entry.file_name().to_string_lossy(),
                        cmdline
                    ));
                }
            }
        }
        found
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.work().join("build.log")).unwrap_or_default()
    }
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn two_stage_build(store: &str) {
    let tree = Tree::new(store);
    let out = tree.build(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree.leftovers(), Vec::<String>::new());

    assert_eq!(
        tree.read("stage0", "/etc/stage0").as_deref(),
        Some("stage0\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/stage0").as_deref(),
        Some("stage0\n"),
        "stage1 builds on stage0"
    );
    assert_eq!(
        tree.read("stage0", "/etc/greeting"),
        None,
        "stage1's changes stay in stage1"
    );
    assert_eq!(
        tree.read("stage1", "/etc/greeting").as_deref(),
        Some("hi there\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/motd").as_deref(),
        Some("patched\n"),
        "quilt patch applied"
    );
    assert_eq!(
        tree.read("stage1", "/etc/hostname-from-heredoc").as_deref(),
        Some("builder\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/from-chroot").as_deref(),
        Some("in chroot template-host\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/not-executable"),
        None,
        "non-executable run.sh is skipped"
    );
    let debconf = tree.read("stage1", "/var/log/debconf-in").unwrap();
    assert_eq!(
        debconf,
        "# comment\nlocales locales/default_environment_locale select en_US.UTF-8\n"
    );
    let apt = tree.read("stage1", "/var/log/apt-args").unwrap();
    let opts = "-o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --no-install-recommends -y";
    assert_eq!(
        apt,
        format!("{opts} nr-one\nclean\n{opts} foo bar baz\nclean\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/resolv.conf"),
        None,
        "the host's resolv.conf is not left in the image"
    );

    let log = tree.log();
    for line in [
        "Begin stage1/00-configure/00-debconf",
        "End stage1/00-configure/00-run-chroot.sh",
        "] 100% of stage1 done",
    ] {
        assert!(log.contains(line), "build.log lacks {line:?}:\n{log}");
    }
    assert!(log.contains("Skip stage1/00-configure/01-run.sh"), "{log}");
}

#[test]
fn two_stage_build_qcow2() {
    if can_build("two_stage_build_qcow2") {
        two_stage_build("qcow2");
    }
}

#[test]
fn two_stage_build_dir() {
    if can_build("two_stage_build_dir") {
        two_stage_build("dir");
    }
}

#[test]
fn failing_step_reports_step_command_tail_and_log() {
    if !can_build("failing_step_reports_step_command_tail_and_log") {
        return;
    }
    let tree = Tree::new("qcow2");
    write(
        &tree
            .base()
            .join("stages/stage1/00-configure/00-run-chroot.sh"),
        "echo preparing\necho 'something broke' >&2\nexit 3\n",
    );
    let out = tree.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pigen: error: step stage1/00-configure/00-run-chroot.sh failed"),
        "{err}"
    );
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("    something broke"), "{err}");
    assert!(
        err.contains(&format!(
            "full log: {}",
            tree.work().join("build.log").display()
        )),
        "{err}"
    );
    assert!(err.contains("--continue"), "{err}");
    assert_eq!(tree.leftovers(), Vec::<String>::new());
}

/// Starts a build whose stage1 hangs in a chroot step; returns once that step runs.
fn start_hanging_build(tree: &Tree) -> Child {
    write(
        &tree
            .base()
            .join("stages/stage1/00-configure/00-run-chroot.sh"),
        "echo waiting; sleep 120\n",
    );
    use std::os::unix::process::CommandExt;
    let child = tree
        .command(&[])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !tree
        .log()
        .contains("Begin stage1/00-configure/00-run-chroot.sh")
    {
        assert!(
            Instant::now() < deadline,
            "the build never reached the hanging step:\n{}",
            tree.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn wait_for_no_leftovers(tree: &Tree) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = tree.leftovers();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigkill_leaves_nothing_and_continue_finishes() {
    if !can_build("sigkill_leaves_nothing_and_continue_finishes") {
        return;
    }
    let tree = Tree::new("qcow2");
    let mut child = start_hanging_build(&tree);
    child.kill().unwrap(); // SIGKILL of the pigen the user started
    child.wait().unwrap();
    wait_for_no_leftovers(&tree);

    write(
        &tree
            .base()
            .join("stages/stage1/00-configure/00-run-chroot.sh"),
        "echo resumed > /etc/from-chroot\n",
    );
    let out = tree.build(&["--continue"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(tree.log().contains("Reuse stage0"), "{}", tree.log());
    assert_eq!(
        tree.read("stage1", "/etc/from-chroot").as_deref(),
        Some("resumed\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/motd").as_deref(),
        Some("patched\n"),
        "the half-built layer was rebuilt"
    );
    wait_for_no_leftovers(&tree);
}

#[test]
fn ctrl_c_stops_cleans_up_and_exits_130() {
    if !can_build("ctrl_c_stops_cleans_up_and_exits_130") {
        return;
    }
    let tree = Tree::new("qcow2");
    let child = start_hanging_build(&tree);
    // What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interrupted by SIGINT") && err.contains("build --continue"),
        "{err}"
    );
    wait_for_no_leftovers(&tree);
}

#[test]
fn sigterm_stops_and_cleans_up() {
    if !can_build("sigterm_stops_and_cleans_up") {
        return;
    }
    let tree = Tree::new("qcow2");
    let child = start_hanging_build(&tree);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    wait_for_no_leftovers(&tree);
}

#[test]
fn skipped_stage_without_image_stops_before_any_work() {
    if !can_build("skipped_stage_without_image_stops_before_any_work") {
        return;
    }
    let tree = Tree::new("qcow2");
    let out = tree.build(&["--set", "SKIP_STAGE_LIST=stage0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stage stage0 is skipped but")
            && err.contains("image-stage0.qcow2 does not exist"),
        "{err}"
    );
    assert!(!tree.work().join("image-stage1.qcow2").exists());
}

#[test]
fn skipping_a_built_stage_reuses_it() {
    if !can_build("skipping_a_built_stage_reuses_it") {
        return;
    }
    let tree = Tree::new("qcow2");
    assert!(tree.build(&[]).status.success());
    write_exec(
        &tree.base().join("stages/stage1/00-configure/00-run.sh"),
        "#!/bin/bash -e\necho second > \"${ROOTFS_DIR}/etc/second\"\n",
    );
    let out = tree.build(&["--set", "SKIP_STAGE_LIST=stage0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        tree.read("stage1", "/etc/second").as_deref(),
        Some("second\n")
    );
    assert_eq!(
        tree.read("stage1", "/etc/stage0").as_deref(),
        Some("stage0\n")
    );
}

#[test]
fn export_makes_a_raspberry_pi_image_and_deploys_it() {
    if !can_build("export_makes_a_raspberry_pi_image_and_deploys_it") {
        return;
    }
    for tool in ["sfdisk", "mkfs.fat", "mcopy", "sha256sum"] {
        if common::which(tool).is_none() {
            common::skip(
                "export_makes_a_raspberry_pi_image_and_deploys_it",
                &format!("{tool} missing"),
            );
            return;
        }
    }
    let tree = Tree::new("qcow2");
    let base = tree.base();
    let stages = base.join("stages");
    // The Raspberry Pi boot files and an fstab with placeholders, as stage trees write them.
    write_exec(
        &stages.join("stage1/01-boot/00-run.sh"),
        "#!/bin/bash -e\nmkdir -p \"${ROOTFS_DIR}/boot/firmware\"\necho 'console=serial0,115200 root=ROOTDEV rootwait' > \"${ROOTFS_DIR}/boot/firmware/cmdline.txt\"\necho 'arm_64bit=1' > \"${ROOTFS_DIR}/boot/firmware/config.txt\"\nprintf 'proc /proc proc defaults 0 0\\nBOOTDEV /boot/firmware vfat defaults 0 2\\nROOTDEV / ext4 defaults,noatime 0 1\\n' > \"${ROOTFS_DIR}/etc/fstab\"\n",
    );
    write(
        &stages.join("stage1/EXPORT_IMAGE"),
        "IMG_SUFFIX=\"-test\"\nEXPORT_ONLY_VAR=from-fragment\n",
    );
    write(
        &stages.join("export-image/00-finalise/00-run-chroot.sh"),
        "echo \"exported ${EXPORT_ONLY_VAR}\" > /etc/exported\n",
    );
    let out = tree.build(&[
        "--set",
        "TARGET_RASPI=1",
        "--set",
        "DEPLOY_COMPRESSION=none",
        "--set",
        "IMG_FILENAME=fx",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree.leftovers(), Vec::<String>::new());

    let deploy = base.join("deploy/fx");
    let mut names: Vec<String> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "fx-test.img",
            "fx-test.info",
            "fx-test.root-ext4.img"
        ]
    );
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&deploy)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", text(&sums));

    // The stage itself is unchanged: the export worked on a copy.
    assert_eq!(tree.read("stage1", "/etc/exported"), None);
    let image = deploy.join("fx-test.img");
    let table = Command::new("sfdisk")
        .arg("--json")
        .arg(&image)
        .output()
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[1]["type"], "83");
    let disk_id = table["partitiontable"]["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();
    // Boot files on the FAT partition, with the root's PARTUUID.
    let fat = format!(
        "{}@@{}",
        image.display(),
        parts[0]["start"].as_u64().unwrap() * 512
    );
    let cmdline = Command::new("mtype")
        .args(["-i", &fat, "::cmdline.txt"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline.stdout);
    assert!(
        cmdline.contains(&format!("root=PARTUUID={disk_id}-02")),
        "cmdline.txt: {cmdline}"
    );
    // The root partition, as deployed separately, carries the export's changes.
    let root = deploy.join("fx-test.root-ext4.img");
    let cat = |path: &str| {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(&root)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cat("/etc/exported"), "exported from-fragment\n");
    assert!(
        cat("/etc/fstab").contains(&format!("PARTUUID={disk_id}-02 / ext4")),
        "{}",
        cat("/etc/fstab")
    );
    let info = std::fs::read_to_string(deploy.join("fx-test.info")).unwrap();
    assert!(info.contains("Generated using pigen"), "{info}");
    assert!(info.contains("stage1"), "{info}");
}

#[test]
fn sigkill_during_apt_install_then_continue_matches_a_clean_build() {
    if !can_build("sigkill_during_apt_install_then_continue_matches_a_clean_build") {
        return;
    }
    let clean = Tree::new("qcow2");
    assert!(clean.build(&[]).status.success());
    let clean_apt = clean.read("stage1", "/var/log/apt-args").unwrap();

    let tree = Tree::new("qcow2");
    // The fake apt-get hangs while /hang exists (made in the template of this tree only).
    let template = tree.scratch.path().join("template");
    write_exec(
        &template.join("usr/bin/apt-get"),
        "#!/bin/sh\nwhile [ -e /hang ]; do sleep 0.2; done\necho \"$*\" >> /var/log/apt-args\n",
    );
    write(&template.join("hang"), "");
    use std::os::unix::process::CommandExt;
    let mut child = tree
        .command(&[])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !tree
        .log()
        .contains("Begin stage1/00-configure/00-packages-nr")
    {
        assert!(
            Instant::now() < deadline,
            "never reached the apt step:\n{}",
            tree.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for_no_leftovers(&tree);

    // stage0 (and with it /hang) is finished and reused; stage1 is rebuilt from it.
    let out = tree.build(&["--continue", "--set", "TARGET_HOSTNAME=other"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a changed configuration is refused: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--continue: the configuration changed")
            && err.contains("TARGET_HOSTNAME: \"builder\" → \"other\""),
        "{}",
        text(&out)
    );
    std::fs::remove_file(template.join("hang")).unwrap();
    // The template is copied by stage0's prerun, so the hang marker is in stage0's image:
    // remove it through a stage1 step that runs before the packages.
    write(
        &tree
            .base()
            .join("stages/stage1/00-configure/00-run-chroot.sh"),
        "echo \"in chroot $(cat /etc/hostname)\" > /etc/from-chroot\n",
    );
    write_exec(
        &tree.base().join("stages/stage1/prerun.sh"),
        "#!/bin/bash -e\nrm -f \"${ROOTFS_DIR}/hang\"\n",
    );
    let out = tree.build(&["--continue"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(tree.log().contains("Reuse stage0"), "{}", tree.log());
    assert_eq!(
        tree.read("stage1", "/var/log/apt-args").unwrap(),
        clean_apt,
        "same packages as a clean build"
    );
    wait_for_no_leftovers(&tree);
}
