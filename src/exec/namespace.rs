//! The build runs in its own mount namespace (propagation private) and its own PID namespace,
//! as PID 1 there, tied to the pigen the user started by a parent-death signal. Every mount it
//! makes (stage images, chroot binds, FUSE exports) exists only in that namespace; when the
//! build ends — normally, by error, Ctrl-C, SIGTERM or SIGKILL of the outer pigen — the kernel
//! kills every process of the namespace, the mounts go with it and autoclear loop devices
//! detach. (design.md: a mount namespace alone is not enough; one surviving child keeps it.)

use std::ffi::OsString;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::cmd::{Cmd, LogSink};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: i32) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        unsafe { nix::libc::kill(child, sig) };
    }
}

/// Runs this program again with `args` as PID 1 of fresh mount and PID namespaces and waits
/// for it. Returns its exit code (128 + signal when killed). SIGINT is left to the build (the
/// terminal sends it to both); SIGTERM and SIGHUP are forwarded to it.
pub fn run_isolated(args: &[OsString], env: &[(String, String)]) -> anyhow::Result<i32> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID).context(
        "creating the build's private mount and PID namespaces (pigen build must run as root)",
    )?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making the build's mounts private")?;
    let exe = std::env::current_exe().context("finding the pigen executable")?;
    let mut cmd = Cmd::new(exe).args(args).kill_with_parent();
    for (name, value) in env {
        cmd = cmd.env(name, value);
    }
    unsafe {
        signal::sigaction(
            Signal::SIGINT,
            &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
        )?;
        let fwd = SigAction::new(
            SigHandler::Handler(forward),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        signal::sigaction(Signal::SIGTERM, &fwd)?;
        signal::sigaction(Signal::SIGHUP, &fwd)?;
    }
    let mut child = cmd.spawn_interactive(&LogSink::default())?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait().context("waiting for the build")?;
    CHILD.store(0, Ordering::SeqCst);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// In the build process (PID 1 of the namespace): handle stop signals.
pub fn init_build_process() -> anyhow::Result<()> {
    super::signals::install().context("installing signal handlers")?;
    Ok(())
}
