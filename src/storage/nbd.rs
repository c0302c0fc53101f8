//! Attaching a qcow2 image through the kernel's nbd driver: `qemu-nbd --connect=/dev/nbdN`,
//! kept in the foreground (`--verbose`) as our child so it dies with pigen, discards and zero
//! writes unmapping clusters in the image.
//!
//! A free device is one whose `/sys/block/nbdN/size` is 0 (and that has no `pid` file). Picking
//! one and connecting it happen under an exclusive lock on a file in /run/lock, so two pigen
//! builds cannot take the same device.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::exec::cmd::{Background, LogSink};
use crate::exec::Cmd;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_GRACE: Duration = Duration::from_secs(60);
const LOCK_FILE: &str = "pigen-nbd.lock";

/// Whether this kernel gives us nbd devices: `/dev/nbd0` exists.
pub fn device_present() -> bool {
    Path::new("/dev/nbd0").exists()
}

/// `qemu-nbd` arguments connecting `image` (qcow2) to `device`, in the foreground.
pub fn connect_argv(device: &Path, image: &Path) -> Vec<OsString> {
    let mut connect = OsString::from("--connect=");
    connect.push(device);
    vec![
        connect,
        "--format=qcow2".into(),
        "--discard=unmap".into(),
        "--detect-zeroes=unmap".into(),
        // Without --verbose, --connect forks into the background and we would lose the process.
        "--verbose".into(),
        image.as_os_str().to_owned(),
    ]
}

pub fn disconnect_argv(device: &Path) -> Vec<OsString> {
    vec!["--disconnect".into(), device.as_os_str().to_owned()]
}

/// The first free `nbdN` (lowest N) under `sys_block` (normally `/sys/block`), skipping `taken`.
pub fn free_device(sys_block: &Path, taken: &[String]) -> Option<String> {
    let mut candidates: Vec<(u32, String)> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let n = name.strip_prefix("nbd")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| !taken.contains(name))
        .find(|name| {
            let dir = sys_block.join(name);
            let size = std::fs::read_to_string(dir.join("size")).unwrap_or_default();
            size.trim() == "0" && !dir.join("pid").exists()
        })
}

fn lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = [Path::new("/run/lock"), Path::new("/run"), Path::new("/tmp")]
        .into_iter()
        .find(|d| d.is_dir())
        .unwrap_or(Path::new("/tmp"));
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))
}

/// An image connected to `/dev/nbdN` by a running qemu-nbd.
#[derive(Debug)]
pub struct NbdDevice {
    image: PathBuf,
    device: PathBuf,
    name: String,
    daemon: Option<Background>,
    log: LogSink,
}

impl NbdDevice {
    pub fn connect(image: &Path, log: &LogSink) -> anyhow::Result<NbdDevice> {
        let _lock = lock()?;
        let mut tried = Vec::new();
        let mut last_error = None;
        for _ in 0..3 {
            let Some(name) = free_device(Path::new("/sys/block"), &tried) else {
                break;
            };
            tried.push(name.clone());
            let device = PathBuf::from("/dev").join(&name);
            // Its own mount namespace, like qemu-storage-daemon's (see Cmd::own_mount_namespace).
            let daemon = Cmd::new("qemu-nbd")
                .args(connect_argv(&device, image))
                .kill_with_parent()
                .own_mount_namespace(&super::mounts::block_device_mounts()?)
                .spawn(log)?;
            let mut nbd = NbdDevice {
                image: image.to_path_buf(),
                device,
                name,
                daemon: Some(daemon),
                log: log.clone(),
            };
            match nbd.wait_ready(READY_TIMEOUT) {
                Ok(()) => return Ok(nbd),
                // Someone else took the device between our look and qemu-nbd's: try the next.
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(e) => Err(e),
            None => bail!(
                "no free nbd device (every /sys/block/nbd* is in use{}); load the module with more devices (modprobe nbd nbds_max=32) or set QCOW2_ATTACH=fuse",
                if tried.is_empty() { " or there is none" } else { "" }
            ),
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let sys = Path::new("/sys/block").join(&self.name);
        loop {
            let daemon = self.daemon.as_mut().expect("daemon");
            if let Some(status) = daemon.try_wait() {
                let err = daemon.error(format!(
                    "{} before connecting {} to {}",
                    Background::describe(status),
                    self.image.display(),
                    self.device.display()
                ));
                self.daemon = None;
                return Err(err.into());
            }
            // The size is set first; the `pid` attribute appears once the kernel has started
            // the device (NBD_DO_IT), from when on I/O is served.
            let size = std::fs::read_to_string(sys.join("size")).unwrap_or_default();
            if !matches!(size.trim(), "" | "0") && sys.join("pid").exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let err = daemon.error(format!(
                    "{} not connected after {}s",
                    self.device.display(),
                    timeout.as_secs()
                ));
                self.cleanup_quietly();
                return Err(err.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Disconnects the device; qemu-nbd then flushes the image and exits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner(false)
    }

    fn stop_inner(&mut self, quiet: bool) -> anyhow::Result<()> {
        let Some(mut daemon) = self.daemon.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if let Err(e) = Cmd::new("qemu-nbd")
            .args(disconnect_argv(&self.device))
            .output(&self.log)
        {
            problems.push(e.to_string());
        }
        if daemon.wait_timeout(STOP_GRACE).is_none() {
            if let Err(e) = daemon.stop(Duration::from_secs(5)) {
                problems.push(format!(
                    "{e} (the image {} may have lost its last writes)",
                    self.image.display()
                ));
            }
        }
        if problems.is_empty() || quiet {
            Ok(())
        } else {
            bail!(
                "detaching {} from {}: {}",
                self.image.display(),
                self.device.display(),
                problems.join("; ")
            )
        }
    }

    fn cleanup_quietly(&mut self) {
        let _ = self.stop_inner(true);
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        self.cleanup_quietly();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_exact() {
        assert_eq!(
            connect_argv(Path::new("/dev/nbd3"), Path::new("/w/image-stage2.qcow2")),
            [
                "--connect=/dev/nbd3",
                "--format=qcow2",
                "--discard=unmap",
                "--detect-zeroes=unmap",
                "--verbose",
                "/w/image-stage2.qcow2",
            ]
        );
        assert_eq!(
            disconnect_argv(Path::new("/dev/nbd3")),
            ["--disconnect", "/dev/nbd3"]
        );
    }

    #[test]
    fn free_device_is_the_lowest_unused() {
        let sys = tempfile::tempdir().unwrap();
        let dev = |name: &str, size: &str, pid: bool| {
            let dir = sys.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("size"), format!("{size}\n")).unwrap();
            if pid {
                std::fs::write(dir.join("pid"), "123\n").unwrap();
            }
        };
        dev("loop0", "0", false);
        dev("nbd0", "31457280", true);
        dev("nbd1", "0", true); // connecting right now
        dev("nbd10", "0", false);
        dev("nbd2", "0", false);
        assert_eq!(free_device(sys.path(), &[]).as_deref(), Some("nbd2"));
        assert_eq!(
            free_device(sys.path(), &["nbd2".into()]).as_deref(),
            Some("nbd10")
        );
        assert_eq!(
            free_device(sys.path(), &["nbd2".into(), "nbd10".into()]),
            None
        );
        assert_eq!(free_device(&sys.path().join("missing"), &[]), None);
    }
}
