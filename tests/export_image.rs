//! Disk image assembly with the real tools, checked without mounting anything: a Raspberry Pi
//! image from a tree holding everything a root filesystem can hold (owners, modes, setuid,
//! device nodes, hard links, symlinks, xattrs, file capabilities, long and mixed-case FAT
//! names), the root filesystem's size model against mkfs.ext4 with no margin, and the ext2,
//! ext4 and xfs boot filesystems. Read back with debugfs, mtools, sfdisk --json, xfs_db.
#![allow(clippy::disallowed_methods)] // tests start programs directly

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use pigen::exec::cmd::LogSink;
use pigen::export::fs::{copy_range_sparse, mke2fs_boot, mkfs_ext4_root, mkfs_xfs_boot, Ext4Root};
use pigen::export::image::{assemble, ext_at, Options};
use pigen::export::layout::{FsType, Ids, Layout, Role, Settings, Table, Target, TreeUsage, MIB};
use pigen::export::measure::measure;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn missing_tools(tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find(|t| common::which(t).is_none())
        .map(|t| format!("{t} is not installed (tests/run installs it)"))
}

/// `debugfs -R request` on the ext4 filesystem at `offset` in `image`.
fn debugfs(image: &Path, offset: u64, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(ext_at(image, offset))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mtools(program: &str, image: &Path, offset: u64, args: &[&str]) -> String {
    let mut target = image.as_os_str().to_os_string();
    target.push(format!("@@{offset}"));
    run(Command::new(program)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(target)
        .args(args))
}

/// The Raspberry Pi tree: boot files in /boot/firmware, and a root with everything ext4 must
/// keep.
fn raspi_tree(t: &Path) {
    let fw = t.join("boot/firmware");
    write(&fw.join("config.txt"), "arm_64bit=1\nenable_uart=1\n");
    write(
        &fw.join("cmdline.txt"),
        "console=serial0,115200 console=tty1 root=ROOTDEV rootfstype=ext4 fsck.repair=yes rootwait\n",
    );
    write(
        &fw.join("sys_arm64_000/cmdline.txt"),
        "root=ROOTDEV rootwait\n",
    );
    std::fs::write(fw.join("bcm2710-rpi-3-b.dtb"), vec![0xd0u8; 30_000]).unwrap();
    std::fs::write(fw.join("Kernel8.img"), vec![0x4bu8; 3 << 20]).unwrap();
    write(
        &fw.join("overlays/A Very Long Mixed-Case Overlay Name.dtbo"),
        "overlay\n",
    );
    write(&fw.join("overlays/README"), "readme\n");
    std::fs::create_dir_all(fw.join("EmptyDir")).unwrap();
    write(
        &t.join("etc/fstab"),
        "proc /proc proc defaults 0 0\nBOOTDEV /boot/firmware vfat defaults 0 2\nROOTDEV / ext4 defaults,noatime 0 1\n",
    );
    write(&t.join("etc/shadow"), "root:*:1:0:99999:7:::\n");
    std::fs::set_permissions(t.join("etc/shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(t.join("etc/shadow"), Some(0), Some(42)).unwrap();
    write(&t.join("usr/bin/su"), "#!/bin/sh\n");
    std::fs::set_permissions(
        t.join("usr/bin/su"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::copy("/bin/true", t.join("usr/bin/ping")).unwrap();
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(t.join("usr/bin/ping")));
    std::fs::create_dir_all(t.join("dev")).unwrap();
    run(Command::new("mknod")
        .arg(t.join("dev/null"))
        .args(["c", "1", "3"]));
    write(&t.join("home/pi/notes"), "hard\n");
    std::os::unix::fs::chown(t.join("home/pi/notes"), Some(1000), Some(1000)).unwrap();
    std::fs::hard_link(t.join("home/pi/notes"), t.join("home/pi/notes.link")).unwrap();
    symlink("/proc/mounts", t.join("etc/mtab")).unwrap();
    symlink("x".repeat(100), t.join("etc/long-link")).unwrap();
    run(Command::new("setfattr")
        .args(["-n", "user.x", "-v", "42"])
        .arg(t.join("home/pi/notes")));
    run(Command::new("setfattr")
        .args(["-n", "security.pigen", "-v", "label"])
        .arg(t.join("etc/shadow")));
    std::fs::create_dir_all(t.join("tmp")).unwrap();
    std::fs::set_permissions(t.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

#[test]
fn raspi_image_keeps_everything_without_mounting() {
    let name = "raspi_image_keeps_everything_without_mounting";
    if !common::is_root() {
        return common::skip(
            name,
            "needs root (root-owned files, mknod, security xattrs, setcap)",
        );
    }
    let tools = [
        "mkfs.ext4",
        "mkfs.fat",
        "mcopy",
        "sfdisk",
        "debugfs",
        "e2fsck",
        "fsck.fat",
        "setcap",
        "setfattr",
        "unshare",
    ];
    if let Some(why) = missing_tools(&tools) {
        return common::skip(name, &why);
    }
    let scratch = common::Scratch::new();
    let base = scratch.path().join("base");
    let config = common::config(
        &base,
        &[
            "TARGET_RASPI=1",
            "TARGET_ARCH=arm64",
            "ROOT_MARGIN=16M",
            "IMG_DATE=2026-01-01",
        ],
    );
    let tree = scratch.path().join("tree");
    raspi_tree(&tree);
    let image = scratch.path().join("test.img");
    let log = LogSink::default();
    let seen = std::sync::atomic::AtomicU64::new(0);
    let progress = |p: pigen::export::Progress| {
        assert!(p.done <= p.total, "{p:?}");
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let options = Options {
        name: "2026-01-01-test",
        log: &log,
        progress: Some(&progress),
    };
    let made = assemble(&config, &tree, &image, &options).unwrap();
    println!("{}", made.summary);
    for note in &made.notes {
        println!("note: {note}");
    }
    assert!(
        seen.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "progress reported"
    );

    // Layout: MBR, FAT at 4 MiB, ext4 right after, image ends with the root.
    let Table::Mbr { disk_id } = made.layout.table else {
        panic!("MBR expected")
    };
    let (boot, root) = (&made.layout.partitions[0], &made.layout.partitions[1]);
    assert_eq!(
        (boot.start, boot.size, boot.type_code),
        (8192, 524_288, "c")
    );
    assert_eq!((root.start, root.type_code), (532_480, "83"));
    assert_eq!(boot.partuuid, format!("{disk_id:08x}-01"));
    assert_eq!(root.partuuid, format!("{disk_id:08x}-02"));
    assert_eq!(made.root_offset, 532_480 * 512);
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        made.layout.image_size
    );
    assert_eq!(made.layout.image_size, made.root_offset + made.root_size);
    let json = run(Command::new("sfdisk").arg("--json").arg(&image));
    assert!(
        json.contains(&format!("\"id\": \"0x{disk_id:08x}\"")),
        "{json}"
    );
    assert!(made.summary.contains("e2fsck clean") && made.summary.contains("fsck.fat clean"));

    // Root filesystem: everything survived.
    let off = made.root_offset;
    let stat = |p: &str| debugfs(&image, off, &format!("stat {p}"));
    let s = stat("/etc/shadow");
    assert!(
        s.contains("Mode:  0640") && s.contains("User:     0   Group:    42"),
        "{s}"
    );
    assert!(debugfs(&image, off, "ea_list /etc/shadow").contains("security.pigen"));
    let s = stat("/usr/bin/su");
    assert!(s.contains("Mode:  04755"), "{s}");
    let s = debugfs(&image, off, "ea_list /usr/bin/ping");
    assert!(
        s.contains("security.capability"),
        "file capability kept: {s}"
    );
    let s = stat("/dev/null");
    assert!(s.contains("Type: character special"), "{s}");
    assert!(s.contains("Device major/minor number: 01:03"), "{s}");
    let a = stat("/home/pi/notes");
    assert!(a.contains("Links: 2") && a.contains("User:  1000"), "{a}");
    let inode = |s: &str| s.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(inode(&a), inode(&stat("/home/pi/notes.link")), "hard link");
    assert!(debugfs(&image, off, "ea_list /home/pi/notes").contains("user.x (2) = \"42\""));
    assert!(stat("/etc/mtab").contains("Fast link dest: \"/proc/mounts\""));
    assert!(stat("/etc/long-link").contains("Type: symlink"));
    assert!(stat("/tmp").contains("Mode:  01777"));
    // The boot partition's content is not in the root, its mount point is.
    let ls = debugfs(&image, off, "ls /boot/firmware");
    assert!(
        !ls.contains("config.txt") && !ls.contains("Kernel8"),
        "{ls}"
    );
    assert!(stat("/boot/firmware").contains("Type: directory"));
    let fstab = debugfs(&image, off, "cat /etc/fstab");
    assert_eq!(
        fstab,
        format!(
            "proc /proc proc defaults 0 0\nPARTUUID={disk_id:08x}-01 /boot/firmware vfat defaults 0 2\nPARTUUID={disk_id:08x}-02 / ext4 defaults,noatime 0 1\n"
        )
    );
    let dump = run(Command::new("dumpe2fs").arg("-h").arg(ext_at(&image, off)));
    assert!(dump.contains("Filesystem volume name:   ROOTFS"), "{dump}");
    assert!(dump.contains(&format!("Filesystem UUID:          {}", made.root_fs_uuid)));
    for off_feature in ["metadata_csum", "64bit", "huge_file"] {
        let features = dump
            .lines()
            .find(|l| l.starts_with("Filesystem features"))
            .unwrap();
        assert!(!features.contains(off_feature), "{features}");
    }

    // FAT: names, content, PARTUUIDs.
    let boff = boot.offset();
    let listing = mtools("mdir", &image, boff, &["-/", "-b", "::/"]);
    for name in [
        "::/config.txt",
        "::/Kernel8.img",
        "::/bcm2710-rpi-3-b.dtb",
        "::/EmptyDir/",
        "::/overlays/A Very Long Mixed-Case Overlay Name.dtbo",
        "::/overlays/README",
        "::/sys_arm64_000/cmdline.txt",
    ] {
        assert!(listing.lines().any(|l| l == name), "{name} in\n{listing}");
    }
    let cmdline = mtools("mtype", &image, boff, &["::/cmdline.txt"]);
    assert_eq!(
        cmdline,
        format!("console=serial0,115200 console=tty1 root=PARTUUID={disk_id:08x}-02 rootfstype=ext4 fsck.repair=yes rootwait\n")
    );
    let sys = mtools("mtype", &image, boff, &["::/sys_arm64_000/cmdline.txt"]);
    assert_eq!(sys, format!("root=PARTUUID={disk_id:08x}-02 rootwait\n"));
    let kernel = scratch.path().join("kernel.out");
    mtools(
        "mcopy",
        &image,
        boff,
        &["::/Kernel8.img", kernel.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&kernel).unwrap(), vec![0x4bu8; 3 << 20]);
    let info = mtools("minfo", &image, boff, &["::"]);
    assert!(info.contains("disk label=\"BOOT       \""), "{info}");
    assert!(info.contains(&format!(
        "serial number: {}",
        made.layout.fat_volume_id.to_uppercase()
    )));

    // Same tree, same name: same layout and identifiers (the tree keeps its filled-in
    // placeholders, which changes nothing).
    let again = scratch.path().join("again.img");
    let made2 = assemble(&config, &tree, &again, &options).unwrap();
    assert_eq!(made2.layout, made.layout);
    // Another export name: other identifiers.
    let other = Options {
        name: "2026-01-01-test-lite",
        ..options
    };
    let made3 = assemble(&config, &tree, &again, &other).unwrap();
    assert_ne!(made3.partuuids, made.partuuids);
}

/// A tree of `files` files of `size` bytes in `dirs` directories, with some xattrs and long
/// symlinks.
fn synthetic_tree(t: &Path, dirs: usize, files: usize, size: usize) {
    for d in 0..dirs {
        let dir = t.join(format!("d{d:04}/sub-directory-with-a-longer-name"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files / dirs {
            let p = dir.join(format!("file-{f:06}-with-a-name-of-some-length.txt"));
            std::fs::write(&p, vec![b'x'; size]).unwrap();
        }
        symlink("y".repeat(80), dir.join("long-symlink")).unwrap();
        if d < 20 {
            // Too big for the inode: an xattr block each.
            let _ = Command::new("setfattr")
                .args(["-n", "user.pigen", "-v"])
                .arg("v".repeat(120))
                .arg(&dir)
                .status();
        }
    }
}

/// The size model: with ROOT_MARGIN=0 mkfs.ext4 -d must succeed on trees of very different
/// shapes, and leave little unused.
#[test]
fn root_size_fits_with_zero_margin() {
    let name = "root_size_fits_with_zero_margin";
    if let Some(why) = missing_tools(&["mkfs.ext4", "dumpe2fs", "e2fsck"]) {
        return common::skip(name, &why);
    }
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("many tiny files", 40, 40_000, 10),
        ("empty files", 20, 20_000, 0),
        ("4 KiB + 1 files", 10, 3_000, 4097),
        ("a few big files", 2, 6, 70 << 20),
        ("many directories", 3_000, 3_000, 100),
    ];
    for (shape, dirs, files, size) in shapes {
        let scratch = tempfile::tempdir().unwrap();
        let tree = scratch.path().join("tree");
        synthetic_tree(&tree, *dirs, *files, *size);
        let usage = measure(&tree, None).unwrap();
        let settings = Settings {
            target: Target::PcMbr,
            boot_fstype: FsType::Vfat,
            boot_size: 256 * MIB,
            root_margin: (0, 0),
            fat_codepage: "437".into(),
            seed: shape.to_string(),
            epoch: None,
        };
        let layout = Layout::plan(
            &settings,
            &TreeUsage {
                root: usage.root,
                fat_dir: None,
            },
        )
        .unwrap();
        let image = scratch.path().join("root.img");
        let root = layout.root_partition();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(layout.image_size)
            .unwrap();
        mkfs_ext4_root(
            &Ext4Root {
                image: &image,
                offset: root.offset(),
                geometry: &layout.root,
                label: "ROOTFS",
                tree: &tree,
                exclude: None,
                scratch: scratch.path(),
                epoch: None,
            },
            &LogSink::default(),
            None,
        )
        .unwrap_or_else(|e| panic!("{shape}: {e:#}\n{:?}", layout.root));
        let at = ext_at(&image, root.offset());
        run(Command::new("e2fsck").args(["-f", "-n"]).arg(&at));
        let dump = run(Command::new("dumpe2fs").arg("-h").arg(&at));
        let field = |f: &str| -> u64 {
            dump.lines()
                .find_map(|l| l.strip_prefix(f))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (blocks, free) = (field("Block count:"), field("Free blocks:"));
        let (inodes, free_inodes) = (field("Inode count:"), field("Free inodes:"));
        let used = blocks - free;
        println!(
            "{shape}: measured {} blocks / {} inodes; planned {} blocks (content {} + overhead {} + reserved {}); used {used}, free {free} ({} MiB), inodes {}/{inodes}",
            usage.root.data_blocks,
            usage.root.inodes,
            blocks,
            layout.root.content_blocks,
            layout.root.overhead_blocks,
            layout.root.reserved_blocks,
            free * 4096 / MIB,
            inodes - free_inodes,
        );
        // The 5% reserve is never used by mkfs, so at least that much stays free.
        assert!(free >= layout.root.reserved_blocks, "{shape}: {free} free");
        assert!(
            blocks == 8192 // the 32 MiB minimum
                || free <= layout.root.reserved_blocks + layout.root.content_blocks / 50 + 2048,
            "{shape}: the model wastes {} blocks",
            free - layout.root.reserved_blocks
        );
    }
}

#[test]
fn boot_filesystems_ext2_ext4_xfs() {
    let name = "boot_filesystems_ext2_ext4_xfs";
    if let Some(why) = missing_tools(&[
        "mke2fs",
        "debugfs",
        "e2fsck",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
    ]) {
        return common::skip(name, &why);
    }
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("boot");
    write(&dir.join("grub/grub.cfg"), "set timeout=1\n");
    write(&dir.join("vmlinuz-6.1"), "kernel");
    symlink("vmlinuz-6.1", dir.join("vmlinuz")).unwrap();
    let image = scratch.path().join("disk.img");
    let log = LogSink::default();
    let offset = 4 * MIB;
    for fstype in [FsType::Ext2, FsType::Ext4] {
        std::fs::File::create(&image)
            .unwrap()
            .set_len(offset + 64 * MIB)
            .unwrap();
        mke2fs_boot(&image, offset, 64 * MIB, fstype, "BOOT", &dir, &log).unwrap();
        run(Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(ext_at(&image, offset)));
        assert_eq!(
            debugfs(&image, offset, "cat /grub/grub.cfg"),
            "set timeout=1\n"
        );
        assert!(
            debugfs(&image, offset, "stat /vmlinuz").contains("Fast link dest: \"vmlinuz-6.1\"")
        );
        let dump = run(Command::new("dumpe2fs")
            .arg("-h")
            .arg(ext_at(&image, offset)));
        let journal = dump.contains("has_journal");
        assert_eq!(journal, fstype == FsType::Ext4, "{fstype:?}: {dump}");
        assert!(dump.contains("Filesystem volume name:   BOOT"));
    }
    // xfs: refused below 300M, otherwise made aside and copied in.
    let err = mkfs_xfs_boot(
        &image,
        offset,
        256 * MIB,
        "BOOT",
        &dir,
        scratch.path(),
        &log,
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 300M"), "{err}");
    std::fs::remove_file(&image).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(offset + 320 * MIB)
        .unwrap();
    mkfs_xfs_boot(
        &image,
        offset,
        320 * MIB,
        "BOOT",
        &dir,
        scratch.path(),
        &log,
    )
    .unwrap();
    let part = scratch.path().join("part.xfs");
    copy_range_sparse(&image, offset, 320 * MIB, &part, 0).unwrap();
    run(Command::new("xfs_repair").arg("-n").arg(&part));
    let label = run(Command::new("xfs_db")
        .args(["-r", "-c", "label"])
        .arg(&part));
    assert_eq!(label.trim(), "label = \"BOOT\"");
    let ls = run(Command::new("xfs_db").args(["-r", "-c", "ls /"]).arg(&part));
    assert!(ls.contains("grub") && ls.contains("vmlinuz-6.1"), "{ls}");
    assert!(
        std::fs::metadata(&image).unwrap().len() == offset + 320 * MIB,
        "the image keeps its size"
    );
}

#[test]
fn identifiers_depend_on_date_and_name_only() {
    let a = Ids::new("2026-01-01\n2026-01-01-test");
    assert_eq!(
        a.uuid("root-fs-uuid"),
        Ids::new("2026-01-01\n2026-01-01-test").uuid("root-fs-uuid")
    );
    let _ = Role::Root;
}
