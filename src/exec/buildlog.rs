//! `WORK_DIR/build.log` and what the terminal shows while a build runs.
//!
//! The log gets timestamped `Begin`/`End` lines per step (as the original's `log`) and the full
//! output of every command. The terminal gets an indicatif line (stage, step, elapsed time, last
//! output line) when stderr is a terminal; otherwise plain timestamped `Begin`/`End` lines.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::cmd::LogSink;

/// How much the terminal shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    /// Command output too.
    Verbose,
}

pub struct BuildLog {
    path: PathBuf,
    sink: LogSink,
    verbosity: Verbosity,
    bar: Option<ProgressBar>,
    step_started: std::cell::Cell<Instant>,
}

/// A line on stdout; a closed stdout (`pigen build | head`) must not stop the build.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `HH:MM:SS` (UTC) for log lines.
pub fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

impl BuildLog {
    pub fn open(path: &Path, verbosity: Verbosity) -> anyhow::Result<BuildLog> {
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the build log {}", path.display()))?;
        let bar = (verbosity == Verbosity::Normal && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Ok(BuildLog {
            path: path.to_path_buf(),
            sink: LogSink::new(file),
            verbosity,
            bar,
            step_started: std::cell::Cell::new(Instant::now()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where commands copy their output.
    pub fn sink(&self) -> &LogSink {
        &self.sink
    }

    /// A timestamped line in the log and on the terminal.
    pub fn line(&self, message: &str) {
        let line = format!("[{}] {message}", clock());
        self.sink.line(&line);
        match &self.bar {
            Some(bar) => bar.println(&line),
            None if self.verbosity != Verbosity::Quiet => say(&line),
            None => {}
        }
    }

    pub fn begin(&self, what: &str) {
        self.step_started.set(Instant::now());
        if let Some(bar) = &self.bar {
            bar.set_prefix(what.to_string());
            bar.set_message("");
        }
        self.line(&format!("Begin {what}"));
    }

    pub fn end(&self, what: &str) {
        let took = self.step_started.get().elapsed().as_secs();
        self.line(&format!("End {what} ({took} s)"));
    }

    /// For `Cmd::run`: the last output line on the progress display, or every line in verbose
    /// mode. (The log itself gets them from the sink.)
    pub fn output_line(&self, line: &str) {
        // Lines of the scripts' own `log` function are shown as the original showed them.
        let is_log_line = line.len() > 11
            && line.as_bytes()[0] == b'['
            && line.as_bytes()[9] == b']'
            && line[1..9].bytes().all(|b| b.is_ascii_digit() || b == b':');
        match (&self.bar, self.verbosity) {
            (Some(bar), _) if is_log_line => bar.println(line),
            (Some(bar), _) => bar.set_message(line.chars().take(200).collect::<String>()),
            (None, Verbosity::Verbose) => say(line),
            (None, Verbosity::Normal) if is_log_line => say(line),
            _ => {}
        }
    }

    /// Prints above the progress line (warnings, failures).
    pub fn eprintln(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// A byte counter for a long copy (compression): on a terminal the progress line shows
    /// `what`, `{bytes}/{total_bytes}` and the rate until the counter is dropped; elsewhere
    /// only the caller's own summary line appears (plain logs stay one line per event).
    pub fn bytes(&self, what: &str, total: u64) -> BytesProgress {
        const TEMPLATE: &str =
            "{spinner} [{elapsed_precise}] {msg} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";
        let style = || {
            ProgressStyle::with_template(TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let (bar, shared) = match &self.bar {
            Some(bar) => {
                bar.set_style(style());
                (bar.clone(), true)
            }
            None if self.verbosity != Verbosity::Quiet && std::io::stderr().is_terminal() => {
                let bar = ProgressBar::new(total).with_style(style());
                bar.enable_steady_tick(Duration::from_millis(200));
                (bar, false)
            }
            None => (ProgressBar::hidden(), false),
        };
        bar.set_length(total);
        bar.set_position(0);
        bar.reset_eta();
        bar.set_message(what.to_string());
        BytesProgress { bar, shared }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// See [`BuildLog::bytes`]. Dropping it restores the build's progress line.
pub struct BytesProgress {
    bar: ProgressBar,
    /// The build's own spinner, borrowed: restored on drop instead of cleared.
    shared: bool,
}

impl BytesProgress {
    /// A counter that shows nothing (benchmarks, callers without a build log).
    pub fn hidden() -> BytesProgress {
        BytesProgress {
            bar: ProgressBar::hidden(),
            shared: false,
        }
    }

    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }
}

impl Drop for BytesProgress {
    fn drop(&mut self) {
        if self.shared {
            self.bar.unset_length();
            self.bar.set_message("");
            self.bar.set_style(spinner_style());
        } else {
            self.bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix:.bold} {wide_msg:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}
