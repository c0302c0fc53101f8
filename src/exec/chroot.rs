//! Running steps inside a stage's root filesystem.
//!
//! Every chroot step goes through the bash function `on_chroot` of `shell/functions.bash`, as
//! in pi-gen, so `NN-run-chroot.sh` files, debconf selections and package installs see exactly
//! what stage scripts calling `on_chroot` themselves see (mounts, `capsh --drop=cap_setfcap`,
//! `bash -e`, locale variables, the 32-bit personality for armhf/i386):
//!
//! * [`chroot_script_cmd`] runs a script through `on_chroot` (script on stdin);
//! * [`debconf_script`] and [`apt_install_script`] build the scripts for `NN-debconf` and
//!   `NN-packages*` (pure, golden-tested);
//! * [`ResolvConfGuard`] gives the chroot the host's name resolution for the length of a stage
//!   and takes it away again;
//! * [`ensure_binfmt`] makes sure a foreign `TARGET_ARCH` runs through qemu-user.

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::check::{
    binfmt_action, emulation_report, BinfmtAction, HostPaths, HostProbe, Status, BINFMT_DIR,
};
use crate::cli::shell_quote;
use crate::config::{Arch, Env};
use crate::exec::cmd::{Cmd, LogSink};

/// `bash -e -c on_chroot` with `script` on stdin and exactly `env` as its environment (a
/// [`script_env`](crate::exec::env::script_env), which carries `on_chroot` itself and
/// `ROOTFS_DIR`): how the executor runs `NN-run-chroot.sh`, debconf and package steps. The
/// caller adds a working directory if it wants one and runs it with its log.
pub fn chroot_script_cmd(env: &Env, script: &str) -> Cmd {
    Cmd::new("bash")
        .args(["-e", "-c", "on_chroot"])
        .env_clear()
        .envs(env)
        .stdin(script.as_bytes().to_vec())
}

/// The chroot script for an `NN-debconf` file: its content fed to `debconf-set-selections`
/// through an **unquoted** here-document, so bash inside the chroot expands `${LOCALE_DEFAULT}`
/// and the like, as pi-gen does. Trailing newlines are dropped (pi-gen embedded the file with
/// `$(cat …)`). The delimiter is pi-gen's `SELEOF`, lengthened until no line of the content
/// can end the document early.
pub fn debconf_script(content: &str) -> String {
    let body = content.trim_end_matches('\n');
    let mut delimiter = String::from("SELEOF");
    while body.contains(&delimiter) {
        delimiter.push('_');
    }
    if body.is_empty() {
        format!("debconf-set-selections <<{delimiter}\n{delimiter}\n")
    } else {
        format!("debconf-set-selections <<{delimiter}\n{body}\n{delimiter}\n")
    }
}

/// The chroot script installing `packages` (the words of a package list, each passed to apt as
/// one argument), then emptying apt's cache. `recommends` = false adds
/// `--no-install-recommends`. Unlike pi-gen, `Acquire::Retries` is apt's real option name.
pub fn apt_install_script<S: AsRef<str>>(packages: &[S], recommends: bool) -> String {
    let mut line = String::from(
        "apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install",
    );
    if !recommends {
        line.push_str(" --no-install-recommends");
    }
    line.push_str(" -y");
    for package in packages {
        line.push(' ');
        line.push_str(&shell_quote(package.as_ref()));
    }
    format!("{line}\napt-get clean\n")
}

// ----------------------------------------------------------------------------------------------
// resolv.conf

/// What `ROOTFS_DIR/etc/resolv.conf` was when the stage started.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Original {
    /// No file (or the host's own content, which must not stay in the image).
    Absent,
    File {
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A symlink (often dangling, e.g. systemd-resolved's `../run/systemd/resolve/stub-resolv.conf`).
    Symlink(PathBuf),
    /// Something pigen does not touch: `etc` is a symlink, or `resolv.conf` a directory.
    Unmanaged,
}

/// For the length of a stage, `ROOTFS_DIR/etc/resolv.conf` holds a copy of the host's
/// `/etc/resolv.conf`, so apt and scripts inside the chroot resolve names.
///
/// A copy, not a bind mount: stage scripts delete or replace that file, which fails with EBUSY
/// on a mount point. At the end of the stage ([`finish`](Self::finish), or when dropped, e.g.
/// on an error) the original state comes back — no file, a file with its content, mode and
/// owner, or a (possibly dangling) symlink — unless a script put different content there in
/// the meantime, which is then kept. A copy of the host's file that debootstrap left behind is
/// removed too (the stage started without one). The image never keeps the host's resolv.conf.
///
/// Every change is made without following symlinks inside the root filesystem: the file is
/// written under a temporary name in `etc` and renamed over the old one, and a root whose
/// `etc` is a symlink is left alone.
#[derive(Debug)]
pub struct ResolvConfGuard {
    etc: PathBuf,
    /// The host's content; `None` (missing, unreadable or empty): nothing to provide.
    host: Option<Vec<u8>>,
    original: Original,
    finished: bool,
}

const RESOLV_CONF: &str = "resolv.conf";

impl ResolvConfGuard {
    /// Installs the host's `/etc/resolv.conf` into `rootfs`.
    pub fn install(rootfs: &Path) -> anyhow::Result<ResolvConfGuard> {
        ResolvConfGuard::install_from(Path::new("/etc/resolv.conf"), rootfs)
    }

    /// The same with `host_file` as the host's resolv.conf (followed if it is a symlink).
    pub fn install_from(host_file: &Path, rootfs: &Path) -> anyhow::Result<ResolvConfGuard> {
        let host = match fs::read(host_file) {
            Ok(content) if !content.is_empty() => Some(content),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read it ({e}); stage scripts will run without name resolution",
                    host_file.display()
                );
                None
            }
        };
        let etc = rootfs.join("etc");
        let original = match fs::symlink_metadata(&etc) {
            Err(e) if e.kind() == ErrorKind::NotFound => Original::Absent,
            Err(e) => return Err(e).with_context(|| format!("{}", etc.display())),
            Ok(meta) if !meta.is_dir() => Original::Unmanaged,
            Ok(_) => read_original(&etc, host.as_deref())?,
        };
        let guard = ResolvConfGuard {
            etc,
            host,
            original,
            finished: false,
        };
        if let Some(host) = &guard.host {
            if guard.original != Original::Unmanaged && guard.etc.is_dir() {
                replace_file(&guard.etc, RESOLV_CONF, host, 0o644, None)?;
            }
        }
        Ok(guard)
    }

    /// Restores the original state (see the type's description), reporting failures.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.finished = true;
        self.restore()
    }

    fn restore(&self) -> anyhow::Result<()> {
        let Some(host) = &self.host else {
            return Ok(());
        };
        if self.original == Original::Unmanaged
            || !fs::symlink_metadata(&self.etc).is_ok_and(|m| m.is_dir())
        {
            return Ok(());
        }
        let path = self.etc.join(RESOLV_CONF);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                if read_nofollow(&path)? != *host {
                    return Ok(()); // a script wrote its own: keep it
                }
            }
            _ => return Ok(()), // removed or replaced by a script: keep that
        }
        match &self.original {
            Original::Absent => {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
            }
            Original::File {
                content,
                mode,
                uid,
                gid,
            } => replace_file(&self.etc, RESOLV_CONF, content, *mode, Some((*uid, *gid))),
            Original::Symlink(target) => {
                let tmp = self.etc.join(".resolv.conf.pigen-tmp");
                remove_if_exists(&tmp)?;
                std::os::unix::fs::symlink(target, &tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                fs::rename(&tmp, &path).with_context(|| format!("restoring {}", path.display()))
            }
            Original::Unmanaged => Ok(()),
        }
    }
}

impl Drop for ResolvConfGuard {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.restore() {
                tracing::warn!(
                    "could not restore {}: {e:#}",
                    self.etc.join(RESOLV_CONF).display()
                );
            }
        }
    }
}

fn read_original(etc: &Path, host: Option<&[u8]>) -> anyhow::Result<Original> {
    let path = etc.join(RESOLV_CONF);
    let meta = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Original::Absent),
        Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path).with_context(|| format!("{}", path.display()))?;
        return Ok(Original::Symlink(target));
    }
    if !meta.is_file() {
        return Ok(Original::Unmanaged);
    }
    let content = read_nofollow(&path)?;
    if Some(content.as_slice()) == host {
        // The host's file, left by debootstrap or an older build: it must not stay.
        return Ok(Original::Absent);
    }
    Ok(Original::File {
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

fn read_nofollow(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut content)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(content)
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes `dir/name` as a new regular file (temporary name + rename, so a symlink at `name` is
/// replaced, never followed).
fn replace_file(
    dir: &Path,
    name: &str,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.pigen-tmp"));
    let path = dir.join(name);
    remove_if_exists(&tmp)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", tmp.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", tmp.display()))?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    drop(file);
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

// ----------------------------------------------------------------------------------------------
// Foreign architectures.

/// Makes sure this host runs `arch` binaries, for a chroot that contains no emulator: nothing
/// to do for a native target or when an enabled qemu handler with the F flag is registered.
/// Otherwise, when the emulator is installed, registers it (mounting binfmt_misc first if
/// needed) from its binfmt.d file or with `update-binfmts --enable`. Anything else (emulator
/// not installed, a handler without the F flag) is an error naming the exact fix, worded as
/// `pigen check` words it.
pub fn ensure_binfmt(arch: Arch) -> anyhow::Result<()> {
    ensure_binfmt_in(&HostPaths::system(), arch)
}

/// [`ensure_binfmt`] on the host described by `paths` (tests use a fake tree).
pub fn ensure_binfmt_in(paths: &HostPaths, arch: Arch) -> anyhow::Result<()> {
    let mut done: Vec<BinfmtAction> = Vec::new();
    loop {
        let probe = HostProbe::for_emulation(paths, arch);
        let action = binfmt_action(arch, &probe);
        if action == BinfmtAction::Ready {
            return Ok(());
        }
        if action == BinfmtAction::Manual || done.contains(&action) {
            bail!(emulation_problem(arch, &probe, &done));
        }
        apply_binfmt_action(paths, &action)?;
        done.push(action);
    }
}

fn apply_binfmt_action(paths: &HostPaths, action: &BinfmtAction) -> anyhow::Result<()> {
    let dir = paths.under(BINFMT_DIR);
    match action {
        BinfmtAction::Mount => {
            tracing::info!("mounting binfmt_misc at {}", dir.display());
            Cmd::new("mount")
                .args([OsStr::new("-t"), OsStr::new("binfmt_misc")])
                .arg("binfmt_misc")
                .arg(&dir)
                .output(&LogSink::default())?;
        }
        BinfmtAction::Enable { handler } => {
            tracing::info!("enabling binfmt_misc handler {handler}");
            fs::write(dir.join(handler), "1")
                .with_context(|| format!("echo 1 > {}", dir.join(handler).display()))?;
        }
        BinfmtAction::Register { line, from } => {
            tracing::info!("registering binfmt_misc handler from {}", from.display());
            fs::write(dir.join("register"), line).with_context(|| {
                format!(
                    "registering {} (cat {} > {}/register)",
                    line,
                    from.display(),
                    dir.display()
                )
            })?;
        }
        BinfmtAction::UpdateBinfmts { name } => {
            tracing::info!("update-binfmts --enable {name}");
            Cmd::new("update-binfmts")
                .args(["--enable", name])
                .output(&LogSink::default())?;
        }
        BinfmtAction::Ready | BinfmtAction::Manual => {}
    }
    Ok(())
}

fn emulation_problem(arch: Arch, probe: &HostProbe, done: &[BinfmtAction]) -> String {
    let mut text = format!(
        "TARGET_ARCH={} needs qemu-user emulation on this {} host, and it is not ready:",
        arch.as_str(),
        probe.machine
    );
    for row in emulation_report(arch, probe).rows {
        if matches!(row.status, Status::Ok | Status::Info) {
            continue;
        }
        text.push_str(&format!("\n  {}: {}", row.name, row.detail));
        if let Some(fix) = row.fix {
            text.push_str(&format!("\n    fix: {fix}"));
        }
    }
    if !done.is_empty() {
        text.push_str(&format!("\n  (pigen tried: {done:?})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debconf_script_golden() {
        let content = "# comment\nlocales\tlocales/default_environment_locale\tselect\t${LOCALE_DEFAULT}\nkeyboard-configuration keyboard-configuration/xkb-keymap select ${KEYBOARD_KEYMAP}\n\n";
        assert_eq!(
            debconf_script(content),
            "debconf-set-selections <<SELEOF\n\
             # comment\n\
             locales\tlocales/default_environment_locale\tselect\t${LOCALE_DEFAULT}\n\
             keyboard-configuration keyboard-configuration/xkb-keymap select ${KEYBOARD_KEYMAP}\n\
             SELEOF\n"
        );
        assert_eq!(
            debconf_script(""),
            "debconf-set-selections <<SELEOF\nSELEOF\n"
        );
        // Content holding the delimiter cannot end the document early.
        assert_eq!(
            debconf_script("a\nSELEOF\nSELEOF_ x\n"),
            "debconf-set-selections <<SELEOF__\na\nSELEOF\nSELEOF_ x\nSELEOF__\n"
        );
    }

    #[test]
    fn debconf_script_expands_in_bash_like_pi_gen() {
        let script = debconf_script("pkg q select ${LOCALE_DEFAULT} $(echo sub) \\$HOME\nSELEOF\n");
        let script = script.replace("debconf-set-selections", "cat");
        let out = Cmd::new("bash")
            .args(["-e", "-c", &script])
            .env_clear()
            .env("LOCALE_DEFAULT", "de_DE.UTF-8")
            .output(&LogSink::default())
            .unwrap();
        assert_eq!(out.stdout, "pkg q select de_DE.UTF-8 sub $HOME\nSELEOF\n");
    }

    #[test]
    fn apt_install_script_golden() {
        assert_eq!(
            apt_install_script(&["vim", "locales", "foo+bar", "x;rm", "$HOME"], false),
            "apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --no-install-recommends -y vim locales foo+bar 'x;rm' '$HOME'\napt-get clean\n"
        );
        assert_eq!(
            apt_install_script(&[String::from("locales")], true),
            "apt-get -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install -y locales\napt-get clean\n"
        );
    }

    #[test]
    fn chroot_script_cmd_runs_on_chroot_with_the_script_on_stdin() {
        let env = Env::from([("ROOTFS_DIR".to_string(), "/r".to_string())]);
        let cmd = chroot_script_cmd(&env, "echo hi\n");
        assert_eq!(cmd.display(), "bash -e -c on_chroot");
        // The same environment through a stand-in on_chroot proves stdin and env arrive.
        let mut env = env;
        env.insert(
            "BASH_FUNC_on_chroot%%".into(),
            "() {  echo \"root=$ROOTFS_DIR args=$#\"; cat\n}".into(),
        );
        let out = chroot_script_cmd(&env, "echo hi\n")
            .output(&LogSink::default())
            .unwrap();
        assert_eq!(out.stdout, "root=/r args=0\necho hi\n");
    }

    // ------------------------------------------------------------------------------------------
    // ResolvConfGuard

    struct Setup {
        dir: tempfile::TempDir,
    }

    const HOST: &str = "nameserver 192.0.2.53\n";

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("rootfs/etc")).unwrap();
            fs::write(dir.path().join("host-resolv.conf"), HOST).unwrap();
            Setup { dir }
        }
        fn host(&self) -> PathBuf {
            self.dir.path().join("host-resolv.conf")
        }
        fn rootfs(&self) -> PathBuf {
            self.dir.path().join("rootfs")
        }
        fn target(&self) -> PathBuf {
            self.rootfs().join("etc/resolv.conf")
        }
        fn guard(&self) -> ResolvConfGuard {
            ResolvConfGuard::install_from(&self.host(), &self.rootfs()).unwrap()
        }
        fn content(&self) -> Option<String> {
            let meta = fs::symlink_metadata(self.target()).ok()?;
            assert!(meta.is_file(), "{:?}", meta.file_type());
            Some(fs::read_to_string(self.target()).unwrap())
        }
        fn etc_listing(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.rootfs().join("etc"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn resolv_absent_is_provided_then_removed() {
        let s = Setup::new();
        let guard = s.guard();
        assert_eq!(s.content().as_deref(), Some(HOST));
        assert_eq!(
            fs::metadata(s.target()).unwrap().permissions().mode() & 0o777,
            0o644
        );
        guard.finish().unwrap();
        assert_eq!(s.content(), None);
        assert!(s.etc_listing().is_empty(), "{:?}", s.etc_listing());
    }

    #[test]
    fn resolv_existing_file_is_restored_with_mode() {
        let s = Setup::new();
        fs::write(s.target(), "nameserver 10.0.0.1\n").unwrap();
        fs::set_permissions(s.target(), fs::Permissions::from_mode(0o640)).unwrap();
        let guard = s.guard();
        assert_eq!(s.content().as_deref(), Some(HOST));
        guard.finish().unwrap();
        assert_eq!(s.content().as_deref(), Some("nameserver 10.0.0.1\n"));
        assert_eq!(
            fs::metadata(s.target()).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(s.etc_listing(), ["resolv.conf"]);
    }

    #[test]
    fn resolv_dangling_symlink_is_replaced_then_restored() {
        let s = Setup::new();
        let link = "../run/systemd/resolve/stub-resolv.conf";
        std::os::unix::fs::symlink(link, s.target()).unwrap();
        let guard = s.guard();
        assert_eq!(s.content().as_deref(), Some(HOST));
        drop(guard); // an error path: Drop restores too
        assert_eq!(fs::read_link(s.target()).unwrap(), PathBuf::from(link));
        assert_eq!(s.etc_listing(), ["resolv.conf"]);
    }

    #[test]
    fn resolv_symlink_to_a_host_file_is_never_followed() {
        let s = Setup::new();
        let outside = s.dir.path().join("outside.conf");
        fs::write(&outside, "outside\n").unwrap();
        std::os::unix::fs::symlink(&outside, s.target()).unwrap();
        let guard = s.guard();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "outside\n");
        guard.finish().unwrap();
        assert_eq!(fs::read_link(s.target()).unwrap(), outside);
        assert_eq!(fs::read_to_string(&outside).unwrap(), "outside\n");
    }

    #[test]
    fn resolv_written_by_a_script_is_kept() {
        let s = Setup::new();
        std::os::unix::fs::symlink("../run/x", s.target()).unwrap();
        let guard = s.guard();
        fs::remove_file(s.target()).unwrap();
        fs::write(s.target(), "nameserver 1.1.1.1\n").unwrap();
        guard.finish().unwrap();
        assert_eq!(s.content().as_deref(), Some("nameserver 1.1.1.1\n"));

        // Deleted by a script: stays deleted.
        let s = Setup::new();
        fs::write(s.target(), "mine\n").unwrap();
        let guard = s.guard();
        fs::remove_file(s.target()).unwrap();
        guard.finish().unwrap();
        assert_eq!(s.content(), None);
    }

    #[test]
    fn resolv_copied_in_by_debootstrap_is_stripped() {
        // Stage 0: no etc yet; debootstrap creates it and copies the host's file in.
        let s = Setup::new();
        fs::remove_dir(s.rootfs().join("etc")).unwrap();
        let guard = s.guard();
        assert!(!s.rootfs().join("etc").exists());
        fs::create_dir(s.rootfs().join("etc")).unwrap();
        fs::write(s.target(), HOST).unwrap();
        guard.finish().unwrap();
        assert_eq!(s.content(), None);

        // A host copy left in an earlier stage's image: removed as well.
        let s = Setup::new();
        fs::write(s.target(), HOST).unwrap();
        s.guard().finish().unwrap();
        assert_eq!(s.content(), None);
    }

    #[test]
    fn resolv_without_host_file_or_with_symlinked_etc_touches_nothing() {
        let s = Setup::new();
        fs::write(s.target(), "mine\n").unwrap();
        let guard =
            ResolvConfGuard::install_from(&s.dir.path().join("missing"), &s.rootfs()).unwrap();
        assert_eq!(s.content().as_deref(), Some("mine\n"));
        guard.finish().unwrap();
        assert_eq!(s.content().as_deref(), Some("mine\n"));

        let s = Setup::new();
        let real_etc = s.dir.path().join("real-etc");
        fs::create_dir(&real_etc).unwrap();
        fs::remove_dir(s.rootfs().join("etc")).unwrap();
        std::os::unix::fs::symlink(&real_etc, s.rootfs().join("etc")).unwrap();
        s.guard().finish().unwrap();
        assert_eq!(fs::read_dir(&real_etc).unwrap().count(), 0);
    }

    // ------------------------------------------------------------------------------------------
    // binfmt

    #[test]
    fn native_targets_need_no_binfmt() {
        let machine = nix::sys::utsname::uname().unwrap();
        let machine = machine.machine().to_string_lossy().into_owned();
        for arch in [Arch::Amd64, Arch::I386, Arch::Arm64, Arch::Armhf] {
            if arch.runs_natively_on(&machine) {
                // A fake host with no binfmt_misc at all: still fine.
                let fake = tempfile::tempdir().unwrap();
                let paths = HostPaths {
                    root: fake.path().to_path_buf(),
                    tool_dirs: vec![],
                };
                ensure_binfmt_in(&paths, arch).unwrap();
            }
        }
    }

    #[test]
    fn missing_emulator_is_an_error_with_the_fix() {
        let machine = nix::sys::utsname::uname().unwrap();
        let machine = machine.machine().to_string_lossy().into_owned();
        let Some(foreign) = [Arch::Arm64, Arch::Amd64]
            .into_iter()
            .find(|a| !a.runs_natively_on(&machine))
        else {
            return;
        };
        let fake = tempfile::tempdir().unwrap();
        fs::create_dir_all(fake.path().join("proc/sys/fs/binfmt_misc")).unwrap();
        fs::write(
            fake.path().join("proc/sys/fs/binfmt_misc/status"),
            "enabled",
        )
        .unwrap();
        let paths = HostPaths {
            root: fake.path().to_path_buf(),
            tool_dirs: vec![],
        };
        let err = ensure_binfmt_in(&paths, foreign).unwrap_err().to_string();
        let qemu = foreign.qemu_name();
        assert!(
            err.starts_with(&format!(
                "TARGET_ARCH={} needs qemu-user emulation on this {machine} host, and it is not ready:\n  qemu-{qemu}: no binfmt_misc handler for {} ({qemu}) is registered\n    fix: install the emulator (apt-get install -y ",
                foreign.as_str(),
                foreign.as_str()
            )),
            "{err}"
        );
    }

    #[test]
    fn registration_from_a_binfmt_d_file_in_a_fake_tree() {
        let machine = nix::sys::utsname::uname().unwrap();
        let machine = machine.machine().to_string_lossy().into_owned();
        if Arch::Arm64.runs_natively_on(&machine) {
            return;
        }
        let fake = tempfile::tempdir().unwrap();
        let binfmt = fake.path().join("proc/sys/fs/binfmt_misc");
        fs::create_dir_all(&binfmt).unwrap();
        fs::write(binfmt.join("status"), "enabled").unwrap();
        let confd = fake.path().join("usr/lib/binfmt.d");
        fs::create_dir_all(&confd).unwrap();
        let line =
            ":qemu-aarch64:M::\\x7fELF:\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OCPF";
        fs::write(
            confd.join("qemu-aarch64.conf"),
            format!("# comment\n{line}\n"),
        )
        .unwrap();
        let bin = fake.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("qemu-aarch64-static"), "").unwrap();
        fs::set_permissions(
            bin.join("qemu-aarch64-static"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let paths = HostPaths {
            root: fake.path().to_path_buf(),
            tool_dirs: vec![bin],
        };
        // The fake kernel never lists the handler, so the second round reports the failure.
        let err = ensure_binfmt_in(&paths, Arch::Arm64)
            .unwrap_err()
            .to_string();
        assert_eq!(fs::read_to_string(binfmt.join("register")).unwrap(), line);
        assert!(err.contains("pigen tried: [Register"), "{err}");
    }

    #[test]
    fn this_hosts_foreign_handler_when_registered() {
        // On a host where pigen check passes for arm64 this must succeed without changes.
        let probe = HostProbe::for_emulation(&HostPaths::system(), Arch::Arm64);
        if binfmt_action(Arch::Arm64, &probe) == BinfmtAction::Ready {
            ensure_binfmt(Arch::Arm64).unwrap();
        } else {
            eprintln!("skipped: no enabled arm64 binfmt handler with the F flag on this host");
        }
    }
}
