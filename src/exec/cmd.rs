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

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "LogSink(open)"
        } else {
            "LogSink(none)"
        })
    }
}

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
    kill_with_parent: bool,
    /// `Some(mounts to detach)`: run in a private copy of our mount namespace.
    own_mount_namespace: Option<Vec<std::ffi::CString>>,
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
            kill_with_parent: false,
            own_mount_namespace: None,
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

    /// Starts with the terminal (stdin, stdout, stderr inherited) and returns the child, for
    /// callers that need its pid while it runs.
    pub fn spawn_interactive(&self, log: &LogSink) -> Result<std::process::Child, CmdError> {
        log.line(&format!("+ {}", self.display()));
        let mut command = self.command();
        command.stdin(Stdio::inherit());
        command.spawn().map_err(|e| self.spawn_error(e))
    }

    /// The child gets SIGKILL when the thread that started it exits (`PR_SET_PDEATHSIG`): for
    /// helpers (qemu-storage-daemon, qemu-nbd) that must not outlive pigen even when pigen is
    /// killed outright. The kernel ties this to the spawning *thread*, not the process: start
    /// such helpers from a thread that lives as long as they are needed.
    pub fn kill_with_parent(mut self) -> Cmd {
        self.kill_with_parent = true;
        self
    }

    /// Runs the command in a new mount namespace, a private copy of ours (propagation private
    /// both ways), in which the mounts at `detach` are lazily detached first.
    ///
    /// For helpers that serve a block device a filesystem in *our* namespace is mounted from
    /// (qemu-storage-daemon, qemu-nbd): when a namespace dies, the last process leaving it
    /// unmounts its filesystems, and if that process is the helper, the final flush of such a
    /// filesystem waits for the helper itself — which is exiting: the kernel hangs (seen here:
    /// the helper stuck in `ext4_sync_fs` → `blkdev_issue_flush`, every later `sync` on the
    /// host stuck behind it). In its own namespace the helper never holds ours. `detach` names
    /// the block-device filesystems of ours it would otherwise keep a copy of (keeping such a
    /// filesystem alive after we unmount it would keep its device busy).
    pub fn own_mount_namespace(mut self, detach: &[PathBuf]) -> Cmd {
        use std::os::unix::ffi::OsStrExt;
        let detach = detach
            .iter()
            .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).ok())
            .collect();
        self.own_mount_namespace = Some(detach);
        self
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
        if self.step {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        if self.kill_with_parent || self.own_mount_namespace.is_some() {
            use std::os::unix::process::CommandExt;
            let kill_with_parent = self.kill_with_parent;
            let parent = nix::unistd::getpid();
            let detach = self.own_mount_namespace.clone();
            // SAFETY: the hook runs between fork and exec and only makes system calls (prctl,
            // getppid, unshare, mount, umount2), all async-signal-safe, on data prepared
            // before the fork (the C strings); it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    if kill_with_parent {
                        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                        // The parent may have died before the prctl: nobody would kill us.
                        // (0: the parent is outside our PID namespace, as for the build's PID 1.)
                        let ppid = nix::unistd::getppid();
                        if ppid != parent && ppid.as_raw() != 0 {
                            return Err(std::io::Error::other("parent exited during spawn"));
                        }
                    }
                    if let Some(detach) = &detach {
                        use nix::mount::{MntFlags, MsFlags};
                        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                        nix::mount::mount(
                            None::<&std::ffi::CStr>,
                            c"/",
                            None::<&std::ffi::CStr>,
                            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                            None::<&std::ffi::CStr>,
                        )?;
                        for target in detach {
                            let _ = nix::mount::umount2(target.as_c_str(), MntFlags::MNT_DETACH);
                        }
                    }
                    Ok(())
                });
            }
        }
        command
    }

    /// Starts the command in the background (a helper daemon such as qemu-storage-daemon): its
    /// stdout and stderr, merged, are copied to `log` line by line as they come and the last
    /// lines are kept for errors. Stdin is /dev/null (or the bytes given with `stdin`).
    /// Dropping the handle kills the process (SIGKILL) and reaps it.
    pub fn spawn(&self, log: &LogSink) -> Result<Background, CmdError> {
        log.line(&format!("+ {} &", self.display()));
        tracing::debug!(command = %self.display(), "spawn");
        let (reader, writer) = std::io::pipe().map_err(|e| self.spawn_error(e))?;
        let writer2 = writer.try_clone().map_err(|e| self.spawn_error(e))?;
        let mut command = self.command();
        command.stdout(writer).stderr(writer2);
        let mut child = command.spawn().map_err(|e| self.spawn_error(e))?;
        drop(command);
        let _ = self.feed_stdin(&mut child);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let reader_tail = Arc::clone(&tail);
        let reader_log = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(reader).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches('\r');
                reader_log.line(line);
                let mut tail = reader_tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            }
        });
        Ok(Background {
            command: self.clone(),
            child: Some(child),
            status: None,
            tail,
            reader: Some(reader),
        })
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

/// A command running in the background, started by `Cmd::spawn`.
pub struct Background {
    command: Cmd,
    child: Option<std::process::Child>,
    status: Option<ExitStatus>,
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        self.command.display()
    }

    /// The last lines the process printed so far.
    pub fn tail(&self) -> Vec<String> {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect()
    }

    /// `Some(status)` once the process has exited (it is reaped then).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.status = Some(status);
                    self.join_reader();
                }
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A `CmdError` saying the process ended (or did something wrong, `how`), with its last
    /// output.
    pub fn error(&self, how: impl Into<String>) -> CmdError {
        CmdError {
            command: self.display(),
            how: how.into(),
            tail: self.tail(),
        }
    }

    /// How an exited process ended, in `CmdError` words.
    pub fn describe(status: ExitStatus) -> String {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "ended".to_string(),
        }
    }

    /// Asks the process to exit (SIGTERM), waits up to `grace`, then kills it (SIGKILL).
    /// Ok when it exited by itself with code 0 or by the SIGTERM; the error names how it ended
    /// otherwise (killed after the grace period, or a failure exit code).
    pub fn stop(&mut self, grace: std::time::Duration) -> Result<(), CmdError> {
        use std::os::unix::process::ExitStatusExt;
        if self.try_wait().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if self.wait_timeout(grace).is_none() {
                self.kill();
                return Err(self.error(format!(
                    "did not exit within {}s of SIGTERM; killed",
                    grace.as_secs()
                )));
            }
        }
        let status = self.status.expect("reaped");
        if status.success() || status.signal() == Some(nix::sys::signal::Signal::SIGTERM as i32) {
            Ok(())
        } else {
            Err(self.error(Self::describe(status)))
        }
    }

    /// SIGKILL and reap (no-op when it already exited).
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    self.status = Some(status);
                }
            }
            self.join_reader();
        }
    }

    fn join_reader(&mut self) {
        // The pipe closes when the process and every child it handed its output to are gone.
        // Give the reader a moment to copy the last lines, but a grandchild keeping the pipe
        // open must not hang us: join only a finished reader.
        for _ in 0..50 {
            if self.reader.as_ref().is_none_or(|r| r.is_finished()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if self.reader.as_ref().is_some_and(|r| r.is_finished()) {
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Background")
            .field("command", &self.display())
            .field("pid", &self.pid())
            .field("status", &self.status)
            .finish()
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

    #[test]
    fn background_processes_are_logged_stopped_and_reported() {
        let capture = Capture::default();
        let log = LogSink::new(capture.clone());
        let mut daemon = Cmd::new("sh")
            .args(["-c", "echo started; exec sleep 30"])
            .spawn(&log)
            .unwrap();
        assert!(daemon
            .wait_timeout(std::time::Duration::from_millis(100))
            .is_none());
        daemon.stop(std::time::Duration::from_secs(5)).unwrap();
        assert!(capture
            .text()
            .starts_with("+ sh -c 'echo started; exec sleep 30' &\nstarted\n"));

        let mut failing = Cmd::new("sh")
            .args(["-c", "echo cannot open image >&2; exit 3"])
            .spawn(&LogSink::default())
            .unwrap();
        let status = failing
            .wait_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let err = failing.error(Background::describe(status));
        assert_eq!(
            err.to_string(),
            "`sh -c 'echo cannot open image >&2; exit 3'` failed: exited with code 3; last output:\n    cannot open image"
        );
        assert!(failing.stop(std::time::Duration::from_secs(1)).is_err());
    }

    #[test]
    fn kill_with_parent_ends_the_helper_when_its_thread_exits() {
        let pid = std::thread::spawn(|| {
            let daemon = Cmd::new("sleep")
                .arg("30")
                .kill_with_parent()
                .spawn(&LogSink::default())
                .unwrap();
            let pid = daemon.pid();
            std::mem::forget(daemon); // no Drop: only the death signal can end it
            pid
        })
        .join()
        .unwrap();
        let stat = format!("/proc/{pid}/stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            // Nobody reaps it (the handle was forgotten), so dead means zombie.
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = state.rsplit(") ").next().unwrap_or("").chars().next();
            if state == Some('Z') || state.is_none() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }

    #[test]
    fn own_mount_namespace_keeps_mounts_apart() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP own_mount_namespace_keeps_mounts_apart: needs root");
            return;
        }
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
        let out = Cmd::new("sh")
            .args(["-c", "readlink /proc/self/ns/mnt"])
            .own_mount_namespace(&[])
            .output(&LogSink::default())
            .unwrap();
        assert_ne!(Path::new(out.stdout.trim()), ns("self"));
    }
}
