//! `pigen boot IMAGE`: boot an image in QEMU with its serial console, log in, look around,
//! report. A smoke test before flashing.
//!
//! * The image is never written: compressed deploy outputs (`.zip`, `.xz`, `.gz`, `.zst`,
//!   `.qcow2`) are unpacked into a temporary file first, and QEMU boots a qcow2 overlay backed
//!   by the raw image, larger than it so the first-boot resize has room ([`qemu::disk_size`]).
//! * [`detect`] tells PC from Raspberry Pi images by the partition table and the FAT
//!   partition's `config.txt`, and the architecture by the ELF header of the root
//!   filesystem's init (read with `debugfs`, nothing mounted).
//! * [`qemu`] builds the command line; the console is a unix socket QEMU listens on.
//! * [`console::Session`] logs in and runs the [`checks`]; their answers are judged against
//!   `--expect NAME=VALUE`.

pub mod checks;
pub mod console;
pub mod detect;
pub mod qemu;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use self::checks::{human, Check, Outcome, Verdict};
use self::console::{Phase, Session, Timing};
use self::detect::{Detected, Part, PiBoot, Platform, Source};
use self::qemu::{Accel, Firmware, Machine, PcArch};
use crate::config::Arch;
use crate::error::ConfigError;
use crate::exec::cmd::{Background, Cmd, LogSink};
use crate::export::image::ext_at;

/// What `pigen boot` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub image: PathBuf,
    /// For the whole session: boot, login and checks.
    pub timeout: Duration,
    pub user: String,
    pub password: String,
    pub expects: Vec<(Check, String)>,
    pub accel: Accel,
    /// Boot PC images with OVMF (UEFI) instead of SeaBIOS.
    pub uefi: bool,
    /// Keep the console transcript here (default: a temporary file, kept on failure only).
    pub transcript: Option<PathBuf>,
    /// Copy the console to stderr as it comes.
    pub show_console: bool,
    /// Inspect the image and print the machine and QEMU command line; boot nothing.
    pub dry_run: bool,
    pub quiet: bool,
}

/// How long QEMU gets to power off after the `poweroff`.
const POWEROFF_GRACE: Duration = Duration::from_secs(60);
/// Console lines shown on failure.
const TAIL_LINES: usize = 30;

/// How a run ended (errors aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every check passed.
    Passed,
    Failed,
    /// Stopped by this signal (QEMU stopped, temporary files removed).
    Interrupted(nix::sys::signal::Signal),
}

/// Boots, checks and prints the report.
pub fn run(options: &Options) -> anyhow::Result<Ending> {
    // Ctrl-C stops QEMU (same process group) and this run, which then removes its temporary
    // files instead of dying with them in place.
    crate::exec::signals::install()?;
    match run_inner(options) {
        Err(e) if e.is::<Interrupted>() => Ok(Ending::Interrupted(
            crate::exec::signals::received().unwrap_or(nix::sys::signal::Signal::SIGINT),
        )),
        other => other,
    }
}

/// A stop signal arrived.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

fn check_interrupted() -> Result<(), Interrupted> {
    match crate::exec::signals::received() {
        Some(_) => Err(Interrupted),
        None => Ok(()),
    }
}

fn run_inner(options: &Options) -> anyhow::Result<Ending> {
    let started = Instant::now();
    let meta = std::fs::metadata(&options.image)
        .map_err(|e| ConfigError::new(format!("{}: {e}", options.image.display())))?;
    if !meta.is_file() {
        return Err(ConfigError::new(format!("{}: not a file", options.image.display())).into());
    }
    let say = |msg: &str| {
        if !options.quiet {
            eprintln!("pigen boot: {msg}");
        }
    };
    let log = LogSink::default();
    let work = WorkDir::new()?;

    let raw = raw_image(&options.image, &work.path, &say)
        .with_context(|| format!("reading {}", options.image.display()))?;
    let table = crate::export::image::read_table(&raw, &log)?;
    let listing = detect::fat_candidate(&table).and_then(|fat| fat_listing(&raw, fat, &log));
    let detected = detect::detect(&table, listing.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.image.display()))?;
    let arch = root_arch(&raw, detected.root, &work.path, &log)?;
    let (machine, kernel_note) = machine_for(options, &raw, &detected, arch, &work.path, &log)?;
    let summary = format!(
        "{} image ({}), root filesystem on partition {} ({}); booting it as {}{}",
        match detected.platform {
            Platform::Pc { gpt: true, .. } => "PC GPT",
            Platform::Pc { gpt: false, .. } => "PC MBR",
            Platform::Raspi { .. } => "Raspberry Pi",
        },
        arch.as_str(),
        detected.root.number,
        human(detected.root.bytes),
        machine.describe(),
        kernel_note
    );
    if !options.dry_run {
        say(&summary);
        require_program(machine.program(), machine.package())?;
    }
    if options.accel == Accel::Kvm {
        if let Machine::Pi { .. } = machine {
            return Err(ConfigError::new(
                "--accel kvm: KVM cannot run an ARM guest on this host; use --accel tcg",
            )
            .into());
        }
        if !Path::new("/dev/kvm").exists() {
            return Err(ConfigError::new("--accel kvm: /dev/kvm does not exist").into());
        }
    }

    let disk = work.path.join("disk.qcow2");
    let socket = work.path.join("console.sock");
    let argv = qemu::argv(&machine, options.accel, &disk, &socket);
    if options.dry_run {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{summary}")?;
        let quoted: Vec<String> = argv.iter().map(|a| crate::cli::shell_quote(a)).collect();
        writeln!(out, "{}", quoted.join(" "))?;
        return Ok(Ending::Passed);
    }
    let raw_len = std::fs::metadata(&raw)?.len();
    let raw_abs = std::fs::canonicalize(&raw)?;
    Cmd::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&raw_abs)
        .arg(&disk)
        .arg(qemu::disk_size(raw_len).to_string())
        .output(&log)?;

    let transcript_path = options
        .transcript
        .clone()
        .unwrap_or_else(|| work.transcript.clone());
    say(&argv.join(" "));
    let commands = Check::ALL
        .iter()
        .map(|c| c.command(detected.root.bytes))
        .collect();
    let session = Session::new(
        &options.user,
        &options.password,
        commands,
        Timing::default(),
    );
    let drive = Drive {
        options,
        say: &say,
        console: machine.console(),
    };
    let ended = drive.run(&argv, &socket, &transcript_path, session, &log)?;
    if ended.interrupted {
        let _ = std::fs::remove_file(&transcript_path);
        return Err(Interrupted.into());
    }

    // The report.
    let mut failures = Vec::new();
    let mut warnings = 0;
    let mut lines = Vec::new();
    let m = ended.session.milestones();
    let at = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{}s", d.as_secs()));
    lines.push(format!(
        "login prompt after {}, shell after {}",
        at(m.login_prompt),
        at(m.shell)
    ));
    if let Some(why) = &ended.failure {
        failures.push(why.clone());
    }
    for (check, result) in Check::ALL.iter().zip(ended.session.results()) {
        let found = check.interpret(result, detected.root.bytes);
        let expected = options
            .expects
            .iter()
            .rev()
            .find(|(c, _)| c == check)
            .map(|(_, v)| v.as_str());
        let outcome: Outcome = checks::judge(*check, found, expected);
        if outcome.verdict == Verdict::Warn {
            warnings += 1;
        }
        if outcome.verdict == Verdict::Fail {
            failures.push(match &outcome.expected {
                Some(want) => format!(
                    "{} is {:?}, expected {:?}",
                    check.name(),
                    outcome.found.value,
                    want
                ),
                None => format!(
                    "{} is {}{}",
                    check.name(),
                    outcome.found.value,
                    outcome
                        .found
                        .detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            });
        }
        lines.push(outcome.to_string());
    }
    let ran = ended.session.results().len();
    if ended.failure.is_none() && ran < Check::ALL.len() {
        failures.push(format!("only {ran} of {} checks ran", Check::ALL.len()));
    }
    let unchecked: Vec<&str> = options
        .expects
        .iter()
        .filter(|(c, _)| !Check::ALL[..ran].contains(c))
        .map(|(c, _)| c.name())
        .collect();
    if !unchecked.is_empty() && ended.failure.is_some() {
        failures.push(format!("not checked: {}", unchecked.join(", ")));
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "pigen boot {}: {}",
        options.image.display(),
        machine.describe()
    )?;
    for line in &lines {
        writeln!(out, "  {line}")?;
    }
    let took = started.elapsed().as_secs();
    if failures.is_empty() {
        match warnings {
            0 => writeln!(out, "PASS ({took}s)")?,
            1 => writeln!(out, "PASS with 1 warning ({took}s)")?,
            n => writeln!(out, "PASS with {n} warnings ({took}s)")?,
        }
        if options.transcript.is_none() {
            let _ = std::fs::remove_file(&transcript_path);
        } else {
            writeln!(out, "console transcript: {}", transcript_path.display())?;
        }
        return Ok(Ending::Passed);
    }
    writeln!(out, "FAIL ({took}s)")?;
    for failure in &failures {
        writeln!(out, "  {failure}")?;
    }
    drop(out);
    let text = console::clean(&std::fs::read(&transcript_path).unwrap_or_default());
    let tail: Vec<&str> = text.lines().collect();
    eprintln!("last console lines:");
    for line in &tail[tail.len().saturating_sub(TAIL_LINES)..] {
        eprintln!("  | {line}");
    }
    if !ended.qemu_tail.is_empty() {
        eprintln!("QEMU said:");
        for line in &ended.qemu_tail {
            eprintln!("  | {line}");
        }
    }
    eprintln!("console transcript: {}", transcript_path.display());
    Ok(Ending::Failed)
}

/// How the session ended.
struct Ended {
    session: Session,
    failure: Option<String>,
    interrupted: bool,
    qemu_tail: Vec<String>,
}

struct Drive<'a> {
    options: &'a Options,
    say: &'a dyn Fn(&str),
    console: &'static str,
}

impl Drive<'_> {
    /// Starts QEMU, connects to its console and runs the session to its end.
    fn run(
        &self,
        argv: &[String],
        socket: &Path,
        transcript_path: &Path,
        mut session: Session,
        log: &LogSink,
    ) -> anyhow::Result<Ended> {
        let mut transcript = File::create(transcript_path)
            .with_context(|| format!("creating {}", transcript_path.display()))?;
        let mut qemu = Cmd::new(&argv[0])
            .args(&argv[1..])
            .kill_with_parent()
            .spawn(log)?;
        let mut stream = connect(socket, &mut qemu)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let started = Instant::now();
        let deadline = started + self.options.timeout;
        let mut buf = vec![0u8; 64 * 1024];
        let mut announced = (false, false);
        let mut done_at: Option<Instant> = None;
        let mut interrupted = false;
        let failure = loop {
            if check_interrupted().is_err() {
                interrupted = true;
                break Some("interrupted".to_string());
            }
            let now = Instant::now();
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    0
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(_) => 0,
            };
            let input = &buf[..n];
            if n > 0 {
                transcript.write_all(input)?;
                if self.options.show_console {
                    let _ = std::io::stderr().write_all(input);
                }
            }
            let typed = session.step(input, now - started);
            if !typed.is_empty() {
                // A dead QEMU shows up below.
                let _ = stream.write_all(&typed);
            }
            let m = session.milestones();
            if let (Some(t), false) = (m.login_prompt, announced.0) {
                announced.0 = true;
                (self.say)(&format!("login prompt after {}s", t.as_secs()));
            }
            if let (Some(t), false) = (m.shell, announced.1) {
                announced.1 = true;
                (self.say)(&format!(
                    "logged in as {} after {}s; checking",
                    self.options.user,
                    t.as_secs()
                ));
            }
            match session.phase() {
                Phase::Failed(why) => break Some(why.clone()),
                Phase::Done => {
                    let since = *done_at.get_or_insert(now);
                    if qemu.try_wait().is_some() {
                        break None;
                    }
                    if session.poweroff_refused() || now - since > POWEROFF_GRACE {
                        break None;
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(status) = qemu.try_wait() {
                // Read what is left, for the transcript.
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    transcript.write_all(&buf[..n])?;
                }
                break Some(format!(
                    "QEMU {} while {}",
                    Background::describe(status),
                    waiting_for(session.phase(), self.console)
                ));
            }
            if now >= deadline {
                break Some(format!(
                    "timed out after {}s (--timeout) while {}",
                    self.options.timeout.as_secs(),
                    waiting_for(session.phase(), self.console)
                ));
            }
        };
        transcript.flush()?;
        let qemu_tail = if failure.is_some() {
            qemu.tail()
        } else {
            Vec::new()
        };
        let _ = qemu.stop(Duration::from_secs(10));
        Ok(Ended {
            session,
            failure,
            interrupted,
            qemu_tail,
        })
    }
}

/// What the session was waiting for, for messages.
fn waiting_for(phase: &Phase, console: &str) -> String {
    match phase {
        Phase::Boot => format!(
            "waiting for a login prompt on the serial console ({console}); the image needs a \
             getty there (PC: console={console} on the kernel command line)"
        ),
        Phase::LoginPrompt(_) | Phase::User(_) | Phase::PasswordPrompt(_) => {
            "logging in (no Password: prompt)".to_string()
        }
        Phase::Password(_) | Phase::Ready(_) => "waiting for the shell after logging in".into(),
        Phase::Pause { next: index, .. } | Phase::Running { index, .. } => format!(
            "running the {} check",
            Check::ALL.get(*index).map_or("last", |c| c.name())
        ),
        Phase::Done => "powering off".into(),
        Phase::Failed(why) => why.clone(),
    }
}

/// Connects to QEMU's console socket (QEMU starts the guest once connected).
fn connect(socket: &Path, qemu: &mut Background) -> anyhow::Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                if let Some(status) = qemu.try_wait() {
                    return Err(qemu.error(Background::describe(status)).into());
                }
                if Instant::now() > deadline {
                    return Err(anyhow::anyhow!(
                        "could not connect to QEMU's console at {}: {e}",
                        socket.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The machine to boot, and a note on where the kernel came from (Raspberry Pi).
fn machine_for(
    options: &Options,
    raw: &Path,
    detected: &Detected,
    arch: Arch,
    work: &Path,
    log: &LogSink,
) -> anyhow::Result<(Machine, String)> {
    match detected.platform {
        Platform::Pc { bios, esp, .. } => {
            let arch = match arch {
                Arch::Amd64 => PcArch::X86_64,
                Arch::I386 => PcArch::I386,
                other => bail!(
                    "a PC partition table, but the root filesystem is for {}: not bootable on a PC",
                    other.as_str()
                ),
            };
            let uefi = if options.uefi {
                if !esp {
                    return Err(
                        ConfigError::new("--uefi: the image has no EFI system partition").into(),
                    );
                }
                true
            } else if bios {
                false
            } else if esp {
                true
            } else {
                bail!("a GPT image without BIOS boot and EFI system partitions: no way to boot it")
            };
            let firmware = if uefi {
                if arch == PcArch::I386 {
                    bail!("UEFI boot of i386 images is not supported; boot it with BIOS (without --uefi)");
                }
                Firmware::Uefi(ovmf()?)
            } else {
                Firmware::Bios
            };
            Ok((Machine::Pc { arch, firmware }, String::new()))
        }
        Platform::Raspi { fat } => {
            if !matches!(arch, Arch::Arm64 | Arch::Armhf) {
                bail!(
                    "a Raspberry Pi boot partition, but the root filesystem is for {}",
                    arch.as_str()
                );
            }
            let listing = fat_listing(raw, fat, log).unwrap_or_default();
            let config_txt = fat_read(raw, fat, "config.txt", work, log).unwrap_or_default();
            let config = detect::parse_config_txt(&String::from_utf8_lossy(&config_txt));
            let root_boot = debugfs(raw, detected.root, "ls -p /boot", log)
                .map(|out| detect::parse_debugfs_ls(&out))
                .unwrap_or_default();
            let dtb_in_root = |path: &str| {
                debugfs(raw, detected.root, &format!("stat {path}"), log)
                    .ok()
                    .filter(|out| out.contains("Type: regular"))
                    .map(|_| path.to_string())
            };
            let boot: PiBoot =
                detect::pi_boot_files(arch, &listing, &config, &root_boot, &dtb_in_root)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", options.image.display()))?;
            let fetch = |source: &Source, name: &str| -> anyhow::Result<PathBuf> {
                let dst = work.join(name);
                match source {
                    Source::Fat(file) => {
                        let bytes = fat_read(raw, fat, file, work, log)?;
                        std::fs::write(&dst, bytes)?;
                    }
                    Source::Root(path) => debugfs_dump(raw, detected.root, path, &dst, log)?,
                }
                Ok(dst)
            };
            let kernel = fetch(&boot.kernel, "kernel")?;
            let initrd = boot
                .initrd
                .as_ref()
                .map(|s| fetch(s, "initrd"))
                .transpose()?;
            let dtb = boot.dtb.as_ref().map(|s| fetch(s, "dtb")).transpose()?;
            let cmdline = fat_read(raw, fat, "cmdline.txt", work, log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| format!("root=/dev/mmcblk0p{} rootwait", detected.root.number));
            let append = qemu::pi_append(&cmdline, boot.machine, boot.serial);
            let mut note = format!("; kernel {}", boot.kernel);
            if let Some(initrd) = &boot.initrd {
                note += &format!(", initramfs {initrd}");
            }
            if let Some(dtb) = &boot.dtb {
                note += &format!(", device tree {dtb}");
            }
            Ok((
                Machine::Pi {
                    machine: boot.machine,
                    kernel,
                    initrd,
                    dtb,
                    append,
                    serial: boot.serial,
                },
                note,
            ))
        }
    }
}

/// OVMF for x86_64 guests (Debian's `ovmf`).
fn ovmf() -> anyhow::Result<PathBuf> {
    [
        "/usr/share/ovmf/OVMF.fd",
        "/usr/share/OVMF/OVMF.fd",
        "/usr/share/qemu/OVMF.fd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .context("UEFI boot needs OVMF: apt-get install ovmf")
}

fn require_program(program: &str, package: &str) -> anyhow::Result<()> {
    let dirs = crate::check::search_path(std::env::var_os("PATH").as_deref());
    if crate::check::find_tool(program, &dirs).is_none() {
        bail!("{program} is not installed: apt-get install {package}");
    }
    Ok(())
}

/// mtools on an image file: no geometry checks.
fn mtools(program: &str) -> Cmd {
    Cmd::new(program)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
}

/// The top directory of the FAT filesystem in `part`; `None` when it is not FAT.
fn fat_listing(raw: &Path, part: Part, log: &LogSink) -> Option<Vec<String>> {
    let out = mtools("mdir")
        .arg("-b")
        .arg("-i")
        .arg(crate::export::fs::mtools_image(raw, part.offset))
        .arg("::/")
        .output(log)
        .ok()?;
    Some(detect::parse_mdir(&out.stdout))
}

/// A file from the FAT filesystem's top directory (names match in any case).
fn fat_read(
    raw: &Path,
    part: Part,
    name: &str,
    work: &Path,
    log: &LogSink,
) -> anyhow::Result<Vec<u8>> {
    let tmp = work.join("fat-file");
    let _ = std::fs::remove_file(&tmp);
    mtools("mcopy")
        .args(["-n", "-i"])
        .arg(crate::export::fs::mtools_image(raw, part.offset))
        .arg(format!("::/{name}"))
        .arg(&tmp)
        .output(log)?;
    let bytes =
        std::fs::read(&tmp).with_context(|| format!("reading {name} from the boot partition"))?;
    let _ = std::fs::remove_file(&tmp);
    Ok(bytes)
}

/// Runs one debugfs request on the ext filesystem in `part`; its stdout.
fn debugfs(raw: &Path, part: Part, request: &str, log: &LogSink) -> anyhow::Result<String> {
    let out = Cmd::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(ext_at(raw, part.offset))
        .output(log)?;
    Ok(out.stdout)
}

/// Copies the file at `path` in the root filesystem to `dst`.
fn debugfs_dump(
    raw: &Path,
    part: Part,
    path: &str,
    dst: &Path,
    log: &LogSink,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(dst);
    // debugfs reports a missing file on stderr and exits 0: the result tells.
    let request = format!("dump {path} {}", dst.display());
    Cmd::new("debugfs")
        .arg("-R")
        .arg(&request)
        .arg(ext_at(raw, part.offset))
        .output(log)?;
    if !dst.is_file() {
        bail!("{path} is not in the root filesystem");
    }
    Ok(())
}

/// The architecture of the root filesystem: the ELF header of init (symbolic links followed)
/// or of a shell.
fn root_arch(raw: &Path, root: Part, work: &Path, log: &LogSink) -> anyhow::Result<Arch> {
    let probe = work.join("elf-probe");
    let mut tried = Vec::new();
    for start in [
        "/sbin/init",
        "/lib/systemd/systemd",
        "/bin/sh",
        "/usr/bin/bash",
    ] {
        let mut path = start.to_string();
        for _ in 0..10 {
            let stat = debugfs(raw, root, &format!("stat {path}"), log)?;
            match detect::debugfs_link_target(&stat) {
                Some(target) => path = detect::resolve_link(&path, &target),
                None => break,
            }
        }
        match debugfs_dump(raw, root, &path, &probe, log) {
            Ok(()) => {
                let mut header = [0u8; 20];
                let n = File::open(&probe)?.read_at(&mut header, 0)?;
                match detect::elf_arch(&header[..n]) {
                    Ok(arch) => return Ok(arch),
                    Err(e) => tried.push(format!("{path}: {e}")),
                }
            }
            Err(e) => tried.push(format!("{e}")),
        }
    }
    bail!(
        "could not tell the root filesystem's architecture (partition {}): {}",
        root.number,
        tried.join("; ")
    )
}

/// The image as a raw disk image: the file itself, or unpacked into `work`.
fn raw_image(image: &Path, work: &Path, say: &dyn Fn(&str)) -> anyhow::Result<PathBuf> {
    let mut magic = [0u8; 6];
    let n = File::open(image)?.read_at(&mut magic, 0)?;
    let magic = &magic[..n];
    let format = if magic.starts_with(b"PK\x03\x04") {
        "zip"
    } else if magic.starts_with(b"\xfd7zXZ\x00") {
        "xz"
    } else if magic.starts_with(b"\x1f\x8b") {
        "gzip"
    } else if magic.starts_with(b"\x28\xb5\x2f\xfd") {
        "zstd"
    } else if magic.starts_with(b"QFI\xfb") {
        "qcow2"
    } else {
        return Ok(image.to_path_buf());
    };
    let dst = work.join("image.img");
    say(&format!(
        "unpacking the {format} image into {}",
        dst.display()
    ));
    let started = Instant::now();
    let file = File::open(image)?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    match format {
        "zip" => {
            let mut archive = zip::ZipArchive::new(File::open(image)?)?;
            let names: Vec<String> = (0..archive.len())
                .filter_map(|i| archive.by_index(i).ok().map(|f| f.name().to_string()))
                .collect();
            let images: Vec<usize> = (0..names.len())
                .filter(|&i| names[i].to_ascii_lowercase().ends_with(".img"))
                .collect();
            let index = match (images.as_slice(), names.len()) {
                ([one], _) => *one,
                ([], 1) => 0,
                _ => bail!(
                    "the zip archive holds {} files, not one .img: {}",
                    names.len(),
                    names.join(", ")
                ),
            };
            let entry = archive.by_index(index)?;
            write_sparse(entry, &dst)?;
        }
        "xz" => write_sparse(xz2::read::XzDecoder::new_multi_decoder(reader), &dst)?,
        "gzip" => write_sparse(flate2::read::MultiGzDecoder::new(reader), &dst)?,
        "zstd" => write_sparse(zstd::stream::read::Decoder::with_buffer(reader)?, &dst)?,
        _ => {
            Cmd::new("qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(image)
                .arg(&dst)
                .output(&LogSink::default())?;
        }
    }
    say(&format!("unpacked in {}s", started.elapsed().as_secs()));
    Ok(dst)
}

/// Writes everything `reader` gives into the new file `dst`, leaving all-zero blocks as holes.
fn write_sparse(mut reader: impl Read, dst: &Path) -> anyhow::Result<()> {
    let out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("decompressing"),
            }
        }
        if filled == 0 {
            break;
        }
        check_interrupted()?;
        crate::deploy::sparse::write_nonzero(&out, pos, &buf[..filled])
            .with_context(|| format!("writing {}", dst.display()))?;
        pos += filled as u64;
    }
    out.set_len(pos)?;
    Ok(())
}

/// The temporary directory of one run (overlay, unpacked image, kernel files, console socket),
/// and next to it the console transcript, which outlives it when kept.
struct WorkDir {
    path: PathBuf,
    transcript: PathBuf,
}

impl WorkDir {
    fn new() -> anyhow::Result<WorkDir> {
        let base = std::env::temp_dir();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("pigen-boot-{}-{stamp:08x}", std::process::id());
        let path = base.join(&name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir {
            transcript: base.join(format!("{name}.console.log")),
            path,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Files only (nothing is ever mounted here).
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_unpacking_keeps_zero_blocks_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[5 << 20] = 7;
        data[(8 << 20) - 1] = 9;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let src = dir.path().join("a.img.gz");
        std::fs::write(&src, gz).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let raw = raw_image(&src, &work, &|_| {}).unwrap();
        assert_eq!(raw, work.join("image.img"));
        assert_eq!(std::fs::read(&raw).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&raw).unwrap().blocks();
        assert!(blocks * 512 < 1 << 20, "{blocks} blocks allocated");
        // A raw image is used in place.
        let plain = dir.path().join("b.img");
        std::fs::write(&plain, &data[..4096]).unwrap();
        assert_eq!(raw_image(&plain, &work, &|_| {}).unwrap(), plain);
    }

    #[test]
    fn zip_archives_need_one_image() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("x.zip");
        let mut zip = zip::ZipWriter::new(File::create(&src).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("x.img", opts).unwrap();
        zip.write_all(b"disk").unwrap();
        zip.start_file("README", opts).unwrap();
        zip.write_all(b"hi").unwrap();
        zip.finish().unwrap();
        let work = dir.path().join("w");
        std::fs::create_dir(&work).unwrap();
        let raw = raw_image(&src, &work, &|_| {}).unwrap();
        assert_eq!(std::fs::read(raw).unwrap(), b"disk");
    }
}
