//! Loop devices set up by pigen itself (`LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`), with
//! autoclear: the kernel detaches the device when its last user (the mount) goes away.
//!
//! Why not `losetup` or `mount -o loop`: both canonicalize the backing file's path first. The
//! FUSE export lives in qemu-storage-daemon's own mount namespace and is reached as
//! `/proc/<pid>/root/<path>`; canonicalized, that becomes `<path>` in our namespace, the empty
//! mount point file under the export, and the loop device would be backed by the wrong file.
//! Opening the path ourselves follows `/proc/<pid>/root` into the daemon's namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// A loop device bound to a file, held open until `release` (or drop): after a mount has
/// opened it, releasing leaves the mount its only user, and unmounting then frees it.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    device: Option<File>,
}

impl LoopDevice {
    /// Binds a free loop device to `backing` (opened read-write), autoclear set. `name` is
    /// what the kernel reports as the backing file name where it cannot tell (`losetup -l`).
    pub fn attach(backing: &Path, name: &Path) -> anyhow::Result<LoopDevice> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing)
            .with_context(|| format!("opening {} for a loop device", backing.display()))?;
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(LOOP_CONTROL)
            .with_context(|| format!("opening {LOOP_CONTROL}"))?;
        let mut last_error = None;
        // Another process may take the free device between our two calls: try again.
        for _ in 0..10 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
                .context("finding a free loop device (LOOP_CTL_GET_FREE)")?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(device) => device,
                Err(e) => {
                    last_error =
                        Some(anyhow::Error::new(e).context(format!("opening {}", path.display())));
                    continue;
                }
            };
            let config = config(&file, name);
            // SAFETY: `config` is a valid, fully initialised `struct loop_config` that
            // outlives the call; the kernel only reads it.
            match unsafe { loop_configure(device.as_raw_fd(), &config) } {
                Ok(_) => {
                    return Ok(LoopDevice {
                        path,
                        device: Some(device),
                    })
                }
                Err(nix::errno::Errno::EBUSY) => continue,
                Err(e) => bail!(
                    "binding {} to {} (LOOP_CONFIGURE): {e}",
                    path.display(),
                    backing.display()
                ),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            anyhow::anyhow!("every free loop device was taken before we could bind it")
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets go of our handle: with nobody else using the device, it detaches now.
    pub fn release(&mut self) {
        self.device = None;
    }
}

fn config(file: &File, name: &Path) -> LoopConfig {
    use std::os::unix::ffi::OsStrExt;
    let mut file_name = [0u8; LO_NAME_SIZE];
    let bytes = name.as_os_str().as_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    file_name[..n].copy_from_slice(&bytes[..n]);
    LoopConfig {
        fd: file.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_AUTOCLEAR,
            lo_file_name: file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    }
}

/// Whether `/dev/loopN` (by path) is bound to a file.
pub fn is_bound(device: &Path) -> bool {
    let Some(name) = device.file_name() else {
        return false;
    };
    Path::new("/sys/block")
        .join(name)
        .join("loop/backing_file")
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn attach_a_file_and_autoclear_on_release() {
        if !nix::unistd::geteuid().is_root() || !Path::new(LOOP_CONTROL).exists() {
            eprintln!("SKIP attach_a_file_and_autoclear_on_release: needs root and {LOOP_CONTROL}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("disk.img");
        std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
        let mut device = LoopDevice::attach(&backing, &backing).unwrap();
        assert!(is_bound(device.path()));
        let size = std::fs::read_to_string(
            Path::new("/sys/block")
                .join(device.path().file_name().unwrap())
                .join("size"),
        )
        .unwrap();
        assert_eq!(size.trim(), "2048");
        let path = device.path().to_path_buf();
        device.release();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_bound(&path) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} not cleared",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
