//! The one command type. Every external program pigen runs goes through `Cmd`: it logs the
//! command line, copies the output into the build log (when one is open), keeps the tail of the
//! output for the error, and turns a failure into a `CmdError` naming the command.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// How many output lines a failure carries.
pub const TAIL_LINES: usize = 30;

/// A failed command: what ran, how it ended, the last lines it printed.
#[derive(Debug, thiserror::Error)]
pub struct CmdError {
    pub command: String,
    /// "exit code 3", "killed by signal 9", or why it could not start.
    pub how: String,
    pub tail: Vec<String>,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed: {}", self.command, self.how)?;
        if !self.tail.is_empty() {
            write!(f, "; last output:")?;
            for line in &self.tail {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

/// Where command output is copied: the build log, shared by every command of a build.
#[derive(Clone, Default)]
pub struct LogSink(Option<Arc<Mutex<Box<dyn Write + Send>>>>);

impl LogSink {
    pub fn new(writer: impl Write + Send + 'static) -> LogSink {
        LogSink(Some(Arc::new(Mutex::new(Box::new(writer)))))
    }

    pub fn line(&self, line: &str) {
        if let Some(w) = &self.0 {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(w, "{line}");
        }
    }
}

#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    ok_codes: Vec<i32>,
    any_code: bool,
    step: bool,
    die_with_parent: bool,
}

/// What a successful command printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            stdin: None,
            ok_codes: vec![0],
            any_code: false,
            step: false,
            die_with_parent: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Sets every `(name, value)` of `vars`, e.g. a whole script environment.
    pub fn envs<I, K, V>(mut self, vars: I) -> Cmd
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.env.extend(
            vars.into_iter()
                .map(|(k, v)| (k.as_ref().to_os_string(), v.as_ref().to_os_string())),
        );
        self
    }

    /// Start from an empty environment (then add with `env`).
    pub fn env_clear(mut self) -> Cmd {
        self.env_clear = true;
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Bytes for the command's stdin (default: /dev/null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Exit codes that count as success (default: 0 only), e.g. quilt's 0 and 2.
    pub fn ok_codes(mut self, codes: &[i32]) -> Cmd {
        self.ok_codes = codes.to_vec();
        self
    }

    /// Every exit (even a signal, reported as 128 + signal) counts as success: for callers that
    /// interpret the status and output themselves.
    pub fn any_code(mut self) -> Cmd {
        self.any_code = true;
        self
    }

    /// A build step: runs in its own process group, to which the build's stop signals are
    /// forwarded (see `exec::signals`), so Ctrl-C stops the step and pigen can clean up.
    pub fn step(mut self) -> Cmd {
        self.step = true;
        self
    }

    /// SIGKILL the command when pigen dies, however it dies (PR_SET_PDEATHSIG).
    pub fn die_with_parent(mut self) -> Cmd {
        self.die_with_parent = true;
        self
    }

    /// Starts with the terminal (stdin, stdout, stderr inherited) and returns the child, for
    /// callers that need its pid while it runs.
    pub fn spawn_interactive(&self, log: &LogSink) -> Result<std::process::Child, CmdError> {
        log.line(&format!("+ {}", self.display()));
        let mut command = self.command();
        command.stdin(Stdio::inherit());
        command.spawn().map_err(|e| self.spawn_error(e))
    }

    /// The command line as a shell would need it typed: for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| crate::cli::shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[allow(clippy::disallowed_methods)] // the one place that may
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if self.env_clear {
            command.env_clear();
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        use std::os::unix::process::CommandExt;
        if self.step {
            command.process_group(0);
        }
        if self.die_with_parent {
            // Runs between fork and exec: only async-signal-safe calls.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
        }
        command
    }

    /// Runs, capturing stdout and stderr separately (for commands whose output is data).
    /// Both streams are copied to `log`.
    pub fn output(&self, log: &LogSink) -> Result<CmdOutput, CmdError> {
        log.line(&format!("+ {}", self.display()));
        tracing::debug!(command = %self.display(), "run");
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        self.spawned(&child);
        let stdin_writer = self.feed_stdin(&mut child);
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_thread = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut bytes);
            bytes
        });
        let mut stdout_bytes = Vec::new();
        let _ = child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_end(&mut stdout_bytes);
        let stderr_bytes = stderr_thread.join().unwrap_or_default();
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        self.reaped();
        if let Some(t) = stdin_writer {
            let _ = t.join();
        }
        let stdout = String::from_utf8_lossy(&stdout_bytes).into_owned();
        let stderr = String::from_utf8_lossy(&stderr_bytes).into_owned();
        for line in stdout.lines().chain(stderr.lines()) {
            log.line(line);
        }
        let code = self.check(status, || tail_of(stderr.lines().chain(stdout.lines())))?;
        Ok(CmdOutput {
            code,
            stdout,
            stderr,
        })
    }

    /// Runs with stdout and stderr merged into one stream of lines, each passed to `on_line`
    /// (progress display) and copied to `log`. Returns the exit code (one of `ok_codes`).
    pub fn run(&self, log: &LogSink, mut on_line: impl FnMut(&str)) -> Result<i32, CmdError> {
        log.line(&format!("+ {}", self.display()));
        tracing::debug!(command = %self.display(), "run");
        let (reader, writer) = std::io::pipe().map_err(|e| self.spawn_error(e))?;
        let writer2 = writer.try_clone().map_err(|e| self.spawn_error(e))?;
        let mut command = self.command();
        command.stdout(writer).stderr(writer2);
        let mut child = command.spawn().map_err(|e| self.spawn_error(e))?;
        self.spawned(&child);
        drop(command); // closes our copies of the pipe's write end
        let stdin_writer = self.feed_stdin(&mut child);
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            log.line(line);
            on_line(line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        }
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        self.reaped();
        if let Some(t) = stdin_writer {
            let _ = t.join();
        }
        self.check(status, || tail.into_iter().collect())
    }

    /// Runs with the terminal: stdin, stdout and stderr inherited (an interactive shell, or the
    /// build process itself under `exec::namespace`). Returns the exit code (128 + signal).
    pub fn run_interactive(&self, log: &LogSink) -> Result<i32, CmdError> {
        log.line(&format!("+ {}", self.display()));
        let mut command = self.command();
        command.stdin(Stdio::inherit());
        let mut child = command.spawn().map_err(|e| self.spawn_error(e))?;
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if self.any_code || self.ok_codes.contains(&code) {
            Ok(code)
        } else {
            Err(CmdError {
                command: self.display(),
                how: format!("exit code {code}"),
                tail: Vec::new(),
            })
        }
    }

    fn spawned(&self, child: &std::process::Child) {
        if self.step {
            super::signals::set_step_group(Some(nix::unistd::Pid::from_raw(child.id() as i32)));
        }
    }

    fn reaped(&self) {
        if self.step {
            super::signals::set_step_group(None);
        }
    }

    fn feed_stdin(&self, child: &mut std::process::Child) -> Option<std::thread::JoinHandle<()>> {
        let bytes = self.stdin.clone()?;
        let mut stdin = child.stdin.take()?;
        // A separate thread, so a command that prints a lot before reading cannot deadlock us.
        Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        }))
    }

    fn check(
        &self,
        status: ExitStatus,
        tail: impl FnOnce() -> Vec<String>,
    ) -> Result<i32, CmdError> {
        use std::os::unix::process::ExitStatusExt;
        match status.code() {
            Some(code) if self.any_code || self.ok_codes.contains(&code) => Ok(code),
            None if self.any_code => Ok(128 + status.signal().unwrap_or(0)),
            Some(code) => Err(CmdError {
                command: self.display(),
                how: format!("exit code {code}"),
                tail: tail(),
            }),
            None => {
                let signal = status.signal().unwrap_or(0);
                Err(CmdError {
                    command: self.display(),
                    how: format!("killed by signal {signal}"),
                    tail: tail(),
                })
            }
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> CmdError {
        let how = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} not found; run `pigen check` to see which package provides it",
                self.program.to_string_lossy()
            )
        } else {
            format!("could not start it: {e}")
        };
        CmdError {
            command: self.display(),
            how,
            tail: Vec::new(),
        }
    }
}

fn tail_of<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let all: Vec<&str> = lines.collect();
    all[all.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn success_captures_output_and_logs_the_command() {
        let capture = Capture::default();
        let log = LogSink::new(capture.clone());
        let out = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .output(&log)
            .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(
            capture.text(),
            "+ sh -c 'echo out; echo err >&2'\nout\nerr\n"
        );
    }

    #[test]
    fn failure_names_the_command_code_and_tail() {
        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .output(&LogSink::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c 'echo oops >&2; exit 3'` failed: exit code 3; last output:\n    oops"
        );
        let err = Cmd::new("false").output(&LogSink::default()).unwrap_err();
        assert_eq!(err.to_string(), "`false` failed: exit code 1");
    }

    #[test]
    fn tail_keeps_the_last_lines_in_order() {
        let mut seen = 0;
        let err = Cmd::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 100); do echo line$i; done; echo bad >&2; exit 1",
            ])
            .run(&LogSink::default(), |_| seen += 1)
            .unwrap_err();
        assert_eq!(seen, 101);
        assert_eq!(err.tail.len(), TAIL_LINES);
        assert_eq!(err.tail.first().unwrap(), "line72");
        assert_eq!(err.tail.last().unwrap(), "bad");
    }

    #[test]
    fn accepted_codes_stdin_env_and_cwd() {
        let code = Cmd::new("sh")
            .args(["-c", "exit 2"])
            .ok_codes(&[0, 2])
            .run(&LogSink::default(), |_| {})
            .unwrap();
        assert_eq!(code, 2);
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo \"$GREETING\"; pwd"])
            .stdin("from stdin\n")
            .env_clear()
            .env("GREETING", "hi")
            .current_dir("/")
            .output(&LogSink::default())
            .unwrap();
        assert_eq!(out.stdout, "from stdin\nhi\n/\n");
    }

    #[test]
    fn signals_invalid_utf8_and_missing_programs() {
        let err = Cmd::new("sh")
            .args(["-c", "kill -9 $$"])
            .output(&LogSink::default())
            .unwrap_err();
        assert_eq!(err.how, "killed by signal 9");
        let err = Cmd::new("sh")
            .args(["-c", "printf 'a\\377b\\n' >&2; exit 1"])
            .output(&LogSink::default())
            .unwrap_err();
        assert_eq!(err.tail, ["a\u{fffd}b"]);
        let err = Cmd::new("no-such-program-pigen")
            .output(&LogSink::default())
            .unwrap_err();
        assert!(
            err.how.starts_with("no-such-program-pigen not found"),
            "{}",
            err.how
        );
    }
}
