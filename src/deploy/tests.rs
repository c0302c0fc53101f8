#![allow(clippy::disallowed_methods)] // tests run the standard tools directly

use std::os::unix::fs::FileExt;
use std::process::Command;

use super::*;
use crate::exec::buildlog::Verbosity;
use crate::plan::{plan, Plan};
use crate::scan::scan;
use crate::test_support::{fixture_config, process_env};

const MIB: u64 = 1 << 20;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (passes with a note) when `tool` is missing.
macro_rules! require {
    ($($tool:expr),+) => {
        $(if !have($tool) {
            eprintln!("skipped: {} is not installed (see tests/host-packages)", $tool);
            return;
        })+
    };
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sbin_path() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Pseudo-random but compressible bytes (so every format has real work to do).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            if i % 3 == 0 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            } else {
                b"pigen deploy "[i % 13]
            }
        })
        .collect()
}

/// A sparse file: `len` bytes, holes except the given (offset, bytes) pieces.
fn sparse_image(path: &Path, len: u64, pieces: &[(u64, Vec<u8>)]) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (at, bytes) in pieces {
        f.write_all_at(bytes, *at).unwrap();
    }
}

/// A disk image as the export makes one: an MBR with a small FAT-type partition 1 and an ext4
/// root partition 2 (made with `mkfs.ext4 -E offset=`, holding `tree`). Returns the root
/// partition's place.
fn disk_image(path: &Path, tree: &Path) -> RootPartition {
    let size = 64 * MIB;
    File::create(path).unwrap().set_len(size).unwrap();
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .env("PATH", sbin_path())
        .arg("--no-tell-kernel")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = sfdisk.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=16384, type=c\nstart=18432, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let offset = 18432 * 512;
    let root = RootPartition {
        offset,
        size: size - offset,
    };
    // Something in partition 1 too, so the image has data outside the root.
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&pattern(100_000, 1), 2048 * 512)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .env("PATH", sbin_path())
        .args(["-q", "-F", "-L", "ROOTFS", "-b", "4096", "-E"])
        .arg(format!("offset={offset}"))
        .arg("-d")
        .arg(tree)
        .arg(path)
        .arg(format!("{}k", root.size / 1024)));
    root
}

fn small_tree(dir: &Path, seed: u64) -> PathBuf {
    let tree = dir.join(format!("tree{seed}"));
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::create_dir_all(tree.join("usr/lib")).unwrap();
    fs::write(tree.join("etc/hostname"), format!("pi{seed}\n")).unwrap();
    fs::write(tree.join("usr/lib/blob"), pattern(3 * MIB as usize, seed)).unwrap();
    tree
}

struct Fixture {
    dir: tempfile::TempDir,
    log: BuildLog,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::open(&dir.path().join("build.log"), Verbosity::Quiet).unwrap();
        Fixture { dir, log }
    }

    fn deploy_root(&self) -> PathBuf {
        self.dir.path().join("deploy")
    }

    /// Config + plan over the fixture stages, deploying under this fixture.
    fn plan(&self, vars: &[(&str, &str)]) -> (Config, Plan) {
        let deploy = self.deploy_root().to_string_lossy().into_owned();
        let mut all = vec![
            ("STAGE_LIST", "stage0 stage2 stage2a"),
            ("DEPLOY_DIR", deploy.as_str()),
        ];
        all.extend_from_slice(vars);
        let config = fixture_config(&all);
        let plan = plan(&config, &scan(&config, &process_env()).unwrap()).unwrap();
        (config, plan)
    }

    fn image(&self, seed: u64) -> (PathBuf, RootPartition) {
        let path = self.dir.path().join(format!("image{seed}.img"));
        let root = disk_image(&path, &small_tree(self.dir.path(), seed));
        (path, root)
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort();
    v
}

fn sha256sum_check(dir: &Path) {
    let out = run(Command::new("sha256sum")
        .args(["-c", "--strict", SUMS_FILE])
        .current_dir(dir));
    let text = String::from_utf8_lossy(&out.stdout);
    let regular = fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_type().unwrap().is_file() && e.file_name() != SUMS_FILE
        })
        .count();
    assert_eq!(text.lines().count(), regular, "{text}");
    assert!(text.lines().all(|l| l.ends_with(": OK")), "{text}");
}

fn decompress(compression: Compression, file: &Path) -> Vec<u8> {
    let out = match compression {
        Compression::Zip => run(Command::new("unzip").arg("-p").arg(file)),
        Compression::Xz => run(Command::new("xz").args(["-d", "-c"]).arg(file)),
        Compression::Gz => run(Command::new("gzip").args(["-d", "-c"]).arg(file)),
        Compression::Zstd => run(Command::new("zstd").args(["-d", "-c", "-q"]).arg(file)),
        Compression::None => panic!("nothing to decompress"),
    };
    out.stdout
}

const FORMATS: [Compression; 4] = [
    Compression::Zip,
    Compression::Xz,
    Compression::Gz,
    Compression::Zstd,
];

#[test]
fn every_format_round_trips_through_the_standard_tool() {
    require!("unzip", "xz", "gzip", "zstd");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    // Holes at the start, between and at the end; data pieces not aligned to anything.
    sparse_image(
        &src,
        24 * MIB + 123,
        &[
            (MIB + 17, pattern(700_000, 2)),
            (5 * MIB, pattern(3 * MIB as usize, 3)),
            (20 * MIB - 5, vec![0xff; 9000]),
        ],
    );
    let original = fs::read(&src).unwrap();
    for compression in FORMATS {
        for level in [compression.levels().start().to_owned(), 6] {
            let dst = dir
                .path()
                .join(format!("out-{}-{level}", compression.name()));
            let mut seen = 0;
            let result = compress(&src, &dst, compression, level, "disk.img", &mut |d| {
                assert!(d >= seen);
                seen = d;
            })
            .unwrap();
            assert_eq!(seen, original.len() as u64);
            assert_eq!(result.input_bytes, original.len() as u64);
            assert_eq!(result.output_bytes, fs::metadata(&dst).unwrap().len());
            assert_eq!(
                sparse::hex(&result.output_sha256),
                sparse::hex(&Sha256::digest(fs::read(&dst).unwrap())),
                "{compression:?} {level}"
            );
            let back = decompress(compression, &dst);
            assert!(
                back == original,
                "{compression:?} level {level}: bytes differ"
            );
            if level == 6 {
                assert!(result.ratio() < 0.5, "{compression:?}: {}", result.ratio());
            }
        }
    }
    // The zip holds exactly one entry named as given.
    let out = run(Command::new("unzip")
        .arg("-Z1")
        .arg(dir.path().join("out-zip-6")));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "disk.img\n");
}

#[test]
fn full_deploy_per_compression() {
    require!(
        "sfdisk",
        "mkfs.ext4",
        "unzip",
        "xz",
        "gzip",
        "zstd",
        "sha256sum"
    );
    let fx = Fixture::new();
    let (image, root) = fx.image(1);
    let original = fs::read(&image).unwrap();
    for (compression, extra) in [
        ("zip", vec![]),
        ("xz", vec![("COMPRESSION_LEVEL", "1")]),
        ("gz", vec![]),
        ("zstd", vec![("COMPRESSION_LEVEL", "3")]),
        ("none", vec![]),
    ] {
        let mut vars = vec![("DEPLOY_COMPRESSION", compression)];
        vars.extend(extra);
        let (config, plan) = fx.plan(&vars);
        let export = &plan.exports[0];
        let info = info_text("GNU/Linux 2026-01-01 UTC\n", "bash\t5.2\tarm64\n");
        let input = DeployInput {
            image: &image,
            root,
            info: &info,
        };
        let deployed = deploy(&config, export, &input, &fx.log, Landing::Replace).unwrap();
        let dir = &export.deploy_dir;
        assert_eq!(list(dir), sorted(&export.deploy_files), "{compression}");
        sha256sum_check(dir);
        let n = &export.name;
        assert_eq!(
            fs::read_to_string(dir.join(format!("{n}.info"))).unwrap(),
            info
        );
        // The root partition, byte-exact.
        let root_img = fs::read(dir.join(format!("{n}.root-ext4.img"))).unwrap();
        assert!(
            root_img == original[root.offset as usize..(root.offset + root.size) as usize],
            "root partition differs"
        );
        // The image, through the standard tool.
        match config.compression {
            Compression::None => {
                assert!(fs::read(dir.join(format!("{n}.img"))).unwrap() == original);
                assert!(deployed.compressed.is_none());
            }
            c => {
                let name = &export.deploy_files[0];
                assert!(decompress(c, &dir.join(name)) == original, "{compression}");
                assert!(!dir.join(format!("{n}.img")).exists(), "raw image kept");
            }
        }
        // No staging directory left behind.
        assert_eq!(
            list(&fx.deploy_root()),
            [".2026-01-01-test.lock", "2026-01-01-test"]
        );
    }
}

#[test]
fn sums_use_the_original_format() {
    require!("sfdisk", "mkfs.ext4", "sha256sum");
    let fx = Fixture::new();
    let (image, root) = fx.image(2);
    let (config, plan) = fx.plan(&[("DEPLOY_COMPRESSION", "zstd"), ("COMPRESSION_LEVEL", "1")]);
    let export = &plan.exports[0];
    let input = DeployInput {
        image: &image,
        root,
        info: "info\n",
    };
    deploy(&config, export, &input, &fx.log, Landing::Replace).unwrap();
    let dir = &export.deploy_dir;
    // What `sha256sum -b ./<file>...` prints for the same files, sorted by name.
    let mut names: Vec<String> = list(dir)
        .into_iter()
        .filter(|n| n != SUMS_FILE)
        .map(|n| format!("./{n}"))
        .collect();
    names.sort();
    let out = run(Command::new("sha256sum")
        .arg("-b")
        .args(&names)
        .current_dir(dir));
    assert_eq!(
        fs::read_to_string(dir.join(SUMS_FILE)).unwrap(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn keep_img_bmap_and_qcow2() {
    require!("sfdisk", "mkfs.ext4", "xz", "sha256sum");
    let fx = Fixture::new();
    let (image, root) = fx.image(3);
    let original = fs::read(&image).unwrap();
    let with_qcow2 = have("qemu-img");
    let mut vars = vec![
        ("DEPLOY_COMPRESSION", "xz"),
        ("COMPRESSION_LEVEL", "0"),
        ("KEEP_IMG", "1"),
        ("BMAP", "1"),
    ];
    if with_qcow2 {
        vars.push(("OUTPUT_QCOW2", "1"));
    } else {
        eprintln!("qcow2 part skipped: qemu-img is not installed");
    }
    let (config, plan) = fx.plan(&vars);
    let export = &plan.exports[0];
    let input = DeployInput {
        image: &image,
        root,
        info: "info\n",
    };
    deploy(&config, export, &input, &fx.log, Landing::Replace).unwrap();
    let dir = &export.deploy_dir;
    let n = &export.name;
    assert_eq!(list(dir), sorted(&export.deploy_files));
    sha256sum_check(dir);
    let kept = dir.join(format!("{n}.img"));
    assert!(fs::read(&kept).unwrap() == original);
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata(&kept).unwrap().blocks() * 512 < original.len() as u64,
        "the kept image is not sparse"
    );
    let bmap_path = dir.join(format!("{n}.bmap"));
    let bmap_text = fs::read_to_string(&bmap_path).unwrap();
    assert!(
        bmap_text.contains("<ImageSize> 67108864 </ImageSize>"),
        "{bmap_text}"
    );
    if have("bmaptool") {
        // bmaptool checks the file checksum and every range checksum while copying, from the
        // raw and from the compressed image.
        for source in [kept.clone(), dir.join(format!("{n}.img.xz"))] {
            let dest = fx.dir.path().join("flashed");
            File::create(&dest).unwrap();
            run(Command::new("bmaptool")
                .arg("copy")
                .arg("--bmap")
                .arg(&bmap_path)
                .arg(&source)
                .arg(&dest));
            // Unmapped blocks are not written; the copy matches wherever the image has data.
            let flashed = fs::read(&dest).unwrap();
            assert_eq!(flashed.len(), original.len());
            assert!(flashed == original, "bmaptool copy differs from the image");
        }
        // The same block map as bmaptool's own of the input image (the map keeps every block
        // the image's writers allocated, zeros included; the kept copy is sparser).
        let theirs = fx.dir.path().join("theirs.bmap");
        run(Command::new("bmaptool")
            .arg("create")
            .arg("-o")
            .arg(&theirs)
            .arg(&image));
        let ranges = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains("<Range") || l.contains("Count"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            ranges(&bmap_text),
            ranges(&fs::read_to_string(&theirs).unwrap())
        );
    } else {
        eprintln!("bmaptool checks skipped: bmaptool is not installed");
    }
    if with_qcow2 {
        let qcow2 = dir.join(format!("{n}.qcow2"));
        run(Command::new("qemu-img")
            .arg("compare")
            .arg(&kept)
            .arg(&qcow2));
        let info = run(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&qcow2));
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], original.len() as u64);
    }
}

/// bmaptool's own output for a small sparse file is what [`bmap::create`] writes, byte for byte.
#[test]
fn bmap_matches_bmaptool_byte_for_byte() {
    require!("bmaptool");
    let dir = tempfile::tempdir().unwrap();
    for (i, (len, pieces)) in [
        (
            10 * MIB,
            vec![(0, pattern(5000, 1)), (3 * MIB, pattern(MIB as usize, 2))],
        ),
        (MIB + 100, vec![(MIB, vec![1; 100])]),
        (1000 * MIB, vec![(999 * MIB, vec![1; 7])]),
    ]
    .into_iter()
    .enumerate()
    {
        let img = dir.path().join(format!("img{i}"));
        sparse_image(&img, len, &pieces);
        let theirs = dir.path().join(format!("theirs{i}.bmap"));
        run(Command::new("bmaptool")
            .arg("create")
            .arg("-o")
            .arg(&theirs)
            .arg(&img));
        assert_eq!(
            bmap::create(&img).unwrap(),
            fs::read_to_string(&theirs).unwrap(),
            "image {i}"
        );
    }
}

#[test]
fn two_exports_keep_their_files_and_a_new_build_replaces_them() {
    require!("sfdisk", "mkfs.ext4", "sha256sum");
    let fx = Fixture::new();
    let (image1, root1) = fx.image(4);
    let (image2, root2) = fx.image(5);
    let (config, plan) = fx.plan(&[("DEPLOY_COMPRESSION", "gz"), ("COMPRESSION_LEVEL", "1")]);
    assert_eq!(plan.exports.len(), 2);
    let (lite, extra) = (&plan.exports[0], &plan.exports[1]);
    assert_eq!(lite.deploy_dir, extra.deploy_dir);
    let dir = &lite.deploy_dir;

    // Something left by an earlier build.
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("2026-01-01-test-old.info"), "old build\n").unwrap();

    let mut build = Deployer::new();
    let input1 = DeployInput {
        image: &image1,
        root: root1,
        info: "lite\n",
    };
    let input2 = DeployInput {
        image: &image2,
        root: root2,
        info: "extra\n",
    };
    build.deploy(&config, lite, &input1, &fx.log).unwrap();
    assert_eq!(
        list(dir),
        sorted(&lite.deploy_files),
        "the earlier build's files are gone"
    );
    build.deploy(&config, extra, &input2, &fx.log).unwrap();
    let mut both: Vec<String> = lite.deploy_files.clone();
    both.extend(extra.deploy_files.iter().cloned());
    both.sort();
    both.dedup();
    assert_eq!(list(dir), both);
    sha256sum_check(dir);
    assert_eq!(
        fs::read_to_string(dir.join("2026-01-01-test-lite.info")).unwrap(),
        "lite\n"
    );
    // Redeploying an export of the same build replaces its own files only.
    build.deploy(&config, lite, &input2, &fx.log).unwrap();
    assert_eq!(list(dir), both);
    sha256sum_check(dir);
    assert_eq!(
        fs::read_to_string(dir.join("2026-01-01-test-lite.info")).unwrap(),
        "extra\n"
    );

    // A new build: its first export replaces the directory.
    let mut next = Deployer::new();
    next.deploy(&config, extra, &input1, &fx.log).unwrap();
    assert_eq!(list(dir), sorted(&extra.deploy_files));
    sha256sum_check(dir);
}

#[test]
fn a_failure_at_any_point_leaves_the_old_deploy_intact() {
    require!("sfdisk", "mkfs.ext4", "sha256sum");
    let fx = Fixture::new();
    let (image1, root1) = fx.image(6);
    let (image2, root2) = fx.image(7);
    let (config, plan) = fx.plan(&[
        ("DEPLOY_COMPRESSION", "zstd"),
        ("COMPRESSION_LEVEL", "1"),
        ("BMAP", "1"),
    ]);
    let export = &plan.exports[0];
    let dir = &export.deploy_dir;
    let old = DeployInput {
        image: &image1,
        root: root1,
        info: "old\n",
    };
    deploy(&config, export, &old, &fx.log, Landing::Replace).unwrap();
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        list(dir)
            .into_iter()
            .map(|n| {
                let bytes = fs::read(dir.join(&n)).unwrap();
                (n, bytes)
            })
            .collect()
    };
    let before = snapshot(dir);
    let new = DeployInput {
        image: &image2,
        root: root2,
        info: "new\n",
    };
    for at in ["root extracted", "compressed", "staged", "before swap"] {
        for landing in [Landing::Replace, Landing::Add] {
            FAIL_AT.with(|f| f.set(Some(at)));
            let err = deploy(&config, export, &new, &fx.log, landing).unwrap_err();
            FAIL_AT.with(|f| f.set(None));
            assert_eq!(err.to_string(), format!("injected failure at {at}"));
            assert!(
                snapshot(dir) == before,
                "deploy dir changed by a failure at {at}"
            );
            sha256sum_check(dir);
            assert_eq!(
                list(&fx.deploy_root()),
                [".2026-01-01-test.lock", "2026-01-01-test"],
                "staging left after a failure at {at}"
            );
        }
    }
    // A staging directory left by a killed deploy is cleaned up by the next one.
    let stale = fx.deploy_root().join(".2026-01-01-test.partial-999999");
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("half.img"), "half").unwrap();
    deploy(&config, export, &new, &fx.log, Landing::Replace).unwrap();
    assert!(!stale.exists());
    assert_eq!(
        fs::read_to_string(dir.join("2026-01-01-test-lite.info")).unwrap(),
        "new\n"
    );
    sha256sum_check(dir);
}

#[test]
fn bad_input_fails_before_anything_is_written() {
    let fx = Fixture::new();
    let image = fx.dir.path().join("disk.img");
    sparse_image(&image, 8 * MIB, &[(0, vec![1; 512])]);
    let input = |root| DeployInput {
        image: &image,
        root,
        info: "",
    };
    // COMPRESSION_LEVEL is validated by the config, and again here.
    let (mut config, plan) = fx.plan(&[("DEPLOY_COMPRESSION", "gz")]);
    config.compression_level = 10;
    let root = RootPartition {
        offset: MIB,
        size: MIB,
    };
    let err = deploy(
        &config,
        &plan.exports[0],
        &input(root),
        &fx.log,
        Landing::Replace,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "COMPRESSION_LEVEL=10 is not valid for DEPLOY_COMPRESSION=gz: use 0 to 9"
    );
    let (config, plan) = fx.plan(&[("DEPLOY_COMPRESSION", "gz")]);
    let err = deploy(
        &config,
        &plan.exports[0],
        &input(RootPartition {
            offset: 7 * MIB,
            size: 2 * MIB,
        }),
        &fx.log,
        Landing::Replace,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("the root partition (offset 7340032, 2097152 bytes) is not inside"),
        "{err}"
    );
    // Deploy and plan must agree on the file names.
    let mut export = plan.exports[0].clone();
    export.deploy_files.retain(|f| !f.ends_with(".info"));
    let err = deploy(&config, &export, &input(root), &fx.log, Landing::Replace)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("internal error: deploy would make"),
        "{err}"
    );
    assert!(!fx.deploy_root().exists());
}

#[test]
fn sums_lines_escape_like_coreutils() {
    assert_eq!(sums_line("ab", "x.img"), "ab *./x.img\n");
    assert_eq!(sums_line("ab", "a\\b\nc"), "\\ab *./a\\\\b\\nc\n");
    let dir = tempfile::tempdir().unwrap();
    let sums = dir.path().join(SUMS_FILE);
    fs::write(
        &sums,
        format!(
            "{} *./plain\n\\{} *./a\\\\b\\nc\n",
            "1".repeat(64),
            "2".repeat(64)
        ),
    )
    .unwrap();
    let read = read_sums(&sums);
    assert_eq!(read["plain"], "1".repeat(64));
    assert_eq!(read["a\\b\nc"], "2".repeat(64));
    if have("sha256sum") {
        // coreutils writes the same line for a name with a backslash
        let name = "back\\slash";
        fs::write(dir.path().join(name), "x").unwrap();
        let out = run(Command::new("sha256sum")
            .arg("-b")
            .arg(format!("./{name}"))
            .current_dir(dir.path()));
        let hex = sparse::hex(&Sha256::digest(b"x"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), sums_line(&hex, name));
    }
}

#[test]
fn info_text_adds_the_package_list_once() {
    assert_eq!(
        info_text("GNU/Linux x UTC\nGenerated using pi-gen", "a\t1\tarm64\n"),
        "GNU/Linux x UTC\nGenerated using pi-gen\n\nPackages:\na\t1\tarm64\n"
    );
    let with_list = "issue\n\nPackages:\nii  a 1\n";
    assert_eq!(info_text(with_list, "a\t1\tarm64\n"), with_list);
    assert_eq!(info_text("issue\n", ""), "issue\n");
}

#[test]
fn package_list_reads_the_trees_dpkg_database() {
    require!("dpkg-query");
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info")).unwrap();
    fs::write(admin.join("arch"), "arm64\n").unwrap();
    fs::write(
        admin.join("status"),
        "Package: bash\nStatus: install ok installed\nArchitecture: arm64\nVersion: 5.2.15-2+b2\n\n\
         Package: gone\nStatus: deinstall ok config-files\nArchitecture: arm64\nVersion: 1.0\n\n\
         Package: zlib1g\nStatus: install ok installed\nArchitecture: arm64\nVersion: 1:1.2.13\n\n",
    )
    .unwrap();
    let list = package_list(dir.path(), &LogSink::default()).unwrap();
    assert_eq!(list, "bash\t5.2.15-2+b2\tarm64\nzlib1g\t1:1.2.13\tarm64\n");
}

/// An image over 4 GiB needs zip64 in the zip; unzip must read it back. 5 GiB through deflate:
/// about 30 s in a release build (as `tests/run` builds), far longer in a debug build.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "5 GiB through deflate; runs in release builds (tests/run)"
)]
fn zip64_for_images_over_4_gib() {
    require!("unzip");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.img");
    let len = 5 * 1024 * MIB + 4097;
    sparse_image(
        &src,
        len,
        &[
            (0, pattern(MIB as usize, 9)),
            (len - 10_000, pattern(10_000, 10)),
        ],
    );
    let dst = dir.path().join("big.zip");
    compress(&src, &dst, Compression::Zip, 1, "big.img", &mut |_| {}).unwrap();
    let out = run(Command::new("unzip").arg("-v").arg(&dst));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&len.to_string()), "{listing}");
    // The whole entry decompresses with a good CRC (unzip -t checks it).
    run(Command::new("unzip").arg("-tq").arg(&dst));
    // and ends with the data written last
    let tail = run(Command::new("sh")
        .arg("-c")
        .arg(format!("unzip -p '{}' | tail -c 10000", dst.display())));
    assert!(tail.stdout == pattern(10_000, 10));
}
