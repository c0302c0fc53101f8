//! THE table of variables pigen knows: name, kind, default and meaning, in resolution order.
//!
//! Order matters: a default may use any variable listed before it (as `scripts/build_vars`
//! does). Variables a config sets that are not listed here are kept and exported too.

/// How a value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// Text that must not be shown unless asked (`pigen config --show-secrets`).
    Secret,
    /// `0` or `1`.
    Flag,
    /// A size such as `15200M` or `4G` (qemu-img syntax: k, M, G, T suffixes, powers of 1024).
    Size,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// Space-separated words.
    List,
    /// A filesystem path.
    Path,
}

/// Where the value comes from when neither config nor environment gives one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultRule {
    /// Stays unset (scripts test for set-ness, e.g. `WPA_ESSID`).
    Unset,
    /// A fixed value.
    Value(&'static str),
    /// Computed by `resolve` from earlier variables or host facts; the text describes it.
    Computed(&'static str),
    /// Always computed by pigen; a value from config or environment is ignored with a warning.
    Forced(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct VarDef {
    pub name: &'static str,
    pub kind: Kind,
    pub default: DefaultRule,
    pub doc: &'static str,
}

impl VarDef {
    /// The default as shown to users (README, `pigen config`).
    pub fn default_text(&self) -> &'static str {
        match self.default {
            DefaultRule::Unset => "unset",
            DefaultRule::Value(v) => v,
            DefaultRule::Computed(d) | DefaultRule::Forced(d) => d,
        }
    }
}

pub const ARCHES: &[&str] = &["arm64", "armhf", "i386", "amd64"];
pub const RELEASES: &[&str] = &["buster", "bullseye", "bookworm", "trixie"];
pub const BOOT_FSTYPES: &[&str] = &["vfat", "ext2", "ext4", "xfs"];
pub const COMPRESSIONS: &[&str] = &["zip", "xz", "gz", "zstd", "none"];
/// `FIRST_USER_PASS` when the configuration does not set it (the original's, documented).
pub const DEFAULT_FIRST_USER_PASS: &str = "raspberry";

const fn var(name: &'static str, kind: Kind, default: DefaultRule, doc: &'static str) -> VarDef {
    VarDef {
        name,
        kind,
        default,
        doc,
    }
}

use DefaultRule::*;
use Kind::*;

pub static VARS: &[VarDef] = &[
    // Naming and paths.
    var("IMG_NAME", Text, Unset, "Name of the image (required). Export files add `IMG_SUFFIX`."),
    var("IMG_DATE", Text, Computed("UTC date `YYYY-MM-DD` (from `SOURCE_DATE_EPOCH` when set)"), "Date in file names and in `/etc/rpi-issue`."),
    var("IMG_FILENAME", Text, Computed("`IMG_DATE-IMG_NAME`"), "Base name of the deployed files and of the deploy sub-directory."),
    var("IMG_SUFFIX", Text, Unset, "Set by each stage's `EXPORT_IMAGE` (e.g. `-lite`); appended to `IMG_FILENAME`."),
    var("ARCHIVE_FILENAME", Text, Computed("`image_IMG_DATE-IMG_NAME`"), "Base name of the `.zip` archive (upstream pi-gen); `IMG_SUFFIX` is appended."),
    var("ZIP_FILENAME", Text, Computed("`image_IMG_DATE-IMG_NAME`"), "Accepted for compatibility; unused (as in the original)."),
    var("WORK_DIR", Path, Computed("`BASE_DIR/work/IMG_NAME`"), "Where stage images, logs and state live; stable across runs so skips and `--continue` work."),
    var("DEPLOY_DIR", Path, Computed("`BASE_DIR/deploy`"), "Output root; each build deploys into `DEPLOY_DIR/IMG_FILENAME/`."),
    var("DEPLOY_ZIP", Flag, Value("1"), "`1`: deploy a compressed image (zip unless `DEPLOY_COMPRESSION` says otherwise); `0`: the plain `.img`."),
    var("DEPLOY_COMPRESSION", Choice(COMPRESSIONS), Computed("`zip` when `DEPLOY_ZIP=1`, else `none`"), "Compression of the deployed image: `zip`, `xz`, `gz`, `zstd` or `none`."),
    var("COMPRESSION_LEVEL", Text, Value("6"), "Compression level: 0–9 (zip, gz, xz), 1–19 (zstd)."),
    var("KEEP_IMG", Flag, Value("0"), "`1`: keep the raw `.img` next to the compressed one."),
    var("BMAP", Flag, Value("0"), "`1`: also deploy a `.bmap` file for bmaptool."),
    var("OUTPUT_QCOW2", Flag, Value("0"), "`1`: also deploy the image as `.qcow2` (implied by `USE_QEMU=1`)."),
    var("LOG_FILE", Path, Forced("`WORK_DIR/build.log`"), "Build log; always `WORK_DIR/build.log`."),
    // Target.
    var("TARGET_HOSTNAME", Text, Value("raspberrypi"), "Host name of the built system."),
    var("FIRST_USER_NAME", Text, Value("pi"), "Name of the first user."),
    var("FIRST_USER_PASS", Secret, Value(DEFAULT_FIRST_USER_PASS), "Password of the first user (stored hashed in the image). Left at the default with `ENABLE_SSH=1` and without `PUBKEY_ONLY_SSH=1`, the build warns at its start."),
    var("RELEASE", Text, Value("trixie"), "Debian release: `bullseye`, `bookworm`, `trixie` (`buster` with an archive `DEB_SERVER`); other names are built as testing."),
    var("TARGET_RASPI", Flag, Value("1"), "`1`: Raspberry Pi image (firmware, config.txt, cmdline.txt); `0`: PC image with GRUB."),
    var("TARGET_ARCH", Choice(ARCHES), Value("arm64"), "Architecture: `arm64`, `armhf`, `i386` or `amd64`."),
    var("RASPI_FIRMWARE", Choice(&["raspberrypi", "debian"]), Value("raspberrypi"), "Raspberry Pi boot software: `raspberrypi` (Raspberry Pi archive) or `debian` (Debian's `raspi-firmware` and kernel)."),
    var("WPA_ESSID", Text, Unset, "Wireless network to join on first boot."),
    var("WPA_PASSWORD", Secret, Unset, "Its password, 8 to 63 characters; unset for an open network."),
    var("WPA_COUNTRY", Text, Unset, "Two-letter country code for the wireless regulatory domain."),
    var("ENABLE_SSH", Flag, Value("0"), "`1`: enable the SSH server."),
    var("PUBKEY_SSH_FIRST_USER", Text, Unset, "Contents of the first user's `~/.ssh/authorized_keys`."),
    var("PUBKEY2_SSH_FIRST_USER", Text, Unset, "A second key appended to it."),
    var("PUBKEY_ONLY_SSH", Flag, Value("0"), "`1`: SSH accepts public keys only (needs `PUBKEY_SSH_FIRST_USER`)."),
    var("LOCALE_DEFAULT", Text, Value("en_US.UTF-8"), "Default locale."),
    var("KEYBOARD_KEYMAP", Text, Value("us"), "Keyboard keymap (debconf `keyboard-configuration/xkb-keymap`)."),
    var("KEYBOARD_LAYOUT", Text, Value("English (US)"), "Keyboard layout (debconf `keyboard-configuration/variant`)."),
    var("TIMEZONE_DEFAULT", Text, Value("Europe/Berlin"), "Time zone; must exist under the host's `/usr/share/zoneinfo`."),
    // Provenance.
    var("PI_GEN", Text, Value("pigen"), "Generator name written to `/etc/rpi-issue`."),
    var("PI_GEN_REPO", Text, Value("pigen"), "Generator source written to `/etc/rpi-issue`."),
    var("PI_GEN_VERSION", Text, Forced("pigen's version"), "pigen's version, written to `/etc/rpi-issue`."),
    var("GIT_HASH", Text, Computed("`git rev-parse HEAD` in `BASE_DIR`"), "Revision of the stage tree, written to `/etc/rpi-issue`."),
    var("CUSTOM_NAME", Text, Unset, "With `CUSTOM_VERSION`: a `<NAME> version <VERSION>` line in `/etc/rpi-issue`."),
    var("CUSTOM_VERSION", Text, Unset, "See `CUSTOM_NAME`."),
    // Package sources and policy.
    var("DEB_SERVER", Text, Unset, "Debian mirror for debootstrap and the image's sources; unset: debootstrap's own default mirror."),
    var("DEB_SECURITY_SERVER", Text, Unset, "Debian security archive for the image's sources; unset: the `debian-security` sibling of a `DEB_SERVER` ending in `/debian`."),
    var("RASPI_SERVER", Text, Unset, "URL of the Raspberry Pi archive (firmware, kernels, raspi-config); needed with `TARGET_RASPI=1` and `RASPI_FIRMWARE=raspberrypi`, with its key in `stages/stage0/files/raspberrypi-archive-keyring.gpg`."),
    var("RASPBIAN_SERVER", Text, Unset, "URL of the Raspbian archive; needed with `PREFER_RASPI_SOURCE=1`, with its key in `stages/stage0/files/raspberrypi.gpg`."),
    var("IS_TESTING", Flag, Computed("`0` for known releases, `1` otherwise"), "`1`: write testing-style apt sources."),
    var("PREFER_RASPI_SOURCE", Flag, Value("0"), "`1` with `TARGET_RASPI=1` and `armhf`: bootstrap from the Raspbian archive."),
    var("USE_RASPI_SOURCE", Flag, Forced("`1` iff `PREFER_RASPI_SOURCE=1`, `TARGET_RASPI=1`, `TARGET_ARCH=armhf`"), "Derived; read by stage scripts."),
    var("INSTALL_RECOMMENDS", Flag, Value("0"), "`1`: `NN-packages` lists install recommended packages (not with `REDUCED_FOOTPRINT=1`)."),
    var("REDUCED_FOOTPRINT", Flag, Value("0"), "`1`: no recommends, no docs, man pages or most locales."),
    var("APT_PROXY", Text, Unset, "HTTP proxy for apt while building (e.g. apt-cacher-ng); never left in the image."),
    // Stage storage.
    var("STAGE_STORE", Choice(&["qcow2", "dir"]), Value("qcow2"), "Where stage root filesystems live: `qcow2` image chain or plain `dir`ectories."),
    var("QCOW2_ATTACH", Choice(&["auto", "nbd", "fuse"]), Value("auto"), "How qcow2 images are attached: `nbd`, `fuse` (qemu-storage-daemon + loop), or `auto` (nbd when the kernel has it)."),
    var("USE_QCOW2", Flag, Forced("`1` when `STAGE_STORE=qcow2`"), "Derived; read by stage scripts."),
    var("CLEAN", Flag, Forced("`1`"), "Always `1` (as in the original); read by stage scripts."),
    var("BASE_QCOW2_SIZE", Size, Value("15200M"), "Virtual size of the stage images (the most a stage's root filesystem can hold)."),
    // Disk layout.
    var("BOOT_FSTYPE", Choice(BOOT_FSTYPES), Value("vfat"), "Boot partition filesystem: `vfat` (required for Raspberry Pi), `ext2`, `ext4` or `xfs`."),
    var("FAT_CODEPAGE", Text, Value("437"), "Code page of FAT filesystems."),
    var("BOOT_FSOPTIONS", Text, Computed("`rw,noatime,fmask=0022,dmask=0022,codepage=FAT_CODEPAGE,iocharset=ascii,shortname=mixed,errors=remount-ro`"), "Mount options of the boot partition."),
    var("BOOT_SIZE", Size, Value("256M"), "Size of the boot partition."),
    var("ROOT_MARGIN", Text, Value("10%+128M"), "Free space added to the root filesystem's content: `N%`, a size, or `N%+SIZE`."),
    var("GPT_BIOS_UEFI", Flag, Value("0"), "`1`: PC image with GPT, bootable by BIOS and UEFI (not with `TARGET_RASPI=1`)."),
    var("UEFI_ARCH", Choice(&["x86_64", "i386"]), Computed("`x86_64` for amd64, `i386` for i386 when `GPT_BIOS_UEFI=1`"), "GRUB EFI target."),
    var("ROOTFS_RO", Flag, Value("0"), "`1`: read-only squashfs root with tmpfs overlays."),
    var("ROOTFS_RO_OVERLAY_TMPFS_SIZE", Size, Value("128M"), "Size of the tmpfs holding the overlays with `ROOTFS_RO=1` (a size or `N%`)."),
    // Misc.
    var("USE_QEMU", Flag, Value("0"), "`1`: image for QEMU (`-qemu` suffix, udev rules, `.qcow2` output)."),
    var("NOOBS_NAME", Text, Unset, "Set by `EXPORT_NOOBS`."),
    var("NOOBS_DESCRIPTION", Text, Unset, "Set by `EXPORT_NOOBS`."),
    // Stage selection.
    var("STAGE_LIST", List, Computed("every `stage*` directory of `BASE_DIR/stages`, sorted"), "Stages to run, in order; names are looked up in `BASE_DIR/stages`, paths may be absolute."),
    var("SKIP_STAGE_LIST", List, Value(""), "Stages not to rebuild (their existing images are reused)."),
    var("SKIP_IMAGES_LIST", List, Value(""), "Stages not to export."),
];

pub fn lookup(name: &str) -> Option<&'static VarDef> {
    VARS.iter().find(|v| v.name == name)
}

/// Variables the tool sets while running stages; a config may not set them, but their names
/// are known (so they do not trigger "did you mean").
pub const RUNTIME_VARS: &[&str] = &[
    "BASE_DIR",
    "SCRIPT_DIR",
    "STAGE",
    "STAGE_DIR",
    "STAGE_WORK_DIR",
    "ROOTFS_DIR",
    "PREV_STAGE",
    "PREV_STAGE_DIR",
    "PREV_ROOTFS_DIR",
    "EXPORT_DIR",
    "EXPORT_ROOTFS_DIR",
    "QUILT_PATCHES",
    "QUILT_NO_DIFF_INDEX",
    "QUILT_NO_DIFF_TIMESTAMPS",
    "QUILT_REFRESH_ARGS",
    "DEBIAN_FRONTEND",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, v) in VARS.iter().enumerate() {
            assert!(
                VARS[i + 1..].iter().all(|w| w.name != v.name),
                "{} twice",
                v.name
            );
        }
    }
}

/// The README's variable table, generated from `VARS` so the two cannot drift apart.
pub fn markdown_table() -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for v in VARS {
        let default = match v.default {
            DefaultRule::Unset => "unset".to_string(),
            DefaultRule::Value("") => "empty".to_string(),
            DefaultRule::Value(s) => format!("`{s}`"),
            DefaultRule::Computed(s) | DefaultRule::Forced(s) => s.to_string(),
        };
        out += &format!(
            "| `{}` | {} | {} |\n",
            v.name,
            default,
            v.doc.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod readme_tests {
    /// README.md carries `markdown_table()` between markers; `PIGEN_UPDATE_README=1 cargo test`
    /// rewrites it after a change to the table.
    #[test]
    fn readme_lists_every_variable() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- vars:begin -->\n", "<!-- vars:end -->");
        let start = readme.find(begin).expect("README has a vars:begin marker") + begin.len();
        let stop = readme.find(end).expect("README has a vars:end marker");
        let table = super::markdown_table();
        if std::env::var_os("PIGEN_UPDATE_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], table, &readme[stop..]);
            std::fs::write(path, updated).unwrap();
            return;
        }
        assert_eq!(
            &readme[start..stop],
            table,
            "README variable table is stale: run PIGEN_UPDATE_README=1 cargo test"
        );
    }
}
