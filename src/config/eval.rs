//! The one impure step of configuration: bash evaluates a fragment and we import its variables.
//!
//! Two bash runs per fragment, both with `--noprofile --norc` and stdin from /dev/null:
//! 1. `bash -n` checks the syntax first. Bash keeps going after a syntax error in a sourced
//!    file (the original build would run with half a config); here it is a config error.
//! 2. A small driver script snapshots every set variable (name and value, NUL-separated, into a
//!    private temporary file), `set -a`, sources the fragment, snapshots again and writes an end
//!    marker. The fragment's stdout is sent to stderr so everything it prints arrives in order
//!    and becomes warnings; the data never shares a stream with it.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Env;
use crate::error::ConfigError;

/// What sourcing a fragment did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sourced {
    /// Variables the fragment set or changed (including ones set to the value they already had
    /// in `env` are NOT reported), name → value.
    pub changed: BTreeMap<String, String>,
    /// Lines the fragment wrote to stdout/stderr, to show the user as warnings.
    pub warnings: Vec<String>,
}

/// Variables bash maintains itself (dynamic, special or describing the shell); never imported
/// from a fragment. The static parser sends files that read or assign them to bash.
pub(crate) fn is_bash_variable(name: &str) -> bool {
    name.starts_with("BASH")
        || name.starts_with("COMP_")
        || matches!(
            name,
            "_" | "COLUMNS"
                | "DIRSTACK"
                | "EPOCHREALTIME"
                | "EPOCHSECONDS"
                | "EUID"
                | "FUNCNAME"
                | "GROUPS"
                | "HISTCMD"
                | "HISTFILE"
                | "HISTFILESIZE"
                | "HISTSIZE"
                | "HOSTTYPE"
                | "IFS"
                | "LINENO"
                | "LINES"
                | "MACHTYPE"
                | "MAILCHECK"
                | "OLDPWD"
                | "OPTARG"
                | "OPTERR"
                | "OPTIND"
                | "OSTYPE"
                | "PIPESTATUS"
                | "PPID"
                | "PS1"
                | "PS2"
                | "PS3"
                | "PS4"
                | "PWD"
                | "RANDOM"
                | "SECONDS"
                | "SHELLOPTS"
                | "SHLVL"
                | "SRANDOM"
                | "UID"
        )
}

/// Names the driver script uses for itself.
const DRIVER_PREFIX: &str = "__pigen_";

/// `$1`: the data file, `$2`: the fragment. `builtin` everywhere so that functions the fragment
/// defines cannot stand in for the commands we rely on afterwards.
const DRIVER: &str = r#"__pigen_dump() {
    builtin local IFS=$' \t\n' __pigen_v
    builtin printf '%s\0' "$1"
    for __pigen_v in $(builtin compgen -v); do
        if [[ -n ${!__pigen_v+set} ]]; then
            builtin printf '%s\0%s\0' "$__pigen_v" "${!__pigen_v}"
        fi
    done
}
exec 1>&2
__pigen_out=$1
__pigen_src=$2
builtin set --
__pigen_dump :before >"$__pigen_out" || builtin exit 90
builtin set -a
builtin source "$__pigen_src"
{ builtin set +aeux; } 2>/dev/null
__pigen_dump :after >>"$__pigen_out"
builtin printf '%s\0' :end >>"$__pigen_out"
"#;

/// Sources `path` in a clean bash (no rc files, environment exactly `env`, `set -a`).
pub fn source_fragment(path: &Path, env: &Env) -> Result<Sourced, ConfigError> {
    let shown = path.display().to_string();
    let given = path_for_bash(path);
    let messages = Messages {
        given: given.to_string_lossy().into_owned(),
        shown: shown.clone(),
    };
    if let Err(e) = std::fs::File::open(path) {
        return Err(ConfigError::new(format!(
            "config file {shown}: cannot read it ({e}); check the path given to -c"
        )));
    }
    let bash = bash_program();
    let run_failed = |e: std::io::Error| {
        ConfigError::new(format!(
            "{shown}: this config needs bash to evaluate it, but {} could not be run ({e}); \
             install bash or keep the config to plain assignments",
            bash.display()
        ))
    };

    // 1. Syntax. extglob only widens what parses, so an error here is an error in any case.
    let check = Command::new(&bash)
        .args(["--noprofile", "--norc", "-O", "extglob", "-n"])
        .arg(&given)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(run_failed)?;
    if !check.status.success() {
        let stderr = String::from_utf8_lossy(&check.stderr);
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("syntax error");
        return Err(ConfigError::new(format!(
            "{}; bash cannot parse the config, fix the syntax there",
            messages.rewrite(first)
        )));
    }

    // 2. Source it between two snapshots.
    let data = TempFile::create().map_err(|e| {
        ConfigError::new(format!(
            "{shown}: cannot create a temporary file in {} to evaluate the config ({e}); \
             set TMPDIR to a writable directory",
            std::env::temp_dir().display()
        ))
    })?;
    let output = Command::new(&bash)
        .args(["--noprofile", "--norc", "-c", DRIVER, "pigen"])
        .arg(&data.path)
        .arg(&given)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(run_failed)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let bytes = std::fs::read(&data.path).map_err(|e| {
        ConfigError::new(format!(
            "{shown}: cannot read back what bash reported ({e})"
        ))
    })?;
    let snapshots = Snapshots::parse(&bytes);

    let Some((before, after)) = snapshots else {
        let status = match output.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        };
        let message = match lines.last() {
            Some(last) if !output.status.success() => {
                format!(
                    "{}; bash stopped sourcing the config there ({status})",
                    messages.rewrite(last)
                )
            }
            _ => format!(
                "{shown}: bash stopped while sourcing the config ({status}); \
                 a config must not call `exit` (or fail under `set -e`)"
            ),
        };
        return Err(ConfigError::new(message));
    };

    let mut changed = BTreeMap::new();
    for (name, value) in after {
        if name.starts_with(DRIVER_PREFIX) || is_bash_variable(&name) {
            continue;
        }
        if before.get(&name) == Some(&value) {
            continue;
        }
        let value = String::from_utf8(value).map_err(|_| {
            ConfigError::new(format!(
                "{shown}: the value of {name} is not valid UTF-8; save the config as UTF-8"
            ))
        })?;
        changed.insert(name, value);
    }
    let warnings = lines.iter().map(|l| messages.rewrite(l)).collect();
    Ok(Sourced { changed, warnings })
}

/// What bash is told to source or check. A name without `/` would make `source` search PATH
/// first, and a name starting with `-` would read as an option: both get `./`.
fn path_for_bash(path: &Path) -> OsString {
    let raw = path.as_os_str().as_encoded_bytes();
    if path.is_absolute() || raw.starts_with(b"./") || raw.starts_with(b"../") {
        path.as_os_str().to_owned()
    } else {
        let mut s = OsString::from("./");
        s.push(path.as_os_str());
        s
    }
}

/// The bash to run: the first `bash` on pigen's own PATH (the fragment's environment may have
/// no PATH at all), else /bin/bash.
fn bash_program() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("bash");
            if let Ok(meta) = std::fs::metadata(&candidate) {
                if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from("/bin/bash")
}

/// Rewrites bash's `FILE: line N: msg` to `FILE:N: msg`; other lines get `FILE: ` in front.
struct Messages {
    /// The path as bash saw it.
    given: String,
    /// The path as the user wrote it.
    shown: String,
}

impl Messages {
    fn rewrite(&self, line: &str) -> String {
        if let Some(rest) = line
            .strip_prefix(&self.given)
            .and_then(|r| r.strip_prefix(": line "))
        {
            if let Some((number, msg)) = rest.split_once(": ") {
                if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
                    return format!("{}:{}: {}", self.shown, number, msg);
                }
            }
        }
        if let Some(msg) = line
            .strip_prefix(&self.given)
            .and_then(|r| r.strip_prefix(": "))
        {
            return format!("{}: {}", self.shown, msg);
        }
        format!("{}: {}", self.shown, line)
    }
}

type Snapshot = BTreeMap<String, Vec<u8>>;

struct Snapshots;

impl Snapshots {
    /// `:before\0 (name\0value\0)* :after\0 (name\0value\0)* :end\0`; `None` unless complete.
    fn parse(bytes: &[u8]) -> Option<(Snapshot, Snapshot)> {
        let mut tokens = bytes.split(|&b| b == 0);
        if tokens.next()? != b":before" {
            return None;
        }
        let before = Self::section(&mut tokens, b":after")?;
        let after = Self::section(&mut tokens, b":end")?;
        Some((before, after))
    }

    fn section<'a>(tokens: &mut impl Iterator<Item = &'a [u8]>, end: &[u8]) -> Option<Snapshot> {
        let mut vars = BTreeMap::new();
        loop {
            let name = tokens.next()?;
            if name == end {
                return Some(vars);
            }
            let value = tokens.next()?;
            vars.insert(String::from_utf8_lossy(name).into_owned(), value.to_vec());
        }
    }
}

/// A private (0600) temporary file, removed on drop: the values may hold passwords.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create() -> std::io::Result<TempFile> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let mut dir = std::env::temp_dir();
        if dir.is_relative() {
            dir = std::env::current_dir()?.join(dir);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("pigen-config-{}-{n}-{nanos:x}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(TempFile { path }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ErrorKind::AlreadyExists.into()))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Writes `text` to a fresh `dir/name` and sources it.
    fn source(text: &str, env: &Env) -> (PathBuf, Result<Sourced, ConfigError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my.cfg");
        std::fs::write(&path, text).unwrap();
        let result = source_fragment(&path, env);
        (path, result, dir)
    }

    fn changed(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reports_new_and_changed_variables_only() {
        let e = env(&[("FROM_ENV", "e"), ("SAME", "s"), ("HOME", "/h")]);
        let text = "A=1\nexport B=\"x y\"\nC=$FROM_ENV-suffix\nFROM_ENV=$FROM_ENV\nSAME=changed\n\
                    D=\"multi\nline ü\"\nE=$(echo sub)\nif true; then F=~; fi\n";
        let (_, result, _dir) = source(text, &e);
        let sourced = result.unwrap();
        assert_eq!(
            sourced.changed,
            changed(&[
                ("A", "1"),
                ("B", "x y"),
                ("C", "e-suffix"),
                ("D", "multi\nline ü"),
                ("E", "sub"),
                ("F", "/h"),
                ("SAME", "changed"),
            ])
        );
        assert_eq!(sourced.warnings, Vec::<String>::new());
    }

    #[test]
    fn unset_and_bash_variables_are_not_reported() {
        let e = env(&[("GONE", "x")]);
        let text = "export DECLARED_ONLY\nunset GONE\ncd /\nX=$RANDOM\n: $SECONDS\nIFS=:\nset -x\nset -u\nset -e\n";
        let (_, result, _dir) = source(text, &e);
        let sourced = result.unwrap();
        assert_eq!(sourced.changed.keys().collect::<Vec<_>>(), ["X"]);
        // `set -x` must not trace the snapshot that follows the fragment.
        assert!(
            sourced.warnings.iter().all(|w| !w.contains("__pigen")),
            "{:?}",
            sourced.warnings
        );
    }

    #[test]
    fn the_environment_is_exactly_env() {
        let e = env(&[("MYVAR", "mine")]);
        let text = "A=$MYVAR\nB=${CARGO_MANIFEST_DIR-absent}\nC=${HOME-nohome}\n";
        let (_, result, _dir) = source(text, &e);
        assert_eq!(
            result.unwrap().changed,
            changed(&[("A", "mine"), ("B", "absent"), ("C", "nohome")])
        );
    }

    #[test]
    fn output_becomes_warnings_in_order() {
        let text =
            "echo hello\necho oops >&2\nA=1\nprintf 'two\\nlines\\n'\nreadonly R=1\nR=2\nfalse\n";
        let (path, result, _dir) = source(text, &Env::new());
        let sourced = result.unwrap();
        let p = path.display();
        assert_eq!(
            sourced.warnings,
            [
                format!("{p}: hello"),
                format!("{p}: oops"),
                format!("{p}: two"),
                format!("{p}: lines"),
                format!("{p}:6: R: readonly variable"),
            ]
        );
        assert_eq!(sourced.changed, changed(&[("A", "1"), ("R", "1")]));
    }

    #[test]
    fn a_fatal_expansion_error_points_at_the_line() {
        let text = "A=1\n\nIMG=${IMG_NAME:?must be set}\nB=2\n";
        let (path, result, _dir) = source(text, &Env::new());
        assert_eq!(
            result.unwrap_err().0,
            [format!(
                "{}:3: IMG_NAME: must be set; bash stopped sourcing the config there (exit status 127)",
                path.display()
            )]
        );
    }

    #[test]
    fn a_syntax_error_is_an_error() {
        let (path, result, _dir) = source("A=1\nB=2;;\nC=3\n", &Env::new());
        assert_eq!(
            result.unwrap_err().0,
            [format!(
                "{}:2: syntax error near unexpected token `;;'; bash cannot parse the config, fix the syntax there",
                path.display()
            )]
        );
        let (path, result, _dir) = source("A=$(date\n", &Env::new());
        let err = result.unwrap_err().0;
        assert_eq!(err.len(), 1);
        assert!(
            err[0].starts_with(&format!("{}:", path.display())),
            "{err:?}"
        );
        assert!(err[0].contains("unexpected EOF"), "{err:?}");
    }

    #[test]
    fn exit_is_an_error() {
        let (path, result, _dir) = source("A=1\nexit 0\n", &Env::new());
        assert_eq!(
            result.unwrap_err().0,
            [format!(
                "{}: bash stopped while sourcing the config (exit status 0); a config must not call `exit` (or fail under `set -e`)",
                path.display()
            )]
        );
        let (path, result, _dir) = source("echo 'IMG_NAME is required' >&2\nexit 3\n", &Env::new());
        assert_eq!(
            result.unwrap_err().0,
            [format!(
                "{}: IMG_NAME is required; bash stopped sourcing the config there (exit status 3)",
                path.display()
            )]
        );
    }

    #[test]
    fn functions_named_like_builtins_do_not_break_the_snapshot() {
        let text = "printf() { :; }\ncompgen() { :; }\nsource() { :; }\nA=1\n";
        let (_, result, _dir) = source(text, &Env::new());
        assert_eq!(result.unwrap().changed, changed(&[("A", "1")]));
    }

    #[test]
    fn missing_file() {
        let err = source_fragment(Path::new("/nonexistent/x.cfg"), &Env::new()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(
            err.0,
            ["config file /nonexistent/x.cfg: cannot read it (No such file or directory (os error 2)); check the path given to -c"]
        );
    }

    #[test]
    fn paths_given_to_bash() {
        assert_eq!(path_for_bash(Path::new("my.cfg")), "./my.cfg");
        assert_eq!(path_for_bash(Path::new("-x.cfg")), "./-x.cfg");
        assert_eq!(path_for_bash(Path::new("dir/my.cfg")), "./dir/my.cfg");
        assert_eq!(path_for_bash(Path::new("./my.cfg")), "./my.cfg");
        assert_eq!(path_for_bash(Path::new("../my.cfg")), "../my.cfg");
        assert_eq!(path_for_bash(Path::new("/etc/my.cfg")), "/etc/my.cfg");
    }

    #[test]
    fn message_rewriting() {
        let m = Messages {
            given: "./my.cfg".into(),
            shown: "my.cfg".into(),
        };
        assert_eq!(
            m.rewrite("./my.cfg: line 12: X: unbound variable"),
            "my.cfg:12: X: unbound variable"
        );
        assert_eq!(
            m.rewrite("./my.cfg: No such file or directory"),
            "my.cfg: No such file or directory"
        );
        assert_eq!(m.rewrite("hello"), "my.cfg: hello");
        assert_eq!(m.rewrite("./my.cfg: line x: y"), "my.cfg: line x: y");
    }

    #[test]
    fn snapshot_format() {
        let bytes = b":before\0A\x001\0:after\0A\x002\0B\0\0:end\0";
        let (before, after) = Snapshots::parse(bytes).unwrap();
        assert_eq!(before.get("A").unwrap(), b"1");
        assert_eq!(after.get("A").unwrap(), b"2");
        assert_eq!(after.get("B").unwrap(), b"");
        assert!(Snapshots::parse(b":before\0A\x001\0").is_none());
        assert!(Snapshots::parse(b":before\0A\x001\0:after\0A\x002\0").is_none());
        assert!(Snapshots::parse(b"").is_none());
    }
}
