//! Deploy: the last step of an export. From the assembled raw disk image `N.img` it produces, in
//! `DEPLOY_DIR/<IMG_FILENAME>/` (behavior reference §5.2 steps 4 and 11–15, §5.3; `N` =
//! `IMG_FILENAME` + `IMG_SUFFIX`):
//!
//! | file | when |
//! |---|---|
//! | `ARCHIVE_FILENAME<IMG_SUFFIX>.zip` holding `N.img` | `DEPLOY_COMPRESSION=zip` (the default, `DEPLOY_ZIP=1`) |
//! | `N.img.xz` / `N.img.gz` / `N.img.zst` | `xz` / `gz` / `zstd`, at `COMPRESSION_LEVEL` |
//! | `N.img` | `DEPLOY_COMPRESSION=none`, or `KEEP_IMG=1` |
//! | `N.info` | always: the issue text and package list |
//! | `N.root-ext4.img` | always: the root partition, cut out of the image |
//! | `N.bmap` | `BMAP=1` |
//! | `N.qcow2` | `USE_QEMU=1` or `OUTPUT_QCOW2=1` (compressed qcow2) |
//! | `SHA256SUMS` | always: every regular file of the directory, as `sha256sum -b ./<name>` prints it |
//!
//! The names are exactly [`crate::plan::deploy_files`]' (checked on every deploy).
//!
//! # Atomicity
//!
//! Nothing is written into the deploy directory itself. Everything goes into a staging
//! directory next to it, `DEPLOY_DIR/.<IMG_FILENAME>.partial-<pid>`, which is synced and then
//! swapped with the deploy directory in one `renameat2(RENAME_EXCHANGE)` (or two renames where
//! the file system lacks it, the old directory put back if the second fails); the old
//! directory is deleted after the swap. So at any moment `DEPLOY_DIR/<IMG_FILENAME>` is either
//! the complete old deploy or the complete new one, and a failure (or a kill) before the swap
//! leaves the old one untouched. A failed deploy removes its staging directory; one left by a
//! killed process is removed by the next deploy of the same name (a lock file,
//! `DEPLOY_DIR/.<IMG_FILENAME>.lock`, keeps two pigen processes from deploying the same name at
//! once, so any staging directory found while holding it is stale).
//!
//! # Several exports, several builds
//!
//! The original deleted the deploy directory at every export, so only the last exported stage
//! survived. Here ([`Landing`]): the **first** export of a build replaces the directory as a
//! whole — files of an earlier build of the same `IMG_FILENAME` disappear, as in the original —
//! and every **later** export of the same build adds its files to what is there (hard links of
//! the files it keeps, so nothing is copied) and rewrites `SHA256SUMS` over all of them.
//! [`Deployer`] tracks this for a build.
//!
//! Inputs are only read: the caller removes `N.img` from the work directory when it wants to.

pub mod bench;
mod bmap;
mod compress;
pub(crate) mod sparse;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::HumanBytes;
use sha2::{Digest, Sha256};

pub use compress::{check_level, compress, threads, Compressed};

use crate::config::{Compression, Config};
use crate::exec::buildlog::BuildLog;
use crate::exec::cmd::LogSink;
use crate::exec::Cmd;
use crate::plan::{ExportPlan, SHARED_DEPLOY_FILES};

/// The checksum file every export of a build shares.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Where the root partition lies in the disk image, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootPartition {
    pub offset: u64,
    pub size: u64,
}

/// What the export hands to the deploy.
#[derive(Clone, Copy, Debug)]
pub struct DeployInput<'a> {
    /// The finished raw disk image, `WORK_DIR/export-image/N.img` (read only).
    pub image: &'a Path,
    pub root: RootPartition,
    /// The whole text of `N.info` (see [`info_text`]).
    pub info: &'a str,
}

/// How an export's files land in the deploy directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landing {
    /// The directory afterwards holds this export's files only (the build's first export).
    Replace,
    /// This export's files are added to (or replace same-named files in) what is there.
    Add,
}

/// Deploys the exports of one build: the first export into a deploy directory replaces it,
/// later ones add to it.
#[derive(Debug, Default)]
pub struct Deployer {
    landed: HashSet<PathBuf>,
}

impl Deployer {
    pub fn new() -> Deployer {
        Deployer::default()
    }

    pub fn deploy(
        &mut self,
        config: &Config,
        export: &ExportPlan,
        input: &DeployInput<'_>,
        log: &BuildLog,
    ) -> anyhow::Result<Deployed> {
        let landing = if self.landed.contains(&export.deploy_dir) {
            Landing::Add
        } else {
            Landing::Replace
        };
        let deployed = deploy(config, export, input, log, landing)?;
        self.landed.insert(export.deploy_dir.clone());
        Ok(deployed)
    }
}

/// What a deploy wrote.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub dir: PathBuf,
    /// This export's files (without `SHA256SUMS`), in deploy order.
    pub files: Vec<DeployedFile>,
    pub compressed: Option<Compressed>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedFile {
    pub name: String,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// `N.info`: the issue text (`print_issue` output) followed, when it has no package list of its
/// own, by `Packages:` and `packages` (see [`package_list`]).
pub fn info_text(issue: &str, packages: &str) -> String {
    let mut text = issue.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !packages.is_empty() && !text.lines().any(|l| l == "Packages:") {
        text.push_str("\nPackages:\n");
        text.push_str(packages);
        if !packages.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

/// The installed packages of the tree at `root`, one `name<TAB>version<TAB>arch` line each,
/// from its dpkg database (`dpkg-query -W --admindir`; nothing runs inside the tree).
pub fn package_list(root: &Path, log: &LogSink) -> anyhow::Result<String> {
    let out = Cmd::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").to_string_lossy()
        ))
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
        ])
        .output(log)?;
    let mut list = String::new();
    for line in out.stdout.lines() {
        if let Some((status, rest)) = line.split_once('\t') {
            // `ii ` and friends: installed (or half-configured, still installed) packages.
            if status
                .as_bytes()
                .get(1)
                .is_some_and(|s| matches!(s, b'i' | b'F' | b'W' | b't'))
            {
                list.push_str(rest);
                list.push('\n');
            }
        }
    }
    Ok(list)
}

/// Deploys one export (see the module documentation).
pub fn deploy(
    config: &Config,
    export: &ExportPlan,
    input: &DeployInput<'_>,
    log: &BuildLog,
    landing: Landing,
) -> anyhow::Result<Deployed> {
    check_level(config.compression, config.compression_level)?;
    let deploy_dir = &export.deploy_dir;
    let top = deploy_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .context("the deploy directory has no parent")?;
    if config.deploy_dir.as_os_str().is_empty() || config.deploy_dir == Path::new("/") {
        bail!(
            "DEPLOY_DIR={:?}: refusing to deploy into an empty path or /",
            config.deploy_dir
        );
    }
    let dir_name = deploy_dir
        .file_name()
        .context("the deploy directory has no name")?
        .to_string_lossy()
        .into_owned();

    let image = File::open(input.image)
        .with_context(|| format!("opening the disk image {}", input.image.display()))?;
    let image_meta = image.metadata()?;
    if !image_meta.is_file() {
        bail!("{} is not a regular file", input.image.display());
    }
    let image_len = image_meta.len();
    let root = input.root;
    if root.size == 0
        || root
            .offset
            .checked_add(root.size)
            .is_none_or(|e| e > image_len)
    {
        bail!(
            "the root partition (offset {}, {} bytes) is not inside {} ({} bytes)",
            root.offset,
            root.size,
            input.image.display(),
            image_len
        );
    }

    // The plan told the user which files to expect: hold deploy to it, before the long work.
    let planned: BTreeSet<String> = export
        .deploy_files
        .iter()
        .filter(|f| !SHARED_DEPLOY_FILES.contains(&f.as_str()))
        .cloned()
        .collect();
    let will_make = file_names(config, export);
    if will_make != planned {
        bail!("internal error: deploy would make {will_make:?} but the plan lists {planned:?}");
    }

    fs::create_dir_all(top).with_context(|| format!("creating {}", top.display()))?;
    let _lock = lock(top, &dir_name, log)?;
    remove_stale_staging(top, &dir_name, log);
    let staging = Staging::create(top.join(format!(".{dir_name}.partial-{}", std::process::id())))?;
    let stage = staging.path();
    let n = &export.name;
    log.line(&format!("Deploying {n} into {}", deploy_dir.display()));

    let mut files: Vec<DeployedFile> = Vec::new();
    let mut record = |name: String, bytes: u64, digest: &[u8]| {
        files.push(DeployedFile {
            name,
            bytes,
            sha256: sparse::hex(digest),
        })
    };

    // N.info
    let info_name = format!("{n}.info");
    write_synced(&stage.join(&info_name), input.info.as_bytes())?;
    record(
        info_name,
        input.info.len() as u64,
        &Sha256::digest(input.info.as_bytes()),
    );

    // N.root-ext4.img
    let root_name = format!("{n}.root-ext4.img");
    log.line(&format!(
        "Extracting the root partition ({} at byte {}) into {root_name}",
        HumanBytes(root.size),
        root.offset
    ));
    let digest = copy_sparse(&image, root.offset, root.size, &stage.join(&root_name))?;
    record(root_name, root.size, &digest);
    checkpoint("root extracted")?;

    // The compressed image.
    let img_name = format!("{n}.img");
    let mut compressed = None;
    if let Some(name) = compressed_name(config, export) {
        let what = format!(
            "Compressing {img_name} ({} level {})",
            config.compression.name(),
            config.compression_level
        );
        log.line(&format!("{what} into {name}"));
        let result = {
            let progress = log.bytes(&what, image_len);
            compress(
                input.image,
                &stage.join(&name),
                config.compression,
                config.compression_level,
                &img_name,
                &mut |done| progress.set(done),
            )?
        };
        log.line(&format!(
            "Compressed {img_name}, {}, into {name}, {} ({:.1}%), in {:.1} s: {}/s",
            HumanBytes(result.input_bytes),
            HumanBytes(result.output_bytes),
            result.ratio() * 100.0,
            result.elapsed.as_secs_f64(),
            HumanBytes(result.rate() as u64)
        ));
        record(name, result.output_bytes, &result.output_sha256);
        compressed = Some(result);
    }
    checkpoint("compressed")?;

    // The raw image, when uncompressed or KEEP_IMG=1.
    if config.compression == Compression::None || config.flag("KEEP_IMG") {
        let digest = copy_sparse(&image, 0, image_len, &stage.join(&img_name))?;
        record(img_name.clone(), image_len, &digest);
    }

    if config.flag("BMAP") {
        let name = format!("{n}.bmap");
        let text = bmap::create(input.image)
            .with_context(|| format!("mapping the blocks of {}", input.image.display()))?;
        write_synced(&stage.join(&name), text.as_bytes())?;
        record(name, text.len() as u64, &Sha256::digest(text.as_bytes()));
    }

    if config.use_qemu || config.flag("OUTPUT_QCOW2") {
        let name = format!("{n}.qcow2");
        let out = stage.join(&name);
        log.line(&format!("Converting {img_name} into {name}"));
        qcow2_command(input.image, &out).run(log.sink(), |l| log.output_line(l))?;
        sync_file(&out)?;
        let digest = sparse::sha256_file(&out)?;
        record(name, fs::metadata(&out)?.len(), &digest);
    }
    checkpoint("staged")?;

    let made: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    if made != planned.iter().map(String::as_str).collect() {
        bail!("internal error: deploy made {made:?} but the plan lists {planned:?}");
    }

    // Everything the new directory will hold, then its checksums.
    let mut sums: BTreeMap<String, String> = files
        .iter()
        .map(|f| (f.name.clone(), f.sha256.clone()))
        .collect();
    if landing == Landing::Add && deploy_dir.is_dir() {
        let old_sums = read_sums(&deploy_dir.join(SUMS_FILE));
        for name in carry_over(deploy_dir, stage, &made)? {
            if let Some(sum) = old_sums.get(&name) {
                sums.entry(name).or_insert_with(|| sum.clone());
            }
        }
    }
    write_sums(stage, &sums)?;
    sync_dir(stage)?;
    checkpoint("before swap")?;

    swap_into_place(&staging, deploy_dir)?;
    sync_dir(top)?;
    log.line(&format!(
        "Deployed {}: {}",
        deploy_dir.display(),
        files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(Deployed {
        dir: deploy_dir.clone(),
        files,
        compressed,
    })
}

/// The names of the files [`deploy`] writes for `export` (without `SHA256SUMS`).
fn file_names(config: &Config, export: &ExportPlan) -> BTreeSet<String> {
    let n = &export.name;
    let mut names: BTreeSet<String> = [format!("{n}.info"), format!("{n}.root-ext4.img")].into();
    names.extend(compressed_name(config, export));
    if config.compression == Compression::None || config.flag("KEEP_IMG") {
        names.insert(format!("{n}.img"));
    }
    if config.flag("BMAP") {
        names.insert(format!("{n}.bmap"));
    }
    if config.use_qemu || config.flag("OUTPUT_QCOW2") {
        names.insert(format!("{n}.qcow2"));
    }
    names
}

/// The compressed image's name (the plan's naming: `deploy_files`).
fn compressed_name(config: &Config, export: &ExportPlan) -> Option<String> {
    let n = &export.name;
    Some(match config.compression {
        Compression::Zip => format!(
            "{}{}.zip",
            config.get("ARCHIVE_FILENAME"),
            export.img_suffix
        ),
        Compression::Xz => format!("{n}.img.xz"),
        Compression::Gz => format!("{n}.img.gz"),
        Compression::Zstd => format!("{n}.img.zst"),
        Compression::None => return None,
    })
}

/// `qemu-img convert` of the raw image into a compressed qcow2 (zlib clusters, readable by
/// every qemu), several clusters compressed at once.
fn qcow2_command(image: &Path, out: &Path) -> Cmd {
    Cmd::new("qemu-img")
        .args([
            "convert", "-f", "raw", "-O", "qcow2", "-c", "-W", "-m", "16",
        ])
        .arg(image)
        .arg(out)
}

fn copy_sparse(src: &File, offset: u64, len: u64, dst: &Path) -> anyhow::Result<[u8; 32]> {
    let out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let digest = sparse::copy_range(src, offset, len, &out)
        .with_context(|| format!("writing {}", dst.display()))?;
    out.sync_all()
        .with_context(|| format!("writing {}", dst.display()))?;
    Ok(digest)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn sync_file(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    sync_file(path)
}

/// Puts the entries of `old` that this export does not produce into `new`: files as hard links
/// (a copy where linking fails), directories as trees of links, symlinks as symlinks. Returns
/// the names of the regular files carried over.
fn carry_over(old: &Path, new: &Path, produced: &BTreeSet<&str>) -> anyhow::Result<Vec<String>> {
    let mut kept = Vec::new();
    for entry in fs::read_dir(old).with_context(|| format!("reading {}", old.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == SUMS_FILE || produced.contains(name_str.as_ref()) {
            continue;
        }
        let from = entry.path();
        let to = new.join(&name);
        let file_type = entry.file_type()?;
        link_tree(&from, &to, file_type)
            .with_context(|| format!("keeping {} in the new deploy", from.display()))?;
        if file_type.is_file() {
            kept.push(name_str.into_owned());
        }
    }
    Ok(kept)
}

fn link_tree(from: &Path, to: &Path, file_type: fs::FileType) -> io::Result<()> {
    if file_type.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else if file_type.is_dir() {
        fs::create_dir(to)?;
        fs::set_permissions(to, fs::metadata(from)?.permissions())?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            link_tree(
                &entry.path(),
                &to.join(entry.file_name()),
                entry.file_type()?,
            )?;
        }
        Ok(())
    } else if file_type.is_file() {
        fs::hard_link(from, to).or_else(|_| fs::copy(from, to).map(drop))
    } else {
        Ok(()) // sockets, fifos, devices: not deploy material
    }
}

/// `name → hex` from a `SHA256SUMS` file as [`write_sums`] writes it (missing file: empty).
fn read_sums(path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let escaped = line.starts_with('\\');
            let line = if escaped { &line[1..] } else { line };
            let (hex, name) = line.split_once(' ')?;
            let name = name.strip_prefix('*').unwrap_or(name);
            let name = name.strip_prefix("./").unwrap_or(name);
            let name = if escaped {
                unescape(name)
            } else {
                name.to_string()
            };
            (hex.len() == 64).then(|| (name, hex.to_string()))
        })
        .collect()
}

/// `SHA256SUMS` in `dir` over every regular file in it (but itself), sorted by name, in the
/// format of the original (`sha256sum -b ./<name>`: `<hex> *./<name>`); `known` supplies
/// digests already computed, the rest are hashed here.
fn write_sums(dir: &Path, known: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && name != SUMS_FILE {
            names.push(name);
        }
    }
    names.sort();
    let mut text = String::new();
    for name in names {
        let hex = match known.get(&name) {
            Some(hex) => hex.clone(),
            None => sparse::hex(
                &sparse::sha256_file(&dir.join(&name))
                    .with_context(|| format!("hashing {}", dir.join(&name).display()))?,
            ),
        };
        text.push_str(&sums_line(&hex, &name));
    }
    write_synced(&dir.join(SUMS_FILE), text.as_bytes())
}

/// One line as coreutils prints it: names with a backslash or newline are escaped and the line
/// marked with a leading backslash.
fn sums_line(hex: &str, name: &str) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hex} *./{escaped}\n")
    } else {
        format!("{hex} *./{name}\n")
    }
}

fn unescape(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The staging directory; removed on drop unless it was swapped into place.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(path: PathBuf) -> anyhow::Result<Staging> {
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Staging { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // After a swap this path holds the old deploy directory, which goes too.
        if self.path.exists() {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                tracing::warn!("could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Replaces `target` by the staging directory. Afterwards the staging path holds the old
/// directory (if there was one), which the `Staging` guard deletes.
fn swap_into_place(staging: &Staging, target: &Path) -> anyhow::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    let from = staging.path();
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fs::rename(from, target)
                .with_context(|| format!("moving {} to {}", from.display(), target.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
        Ok(m) if !m.is_dir() => bail!(
            "{} exists and is not a directory; move it away",
            target.display()
        ),
        Ok(_) => {}
    }
    match renameat2(None, from, None, target, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            // No atomic exchange on this file system: two renames, undone if the second fails.
            let old = from.with_extension("old");
            if old.exists() {
                fs::remove_dir_all(&old)?;
            }
            fs::rename(target, &old)
                .with_context(|| format!("moving {} aside", target.display()))?;
            if let Err(e) = fs::rename(from, target) {
                let _ = fs::rename(&old, target);
                return Err(e)
                    .with_context(|| format!("moving {} to {}", from.display(), target.display()));
            }
            fs::rename(&old, from).ok();
            Ok(())
        }
        Err(e) => Err(e)
            .with_context(|| format!("exchanging {} with {}", from.display(), target.display())),
    }
}

/// Holds `DEPLOY_DIR/.<name>.lock` exclusively while deploying `name`.
fn lock(top: &Path, name: &str, log: &BuildLog) -> anyhow::Result<nix::fcntl::Flock<File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = top.join(format!(".{name}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            log.line(&format!(
                "Waiting for another pigen deploying into {} ({} is locked)",
                top.join(name).display(),
                path.display()
            ));
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("locking {}", path.display()))
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Staging directories of `name` left by a killed deploy (with the lock held, none is live).
fn remove_stale_staging(top: &Path, name: &str, log: &BuildLog) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = fs::read_dir(top) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            log.line(&format!(
                "Removing {} left by an interrupted deploy",
                path.display()
            ));
            if let Err(e) = fs::remove_dir_all(&path) {
                log.line(&format!("could not remove {}: {e}", path.display()));
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: the checkpoint at which the deploy fails.
    static FAIL_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// A point between deploy phases; tests make the deploy fail at one.
fn checkpoint(at: &'static str) -> anyhow::Result<()> {
    #[cfg(test)]
    if FAIL_AT.with(|f| f.get()) == Some(at) {
        bail!("injected failure at {at}");
    }
    let _ = at;
    Ok(())
}

#[cfg(test)]
mod tests;
