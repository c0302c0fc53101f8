//! The executor: runs exactly the plan's steps, stage after stage, each on its own stage root.
//! Runs inside the build's namespaces (`exec::namespace`), as root.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;

use super::buildlog::BuildLog;
use super::chroot::{apt_install_script, chroot_script_cmd, debconf_script, ResolvConfGuard};
use super::cmd::{Cmd, CmdError};
use super::env::script_env;
use super::env::StageVars;
use super::signals;
use super::state::{BuildState, StageStatus};
use crate::config::{Config, Env};
use crate::error::ConfigError;
use crate::plan::{Plan, StagePlan, Step, StepKind};
use crate::storage::{AttachedRoot, StageStore};

/// How a build ended badly; the CLI maps these to exit codes and messages.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A step failed: exit 1.
    #[error("step {step} failed")]
    Step {
        step: String,
        error: CmdError,
        hint: Option<String>,
    },
    /// Stopped by a signal: exit 130 (SIGINT) or 128 + signal.
    #[error("interrupted by {signal}")]
    Interrupted { signal: nix::sys::signal::Signal },
    /// Bad input found before any work (missing images of skipped stages, --continue with a
    /// different configuration): exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct BuildOptions {
    pub resume: bool,
}

/// Which stages are built now and which reuse an existing root.
#[derive(Debug, PartialEq, Eq)]
pub enum StageAction {
    Build,
    /// Skipped by the plan (list or `SKIP` file): its root must exist when something needs it.
    ReuseSkipped,
    /// Finished in an earlier run continued with `--continue`.
    ReuseDone,
}

/// Decides per stage, before any work. A qcow2 layer is only valid on top of the parent it was
/// built on, so once a stage is rebuilt every later stage is rebuilt too; a stage skipped after
/// a rebuilt one is refused (its overlay would no longer match).
pub fn stage_actions(
    plan: &Plan,
    state: Option<&BuildState>,
    store: &dyn StageStore,
    layered: bool,
) -> Result<Vec<StageAction>, ConfigError> {
    let mut actions = Vec::new();
    let mut rebuilt = false;
    for stage in &plan.stages {
        let action = if stage.skipped.is_some() {
            StageAction::ReuseSkipped
        } else if !rebuilt
            && state.is_some_and(|s| s.is_done(&stage.name))
            && store.exists(&stage.name)
        {
            StageAction::ReuseDone
        } else {
            rebuilt = true;
            StageAction::Build
        };
        actions.push(action);
    }
    // A reused root must exist, and (qcow2) still sit on the image it was built on, when a
    // later stage builds on it or it is exported.
    let mut errors = Vec::new();
    for (i, stage) in plan.stages.iter().enumerate() {
        if actions[i] == StageAction::Build {
            continue;
        }
        let child_builds = actions.get(i + 1) == Some(&StageAction::Build);
        let exported = plan.exports.iter().any(|e| e.stage == stage.name);
        if !(child_builds || exported) {
            continue;
        }
        let why = if child_builds {
            "the next stage builds on it"
        } else {
            "it is exported"
        };
        let rebuilt_before = plan.stages[..i]
            .iter()
            .zip(&actions)
            .rev()
            .find(|(_, a)| **a == StageAction::Build)
            .map(|(s, _)| s.name.as_str());
        if !store.exists(&stage.name) {
            errors.push(format!(
                "stage {} is skipped but {} does not exist ({why}); build it once without skipping it",
                stage.name,
                store.location(&stage.name).display()
            ));
        } else if let (true, Some(parent)) = (layered, rebuilt_before) {
            errors.push(format!(
                "stage {} is skipped but {parent} before it is rebuilt: its qcow2 layer sits on {parent}'s old image and would no longer match ({why}); skip {parent} too, or stop skipping {}",
                stage.name, stage.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(actions)
    } else {
        Err(ConfigError(errors))
    }
}

pub fn run_build(
    config: &Config,
    plan: &Plan,
    process_env: &Env,
    options: &BuildOptions,
    log: &BuildLog,
) -> Result<(), BuildError> {
    let work_dir = &config.work_dir;
    let store = crate::storage::open(config, log.sink())?;
    let previous = BuildState::load(work_dir)?;
    if options.resume {
        if let Some(previous) = &previous {
            let changes = previous.config_changes(config);
            if !changes.is_empty() {
                return Err(ConfigError::new(format!(
                    "--continue: the configuration changed since the interrupted build ({}); run without --continue to rebuild",
                    changes.join(", ")
                ))
                .into());
            }
        }
    }
    let resume_from = if options.resume {
        previous.as_ref()
    } else {
        None
    };
    let layered = config.get("STAGE_STORE") == "qcow2";
    let actions = stage_actions(plan, resume_from, store.as_ref(), layered)?;

    let mut state = BuildState::new(config);
    if let Some(previous) = resume_from {
        state.img_date = previous.img_date.clone();
    }
    for (stage, action) in plan.stages.iter().zip(&actions) {
        if *action == StageAction::ReuseDone {
            state.stages.insert(stage.name.clone(), StageStatus::Done);
        }
    }
    state.save(work_dir)?;

    log.line(&format!("Begin {}", config.base_dir.display()));
    for (i, (stage, action)) in plan.stages.iter().zip(&actions).enumerate() {
        let prev = i.checked_sub(1).map(|p| &plan.stages[p]);
        match action {
            StageAction::ReuseSkipped => {
                log.line(&format!(
                    "Skip {} ({})",
                    stage.name,
                    stage
                        .skipped
                        .as_ref()
                        .map_or(String::new(), |s| s.to_string())
                ));
                continue;
            }
            StageAction::ReuseDone => {
                log.line(&format!(
                    "Reuse {} (finished before; --continue)",
                    stage.name
                ));
                continue;
            }
            StageAction::Build => {}
        }
        state
            .stages
            .insert(stage.name.clone(), StageStatus::Building);
        // Later stages sit on this one: whatever they were, they are stale now.
        for later in &plan.stages[i + 1..] {
            state.stages.remove(&later.name);
            if layered && later.skipped.is_none() && store.exists(&later.name) {
                store.discard(&later.name)?;
            }
        }
        state.save(work_dir)?;
        build_stage(config, stage, prev, store.as_ref(), process_env, log)?;
        state.stages.insert(stage.name.clone(), StageStatus::Done);
        state.save(work_dir)?;
    }
    let mut deployer = crate::deploy::Deployer::new();
    for export in &plan.exports {
        if let Some(signal) = signals::received() {
            return Err(BuildError::Interrupted { signal });
        }
        export_one(
            config,
            plan,
            export,
            store.as_ref(),
            process_env,
            log,
            &mut deployer,
        )?;
    }
    log.line(&format!("End {}", config.base_dir.display()));
    Ok(())
}

/// One export: a writable copy of the stage, the `export-image` steps on it, the disk image
/// assembled from the finished tree, then the deploy. The stage's own root is never modified.
fn export_one(
    config: &Config,
    plan: &Plan,
    export: &crate::plan::ExportPlan,
    store: &dyn StageStore,
    process_env: &Env,
    log: &BuildLog,
    deployer: &mut crate::deploy::Deployer,
) -> Result<(), BuildError> {
    let stage = plan
        .stages
        .iter()
        .find(|s| s.name == export.stage)
        .with_context(|| format!("export of unknown stage {}", export.stage))?;
    let what = format!("export {} ({})", export.stage, export.name);
    log.begin(&what);
    let image_stage = &export.image;
    std::fs::create_dir_all(&image_stage.work_dir)
        .with_context(|| format!("creating {}", image_stage.work_dir.display()))?;
    // The copy is a layer of its own on top of the stage (qcow2) or a full copy (dir).
    let copy_name = format!("export-{}", export.stage);
    let root = store
        .create(&copy_name, Some(&export.stage), &image_stage.rootfs_dir)
        .with_context(|| format!("preparing a writable copy of {}", export.stage))?;
    let result = (|| -> Result<crate::deploy::Deployed, BuildError> {
        let vars = StageVars {
            stage: image_stage.name.clone(),
            stage_dir: image_stage.dir.clone(),
            stage_work_dir: image_stage.work_dir.clone(),
            rootfs_dir: image_stage.rootfs_dir.clone(),
            prev_stage: Some(stage.name.clone()),
            prev_stage_dir: Some(stage.dir.clone()),
            prev_rootfs_dir: Some(stage.rootfs_dir.clone()),
            export_dir: Some(stage.dir.clone()),
            export_rootfs_dir: Some(stage.rootfs_dir.clone()),
            img_suffix: Some(export.img_suffix.clone()),
        };
        let mut env = script_env(config, process_env, &vars);
        // Whatever EXPORT_IMAGE set is exported during its export, as the original did.
        env.extend(export.vars.clone());
        if image_stage.skipped.is_none() {
            let resolv = ResolvConfGuard::install(&image_stage.rootfs_dir)?;
            let steps = image_stage
                .steps
                .iter()
                .try_for_each(|step| run_step(step, &env, log, root.as_ref()));
            let resolv_result = resolv.finish();
            steps?;
            resolv_result?;
        }
        // The image is made from the tree alone: the chroot's mounts go first.
        unmount_below(&image_stage.rootfs_dir, log)?;
        let issue = Cmd::new("bash")
            .args(["-c", "print_issue \"$1\"", "print_issue", &export.stage])
            .env_clear()
            .envs(env.iter())
            .output(log.sink())
            .map_err(|e| anyhow::anyhow!(e))?
            .stdout;
        let packages = crate::deploy::package_list(&image_stage.rootfs_dir, log.sink())?;
        let info = crate::deploy::info_text(&issue, &packages);
        let image = image_stage.work_dir.join(format!("{}.img", export.name));
        log.line(&format!("Assembling {}", image.display()));
        let options = crate::export::image::Options {
            name: &export.name,
            log: log.sink(),
            progress: None,
        };
        let assembled =
            crate::export::image::assemble(config, &image_stage.rootfs_dir, &image, &options)?;
        for line in assembled.summary.lines() {
            log.line(line);
        }
        let input = crate::deploy::DeployInput {
            image: &image,
            root: crate::deploy::RootPartition {
                offset: assembled.root_offset,
                size: assembled.root_size,
            },
            info: &info,
        };
        let deployed = deployer.deploy(config, export, &input, log)?;
        let _ = std::fs::remove_file(&image);
        Ok(deployed)
    })();
    let finished = root.finish();
    let deployed = result?;
    finished?;
    // The copy served its purpose; the stage's own image stays for the next build.
    store.discard(&copy_name)?;
    for file in &deployed.files {
        log.line(&format!(
            "Deployed {}",
            deployed.dir.join(&file.name).display()
        ));
    }
    if export
        .noobs
        .as_ref()
        .is_some_and(|n| n.stage.skipped.is_none())
    {
        log.line("export-noobs: NOOBS bundles are not made by this version of pigen; skipped");
    }
    log.end(&what);
    Ok(())
}

/// Unmounts everything mounted below `rootfs` (chroot mounts), keeping `rootfs` itself.
fn unmount_below(rootfs: &Path, log: &BuildLog) -> anyhow::Result<()> {
    use crate::storage::mounts;
    let top = mounts::canonical(rootfs)?;
    let mut below: Vec<std::path::PathBuf> = mounts::mounts_at_or_below(&top)?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != &top)
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for mount_point in below {
        if mounts::is_mount_point(&mount_point)? {
            mounts::unmount_all(&mount_point, log.sink(), false)?;
        }
    }
    Ok(())
}

fn stage_vars(stage: &StagePlan, prev: Option<&StagePlan>) -> StageVars {
    StageVars {
        stage: stage.name.clone(),
        stage_dir: stage.dir.clone(),
        stage_work_dir: stage.work_dir.clone(),
        rootfs_dir: stage.rootfs_dir.clone(),
        prev_stage: prev.map(|p| p.name.clone()),
        prev_stage_dir: prev.map(|p| p.dir.clone()),
        prev_rootfs_dir: prev.map(|p| p.rootfs_dir.clone()),
        ..StageVars::default()
    }
}

fn build_stage(
    config: &Config,
    stage: &StagePlan,
    prev: Option<&StagePlan>,
    store: &dyn StageStore,
    process_env: &Env,
    log: &BuildLog,
) -> Result<(), BuildError> {
    log.begin(&stage.name);
    std::fs::create_dir_all(&stage.work_dir)
        .with_context(|| format!("creating {}", stage.work_dir.display()))?;
    let root = store
        .create(
            &stage.name,
            prev.map(|p| p.name.as_str()),
            &stage.rootfs_dir,
        )
        .with_context(|| format!("preparing the root filesystem of {}", stage.name))?;
    let env = script_env(config, process_env, &stage_vars(stage, prev));
    let resolv = ResolvConfGuard::install(&stage.rootfs_dir)?;
    let result = stage
        .steps
        .iter()
        .try_for_each(|step| run_step(step, &env, log, root.as_ref()));
    // Always put resolv.conf back and release the root, then report the first failure.
    let resolv_result = resolv.finish();
    let finish_result = root.finish();
    result?;
    resolv_result?;
    finish_result?;
    log.end(&stage.name);
    Ok(())
}

fn run_step(
    step: &Step,
    env: &Env,
    log: &BuildLog,
    root: &dyn AttachedRoot,
) -> Result<(), BuildError> {
    if let Some(signal) = signals::received() {
        return Err(BuildError::Interrupted { signal });
    }
    if let Some(skip) = &step.skipped {
        log.line(&format!("Skip {} ({skip})", step.id));
        return Ok(());
    }
    log.begin(&step.id);
    let mut env = with_detected_mirror(env, root.rootfs());
    // The step's output is copied into the build log already: `log` must not add its lines twice.
    env.insert("PIGEN_OUTPUT_LOGGED".into(), "1".into());
    let env = &env;
    let result = match &step.kind {
        StepKind::Prerun | StepKind::RunHost => run(host_script(step, env), log),
        StepKind::RunChroot => {
            let script = std::fs::read_to_string(&step.path)
                .with_context(|| format!("reading {}", step.path.display()))?;
            run(chroot_script_cmd(env, &script).current_dir(&step.cwd), log)
        }
        StepKind::Debconf => {
            let content = std::fs::read_to_string(&step.path)
                .with_context(|| format!("reading {}", step.path.display()))?;
            run(
                chroot_script_cmd(env, &debconf_script(&content)).current_dir(&step.cwd),
                log,
            )
        }
        StepKind::Packages {
            packages,
            recommends,
            file,
            ..
        } => {
            if packages.is_empty() {
                log.line(&format!("{file}: empty list, nothing to install"));
                Ok(())
            } else {
                run(
                    chroot_script_cmd(env, &apt_install_script(packages, *recommends))
                        .current_dir(&step.cwd),
                    log,
                )
            }
        }
        StepKind::Patches { edit, .. } => run_quilt(step, *edit, env, log),
        StepKind::SubStage => Ok(()),
    };
    if let Err(error) = result {
        if let Some(signal) = signals::received() {
            return Err(BuildError::Interrupted { signal });
        }
        let hint = root.full_note(&error.tail.join("\n"));
        return Err(BuildError::Step {
            step: step.id.clone(),
            error,
            hint,
        });
    }
    log.end(&step.id);
    Ok(())
}

/// Without `DEB_SERVER`, debootstrap picks its own mirror; stage scripts that write apt
/// sources from `DEB_SERVER` then get the mirror debootstrap wrote into the root filesystem.
fn with_detected_mirror(env: &Env, rootfs: &Path) -> Env {
    let mut env = env.clone();
    if env.get("DEB_SERVER").is_none_or(|v| v.is_empty()) {
        if let Some(mirror) = detect_mirror(rootfs) {
            env.insert("DEB_SERVER".into(), mirror);
        }
    }
    env
}

/// The first `deb URL SUITE` line of the root's `/etc/apt/sources.list` (what debootstrap
/// writes), or the first `URIs:` of a deb822 `.sources` file.
pub fn detect_mirror(rootfs: &Path) -> Option<String> {
    let list = std::fs::read_to_string(rootfs.join("etc/apt/sources.list")).unwrap_or_default();
    let from_list = list.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            return None;
        }
        words
            .find(|w| !w.starts_with('[') && !w.ends_with(']'))
            .map(str::to_string)
    });
    from_list.or_else(|| {
        let dir = std::fs::read_dir(rootfs.join("etc/apt/sources.list.d")).ok()?;
        let mut files: Vec<_> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sources"))
            .collect();
        files.sort();
        files.iter().find_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            text.lines().find_map(|l| {
                l.strip_prefix("URIs:")
                    .and_then(|u| u.split_whitespace().next())
                    .map(str::to_string)
            })
        })
    })
}

fn with_env(cmd: Cmd, env: &Env) -> Cmd {
    env.iter()
        .fold(cmd.env_clear(), |cmd, (name, value)| cmd.env(name, value))
}

/// `prerun.sh` / `NN-run.sh`: executed directly (their shebang decides), in their directory.
fn host_script(step: &Step, env: &Env) -> Cmd {
    with_env(Cmd::new(&step.path), env).current_dir(&step.cwd)
}

fn run(cmd: Cmd, log: &BuildLog) -> Result<(), CmdError> {
    cmd.step()
        .run(log.sink(), |line| log.output_line(line))
        .map(|_| ())
}

/// `NN-patches`: quilt in `STAGE_WORK_DIR`, bookkeeping in `<sub-stage>-pc` linked as `.pc`.
fn run_quilt(step: &Step, edit: bool, env: &Env, log: &BuildLog) -> Result<(), CmdError> {
    let work = &step.cwd;
    let sub_stage = step.sub_stage.as_deref().unwrap_or("patches");
    let pc = format!("{sub_stage}-pc");
    let setup = format!(
        "set -e; rm -rf .pc ./*-pc; mkdir -p {pc}; ln -snf {pc} .pc",
        pc = crate::cli::shell_quote(&pc)
    );
    let quilt = |args: &[&str]| {
        with_env(Cmd::new("quilt"), env)
            .args(args)
            .env("QUILT_PATCHES", &step.path)
            .current_dir(work)
    };
    run(
        with_env(Cmd::new("bash"), env)
            .args(["-c", &setup])
            .current_dir(work),
        log,
    )?;
    run(quilt(&["upgrade"]), log)?;
    if edit {
        if !std::io::stdin().is_terminal() {
            return Err(CmdError {
                command: format!("quilt (EDIT file in {})", step.path.display()),
                how: "an EDIT file asks for an interactive shell to edit the patches, but stdin is not a terminal; run pigen from a terminal or remove the EDIT file".into(),
                tail: Vec::new(),
            });
        }
        log.line("Dropping into bash to edit patches...");
        with_env(Cmd::new("bash"), env)
            .env("QUILT_PATCHES", &step.path)
            .current_dir(work)
            .any_code()
            .run_interactive(log.sink())?;
    }
    run(quilt(&["push", "-a"]).ok_codes(&[0, 2]), log)
}

/// Where a failed build's log is, for messages.
pub fn log_hint(path: &Path) -> String {
    format!("full output in {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture_config, process_env};
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    /// Stage roots that "exist".
    struct FakeStore(BTreeSet<String>);

    impl StageStore for FakeStore {
        fn backend(&self) -> crate::storage::Backend {
            crate::storage::Backend::Dir
        }
        fn resume(&self, _: &str, _: &Path) -> anyhow::Result<Box<dyn AttachedRoot>> {
            unreachable!("stage_actions attaches nothing")
        }
        fn discard(&self, _: &str) -> anyhow::Result<()> {
            unreachable!("stage_actions discards nothing")
        }
        fn create(
            &self,
            _: &str,
            _: Option<&str>,
            _: &Path,
        ) -> anyhow::Result<Box<dyn AttachedRoot>> {
            unreachable!("stage_actions creates nothing")
        }
        fn exists(&self, stage: &str) -> bool {
            self.0.contains(stage)
        }
        fn location(&self, stage: &str) -> PathBuf {
            PathBuf::from(format!("/w/image-{stage}.qcow2"))
        }
    }

    fn store(stages: &[&str]) -> FakeStore {
        FakeStore(stages.iter().map(|s| s.to_string()).collect())
    }

    /// The fixture tree's stages 0–2 without exports.
    fn plan_for(vars: &[(&str, &str)]) -> Plan {
        let mut all = vec![
            ("STAGE_LIST", "stage0 stage1 stage2"),
            ("SKIP_IMAGES_LIST", "stage2"),
        ];
        all.extend_from_slice(vars);
        let config = fixture_config(&all);
        let scanned = crate::scan::scan(&config, &process_env()).unwrap();
        crate::plan::plan(&config, &scanned).unwrap()
    }

    fn state(done: &[&str]) -> BuildState {
        let mut state = BuildState::default();
        for stage in done {
            state.stages.insert(stage.to_string(), StageStatus::Done);
        }
        state
    }

    use StageAction::*;

    #[test]
    fn mirror_from_what_debootstrap_wrote() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(detect_mirror(root.path()), None);
        std::fs::create_dir_all(root.path().join("etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            root.path().join("etc/apt/sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\n",
        )
        .unwrap();
        assert_eq!(
            detect_mirror(root.path()).as_deref(),
            Some("http://mirror.example/debian")
        );
        std::fs::write(
            root.path().join("etc/apt/sources.list"),
            "# comment\ndeb [arch=arm64] http://other.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            detect_mirror(root.path()).as_deref(),
            Some("http://other.example/debian")
        );
        let given = Env::from([("DEB_SERVER".to_string(), "http://given/".to_string())]);
        assert_eq!(
            with_detected_mirror(&given, root.path())["DEB_SERVER"],
            "http://given/"
        );
        assert_eq!(
            with_detected_mirror(&Env::new(), root.path())["DEB_SERVER"],
            "http://other.example/debian"
        );
    }

    #[test]
    fn a_fresh_build_builds_everything() {
        let plan = plan_for(&[]);
        assert_eq!(
            stage_actions(&plan, None, &store(&[]), true).unwrap(),
            [Build, Build, Build]
        );
    }

    #[test]
    fn continue_reuses_finished_stages_up_to_the_first_unfinished() {
        let plan = plan_for(&[]);
        let all = store(&["stage0", "stage1", "stage2"]);
        assert_eq!(
            stage_actions(&plan, Some(&state(&["stage0"])), &all, true).unwrap(),
            [ReuseDone, Build, Build]
        );
        // stage2 finished on top of an older stage1: stage1 is rebuilt, so stage2 is too.
        assert_eq!(
            stage_actions(&plan, Some(&state(&["stage0", "stage2"])), &all, true).unwrap(),
            [ReuseDone, Build, Build]
        );
        // A finished stage whose image vanished is rebuilt.
        let some = store(&["stage1"]);
        assert_eq!(
            stage_actions(&plan, Some(&state(&["stage0", "stage1"])), &some, true).unwrap(),
            [Build, Build, Build]
        );
    }

    #[test]
    fn skipped_stages_need_their_roots() {
        let plan = plan_for(&[("SKIP_STAGE_LIST", "stage0")]);
        assert_eq!(
            stage_actions(&plan, None, &store(&["stage0"]), true).unwrap(),
            [ReuseSkipped, Build, Build]
        );
        let err = stage_actions(&plan, None, &store(&[]), true).unwrap_err();
        assert_eq!(
            err.0,
            ["stage stage0 is skipped but /w/image-stage0.qcow2 does not exist (the next stage builds on it); build it once without skipping it"]
        );
        // Skipping the last stage needs nothing when it is not exported.
        let plan = plan_for(&[("SKIP_STAGE_LIST", "stage2")]);
        assert_eq!(
            stage_actions(&plan, None, &store(&[]), true).unwrap(),
            [Build, Build, ReuseSkipped]
        );
    }

    #[test]
    fn a_layer_cannot_be_reused_on_a_rebuilt_parent() {
        let plan = plan_for(&[("SKIP_STAGE_LIST", "stage1")]);
        let all = store(&["stage0", "stage1"]);
        let err = stage_actions(&plan, None, &all, true).unwrap_err();
        assert!(
            err.0[0].starts_with("stage stage1 is skipped but stage0 before it is rebuilt"),
            "{:?}",
            err.0
        );
        // Directories are full copies: no such constraint.
        assert_eq!(
            stage_actions(&plan, None, &all, false).unwrap(),
            [Build, ReuseSkipped, Build]
        );
    }
}
