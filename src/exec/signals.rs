//! Signals during a build. The build process is PID 1 of its own PID namespace, where a signal
//! without a handler is ignored, so it installs handlers: the first SIGINT/SIGTERM/SIGHUP is
//! recorded and passed on to the running step's process group; the executor then stops, cleans
//! up and exits (130 for SIGINT).

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

static RECEIVED: AtomicI32 = AtomicI32::new(0);
static STEP_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let group = STEP_GROUP.load(Ordering::SeqCst);
    if group > 0 {
        // kill(2) is async-signal-safe.
        unsafe { nix::libc::kill(-group, sig) };
    }
}

/// Installs the handlers (in the build process).
pub fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        unsafe { signal::sigaction(sig, &action) }?;
    }
    Ok(())
}

/// The first stop signal received, if any.
pub fn received() -> Option<Signal> {
    Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
}

/// While a step runs in its own process group, stop signals are forwarded to it.
pub fn set_step_group(pid: Option<Pid>) {
    STEP_GROUP.store(pid.map_or(0, Pid::as_raw), Ordering::SeqCst);
    // A signal that came just before the group was registered must still reach it.
    if let (Some(pid), Some(sig)) = (pid, received()) {
        let _ = signal::killpg(pid, sig);
    }
}
