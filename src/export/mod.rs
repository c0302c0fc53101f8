//! Export: the disk image assembled from an export tree, without mounting any filesystem.
//!
//! * [`layout`]: partition table, sizes and identifiers (pure);
//! * [`measure`]: what the tree needs (a walk);
//! * [`fs`]: filesystems written at an offset inside the image file (mkfs.ext4 -d, mkfs.fat +
//!   mcopy, mke2fs -d, mkfs.xfs -p) and the PARTUUIDs written into fstab and cmdline.txt;
//! * [`grub`]: GRUB for PC images (BIOS boot code and core image, EFI removable image);
//! * [`image`]: [`image::assemble`], all of it in order, checked.

pub mod fs;
pub mod grub;
pub mod image;
pub mod layout;
pub mod measure;

/// How far a long step (mkfs.ext4 -d, mcopy) got: `done` of `total` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress<'a> {
    pub phase: &'a str,
    pub done: u64,
    pub total: u64,
}

/// Receives [`Progress`] reports, from another thread while a tool runs.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress<'_>) + Sync);
