//! Stage storage for real (root): qcow2 chains attached by FUSE (and nbd where the kernel has
//! it) and plain directories. Each test's body runs in its own private mount + PID namespace
//! (see `common::storage`), and afterwards the test checks from outside that no mount, loop
//! device or helper process is left.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::storage::{in_namespace, missing_fuse, missing_privilege, sh};
use common::{inside, skip, which};
use pigen::exec::cmd::LogSink;
use pigen::storage::{self, mounts, qcow2, Attach, Backend, StageStore, StoreOptions};

const MIB: u64 = 1 << 20;

fn store(work: &Path, backend: Backend, base_size: u64) -> Box<dyn StageStore> {
    storage::open_with(
        &StoreOptions {
            backend,
            work_dir: work.to_path_buf(),
            base_size,
        },
        &LogSink::default(),
    )
}

fn rootfs(work: &Path, stage: &str) -> PathBuf {
    work.join(stage).join("rootfs")
}

// --- a tree with every kind of file and metadata a root filesystem has -------------------------

/// Fills `root/<tag>` with files of every kind: owners, modes with setuid/setgid/sticky,
/// device nodes, a FIFO, hard links, symlinks, xattrs, a file capability, ACLs, fixed mtimes.
fn populate(root: &Path, tag: &str) {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let d = root.join(tag);
    std::fs::create_dir_all(&d).unwrap();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let file = d.join("owned");
    std::fs::write(&file, format!("hello from {tag}\n")).unwrap();
    std::os::unix::fs::chown(&file, Some(1234), Some(5678)).unwrap();
    chmod(&file, 0o640);

    let setuid = d.join("setuid");
    std::fs::write(&setuid, "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&setuid, Some(0), Some(0)).unwrap();
    chmod(&setuid, 0o4755);
    let setgid = d.join("setgid-dir");
    std::fs::create_dir(&setgid).unwrap();
    std::os::unix::fs::chown(&setgid, Some(0), Some(50)).unwrap();
    chmod(&setgid, 0o2775);
    let sticky = d.join("tmp");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);

    mknod(
        &d.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    mknod(
        &d.join("loop9"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(7, 9),
    )
    .unwrap();
    nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();

    std::fs::write(d.join("hard1"), "linked\n").unwrap();
    std::fs::hard_link(d.join("hard1"), d.join("hard2")).unwrap();
    std::os::unix::fs::symlink("owned", d.join("relative-link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", d.join("dangling-link")).unwrap();

    sh(
        "setfattr",
        &[
            "-n",
            "user.pigen",
            "-v",
            tag,
            d.join("owned").to_str().unwrap(),
        ],
    );
    sh(
        "setfattr",
        &[
            "-n",
            "trusted.pigen",
            "-v",
            "t",
            d.join("hard1").to_str().unwrap(),
        ],
    );
    std::fs::copy("/bin/true", d.join("ping")).unwrap();
    sh(
        "setcap",
        &["cap_net_raw+ep", d.join("ping").to_str().unwrap()],
    );
    std::fs::write(d.join("acl"), "acl\n").unwrap();
    sh(
        "setfacl",
        &[
            "-m",
            "u:1234:rwx,g:5678:r-x",
            d.join("acl").to_str().unwrap(),
        ],
    );
    sh(
        "setfacl",
        &["-d", "-m", "u:1234:rwx", setgid.to_str().unwrap()],
    );

    for entry in ["owned", "setuid", "hard1", "ping", "acl"] {
        sh(
            "touch",
            &["-h", "-d", "@1000000000", d.join(entry).to_str().unwrap()],
        );
    }
    sh(
        "touch",
        &[
            "-h",
            "-d",
            "@1000000000",
            d.join("relative-link").to_str().unwrap(),
        ],
    );
}

/// Everything `populate` set, as text (inode numbers left out: a copy has new ones).
fn manifest(dir: &Path) -> String {
    let mut lines = Vec::new();
    walk(dir, dir, &mut lines);
    lines.join("\n")
}

fn walk(base: &Path, dir: &Path, lines: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let m = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        let mut line = format!(
            "{rel} mode={:o} uid={} gid={} nlink={} size={} mtime={}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.size(),
            if m.is_dir() { 0 } else { m.mtime() },
        );
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() || ft.is_block_device() {
            line += &format!(
                " rdev={}:{}",
                nix::sys::stat::major(m.rdev()),
                nix::sys::stat::minor(m.rdev())
            );
        }
        if ft.is_symlink() {
            line += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
        } else {
            if ft.is_file() {
                line += &format!(" content={:?}", std::fs::read(&path).unwrap().len());
            }
            let xattrs = sh(
                "getfattr",
                &[
                    "--absolute-names",
                    "-d",
                    "-m",
                    "-",
                    "-e",
                    "hex",
                    path.to_str().unwrap(),
                ],
            );
            let mut attrs: Vec<&str> = xattrs
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .collect();
            attrs.sort();
            line += &format!(" xattrs=[{}]", attrs.join(" "));
        }
        lines.push(line);
        if m.is_dir() {
            walk(base, &path, lines);
        }
    }
}

/// Checks that what `populate` made is there with its metadata, beyond equality with a
/// manifest: each feature is present at all.
fn verify(root: &Path, tag: &str) {
    let d = root.join(tag);
    let meta = |name: &str| std::fs::symlink_metadata(d.join(name)).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("owned")).unwrap(),
        format!("hello from {tag}\n")
    );
    let owned = meta("owned");
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(meta("setuid").mode() & 0o7777, 0o4755, "setuid bit");
    assert_eq!(meta("setgid-dir").mode() & 0o7777, 0o2775, "setgid bit");
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777, "sticky bit");
    let null = meta("null");
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(std::os::unix::fs::FileTypeExt::is_block_device(
        &meta("loop9").file_type()
    ));
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &meta("fifo").file_type()
    ));
    assert_eq!(meta("hard1").ino(), meta("hard2").ino(), "hard link kept");
    assert_eq!(meta("hard1").nlink(), 2);
    assert_eq!(
        std::fs::read_link(d.join("relative-link")).unwrap(),
        Path::new("owned")
    );
    assert_eq!(
        std::fs::read_link(d.join("dangling-link")).unwrap(),
        Path::new("/nowhere/at/all")
    );
    let getfattr = |name: &str, attr: &str| {
        sh(
            "getfattr",
            &[
                "--absolute-names",
                "--only-values",
                "-n",
                attr,
                d.join(name).to_str().unwrap(),
            ],
        )
    };
    assert_eq!(getfattr("owned", "user.pigen"), tag);
    assert_eq!(getfattr("hard2", "trusted.pigen"), "t");
    let caps = sh("getcap", &[d.join("ping").to_str().unwrap()]);
    assert!(caps.contains("cap_net_raw=ep"), "file capability: {caps:?}");
    let acl = sh(
        "getfacl",
        &[
            "--omit-header",
            "--numeric",
            d.join("acl").to_str().unwrap(),
        ],
    );
    assert!(
        acl.contains("user:1234:rwx") && acl.contains("group:5678:r-x"),
        "ACL: {acl}"
    );
    let default_acl = sh(
        "getfacl",
        &[
            "--omit-header",
            "--numeric",
            d.join("setgid-dir").to_str().unwrap(),
        ],
    );
    assert!(
        default_acl.contains("default:user:1234:rwx"),
        "default ACL: {default_acl}"
    );
    assert_eq!(meta("owned").mtime(), 1_000_000_000);
}

/// Three stages on top of each other: each sees what the ones below made, metadata intact.
fn three_layers(work: &Path, store: &dyn StageStore, elsewhere: Option<&Path>) {
    let r0 = store
        .create("stage0", None, &rootfs(work, "stage0"))
        .unwrap();
    populate(r0.rootfs(), "s0");
    std::fs::write(r0.rootfs().join("doomed"), "removed in stage1\n").unwrap();
    let m0 = manifest(&r0.rootfs().join("s0"));
    verify(r0.rootfs(), "s0");
    r0.finish().unwrap();

    let rootfs1 = elsewhere.map_or_else(|| rootfs(work, "stage1"), Path::to_path_buf);
    let started = Instant::now();
    let r1 = store.create("stage1", Some("stage0"), &rootfs1).unwrap();
    let took = started.elapsed();
    eprintln!("stage1 on top of stage0 ready in {} ms", took.as_millis());
    assert!(
        took < Duration::from_secs(30),
        "creating a child took {took:?}"
    );
    assert_eq!(manifest(&r1.rootfs().join("s0")), m0);
    verify(r1.rootfs(), "s0");
    std::fs::remove_file(r1.rootfs().join("doomed")).unwrap();
    populate(r1.rootfs(), "s1");
    let m1 = manifest(&r1.rootfs().join("s1"));
    r1.finish().unwrap();
    assert!(
        mounts::mounts_at_or_below(&rootfs1).unwrap().is_empty(),
        "finish unmounts"
    );

    let started = Instant::now();
    let r2 = store
        .create("stage2", Some("stage1"), &rootfs(work, "stage2"))
        .unwrap();
    eprintln!(
        "stage2 on top of stage1 ready in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(manifest(&r2.rootfs().join("s0")), m0);
    assert_eq!(manifest(&r2.rootfs().join("s1")), m1);
    verify(r2.rootfs(), "s0");
    verify(r2.rootfs(), "s1");
    assert!(!r2.rootfs().join("doomed").exists());
    std::fs::write(r2.rootfs().join("only-in-old-stage2"), "x").unwrap();
    r2.finish().unwrap();

    // Re-creating a layer starts again from the parent.
    let r2 = store
        .create("stage2", Some("stage1"), &rootfs(work, "stage2"))
        .unwrap();
    assert!(!r2.rootfs().join("only-in-old-stage2").exists());
    verify(r2.rootfs(), "s1");
    std::fs::write(r2.rootfs().join("kept"), "x").unwrap();
    r2.finish().unwrap();

    // Continuing a layer keeps what it had.
    let r2 = store.resume("stage2", &rootfs(work, "stage2")).unwrap();
    assert!(r2.rootfs().join("kept").exists());
    r2.finish().unwrap();
    for stage in ["stage0", "stage1", "stage2"] {
        assert!(store.exists(stage), "{stage}");
    }
    assert!(!store.exists("stage3"));
}

// --- qcow2 over FUSE ----------------------------------------------------------------------------

/// Why a FUSE test cannot run here: privileges, then FUSE, then the extra `tools` it uses.
fn fuse_missing(tools: &[&str]) -> Option<String> {
    missing_privilege()
        .or_else(missing_fuse)
        .or_else(|| self::tools(tools))
}

#[test]
fn fuse_layers_keep_files_and_metadata() {
    const TEST: &str = "fuse_layers_keep_files_and_metadata";
    if !inside(TEST) {
        if let Some(why) = fuse_missing(&["setfattr", "setcap", "setfacl"]) {
            return skip(TEST, &why);
        }
    }
    in_namespace(TEST, |scratch| {
        let work = scratch.join("work");
        let store = store(&work, Backend::Qcow2(Attach::Fuse), 256 * MIB);
        three_layers(&work, store.as_ref(), None);

        let info = qcow2::info(&work.join("image-stage2.qcow2"), &LogSink::default()).unwrap();
        assert_eq!(info.backing_filename.as_deref(), Some("image-stage1.qcow2"));
        assert_eq!(info.virtual_size, 256 * MIB);
        assert_eq!(info.cluster_size, Some(128 * 1024));
        let leftovers: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".fuse"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "FUSE mount point files left: {leftovers:?}"
        );

        // A daemon that cannot open the image: its own words, nothing left behind.
        std::fs::write(work.join("image-broken.qcow2"), "not an image").unwrap();
        let err = match store.resume("broken", &rootfs(&work, "broken")) {
            Ok(_) => panic!("attached garbage"),
            Err(e) => format!("{e:#}"),
        };
        eprintln!("{err}");
        assert!(
            err.contains("qemu-storage-daemon") && err.contains("before exporting"),
            "{err}"
        );
        assert!(err.contains("qcow2"), "{err}");
        assert!(!work.join("image-broken.fuse").exists());

        // Relative backing names: the whole WORK_DIR can move.
        let moved = scratch.join("moved");
        std::fs::rename(&work, &moved).unwrap();
        let store = self::store(&moved, Backend::Qcow2(Attach::Fuse), 256 * MIB);
        let r2 = store.resume("stage2", &rootfs(&moved, "stage2")).unwrap();
        verify(r2.rootfs(), "s0");
        r2.finish().unwrap();
    });
}

/// Allocated bytes of a file (what `du` counts).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn write_random(path: &Path, bytes: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    std::io::copy(&mut std::io::Read::take(&mut urandom, bytes), &mut file).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn fuse_discards_keep_layers_small() {
    const TEST: &str = "fuse_discards_keep_layers_small";
    if !inside(TEST) {
        if let Some(why) = fuse_missing(&[]) {
            return skip(TEST, &why);
        }
    }
    in_namespace(TEST, |scratch| {
        let work = scratch.join("work");
        let store = store(&work, Backend::Qcow2(Attach::Fuse), 1024 * MIB);
        let image = |stage: &str| work.join(qcow2::image_name(stage));

        let r0 = store
            .create("stage0", None, &rootfs(&work, "stage0"))
            .unwrap();
        let empty = allocated(&image("stage0"));
        write_random(&r0.rootfs().join("big"), 50 * MIB);
        r0.finish().unwrap();
        let base = allocated(&image("stage0"));
        eprintln!(
            "base layer: {} KiB empty, {} KiB with a 50 MiB file",
            empty >> 10,
            base >> 10
        );
        assert!(base >= 50 * MIB);

        // Deleting the parent's big file costs the child only metadata.
        let r1 = store
            .create("stage1", Some("stage0"), &rootfs(&work, "stage1"))
            .unwrap();
        let fresh = allocated(&image("stage1"));
        std::fs::remove_file(r1.rootfs().join("big")).unwrap();
        r1.finish().unwrap();
        let after_delete = allocated(&image("stage1"));
        eprintln!(
            "child layer: {} KiB new, {} KiB after deleting the parent's 50 MiB file",
            fresh >> 10,
            after_delete >> 10
        );
        assert!(
            after_delete < 4 * MIB,
            "deleting grew the child to {after_delete} bytes"
        );

        // Writing then deleting gives the space back at finish.
        let r2 = store
            .create("stage2", Some("stage1"), &rootfs(&work, "stage2"))
            .unwrap();
        write_random(&r2.rootfs().join("big2"), 50 * MIB);
        let during = allocated(&image("stage2"));
        std::fs::remove_file(r2.rootfs().join("big2")).unwrap();
        r2.finish().unwrap();
        let after = allocated(&image("stage2"));
        eprintln!(
            "child layer: {} KiB while holding a 50 MiB file, {} KiB after deleting it and finishing",
            during >> 10,
            after >> 10
        );
        assert!(during >= 50 * MIB);
        assert!(
            after < 4 * MIB,
            "the written-then-deleted file still takes {after} bytes"
        );
        sh("qemu-img", &["check", image("stage2").to_str().unwrap()]);
    });
}

#[test]
fn fuse_full_layer_is_reported_and_a_larger_size_grows_the_child() {
    const TEST: &str = "fuse_full_layer_is_reported_and_a_larger_size_grows_the_child";
    if !inside(TEST) {
        if let Some(why) = fuse_missing(&["resize2fs"]) {
            return skip(TEST, &why);
        }
    }
    in_namespace(TEST, |scratch| {
        let work = scratch.join("work");
        let small = store(&work, Backend::Qcow2(Attach::Fuse), 64 * MIB);
        let r0 = small
            .create("stage0", None, &rootfs(&work, "stage0"))
            .unwrap();
        assert!(r0.full_note("").is_none(), "an empty layer is not full");
        let error = fill(&r0.rootfs().join("filler"));
        assert_eq!(error.raw_os_error(), Some(nix::libc::ENOSPC));
        let usage = r0.usage().unwrap();
        assert!(usage.nearly_full(), "{usage:?}");
        let note = r0.full_note("").expect("a full layer gives a note");
        eprintln!("{note}");
        assert!(
            note.starts_with("stage0's root filesystem is full: "),
            "{note}"
        );
        assert!(note.contains(&format!("({}%)", usage.percent())), "{note}");
        assert!(
            note.contains("Raise BASE_QCOW2_SIZE (now 64M), e.g. BASE_QCOW2_SIZE=1G"),
            "{note}"
        );
        assert!(note.contains("image-stage0.qcow2"), "{note}");
        let small_total = usage.total;
        r0.finish().unwrap();

        let larger = store(&work, Backend::Qcow2(Attach::Fuse), 256 * MIB);
        let r1 = larger
            .create("stage1", Some("stage0"), &rootfs(&work, "stage1"))
            .unwrap();
        let usage = r1.usage().unwrap();
        eprintln!(
            "stage0's filesystem: {small_total} bytes; stage1's grown to {} bytes",
            usage.total
        );
        assert!(usage.total > 3 * small_total, "{usage:?}");
        write_random(&r1.rootfs().join("more"), 100 * MIB);
        assert!(r1.full_note("").is_none());
        assert!(r1
            .full_note("dd: error writing 'x': No space left on device")
            .is_some());
        r1.finish().unwrap();
        let info = qcow2::info(&work.join("image-stage1.qcow2"), &LogSink::default()).unwrap();
        assert_eq!(info.virtual_size, 256 * MIB);
    });
}

/// Writes zeros to `path` until the filesystem is full; returns the error that stopped it.
fn fill(path: &Path) -> std::io::Error {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 1 << 20];
    loop {
        if let Err(e) = file.write_all(&block).and_then(|_| file.sync_data()) {
            return e;
        }
    }
}

#[test]
fn killed_build_leaves_nothing_behind() {
    const TEST: &str = "killed_build_leaves_nothing_behind";
    if inside(TEST) {
        let scratch = common::storage::scratch();
        let work = scratch.join("work");
        let store = store(&work, Backend::Qcow2(Attach::Fuse), 256 * MIB);
        let r0 = store
            .create("stage0", None, &rootfs(&work, "stage0"))
            .unwrap();
        // Committed data and dirty data: tearing the namespace down has to flush through the
        // export (that is where a helper in our own mount namespace used to hang the kernel).
        write_random(&r0.rootfs().join("committed"), 8 * MIB);
        let dir = std::fs::File::open(r0.rootfs()).unwrap();
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).unwrap();
        std::fs::write(r0.rootfs().join("dirty"), vec![7u8; 4 << 20]).unwrap();
        eprintln!("ATTACHED");
        std::thread::sleep(Duration::from_secs(120));
        unreachable!("the outer test kills this run");
    }
    if let Some(why) = fuse_missing(&[]) {
        return skip(TEST, &why);
    }
    let scratch = common::storage::new_scratch(TEST);
    let mut inner = common::storage::spawn_in_namespace(TEST, &scratch);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !inner.tail().iter().any(|l| l.ends_with("ATTACHED")) {
        if let Some(status) = inner.try_wait() {
            panic!("inner run ended early ({status}): {:#?}", inner.tail());
        }
        assert!(
            Instant::now() < deadline,
            "never attached: {:#?}",
            inner.tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let live = common::storage::leaks(&scratch);
    eprintln!("while attached, seen from outside: {live:#?}");
    assert!(
        live.iter().any(|l| l.starts_with("loop device"))
            && live.iter().any(|l| l.starts_with("process")),
        "the attachment should be visible from outside: {live:?}"
    );
    assert!(
        !live.iter().any(|l| l.starts_with("mount")),
        "mounts must stay inside the namespace: {live:?}"
    );
    inner.kill(); // SIGKILL to unshare: --kill-child takes the namespace's PID 1 along
    let leaks = common::storage::leaks_after_exit(&scratch);
    assert!(leaks.is_empty(), "after SIGKILL: {leaks:?}");
    // The image survived: at worst leaked clusters (exit 3), never corruption (exit 2).
    let check = pigen::exec::Cmd::new("qemu-img")
        .args([
            "check",
            scratch.join("work/image-stage0.qcow2").to_str().unwrap(),
        ])
        .ok_codes(&[0, 3])
        .output(&LogSink::default());
    assert!(check.is_ok(), "{check:?}");
    mounts::remove_all(&scratch).unwrap();
}

// --- nbd ----------------------------------------------------------------------------------------

#[test]
fn nbd_layers_keep_files_and_trim() {
    const TEST: &str = "nbd_layers_keep_files_and_trim";
    if !inside(TEST) {
        if let Some(why) = missing_privilege().or_else(missing_nbd) {
            return skip(TEST, &why);
        }
    }
    in_namespace(TEST, |scratch| {
        let work = scratch.join("work");
        let store = store(&work, Backend::Qcow2(Attach::Nbd), 1024 * MIB);
        three_layers(&work, store.as_ref(), None);
        let r3 = store
            .create("stage3", Some("stage2"), &rootfs(&work, "stage3"))
            .unwrap();
        write_random(&r3.rootfs().join("big"), 50 * MIB);
        std::fs::remove_file(r3.rootfs().join("big")).unwrap();
        r3.finish().unwrap();
        let after = allocated(&work.join("image-stage3.qcow2"));
        eprintln!(
            "nbd child layer after writing and deleting 50 MiB: {} KiB",
            after >> 10
        );
        assert!(after < 4 * MIB);
    });
}

/// Why the nbd test cannot run here (its root check aside), if it cannot.
fn missing_nbd() -> Option<String> {
    if !storage::nbd::device_present() {
        return Some(format!(
            "no /dev/nbd0 (nbd module not loaded{}); QCOW2_ATTACH=auto uses FUSE here",
            if Path::new("/sys/module/nbd").exists() {
                ", or no device nodes"
            } else {
                ""
            }
        ));
    }
    tools(&["qemu-nbd"])
}

// --- dir ----------------------------------------------------------------------------------------

#[test]
fn dir_layers_keep_files_and_metadata() {
    const TEST: &str = "dir_layers_keep_files_and_metadata";
    if !inside(TEST) {
        if let Some(why) =
            missing_privilege().or_else(|| tools(&["rsync", "setfattr", "setcap", "setfacl"]))
        {
            return skip(TEST, &why);
        }
    }
    in_namespace(TEST, |scratch| {
        let work = scratch.join("work");
        let store = store(&work, Backend::Dir, 0);
        // stage1's root is handed out somewhere else than its layer: a bind mount.
        let elsewhere = scratch.join("elsewhere/rootfs");
        three_layers(&work, store.as_ref(), Some(&elsewhere));
        verify(&work.join("stage1/rootfs"), "s1");
        assert_eq!(store.location("stage1"), work.join("stage1/rootfs"));
        store.discard("stage2").unwrap();
        assert!(!store.exists("stage2"));
    });
}

// --- never removing through a mount -------------------------------------------------------------

#[test]
fn removal_never_crosses_a_mount() {
    const TEST: &str = "removal_never_crosses_a_mount";
    if !inside(TEST) {
        if let Some(why) = missing_privilege() {
            return skip(TEST, &why);
        }
    }
    in_namespace(TEST, |scratch| {
        let log = LogSink::default();
        let tree = scratch.join("a");
        let inner = tree.join("b c"); // a space: mountinfo escapes it
        std::fs::create_dir_all(&inner).unwrap();
        sh("mount", &["-t", "tmpfs", "tmpfs", inner.to_str().unwrap()]);
        std::fs::write(inner.join("precious"), "x").unwrap();
        let err = mounts::remove_all(&tree).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("refusing to delete {}: ", tree.display())),
            "{err}"
        );
        assert!(err.contains("b c (tmpfs from tmpfs)"), "{err}");
        assert!(inner.join("precious").exists());

        // A store refuses to re-create a stage whose root has something mounted in it, and
        // keeps the old layer.
        let work = scratch.join("work");
        let dirs = store(&work, Backend::Dir, 0);
        let r0 = dirs
            .create("stage0", None, &rootfs(&work, "stage0"))
            .unwrap();
        std::fs::write(r0.rootfs().join("old"), "x").unwrap();
        let proc_dir = r0.rootfs().join("proc");
        std::fs::create_dir(&proc_dir).unwrap();
        sh("mount", &["-t", "proc", "proc", proc_dir.to_str().unwrap()]);
        let err = match dirs.create("stage0", None, &rootfs(&work, "stage0")) {
            Ok(_) => panic!("re-created a root with /proc mounted in it"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("refusing to set up stage0's root at"),
            "{err}"
        );
        assert!(work.join("stage0/rootfs/old").exists());
        r0.finish().unwrap(); // unmounts the chroot's /proc
        assert!(!mounts::is_mount_point(&proc_dir).unwrap());

        mounts::unmount_all(&tree, &log, false).unwrap();
        mounts::remove_all(&tree).unwrap();
        assert!(!tree.exists());
    });
}

fn tools(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|t| which(t).is_none())
        .map(|t| format!("{t} is not installed"))
}
