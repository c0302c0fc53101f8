//! Driving a serial console: log in, make sure a shell answers, run commands, power off.
//!
//! [`Session`] is a state machine over the byte stream of the console. It never reads a clock
//! or a socket itself: the caller hands it what arrived (possibly nothing) and the time since
//! the start, and sends whatever bytes [`Session::step`] returns. That keeps it testable with
//! canned transcripts.
//!
//! The protocol, in order:
//!
//! 1. wait for `login:` (a silent console gets an Enter now and then, which makes getty print
//!    its prompt again); boot failures that need no more waiting (kernel panic, emergency mode,
//!    the initramfs shell) end the session at once;
//! 2. after a short pause (getty flushes its input when it starts) type the user name, wait for
//!    `Password:`, type the password;
//! 3. type `echo PIGEN''-READY-$$` until `PIGEN-READY-<digits>` comes back: the shell runs.
//!    Prompts are never guessed; the quotes keep the echo of the typed line from matching;
//! 4. each command as `echo PIGEN''-BEGIN-<n>; { <command>; } 2>&1; echo PIGEN''-RC-<n>-$?`:
//!    its output is what lies between `PIGEN-BEGIN-<n>` and `PIGEN-RC-<n>-`, its exit code
//!    follows the latter. A command that does not finish in its time gets a Ctrl-C;
//! 5. power off (`sudo -n poweroff`, else `systemctl poweroff`); when neither is allowed the
//!    shell prints `PIGEN-NOPOWEROFF` and the caller stops the machine itself.
//!
//! What arrives is cleaned before matching: ANSI escape sequences (colours, cursor movement,
//! bracketed-paste switches), carriage returns and other control characters go; kernel and
//! systemd status lines are removed from command output.

use std::time::Duration;

/// Strips terminal escape sequences and control characters from a byte stream, keeping
/// newlines and tabs. Sequences split across chunks are handled.
#[derive(Clone, Debug, Default)]
pub struct AnsiStripper {
    state: Escape,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    Text,
    /// After ESC.
    Esc,
    /// ESC followed by intermediate bytes (`ESC ( B`).
    EscIntermediate,
    /// Control sequence: `ESC [` parameters, intermediates, final byte.
    Csi,
    /// Operating system command: `ESC ]` … BEL or `ESC \`.
    Osc,
    OscEsc,
}

impl AnsiStripper {
    /// Appends the printable part of `bytes` to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            self.state = match (self.state, b) {
                (Escape::Text, 0x1b) => Escape::Esc,
                (Escape::Text, b'\n' | b'\t') => {
                    out.push(b);
                    Escape::Text
                }
                (Escape::Text, b) if b < 0x20 || b == 0x7f => Escape::Text,
                (Escape::Text, b) => {
                    out.push(b);
                    Escape::Text
                }
                (Escape::Esc, b'[') => Escape::Csi,
                (Escape::Esc, b']') => Escape::Osc,
                (Escape::Esc, 0x20..=0x2f) => Escape::EscIntermediate,
                (Escape::Esc, _) => Escape::Text,
                (Escape::EscIntermediate, 0x20..=0x2f) => Escape::EscIntermediate,
                (Escape::EscIntermediate, _) => Escape::Text,
                (Escape::Csi, 0x40..=0x7e) => Escape::Text,
                (Escape::Csi, _) => Escape::Csi,
                (Escape::Osc, 0x07) => Escape::Text,
                (Escape::Osc, 0x1b) => Escape::OscEsc,
                (Escape::Osc, _) => Escape::Osc,
                (Escape::OscEsc, b'\\') => Escape::Text,
                (Escape::OscEsc, _) => Escape::Osc,
            };
        }
    }
}

/// The printable text of a whole transcript (for the tail printed on failure).
pub fn clean(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    AnsiStripper::default().push(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// One command for the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub text: String,
    pub timeout: Duration,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    /// `None`: it did not finish in its time (and got a Ctrl-C).
    pub rc: Option<i32>,
    /// stdout and stderr, kernel and systemd status lines removed, trailing newlines trimmed.
    pub output: String,
}

/// Timings of the protocol.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Pause between seeing a prompt and typing.
    pub settle: Duration,
    /// A console silent this long while waiting for `login:` gets an Enter.
    pub nudge_after: Duration,
    /// No `Password:` this long after the user name: start over with an Enter.
    pub password_prompt: Duration,
    /// After the password: wait this long before the first ready probe.
    pub after_password: Duration,
    /// Between ready probes.
    pub probe_every: Duration,
    /// No answer to the probes this long after the password: give up.
    pub shell_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            settle: Duration::from_millis(1000),
            nudge_after: Duration::from_secs(30),
            password_prompt: Duration::from_secs(30),
            after_password: Duration::from_secs(2),
            probe_every: Duration::from_secs(10),
            shell_timeout: Duration::from_secs(120),
        }
    }
}

/// Where the session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for `login:`.
    Boot,
    /// `login:` seen at the given time; the user name goes out after [`Timing::settle`].
    LoginPrompt(Duration),
    /// User name typed at the given time; waiting for `Password:`.
    User(Duration),
    /// `Password:` seen at the given time.
    PasswordPrompt(Duration),
    /// Password typed at the given time; waiting for the shell.
    Password(Duration),
    /// Waiting for the ready marker; the last probe went out at the given time.
    Ready(Duration),
    /// Command `next` goes out after a short pause (so the shell's prompt comes first and the
    /// transcript stays readable), counted from the given time.
    Pause { next: usize, since: Duration },
    /// Running command `index`, typed at the given time.
    Running { index: usize, since: Duration },
    /// Everything ran and the power-off command went out.
    Done,
    /// The session cannot go on.
    Failed(String),
}

/// Times at which the milestones were reached (since the start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Milestones {
    pub login_prompt: Option<Duration>,
    pub shell: Option<Duration>,
    pub commands_done: Option<Duration>,
}

/// Console output that ends a boot: no login prompt will come.
const BOOT_FAILURES: &[(&str, &str)] = &[
    ("Kernel panic - not syncing", "the kernel panicked"),
    ("You are in emergency mode", "systemd is in emergency mode"),
    (
        "Give root password for maintenance",
        "systemd is in emergency mode",
    ),
    (
        "Cannot open access to console, the root account is locked",
        "systemd is in emergency mode (root account locked)",
    ),
    (
        "Dropping to a shell!",
        "the initramfs did not find the root filesystem and dropped to its shell",
    ),
];

/// The line typed to power off; prints the marker when neither way is allowed.
pub const POWEROFF: &str =
    "sudo -n poweroff 2>/dev/null || systemctl poweroff 2>/dev/null || echo PIGEN''-NOPOWEROFF";

/// The login-and-run state machine.
#[derive(Clone, Debug)]
pub struct Session {
    user: String,
    password: String,
    commands: Vec<Command>,
    timing: Timing,
    phase: Phase,
    stripper: AnsiStripper,
    /// Cleaned text not yet consumed by a match.
    text: Vec<u8>,
    last_output: Duration,
    last_nudge: Option<Duration>,
    results: Vec<CommandResult>,
    milestones: Milestones,
    password_sent: Option<Duration>,
    poweroff_refused: bool,
}

/// Cleaned text kept while waiting (a booting system prints a lot before `login:`).
const KEEP_WHILE_WAITING: usize = 64 * 1024;
/// Cleaned text kept while a command runs.
const KEEP_WHILE_RUNNING: usize = 1024 * 1024;

impl Session {
    pub fn new(user: &str, password: &str, commands: Vec<Command>, timing: Timing) -> Session {
        Session {
            user: user.to_string(),
            password: password.to_string(),
            commands,
            timing,
            phase: Phase::Boot,
            stripper: AnsiStripper::default(),
            text: Vec::new(),
            last_output: Duration::ZERO,
            last_nudge: None,
            results: Vec::new(),
            milestones: Milestones::default(),
            password_sent: None,
            poweroff_refused: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn results(&self) -> &[CommandResult] {
        &self.results
    }

    pub fn milestones(&self) -> &Milestones {
        &self.milestones
    }

    /// Whether the shell said it may not power off (the caller stops the machine).
    pub fn poweroff_refused(&self) -> bool {
        self.poweroff_refused
    }

    /// Takes what arrived on the console (may be empty) at time `now` and returns what to type.
    pub fn step(&mut self, input: &[u8], now: Duration) -> Vec<u8> {
        if !input.is_empty() {
            self.stripper.push(input, &mut self.text);
            self.last_output = now;
        }
        let mut out = Vec::new();
        // Several transitions can happen on one chunk (a prompt and the marker after it).
        loop {
            let before = self.phase.clone();
            self.advance(now, &mut out);
            if self.phase == before {
                break;
            }
        }
        let keep = match self.phase {
            Phase::Running { .. } => KEEP_WHILE_RUNNING,
            _ => KEEP_WHILE_WAITING,
        };
        if self.text.len() > keep {
            self.text.drain(..self.text.len() - keep);
        }
        out
    }

    fn advance(&mut self, now: Duration, out: &mut Vec<u8>) {
        match self.phase.clone() {
            Phase::Boot => {
                if let Some(why) = self.boot_failure() {
                    self.phase = Phase::Failed(why);
                } else if self.take_through(b"login:") {
                    self.milestones.login_prompt.get_or_insert(now);
                    self.phase = Phase::LoginPrompt(now);
                } else if now.saturating_sub(self.last_output) >= self.timing.nudge_after
                    && self
                        .last_nudge
                        .is_none_or(|t| now.saturating_sub(t) >= self.timing.nudge_after)
                {
                    self.last_nudge = Some(now);
                    out.push(b'\r');
                }
            }
            Phase::LoginPrompt(seen) => {
                if self.take_through(b"login:") {
                    // getty printed its prompt again: settle from this one.
                    self.phase = Phase::LoginPrompt(now);
                } else if now.saturating_sub(seen) >= self.timing.settle {
                    out.extend_from_slice(self.user.as_bytes());
                    out.push(b'\r');
                    self.phase = Phase::User(now);
                }
            }
            Phase::User(sent) => {
                if self.take_through(b"Password:") {
                    self.phase = Phase::PasswordPrompt(now);
                } else if self.take_through(b"login:") {
                    // The name was lost (typed while getty flushed its input): again.
                    self.phase = Phase::LoginPrompt(now);
                } else if self.translated_password_prompt(now) {
                    self.phase = Phase::PasswordPrompt(now);
                } else if now.saturating_sub(sent) >= self.timing.password_prompt {
                    out.push(b'\r');
                    self.phase = Phase::Boot;
                }
            }
            Phase::PasswordPrompt(seen) => {
                if now.saturating_sub(seen) >= self.timing.settle / 4 {
                    out.extend_from_slice(self.password.as_bytes());
                    out.push(b'\r');
                    self.password_sent = Some(now);
                    self.phase = Phase::Password(now);
                }
            }
            Phase::Password(sent) => {
                if self.login_refused() {
                    return;
                }
                if now.saturating_sub(sent) >= self.timing.after_password {
                    out.extend_from_slice(ready_probe().as_bytes());
                    self.phase = Phase::Ready(now);
                }
            }
            Phase::Ready(probed) => {
                if self.login_refused() {
                    return;
                }
                if self.take_marker(b"PIGEN-READY-").is_some() {
                    self.milestones.shell = Some(now);
                    self.phase = Phase::Pause {
                        next: 0,
                        since: now,
                    };
                } else if now.saturating_sub(probed) >= self.timing.probe_every {
                    let since_password = self
                        .password_sent
                        .map_or(Duration::ZERO, |t| now.saturating_sub(t));
                    if since_password >= self.timing.shell_timeout {
                        self.phase = Phase::Failed(format!(
                            "logged in as {}, but no shell answered within {}s",
                            self.user,
                            self.timing.shell_timeout.as_secs()
                        ));
                    } else {
                        out.extend_from_slice(ready_probe().as_bytes());
                        self.phase = Phase::Ready(now);
                    }
                }
            }
            Phase::Pause { next, since } => {
                if now.saturating_sub(since) >= self.timing.settle / 4 {
                    self.start_command(next, now, out);
                }
            }
            Phase::Running { index, since } => {
                let n = index + 1;
                let rc_marker = format!("PIGEN-RC-{n}-");
                if let Some((before, rc)) = self.take_rc(rc_marker.as_bytes()) {
                    let begin = format!("PIGEN-BEGIN-{n}\n");
                    let output = command_output(&before, begin.as_bytes());
                    self.results.push(CommandResult {
                        rc: Some(rc),
                        output,
                    });
                    self.phase = Phase::Pause {
                        next: index + 1,
                        since: now,
                    };
                } else if now.saturating_sub(since) >= self.commands[index].timeout {
                    out.push(0x03);
                    let begin = format!("PIGEN-BEGIN-{n}\n");
                    let output = command_output(&self.text, begin.as_bytes());
                    self.text.clear();
                    self.results.push(CommandResult { rc: None, output });
                    // A line of its own after the Ctrl-C, so the next command starts clean.
                    out.push(b'\r');
                    self.phase = Phase::Pause {
                        next: index + 1,
                        since: now,
                    };
                }
            }
            Phase::Done => {
                if self.take_through(b"PIGEN-NOPOWEROFF") {
                    self.poweroff_refused = true;
                }
            }
            Phase::Failed(_) => {}
        }
    }

    fn start_command(&mut self, index: usize, now: Duration, out: &mut Vec<u8>) {
        match self.commands.get(index) {
            Some(command) => {
                out.extend_from_slice(wrap_command(index + 1, &command.text).as_bytes());
                self.phase = Phase::Running { index, since: now };
            }
            None => {
                self.milestones.commands_done = Some(now);
                out.extend_from_slice(POWEROFF.as_bytes());
                out.push(b'\r');
                self.phase = Phase::Done;
            }
        }
    }

    /// "Login incorrect": fail (the probe would be read as the next user name).
    fn login_refused(&mut self) -> bool {
        if find(&self.text, b"Login incorrect").is_some() {
            self.phase = Phase::Failed(format!(
                "the console said \"Login incorrect\" for user {:?}: check --user and --password",
                self.user
            ));
            return true;
        }
        false
    }

    /// A password prompt in the image's language (PAM's translations: `Mot de passe : `,
    /// `Passwort: `): after the echo of the user name, a short last line ending in a colon
    /// that stays unanswered for a moment. Consumes the text when it is one.
    fn translated_password_prompt(&mut self, now: Duration) -> bool {
        const QUIET: Duration = Duration::from_millis(700);
        if now.saturating_sub(self.last_output) < QUIET {
            return false;
        }
        let Some(line_end) = self.text.iter().rposition(|&b| b == b'\n') else {
            return false;
        };
        let last = String::from_utf8_lossy(&self.text[line_end + 1..]);
        let prompt = last.trim_end_matches(char::is_whitespace);
        if !prompt.ends_with(':') || prompt.chars().count() > 40 {
            return false;
        }
        self.text.clear();
        true
    }

    fn boot_failure(&self) -> Option<String> {
        BOOT_FAILURES.iter().find_map(|(pattern, why)| {
            find(&self.text, pattern.as_bytes()).map(|_| format!("{why} (\"{pattern}\")"))
        })
    }

    /// Consumes the text through the first `pattern`; whether it was there.
    fn take_through(&mut self, pattern: &[u8]) -> bool {
        match find(&self.text, pattern) {
            Some(at) => {
                self.text.drain(..at + pattern.len());
                true
            }
            None => false,
        }
    }

    /// `<prefix><digits>` followed by a line end: consumes through the line, returns the digits.
    fn take_marker(&mut self, prefix: &[u8]) -> Option<u64> {
        let (_, digits, end) = find_number_after(&self.text, prefix)?;
        self.text.drain(..end);
        std::str::from_utf8(&digits).ok()?.parse().ok()
    }

    /// Like `take_marker` for the exit-code marker; returns the text before it too.
    fn take_rc(&mut self, prefix: &[u8]) -> Option<(Vec<u8>, i32)> {
        let (at, digits, end) = find_number_after(&self.text, prefix)?;
        let rc = std::str::from_utf8(&digits).ok()?.parse().ok()?;
        let before = self.text[..at].to_vec();
        self.text.drain(..end);
        Some((before, rc))
    }
}

/// The ready probe, as typed (with its Enter). It also makes the rest of the session plain:
/// no pager, no colours, and lines too wide for readline to scroll them.
pub fn ready_probe() -> String {
    "stty cols 1000 2>/dev/null; export TERM=dumb PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0; \
     echo PIGEN''-READY-$$\r"
        .to_string()
}

/// Command `n` as typed (with its Enter).
pub fn wrap_command(n: usize, command: &str) -> String {
    format!("echo PIGEN''-BEGIN-{n}; {{ {command}; }} 2>&1; echo PIGEN''-RC-{n}-$?\r")
}

/// The output between the begin marker's line (`begin` includes its newline) and the end of
/// `text`, noise lines removed.
fn command_output(text: &[u8], begin: &[u8]) -> String {
    let body = match find(text, begin) {
        Some(at) => &text[at + begin.len()..],
        None => text,
    };
    let body = String::from_utf8_lossy(body);
    let lines: Vec<&str> = body.lines().filter(|l| !is_noise(l)).collect();
    lines.join("\n").trim_end().to_string()
}

/// Kernel messages (`[   12.345678] …`) and systemd status lines (`[  OK  ] …`,
/// `         Starting …`) that can land in the middle of a command's output on a console.
pub fn is_noise(line: &str) -> bool {
    let indented = line.trim_start_matches(' ');
    if line.len() - indented.len() >= 8 {
        let verb = indented.split(' ').next().unwrap_or("");
        if verb.ends_with("ing") && verb.starts_with(|c: char| c.is_ascii_uppercase()) {
            return true;
        }
    }
    let Some(inner) = line.strip_prefix('[') else {
        return false;
    };
    let Some((tag, _)) = inner.split_once(']') else {
        return false;
    };
    let tag = tag.trim();
    let kernel = tag.split_once('.').is_some_and(|(secs, frac)| {
        !secs.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && !frac.is_empty()
            && frac.bytes().all(|b| b.is_ascii_digit())
    });
    let status = matches!(tag, "OK" | "FAILED" | "DEPEND" | "TIME" | "WARN" | "INFO")
        || (!tag.is_empty() && tag.bytes().all(|b| b == b'*' || b == b' '));
    kernel || status
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first `prefix` followed by at least one digit and then a newline: (where the prefix
/// starts, the digits, the index just past the newline). A marker whose line has not ended
/// yet is not taken (more digits may follow).
fn find_number_after(text: &[u8], prefix: &[u8]) -> Option<(usize, Vec<u8>, usize)> {
    let mut from = 0;
    while let Some(rel) = find(&text[from..], prefix) {
        let at = from + rel;
        let rest = &text[at + prefix.len()..];
        let digits: Vec<u8> = rest
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if !digits.is_empty() {
            match rest.get(digits.len()) {
                Some(b'\n') => {
                    let end = at + prefix.len() + digits.len() + 1;
                    return Some((at, digits, end));
                }
                None => return None,
                Some(_) => {}
            }
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn stripping_escapes_and_carriage_returns() {
        let raw = b"\x1b[0;32m  OK  \x1b[0m] Started\r\n\x1b[?2004hpi@box:~$ \x1b]0;title\x07x\x1b(By\x08\r\n";
        assert_eq!(clean(raw), "  OK  ] Started\npi@box:~$ xy\n");
        // Sequences split across chunks.
        let mut s = AnsiStripper::default();
        let mut out = Vec::new();
        s.push(b"a\x1b", &mut out);
        s.push(b"[1", &mut out);
        s.push(b";31mb\x1b]0;t", &mut out);
        s.push(b"\x1b\\c", &mut out);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn noise_lines() {
        assert!(is_noise("[   12.345678] random: crng init done"));
        assert!(is_noise("[  OK  ] Started ssh.service"));
        assert!(is_noise("[FAILED] Failed to start foo"));
        assert!(is_noise("[***   ] A start job is running"));
        assert!(is_noise(
            "         Starting ssh.service - OpenBSD Secure Shell server..."
        ));
        assert!(!is_noise("         indented output"));
        assert!(!is_noise("[Unit]"));
        assert!(!is_noise("mybox"));
        assert!(!is_noise("[1.x] not a timestamp"));
    }

    fn session(commands: &[&str]) -> Session {
        Session::new(
            "alice",
            "s3cret",
            commands
                .iter()
                .map(|c| Command {
                    text: c.to_string(),
                    timeout: Duration::from_secs(60),
                })
                .collect(),
            Timing::default(),
        )
    }

    /// Feeds `(time, console bytes)` in order; returns everything typed, as text.
    fn drive(s: &mut Session, script: &[(f64, &[u8])]) -> String {
        let mut typed = Vec::new();
        for (t, bytes) in script {
            typed.extend(s.step(bytes, secs(*t)));
        }
        String::from_utf8(typed).unwrap()
    }

    #[test]
    fn full_session_from_a_real_looking_transcript() {
        let mut s = session(&["uname -n", "id -un"]);
        let typed = drive(
            &mut s,
            &[
                (1.0, b"\x1b[2J\x1b[01;01HGNU GRUB  version 2.06\r\n"),
                (5.0, b"[    0.000000] Linux version 6.1.0-18-amd64\r\n"),
                (
                    40.0,
                    b"[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mMulti-User System\x1b[0m.\r\n",
                ),
                (41.0, b"\r\nDebian GNU/Linux 12 mybox ttyS0\r\n\r\nmybox lo"),
                (41.1, b"gin: "),
            ],
        );
        assert_eq!(typed, "", "nothing typed before the prompt settles");
        assert_eq!(s.milestones().login_prompt, Some(secs(41.1)));
        assert_eq!(drive(&mut s, &[(42.2, b"")]), "alice\r");
        assert_eq!(drive(&mut s, &[(42.3, b"alice\r\nPassword: ")]), "");
        assert_eq!(drive(&mut s, &[(42.6, b"")]), "s3cret\r");
        let typed = drive(
            &mut s,
            &[
                (43.0, b"\r\nLinux mybox 6.1.0-18-amd64 #1 SMP\r\n"),
                (44.7, b"\x1b[?2004halice@mybox:~$ "),
            ],
        );
        assert_eq!(typed, ready_probe());
        // The echo of the probe must not count; the output does.
        let typed = drive(
            &mut s,
            &[(
                44.8,
                b"stty cols 1000 2>/dev/null; export TERM=dumb PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0; echo PIGEN''-READY-$$\r\n\x1b[?2004l\rPIGEN-READY-",
            )],
        );
        assert_eq!(typed, "", "the marker's line has not ended yet");
        let typed = drive(&mut s, &[(44.9, b"812\r\nalice@mybox:~$ ")]);
        assert_eq!(typed, "", "a pause before the first command");
        assert_eq!(s.milestones().shell, Some(secs(44.9)));
        let typed = drive(&mut s, &[(45.0, b""), (45.2, b"")]);
        assert_eq!(typed, wrap_command(1, "uname -n"));
        let typed = drive(
            &mut s,
            &[
                (
                    45.3,
                    b"echo PIGEN''-BEGIN-1; { uname -n; } 2>&1; echo PIGEN''-RC-1-$?\r\n",
                ),
                (45.4, b"PIGEN-BEGIN-1\r\nmy"),
                (
                    45.5,
                    b"box\r\n[   45.123456] random: crng init done\r\nPIGEN-RC-1-0\r\n",
                ),
                (45.8, b"alice@mybox:~$ "),
            ],
        );
        assert_eq!(typed, wrap_command(2, "id -un"));
        let typed = drive(
            &mut s,
            &[
                (
                    45.9,
                    b"echo PIGEN''-BEGIN-2; { id -un; } 2>&1; echo PIGEN''-RC-2-$?\r\nPIGEN-BEGIN-2\r\nalice\r\nPIGEN-RC-2-0\r\nalice@mybox:~$ ",
                ),
                (46.2, b""),
            ],
        );
        assert_eq!(typed, format!("{POWEROFF}\r"));
        assert_eq!(*s.phase(), Phase::Done);
        assert_eq!(
            s.results(),
            [
                CommandResult {
                    rc: Some(0),
                    output: "mybox".into()
                },
                CommandResult {
                    rc: Some(0),
                    output: "alice".into()
                }
            ]
        );
        assert!(!s.poweroff_refused());
        drive(&mut s, &[(46.5, b"PIGEN-NOPOWEROFF\r\n")]);
        assert!(s.poweroff_refused());
    }

    #[test]
    fn whole_transcript_in_one_chunk() {
        let mut s = session(&["false"]);
        let typed = drive(&mut s, &[(10.0, b"box login: ")]);
        assert_eq!(typed, "");
        let typed = drive(
            &mut s,
            &[
                (11.0, b""),
                (12.0, b"Password: "),
                (12.5, b""),
                (15.0, b"$ "),
                (15.1, b"PIGEN-READY-77\n$ "),
                (15.5, b"PIGEN-BEGIN-1\nno output, exit 1\nPIGEN-RC-1-1\n$ "),
                (16.0, b""),
            ],
        );
        assert!(typed.ends_with(&format!("{POWEROFF}\r")), "{typed}");
        assert_eq!(
            s.results(),
            [CommandResult {
                rc: Some(1),
                output: "no output, exit 1".into()
            }]
        );
    }

    #[test]
    fn marker_lines_split_mid_number() {
        let mut s = session(&["echo 12345"]);
        s.phase = Phase::Running {
            index: 0,
            since: secs(0.0),
        };
        assert_eq!(
            drive(&mut s, &[(1.0, b"PIGEN-BEGIN-1\n12345\nPIGEN-RC-1-1")]),
            ""
        );
        assert!(s.results().is_empty());
        drive(&mut s, &[(1.1, b"27\r\n")]);
        assert_eq!(s.results()[0].rc, Some(127));
    }

    #[test]
    fn wrong_password_fails_fast() {
        let mut s = session(&[]);
        drive(
            &mut s,
            &[
                (1.0, b"login: "),
                (2.1, b""),
                (2.2, b"Password: "),
                (2.5, b""),
                (4.0, b""),
                (5.0, b"\r\nLogin incorrect\r\nbox login: "),
            ],
        );
        match s.phase() {
            Phase::Failed(why) => assert!(why.contains("Login incorrect"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_translated_password_prompt_is_answered() {
        let mut s = session(&[]);
        let typed = drive(
            &mut s,
            &[
                (1.0, b"box login: "),
                (2.1, b""),
                // The echo of the name, then PAM's French prompt (a no-break space before the
                // colon in some translations).
                (2.2, b"alice\r\nMot de passe\xc2\xa0: "),
                (2.5, b""),
            ],
        );
        assert_eq!(typed, "alice\r", "not before the console is quiet");
        assert_eq!(drive(&mut s, &[(3.0, b""), (3.5, b"")]), "s3cret\r");

        // The name's echo alone is no prompt, nor is a line that does not end in a colon.
        let mut s = session(&[]);
        drive(&mut s, &[(1.0, b"box login: "), (2.1, b"")]);
        drive(&mut s, &[(2.2, b"alice"), (4.0, b"")]);
        assert!(matches!(s.phase(), Phase::User(_)), "{:?}", s.phase());
        drive(
            &mut s,
            &[(4.1, b"\r\n[  9.1] random: crng init done\r\n"), (6.0, b"")],
        );
        assert!(matches!(s.phase(), Phase::User(_)), "{:?}", s.phase());
    }

    #[test]
    fn a_lost_user_name_is_typed_again() {
        let mut s = session(&[]);
        let typed = drive(
            &mut s,
            &[
                (1.0, b"login: "),
                (2.1, b""),
                (3.0, b"\r\nDebian GNU/Linux 12 box ttyS0\r\n\r\nbox login: "),
                (4.1, b""),
            ],
        );
        assert_eq!(typed, "alice\ralice\r");
    }

    #[test]
    fn a_silent_console_gets_an_enter() {
        let mut s = session(&[]);
        let typed = drive(
            &mut s,
            &[
                (1.0, b"booting"),
                (20.0, b""),
                (31.0, b""),
                (40.0, b""),
                (61.5, b""),
            ],
        );
        assert_eq!(typed, "\r\r");
    }

    #[test]
    fn boot_failures_end_the_session() {
        for (text, why) in [
            (
                &b"[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n"[..],
                "panicked",
            ),
            (
                b"ALERT!  PARTUUID=1234-02 does not exist.  Dropping to a shell!\r\n",
                "initramfs",
            ),
            (
                b"You are in emergency mode. After logging in, type \"journalctl -xb\"",
                "emergency",
            ),
        ] {
            let mut s = session(&[]);
            drive(&mut s, &[(1.0, text)]);
            match s.phase() {
                Phase::Failed(w) => assert!(w.contains(why), "{w}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_hanging_command_gets_ctrl_c_and_the_next_one_runs() {
        let mut s = Session::new(
            "u",
            "p",
            vec![
                Command {
                    text: "sleep 1000".into(),
                    timeout: Duration::from_secs(5),
                },
                Command {
                    text: "true".into(),
                    timeout: Duration::from_secs(5),
                },
            ],
            Timing::default(),
        );
        s.phase = Phase::Ready(secs(0.0));
        let typed = drive(&mut s, &[(1.0, b"PIGEN-READY-1\n"), (1.5, b"")]);
        assert_eq!(typed, wrap_command(1, "sleep 1000"));
        let typed = drive(&mut s, &[(2.0, b"PIGEN-BEGIN-1\nzzz\n"), (6.5, b"")]);
        assert_eq!(typed, "\x03\r");
        let typed = drive(&mut s, &[(7.0, b"")]);
        assert_eq!(typed, wrap_command(2, "true"));
        assert_eq!(
            s.results()[0],
            CommandResult {
                rc: None,
                output: "zzz".into()
            }
        );
        // The interrupted command's late marker is not taken for the next one's.
        drive(
            &mut s,
            &[(7.5, b"^C\nPIGEN-RC-1-130\nPIGEN-BEGIN-2\nPIGEN-RC-2-0\n")],
        );
        assert_eq!(s.results()[1].rc, Some(0));
    }

    #[test]
    fn no_shell_answer_gives_up() {
        let mut s = session(&[]);
        s.password_sent = Some(secs(0.0));
        s.phase = Phase::Ready(secs(0.0));
        let typed = drive(&mut s, &[(10.0, b""), (20.0, b""), (125.0, b"")]);
        assert_eq!(typed, ready_probe().repeat(2));
        assert!(matches!(s.phase(), Phase::Failed(w) if w.contains("no shell answered")));
    }
}
