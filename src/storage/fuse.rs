//! Attaching a qcow2 image without the nbd module: `qemu-storage-daemon` exports the image's
//! contents as one regular file through FUSE (a regular file as mount point, writable,
//! discards passed through), which the caller binds to a loop device (`loopdev`, autoclear).
//!
//! The daemon is our child, started with `kill_with_parent` and in its own mount namespace
//! (see `Cmd::own_mount_namespace` for the kernel hang that avoids): its FUSE mount exists only
//! there, and we reach the export as `/proc/<daemon>/root/<mount point>`. When the daemon
//! exits, by `stop` or by being killed, its namespace and the FUSE mount go with it; nothing
//! of it is ever mounted in ours. `stop` detaches a loop device still bound to the export,
//! then asks the daemon to exit (it flushes the image first).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{loopdev, mounts};
use crate::exec::cmd::{Background, LogSink};
use crate::exec::Cmd;

/// How long the daemon may take to show its export.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to flush and exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(60);

/// `qemu-storage-daemon` arguments exporting `image` (qcow2, discards and zero writes turned
/// into unmapped clusters) at the regular file `mount_point`, writable.
pub fn daemon_argv(image: &Path, mount_point: &Path) -> Vec<OsString> {
    let mut file_node = OsString::from("driver=file,node-name=file,discard=unmap,filename=");
    file_node.push(escape_option(image));
    let mut export = OsString::from("type=fuse,id=export,node-name=image,writable=on,mountpoint=");
    export.push(escape_option(mount_point));
    vec![
        "--blockdev".into(),
        file_node,
        "--blockdev".into(),
        "driver=qcow2,node-name=image,file=file,discard=unmap,detect-zeroes=unmap".into(),
        "--export".into(),
        export,
    ]
}

/// QEMU option values separate by `,`; a literal comma is written `,,`.
pub fn escape_option(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// The number `/proc` knows our child `child` by. It differs from the pid we got back from
/// spawning it when we run in a PID namespace of our own but see a /proc mounted for an outer
/// one (`unshare --pid --fork` without `--mount-proc`): find the process whose innermost pid
/// (last `NSpid` field) is `child` and whose parent is us.
pub fn proc_pid_of_child(child: u32) -> anyhow::Result<u32> {
    let me: u32 = std::fs::read_link("/proc/self")
        .context("reading /proc/self")?
        .to_string_lossy()
        .parse()
        .context("parsing /proc/self")?;
    let status_field = |status: &str, name: &str| -> Option<Vec<u32>> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(
            line[name.len()..]
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect(),
        )
    };
    let own = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap_or_default();
    if status_field(&own, "NSpid:").is_some_and(|pids| pids.len() == 1) {
        return Ok(child); // /proc is our PID namespace's: numbers agree
    }
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let innermost = status_field(&status, "NSpid:").and_then(|p| p.last().copied());
        let parent = status_field(&status, "PPid:").and_then(|p| p.first().copied());
        if innermost == Some(child) && parent == Some(me) {
            return Ok(pid);
        }
    }
    bail!("cannot find our child process {child} in /proc")
}

/// `/proc/<pid>/root/<path>`: `path` as process `pid` sees it, in its mount namespace.
pub fn path_in(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// An image exported as a regular file by a running qemu-storage-daemon.
#[derive(Debug)]
pub struct FuseExport {
    image: PathBuf,
    /// The mount point file, canonical, as the daemon sees it.
    mount_point: PathBuf,
    /// The export as we reach it: `/proc/<daemon>/root/<mount point>`.
    file: PathBuf,
    /// The daemon's number in /proc.
    proc_pid: u32,
    daemon: Option<Background>,
    /// The loop device bound to the export, detached before the daemon stops.
    loop_device: Option<PathBuf>,
    log: LogSink,
}

impl FuseExport {
    /// Creates the mount point file `mount_point` (replacing a stale one), starts the daemon
    /// in its own mount namespace and waits until the export is mounted there.
    pub fn start(image: &Path, mount_point: &Path, log: &LogSink) -> anyhow::Result<FuseExport> {
        mounts::remove_all(mount_point)?;
        std::fs::File::create(mount_point)
            .with_context(|| format!("creating the FUSE mount point {}", mount_point.display()))?;
        let mount_point = mounts::canonical(mount_point)?;
        let daemon = Cmd::new("qemu-storage-daemon")
            .args(daemon_argv(image, &mount_point))
            .kill_with_parent()
            .own_mount_namespace(&mounts::block_device_mounts()?)
            .spawn(log)?;
        let proc_pid = proc_pid_of_child(daemon.pid())?;
        let mut export = FuseExport {
            image: image.to_path_buf(),
            file: path_in(proc_pid, &mount_point),
            proc_pid,
            mount_point,
            daemon: Some(daemon),
            loop_device: None,
            log: log.clone(),
        };
        export.wait_ready(READY_TIMEOUT)?;
        Ok(export)
    }

    /// Binds a loop device (autoclear) to the export; `stop` makes sure it is gone.
    pub fn attach_loop(&mut self) -> anyhow::Result<loopdev::LoopDevice> {
        let device = loopdev::LoopDevice::attach(&self.file, &self.mount_point)?;
        self.loop_device = Some(device.path().to_path_buf());
        Ok(device)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let daemon = self.daemon.as_mut().expect("daemon");
            if let Some(status) = daemon.try_wait() {
                let err = daemon.error(format!(
                    "{} before exporting {}",
                    Background::describe(status),
                    self.image.display()
                ));
                self.cleanup_quietly();
                return Err(err.into());
            }
            // The export is mounted in the daemon's namespace, so look there.
            let mountinfo =
                std::fs::read(format!("/proc/{}/mountinfo", self.proc_pid)).unwrap_or_default();
            let mounted = mounts::parse_mountinfo(&mountinfo)
                .iter()
                .any(|m| m.mount_point == self.mount_point && m.fs_type.starts_with("fuse"));
            if mounted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let err = daemon.error(format!(
                    "no FUSE export at {} after {}s",
                    self.mount_point.display(),
                    timeout.as_secs()
                ));
                self.cleanup_quietly();
                return Err(err.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The regular file holding the image's contents, as we reach it.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Detaches the loop device if it is still bound, stops the daemon (it flushes the image;
    /// its namespace and FUSE mount end with it) and deletes the mount point file.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner(false)
    }

    fn stop_inner(&mut self, quiet: bool) -> anyhow::Result<()> {
        let Some(mut daemon) = self.daemon.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if let Some(device) = self.loop_device.take() {
            if let Err(e) = detach_loop(&device, &self.log) {
                problems.push(format!("{e:#}"));
            }
        }
        if let Err(e) = daemon.stop(STOP_GRACE) {
            problems.push(format!(
                "{e} (the image {} may have lost its last writes)",
                self.image.display()
            ));
        }
        drop(daemon);
        if let Err(e) = mounts::remove_all(&self.mount_point) {
            problems.push(format!("{e:#}"));
        }
        if problems.is_empty() || quiet {
            Ok(())
        } else {
            bail!(
                "detaching {}: {}",
                self.image.display(),
                problems.join("; ")
            )
        }
    }

    fn cleanup_quietly(&mut self) {
        let _ = self.stop_inner(true);
    }
}

impl Drop for FuseExport {
    fn drop(&mut self) {
        self.cleanup_quietly();
    }
}

/// Waits briefly for an autoclear loop device to go (its mount was just unmounted), then
/// detaches it if it is still bound (`losetup --detach` on a busy device only marks it to go
/// when its last user does).
fn detach_loop(device: &Path, log: &LogSink) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while loopdev::is_bound(device) {
        if Instant::now() >= deadline {
            Cmd::new("losetup")
                .arg("--detach")
                .arg(device)
                .output(log)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_argv_is_exact() {
        let argv = daemon_argv(
            Path::new("/w/image-stage1.qcow2"),
            Path::new("/w/image-stage1.fuse"),
        );
        assert_eq!(
            argv,
            [
                "--blockdev",
                "driver=file,node-name=file,discard=unmap,filename=/w/image-stage1.qcow2",
                "--blockdev",
                "driver=qcow2,node-name=image,file=file,discard=unmap,detect-zeroes=unmap",
                "--export",
                "type=fuse,id=export,node-name=image,writable=on,mountpoint=/w/image-stage1.fuse",
            ]
        );
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let argv = daemon_argv(Path::new("/w,x/i.qcow2"), Path::new("/w,x/i.fuse"));
        assert!(argv[1]
            .to_str()
            .unwrap()
            .ends_with("filename=/w,,x/i.qcow2"));
        assert!(argv[5]
            .to_str()
            .unwrap()
            .ends_with("mountpoint=/w,,x/i.fuse"));
    }

    #[test]
    fn our_children_are_found_in_proc() {
        let child = Cmd::new("sleep")
            .arg("10")
            .spawn(&LogSink::default())
            .unwrap();
        assert_eq!(proc_pid_of_child(child.pid()).unwrap(), child.pid());
    }

    #[test]
    fn paths_in_another_namespace() {
        assert_eq!(
            path_in(42, Path::new("/w/image-stage0.fuse")),
            Path::new("/proc/42/root/w/image-stage0.fuse")
        );
    }
}
