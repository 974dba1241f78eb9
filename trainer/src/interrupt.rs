//! SIGTERM — what Slurm sends on preemption, on `scancel`, and with `--signal=TERM@secs`
//! before the time limit — asks a running stage to stop at its next step boundary with a
//! checkpoint, so `--resume auto` continues without losing a step. A second SIGTERM
//! terminates at once.
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    // signal() is async-signal-safe; the next SIGTERM takes the default action.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) };
}

/// Routes SIGTERM to [`requested`] (stages call this; other commands keep the default).
pub fn install() {
    unsafe { libc::signal(libc::SIGTERM, on_term as extern "C" fn(libc::c_int) as libc::sighandler_t) };
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The error a stage stops with once `checkpoint` is saved (see `run_ckpt::stop`).
pub fn stopped(stage: &str, step: u64, checkpoint: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!("{stage}: stopped by SIGTERM after step {step}; checkpoint {} is complete; rerun with --resume auto to continue", checkpoint.display())
}
