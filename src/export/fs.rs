//! Filesystems written at an offset inside the image file, without loop devices or mounts:
//! ext4 root by `mkfs.ext4 -d`, FAT by `mkfs.fat --offset` + `mcopy`, ext2/ext4 boot by
//! `mke2fs -d`, xfs by `mkfs.xfs -p` in a separate file copied in. And the PARTUUIDs written
//! into `/etc/fstab` and `cmdline.txt` before any of that.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};

use super::layout::{
    fat32_cluster, FsType, Layout, RootGeometry, Target, BLOCK, EXT_FEATURES, SECTOR,
};
use super::{Progress, ProgressFn};
use crate::exec::cmd::{Cmd, LogSink};

// ----------------------------------------------------------------------------------------------
// Paths inside the tree.

/// `tree` + `rel` (absolute inside the tree, e.g. `/etc/fstab`) when every directory on the way
/// is a real directory, not a symlink, so nothing outside the tree is ever touched. `None` when
/// something on the way is missing; an error when a symlink or a non-directory is in the way.
pub fn in_tree(tree: &Path, rel: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut path = tree.to_path_buf();
    let rel = Path::new(rel.trim_start_matches('/'));
    let parts: Vec<Component> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            bail!("{} is not a plain path inside the tree", rel.display());
        };
        path.push(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let last = i + 1 == parts.len();
        if meta.file_type().is_symlink() {
            bail!(
                "/{} in the tree is a symlink; pigen does not follow it out of the tree",
                rel.display()
            );
        }
        if !last && !meta.is_dir() {
            bail!("{} in the tree is not a directory", path.display());
        }
    }
    Ok(Some(path))
}

/// Creates `rel` (and missing parents) as directories inside the tree, mode 755, refusing
/// symlinks on the way.
pub fn mkdir_in_tree(tree: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let mut path = tree.to_path_buf();
    for part in Path::new(rel.trim_start_matches('/')).components() {
        let Component::Normal(name) = part else {
            bail!("{rel} is not a plain path inside the tree");
        };
        path.push(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{} in the tree is not a directory", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(path)
}

/// Replaces the regular file `path` by `content`, keeping its mode and owner: written under a
/// temporary name and renamed over it, so a symlink is never followed.
pub fn replace_file(path: &Path, content: &[u8], like: &fs::Metadata) -> anyhow::Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.pigen-tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::os::unix::fs::fchown(&file, Some(like.uid()), Some(like.gid()))
        .with_context(|| format!("chown {}", tmp.display()))?;
    file.set_permissions(fs::Permissions::from_mode(like.mode() & 0o7777))?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Writes `content` as the file `name` in `dir` (a directory inside the tree), mode `mode`,
/// owned by root.
pub fn write_new_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.pigen-tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", tmp.display()))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(&file, Some(0), Some(0))?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    drop(file);
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

// ----------------------------------------------------------------------------------------------
// PARTUUIDs into fstab and cmdline.txt.

/// Replaces, on each line, the first occurrence of each placeholder by `PARTUUID=<uuid>` (as
/// pi-gen's `sed s/ROOTDEV/PARTUUID=…/`). A line naming a placeholder whose partition this
/// layout does not have (`BOOTDEV` on a PC image, `EFIDEV` on MBR) is commented out, so the
/// system does not wait for a device that never appears; `missing` lists those placeholders.
/// Returns the new text and one note per changed line.
pub fn substitute_placeholders(
    text: &str,
    present: &[(&str, String)],
    missing: &[&str],
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len() + 64);
    let mut notes = Vec::new();
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let commented = body.trim_start().starts_with('#');
        if !commented {
            if let Some(name) = missing.iter().find(|m| body.contains(**m)) {
                out.push_str(&format!(
                    "# pigen: no {name} partition in this image: {body}{newline}"
                ));
                notes.push(format!("commented out (no {name} partition): {body}"));
                continue;
            }
        }
        let mut new = body.to_string();
        for (name, uuid) in present {
            if let Some(at) = new.find(name) {
                new.replace_range(at..at + name.len(), &format!("PARTUUID={uuid}"));
            }
        }
        if new != body {
            notes.push(format!("{body}  ->  {new}"));
        }
        out.push_str(&new);
        out.push_str(newline);
    }
    (out, notes)
}

/// Fills the placeholders of the layout into `/etc/fstab` and, for Raspberry Pi images, into
/// `cmdline.txt` in the boot directory, every `sys_*/cmdline.txt` below it and
/// `/etc/default/raspi-firmware` (`ROOTDEV` only: Debian's raspi-firmware rewrites cmdline.txt
/// from its `ROOTPART` on every kernel update). Returns notes for the log.
pub fn write_partuuids(tree: &Path, layout: &Layout) -> anyhow::Result<Vec<String>> {
    let present = layout.placeholders();
    let missing: Vec<&str> = ["BOOTDEV", "EFIDEV"]
        .into_iter()
        .filter(|m| !present.iter().any(|(p, _)| p == m))
        .collect();
    let mut notes = Vec::new();
    // (file, placeholders to fill, placeholders without a partition)
    type Edit<'a> = (String, Vec<(&'a str, String)>, Vec<&'a str>);
    let mut files: Vec<Edit> = vec![("/etc/fstab".into(), present.clone(), missing)];
    if layout.target == Target::Raspi {
        if let Some(dir) = &layout.fat_dir {
            let root = present
                .iter()
                .filter(|(p, _)| *p == "ROOTDEV")
                .cloned()
                .collect::<Vec<_>>();
            files.push((format!("{dir}/cmdline.txt"), root.clone(), vec![]));
            files.push(("/etc/default/raspi-firmware".into(), root.clone(), vec![]));
            if let Some(boot) = in_tree(tree, dir)? {
                let mut subdirs: Vec<String> = fs::read_dir(&boot)
                    .with_context(|| format!("reading {}", boot.display()))?
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("sys_"))
                    .collect();
                subdirs.sort();
                for sub in subdirs {
                    files.push((format!("{dir}/{sub}/cmdline.txt"), root.clone(), vec![]));
                }
            }
        }
    }
    for (rel, present, missing) in files {
        let Some(path) = in_tree(tree, &rel)? else {
            continue;
        };
        let meta = fs::symlink_metadata(&path)?;
        if !meta.is_file() {
            notes.push(format!("{rel}: not a regular file, left alone"));
            continue;
        }
        let text = fs::read_to_string(&path).with_context(|| format!("reading {rel}"))?;
        let (new, changed) = substitute_placeholders(&text, &present, &missing);
        if new != text {
            replace_file(&path, new.as_bytes(), &meta)?;
        }
        notes.extend(changed.into_iter().map(|c| format!("{rel}: {c}")));
    }
    Ok(notes)
}

// ----------------------------------------------------------------------------------------------
// Progress: bytes the image file gained while a tool writes it.

/// Runs `f`, reporting every quarter second how many bytes the image file has gained (its
/// allocated size), up to `total`: tools that write whole filesystems say nothing about
/// their progress, but the sparse image grows as they write.
pub fn watch<T>(
    image: &Path,
    phase: &str,
    total: u64,
    progress: Option<ProgressFn>,
    f: impl FnOnce() -> T,
) -> T {
    let Some(report) = progress else {
        return f();
    };
    let allocated = || fs::metadata(image).map_or(0, |m| m.blocks() * 512);
    let base = allocated();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let done = allocated().saturating_sub(base).min(total);
                report(Progress { phase, done, total });
            }
        });
        let result = f();
        stop.store(true, Ordering::Relaxed);
        report(Progress {
            phase,
            done: total,
            total,
        });
        result
    })
}

// ----------------------------------------------------------------------------------------------
// ext4 / ext2.

/// The ext4 root filesystem.
pub struct Ext4Root<'a> {
    pub image: &'a Path,
    /// Byte offset of the partition.
    pub offset: u64,
    pub geometry: &'a RootGeometry,
    pub label: &'a str,
    pub tree: &'a Path,
    /// A directory inside the tree (host path) whose content goes to another partition: the
    /// root gets it as an empty directory with the same mode, owner and times.
    pub exclude: Option<&'a Path>,
    /// For the empty stand-in directory.
    pub scratch: &'a Path,
    /// `SOURCE_DATE_EPOCH`: the filesystem's own timestamps.
    pub epoch: Option<u64>,
}

/// `mkfs.ext4` arguments for the root (without `-d`, image and size).
pub fn ext4_root_args(g: &RootGeometry, offset: u64, label: &str) -> Vec<String> {
    vec![
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-b".into(),
        BLOCK.to_string(),
        "-I".into(),
        "256".into(),
        "-N".into(),
        g.inodes.to_string(),
        "-m".into(),
        "5".into(),
        "-J".into(),
        format!("size={}", g.journal_mib),
        "-L".into(),
        label.into(),
        "-O".into(),
        EXT_FEATURES.into(),
        "-U".into(),
        g.uuid.clone(),
        "-E".into(),
        format!("offset={offset},hash_seed={}", g.hash_seed),
    ]
}

/// Makes the root filesystem from the tree at `root.offset` in the image.
///
/// With `exclude`, mkfs.ext4 runs in a private mount namespace (`unshare --mount`) where an
/// empty directory is bind-mounted over the excluded one: mkfs.ext4 -d has no exclude option,
/// and the namespace makes sure the bind mount cannot outlive the command. That needs root.
pub fn mkfs_ext4_root(
    root: &Ext4Root,
    log: &LogSink,
    progress: Option<ProgressFn>,
) -> anyhow::Result<()> {
    let mut args = ext4_root_args(root.geometry, root.offset, root.label);
    args.push("-d".into());
    let size = format!("{}k", root.geometry.blocks * BLOCK / 1024);
    let mut cmd = match root.exclude {
        None => Cmd::new("mkfs.ext4")
            .args(&args)
            .arg(root.tree)
            .arg(root.image)
            .arg(&size),
        Some(dir) => {
            if !nix::unistd::geteuid().is_root() {
                bail!(
                    "leaving {} out of the root filesystem needs root (a bind mount in a \
                     private mount namespace)",
                    dir.display()
                );
            }
            let empty = root.scratch.join("empty-mountpoint");
            stand_in_dir(dir, &empty)?;
            Cmd::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
                .arg("sh")
                .arg(&empty)
                .arg(dir)
                .arg("mkfs.ext4")
                .args(&args)
                .arg(root.tree)
                .arg(root.image)
                .arg(&size)
        }
    };
    if let Some(epoch) = root.epoch {
        cmd = cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    let total = root.geometry.content_blocks * BLOCK;
    watch(root.image, "root filesystem", total, progress, || {
        cmd.output(log)
    })?;
    Ok(())
}

/// An empty directory with the mode, owner and times of `like`.
fn stand_in_dir(like: &Path, path: &Path) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(like).with_context(|| format!("reading {}", like.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", like.display());
    }
    match fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("creating {}", path.display()))
        }
        _ => {}
    }
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let ts = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        None,
        path,
        &ts(meta.atime(), meta.atime_nsec()),
        &ts(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// An ext2 or ext4 boot partition from `dir` (`BOOT_FSTYPE=ext2|ext4`), as pi-gen makes them:
/// label `BOOT`, ext2 without journal.
pub fn mke2fs_boot(
    image: &Path,
    offset: u64,
    bytes: u64,
    fstype: FsType,
    label: &str,
    dir: &Path,
    log: &LogSink,
) -> anyhow::Result<()> {
    let features = match fstype {
        FsType::Ext2 => format!("^has_journal,{EXT_FEATURES}"),
        FsType::Ext4 => EXT_FEATURES.to_string(),
        other => bail!("mke2fs_boot makes ext2 or ext4, not {}", other.as_str()),
    };
    Cmd::new("mke2fs")
        .args(["-F", "-t", fstype.as_str(), "-b", "4096", "-L", label, "-O"])
        .arg(features)
        .arg("-E")
        .arg(format!("offset={offset}"))
        .arg("-d")
        .arg(dir)
        .arg(image)
        .arg(format!("{}k", bytes / 1024))
        .output(log)?;
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// FAT.

/// The environment mtools needs on an image file: skip its geometry checks, UTC times.
fn mtools(program: &str) -> Cmd {
    Cmd::new(program)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
}

/// `image@@offset`: mtools' way to address a filesystem inside an image file.
pub fn mtools_image(image: &Path, offset: u64) -> std::ffi::OsString {
    let mut s = image.as_os_str().to_os_string();
    s.push(format!("@@{offset}"));
    s
}

/// Makes FAT32 in the partition at sector `start`, `sectors` long, with the cluster size of
/// [`fat32_cluster`].
pub fn mkfs_fat(
    image: &Path,
    start: u64,
    sectors: u64,
    label: &str,
    codepage: &str,
    volume_id: &str,
    log: &LogSink,
) -> anyhow::Result<()> {
    // The cluster size is given, not left to mkfs.fat: dosfstools 4.2 picks 4 KiB clusters for
    // 256 MiB, fewer than the 65525 clusters FAT32 needs, which mtools and Windows then read
    // as FAT16.
    let cluster = fat32_cluster(sectors * SECTOR);
    let mut cmd = Cmd::new("mkfs.fat")
        .args(["-F", "32", "-n", label, "-i", volume_id, "-s"])
        .arg((cluster / SECTOR).to_string())
        .arg("-h")
        .arg(start.to_string())
        .arg("--offset")
        .arg(start.to_string());
    if !codepage.is_empty() {
        cmd = cmd.arg(format!("--codepage={codepage}"));
    }
    cmd.arg(image)
        .arg((sectors * SECTOR / 1024).to_string())
        .output(log)?;
    Ok(())
}

/// Copies the content of `dir` (not `dir` itself) into the FAT filesystem at byte `offset`:
/// `mcopy -s -p -m` (recursive, attributes, modification times), long and mixed-case names
/// as VFAT long names.
pub fn mcopy_dir(
    image: &Path,
    offset: u64,
    dir: &Path,
    total: u64,
    log: &LogSink,
    progress: Option<ProgressFn>,
) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort();
    let cmd = mtools("mcopy")
        .args(["-s", "-p", "-m", "-Q", "-i"])
        .arg(mtools_image(image, offset))
        .args(&entries)
        .arg("::/");
    watch(image, "boot partition", total, progress, || cmd.output(log))?;
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// xfs.

/// The smallest filesystem mkfs.xfs (xfsprogs 5.19 and later) makes.
pub const XFS_MIN: u64 = 300 << 20;

/// An xfs protofile (`mkfs.xfs -p`) describing `dir` and everything below it: modes (with
/// setuid/setgid), owners, files by their host path, device nodes, fifos, symlinks. Hard
/// links become copies and xattrs are lost (the format has neither); names with white space
/// cannot be written and are an error.
pub fn xfs_protofile(dir: &Path) -> anyhow::Result<String> {
    let meta = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut out = format!(
        "pigen\n0 0\n{} {} {}\n",
        proto_mode('d', meta.mode()),
        meta.uid(),
        meta.gid()
    );
    proto_dir(dir, 1, &mut out)?;
    out.push_str("$\n");
    Ok(out)
}

fn proto_mode(kind: char, mode: u32) -> String {
    format!(
        "{kind}{}{}{:03o}",
        if mode & 0o4000 != 0 { 'u' } else { '-' },
        if mode & 0o2000 != 0 { 'g' } else { '-' },
        mode & 0o777
    )
}

fn proto_dir(dir: &Path, depth: usize, out: &mut String) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let indent = "  ".repeat(depth);
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let text = name.to_str().filter(|n| !n.contains(char::is_whitespace));
        let Some(text) = text else {
            bail!(
                "{}: xfs protofiles cannot hold names with white space or non-UTF-8 bytes",
                path.display()
            );
        };
        let m = fs::symlink_metadata(&path)?;
        let ft = m.file_type();
        let (kind, extra) = if ft.is_dir() {
            ('d', String::new())
        } else if ft.is_file() {
            let host = path.to_str().filter(|p| !p.contains(char::is_whitespace));
            let Some(host) = host else {
                bail!("{}: xfs protofiles cannot name this path", path.display());
            };
            ('-', format!(" {host}"))
        } else if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            let Some(target) = target.to_str().filter(|t| !t.contains(char::is_whitespace)) else {
                bail!("{}: symlink target with white space", path.display());
            };
            ('l', format!(" {target}"))
        } else if ft.is_block_device() || ft.is_char_device() {
            let rdev = m.rdev();
            let kind = if ft.is_block_device() { 'b' } else { 'c' };
            (
                kind,
                format!(
                    " {} {}",
                    nix::sys::stat::major(rdev),
                    nix::sys::stat::minor(rdev)
                ),
            )
        } else if ft.is_fifo() {
            ('p', String::new())
        } else {
            bail!(
                "{}: sockets cannot go into an xfs protofile",
                path.display()
            );
        };
        out.push_str(&format!(
            "{indent}{text} {} {} {}{extra}\n",
            proto_mode(kind, m.mode()),
            m.uid(),
            m.gid()
        ));
        if ft.is_dir() {
            proto_dir(&path, depth + 1, out)?;
            out.push_str(&format!("{indent}$\n"));
        }
    }
    Ok(())
}

/// An xfs boot partition from `dir`: made in `scratch/boot.xfs` (mkfs.xfs cannot write at an
/// offset) and copied into the image at `offset`, holes kept.
#[allow(clippy::too_many_arguments)]
pub fn mkfs_xfs_boot(
    image: &Path,
    offset: u64,
    bytes: u64,
    label: &str,
    dir: &Path,
    scratch: &Path,
    log: &LogSink,
) -> anyhow::Result<()> {
    if bytes < XFS_MIN {
        bail!(
            "BOOT_FSTYPE=xfs needs a boot partition of at least 300M (mkfs.xfs refuses \
             smaller filesystems); raise BOOT_SIZE"
        );
    }
    let proto = scratch.join("boot.xfs-proto");
    fs::write(&proto, xfs_protofile(dir)?)?;
    let part = scratch.join("boot.xfs");
    let _ = fs::remove_file(&part);
    fs::File::create(&part)?.set_len(bytes)?;
    Cmd::new("mkfs.xfs")
        .args(["-f", "-L", label, "-p"])
        .arg(&proto)
        .arg(&part)
        .output(log)?;
    copy_range_sparse(&part, 0, bytes, image, offset)?;
    fs::remove_file(&part)?;
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// Copying byte ranges.

/// Copies `len` bytes at `src_offset` of `src` to `dst_offset` of `dst` (created if missing,
/// never truncated), skipping holes of `src` so a sparse source stays sparse.
pub fn copy_range_sparse(
    src: &Path,
    src_offset: u64,
    len: u64,
    dst: &Path,
    dst_offset: u64,
) -> anyhow::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let mut input = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)
        .with_context(|| format!("opening {}", dst.display()))?;
    let end = src_offset + len;
    let mut pos = src_offset;
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        // Next data at or after pos; no more data (ENXIO) ends the copy.
        let data = match lseek(input.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(_) => pos, // no SEEK_DATA support: copy everything
        };
        if data >= end {
            break;
        }
        let hole = lseek(input.as_raw_fd(), data as i64, Whence::SeekHole)
            .map_or(end, |h| h as u64)
            .min(end);
        input.seek(SeekFrom::Start(data))?;
        output.seek(SeekFrom::Start(dst_offset + (data - src_offset)))?;
        let mut left = hole - data;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            input.read_exact(&mut buf[..n])?;
            output.write_all(&buf[..n])?;
            left -= n as u64;
        }
        pos = hole;
    }
    // Keep the destination at least as long as the copied range, holes included.
    let want = dst_offset + len;
    if output.metadata()?.len() < want {
        output.set_len(want)?;
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// Reading ahead.

/// Reads the tree's files into the page cache in the background while the filesystems are
/// made: `posix_fadvise(WILLNEED)` on every regular file, in directory order. `mkfs.ext4 -d`
/// and mcopy read one file at a time and wait for each; with the reads already queued the
/// export is about a third faster when the tree is not in the cache (`bench/export.sh --cold`).
/// Only a hint: errors are ignored. Stops and is joined on drop.
pub struct Prefetch {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prefetch {
    /// Starts reading `tree` ahead, unless its `bytes` would take more than half of the memory
    /// available now (the read-ahead would then evict what mkfs has not read yet).
    pub fn start(tree: &Path, bytes: u64) -> Prefetch {
        let fits = available_memory().is_some_and(|available| bytes <= available / 2);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = fits.then(|| {
            let (tree, stop) = (tree.to_path_buf(), stop.clone());
            std::thread::spawn(move || prefetch_dir(&tree, &stop))
        });
        Prefetch { stop, thread }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn prefetch_dir(dir: &Path, stop: &AtomicBool) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            dirs.push(entry.path());
        } else if kind.is_file() {
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(entry.path());
            if let Ok(file) = file {
                let _ = posix_fadvise(
                    file.as_raw_fd(),
                    0,
                    0,
                    PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                );
            }
        }
    }
    for dir in dirs {
        prefetch_dir(&dir, stop);
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<(&'static str, String)> {
        vec![
            ("BOOTDEV", "0a1b2c3d-01".to_string()),
            ("ROOTDEV", "0a1b2c3d-02".to_string()),
        ]
    }

    /// A Raspberry Pi tree made with Debian's raspi-firmware: its defaults file names the root
    /// too, so that kernel updates on the device keep writing the right cmdline.txt.
    #[test]
    fn raspi_firmware_defaults_get_the_root() {
        use super::super::layout::{FatUsage, FsType, RootUsage, Settings, TreeUsage, MIB};
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        fs::create_dir_all(t.join("etc/default")).unwrap();
        fs::create_dir_all(t.join("boot/firmware")).unwrap();
        fs::write(t.join("etc/fstab"), "ROOTDEV / ext4 defaults 0 1\n").unwrap();
        fs::write(
            t.join("etc/default/raspi-firmware"),
            "#ROOTPART=/dev/mmcblk0p2\nROOTPART=ROOTDEV\nCONSOLES=\"serial0,115200 tty1\"\n",
        )
        .unwrap();
        let settings = Settings {
            target: Target::Raspi,
            boot_fstype: FsType::Vfat,
            boot_size: 256 * MIB,
            root_margin: (10, 128 * MIB),
            fat_codepage: "437".into(),
            seed: "2026-01-01\ntest".into(),
            epoch: None,
        };
        let usage = TreeUsage {
            root: RootUsage {
                data_blocks: 1000,
                inodes: 100,
            },
            fat_dir: Some((
                "/boot/firmware".into(),
                FatUsage {
                    file_sizes: vec![1000],
                    dir_slots: vec![2],
                },
            )),
        };
        let layout = Layout::plan(&settings, &usage).unwrap();
        let root = layout.root_partition().partuuid.clone();
        write_partuuids(t, &layout).unwrap();
        assert_eq!(
            fs::read_to_string(t.join("etc/default/raspi-firmware")).unwrap(),
            format!("#ROOTPART=/dev/mmcblk0p2\nROOTPART=PARTUUID={root}\nCONSOLES=\"serial0,115200 tty1\"\n")
        );
    }

    #[test]
    fn fstab_placeholders_first_per_line() {
        let fstab = "proc /proc proc defaults 0 0\n\
                     BOOTDEV /boot/firmware vfat defaults 0 2\n\
                     ROOTDEV / ext4 defaults,noatime 0 1\n\
                     # ROOTDEV ROOTDEV\n";
        let (out, notes) = substitute_placeholders(fstab, &pairs(), &["EFIDEV"]);
        assert_eq!(
            out,
            "proc /proc proc defaults 0 0\n\
             PARTUUID=0a1b2c3d-01 /boot/firmware vfat defaults 0 2\n\
             PARTUUID=0a1b2c3d-02 / ext4 defaults,noatime 0 1\n\
             # PARTUUID=0a1b2c3d-02 ROOTDEV\n"
        );
        assert_eq!(notes.len(), 3);
    }

    #[test]
    fn missing_partitions_are_commented_out() {
        let fstab = "ROOTDEV / ext4 defaults 0 1\nEFIDEV /boot/efi vfat defaults 0 2\n\
                     # EFIDEV stays a comment\nBOOTDEV /boot vfat defaults 0 2";
        let root = vec![("ROOTDEV", "11111111-01".to_string())];
        let (out, notes) = substitute_placeholders(fstab, &root, &["BOOTDEV", "EFIDEV"]);
        assert_eq!(
            out,
            "PARTUUID=11111111-01 / ext4 defaults 0 1\n\
             # pigen: no EFIDEV partition in this image: EFIDEV /boot/efi vfat defaults 0 2\n\
             # EFIDEV stays a comment\n\
             # pigen: no BOOTDEV partition in this image: BOOTDEV /boot vfat defaults 0 2"
        );
        assert_eq!(notes.len(), 3);
    }

    #[test]
    fn cmdline_placeholder() {
        let line = "console=serial0,115200 console=tty1 root=ROOTDEV rootfstype=ext4 fsck.repair=yes rootwait\n";
        let root = vec![("ROOTDEV", "0a1b2c3d-02".to_string())];
        let (out, _) = substitute_placeholders(line, &root, &[]);
        assert_eq!(
            out,
            "console=serial0,115200 console=tty1 root=PARTUUID=0a1b2c3d-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
        );
        let (same, notes) = substitute_placeholders("no placeholder", &root, &[]);
        assert_eq!((same.as_str(), notes.len()), ("no placeholder", 0));
    }

    #[test]
    fn in_tree_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("etc")).unwrap();
        fs::write(t.join("etc/fstab"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", t.join("boot")).unwrap();
        assert_eq!(in_tree(t, "/etc/fstab").unwrap(), Some(t.join("etc/fstab")));
        assert_eq!(in_tree(t, "/etc/missing").unwrap(), None);
        assert!(in_tree(t, "/boot/fstab").is_err());
        assert!(in_tree(t, "/etc/fstab/x").is_err());
        assert!(mkdir_in_tree(t, "/boot/efi").is_err());
        assert_eq!(mkdir_in_tree(t, "/etc/a/b").unwrap(), t.join("etc/a/b"));
    }

    #[test]
    fn protofile_describes_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("grub")).unwrap();
        fs::write(t.join("grub/grub.cfg"), "x").unwrap();
        fs::set_permissions(t.join("grub/grub.cfg"), fs::Permissions::from_mode(0o4644)).unwrap();
        fs::set_permissions(t.join("grub"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(t, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("grub/grub.cfg", t.join("cfg")).unwrap();
        let (u, g) = (nix::unistd::getuid(), nix::unistd::getgid());
        let proto = xfs_protofile(t).unwrap();
        assert_eq!(
            proto,
            format!(
                "pigen\n0 0\nd--755 {u} {g}\n  cfg l--777 {u} {g} grub/grub.cfg\n  grub d--755 {u} {g}\n    grub.cfg -u-644 {u} {g} {}\n  $\n$\n",
                t.join("grub/grub.cfg").display()
            )
        );
        fs::write(t.join("a b"), "").unwrap();
        assert!(xfs_protofile(t)
            .unwrap_err()
            .to_string()
            .contains("white space"));
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let f = fs::File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        drop(f);
        let mut f = fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.seek(SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(b"hello").unwrap();
        drop(f);
        fs::File::create(&dst).unwrap().set_len(1 << 20).unwrap();
        copy_range_sparse(&src, 4 << 20, 4 << 20, &dst, 1 << 20).unwrap();
        let data = fs::read(&dst).unwrap();
        assert_eq!(data.len(), 5 << 20);
        assert_eq!(&data[(2 << 20)..(2 << 20) + 5], b"hello");
        assert!(
            fs::metadata(&dst).unwrap().blocks() * 512 < 2 << 20,
            "stays sparse"
        );
    }

    #[test]
    fn prefetch_reads_ahead_only_what_fits_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/file"), b"content").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("a/link")).unwrap();
        let small = Prefetch::start(dir.path(), 7);
        assert!(small.thread.is_some());
        drop(small); // joins
        assert!(Prefetch::start(dir.path(), u64::MAX).thread.is_none());
    }
}
