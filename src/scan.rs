//! Reads the stage trees into plain data (`Scanned`) so that planning is a pure function.
//!
//! What is read: for every stage of `STAGE_LIST` and for `export-image` / `export-noobs`, the
//! marker files (`EXPORT_IMAGE`, `EXPORT_NOOBS`, `SKIP`, `SKIP_IMAGES`), `prerun.sh`, and every
//! sub-stage directory with its files, exec bits, package-list words and quilt series. The
//! `EXPORT_IMAGE` / `EXPORT_NOOBS` fragments of the stages that will be exported are sourced by
//! bash (the only impure part; they are shell code in the original too). Needs no root.
//!
//! File tests follow symlinks, as bash's `-f`, `-d` and `-x` do. "Executable" means any exec
//! bit is set: the build runs as root, for whom `-x` is true in exactly that case.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::eval::{source_fragment, Sourced};
use crate::config::{Config, Env};
use crate::error::ConfigError;

/// Everything planning needs from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// The stages of `STAGE_LIST`, in list order.
    pub stages: Vec<StageTree>,
    /// `stages_root/export-image`, when that directory exists.
    pub export_image: Option<StageTree>,
    /// `stages_root/export-noobs`, when that directory exists.
    pub export_noobs: Option<StageTree>,
}

/// One stage directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageTree {
    /// Basename of the directory (`STAGE` in scripts).
    pub name: String,
    /// Absolute directory.
    pub dir: PathBuf,
    /// A `SKIP` file is present (upstream pi-gen's marker: do not build this stage).
    pub skip_file: bool,
    /// A `SKIP_IMAGES` file is present (upstream pi-gen's marker: do not export this stage).
    pub skip_images_file: bool,
    /// `prerun.sh`, when it is a file.
    pub prerun: Option<ScriptFile>,
    /// `EXPORT_IMAGE`, when it is a file.
    pub export_image: Option<Fragment>,
    /// `EXPORT_NOOBS`, when it is a file.
    pub export_noobs: Option<Fragment>,
    /// Every directory entry that is a directory, dotfiles excluded, sorted bytewise (bash's
    /// `STAGE_DIR/*` in the C locale).
    pub sub_stages: Vec<SubStageTree>,
}

/// A script and whether it may be executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptFile {
    pub path: PathBuf,
    pub executable: bool,
}

/// An `EXPORT_IMAGE` or `EXPORT_NOOBS` bash fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub path: PathBuf,
    /// What sourcing it did; `None` when it was not sourced because the stage is not exported
    /// (its images are skipped, or for `EXPORT_NOOBS` with `USE_QEMU=1`).
    pub sourced: Option<Sourced>,
}

/// One sub-stage directory (`stage2/01-sys-tweaks`, but also `stage0/files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubStageTree {
    pub name: String,
    pub dir: PathBuf,
    /// A `SKIP` file is present: the sub-stage is not run.
    pub skip_file: bool,
    /// Every entry (dotfiles included; names are looked up exactly), name → what it is.
    pub entries: BTreeMap<String, Entry>,
}

/// What a sub-stage entry is, after following symlinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        executable: bool,
        /// For files named `NN-packages…`: the package words (comments stripped), or why the
        /// file could not be read (an error only if the plan picks this list).
        packages: Option<Result<Vec<String>, String>>,
    },
    Dir {
        /// For directories named `NN-patches`: the quilt patch set.
        patches: Option<PatchesDir>,
    },
    /// Anything else: a dangling symlink, a socket, …
    Other,
}

/// A quilt patches directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchesDir {
    /// An `EDIT` file is present: the build drops into an interactive shell before pushing.
    pub edit: bool,
    /// Patch names listed in the `series` file, in order; `None` when there is no series file.
    pub series: Option<Vec<String>>,
}

impl SubStageTree {
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// `[ -f name ]`.
    pub fn is_file(&self, name: &str) -> bool {
        matches!(self.entry(name), Some(Entry::File { .. }))
    }

    /// `[ -d name ]`.
    pub fn is_dir(&self, name: &str) -> bool {
        matches!(self.entry(name), Some(Entry::Dir { .. }))
    }
}

/// Package words of a list file: per line, `#` to the end of the line is a comment; the rest
/// is split on white space. (The original's sed script left single-line files untouched; see
/// behavior reference §3.6. The only visible difference is `foo#bar`, which is `foo` here.)
pub fn package_words(text: &str) -> Vec<String> {
    text.lines()
        .flat_map(|line| {
            line.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
        })
        .collect()
}

/// Patch names of a quilt `series` file: the first word of each line; `#` starts a comment.
pub fn series_patches(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            line.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
        })
        .map(str::to_string)
        .collect()
}

/// `word` occurs as a whole white-space-delimited word of `list` (the original's `contains`,
/// minus its regex quirk: behavior reference §9.8).
pub fn listed(list: &[String], word: &str) -> bool {
    list.iter().any(|w| w == word)
}

/// Why the stage's images are not exported, if they are not: `SKIP_IMAGES_LIST`, then the
/// `SKIP_IMAGES` marker file. Shared by scan (which fragments to source) and plan.
pub fn images_skipped(config: &Config, stage: &StageTree) -> Option<ImagesSkip> {
    if listed(&config.skip_images_list, &stage.name) {
        Some(ImagesSkip::List)
    } else if stage.skip_images_file {
        Some(ImagesSkip::File(stage.dir.join("SKIP_IMAGES")))
    } else {
        None
    }
}

/// See `images_skipped`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImagesSkip {
    List,
    File(PathBuf),
}

/// Scans every stage of `config.stage_list` and the export stages, and sources the export
/// fragments of the stages that will be exported, each against `config.script_env(process_env)`
/// plus `EXPORT_DIR` (the exported stage) and `STAGE_DIR` (`export-image`), as the original
/// had them set when it sourced the fragment. Each export starts from that same environment;
/// `EXPORT_NOOBS` sees what `EXPORT_IMAGE` set (the original sources it after).
pub fn scan(config: &Config, process_env: &Env) -> Result<Scanned, ConfigError> {
    let mut stages = Vec::new();
    for dir in &config.stage_list {
        stages.push(scan_stage(dir)?);
    }
    let export_image_dir = config.stages_root.join("export-image");
    let export_noobs_dir = config.stages_root.join("export-noobs");
    let export_image = optional_stage(&export_image_dir)?;
    let export_noobs = optional_stage(&export_noobs_dir)?;

    let base_env = config.script_env(process_env);
    // Without export-image nothing can be exported (plan says so); do not run fragments.
    let exporting = export_image.is_some();
    for stage in stages.iter_mut().filter(|_| exporting) {
        if images_skipped(config, stage).is_some() {
            continue;
        }
        let Some(image_fragment) = stage.export_image.as_mut() else {
            continue;
        };
        let mut env = base_env.clone();
        env.insert("EXPORT_DIR".into(), stage.dir.display().to_string());
        env.insert("STAGE_DIR".into(), export_image_dir.display().to_string());
        let sourced = source_fragment(&image_fragment.path, &env)?;
        env.extend(sourced.changed.clone());
        image_fragment.sourced = Some(sourced);
        if config.use_qemu {
            continue;
        }
        if let Some(noobs_fragment) = stage.export_noobs.as_mut() {
            env.insert("STAGE_DIR".into(), export_noobs_dir.display().to_string());
            noobs_fragment.sourced = Some(source_fragment(&noobs_fragment.path, &env)?);
        }
    }
    Ok(Scanned {
        stages,
        export_image,
        export_noobs,
    })
}

fn optional_stage(dir: &Path) -> Result<Option<StageTree>, ConfigError> {
    if dir.is_dir() {
        scan_stage(dir).map(Some)
    } else {
        Ok(None)
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> ConfigError {
    ConfigError::new(format!(
        "{}: cannot {what} ({e}); check that it exists and is readable",
        path.display()
    ))
}

/// Directory entries except dotfiles, sorted bytewise by name.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let read = fs::read_dir(dir).map_err(|e| io_error(dir, "read the directory", e))?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| io_error(dir, "read the directory", e))?;
        entries.push((entry.file_name(), entry.path()));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries
        .into_iter()
        .map(|(name, path)| (name.to_string_lossy().into_owned(), path))
        .collect())
}

fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Reads one stage directory (no fragment is sourced here).
pub fn scan_stage(dir: &Path) -> Result<StageTree, ConfigError> {
    let file = |name: &str| dir.join(name).is_file();
    let prerun_path = dir.join("prerun.sh");
    let prerun = match fs::metadata(&prerun_path) {
        Ok(meta) if meta.is_file() => Some(ScriptFile {
            executable: is_executable(&meta),
            path: prerun_path,
        }),
        _ => None,
    };
    let fragment = |name: &str| {
        file(name).then(|| Fragment {
            path: dir.join(name),
            sourced: None,
        })
    };
    let mut sub_stages = Vec::new();
    for (name, path) in sorted_entries(dir)? {
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        sub_stages.push(scan_sub_stage(name, path)?);
    }
    Ok(StageTree {
        name: crate::config::resolve::stage_name(dir),
        dir: dir.to_path_buf(),
        skip_file: file("SKIP"),
        skip_images_file: file("SKIP_IMAGES"),
        prerun,
        export_image: fragment("EXPORT_IMAGE"),
        export_noobs: fragment("EXPORT_NOOBS"),
        sub_stages,
    })
}

/// `NN-` with two ASCII digits.
fn indexed(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    (b.len() > 3 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b'-')
        .then(|| &name[3..])
}

fn scan_sub_stage(name: String, dir: PathBuf) -> Result<SubStageTree, ConfigError> {
    let mut entries = BTreeMap::new();
    for (entry_name, path) in sorted_entries(&dir)? {
        let rest = indexed(&entry_name);
        let entry = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Entry::File {
                executable: is_executable(&meta),
                packages: rest.filter(|r| r.starts_with("packages")).map(|_| {
                    fs::read(&path)
                        .map(|bytes| package_words(&String::from_utf8_lossy(&bytes)))
                        .map_err(|e| e.to_string())
                }),
            },
            Ok(meta) if meta.is_dir() => Entry::Dir {
                patches: match rest {
                    Some("patches") => Some(scan_patches(&path)?),
                    _ => None,
                },
            },
            _ => Entry::Other,
        };
        entries.insert(entry_name, entry);
    }
    Ok(SubStageTree {
        skip_file: matches!(entries.get("SKIP"), Some(Entry::File { .. })),
        name,
        dir,
        entries,
    })
}

fn scan_patches(dir: &Path) -> Result<PatchesDir, ConfigError> {
    let series_path = dir.join("series");
    let series = if series_path.is_file() {
        let bytes = fs::read(&series_path).map_err(|e| io_error(&series_path, "read", e))?;
        Some(series_patches(&String::from_utf8_lossy(&bytes)))
    } else {
        None
    };
    Ok(PatchesDir {
        edit: dir.join("EDIT").exists(),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_stripped_per_line() {
        let text = "# heading\nfoo bar # trailing\n\n  baz#qux\n#only\nlast";
        assert_eq!(package_words(text), ["foo", "bar", "baz", "last"]);
        assert!(package_words("# nothing\n\n   \n").is_empty());
        assert!(package_words("").is_empty());
        assert_eq!(package_words("a\tb\r\nc"), ["a", "b", "c"]);
    }

    #[test]
    fn series_lists_first_words() {
        let text = "# comment\n01-a.diff\n02-b.diff -p1\n\n03-c.diff # note\n";
        assert_eq!(
            series_patches(text),
            ["01-a.diff", "02-b.diff", "03-c.diff"]
        );
    }

    #[test]
    fn listed_is_whole_word() {
        let list: Vec<String> = vec!["stage2".into(), "stage4".into()];
        assert!(listed(&list, "stage2"));
        assert!(!listed(&list, "stage2a"));
        assert!(!listed(&list, "stage"));
        assert!(!listed(&list, "stage.")); // no regex
    }

    #[test]
    fn fixture_stage_tree() {
        let dir = crate::test_support::fixtures().join("stages/stage0");
        let tree = scan_stage(&dir).unwrap();
        assert_eq!(tree.name, "stage0");
        assert!(tree.prerun.as_ref().is_some_and(|p| p.executable));
        assert!(!tree.skip_file && !tree.skip_images_file && tree.export_image.is_none());
        // dot directories and plain files are not sub-stages; `files` is one
        let names: Vec<&str> = tree.sub_stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["00-configure", "files"]);
        let sub = &tree.sub_stages[0];
        let exec = |name: &str| match sub.entry(name) {
            Some(Entry::File { executable, .. }) => *executable,
            other => panic!("{name}: {other:?}"),
        };
        // exec bits survive the checkout (git keeps them: `git update-index --chmod=+x`)
        assert!(exec("00-run.sh"));
        assert!(exec("02-run-chroot.sh"));
        assert!(!exec("00-run-chroot.sh"));
        assert!(!exec("01-run.sh"));
        assert_eq!(
            sub.entry("00-packages"),
            Some(&Entry::File {
                executable: false,
                packages: Some(Ok(vec![
                    "foo".into(),
                    "bar".into(),
                    "baz".into(),
                    "last".into()
                ])),
            })
        );
        assert_eq!(
            sub.entry("00-patches"),
            Some(&Entry::Dir {
                patches: Some(PatchesDir {
                    edit: false,
                    series: Some(vec!["01-first.diff".into(), "02-second.diff".into()]),
                }),
            })
        );
        assert!(sub.is_dir("02-patches") && !sub.is_file("02-patches"));
    }

    #[test]
    fn stage_markers() {
        let stages = crate::test_support::fixtures().join("stages");
        assert!(scan_stage(&stages.join("stage3")).unwrap().skip_file);
        let stage4 = scan_stage(&stages.join("stage4")).unwrap();
        assert!(stage4.skip_images_file && stage4.export_image.is_some());
        let stage1 = scan_stage(&stages.join("stage1")).unwrap();
        assert!(stage1.prerun.as_ref().is_some_and(|p| !p.executable));
        assert!(stage1
            .sub_stages
            .iter()
            .any(|s| s.name == "01-skipped" && s.skip_file));
    }

    #[test]
    fn fragments_are_sourced_only_for_exported_stages() {
        let config = crate::test_support::fixture_config(&[
            ("STAGE_LIST", "stage2 stage2a stage4"),
            ("SKIP_IMAGES_LIST", "stage2"),
        ]);
        let scanned = scan(&config, &crate::test_support::process_env()).unwrap();
        let sourced: Vec<(&str, bool)> = scanned
            .stages
            .iter()
            .map(|s| {
                let f = s.export_image.as_ref().unwrap();
                (s.name.as_str(), f.sourced.is_some())
            })
            .collect();
        assert_eq!(
            sourced,
            [("stage2", false), ("stage2a", true), ("stage4", false)]
        );
        let noobs = scanned.stages[1].export_noobs.as_ref().unwrap();
        let changed = &noobs.sourced.as_ref().unwrap().changed;
        // EXPORT_NOOBS sees what EXPORT_IMAGE set; it only reports what it changed itself
        assert_eq!(changed["NOOBS_NAME"], "Fixture OS (-extra)");
        assert!(!changed.contains_key("IMG_SUFFIX"));
        assert!(scanned.export_image.is_some() && scanned.export_noobs.is_some());
    }

    #[test]
    fn indexed_names() {
        assert_eq!(indexed("00-packages"), Some("packages"));
        assert_eq!(indexed("99-run.sh"), Some("run.sh"));
        assert_eq!(indexed("100-run.sh"), None);
        assert_eq!(indexed("files"), None);
        assert_eq!(indexed("0a-run.sh"), None);
    }
}
