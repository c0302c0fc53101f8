//! What a tree needs on disk: a walk counting ext4 blocks and inodes (hard links once, long
//! symlinks, directories, xattr blocks) and, for the directory that becomes a FAT partition,
//! file sizes and directory entries — with everything FAT cannot hold reported up front.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::layout::{FatUsage, RootUsage, TreeUsage, BLOCK};

/// Measures `tree` for the root filesystem and, when `fat_dir` is given (absolute inside the
/// tree, e.g. `/boot/firmware`), that directory for a FAT partition. The content of `fat_dir`
/// does not count for the root (it is left out there, only the empty directory stays).
///
/// Errors: a mount point below `tree` (mkfs.ext4 -d would copy what is mounted there), and
/// anything in `fat_dir` FAT cannot hold (symlinks, device nodes, names with `"*/:<>?\|`,
/// names differing only in case), listed together.
pub fn measure(tree: &Path, fat_dir: Option<&str>) -> anyhow::Result<TreeUsage> {
    let top = fs::symlink_metadata(tree).with_context(|| format!("reading {}", tree.display()))?;
    if !top.is_dir() {
        bail!("{} is not a directory", tree.display());
    }
    let fat_path = fat_dir.map(|d| tree.join(d.trim_start_matches('/')));
    let mut walk = RootWalk {
        dev: top.dev(),
        skip: fat_path.clone(),
        seen: HashSet::new(),
        usage: RootUsage::default(),
    };
    walk.dir(tree)?;
    let fat = match (fat_dir, fat_path) {
        (Some(dir), Some(path)) => {
            let mut fat = FatWalk {
                usage: FatUsage::default(),
                problems: Vec::new(),
                tree,
            };
            fat.dir(&path)?;
            if !fat.problems.is_empty() {
                bail!(
                    "{dir} becomes a FAT partition, which cannot hold:\n  {}",
                    fat.problems.join("\n  ")
                );
            }
            Some((dir.to_string(), fat.usage))
        }
        _ => None,
    };
    Ok(TreeUsage {
        root: walk.usage,
        fat_dir: fat,
    })
}

struct RootWalk {
    dev: u64,
    /// Directory whose content is not counted (it goes to the FAT partition).
    skip: Option<PathBuf>,
    /// Inodes with several links, counted once.
    seen: HashSet<(u64, u64)>,
    usage: RootUsage,
}

impl RootWalk {
    fn dir(&mut self, path: &Path) -> anyhow::Result<()> {
        self.usage.inodes += 1;
        self.usage.data_blocks += xattr_blocks(path);
        if self.skip.as_deref() == Some(path) {
            self.usage.data_blocks += 1;
            return Ok(());
        }
        // "." and "..": 12 bytes each.
        let mut entry_bytes = 24u64;
        let entries = fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let child = entry.path();
            let name_len = entry.file_name().as_bytes().len() as u64;
            entry_bytes += 8 + name_len.div_ceil(4) * 4;
            let m = fs::symlink_metadata(&child)
                .with_context(|| format!("reading {}", child.display()))?;
            if m.dev() != self.dev {
                bail!(
                    "{} is a mount point (another filesystem is mounted inside the export \
                     tree); unmount it before the image is made",
                    child.display()
                );
            }
            let ft = m.file_type();
            if ft.is_dir() {
                self.dir(&child)?;
                continue;
            }
            if m.nlink() > 1 && !self.seen.insert((m.dev(), m.ino())) {
                continue;
            }
            self.usage.inodes += 1;
            self.usage.data_blocks += xattr_blocks(&child);
            if ft.is_file() {
                let blocks = m.len().div_ceil(BLOCK);
                // Files over 1 MiB may cross block-group metadata and need an extent block.
                self.usage.data_blocks += blocks + u64::from(blocks > 256);
            } else if ft.is_symlink() && m.len() >= 60 {
                // Targets of 60 bytes and more do not fit in the inode.
                self.usage.data_blocks += 1;
            }
        }
        // Entries never span blocks: allow for the unused tail of each block.
        self.usage.data_blocks += entry_bytes.div_ceil(BLOCK - 264).max(1);
        Ok(())
    }
}

/// An xattr block when the inode's own room (about 90 bytes with 256-byte inodes) is not
/// enough for the entries.
fn xattr_blocks(path: &Path) -> u64 {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer is valid for its length; the path is NUL-terminated.
    let len =
        unsafe { nix::libc::llistxattr(cpath.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len <= 0 {
        return 0;
    }
    let mut bytes = 4u64;
    for name in names[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        // SAFETY: a null buffer of size 0 asks for the value's length only.
        let value = unsafe {
            nix::libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0)
        };
        let suffix = name
            .iter()
            .position(|b| *b == b'.')
            .map_or(name.len(), |i| name.len() - i - 1);
        bytes += 16 + (suffix as u64).div_ceil(4) * 4 + (value.max(0) as u64).div_ceil(4) * 4;
    }
    u64::from(bytes > 88)
}

struct FatWalk<'a> {
    usage: FatUsage,
    problems: Vec<String>,
    tree: &'a Path,
}

impl FatWalk<'_> {
    fn dir(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut slots = 0u64;
        let mut lower: HashMap<String, String> = HashMap::new();
        let mut entries: Vec<_> = fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", path.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let child = entry.path();
            let name = entry.file_name();
            let shown = self.shown(&child);
            slots += fat_slots(&name);
            if let Some(problem) = fat_name_problem(&name) {
                self.problems.push(format!("{shown}: {problem}"));
            }
            let key = name.to_string_lossy().to_lowercase();
            if let Some(other) = lower.insert(key, name.to_string_lossy().into_owned()) {
                self.problems.push(format!(
                    "{shown}: differs from {other:?} only in case (FAT names ignore case)"
                ));
            }
            let m = fs::symlink_metadata(&child)
                .with_context(|| format!("reading {}", child.display()))?;
            let ft = m.file_type();
            if ft.is_dir() {
                self.dir(&child)?;
            } else if ft.is_file() {
                self.usage.file_sizes.push(m.len());
            } else {
                let kind = if ft.is_symlink() {
                    "a symlink"
                } else if ft.is_block_device() || ft.is_char_device() {
                    "a device node"
                } else if ft.is_fifo() {
                    "a fifo"
                } else {
                    "a socket"
                };
                self.problems.push(format!("{shown}: {kind}"));
            }
        }
        self.usage.dir_slots.push(slots);
        Ok(())
    }

    fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(self.tree) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

/// Directory entries a name takes in FAT: the short entry plus one long-name entry per 13
/// UTF-16 units (counted for every name: mtools adds long names to most of them).
fn fat_slots(name: &OsStr) -> u64 {
    let units = name.to_string_lossy().encode_utf16().count() as u64;
    1 + units.div_ceil(13)
}

/// Why `name` cannot be a FAT long name, if it cannot.
pub fn fat_name_problem(name: &OsStr) -> Option<String> {
    let Some(text) = name.to_str() else {
        return Some("the name is not UTF-8".into());
    };
    if let Some(c) = text
        .chars()
        .find(|c| "\"*/:<>?\\|".contains(*c) || u32::from(*c) < 0x20)
    {
        return Some(format!("the name contains {c:?}, which FAT does not allow"));
    }
    if text.ends_with('.') || text.ends_with(' ') {
        return Some("FAT drops trailing dots and spaces from names".into());
    }
    if text.encode_utf16().count() > 255 {
        return Some("FAT names have at most 255 characters".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn counts_blocks_inodes_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("etc")).unwrap();
        fs::write(t.join("etc/a"), vec![1u8; 5000]).unwrap(); // 2 blocks
        fs::hard_link(t.join("etc/a"), t.join("etc/b")).unwrap();
        fs::write(t.join("empty"), b"").unwrap();
        symlink("short", t.join("s")).unwrap();
        symlink("x".repeat(70), t.join("long")).unwrap();
        fs::write(t.join("big"), vec![0u8; 2 << 20]).unwrap(); // 512 blocks + extent block
        let usage = measure(t, None).unwrap();
        // top, etc, a(b), empty, s, long, big
        assert_eq!(usage.root.inodes, 7);
        // a: 2, long: 1, big: 513, two directories one block each.
        assert_eq!(usage.root.data_blocks, 2 + 1 + 513 + 2);
        assert_eq!(usage.fat_dir, None);
    }

    #[test]
    fn fat_dir_content_counts_for_fat_not_root() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("boot/firmware/overlays")).unwrap();
        fs::write(t.join("boot/firmware/config.txt"), b"x").unwrap();
        fs::write(t.join("boot/firmware/overlays/a.dtbo"), vec![0u8; 9000]).unwrap();
        let usage = measure(t, Some("/boot/firmware")).unwrap();
        // top, boot, firmware (empty mount point in the root)
        assert_eq!(usage.root.inodes, 3);
        let (d, fat) = usage.fat_dir.unwrap();
        assert_eq!(d, "/boot/firmware");
        let mut sizes = fat.file_sizes.clone();
        sizes.sort();
        assert_eq!(sizes, [1, 9000]);
        assert_eq!(fat.dir_slots.len(), 2);
    }

    #[test]
    fn fat_problems_are_listed_together() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let b = t.join("boot");
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("README"), b"x").unwrap();
        fs::write(b.join("readme"), b"x").unwrap();
        fs::write(b.join("a:b"), b"x").unwrap();
        symlink("README", b.join("link")).unwrap();
        let err = measure(t, Some("/boot")).unwrap_err().to_string();
        assert!(
            err.starts_with("/boot becomes a FAT partition, which cannot hold:"),
            "{err}"
        );
        assert!(err.contains("/boot/a:b: the name contains ':'"), "{err}");
        assert!(
            err.contains("/boot/readme: differs from \"README\" only in case"),
            "{err}"
        );
        assert!(err.contains("/boot/link: a symlink"), "{err}");
    }

    #[test]
    fn fat_names() {
        assert_eq!(fat_name_problem(OsStr::new("A very Long name.dtbo")), None);
        assert!(fat_name_problem(OsStr::new("a?b")).is_some());
        assert!(fat_name_problem(OsStr::new("trailing.")).is_some());
        assert_eq!(fat_slots(OsStr::new("config.txt")), 2);
        assert_eq!(fat_slots(OsStr::new("bcm2710-rpi-3-b.dtb")), 3);
    }
}
