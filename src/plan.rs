//! The build plan: a pure function from (config, scanned stage trees) to the ordered steps.
//!
//! `pigen plan` prints it (`Display` is the human table, `--json` the `Serialize` form), and
//! the executor runs exactly this list. Step ids name log sections, progress lines, resume
//! points and cache keys, so they are stable: `<stage>/prerun.sh`,
//! `<stage>/<sub-stage>/<file or dir>` (e.g. `stage2/01-sys-tweaks/00-packages`), a sub-stage
//! skipped as a whole is `<stage>/<sub-stage>`, and the export stages' steps are
//! `export-image@<stage>/…` and `export-noobs@<stage>/…`, `<stage>` being the exported stage.
//!
//! Semantics follow the original `build.sh` (behavior reference §3), with upstream pi-gen's
//! `SKIP` / `SKIP_IMAGES` marker files added and skip lists matched as whole words without
//! regex (§9.8).
//!
//! # JSON shape (`pigen plan --json`), version 1
//!
//! ```text
//! { "version": 1,
//!   "warnings": [string],                      // output of the export fragments
//!   "stages": [ {                              // STAGE_LIST order = build order
//!       "name": "stage2", "dir": path,
//!       "parent": "stage1" | null,              // previous STAGE_LIST entry, skipped or not
//!       "skipped": null | Skip,                 // a skipped stage has no steps
//!       "work_dir": path,                       // STAGE_WORK_DIR = WORK_DIR/<stage>
//!       "rootfs_dir": path,                     // WORK_DIR/<stage>/rootfs
//!       "image": path,                          // WORK_DIR/image-<stage>.qcow2
//!       "export": null | { "fragment": path, "skipped": null | Skip },  // has EXPORT_IMAGE
//!       "steps": [Step] } ],
//!   "exports": [ {                             // stage order
//!       "stage": "stage2", "stage_dir": path,
//!       "fragment": path,                       // its EXPORT_IMAGE
//!       "vars": {name: value},                  // everything EXPORT_IMAGE set; exported during the export
//!       "img_suffix": "-lite",
//!       "name": "2026-01-01-foo-lite",          // EXPORT_NAME = IMG_FILENAME + IMG_SUFFIX
//!       "deploy_dir": path,                     // DEPLOY_DIR/IMG_FILENAME
//!       "deploy_files": [string],               // file names in deploy_dir; SHA256SUMS is shared
//!       "image": ExportStage,                   // the export-image stage run for this export
//!       "noobs": null | { "fragment": path, "vars": {..}, "noobs_name": s, "noobs_description": s,
//!                         "stage": ExportStage } } ] }
//! ExportStage = { "name": "export-image", "dir": path, "work_dir": path, "rootfs_dir": path,
//!                 "skipped": null | Skip, "steps": [Step] }
//! Step = { "id": string, "sub_stage": string | null,
//!          "kind": "prerun" | "debconf" | "packages" | "patches" | "run_host" | "run_chroot"
//!                | "sub_stage",
//!          // packages: "list": "sys" | "nr" | "plain", "file": file name,
//!          //           "packages": [string] (empty: nothing to install), "recommends": bool
//!          // patches:  "edit": bool, "series": [string] | null (no series file)
//!          "path": path,                        // absolute path of the file or directory
//!          "cwd": path,                         // where it runs (chroot steps: the sub-stage dir)
//!          "skipped": null | Skip }
//! Skip = { "reason": "skip_stage_list" | "skip_images_list" | "not_executable" | "use_qemu" }
//!      | { "reason": "skip_file" | "skip_images_file", "path": path }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Compression, Config};
use crate::error::ConfigError;
use crate::scan::{self, Entry, Fragment, ImagesSkip, Scanned, StageTree, SubStageTree};

/// Version of the JSON shape documented above; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Deploy files every export of a build shares (rewritten by each, never a collision).
pub const SHARED_DEPLOY_FILES: &[&str] = &["SHA256SUMS"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub version: u32,
    /// Output of the `EXPORT_IMAGE` / `EXPORT_NOOBS` fragments (`<path>: <line>`).
    pub warnings: Vec<String>,
    pub stages: Vec<StagePlan>,
    pub exports: Vec<ExportPlan>,
}

/// One stage of `STAGE_LIST`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StagePlan {
    pub name: String,
    pub dir: PathBuf,
    /// The previous `STAGE_LIST` entry (skipped or not): this stage builds on its image.
    pub parent: Option<String>,
    /// Why the stage is not built; a skipped stage has no steps but its image is reused.
    pub skipped: Option<Skip>,
    /// `STAGE_WORK_DIR` = `WORK_DIR/<stage>`.
    pub work_dir: PathBuf,
    /// `ROOTFS_DIR` = `WORK_DIR/<stage>/rootfs`.
    pub rootfs_dir: PathBuf,
    /// `WORK_DIR/image-<stage>.qcow2`.
    pub image: PathBuf,
    /// Present when the stage has an `EXPORT_IMAGE` file.
    pub export: Option<StageExport>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageExport {
    pub fragment: PathBuf,
    /// Why it is not exported, if it is not.
    pub skipped: Option<Skip>,
}

/// Why something is not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    /// The stage's name is a word of `SKIP_STAGE_LIST`.
    SkipStageList,
    /// The stage's name is a word of `SKIP_IMAGES_LIST`.
    SkipImagesList,
    /// A `SKIP` file in the stage or sub-stage directory.
    SkipFile { path: PathBuf },
    /// A `SKIP_IMAGES` file in the stage directory.
    SkipImagesFile { path: PathBuf },
    /// `prerun.sh` / `NN-run.sh` without an exec bit (the original ignores it silently).
    NotExecutable,
    /// `EXPORT_NOOBS` is ignored with `USE_QEMU=1`.
    UseQemu,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::SkipStageList => "in SKIP_STAGE_LIST",
            Skip::SkipImagesList => "in SKIP_IMAGES_LIST",
            Skip::SkipFile { .. } => "SKIP file",
            Skip::SkipImagesFile { .. } => "SKIP_IMAGES file",
            Skip::NotExecutable => "not executable",
            Skip::UseQemu => "USE_QEMU=1",
        })
    }
}

/// One unit of work, in execution order within its stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Unique across the plan; see the module documentation.
    pub id: String,
    /// The sub-stage directory's name; `None` for `prerun.sh`.
    pub sub_stage: Option<String>,
    #[serde(flatten)]
    pub kind: StepKind,
    /// Absolute path of the step's file (or directory, for patches and sub-stages).
    pub path: PathBuf,
    /// Working directory: the stage dir for `prerun.sh`, `STAGE_WORK_DIR` for patches, the
    /// sub-stage dir otherwise (chroot steps: where the original ran `on_chroot` from).
    pub cwd: PathBuf,
    pub skipped: Option<Skip>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// `prerun.sh`, run on the host.
    Prerun,
    /// `NN-debconf`: fed to `debconf-set-selections` in the chroot (content expanded by bash).
    Debconf,
    /// A package list installed with apt in the chroot. Empty `packages`: the chosen file
    /// lists nothing (e.g. an all-comment `-RELEASE` variant suppressing the generic list).
    Packages {
        list: ListKind,
        /// File name, as the log shows it.
        file: String,
        packages: Vec<String>,
        /// Install recommended packages (only plain lists, `INSTALL_RECOMMENDS=1` and
        /// `REDUCED_FOOTPRINT` != 1).
        recommends: bool,
    },
    /// `NN-patches/`: `quilt push -a` in `STAGE_WORK_DIR`.
    Patches {
        /// `EDIT` present: an interactive shell before pushing.
        edit: bool,
        /// Patch names from `series`; `None` when there is no series file.
        series: Option<Vec<String>>,
    },
    /// `NN-run.sh`, run on the host.
    RunHost,
    /// `NN-run-chroot.sh`, fed to bash in the chroot.
    RunChroot,
    /// A whole sub-stage skipped by its `SKIP` file (only ever appears skipped).
    SubStage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// `NN-packages-sys-raspi*` / `NN-packages-sys-debian*`: never recommends.
    Sys,
    /// `NN-packages-nr*`: never recommends.
    Nr,
    /// `NN-packages*`: recommends per `INSTALL_RECOMMENDS` / `REDUCED_FOOTPRINT`.
    Plain,
}

impl ListKind {
    fn as_str(self) -> &'static str {
        match self {
            ListKind::Sys => "sys",
            ListKind::Nr => "nr",
            ListKind::Plain => "plain",
        }
    }
}

/// One exported stage, in stage order; run after all stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportPlan {
    pub stage: String,
    pub stage_dir: PathBuf,
    /// The stage's `EXPORT_IMAGE`.
    pub fragment: PathBuf,
    /// Everything `EXPORT_IMAGE` set; the executor exports these during this export.
    pub vars: BTreeMap<String, String>,
    pub img_suffix: String,
    /// `EXPORT_NAME` = `IMG_FILENAME` + `IMG_SUFFIX`.
    pub name: String,
    /// `DEPLOY_DIR/IMG_FILENAME`, shared by all exports of the build.
    pub deploy_dir: PathBuf,
    /// Final file names in `deploy_dir`.
    pub deploy_files: Vec<String>,
    /// The `export-image` stage, run on this export's image.
    pub image: ExportStage,
    /// Present when the stage has an `EXPORT_NOOBS` file.
    pub noobs: Option<NoobsPlan>,
}

/// `export-image` or `export-noobs`, run for one export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportStage {
    pub name: String,
    pub dir: PathBuf,
    /// `STAGE_WORK_DIR` = `WORK_DIR/<name>`.
    pub work_dir: PathBuf,
    /// `ROOTFS_DIR` = `WORK_DIR/<name>/rootfs`.
    pub rootfs_dir: PathBuf,
    pub skipped: Option<Skip>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoobsPlan {
    /// The stage's `EXPORT_NOOBS`.
    pub fragment: PathBuf,
    /// Everything `EXPORT_NOOBS` set (sourced after `EXPORT_IMAGE`).
    pub vars: BTreeMap<String, String>,
    pub noobs_name: String,
    pub noobs_description: String,
    /// `skipped` is `UseQemu` (and there are no steps) with `USE_QEMU=1`.
    pub stage: ExportStage,
}

impl Plan {
    /// Every step in execution order: stages, then each export's `export-image` and
    /// `export-noobs` steps. Skipped steps included (check `skipped`).
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        let stage_steps = self.stages.iter().flat_map(|s| s.steps.iter());
        let export_steps = self.exports.iter().flat_map(|e| {
            e.image
                .steps
                .iter()
                .chain(e.noobs.iter().flat_map(|n| n.stage.steps.iter()))
        });
        stage_steps.chain(export_steps)
    }

    /// Ids of `steps()`, in order.
    pub fn step_ids(&self) -> Vec<&str> {
        self.steps().map(|s| s.id.as_str()).collect()
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps().find(|s| s.id == id)
    }
}

/// Builds the plan. Errors (one line each): an export without an `export-image` directory,
/// two exports deploying the same file, an unreadable package list the plan picks, an
/// `IMG_SUFFIX` unusable in file names.
pub fn plan(config: &Config, tree: &Scanned) -> Result<Plan, ConfigError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut stages = Vec::new();
    let mut parent: Option<String> = None;
    for st in &tree.stages {
        let skipped = stage_skip(config, st);
        let work_dir = config.work_dir.join(&st.name);
        let steps = if skipped.is_some() {
            Vec::new()
        } else {
            stage_steps(config, st, &st.name, &work_dir, &mut errors)
        };
        stages.push(StagePlan {
            name: st.name.clone(),
            dir: st.dir.clone(),
            parent: parent.replace(st.name.clone()),
            skipped,
            rootfs_dir: work_dir.join("rootfs"),
            work_dir,
            image: config.work_dir.join(format!("image-{}.qcow2", st.name)),
            export: st.export_image.as_ref().map(|f| StageExport {
                fragment: f.path.clone(),
                skipped: images_skip(config, st),
            }),
            steps,
        });
    }

    let exported: Vec<&StageTree> = tree
        .stages
        .iter()
        .filter(|st| st.export_image.is_some() && images_skip(config, st).is_none())
        .collect();
    let mut exports = Vec::new();
    if let (Some(first), None) = (exported.first(), &tree.export_image) {
        errors.push(format!(
            "{}: export-image directory not found, but {} has EXPORT_IMAGE; put the export-image stage there or add {} to SKIP_IMAGES_LIST",
            config.stages_root.join("export-image").display(),
            first.name,
            first.name
        ));
    }
    if let Some(export_image) = &tree.export_image {
        for st in exported {
            if let Some(export) =
                export_plan(config, tree, st, export_image, &mut errors, &mut warnings)
            {
                exports.push(export);
            }
        }
    }
    check_collisions(&exports, &mut errors);

    if !errors.is_empty() {
        return Err(ConfigError(errors));
    }
    Ok(Plan {
        version: FORMAT_VERSION,
        warnings,
        stages,
        exports,
    })
}

/// `SKIP_STAGE_LIST`, then the `SKIP` marker file.
fn stage_skip(config: &Config, st: &StageTree) -> Option<Skip> {
    if scan::listed(&config.skip_stage_list, &st.name) {
        Some(Skip::SkipStageList)
    } else if st.skip_file {
        Some(Skip::SkipFile {
            path: st.dir.join("SKIP"),
        })
    } else {
        None
    }
}

fn images_skip(config: &Config, st: &StageTree) -> Option<Skip> {
    scan::images_skipped(config, st).map(|s| match s {
        ImagesSkip::List => Skip::SkipImagesList,
        ImagesSkip::File(path) => Skip::SkipImagesFile { path },
    })
}

/// What sourcing `fragment` set, or an error line when it was not sourced.
fn sourced_vars(fragment: &Fragment, errors: &mut Vec<String>) -> BTreeMap<String, String> {
    match &fragment.sourced {
        Some(sourced) => sourced.changed.clone(),
        None => {
            errors.push(format!(
                "{}: not evaluated by the scan (scan and plan were given different configs)",
                fragment.path.display()
            ));
            BTreeMap::new()
        }
    }
}

fn fragment_warnings(fragment: &Fragment, warnings: &mut Vec<String>) {
    if let Some(sourced) = &fragment.sourced {
        warnings.extend(sourced.warnings.iter().cloned());
    }
}

fn export_plan(
    config: &Config,
    tree: &Scanned,
    st: &StageTree,
    export_image: &StageTree,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<ExportPlan> {
    let fragment = st.export_image.as_ref()?;
    fragment_warnings(fragment, warnings);
    let vars = sourced_vars(fragment, errors);
    let img_suffix = vars
        .get("IMG_SUFFIX")
        .map_or_else(|| config.get("IMG_SUFFIX").to_string(), Clone::clone);
    if img_suffix.contains('/') || img_suffix.chars().any(char::is_control) {
        errors.push(format!(
            "IMG_SUFFIX={img_suffix:?} ({}): is used in file names; remove '/' and control characters",
            fragment.path.display()
        ));
    }
    let id_prefix = format!("{}@{}", export_image.name, st.name);
    let image = export_stage(config, export_image, &id_prefix, errors);

    let noobs = st.export_noobs.as_ref().and_then(|noobs_fragment| {
        let lookup = |noobs_vars: &BTreeMap<String, String>, name: &str| {
            noobs_vars
                .get(name)
                .or_else(|| vars.get(name))
                .map_or_else(|| config.get(name).to_string(), Clone::clone)
        };
        if config.use_qemu {
            let dir = config.stages_root.join("export-noobs");
            return Some(NoobsPlan {
                fragment: noobs_fragment.path.clone(),
                vars: BTreeMap::new(),
                noobs_name: String::new(),
                noobs_description: String::new(),
                stage: ExportStage {
                    name: "export-noobs".to_string(),
                    work_dir: config.work_dir.join("export-noobs"),
                    rootfs_dir: config.work_dir.join("export-noobs").join("rootfs"),
                    dir,
                    skipped: Some(Skip::UseQemu),
                    steps: Vec::new(),
                },
            });
        }
        let Some(export_noobs) = &tree.export_noobs else {
            errors.push(format!(
                "{}: export-noobs directory not found, but {} has EXPORT_NOOBS; put the export-noobs stage there, remove {} or add {} to SKIP_IMAGES_LIST",
                config.stages_root.join("export-noobs").display(),
                st.name,
                noobs_fragment.path.display(),
                st.name
            ));
            return None;
        };
        fragment_warnings(noobs_fragment, warnings);
        let noobs_vars = sourced_vars(noobs_fragment, errors);
        let id_prefix = format!("{}@{}", export_noobs.name, st.name);
        Some(NoobsPlan {
            fragment: noobs_fragment.path.clone(),
            noobs_name: lookup(&noobs_vars, "NOOBS_NAME"),
            noobs_description: lookup(&noobs_vars, "NOOBS_DESCRIPTION"),
            vars: noobs_vars,
            stage: export_stage(config, export_noobs, &id_prefix, errors),
        })
    });

    Some(ExportPlan {
        stage: st.name.clone(),
        stage_dir: st.dir.clone(),
        fragment: fragment.path.clone(),
        name: format!("{}{img_suffix}", config.img_filename),
        deploy_dir: config.deploy_dir.join(&config.img_filename),
        deploy_files: deploy_files(config, &img_suffix),
        img_suffix,
        vars,
        image,
        noobs,
    })
}

fn export_stage(
    config: &Config,
    st: &StageTree,
    id_prefix: &str,
    errors: &mut Vec<String>,
) -> ExportStage {
    let skipped = stage_skip(config, st);
    let work_dir = config.work_dir.join(&st.name);
    let steps = if skipped.is_some() {
        Vec::new()
    } else {
        stage_steps(config, st, id_prefix, &work_dir, errors)
    };
    ExportStage {
        name: st.name.clone(),
        dir: st.dir.clone(),
        rootfs_dir: work_dir.join("rootfs"),
        work_dir,
        skipped,
        steps,
    }
}

/// The files an export deploys into `DEPLOY_DIR/IMG_FILENAME/`, `N` = `IMG_FILENAME` +
/// `img_suffix`: the image per `DEPLOY_COMPRESSION` (zip: `ARCHIVE_FILENAME+IMG_SUFFIX.zip`
/// holding `N.img`), `N.img` also with `KEEP_IMG=1`, `N.info`, `N.root-ext4.img`, `N.bmap`
/// with `BMAP=1`, `N.qcow2` with `USE_QEMU=1` or `OUTPUT_QCOW2=1`, and `SHA256SUMS`.
pub fn deploy_files(config: &Config, img_suffix: &str) -> Vec<String> {
    let n = format!("{}{img_suffix}", config.img_filename);
    let mut files = Vec::new();
    match config.compression {
        Compression::Zip => files.push(format!(
            "{}{img_suffix}.zip",
            config.get("ARCHIVE_FILENAME")
        )),
        Compression::Xz => files.push(format!("{n}.img.xz")),
        Compression::Gz => files.push(format!("{n}.img.gz")),
        Compression::Zstd => files.push(format!("{n}.img.zst")),
        Compression::None => {}
    }
    if config.compression == Compression::None || config.flag("KEEP_IMG") {
        files.push(format!("{n}.img"));
    }
    files.push(format!("{n}.info"));
    files.push(format!("{n}.root-ext4.img"));
    if config.flag("BMAP") {
        files.push(format!("{n}.bmap"));
    }
    if config.use_qemu || config.flag("OUTPUT_QCOW2") {
        files.push(format!("{n}.qcow2"));
    }
    files.extend(SHARED_DEPLOY_FILES.iter().map(|f| f.to_string()));
    files
}

fn check_collisions(exports: &[ExportPlan], errors: &mut Vec<String>) {
    for (i, a) in exports.iter().enumerate() {
        for b in &exports[i + 1..] {
            let clash = a
                .deploy_files
                .iter()
                .find(|f| !SHARED_DEPLOY_FILES.contains(&f.as_str()) && b.deploy_files.contains(f));
            if let Some(file) = clash {
                errors.push(format!(
                    "exports of {} and {} would both deploy {} into {}; give them different IMG_SUFFIX values in their EXPORT_IMAGE files or add one of them to SKIP_IMAGES_LIST",
                    a.stage,
                    b.stage,
                    file,
                    a.deploy_dir.display()
                ));
            }
        }
    }
}

/// `prerun.sh` and the sub-stages of one (not skipped) stage.
fn stage_steps(
    config: &Config,
    st: &StageTree,
    id_prefix: &str,
    work_dir: &Path,
    errors: &mut Vec<String>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(prerun) = &st.prerun {
        steps.push(Step {
            id: format!("{id_prefix}/prerun.sh"),
            sub_stage: None,
            kind: StepKind::Prerun,
            path: prerun.path.clone(),
            cwd: st.dir.clone(),
            skipped: (!prerun.executable).then_some(Skip::NotExecutable),
        });
    }
    for sub in &st.sub_stages {
        let prefix = format!("{id_prefix}/{}", sub.name);
        if sub.skip_file {
            steps.push(Step {
                id: prefix,
                sub_stage: Some(sub.name.clone()),
                kind: StepKind::SubStage,
                path: sub.dir.clone(),
                cwd: sub.dir.clone(),
                skipped: Some(Skip::SkipFile {
                    path: sub.dir.join("SKIP"),
                }),
            });
            continue;
        }
        sub_stage_steps(config, sub, &prefix, work_dir, errors, &mut steps);
    }
    steps
}

/// The per-index order of `run_sub_stage` (behavior reference §3.4).
fn sub_stage_steps(
    config: &Config,
    sub: &SubStageTree,
    prefix: &str,
    work_dir: &Path,
    errors: &mut Vec<String>,
    steps: &mut Vec<Step>,
) {
    let release = &config.release;
    let arch = config.target_arch.as_str();
    let step = |name: &str, kind: StepKind, cwd: &Path, skipped: Option<Skip>| Step {
        id: format!("{prefix}/{name}"),
        sub_stage: Some(sub.name.clone()),
        kind,
        path: sub.dir.join(name),
        cwd: cwd.to_path_buf(),
        skipped,
    };
    for i in 0..100 {
        let debconf = format!("{i:02}-debconf");
        if sub.is_file(&debconf) {
            steps.push(step(&debconf, StepKind::Debconf, &sub.dir, None));
        }

        let sys_candidates = if config.target_raspi {
            vec![
                format!("{i:02}-packages-sys-raspi-{release}"),
                format!("{i:02}-packages-sys-raspi"),
            ]
        } else {
            vec![
                format!("{i:02}-packages-sys-debian-{release}-{arch}"),
                format!("{i:02}-packages-sys-debian-{release}"),
                format!("{i:02}-packages-sys-debian-{arch}"),
                format!("{i:02}-packages-sys-debian"),
            ]
        };
        let lists = [
            (ListKind::Sys, sys_candidates),
            (
                ListKind::Nr,
                vec![
                    format!("{i:02}-packages-nr-{release}"),
                    format!("{i:02}-packages-nr"),
                ],
            ),
            (
                ListKind::Plain,
                vec![
                    format!("{i:02}-packages-{release}"),
                    format!("{i:02}-packages"),
                ],
            ),
        ];
        for (list, candidates) in lists {
            let Some(file) = candidates.iter().find(|c| sub.is_file(c)) else {
                continue;
            };
            let packages = match sub.entry(file) {
                Some(Entry::File {
                    packages: Some(Ok(words)),
                    ..
                }) => words.clone(),
                Some(Entry::File {
                    packages: Some(Err(e)),
                    ..
                }) => {
                    errors.push(format!(
                        "{}: cannot read this package list ({e}); check its permissions",
                        sub.dir.join(file).display()
                    ));
                    Vec::new()
                }
                _ => Vec::new(),
            };
            let recommends =
                list == ListKind::Plain && config.install_recommends && !config.reduced_footprint;
            let kind = StepKind::Packages {
                list,
                file: file.clone(),
                packages,
                recommends,
            };
            steps.push(step(file, kind, &sub.dir, None));
        }

        let patches = format!("{i:02}-patches");
        if let Some(Entry::Dir { patches: p }) = sub.entry(&patches) {
            let (edit, series) = p
                .as_ref()
                .map_or((false, None), |p| (p.edit, p.series.clone()));
            steps.push(step(
                &patches,
                StepKind::Patches { edit, series },
                work_dir,
                None,
            ));
        }

        let run = format!("{i:02}-run.sh");
        if let Some(Entry::File { executable, .. }) = sub.entry(&run) {
            let skipped = (!executable).then_some(Skip::NotExecutable);
            steps.push(step(&run, StepKind::RunHost, &sub.dir, skipped));
        }

        let chroot = format!("{i:02}-run-chroot.sh");
        if sub.is_file(&chroot) {
            steps.push(step(&chroot, StepKind::RunChroot, &sub.dir, None));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Human output (`pigen plan`).

impl StepKind {
    fn label(&self) -> &'static str {
        match self {
            StepKind::Prerun => "prerun",
            StepKind::Debconf => "debconf",
            StepKind::Packages { .. } => "packages",
            StepKind::Patches { .. } => "patches",
            StepKind::RunHost => "run",
            StepKind::RunChroot => "run-chroot",
            StepKind::SubStage => "sub-stage",
        }
    }
}

impl Step {
    /// The detail column of the human table.
    fn detail(&self) -> String {
        if let Some(skip) = &self.skipped {
            return format!("{skip}: skipped");
        }
        match &self.kind {
            StepKind::Packages {
                list,
                packages,
                recommends,
                ..
            } => {
                if packages.is_empty() {
                    format!("{}: empty list, nothing to install", list.as_str())
                } else {
                    let rec = if *recommends {
                        "with recommends"
                    } else {
                        "no recommends"
                    };
                    format!("{}, {rec}: {}", list.as_str(), packages.join(" "))
                }
            }
            StepKind::Patches { edit, series } => {
                let mut text = match series {
                    Some(series) if series.is_empty() => "series file lists no patches".into(),
                    Some(series) => series.join(" "),
                    None => "no series file".into(),
                };
                if *edit {
                    text.push_str("; EDIT: interactive shell before quilt push");
                }
                text
            }
            _ => String::new(),
        }
    }
}

fn write_steps(f: &mut fmt::Formatter<'_>, steps: &[Step], id_width: usize) -> fmt::Result {
    for step in steps {
        let line = format!(
            "  {:id_width$}  {:10}  {}",
            step.id,
            step.kind.label(),
            step.detail()
        );
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id_width = self.steps().map(|s| s.id.len()).max().unwrap_or(0);
        let name_width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let parent_width = self
            .stages
            .iter()
            .map(|s| s.parent.as_ref().map_or(0, |p| p.len() + 3))
            .max()
            .unwrap_or(0)
            .max("first stage".len());
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        for stage in &self.stages {
            let status = match &stage.skipped {
                Some(skip) => format!("skip ({skip})"),
                None => "build".to_string(),
            };
            let parent = match &stage.parent {
                Some(p) => format!("on {p}"),
                None => "first stage".to_string(),
            };
            let export = match &stage.export {
                Some(StageExport { skipped: None, .. }) => "  exported".to_string(),
                Some(StageExport {
                    skipped: Some(skip),
                    ..
                }) => format!("  not exported ({skip})"),
                None => String::new(),
            };
            let line = format!(
                "{:name_width$}  {status:26}  {parent:parent_width$}{export}",
                stage.name
            );
            writeln!(f, "{}", line.trim_end())?;
            write_steps(f, &stage.steps, id_width)?;
        }
        for export in &self.exports {
            writeln!(
                f,
                "export {} as {} (IMG_SUFFIX={:?}) into {}/",
                export.stage,
                export.name,
                export.img_suffix,
                export.deploy_dir.display()
            )?;
            writeln!(f, "  deploy: {}", export.deploy_files.join(" "))?;
            if let Some(skip) = &export.image.skipped {
                writeln!(f, "  {}: skip ({skip})", export.image.name)?;
            }
            write_steps(f, &export.image.steps, id_width)?;
            if let Some(noobs) = &export.noobs {
                match &noobs.stage.skipped {
                    Some(skip) => writeln!(f, "  {}: skip ({skip})", noobs.stage.name)?,
                    None => writeln!(
                        f,
                        "  {}: NOOBS_NAME={:?}",
                        noobs.stage.name, noobs.noobs_name
                    )?,
                }
                write_steps(f, &noobs.stage.steps, id_width)?;
            }
        }
        if self.exports.is_empty() {
            writeln!(f, "no exports")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan;
    use crate::test_support::{config_at, fixture_config, process_env};

    fn plan_for(config: &Config) -> Result<Plan, ConfigError> {
        plan(config, &scan(config, &process_env())?)
    }

    fn fixture_plan(vars: &[(&str, &str)]) -> Plan {
        plan_for(&fixture_config(vars)).unwrap_or_else(|e| panic!("plan: {e}"))
    }

    /// One line per step: id, kind and what matters about it.
    fn sig(step: &Step) -> String {
        let kind = match &step.kind {
            StepKind::Packages {
                list,
                packages,
                recommends,
                file,
            } => {
                assert!(step.id.ends_with(&format!("/{file}")));
                format!(
                    "packages:{}:[{}]:{}",
                    list.as_str(),
                    packages.join(","),
                    if *recommends { "rec" } else { "norec" }
                )
            }
            StepKind::Patches { edit, series } => {
                format!("patches:edit={edit}:series={series:?}")
            }
            other => other.label().to_string(),
        };
        match &step.skipped {
            Some(skip) => format!("{} {kind} skipped={skip}", step.id),
            None => format!("{} {kind}", step.id),
        }
    }

    fn stage_sigs(plan: &Plan, stage: &str) -> Vec<String> {
        let stage = plan.stages.iter().find(|s| s.name == stage).unwrap();
        stage.steps.iter().map(sig).collect()
    }

    #[test]
    fn raspi_stage_in_index_order() {
        let plan = fixture_plan(&[("STAGE_LIST", "stage0"), ("RELEASE", "bookworm")]);
        assert_eq!(
            stage_sigs(&plan, "stage0"),
            [
                "stage0/prerun.sh prerun",
                "stage0/00-configure/00-debconf debconf",
                "stage0/00-configure/00-packages-sys-raspi-bookworm packages:sys:[raspi-bookworm]:norec",
                "stage0/00-configure/00-packages-nr-bookworm packages:nr:[nr-bookworm]:norec",
                "stage0/00-configure/00-packages packages:plain:[foo,bar,baz,last]:norec",
                r#"stage0/00-configure/00-patches patches:edit=false:series=Some(["01-first.diff", "02-second.diff"])"#,
                "stage0/00-configure/00-run.sh run",
                "stage0/00-configure/00-run-chroot.sh run-chroot",
                "stage0/00-configure/01-run.sh run skipped=not executable",
                "stage0/00-configure/02-patches patches:edit=true:series=None",
                "stage0/00-configure/02-run-chroot.sh run-chroot",
            ]
        );
        assert!(plan.exports.is_empty());
    }

    #[test]
    fn raspi_without_release_variant_uses_generic() {
        let plan = fixture_plan(&[("STAGE_LIST", "stage0"), ("RELEASE", "trixie")]);
        let sigs = stage_sigs(&plan, "stage0");
        assert!(sigs.contains(
            &"stage0/00-configure/00-packages-sys-raspi packages:sys:[raspi-generic]:norec".into()
        ));
        assert!(sigs
            .contains(&"stage0/00-configure/00-packages-nr packages:nr:[nr-generic]:norec".into()));
        // debian lists are never used for raspi
        assert!(!sigs.iter().any(|s| s.contains("sys-debian")));
    }

    #[test]
    fn debian_system_list_precedence() {
        let cases = [
            (
                "bookworm",
                "amd64",
                "00-packages-sys-debian-bookworm-amd64",
                "debian-release-arch",
            ),
            (
                "bookworm",
                "arm64",
                "00-packages-sys-debian-bookworm",
                "debian-release",
            ),
            (
                "trixie",
                "amd64",
                "00-packages-sys-debian-amd64",
                "debian-arch",
            ),
            (
                "trixie",
                "arm64",
                "00-packages-sys-debian",
                "debian-generic",
            ),
        ];
        for (release, arch, file, word) in cases {
            let plan = fixture_plan(&[
                ("STAGE_LIST", "stage0"),
                ("TARGET_RASPI", "0"),
                ("RELEASE", release),
                ("TARGET_ARCH", arch),
            ]);
            let sys: Vec<String> = stage_sigs(&plan, "stage0")
                .into_iter()
                .filter(|s| s.contains(":sys:"))
                .collect();
            let mut expected = vec![format!(
                "stage0/00-configure/{file} packages:sys:[{word}]:norec"
            )];
            if release == "trixie" {
                expected.push(
                    "stage0/00-configure/01-packages-sys-debian-trixie packages:sys:[debian-trixie-only]:norec"
                        .into(),
                );
            }
            assert_eq!(sys, expected, "{release} {arch}");
        }
    }

    #[test]
    fn empty_release_variants_suppress_generic_lists_and_sub_stages_sort_bytewise() {
        let plan = fixture_plan(&[("STAGE_LIST", "stage1"), ("RELEASE", "bookworm")]);
        assert_eq!(
            stage_sigs(&plan, "stage1"),
            [
                "stage1/prerun.sh prerun skipped=not executable",
                "stage1/00-lists/00-packages-nr packages:nr:[]:norec",
                "stage1/00-lists/00-packages-bookworm packages:plain:[]:norec",
                "stage1/00-lists/01-packages-sys-raspi-bookworm packages:sys:[]:norec",
                "stage1/00-lists/01-packages packages:plain:[rec-a,rec-b]:norec",
                "stage1/01-skipped sub-stage skipped=SKIP file",
                "stage1/10-ten/00-run.sh run",
                "stage1/9-nine/00-run.sh run",
                "stage1/B-upper/00-run.sh run",
                "stage1/a-lower/00-run.sh run",
            ]
        );
    }

    #[test]
    fn recommends_only_for_plain_lists_without_reduced_footprint() {
        let with = fixture_plan(&[
            ("STAGE_LIST", "stage0 stage1"),
            ("RELEASE", "bookworm"),
            ("INSTALL_RECOMMENDS", "1"),
        ]);
        let rec: Vec<&str> = with
            .steps()
            .filter(|s| {
                matches!(
                    s.kind,
                    StepKind::Packages {
                        recommends: true,
                        ..
                    }
                )
            })
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            rec,
            [
                "stage0/00-configure/00-packages",
                "stage1/00-lists/00-packages-bookworm",
                "stage1/00-lists/01-packages",
            ]
        );
        let reduced = fixture_plan(&[
            ("STAGE_LIST", "stage0 stage1"),
            ("RELEASE", "bookworm"),
            ("INSTALL_RECOMMENDS", "1"),
            ("REDUCED_FOOTPRINT", "1"),
        ]);
        assert!(!reduced.steps().any(|s| matches!(
            s.kind,
            StepKind::Packages {
                recommends: true,
                ..
            }
        )));
    }

    #[test]
    fn paths_and_working_directories() {
        let plan = fixture_plan(&[("STAGE_LIST", "stage0"), ("RELEASE", "bookworm")]);
        let root = crate::test_support::fixtures().join("stages");
        let stage = &plan.stages[0];
        assert_eq!(stage.dir, root.join("stage0"));
        assert_eq!(stage.parent, None);
        assert_eq!(stage.work_dir, Path::new("/w/stage0"));
        assert_eq!(stage.rootfs_dir, Path::new("/w/stage0/rootfs"));
        assert_eq!(stage.image, Path::new("/w/image-stage0.qcow2"));
        let sub = root.join("stage0/00-configure");
        let prerun = plan.step("stage0/prerun.sh").unwrap();
        assert_eq!(prerun.path, root.join("stage0/prerun.sh"));
        assert_eq!(prerun.cwd, root.join("stage0"));
        assert_eq!(prerun.sub_stage, None);
        let run = plan.step("stage0/00-configure/00-run.sh").unwrap();
        assert_eq!(run.path, sub.join("00-run.sh"));
        assert_eq!(run.cwd, sub);
        assert_eq!(run.sub_stage.as_deref(), Some("00-configure"));
        let patches = plan.step("stage0/00-configure/00-patches").unwrap();
        assert_eq!(patches.path, sub.join("00-patches"));
        assert_eq!(patches.cwd, Path::new("/w/stage0"));
        let chroot = plan.step("stage0/00-configure/00-run-chroot.sh").unwrap();
        assert_eq!(chroot.cwd, sub);
    }

    const ALL: &str = "stage0 stage1 stage2 stage2a stage3 stage4 stage5";

    #[test]
    fn skip_lists_and_marker_files() {
        let plan = fixture_plan(&[
            ("STAGE_LIST", ALL),
            ("SKIP_STAGE_LIST", "stage2"),
            ("SKIP_IMAGES_LIST", "stage5"),
        ]);
        let summary: Vec<(String, Option<String>, Option<Skip>, usize)> = plan
            .stages
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.parent.clone(),
                    s.skipped.clone(),
                    s.steps.len(),
                )
            })
            .collect();
        let root = crate::test_support::fixtures().join("stages");
        let name = |s: &str| Some(s.to_string());
        assert_eq!(
            summary,
            [
                ("stage0".into(), None, None, 11),
                ("stage1".into(), name("stage0"), None, 10),
                (
                    "stage2".into(),
                    name("stage1"),
                    Some(Skip::SkipStageList),
                    0
                ),
                // whole words: "stage2" in the list does not skip stage2a; its sub-stage's
                // SKIP_IMAGES file means nothing
                ("stage2a".into(), name("stage2"), None, 1),
                (
                    "stage3".into(),
                    name("stage2a"),
                    Some(Skip::SkipFile {
                        path: root.join("stage3/SKIP")
                    }),
                    0
                ),
                ("stage4".into(), name("stage3"), None, 1),
                ("stage5".into(), name("stage4"), None, 1),
            ]
        );
        let export_skips: Vec<(&str, Option<Option<Skip>>)> = plan
            .stages
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.export.as_ref().map(|e| e.skipped.clone()),
                )
            })
            .collect();
        assert_eq!(
            export_skips,
            [
                ("stage0", None),
                ("stage1", None),
                ("stage2", Some(None)),
                ("stage2a", Some(None)),
                ("stage3", Some(None)),
                (
                    "stage4",
                    Some(Some(Skip::SkipImagesFile {
                        path: root.join("stage4/SKIP_IMAGES")
                    }))
                ),
                ("stage5", Some(Some(Skip::SkipImagesList))),
            ]
        );
        // skipped stages are still exported
        let exports: Vec<(&str, &str, &str)> = plan
            .exports
            .iter()
            .map(|e| (e.stage.as_str(), e.img_suffix.as_str(), e.name.as_str()))
            .collect();
        assert_eq!(
            exports,
            [
                ("stage2", "-lite", "2026-01-01-test-lite"),
                ("stage2a", "-extra", "2026-01-01-test-extra"),
                ("stage3", "-full", "2026-01-01-test-full"),
            ]
        );
    }

    #[test]
    fn skip_images_list_is_whole_word_too() {
        let plan = fixture_plan(&[
            ("STAGE_LIST", "stage0 stage2 stage2a"),
            ("SKIP_IMAGES_LIST", "stage2"),
        ]);
        let exported: Vec<&str> = plan.exports.iter().map(|e| e.stage.as_str()).collect();
        assert_eq!(exported, ["stage2a"]);
    }

    #[test]
    fn export_steps_fragment_vars_and_noobs() {
        let plan = fixture_plan(&[("STAGE_LIST", "stage0 stage2a")]);
        let export = &plan.exports[0];
        assert_eq!(export.stage, "stage2a");
        assert_eq!(
            export.vars,
            BTreeMap::from([
                ("EXTRA_EXPORT_VAR".to_string(), "kept".to_string()),
                ("IMG_SUFFIX".to_string(), "-extra".to_string()),
            ])
        );
        let ids: Vec<String> = export
            .image
            .steps
            .iter()
            .chain(&export.noobs.as_ref().unwrap().stage.steps)
            .map(sig)
            .collect();
        assert_eq!(
            ids,
            [
                "export-image@stage2a/00-allow-rerun/00-run.sh run",
                "export-image@stage2a/02-network/01-run-chroot.sh run-chroot",
                "export-image@stage2a/04-finalise/01-run.sh run",
                "export-noobs@stage2a/prerun.sh prerun",
                "export-noobs@stage2a/00-release/00-run.sh run",
            ]
        );
        let noobs = export.noobs.as_ref().unwrap();
        assert_eq!(noobs.noobs_name, "Fixture OS (-extra)");
        assert_eq!(noobs.noobs_description, "A fixture");
        assert_eq!(noobs.stage.skipped, None);
        assert_eq!(export.image.work_dir, Path::new("/w/export-image"));
        assert_eq!(export.image.rootfs_dir, Path::new("/w/export-image/rootfs"));
        assert_eq!(export.deploy_dir, Path::new("/d/2026-01-01-test"));
    }

    #[test]
    fn use_qemu_suffix_qcow2_and_no_noobs() {
        let plan = fixture_plan(&[("STAGE_LIST", "stage0 stage2 stage2a"), ("USE_QEMU", "1")]);
        let stage2 = &plan.exports[0];
        assert_eq!(stage2.img_suffix, "-lite-qemu");
        assert_eq!(
            stage2.deploy_files,
            [
                "image_2026-01-01-test-lite-qemu.zip",
                "2026-01-01-test-lite-qemu.info",
                "2026-01-01-test-lite-qemu.root-ext4.img",
                "2026-01-01-test-lite-qemu.qcow2",
                "SHA256SUMS",
            ]
        );
        let noobs = plan.exports[1].noobs.as_ref().unwrap();
        assert_eq!(noobs.stage.skipped, Some(Skip::UseQemu));
        assert!(noobs.stage.steps.is_empty());
        assert!(!plan
            .step_ids()
            .iter()
            .any(|id| id.starts_with("export-noobs")));
    }

    #[test]
    fn deploy_files_per_compression() {
        let files = |vars: &[(&str, &str)]| {
            let mut all = vec![("STAGE_LIST", "stage0 stage2")];
            all.extend_from_slice(vars);
            fixture_plan(&all).exports[0].deploy_files.clone()
        };
        let n = "2026-01-01-test-lite";
        assert_eq!(
            files(&[]),
            [
                format!("image_{n}.zip"),
                format!("{n}.info"),
                format!("{n}.root-ext4.img"),
                "SHA256SUMS".into()
            ]
        );
        assert_eq!(
            files(&[("DEPLOY_ZIP", "0")]),
            [
                format!("{n}.img"),
                format!("{n}.info"),
                format!("{n}.root-ext4.img"),
                "SHA256SUMS".into()
            ]
        );
        assert_eq!(
            files(&[
                ("DEPLOY_COMPRESSION", "xz"),
                ("KEEP_IMG", "1"),
                ("BMAP", "1")
            ]),
            [
                format!("{n}.img.xz"),
                format!("{n}.img"),
                format!("{n}.info"),
                format!("{n}.root-ext4.img"),
                format!("{n}.bmap"),
                "SHA256SUMS".into()
            ]
        );
        assert_eq!(
            files(&[("DEPLOY_COMPRESSION", "gz")])[0],
            format!("{n}.img.gz")
        );
        assert_eq!(
            files(&[("DEPLOY_COMPRESSION", "zstd"), ("COMPRESSION_LEVEL", "19")])[0],
            format!("{n}.img.zst")
        );
        assert!(files(&[("OUTPUT_QCOW2", "1")]).contains(&format!("{n}.qcow2")));
        assert_eq!(
            files(&[("ARCHIVE_FILENAME", "custom")])[0],
            "custom-lite.zip".to_string()
        );
    }

    #[test]
    fn colliding_exports_are_an_error() {
        let err = plan_for(&fixture_config(&[("STAGE_LIST", "stage0 stage2 stage5")])).unwrap_err();
        assert_eq!(
            err.0,
            ["exports of stage2 and stage5 would both deploy image_2026-01-01-test-lite.zip into /d/2026-01-01-test; give them different IMG_SUFFIX values in their EXPORT_IMAGE files or add one of them to SKIP_IMAGES_LIST"]
        );
        // skipping the images of one of them resolves it
        fixture_plan(&[
            ("STAGE_LIST", "stage0 stage2 stage5"),
            ("SKIP_IMAGES_LIST", "stage5"),
        ]);
    }

    #[test]
    fn missing_export_image_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let stages = dir.path().join("stages");
        std::fs::create_dir_all(stages.join("stage0/00-x")).unwrap();
        std::fs::write(stages.join("stage0/EXPORT_IMAGE"), "IMG_SUFFIX=\n").unwrap();
        std::fs::write(stages.join("stage0/00-x/00-packages"), "foo\n").unwrap();
        let config = config_at(dir.path(), &[("STAGE_LIST", "stage0")]);
        let err = plan_for(&config).unwrap_err();
        assert_eq!(
            err.0,
            [format!(
                "{}: export-image directory not found, but stage0 has EXPORT_IMAGE; put the export-image stage there or add stage0 to SKIP_IMAGES_LIST",
                stages.join("export-image").display()
            )]
        );
        let config = config_at(
            dir.path(),
            &[("STAGE_LIST", "stage0"), ("SKIP_IMAGES_LIST", "stage0")],
        );
        let plan = plan_for(&config).unwrap();
        assert!(plan.exports.is_empty());
        assert_eq!(plan.step_ids(), ["stage0/00-x/00-packages"]);
    }

    #[test]
    fn missing_export_noobs_directory_is_an_error_unless_use_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let stages = dir.path().join("stages");
        std::fs::create_dir_all(stages.join("stage0")).unwrap();
        std::fs::create_dir_all(stages.join("export-image/00-y")).unwrap();
        std::fs::write(stages.join("stage0/EXPORT_IMAGE"), "IMG_SUFFIX=-x\n").unwrap();
        std::fs::write(stages.join("stage0/EXPORT_NOOBS"), "NOOBS_NAME=n\n").unwrap();
        let config = config_at(dir.path(), &[("STAGE_LIST", "stage0")]);
        let err = plan_for(&config).unwrap_err();
        assert_eq!(
            err.0,
            [format!(
                "{}: export-noobs directory not found, but stage0 has EXPORT_NOOBS; put the export-noobs stage there, remove {} or add stage0 to SKIP_IMAGES_LIST",
                stages.join("export-noobs").display(),
                stages.join("stage0/EXPORT_NOOBS").display()
            )]
        );
        let config = config_at(dir.path(), &[("STAGE_LIST", "stage0"), ("USE_QEMU", "1")]);
        let plan = plan_for(&config).unwrap();
        assert_eq!(plan.exports[0].img_suffix, "-x");
        let noobs = plan.exports[0].noobs.as_ref().unwrap();
        assert_eq!(noobs.stage.skipped, Some(Skip::UseQemu));
    }

    #[test]
    fn fragment_output_becomes_plan_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let stages = dir.path().join("stages");
        std::fs::create_dir_all(stages.join("stage0/00-x")).unwrap();
        std::fs::create_dir_all(stages.join("export-image/00-y")).unwrap();
        let fragment = stages.join("stage0/EXPORT_IMAGE");
        std::fs::write(
            &fragment,
            "echo \"exporting ${EXPORT_DIR##*/}\"\nIMG_SUFFIX=-x\n",
        )
        .unwrap();
        let config = config_at(dir.path(), &[("STAGE_LIST", "stage0")]);
        let plan = plan_for(&config).unwrap();
        assert_eq!(
            plan.warnings,
            [format!("{}: exporting stage0", fragment.display())]
        );
        assert_eq!(plan.exports[0].img_suffix, "-x");
        assert!(plan.to_string().starts_with(&format!(
            "warning: {}: exporting stage0\n",
            fragment.display()
        )));
    }

    #[test]
    fn export_image_in_skip_stage_list_skips_its_steps() {
        let plan = fixture_plan(&[
            ("STAGE_LIST", "stage0 stage2"),
            ("SKIP_STAGE_LIST", "export-image"),
        ]);
        assert_eq!(plan.exports[0].image.skipped, Some(Skip::SkipStageList));
        assert!(plan.exports[0].image.steps.is_empty());
    }

    #[test]
    fn step_ids_are_unique() {
        let plan = fixture_plan(&[("STAGE_LIST", ALL), ("SKIP_IMAGES_LIST", "stage5")]);
        let ids = plan.step_ids();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "duplicate ids in {ids:#?}");
        assert!(ids.len() > 30);
    }

    #[test]
    fn json_shape() {
        let plan = fixture_plan(&[
            ("STAGE_LIST", "stage0 stage1 stage2"),
            ("RELEASE", "bookworm"),
        ]);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["version"], 1);
        let stage0 = &json["stages"][0];
        assert_eq!(stage0["name"], "stage0");
        assert_eq!(stage0["parent"], serde_json::Value::Null);
        assert_eq!(stage0["image"], "/w/image-stage0.qcow2");
        assert_eq!(json["stages"][1]["parent"], "stage0");
        let sys = &stage0["steps"][2];
        assert_eq!(
            sys["id"],
            "stage0/00-configure/00-packages-sys-raspi-bookworm"
        );
        assert_eq!(sys["sub_stage"], "00-configure");
        assert_eq!(sys["kind"], "packages");
        assert_eq!(sys["list"], "sys");
        assert_eq!(sys["file"], "00-packages-sys-raspi-bookworm");
        assert_eq!(sys["packages"], serde_json::json!(["raspi-bookworm"]));
        assert_eq!(sys["recommends"], false);
        assert_eq!(sys["skipped"], serde_json::Value::Null);
        let skipped = &json["stages"][1]["steps"][0];
        assert_eq!(skipped["kind"], "prerun");
        assert_eq!(
            skipped["skipped"],
            serde_json::json!({"reason": "not_executable"})
        );
        let export = &json["exports"][0];
        assert_eq!(export["stage"], "stage2");
        assert_eq!(export["img_suffix"], "-lite");
        assert_eq!(export["vars"]["IMG_SUFFIX"], "-lite");
        assert_eq!(export["deploy_dir"], "/d/2026-01-01-test");
        assert_eq!(export["image"]["name"], "export-image");
        assert_eq!(
            export["image"]["steps"][0]["id"],
            "export-image@stage2/00-allow-rerun/00-run.sh"
        );
        assert_eq!(export["noobs"], serde_json::Value::Null);
    }

    #[test]
    fn human_table() {
        let plan = fixture_plan(&[
            ("STAGE_LIST", "stage1 stage2 stage2a stage4"),
            ("RELEASE", "bookworm"),
            ("SKIP_STAGE_LIST", "stage2"),
        ]);
        let text = plan.to_string();
        let expected = "\
stage1   build                       first stage
  stage1/prerun.sh                                  prerun      not executable: skipped
  stage1/00-lists/00-packages-nr                    packages    nr: empty list, nothing to install
  stage1/00-lists/00-packages-bookworm              packages    plain: empty list, nothing to install
  stage1/00-lists/01-packages-sys-raspi-bookworm    packages    sys: empty list, nothing to install
  stage1/00-lists/01-packages                       packages    plain, no recommends: rec-a rec-b
  stage1/01-skipped                                 sub-stage   SKIP file: skipped
  stage1/10-ten/00-run.sh                           run
  stage1/9-nine/00-run.sh                           run
  stage1/B-upper/00-run.sh                          run
  stage1/a-lower/00-run.sh                          run
stage2   skip (in SKIP_STAGE_LIST)   on stage1    exported
stage2a  build                       on stage2    exported
  stage2a/00-extra/00-run.sh                        run
stage4   build                       on stage2a   not exported (SKIP_IMAGES file)
  stage4/00-pkgs/00-packages                        packages    plain, no recommends: four
export stage2 as 2026-01-01-test-lite (IMG_SUFFIX=\"-lite\") into /d/2026-01-01-test/
  deploy: image_2026-01-01-test-lite.zip 2026-01-01-test-lite.info 2026-01-01-test-lite.root-ext4.img SHA256SUMS
  export-image@stage2/00-allow-rerun/00-run.sh      run
  export-image@stage2/02-network/01-run-chroot.sh   run-chroot
  export-image@stage2/04-finalise/01-run.sh         run
export stage2a as 2026-01-01-test-extra (IMG_SUFFIX=\"-extra\") into /d/2026-01-01-test/
  deploy: image_2026-01-01-test-extra.zip 2026-01-01-test-extra.info 2026-01-01-test-extra.root-ext4.img SHA256SUMS
  export-image@stage2a/00-allow-rerun/00-run.sh     run
  export-image@stage2a/02-network/01-run-chroot.sh  run-chroot
  export-image@stage2a/04-finalise/01-run.sh        run
  export-noobs: NOOBS_NAME=\"Fixture OS (-extra)\"
  export-noobs@stage2a/prerun.sh                    prerun
  export-noobs@stage2a/00-release/00-run.sh         run
";
        assert_eq!(text, expected, "got:\n{text}");
    }
}
