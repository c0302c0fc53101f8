//! Command line: `pigen build | plan | config | check`. Exit codes: 0 success, 1 build (or
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
        } => {
            let cfg = load_config(&config, &env, &base_dir, quiet)?;
            let plan = make_plan(&cfg, &env, quiet)?;
            check_apt_proxy(&cfg)?;
            let report = crate::check::run_check(&cfg, &base_dir, install_deps)?;
            if report.would_fail() {
                eprint!("{report}");
                anyhow::bail!("this host cannot run the build yet; fix the rows above (or run with --install-deps)");
            }
            let _ = (resume, plan);
            anyhow::bail!("running stages is not implemented in this version of pigen; `pigen plan` shows what would run")
        }
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
