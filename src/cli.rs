//! Command line: `pigen build | plan | config | check | boot`. Exit codes: 0 success, 1 build (or
//! preflight) failure, 2 usage or configuration error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Env, HostFacts};
use crate::error::ConfigError;

#[derive(Parser, Debug)]
#[command(
    name = "pigen",
    version,
    about = "Build Raspberry Pi and Debian OS images from pi-gen style stage trees"
)]
pub struct Cli {
    /// Directory holding `stages/` (default: found from the current directory upwards).
    #[arg(long, global = true, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,
    /// Only errors and warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Diagnostics (`RUST_LOG` gives finer control).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the images, as pi-gen's build.sh does.
    Build {
        #[command(flatten)]
        config: ConfigArgs,
        /// Resume an interrupted or failed build with the same configuration.
        #[arg(long = "continue")]
        resume: bool,
        /// Install missing host packages with apt-get before building.
        #[arg(long)]
        install_deps: bool,
        /// Internal: this process is the build inside its namespaces.
        #[arg(long, hide = true)]
        inner: bool,
    },
    /// Print the steps a build would run, in order, without running anything.
    Plan {
        #[command(flatten)]
        config: ConfigArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print every effective variable, its value and where it came from.
    Config {
        #[command(flatten)]
        config: ConfigArgs,
        /// Show FIRST_USER_PASS and WPA_PASSWORD instead of masking them.
        #[arg(long)]
        show_secrets: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check that this host can run the build (tools, root, binfmt_misc, loop, FUSE, space).
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Install missing host packages with apt-get.
        #[arg(long)]
        install: bool,
    },
    /// Boot an image in QEMU, log in on the serial console, check it and report (exit 0 pass,
    /// 1 fail). A smoke test before flashing; the image is never modified.
    Boot(BootArgs),
    /// Tools for pigen's own scripts and benchmarks.
    #[command(hide = true, subcommand)]
    Internal(Internal),
}

#[derive(Args, Debug)]
pub struct BootArgs {
    /// Disk image: `.img`, or a deploy output (`.zip`, `.img.xz`, `.img.gz`, `.img.zst`,
    /// `.qcow2`).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Seconds for the whole run: boot, login and checks.
    #[arg(long, value_name = "S", default_value_t = 900)]
    pub timeout: u64,
    /// User to log in as (the image's FIRST_USER_NAME).
    #[arg(long, value_name = "U", default_value = "pi")]
    pub user: String,
    /// That user's password (FIRST_USER_PASS).
    #[arg(long, value_name = "P", default_value = config::vars::DEFAULT_FIRST_USER_PASS)]
    pub password: String,
    /// Turn a check into an assertion; may repeat. NAME: hostname, user, locale, timezone,
    /// keymap, ssh (enabled|disabled), system (running|degraded|…), rootfs (grown|not-grown).
    #[arg(long = "expect", value_name = "NAME=VALUE")]
    pub expects: Vec<String>,
    /// tcg (emulation, default) or kvm (PC images on an x86_64 host with working /dev/kvm).
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: crate::boot::qemu::Accel,
    /// Boot a PC image with UEFI (OVMF) instead of BIOS (SeaBIOS).
    #[arg(long)]
    pub uefi: bool,
    /// Write the console transcript to FILE and keep it (default: a temporary file, kept and
    /// named only when the run fails).
    #[arg(long, value_name = "FILE")]
    pub transcript: Option<PathBuf>,
    /// Copy the serial console to stderr as it comes.
    #[arg(long)]
    pub show_console: bool,
    /// Inspect the image and print how it would be booted (machine, kernel, QEMU command
    /// line); boot nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum Internal {
    /// Compress IMAGE with each deploy compression and print throughput and ratio.
    BenchCompression {
        image: PathBuf,
        /// Comma-separated DEPLOY_COMPRESSION values.
        #[arg(long, default_value = "zip,gz,xz,zstd", value_delimiter = ',')]
        formats: Vec<String>,
        /// COMPRESSION_LEVEL (clamped to each format's range).
        #[arg(long, default_value_t = 6)]
        level: u32,
        /// Where the compressed files are written (and deleted); default: next to IMAGE.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Assemble a disk image from TREE as an export does (Raspberry Pi layout: FAT boot
    /// partition from /boot/firmware, ext4 root) and print how long each part took. The tree's
    /// fstab and cmdline.txt placeholders are filled in.
    BenchExport {
        tree: PathBuf,
        image: PathBuf,
        /// BOOT_SIZE.
        #[arg(long, default_value = "256M")]
        boot_size: String,
        /// ROOT_MARGIN.
        #[arg(long, default_value = "10%+128M")]
        root_margin: String,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Config file (bash fragment, or TOML when it ends in .toml); may repeat, read in order.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Set a variable, overriding config files and environment; may repeat.
    #[arg(long = "set", value_name = "VAR=VALUE")]
    pub sets: Vec<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Prints an error once and maps it to an exit code.
fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(config_err) = err.downcast_ref::<ConfigError>() {
        for line in &config_err.0 {
            eprintln!("pigen: error: {line}");
        }
        return ExitCode::from(2);
    }
    eprintln!("pigen: error: {err:#}");
    ExitCode::from(1)
}

fn init_tracing(cli: &Cli) {
    let default = if cli.verbose {
        "pigen=debug"
    } else {
        "pigen=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let quiet = cli.quiet;
    // Internal tools and boot work outside a stage tree: before base_dir.
    if let Command::Internal(internal) = &cli.command {
        return run_internal(internal, quiet);
    }
    if let Command::Boot(args) = &cli.command {
        return run_boot(args, quiet);
    }
    let base_dir = base_dir(cli.base_dir.as_deref())?;
    let env: Env = std::env::vars().collect();
    match cli.command {
        Command::Config {
            config,
            show_secrets,
            json,
        } => {
            let cfg = load_config(&config, &env, &base_dir, quiet)?;
            let mut out = std::io::stdout().lock();
            if json {
                let vars: Vec<_> = cfg.vars.iter().map(|v| shown(v, show_secrets)).collect();
                serde_json::to_writer_pretty(&mut out, &vars)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", config_table(&cfg, show_secrets))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { config, json } => {
            let cfg = load_config(&config, &env, &base_dir, quiet)?;
            let plan = make_plan(&cfg, &env, quiet)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &plan)?;
                writeln!(out)?;
            } else {
                write!(out, "{plan}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Internal(_) | Command::Boot(_) => unreachable!("run before base_dir"),
        Command::Check { config, install } => {
            let cfg = load_config(&config, &env, &base_dir, quiet)?;
            check_apt_proxy(&cfg)?;
            let report = crate::check::run_check(&cfg, &base_dir, install)?;
            print!("{report}");
            Ok(if report.would_fail() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Build {
            config,
            resume,
            install_deps,
            inner,
        } => {
            if inner {
                return build_inner(&config, &env, &base_dir, resume, cli.verbose, quiet);
            }
            let mut cfg = load_config(&config, &env, &base_dir, quiet)?;
            let mut inner_env = vec![];
            if resume {
                // --continue keeps the interrupted build's IMG_DATE (file names must not change).
                if let Some(state) = crate::exec::state::BuildState::load(&cfg.work_dir)? {
                    let defaulted = cfg
                        .var("IMG_DATE")
                        .is_some_and(|v| v.origin == config::Origin::Default);
                    if defaulted && state.img_date != cfg.get("IMG_DATE") {
                        let mut env = env.clone();
                        env.insert("IMG_DATE".into(), state.img_date.clone());
                        cfg = load_config(&config, &env, &base_dir, true)?;
                    }
                }
            }
            // Planned here so a bad tree is reported before the preflight and the namespaces.
            make_plan(&cfg, &env, quiet)?;
            check_apt_proxy(&cfg)?;
            let mut report = crate::check::run_check(&cfg, &base_dir, install_deps)?;
            let machine = nix::sys::utsname::uname()?;
            let foreign = !cfg
                .target_arch
                .runs_natively_on(machine.machine().to_str().unwrap_or(""));
            if report.would_fail() && foreign {
                // A missing binfmt handler is something pigen fixes itself when the emulator
                // is installed; the check then tells what is still missing.
                if crate::exec::chroot::ensure_binfmt(cfg.target_arch).is_ok() {
                    report = crate::check::run_check(&cfg, &base_dir, false)?;
                }
            }
            if report.would_fail() {
                eprint!("{report}");
                anyhow::bail!("this host cannot run the build yet; fix the rows above (or run with --install-deps)");
            }
            // The build itself runs as PID 1 of its own namespaces (see exec::namespace); it
            // resolves the same configuration again, with IMG_DATE pinned.
            inner_env.push(("IMG_DATE".to_string(), cfg.get("IMG_DATE").to_string()));
            let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            args.push("--inner".into());
            let code = crate::exec::namespace::run_isolated(&args, &inner_env)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

fn run_boot(args: &BootArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut expects = Vec::new();
    let mut bad = Vec::new();
    for arg in &args.expects {
        match crate::boot::checks::parse_expect(arg) {
            Ok(pair) => expects.push(pair),
            Err(e) => bad.push(e),
        }
    }
    if args.timeout == 0 {
        bad.push("--timeout 0: give the seconds the whole run may take".to_string());
    }
    if !bad.is_empty() {
        return Err(ConfigError(bad).into());
    }
    let options = crate::boot::Options {
        image: args.image.clone(),
        timeout: std::time::Duration::from_secs(args.timeout),
        user: args.user.clone(),
        password: args.password.clone(),
        expects,
        accel: args.accel,
        uefi: args.uefi,
        transcript: args.transcript.clone(),
        show_console: args.show_console,
        dry_run: args.dry_run,
        quiet,
    };
    Ok(match crate::boot::run(&options)? {
        crate::boot::Ending::Passed => ExitCode::SUCCESS,
        crate::boot::Ending::Failed => ExitCode::from(1),
        crate::boot::Ending::Interrupted(signal) => {
            eprintln!("pigen boot: interrupted by {signal}; QEMU and temporary files are gone, the image is untouched");
            ExitCode::from((128 + signal as i32) as u8)
        }
    })
}

fn run_internal(internal: &Internal, quiet: bool) -> anyhow::Result<ExitCode> {
    match internal {
        Internal::BenchCompression {
            image,
            formats,
            level,
            out_dir,
        } => {
            let formats = formats
                .iter()
                .map(|f| match config::Compression::parse(f) {
                    Some(config::Compression::None) | None => {
                        anyhow::bail!("--formats: {f:?} is not one of zip, gz, xz, zstd")
                    }
                    Some(c) => Ok(c),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let out_dir = match out_dir {
                Some(dir) => dir.clone(),
                None => image
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            };
            let rows =
                crate::deploy::bench::bench_compression(image, &formats, *level, &out_dir, quiet)?;
            print!("{}", crate::deploy::bench::report(image, &rows)?);
            Ok(ExitCode::SUCCESS)
        }
        Internal::BenchExport {
            tree,
            image,
            boot_size,
            root_margin,
        } => {
            use crate::export::layout::{FsType, Settings, Target};
            let settings = Settings {
                target: Target::Raspi,
                boot_fstype: FsType::Vfat,
                boot_size: config::resolve::parse_size(boot_size)
                    .ok_or_else(|| ConfigError::new(format!("--boot-size {boot_size:?}")))?,
                root_margin: config::resolve::parse_margin(root_margin)
                    .ok_or_else(|| ConfigError::new(format!("--root-margin {root_margin:?}")))?,
                fat_codepage: "437".into(),
                seed: "bench-export".into(),
                epoch: None,
            };
            let log = crate::exec::cmd::LogSink::default();
            let start = std::time::Instant::now();
            let made = crate::export::image::assemble_with(
                &settings,
                tree,
                image,
                &crate::export::image::Options {
                    name: "bench-export",
                    log: &log,
                    progress: None,
                },
            )?;
            let total = start.elapsed();
            println!("{}", made.summary.trim_end());
            for (part, took) in &made.timings {
                println!("part {part:<20} {:8.2} s", took.as_secs_f64());
            }
            println!("total_seconds {:.3}", total.as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The build proper, inside the namespaces: plan, run every stage, report.
fn build_inner(
    args: &ConfigArgs,
    env: &Env,
    base_dir: &Path,
    resume: bool,
    verbose: bool,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    use crate::exec::build::{run_build, BuildError, BuildOptions};
    use crate::exec::buildlog::{BuildLog, Verbosity};
    crate::exec::namespace::init_build_process()?;
    let cfg = load_config(args, env, base_dir, true)?;
    let plan = make_plan(&cfg, env, true)?;
    crate::exec::env::bash_functions()
        .map_err(|e| anyhow::anyhow!("preparing the shell functions for stage scripts: {e}"))?;
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating WORK_DIR {}", cfg.work_dir.display()))?;
    let verbosity = if quiet {
        Verbosity::Quiet
    } else if verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let log = BuildLog::open(std::path::Path::new(cfg.get("LOG_FILE")), verbosity)?;
    let result = run_build(&cfg, &plan, env, &BuildOptions { resume }, &log);
    log.finish();
    let resume_hint = || {
        let mut words: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--inner" && a != "--continue")
            .collect();
        if let Some(pos) = words.iter().position(|w| w == "build") {
            words.insert(pos + 1, "--continue".into());
        }
        format!("pigen {}", words.join(" "))
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(BuildError::Step { step, error, hint }) => {
            eprintln!(
                "pigen: error: step {step} failed: `{}` {}",
                error.command, error.how
            );
            if !error.tail.is_empty() {
                eprintln!("  last output:");
                for line in &error.tail {
                    eprintln!("    {line}");
                }
            }
            if let Some(hint) = hint {
                eprintln!("  {hint}");
            }
            eprintln!("  full log: {}", log.path().display());
            eprintln!("  after fixing it: {}", resume_hint());
            Ok(ExitCode::from(1))
        }
        Err(BuildError::Interrupted { signal }) => {
            eprintln!(
                "pigen: interrupted by {signal}; everything is unmounted; resume with: {}",
                resume_hint()
            );
            let code = if signal == nix::sys::signal::Signal::SIGINT {
                130
            } else {
                128 + signal as i32
            };
            Ok(ExitCode::from(code as u8))
        }
        Err(BuildError::Config(e)) => Err(e.into()),
        Err(BuildError::Other(e)) => Err(e),
    }
}

/// `--base-dir`, else the nearest directory upwards from the current one that holds
/// `stages/` (pigen layout) or `export-image/` next to `stage*` directories (pi-gen layout).
fn base_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    if let Some(dir) = given {
        let dir = cwd.join(dir);
        if !dir.is_dir() {
            return Err(ConfigError::new(format!(
                "--base-dir {}: no such directory; give the directory holding stages/",
                dir.display()
            ))
            .into());
        }
        return Ok(std::fs::canonicalize(&dir).unwrap_or(dir));
    }
    for dir in cwd.ancestors() {
        if dir.join("stages").is_dir()
            || (dir.join("export-image").is_dir() && dir.join("stage0").is_dir())
        {
            return Ok(dir.to_path_buf());
        }
    }
    Err(ConfigError::new(format!(
        "no stages/ directory in {} or any parent; run pigen inside your checkout or pass --base-dir DIR",
        cwd.display()
    ))
    .into())
}

/// Loads, resolves and validates; prints warnings. Touches nothing on disk.
pub fn load_config(
    args: &ConfigArgs,
    env: &Env,
    base_dir: &Path,
    quiet: bool,
) -> anyhow::Result<Config> {
    let loaded = config::load(&args.files, &args.sets, env)?;
    let host = HostFacts::gather(base_dir);
    let cfg = config::resolve::resolve(&loaded, env, base_dir, &host)?;
    if !quiet {
        for warning in &cfg.warnings {
            eprintln!("pigen: warning: {warning}");
        }
    }
    Ok(cfg)
}

/// Scans the stage trees and plans the build; prints the plan's warnings (fragment output).
fn make_plan(cfg: &Config, env: &Env, quiet: bool) -> anyhow::Result<crate::plan::Plan> {
    let scanned = crate::scan::scan(cfg, env)?;
    let plan = crate::plan::plan(cfg, &scanned)?;
    if !quiet {
        for warning in &plan.warnings {
            eprintln!("pigen: warning: {warning}");
        }
    }
    Ok(plan)
}

/// The original refused to start when `curl APT_PROXY` failed; so do we, before touching disk.
fn check_apt_proxy(cfg: &Config) -> Result<(), ConfigError> {
    let Some(var) = cfg.var("APT_PROXY") else {
        return Ok(());
    };
    config::proxy::probe(&var.value, std::time::Duration::from_secs(5)).map_err(|why| {
        ConfigError::new(format!(
            "APT_PROXY={:?} ({}): {why}; start the proxy or remove APT_PROXY",
            var.value, var.origin
        ))
    })
}

const MASK: &str = "********";

fn is_secret(name: &str) -> bool {
    config::vars::lookup(name).is_some_and(|d| d.kind == config::vars::Kind::Secret)
}

fn shown(var: &config::Var, show_secrets: bool) -> config::Var {
    let mut var = var.clone();
    if is_secret(&var.name) && !show_secrets {
        var.value = MASK.to_string();
    }
    var
}

/// `pigen config`: NAME, VALUE (shell-quoted, so a line can be pasted into a config), ORIGIN;
/// then the known variables that stay unset.
fn config_table(cfg: &Config, show_secrets: bool) -> String {
    let rows: Vec<(String, String, String)> = cfg
        .vars
        .iter()
        .map(|v| {
            let value = if is_secret(&v.name) && !show_secrets {
                MASK.to_string()
            } else {
                shell_quote(&v.value)
            };
            let origin = if v.known {
                v.origin.to_string()
            } else {
                format!("{} (not a pigen variable; exported to scripts)", v.origin)
            };
            (v.name.clone(), value, origin)
        })
        .collect();
    let name_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    let value_w = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 60);
    let mut out = format!("{:name_w$}  {:value_w$}  ORIGIN\n", "NAME", "VALUE");
    for (name, value, origin) in rows {
        out += &format!("{name:name_w$}  {value:value_w$}  {origin}\n");
    }
    let unset: Vec<&str> = config::vars::VARS
        .iter()
        .map(|d| d.name)
        .filter(|n| cfg.var(n).is_none())
        .collect();
    if !unset.is_empty() {
        out += &format!("unset: {}\n", unset.join(" "));
    }
    out
}

/// Quotes for bash when needed: bare when safe, else single quotes; control characters as
/// `$'…'` escapes so one variable stays on one line.
pub fn shell_quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+,=".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        return value.to_string();
    }
    if value.chars().any(char::is_control) {
        let mut out = String::from("$'");
        for c in value.chars() {
            match c {
                '\n' => out += "\\n",
                '\t' => out += "\\t",
                '\'' => out += "\\'",
                '\\' => out += "\\\\",
                c if c.is_control() => out += &format!("\\x{:02x}", c as u32),
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_forms() {
        assert_eq!(shell_quote("stage0"), "stage0");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("English (US)"), "'English (US)'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a\nb"), r"$'a\nb'");
    }
}
