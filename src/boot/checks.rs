//! What `pigen boot` looks at once logged in, how it reads the answers, and how `--expect`
//! turns them into assertions.

use std::fmt;
use std::time::Duration;

use super::console::{Command, CommandResult};

/// One thing checked in the booted system. The order of [`Check::ALL`] is the order they run:
/// `system` waits for the boot to finish, so `rootfs` after it sees a finished first-boot resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    Hostname,
    User,
    Locale,
    Timezone,
    Keymap,
    Ssh,
    System,
    Rootfs,
}

/// How long `systemctl is-system-running --wait` may wait for the boot to finish.
pub const SYSTEM_WAIT: Duration = Duration::from_secs(300);

/// How often and how long the root filesystem size is polled for the first-boot resize.
const ROOTFS_POLLS: u32 = 4;
const ROOTFS_POLL_SECS: u32 = 3;

impl Check {
    pub const ALL: [Check; 8] = [
        Check::Hostname,
        Check::User,
        Check::Locale,
        Check::Timezone,
        Check::Keymap,
        Check::Ssh,
        Check::System,
        Check::Rootfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Hostname => "hostname",
            Check::User => "user",
            Check::Locale => "locale",
            Check::Timezone => "timezone",
            Check::Keymap => "keymap",
            Check::Ssh => "ssh",
            Check::System => "system",
            Check::Rootfs => "rootfs",
        }
    }

    /// A check by name; `root-grown` is another name for `rootfs`.
    pub fn parse(name: &str) -> Option<Check> {
        match name {
            "root-grown" => Some(Check::Rootfs),
            _ => Check::ALL.into_iter().find(|c| c.name() == name),
        }
    }

    /// The shell command. `root_partition_bytes`: size of the root partition in the image,
    /// which a grown root filesystem exceeds.
    pub fn command(self, root_partition_bytes: u64) -> Command {
        let text = match self {
            Check::Hostname => "uname -n".to_string(),
            Check::User => "id -un".to_string(),
            Check::Locale => "cat /etc/default/locale 2>/dev/null || locale".to_string(),
            Check::Timezone => {
                "echo \"link=$(readlink /etc/localtime)\"; echo \"file=$(cat /etc/timezone 2>/dev/null)\""
                    .to_string()
            }
            Check::Keymap => "cat /etc/default/keyboard".to_string(),
            Check::Ssh => "echo \"service=$(systemctl is-enabled ssh.service 2>&1 | head -n 1)\"; \
                 echo \"socket=$(systemctl is-enabled ssh.socket 2>&1 | head -n 1)\""
                .to_string(),
            Check::System => format!(
                "timeout {} systemctl is-system-running --wait; \
                 systemctl list-units --failed --no-legend --plain 2>/dev/null | cut -d' ' -f1",
                SYSTEM_WAIT.as_secs()
            ),
            Check::Rootfs => format!(
                "for i in $(seq {ROOTFS_POLLS}); do s=$(findmnt -n -b -o SIZE /); \
                 [ \"$s\" -gt {root_partition_bytes} ] && break; sleep {ROOTFS_POLL_SECS}; done; echo \"$s\""
            ),
        };
        let timeout = match self {
            Check::System => SYSTEM_WAIT + Duration::from_secs(30),
            Check::Rootfs => Duration::from_secs(u64::from(ROOTFS_POLLS * ROOTFS_POLL_SECS) + 60),
            _ => Duration::from_secs(60),
        };
        Command { text, timeout }
    }

    /// What the answer says.
    pub fn interpret(self, result: &CommandResult, root_partition_bytes: u64) -> Found {
        let Some(rc) = result.rc else {
            return Found {
                value: "(no answer)".into(),
                detail: Some(format!(
                    "the command did not finish in time{}",
                    last_line(&result.output)
                )),
                default: Verdict::Fail,
            };
        };
        let out = result.output.as_str();
        let plain = |value: Option<String>| match value {
            Some(v) if !v.is_empty() => Found::info(v),
            _ => Found {
                value: "unset".into(),
                detail: first_line(out).map(|l| format!("the command said: {l}")),
                default: Verdict::Info,
            },
        };
        match self {
            Check::Hostname | Check::User => {
                if rc == 0 {
                    plain(first_line(out).map(str::to_string))
                } else {
                    plain(None)
                }
            }
            Check::Locale => plain(shell_var(out, "LANG")),
            Check::Keymap => plain(shell_var(out, "XKBLAYOUT")),
            Check::Timezone => {
                let link = shell_var(out, "link").unwrap_or_default();
                let file = shell_var(out, "file").unwrap_or_default();
                let zone = match link.split_once("zoneinfo/") {
                    Some((_, zone)) => zone.to_string(),
                    None if !file.is_empty() => file,
                    None => link,
                };
                plain(Some(zone))
            }
            Check::Ssh => {
                let service = unit_state(&shell_var(out, "service").unwrap_or_default());
                let socket = unit_state(&shell_var(out, "socket").unwrap_or_default());
                let on = |s: &str| matches!(s, "enabled" | "enabled-runtime");
                if on(&service) || on(&socket) {
                    Found::info("enabled".into())
                } else if service == "unknown" {
                    Found {
                        value: service,
                        detail: Some(NO_BUS.into()),
                        default: Verdict::Warn,
                    }
                } else {
                    Found::info(service)
                }
            }
            Check::System if out.contains("Failed to connect to bus") => Found {
                value: "unknown".into(),
                detail: Some(NO_BUS.into()),
                default: Verdict::Warn,
            },
            Check::System => {
                // The state, then the failed units; anything else is noise that got through.
                let lines: Vec<&str> = out
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let at = lines.iter().position(|l| SYSTEM_STATES.contains(l));
                let state = at.map_or("unknown", |i| lines[i]).to_string();
                let failed: Vec<&str> = match at {
                    Some(i) => lines[i + 1..]
                        .iter()
                        .copied()
                        .filter(|l| !l.contains(' '))
                        .collect(),
                    None => Vec::new(),
                };
                let detail = (!failed.is_empty()).then(|| format!("failed: {}", failed.join(" ")));
                let default = match state.as_str() {
                    "running" => Verdict::Pass,
                    "degraded" => Verdict::Warn,
                    _ => Verdict::Fail,
                };
                Found {
                    value: state,
                    detail,
                    default,
                }
            }
            Check::Rootfs => {
                let size: Option<u64> = out.lines().rev().find_map(|l| l.trim().parse().ok());
                match size {
                    Some(size) => Found {
                        value: if size > root_partition_bytes {
                            "grown".into()
                        } else {
                            "not-grown".into()
                        },
                        detail: Some(format!(
                            "{} on /, root partition in the image {}",
                            human(size),
                            human(root_partition_bytes)
                        )),
                        default: Verdict::Info,
                    },
                    None => plain(None),
                }
            }
        }
    }

    /// Whether `found` satisfies `--expect NAME=expected`.
    pub fn matches(self, expected: &str, found: &str) -> bool {
        match self {
            Check::Locale => normalize_locale(expected) == normalize_locale(found),
            Check::Ssh if expected == "disabled" => {
                matches!(found, "disabled" | "masked" | "absent")
            }
            Check::Rootfs => match expected {
                "grown" | "yes" => found == "grown",
                "not-grown" | "not grown" | "no" => found == "not-grown",
                _ => expected == found,
            },
            _ => expected == found,
        }
    }
}

/// What `systemctl is-system-running` can say.
const SYSTEM_STATES: &[&str] = &[
    "initializing",
    "starting",
    "running",
    "degraded",
    "maintenance",
    "stopping",
    "offline",
    "unknown",
];

/// Why systemctl could not answer: without D-Bus in the image only root reaches systemd.
const NO_BUS: &str = "systemctl cannot reach systemd as this user (no D-Bus in the image?)";

/// A unit's state from the first line `systemctl is-enabled UNIT 2>&1` printed: the state
/// word, `absent` for a unit that does not exist, `unknown` when systemd could not be asked.
fn unit_state(line: &str) -> String {
    let line = line.trim();
    if line.contains("Failed to connect to bus") {
        "unknown".into()
    } else if line.is_empty()
        || line.contains("No such file")
        || line.contains("not found")
        || line.contains("not-found")
    {
        "absent".into()
    } else {
        line.to_string()
    }
}

/// `en_GB.UTF-8` and `en_GB.utf8` are the same locale.
fn normalize_locale(s: &str) -> String {
    match s.split_once('.') {
        Some((lang, codeset)) => {
            format!("{lang}.{}", codeset.to_ascii_lowercase().replace('-', ""))
        }
        None => s.to_string(),
    }
}

/// The value of `NAME=value` (quotes removed) in shell-variable style text.
pub fn shell_var(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let value = line.strip_prefix(name)?.strip_prefix('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(value.to_string())
    })
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| format!("; last output: {l}"))
        .unwrap_or_default()
}

/// Sizes in the report: `47 MiB`, `3.7 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    if bytes as f64 >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.0} MiB", bytes as f64 / MIB)
    }
}

/// How a finding counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Printed, not judged.
    Info,
    Pass,
    Warn,
    Fail,
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub detail: Option<String>,
    /// The verdict without an `--expect` for this check.
    pub default: Verdict,
}

impl Found {
    fn info(value: String) -> Found {
        Found {
            value,
            detail: None,
            default: Verdict::Info,
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub check: Check,
    pub found: Found,
    pub expected: Option<String>,
    pub verdict: Verdict,
}

/// Judges `found` against the expectation for its check, if any.
pub fn judge(check: Check, found: Found, expected: Option<&str>) -> Outcome {
    let verdict = match expected {
        Some(want) if check.matches(want, &found.value) => Verdict::Pass,
        Some(_) => Verdict::Fail,
        None => found.default,
    };
    Outcome {
        check,
        found,
        expected: expected.map(str::to_string),
        verdict,
    }
}

/// Parses `--expect NAME=VALUE`.
pub fn parse_expect(arg: &str) -> Result<(Check, String), String> {
    let names = || {
        Check::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((name, value)) = arg.split_once('=') else {
        return Err(format!(
            "--expect {arg:?}: use NAME=VALUE, NAME one of {}",
            names()
        ));
    };
    let check = Check::parse(name.trim()).ok_or_else(|| {
        format!(
            "--expect {arg:?}: no check named {name:?}; use one of {}",
            names()
        )
    })?;
    if value.is_empty() {
        return Err(format!("--expect {arg:?}: the value is empty"));
    }
    Ok((check, value.to_string()))
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.verdict {
            Verdict::Info => "    ",
            Verdict::Pass => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{mark} {:<9} {}", self.check.name(), self.found.value)?;
        match (&self.expected, self.verdict) {
            (Some(want), Verdict::Fail) => write!(f, " (expected {want})")?,
            (Some(_), _) => write!(f, " (as expected)")?,
            _ => {}
        }
        if let Some(detail) = &self.found.detail {
            write!(f, "; {detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(rc: i32, output: &str) -> CommandResult {
        CommandResult {
            rc: Some(rc),
            output: output.into(),
        }
    }

    fn value(check: Check, rc: i32, output: &str) -> String {
        check.interpret(&ran(rc, output), 1 << 30).value
    }

    #[test]
    fn answers_are_read() {
        assert_eq!(value(Check::Hostname, 0, "mybox"), "mybox");
        assert_eq!(value(Check::User, 0, "alice\n"), "alice");
        assert_eq!(
            value(
                Check::Locale,
                0,
                "#  File generated by update-locale\nLANG=\"en_GB.UTF-8\"\n"
            ),
            "en_GB.UTF-8"
        );
        assert_eq!(
            value(Check::Locale, 0, "LANG=\nLANGUAGE=\nLC_CTYPE=\"POSIX\""),
            "unset"
        );
        assert_eq!(
            value(
                Check::Timezone,
                0,
                "link=/usr/share/zoneinfo/Europe/Berlin\nfile=Etc/UTC"
            ),
            "Europe/Berlin"
        );
        assert_eq!(
            value(Check::Timezone, 0, "link=\nfile=Europe/Paris"),
            "Europe/Paris"
        );
        assert_eq!(value(Check::Timezone, 0, "link=\nfile="), "unset");
        assert_eq!(
            value(
                Check::Keymap,
                0,
                "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"de\"\nXKBVARIANT=\"\"\n"
            ),
            "de"
        );
        assert_eq!(
            value(
                Check::Keymap,
                1,
                "cat: /etc/default/keyboard: No such file or directory"
            ),
            "unset"
        );
        assert_eq!(
            value(Check::Ssh, 0, "service=enabled\nsocket=disabled"),
            "enabled"
        );
        assert_eq!(
            value(Check::Ssh, 0, "service=disabled\nsocket=enabled"),
            "enabled"
        );
        assert_eq!(
            value(Check::Ssh, 0, "service=disabled\nsocket=disabled"),
            "disabled"
        );
        assert_eq!(value(Check::Ssh, 0, "service=\nsocket="), "absent");
        assert_eq!(
            value(
                Check::Ssh,
                0,
                "service=Failed to get unit file state for ssh.service: No such file or directory\n\
                 socket=Failed to get unit file state for ssh.socket: No such file or directory"
            ),
            "absent"
        );
        assert_eq!(value(Check::Ssh, 0, "service=masked\nsocket="), "masked");
        let found = Check::Ssh.interpret(
            &ran(
                0,
                "service=Failed to connect to bus: No such file or directory\n\
                 socket=Failed to connect to bus: No such file or directory",
            ),
            0,
        );
        assert_eq!(
            (found.value.as_str(), found.default),
            ("unknown", Verdict::Warn)
        );
    }

    #[test]
    fn system_state_and_failed_units() {
        let found = Check::System.interpret(&ran(0, "running"), 0);
        assert_eq!(
            (found.value.as_str(), found.default),
            ("running", Verdict::Pass)
        );
        let found = Check::System.interpret(&ran(1, "degraded\nfoo.service\nbar.mount\n"), 0);
        assert_eq!(found.value, "degraded");
        assert_eq!(found.default, Verdict::Warn);
        assert_eq!(
            found.detail.as_deref(),
            Some("failed: foo.service bar.mount")
        );
        let found = Check::System.interpret(
            &ran(0, "Failed to connect to bus: No such file or directory"),
            0,
        );
        assert_eq!(
            (found.value.as_str(), found.default),
            ("unknown", Verdict::Warn)
        );
        let found = Check::System.interpret(&ran(0, "Starting foo...\nrunning\n"), 0);
        assert_eq!(found.value, "running");
        let found = Check::System.interpret(&ran(1, "maintenance"), 0);
        assert_eq!(found.default, Verdict::Fail);
        let found = Check::System.interpret(
            &CommandResult {
                rc: None,
                output: "starting".into(),
            },
            0,
        );
        assert_eq!(found.default, Verdict::Fail);
        assert_eq!(
            found.detail.as_deref(),
            Some("the command did not finish in time; last output: starting")
        );
    }

    #[test]
    fn rootfs_growth() {
        let part = 2u64 << 30;
        let found = Check::Rootfs.interpret(&ran(0, "4026531840"), part);
        assert_eq!(found.value, "grown");
        assert_eq!(
            found.detail.as_deref(),
            Some("3.8 GiB on /, root partition in the image 2.0 GiB")
        );
        assert_eq!(
            Check::Rootfs.interpret(&ran(0, "2000000000"), part).value,
            "not-grown"
        );
        let cmd = Check::Rootfs.command(part).text;
        assert!(cmd.contains("-gt 2147483648 ]"), "{cmd}");
    }

    #[test]
    fn expectations() {
        assert!(Check::Locale.matches("en_GB.UTF-8", "en_GB.utf8"));
        assert!(!Check::Locale.matches("en_GB.UTF-8", "en_US.UTF-8"));
        assert!(Check::Ssh.matches("disabled", "absent"));
        assert!(Check::Ssh.matches("disabled", "masked"));
        assert!(!Check::Ssh.matches("enabled", "absent"));
        assert!(Check::Rootfs.matches("grown", "grown"));
        assert!(Check::Rootfs.matches("not grown", "not-grown"));
        assert!(Check::Rootfs.matches("yes", "grown"));
        assert!(!Check::Rootfs.matches("yes", "not-grown"));
        assert_eq!(Check::parse("root-grown"), Some(Check::Rootfs));
        assert!(!Check::Hostname.matches("box", "Box"));

        let found = Check::System.interpret(&ran(1, "degraded"), 0);
        assert_eq!(
            judge(Check::System, found.clone(), None).verdict,
            Verdict::Warn
        );
        assert_eq!(
            judge(Check::System, found, Some("running")).verdict,
            Verdict::Fail
        );
        let outcome = judge(
            Check::Hostname,
            Found::info("pigen-boot-test".into()),
            Some("wrong"),
        );
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert_eq!(
            outcome.to_string(),
            "FAIL hostname  pigen-boot-test (expected wrong)"
        );
        let outcome = judge(
            Check::Timezone,
            Found::info("Etc/UTC".into()),
            Some("Etc/UTC"),
        );
        assert_eq!(outcome.to_string(), "ok   timezone  Etc/UTC (as expected)");
    }

    #[test]
    fn expect_arguments() {
        assert_eq!(
            parse_expect("hostname=mybox"),
            Ok((Check::Hostname, "mybox".into()))
        );
        assert_eq!(
            parse_expect("timezone=America/Argentina/Buenos_Aires"),
            Ok((Check::Timezone, "America/Argentina/Buenos_Aires".into()))
        );
        assert!(parse_expect("hostname")
            .unwrap_err()
            .contains("use NAME=VALUE"));
        let err = parse_expect("host=x").unwrap_err();
        assert!(err.contains("no check named \"host\""), "{err}");
        assert!(err.contains("hostname, user, locale"), "{err}");
        assert!(parse_expect("user=").is_err());
    }
}
