//! What is mounted where (`/proc/self/mountinfo`), unmounting a tree deepest first, and
//! deleting files and directories without ever descending into a mount point.
//!
//! Paths are compared after canonicalization (mountinfo lists canonical mount points), and
//! component-wise: `/w/stage1` is not below `/w/stage` .

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::exec::cmd::LogSink;
use crate::exec::Cmd;

/// One line of `/proc/self/mountinfo` (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem's device.
    pub device: String,
    /// The directory of the filesystem mounted here (`/` unless a bind mount of a subtree).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Parses mountinfo text. Lines that do not have the documented shape are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .collect();
    // id parent major:minor root mount-point options [optional…] - fstype source super-options
    let dash = fields.iter().position(|f| *f == b"-")?;
    if dash < 6 || fields.len() < dash + 3 {
        return None;
    }
    let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    Some(Mount {
        id: std::str::from_utf8(fields[0]).ok()?.parse().ok()?,
        parent_id: std::str::from_utf8(fields[1]).ok()?.parse().ok()?,
        device: text(fields[2]),
        root: PathBuf::from(OsString::from_vec(unescape(fields[3]))),
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fs_type: text(fields[dash + 1]),
        source: text(fields[dash + 2]),
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); anything else is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if value <= 0xff {
                    out.push(value as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The mounts of this process's mount namespace, in mount order.
pub fn read() -> anyhow::Result<Vec<Mount>> {
    let text = std::fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Whether `path` is `dir` or inside it, component-wise.
pub fn is_at_or_below(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// The mounts at `dir` or below it, deepest first (the order to unmount them in): longer mount
/// points before shorter ones, and of mounts on the same point the later (upper) one first.
pub fn at_or_below<'a>(mounts: &'a [Mount], dir: &Path) -> Vec<&'a Mount> {
    let mut found: Vec<(usize, &Mount)> = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| is_at_or_below(&m.mount_point, dir))
        .collect();
    found.sort_by(|(ia, a), (ib, b)| {
        depth(&b.mount_point)
            .cmp(&depth(&a.mount_point))
            .then(ib.cmp(ia))
    });
    found.into_iter().map(|(_, m)| m).collect()
}

fn depth(path: &Path) -> usize {
    path.components().count()
}

/// `path` made absolute with symlinks resolved, as the kernel reports mount points. A path that
/// does not exist (yet) resolves its longest existing ancestor and keeps the rest.
pub fn canonical(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(path)
    };
    let mut rest = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut real) => {
                for part in rest.iter().rev() {
                    real.push(part);
                }
                return Ok(real);
            }
            Err(_) => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Ok(absolute);
                };
                rest.push(name.to_os_string());
                existing = parent;
            }
        }
    }
}

/// Mounts at `path` or below it in this namespace, deepest first.
pub fn mounts_at_or_below(path: &Path) -> anyhow::Result<Vec<Mount>> {
    let dir = canonical(path)?;
    let mounts = read()?;
    Ok(at_or_below(&mounts, &dir).into_iter().cloned().collect())
}

/// The mount points of our filesystems on loop or nbd devices (stage images): a helper
/// started in its own mount namespace detaches its copies of them, so that it never keeps
/// one alive after we unmount it.
pub fn block_device_mounts() -> anyhow::Result<Vec<PathBuf>> {
    Ok(read()?
        .into_iter()
        .filter(|m| m.source.starts_with("/dev/loop") || m.source.starts_with("/dev/nbd"))
        .map(|m| m.mount_point)
        .collect())
}

/// Whether something is mounted exactly at `path`.
pub fn is_mount_point(path: &Path) -> anyhow::Result<bool> {
    let path = canonical(path)?;
    Ok(read()?.iter().any(|m| m.mount_point == path))
}

/// Unmounts everything at `path` and below, deepest first. A mount that is busy is retried a
/// few times (a process may be exiting); what is still mounted after that is reported with the
/// last `umount` error. With `lazy_last_resort`, those are detached lazily instead (for
/// best-effort cleanup on an error path, where nothing will write to them again).
pub fn unmount_all(path: &Path, log: &LogSink, lazy_last_resort: bool) -> anyhow::Result<()> {
    const ROUNDS: u32 = 6;
    let dir = canonical(path)?;
    let mut last_error = None;
    for round in 0..ROUNDS {
        let mounts = read()?;
        let below = at_or_below(&mounts, &dir);
        if below.is_empty() {
            return Ok(());
        }
        let mut progress = false;
        for mount in below {
            match umount(&mount.mount_point, false, log) {
                Ok(()) => progress = true,
                Err(e) => last_error = Some(e),
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(50 << round));
        }
    }
    let remaining = mounts_at_or_below(&dir)?;
    if remaining.is_empty() {
        return Ok(());
    }
    if lazy_last_resort {
        for mount in &remaining {
            let _ = umount(&mount.mount_point, true, log);
        }
        let remaining = mounts_at_or_below(&dir)?;
        if remaining.is_empty() {
            return Ok(());
        }
    }
    let list = describe(&remaining);
    match last_error {
        Some(e) => Err(e.context(format!(
            "still mounted below {}: {list} (a process may still use them: `fuser -vm` shows which)",
            dir.display()
        ))),
        None => bail!("still mounted below {}: {list}", dir.display()),
    }
}

fn umount(point: &Path, lazy: bool, log: &LogSink) -> anyhow::Result<()> {
    // --no-canonicalize: the point comes from mountinfo, and resolving it could hang on a
    // FUSE mount whose daemon is gone.
    let mut cmd = Cmd::new("umount").arg("--no-canonicalize");
    if lazy {
        cmd = cmd.arg("--lazy");
    }
    cmd.arg(point).output(log)?;
    Ok(())
}

fn describe(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|m| {
            format!(
                "{} ({} from {})",
                m.mount_point.display(),
                m.fs_type,
                m.source
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses when anything is mounted at `path` or below it.
pub fn ensure_nothing_mounted(path: &Path, what: &str) -> anyhow::Result<()> {
    let mounts = mounts_at_or_below(path)?;
    if !mounts.is_empty() {
        bail!(
            "refusing to {what} {}: {} mounted there ({}); unmount first",
            path.display(),
            if mounts.len() == 1 {
                "something is"
            } else {
                "filesystems are"
            },
            describe(&mounts)
        );
    }
    Ok(())
}

/// Deletes `path` (a directory tree, a file or a symlink; nothing when it does not exist),
/// refusing when anything is mounted at or below it: removal never crosses into a mount.
pub fn remove_all(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    ensure_nothing_mounted(path, "delete")?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("deleting {}", path.display()))
}

/// Whether `path` has no `..` and no root or prefix component: safe to join under a directory.
pub fn is_plain_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:5 / /dev rw,nosuid master:2 - devtmpfs udev rw,size=1000k
87 22 0:40 / /w/image-stage0.fuse rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0
88 22 7:0 / /w/stage0/rootfs rw,relatime - ext4 /dev/loop0 rw
89 88 0:22 / /w/stage0/rootfs/proc rw,relatime - proc proc rw
90 88 0:6 / /w/stage0/rootfs/dev rw - devtmpfs udev rw
91 90 0:23 / /w/stage0/rootfs/dev/pts rw - devpts devpts rw
92 22 0:44 / /w/stage01 rw - tmpfs tmpfs rw
93 22 0:45 / /w/my\\040dir\\011tab\\134back rw - tmpfs my\\040src rw
94 88 0:46 / /w/stage0/rootfs rw - tmpfs over rw
95 22 0:47 /sub/dir /w/bound rw - ext4 /dev/vda rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let mounts = parse_mountinfo(SAMPLE.as_bytes());
        assert_eq!(mounts.len(), 11);
        assert_eq!(
            mounts[2],
            Mount {
                id: 87,
                parent_id: 22,
                device: "0:40".into(),
                root: "/".into(),
                mount_point: "/w/image-stage0.fuse".into(),
                fs_type: "fuse".into(),
                source: "/dev/fuse".into(),
            }
        );
        assert_eq!(mounts[8].mount_point, Path::new("/w/my dir\ttab\\back"));
        assert_eq!(mounts[8].source, "my src");
        assert_eq!(mounts[10].root, Path::new("/sub/dir"));
        // optional fields (shared:1, master:2) do not shift the fields after the dash
        assert_eq!(mounts[0].fs_type, "ext4");
        assert_eq!(mounts[1].source, "udev");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = b"garbage\n1 2 3\n22 1 253:1 / / rw - ext4 /dev/vda rw\n\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
    }

    #[test]
    fn unescape_keeps_what_is_not_an_octal_escape() {
        assert_eq!(unescape(b"a\\040b"), b"a b");
        assert_eq!(unescape(b"a\\012"), b"a\n");
        assert_eq!(unescape(b"a\\09"), b"a\\09");
        assert_eq!(unescape(b"end\\"), b"end\\");
        assert_eq!(unescape(b"\\777"), b"\\777");
        assert_eq!(unescape(b"\\134\\134"), b"\\\\");
    }

    #[test]
    fn below_is_component_wise_and_deepest_first() {
        let mounts = parse_mountinfo(SAMPLE.as_bytes());
        let points = |dir: &str| -> Vec<String> {
            at_or_below(&mounts, Path::new(dir))
                .iter()
                .map(|m| format!("{}#{}", m.mount_point.display(), m.id))
                .collect()
        };
        assert_eq!(
            points("/w/stage0"),
            [
                "/w/stage0/rootfs/dev/pts#91",
                "/w/stage0/rootfs/dev#90",
                "/w/stage0/rootfs/proc#89",
                "/w/stage0/rootfs#94",
                "/w/stage0/rootfs#88",
            ]
        );
        assert_eq!(points("/w/stage01"), ["/w/stage01#92"]);
        assert!(points("/w/stage").is_empty());
        assert_eq!(points("/w/image-stage0.fuse"), ["/w/image-stage0.fuse#87"]);
    }

    #[test]
    fn canonical_keeps_missing_tails() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(
            canonical(&real.join("link/not/yet")).unwrap(),
            real.join("not/yet")
        );
        assert_eq!(canonical(&real.join("link")).unwrap(), real);
    }

    #[test]
    fn removal_of_unmounted_paths() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink("/", tree.join("a/root-link")).unwrap();
        remove_all(&tree).unwrap();
        assert!(!tree.exists());
        remove_all(&tree).unwrap(); // missing: nothing to do
        std::fs::write(dir.path().join("file"), "x").unwrap();
        remove_all(&dir.path().join("file")).unwrap();
        assert!(!dir.path().join("file").exists());
        // "/" always has a mount: the refusal names it
        let err = ensure_nothing_mounted(Path::new("/"), "delete").unwrap_err();
        assert!(
            err.to_string().starts_with("refusing to delete /: "),
            "{err}"
        );
    }

    #[test]
    fn plain_relative_paths() {
        assert!(is_plain_relative(Path::new("a/b")));
        assert!(!is_plain_relative(Path::new("../a")));
        assert!(!is_plain_relative(Path::new("/a")));
    }
}
