//! The static parser and bash must agree on every assignment-only file.
//!
//! Each fixture under `tests/fixtures/configs/` (modelled on pi-gen's sample configs) and each
//! snippet below is read both ways, under a bare and a user-customised environment; the
//! effective value of every variable either way assigned must be the same.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::parse::{self, Parsed};
use super::{eval, load, Env, Origin};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs")
}

fn env_of(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A plain login environment, and one where the user already set several config variables.
fn environments() -> Vec<Env> {
    let base = [
        ("HOME", "/home/builder"),
        ("USER", "builder"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
    ];
    let mut custom = env_of(&base);
    custom.extend(env_of(&[
        ("TARGET_ARCH", "amd64"),
        ("RELEASE", "bookworm"),
        ("DEPLOY_DIR", "/srv/deploy"),
        ("IMG_SUFFIX", "lite"),
        ("IMG_NAME", "from env"),
        ("SUDO_USER", "alice"),
        ("EMPTY_IN_ENV", ""),
        ("GIT_HASH", "0123abc"),
        ("http_proxy", "http://proxy:3128"),
        ("ROOTFS_RO_OVERLAY_TMPFS_SIZE", ""),
        ("UNSET", "now set"),
    ]));
    vec![env_of(&base), custom]
}

/// Reads `path` both ways under `env` and compares; returns the number of variables compared.
fn assert_parity(path: &Path, env: &Env) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let lookup = |name: &str| env.get(name).cloned();
    let file = match parse::parse(&text, path, &lookup).unwrap() {
        Parsed::Static(file) => file,
        Parsed::NeedsBash { line, construct } => {
            panic!(
                "{}:{line}: expected a static file, found {construct}",
                path.display()
            )
        }
    };
    let sourced = eval::source_fragment(path, env)
        .unwrap_or_else(|e| panic!("bash failed on {}: {e}", path.display()));

    let mut by_parser = env.clone();
    for a in &file.assignments {
        by_parser.insert(a.name.clone(), a.value.clone());
    }
    let mut by_bash = env.clone();
    by_bash.extend(sourced.changed.clone());

    let names: BTreeSet<&String> = file
        .assignments
        .iter()
        .map(|a| &a.name)
        .chain(sourced.changed.keys())
        .collect();
    for name in &names {
        assert_eq!(
            by_parser.get(*name),
            by_bash.get(*name),
            "{}: {name} differs (left: parser, right: bash) under env {env:?}",
            path.display()
        );
    }
    // Readonly reassignments: one warning each way.
    assert_eq!(
        file.warnings.len(),
        sourced.warnings.len(),
        "{}: parser warnings {:?}, bash output {:?}",
        path.display(),
        file.warnings,
        sourced.warnings
    );
    names.len()
}

#[test]
fn fixtures_parse_statically_exactly_as_bash_sources_them() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6, "fixtures: {fixtures:?}");
    for env in environments() {
        for path in &fixtures {
            let compared = assert_parity(path, &env);
            assert!(
                compared >= 5,
                "{}: only {compared} variables",
                path.display()
            );
        }
    }
}

#[test]
fn the_fixture_values_are_the_expected_ones() {
    let env = &environments()[1];
    let path = fixtures_dir().join("02-raspi_deb11_arm64-ro-smalldesk.cfg");
    let loaded = load(std::slice::from_ref(&path), &[], env).unwrap();
    let value = |name: &str| loaded.get(name).unwrap().value.as_str();
    assert_eq!(value("IMG_NAME"), "RaspiArm64SmallDesk-1.2-ro-deb11-amd64");
    assert_eq!(
        value("WORK_DIR"),
        "/data/RaspiArm64SmallDesk-1.2-ro-deb11-amd64-work"
    );
    assert_eq!(value("DEPLOY_DIR"), "/srv/deploy");
    assert_eq!(value("IMG_SUFFIX"), "-lite");
    assert_eq!(value("ROOTFS_RO_OVERLAY_TMPFS_SIZE"), "");
    assert_eq!(
        loaded.get("IMG_NAME").unwrap().origin,
        Origin::File {
            path,
            line: Some(14)
        }
    );

    let path = fixtures_dir().join("01-debian_deb11_amd64-rw-light-jau.cfg");
    let loaded = load(&[path], &[], env).unwrap();
    let keys = &loaded.get("PUBKEY_SSH_FIRST_USER").unwrap().value;
    assert_eq!(keys.lines().count(), 2);
    assert!(keys.starts_with("ssh-ed25519 ") && keys.ends_with(" jau@laptop"));
}

/// Small files covering each construct of the subset, compared with bash one by one.
#[test]
fn snippets_agree_with_bash() {
    let snippets = [
        "A=1 B=$A; A=$B$B",
        "A=1; export A=2 B=$A",
        "export A=x A+=y",
        "A= B=2 C= ",
        "A=a#b #c\nB=2#\nC=1;#c",
        "readonly A=1\nB=3 A=2 C=5; D=6\nC=4\n",
        "readonly A=1\nexport A=2 B=3\nreadonly C=1 A=3 D=4\nC=5\n",
        "readonly HOME\nHOME=x\n",
        r#"A="x\y\$\`\"\\""#,
        "A=\"x\\\ny\"",
        r"A=a\ b\$c\\d",
        "A=abc\\\ndef",
        "A=x\\",
        "A=$\nB=\"a$\"\nC=$/x\nD=\"$'x'\"",
        "A=$HOME$UNSET${HOME}x B=$HOME_X C=$HOME-x",
        "A=${UNSET:-def} B=${EMPTY_IN_ENV:-def} C=${EMPTY_IN_ENV-def} D=${UNSET-def}",
        "A=${HOME:+set} B=${EMPTY_IN_ENV:+set} C=${EMPTY_IN_ENV+set} D=${UNSET+set}",
        "A=${U:-a b  c} B=${U:-\"a b\"  c} C=${U:-$HOME\"q\"}",
        "A=${U:-${V:-${HOME}}}/x B=${U:-'a'} C=${U:-\\x} D=${U:-'}'} E=${U:-\"a b}\"}",
        "A=${U:-a;b|c&d<e>f(g)h #i}\nB=${U:-a\nb}\nC=${U:-{x}y}",
        "A=\"${U:-a\"b\"c}\" B=\"${U:-'a'}\" C=\"${HOME:+'a'}\" D=\"${U:-\\\"}\"",
        "A=\"${U:-\\}}\" B=\"${U:-\\x}\" C=\"${U:-\"}\"}\" D=\"${U-x y}\"",
        "A=~ B=~/x C=a:~/b:~ D=:~ E=~:~ F=a~ G=x=~/b",
        "A=${U:-~/x} B=a${U:-~/x} C=${U:-~} D=${U:-x:~/y} E=${U:-x}:~/p",
        "A=\"~\" B=\"${U:-~/x}\" C=~\"x\" D=~/\"x\" E=~\\/x F=~$HOME",
        "HOME=/elsewhere; A=~/x",
        "A=*.img B={a,b}\nexport C=*.img D=x*",
        "A=x; A+=~/y\nFROM+=z",
        "A='multi\nline'\nB=\"also\nmulti $HOME\nline\"",
        "PATH=$PATH:/opt/bin\nexport PATH",
    ];
    let dir = tempfile::tempdir().unwrap();
    for env in environments() {
        for (i, text) in snippets.iter().enumerate() {
            let path = dir.path().join(format!("snippet{i}.cfg"));
            std::fs::write(&path, text).unwrap();
            assert_parity(&path, &env);
        }
    }
}

#[test]
fn a_file_with_commands_goes_to_bash_and_gives_the_right_values() {
    let path = fixtures_dir().join("needs-bash/computed.cfg");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        parse::parse(&text, &path, &|_| None).unwrap(),
        Parsed::NeedsBash {
            line: 3,
            construct: "command substitution $(…)".into()
        }
    );

    let env = env_of(&[("TARGET_ARCH", "amd64"), ("RELEASE", "bookworm")]);
    let loaded = load(std::slice::from_ref(&path), &[], &env).unwrap();
    let got: Vec<(&str, &str)> = loaded
        .assignments
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("CUSTOM_NAME", "Computed"),
            ("CUSTOM_VERSION", "1.0-rw"),
            ("DEB", "deb12"),
            ("IMG_NAME", "Computed-1.0-rw-deb12-amd64"),
            ("TARGET_RASPI", "0"),
        ]
    );
    assert!(loaded.assignments.iter().all(|a| a.origin
        == Origin::File {
            path: path.clone(),
            line: None
        }));

    let loaded = load(&[path], &[], &Env::new()).unwrap();
    assert_eq!(
        loaded.get("IMG_NAME").unwrap().value,
        "Computed-1.0-rw-deb11-arm64"
    );
    assert_eq!(loaded.get("TARGET_RASPI").unwrap().value, "1");
}

#[test]
fn later_files_see_earlier_ones_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.cfg");
    let second = dir.path().join("second.cfg");
    let third = dir.path().join("third.toml");
    std::fs::write(
        &first,
        "export CUSTOM_NAME=Base\nexport TARGET_ARCH=${TARGET_ARCH:-arm64}\n",
    )
    .unwrap();
    std::fs::write(
        &second,
        "IMG_NAME=$CUSTOM_NAME-$(echo 2)-$TARGET_ARCH\nif [ -n \"$CUSTOM_NAME\" ]; then CUSTOM_NAME=Second; fi\n",
    )
    .unwrap();
    std::fs::write(
        &third,
        "ENABLE_SSH = true\nSTAGE_LIST = [\"stage0\", \"stage1\"]\n",
    )
    .unwrap();
    let loaded = load(
        &[first.clone(), second.clone(), third.clone()],
        &["TARGET_HOSTNAME=pi4".to_string()],
        &env_of(&[("TARGET_ARCH", "armhf")]),
    )
    .unwrap();
    let got: Vec<(&str, &str, String)> = loaded
        .assignments
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str(), a.origin.to_string()))
        .collect();
    let at = |p: &Path, line: Option<usize>| match line {
        Some(l) => format!("{}:{l}", p.display()),
        None => p.display().to_string(),
    };
    assert_eq!(
        got,
        [
            ("CUSTOM_NAME", "Second", at(&second, None)),
            ("TARGET_ARCH", "armhf", at(&first, Some(2))),
            ("IMG_NAME", "Base-2-armhf", at(&second, None)),
            ("ENABLE_SSH", "1", at(&third, Some(1))),
            ("STAGE_LIST", "stage0 stage1", at(&third, Some(2))),
            ("TARGET_HOSTNAME", "pi4", "--set".to_string()),
        ]
    );
}

/// Random concatenations of shell fragments: whenever the parser calls a file static, bash must
/// agree on every value and on the number of warnings; whenever it reports a syntax error, bash
/// must fail too. `PIGEN_PARITY_SEED` / `PIGEN_PARITY_CASES` run other or more cases.
#[test]
fn random_files_agree_with_bash() {
    let pool = [
        "A=",
        "B=",
        "C+=",
        " ",
        ";",
        "\n",
        "'x y'",
        "$HOME",
        "${U:-w}",
        "${HOME:+p}",
        "${E-d}",
        "~",
        ":",
        "\\",
        "#",
        "\"a b\"",
        "export ",
        "readonly ",
        "$",
        "x",
        "{",
        "/",
        "$A",
        "${B}",
        "\\\n",
        "=",
        "~/",
        "a,b",
        "*",
        "\"${U:-'q'}\"",
        "'}'",
        "\\\"",
        "$E",
        "\t",
        "-",
        "readonly A=1\n",
        "B=$A ",
        "\"${E:-~/x}\"",
        "${U:-~/a:~}",
        "${U:-\"x}\"}",
        "\"$A$B\"",
        "\"\\$\\\\\"",
        "${HOME-${U:-z}}",
        "A=~",
        "\"\\\n\"",
        "ü",
        "$HOME_",
        "\"${U:-\\}}\"",
        "'\\'",
        "\r",
        "\"",
        "'",
        "${U:-",
    ];
    let number = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let mut state = number("PIGEN_PARITY_SEED", 0x5eed_cafe).max(1);
    let cases = number("PIGEN_PARITY_CASES", 300);
    let mut random = move |n: usize| {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let env = env_of(&[("HOME", "/h"), ("E", ""), ("PATH", "/bin")]);
    let lookup = |name: &str| env.get(name).cloned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.cfg");
    let mut compared = 0;
    for _ in 0..cases {
        let mut text = String::from(if random(2) == 0 { "A=" } else { "" });
        for _ in 0..1 + random(10) {
            text.push_str(pool[random(pool.len())]);
        }
        std::fs::write(&path, &text).unwrap();
        match parse::parse(&text, &path, &lookup) {
            Ok(Parsed::Static(_)) => {
                assert_parity(&path, &env);
                compared += 1;
            }
            Ok(Parsed::NeedsBash { .. }) => {}
            Err(e) => assert!(
                eval::source_fragment(&path, &env).is_err(),
                "{text:?}: the parser says {e}, bash accepts it"
            ),
        }
    }
    assert!(
        compared * 5 >= cases as usize,
        "only {compared} static files of {cases}"
    );
}
