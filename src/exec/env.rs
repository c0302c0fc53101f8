//! The environment stage scripts run with: every config variable, the per-stage variables of
//! the original (`STAGE`, `ROOTFS_DIR`, …), and the bash functions of `shell/functions.bash`
//! exported as `BASH_FUNC_<name>%%` entries (what `export -f` produces).
//!
//! The function entries are made by bash itself, once per process: bash sources the embedded
//! library, `export -f`s every function it defines and prints its environment with `env -0`;
//! the `BASH_FUNC_*` entries are read back and cached. That is exactly the text a parent bash
//! would hand its children, so every bash that pigen starts (stage scripts, `bash -c on_chroot`)
//! imports the functions as if `build.sh` had exported them.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::check::{search_path, SYSTEM_TOOL_DIRS};
use crate::config::{Config, Env};
use crate::exec::cmd::{Cmd, LogSink};

/// The bash function library every stage script gets (`log`, `bootstrap`, `copy_previous`,
/// `on_chroot`, `unmount`, `unmount_image`, `print_issue` and their `_pigen_*` helpers).
pub const FUNCTIONS_BASH: &str = include_str!("../../shell/functions.bash");

/// The per-stage variables (`STAGE`, `STAGE_DIR`, …) as the original sets them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageVars {
    pub stage: String,
    pub stage_dir: PathBuf,
    pub stage_work_dir: PathBuf,
    pub rootfs_dir: PathBuf,
    pub prev_stage: Option<String>,
    pub prev_stage_dir: Option<PathBuf>,
    pub prev_rootfs_dir: Option<PathBuf>,
    /// During an export: the exported stage's dir and rootfs.
    pub export_dir: Option<PathBuf>,
    pub export_rootfs_dir: Option<PathBuf>,
    /// Set by `EXPORT_IMAGE` during an export.
    pub img_suffix: Option<String>,
}

impl StageVars {
    /// The variables of stage `stage_dir` in `work_dir`: `STAGE` is the directory's name,
    /// `STAGE_WORK_DIR` = `work_dir/STAGE`, `ROOTFS_DIR` = `STAGE_WORK_DIR/rootfs`; no previous
    /// stage, no export.
    pub fn for_stage(stage_dir: impl Into<PathBuf>, work_dir: &std::path::Path) -> StageVars {
        let stage_dir = stage_dir.into();
        let stage = crate::config::resolve::stage_name(&stage_dir);
        let stage_work_dir = work_dir.join(&stage);
        StageVars {
            rootfs_dir: stage_work_dir.join("rootfs"),
            stage,
            stage_dir,
            stage_work_dir,
            ..StageVars::default()
        }
    }

    /// The same, with `prev` (a stage's variables) as the previous stage.
    pub fn after(mut self, prev: &StageVars) -> StageVars {
        self.prev_stage = Some(prev.stage.clone());
        self.prev_stage_dir = Some(prev.stage_dir.clone());
        self.prev_rootfs_dir = Some(prev.rootfs_dir.clone());
        self
    }
}

/// The environment of a stage script (and of the `bash -c on_chroot` that runs chroot steps):
///
/// * `process_env` (pigen's own environment), then every config variable on top (all of them
///   exported, unlike the original, which needed `export` in the config);
/// * `BASE_DIR`, `SCRIPT_DIR` (`BASE_DIR/scripts`, for scripts that reference it; it need not
///   exist), `STAGE`, `STAGE_DIR`, `STAGE_WORK_DIR`, `ROOTFS_DIR`, and when set `PREV_STAGE`,
///   `PREV_STAGE_DIR`, `PREV_ROOTFS_DIR`, `EXPORT_DIR`, `EXPORT_ROOTFS_DIR`, `IMG_SUFFIX` (unset
///   ones are removed, so nothing stale leaks in from pigen's environment);
/// * `DEBIAN_FRONTEND=noninteractive`, the fixed quilt settings, `LOG_FILE`;
/// * `PATH`: pigen's PATH followed by the sbin/bin directories it lacks (stage scripts run as
///   root and call losetup, mkfs.*, capsh, chroot);
/// * the functions of [`FUNCTIONS_BASH`] as `BASH_FUNC_<name>%%` entries.
///
/// Panics only when bash cannot run the embedded library (bash missing): call
/// [`bash_functions`] first where that should be an error (the build does, at its start).
pub fn script_env(config: &Config, process_env: &Env, stage: &StageVars) -> Env {
    let mut env = config.script_env(process_env);
    let path = |p: &std::path::Path| p.display().to_string();
    let base_dir = path(&config.base_dir);
    env.insert("BASE_DIR".into(), base_dir.clone());
    env.insert("SCRIPT_DIR".into(), path(&config.base_dir.join("scripts")));
    env.insert("STAGE".into(), stage.stage.clone());
    env.insert("STAGE_DIR".into(), path(&stage.stage_dir));
    env.insert("STAGE_WORK_DIR".into(), path(&stage.stage_work_dir));
    env.insert("ROOTFS_DIR".into(), path(&stage.rootfs_dir));
    let mut optional = |name: &str, value: Option<String>| match value {
        Some(v) => {
            env.insert(name.into(), v);
        }
        None => {
            env.remove(name);
        }
    };
    optional("PREV_STAGE", stage.prev_stage.clone());
    optional("PREV_STAGE_DIR", stage.prev_stage_dir.as_deref().map(path));
    optional(
        "PREV_ROOTFS_DIR",
        stage.prev_rootfs_dir.as_deref().map(path),
    );
    optional("EXPORT_DIR", stage.export_dir.as_deref().map(path));
    optional(
        "EXPORT_ROOTFS_DIR",
        stage.export_rootfs_dir.as_deref().map(path),
    );
    if let Some(suffix) = &stage.img_suffix {
        env.insert("IMG_SUFFIX".into(), suffix.clone());
    }
    for (name, value) in [
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("QUILT_NO_DIFF_INDEX", "1"),
        ("QUILT_NO_DIFF_TIMESTAMPS", "1"),
        ("QUILT_REFRESH_ARGS", "-p ab"),
    ] {
        env.insert(name.into(), value.into());
    }
    if config.get("LOG_FILE").is_empty() {
        env.insert("LOG_FILE".into(), path(&config.work_dir.join("build.log")));
    }
    env.insert(
        "PATH".into(),
        script_path(process_env.get("PATH").map(String::as_str)),
    );
    // Functions a parent shell exported would be replaced by ours anyway; drop stale ones.
    env.retain(|k, _| !k.starts_with("BASH_FUNC_"));
    let functions = bash_functions().unwrap_or_else(|e| panic!("the stage script functions: {e}"));
    env.extend(functions.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// `path_var`'s absolute entries, then the directories of [`SYSTEM_TOOL_DIRS`] it lacks.
pub fn script_path(path_var: Option<&str>) -> String {
    let dirs = search_path(path_var.map(std::ffi::OsStr::new));
    debug_assert!(SYSTEM_TOOL_DIRS
        .iter()
        .all(|d| dirs.iter().any(|p| p.as_os_str() == *d)));
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The `BASH_FUNC_<name>%%` entries for every function of [`FUNCTIONS_BASH`], made once by
/// bash (see the module comment) and cached. Errors when bash cannot be run or rejects the
/// library.
pub fn bash_functions() -> Result<&'static Env, String> {
    static FUNCTIONS: OnceLock<Result<Env, String>> = OnceLock::new();
    FUNCTIONS
        .get_or_init(|| export_functions(FUNCTIONS_BASH))
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs bash on `library` and returns the exported function entries it produces.
fn export_functions(library: &str) -> Result<Env, String> {
    // The library comes in as $1 (no temporary file); everything it defines is exported.
    const EXPORTER: &str = r#"eval "$1" || exit 1
for f in $(compgen -A function); do export -f "$f"; done
exec env -0"#;
    let out = Cmd::new("bash")
        .args(["--noprofile", "--norc", "-c", EXPORTER, "bash", library])
        .env_clear()
        .env("PATH", SYSTEM_TOOL_DIRS.join(":"))
        .output(&LogSink::default())
        .map_err(|e| e.to_string())?;
    if !out.stderr.is_empty() {
        return Err(format!(
            "bash printed errors for shell/functions.bash:\n{}",
            out.stderr
        ));
    }
    let functions: Env = out
        .stdout
        .split('\0')
        .filter(|entry| entry.starts_with("BASH_FUNC_"))
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if functions.is_empty() {
        return Err("bash exported no functions from shell/functions.bash".into());
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{config_at, process_env};

    /// The names every stage script may call (reference §3.11, the non-qcow2 part).
    const PUBLIC: &[&str] = &[
        "log",
        "bootstrap",
        "copy_previous",
        "on_chroot",
        "unmount",
        "unmount_image",
        "print_issue",
    ];

    fn stage(dir: &tempfile::TempDir) -> StageVars {
        let work = dir.path().join("work");
        StageVars::for_stage(dir.path().join("stages/stage1"), &work).after(&StageVars::for_stage(
            dir.path().join("stages/stage0"),
            &work,
        ))
    }

    fn env_in(dir: &tempfile::TempDir, vars: &[(&str, &str)]) -> Env {
        std::fs::create_dir_all(dir.path().join("stages/stage0")).unwrap();
        let mut all = vec![
            ("WORK_DIR", dir.path().join("work").display().to_string()),
            ("TARGET_ARCH", "amd64".to_string()),
        ];
        all.extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
        let vars: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = config_at(dir.path(), &vars);
        script_env(&config, &process_env(), &stage(dir))
    }

    fn bash(env: &Env, script: &str) -> crate::exec::cmd::CmdOutput {
        Cmd::new("bash")
            .args(["-c", script])
            .env_clear()
            .envs(env)
            .output(&LogSink::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_public_function_is_exported_in_bash_form() {
        let functions = bash_functions().unwrap();
        for name in PUBLIC {
            let value = functions
                .get(&format!("BASH_FUNC_{name}%%"))
                .unwrap_or_else(|| panic!("{name} missing: {:?}", functions.keys()));
            assert!(value.starts_with("() {  "), "{name}: {value:?}");
            assert!(value.ends_with('}'), "{name}: {value:?}");
        }
        assert!(functions.contains_key("BASH_FUNC__pigen_mount_at%%"));
    }

    #[test]
    fn a_child_bash_sees_the_functions_and_log_keeps_percent_signs() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(&dir, &[]);
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let out = bash(
            &env,
            "set -eu; type on_chroot | head -n1; log hi; log '100% done %s %T'",
        );
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "on_chroot is a function");
        let stamp = |l: &str| {
            let b = l.as_bytes();
            b.len() > 11 && b[0] == b'[' && b[3] == b':' && b[6] == b':' && b[9] == b']'
        };
        assert!(
            stamp(lines[1]) && lines[1].ends_with("] hi"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("] 100% done %s %T"), "{}", lines[2]);
        let logged = std::fs::read_to_string(dir.path().join("work/build.log")).unwrap();
        assert_eq!(logged, format!("{}\n{}\n", lines[1], lines[2]));
    }

    #[test]
    fn stage_and_fixed_variables() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(
            &dir,
            &[("MY_OWN", "x y"), ("LOCALE_DEFAULT", "de_DE.UTF-8")],
        );
        let base = dir.path().display().to_string();
        let work = format!("{base}/work");
        let expect = [
            ("BASE_DIR", base.clone()),
            ("SCRIPT_DIR", format!("{base}/scripts")),
            ("STAGE", "stage1".into()),
            ("STAGE_DIR", format!("{base}/stages/stage1")),
            ("STAGE_WORK_DIR", format!("{work}/stage1")),
            ("ROOTFS_DIR", format!("{work}/stage1/rootfs")),
            ("PREV_STAGE", "stage0".into()),
            ("PREV_STAGE_DIR", format!("{base}/stages/stage0")),
            ("PREV_ROOTFS_DIR", format!("{work}/stage0/rootfs")),
            ("DEBIAN_FRONTEND", "noninteractive".into()),
            ("QUILT_NO_DIFF_INDEX", "1".into()),
            ("QUILT_NO_DIFF_TIMESTAMPS", "1".into()),
            ("QUILT_REFRESH_ARGS", "-p ab".into()),
            ("LOG_FILE", format!("{work}/build.log")),
            ("MY_OWN", "x y".into()),
            ("LOCALE_DEFAULT", "de_DE.UTF-8".into()),
            ("TARGET_ARCH", "amd64".into()),
            (
                "PATH",
                "/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin".into(),
            ),
        ];
        for (name, value) in expect {
            assert_eq!(env.get(name), Some(&value), "{name}");
        }
        for absent in ["EXPORT_DIR", "EXPORT_ROOTFS_DIR"] {
            assert!(!env.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn unset_stage_variables_do_not_leak_from_the_process_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("stages/stage0")).unwrap();
        let config = config_at(dir.path(), &[]);
        let mut process = process_env();
        process.insert("PREV_ROOTFS_DIR".into(), "/stale".into());
        process.insert("BASH_FUNC_stale%%".into(), "() {  true\n}".into());
        let mut vars = StageVars::for_stage(dir.path().join("stages/stage0"), &config.work_dir);
        vars.export_dir = Some(dir.path().join("stages/stage2"));
        vars.img_suffix = Some("-lite".into());
        let env = script_env(&config, &process, &vars);
        assert!(!env.contains_key("PREV_ROOTFS_DIR"));
        assert!(!env.contains_key("BASH_FUNC_stale%%"));
        assert_eq!(env["IMG_SUFFIX"], "-lite");
        assert_eq!(
            env["EXPORT_DIR"],
            dir.path().join("stages/stage2").display().to_string()
        );
    }

    #[test]
    fn path_keeps_the_callers_order_and_adds_sbin_once() {
        assert_eq!(
            script_path(Some("/sbin:/opt/x/bin:relative:/usr/bin")),
            "/sbin:/opt/x/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/bin"
        );
        assert_eq!(
            script_path(None),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
    }

    #[test]
    fn functions_work_under_set_u_and_fail_with_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = env_in(&dir, &[]);
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        env.remove("PREV_ROOTFS_DIR");
        let out = Cmd::new("bash")
            .args([
                "-euc",
                "copy_previous || echo status=$?; unmount / || echo status=$?; bootstrap x || echo status=$?",
            ])
            .env_clear()
            .envs(&env)
            .output(&LogSink::default())
            .unwrap();
        assert_eq!(out.stdout, "status=1\nstatus=1\nstatus=2\n");
        assert_eq!(
            out.stderr,
            "Previous stage rootfs not found\n\
             unmount: refusing to unmount everything below /\n\
             bootstrap: usage: bootstrap SUITE TARGET [MIRROR [DEBOOTSTRAP-OPTION...]]\n"
        );
    }

    #[test]
    fn print_issue_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(
            &dir,
            &[
                ("IMG_DATE", "2026-01-02"),
                ("PI_GEN", "pigen"),
                ("PI_GEN_REPO", "https://example.org/pigen"),
                ("GIT_HASH", "abc123"),
                ("CUSTOM_NAME", "MyOS"),
                ("CUSTOM_VERSION", "7"),
            ],
        );
        let rootfs = PathBuf::from(&env["ROOTFS_DIR"]);
        let doc = rootfs.join("usr/share/doc/raspberrypi-kernel");
        std::fs::create_dir_all(&doc).unwrap();
        std::fs::write(
            doc.join("changelog.Debian"),
            "raspberrypi-firmware (1:1.2) bookworm; urgency=medium\n\n  * firmware as of 0123abcd\n  * firmware as of ffff\n",
        )
        .unwrap();
        Cmd::new("gzip")
            .arg(doc.join("changelog.Debian"))
            .output(&LogSink::default())
            .unwrap();
        // A fake dpkg on PATH: print_issue's package list comes from `dpkg -l --root`.
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let dpkg = bin.join("dpkg");
        std::fs::write(&dpkg, "#!/bin/sh\necho \"dpkg $*\"\n").unwrap();
        std::fs::set_permissions(&dpkg, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut env = env;
        let path = format!("{}:{}", bin.display(), env["PATH"]);
        env.insert("PATH".into(), path);
        let out = bash(&env, "set -euo pipefail; print_issue stage2");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            out.stdout,
            format!(
                "GNU/Linux 2026-01-02 UTC\nMyOS version 7\n\
                 Generated using pigen {version}, https://example.org/pigen, abc123, stage2\n\n\
                 Firmware: https://github.com/raspberrypi/firmware/tree/0123abcd\n\n\
                 Packages:\ndpkg -l --root {}\n",
                rootfs.display()
            )
        );
    }
}
