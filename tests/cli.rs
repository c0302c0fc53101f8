//! Binary-level tests: run the real `pigen`, compare exit codes and output.
#![allow(clippy::disallowed_methods)] // tests start the real binary directly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch base directory with `stages/stage0..2` and `export-image`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        for stage in ["stage0", "stage1", "stage2", "export-image"] {
            std::fs::create_dir_all(dir.path().join("stages").join(stage)).unwrap();
        }
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs pigen in the scratch dir with a clean, predictable environment.
    fn pigen(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pigen"))
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("SOURCE_DATE_EPOCH", "1764288000")
            .output()
            .unwrap()
    }

    /// Every path below the scratch dir, to prove a command created nothing.
    fn listing(&self) -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut todo = vec![self.path().to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    todo.push(path.clone());
                }
                all.push(path);
            }
        }
        all.sort();
        all
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let s = Scratch::new();
    let out = s.pigen(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("pigen "));
    let out = s.pigen(&["--help"]);
    for word in ["build", "plan", "config", "check"] {
        assert!(stdout(&out).contains(word), "help lists {word}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new();
    assert_eq!(s.pigen(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(s.pigen(&["build", "--bogus"]).status.code(), Some(2));
    let out = s.pigen(&["config", "--set", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected NAME=VALUE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_prints_values_and_origins() {
    let s = Scratch::new();
    s.write(
        "my.cfg",
        "IMG_NAME=Demo\nexport TARGET_ARCH=amd64\nTARGET_RASPI=0\nFIRST_USER_PASS='s3cret pass'\n",
    );
    let out = s.pigen(&["config", "-c", "my.cfg", "--set", "TARGET_HOSTNAME=box"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("IMG_NAME"), "IMG_NAME Demo my.cfg:1");
    assert_eq!(line("TARGET_ARCH"), "TARGET_ARCH amd64 my.cfg:2");
    assert_eq!(line("TARGET_HOSTNAME"), "TARGET_HOSTNAME box --set");
    assert_eq!(line("IMG_FILENAME"), "IMG_FILENAME 2025-11-28-Demo default");
    assert_eq!(line("FIRST_USER_PASS"), "FIRST_USER_PASS ******** my.cfg:4");
    assert!(!text.contains("s3cret"));
    let shown = s.pigen(&["config", "-c", "my.cfg", "--show-secrets"]);
    assert!(stdout(&shown).contains("'s3cret pass'"));
}

#[test]
fn config_json_shape() {
    let s = Scratch::new();
    s.write("my.cfg", "IMG_NAME=Demo\nWPA_PASSWORD=abcdefgh\n");
    let out = s.pigen(&["config", "-c", "my.cfg", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let vars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = vars
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "IMG_NAME")
        .unwrap();
    assert_eq!(img["value"], "Demo");
    assert_eq!(img["origin"]["kind"], "file");
    assert_eq!(img["origin"]["line"], 1);
    assert_eq!(img["known"], true);
    let wpa = vars
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "WPA_PASSWORD")
        .unwrap();
    assert_eq!(wpa["value"], "********");
}

#[test]
fn invalid_variable_is_one_line_exit_2_and_nothing_on_disk() {
    let s = Scratch::new();
    s.write("bad.cfg", "IMG_NAME=Demo\n\nTARGET_ARCH=arm46\n");
    let before = s.listing();
    for command in ["build", "plan", "config", "check"] {
        let out = s.pigen(&[command, "-c", "bad.cfg"]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "pigen: error: TARGET_ARCH=\"arm46\" (bad.cfg:3): must be one of arm64, armhf, i386, amd64\n",
            "{command}"
        );
        assert!(stdout(&out).is_empty());
        assert_eq!(s.listing(), before, "{command} changed the disk");
    }
}

#[test]
fn missing_config_file_is_a_config_error() {
    let s = Scratch::new();
    let out = s.pigen(&["build", "-c", "nope.cfg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("pigen: error: config file nope.cfg: cannot read it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn later_config_files_and_set_override_earlier_ones() {
    let s = Scratch::new();
    s.write(
        "a.cfg",
        "IMG_NAME=A\nTARGET_HOSTNAME=from-a\nRELEASE=bookworm\n",
    );
    s.write("b.cfg", "TARGET_HOSTNAME=from-b-${IMG_NAME}\n");
    let out = s.pigen(&[
        "config",
        "-c",
        "a.cfg",
        "-c",
        "b.cfg",
        "--set",
        "RELEASE=trixie",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("TARGET_HOSTNAME")
            && l.contains("from-b-A")
            && l.contains("b.cfg:1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("RELEASE") && l.contains("trixie") && l.contains("--set")),
        "{text}"
    );
}

#[test]
fn bash_configs_are_evaluated_by_bash() {
    let s = Scratch::new();
    s.write(
        "fancy.cfg",
        "CUSTOM_NAME=Fancy\nif [ \"$CUSTOM_NAME\" = Fancy ]; then TARGET_ARCH=amd64; fi\nIMG_NAME=\"$(echo ${CUSTOM_NAME}-img)\"\nTARGET_RASPI=0\n",
    );
    let out = s.pigen(&["config", "-c", "fancy.cfg"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("IMG_NAME") && l.contains("Fancy-img")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("TARGET_ARCH") && l.contains("amd64")),
        "{text}"
    );
}

#[test]
fn bash_config_errors_name_file_and_line() {
    let s = Scratch::new();
    s.write("strict.cfg", "X=1\n: ${IMG_NAME:?set IMG_NAME first}\n");
    let out = s.pigen(&["config", "-c", "strict.cfg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("strict.cfg:2"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn toml_configs() {
    let s = Scratch::new();
    s.write("build.toml", "IMG_NAME = \"T\"\nENABLE_SSH = true\nCOMPRESSION_LEVEL = 9\nSTAGE_LIST = [\"stage0\", \"stage1\"]\n");
    let out = s.pigen(&["config", "-c", "build.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ENABLE_SSH") && l.contains(" 1 ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("STAGE_LIST") && l.contains("'stage0 stage1'")),
        "{text}"
    );
}

#[test]
fn base_dir_is_found_from_a_subdirectory_or_given() {
    let s = Scratch::new();
    s.write("my.cfg", "IMG_NAME=Demo\n");
    let sub = s.path().join("stages/stage1");
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["config", "-c", "../../my.cfg"])
        .current_dir(&sub)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["config", "--set", "IMG_NAME=x"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no stages/ directory"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pigen"))
        .args(["config", "--set", "IMG_NAME=x", "--base-dir"])
        .arg(s.path())
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn pigen_in_fixtures(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pigen"))
        .arg("--base-dir")
        .arg(fixtures())
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1764288000")
        .env_remove("IMG_NAME")
        .output()
        .unwrap()
}

const FIXTURE_SETS: &[&str] = &[
    "--set",
    "IMG_NAME=fx",
    "--set",
    "RELEASE=bookworm",
    "--set",
    "TARGET_RASPI=0",
    "--set",
    "TARGET_ARCH=amd64",
    "--set",
    "SKIP_IMAGES_LIST=stage5",
];

#[test]
fn plan_lists_steps_in_build_sh_order() {
    let mut args = vec!["plan"];
    args.extend_from_slice(FIXTURE_SETS);
    let out = pigen_in_fixtures(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("  stage0/"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "stage0/prerun.sh",
            "stage0/00-configure/00-debconf",
            "stage0/00-configure/00-packages-sys-debian-bookworm-amd64",
            "stage0/00-configure/00-packages-nr-bookworm",
            "stage0/00-configure/00-packages",
            "stage0/00-configure/00-patches",
            "stage0/00-configure/00-run.sh",
            "stage0/00-configure/00-run-chroot.sh",
            "stage0/00-configure/01-run.sh",
            "stage0/00-configure/02-patches",
            "stage0/00-configure/02-run-chroot.sh",
        ]
    );
}

#[test]
fn plan_json_shape() {
    let mut args = vec!["plan", "--json"];
    args.extend_from_slice(FIXTURE_SETS);
    let out = pigen_in_fixtures(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["version"], 1);
    let stages = plan["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["stage0", "stage1", "stage2", "stage2a", "stage3", "stage4", "stage5"]
    );
    assert_eq!(stages[0]["parent"], serde_json::Value::Null);
    assert_eq!(stages[1]["parent"], "stage0");
    assert_eq!(stages[4]["skipped"]["reason"], "skip_file");
    let step = &stages[0]["steps"][2];
    assert_eq!(
        step["id"],
        "stage0/00-configure/00-packages-sys-debian-bookworm-amd64"
    );
    assert_eq!(step["kind"], "packages");
    assert_eq!(step["list"], "sys");
    assert_eq!(step["recommends"], false);
    assert_eq!(step["packages"][0], "debian-release-arch");
    let exports = plan["exports"].as_array().unwrap();
    assert_eq!(exports[0]["stage"], "stage2");
    assert_eq!(exports[0]["img_suffix"], "-lite");
    assert_eq!(exports[0]["name"], "2025-11-28-fx-lite");
    assert!(exports[0]["deploy_files"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("image_2025-11-28-fx-lite.zip")));
}

#[test]
fn plan_refuses_colliding_exports() {
    let out = pigen_in_fixtures(&["plan", "--set", "IMG_NAME=fx", "--set", "RELEASE=bookworm"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("pigen: error:"))
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("exports of stage2 and stage5 would both deploy"),
        "{err}"
    );
}
