//! Stop requests during training: Ctrl-C (SIGINT), SIGTERM (what job schedulers send before
//! they kill) and SIGHUP (the terminal went away). The first of them sets a flag the training
//! loop polls (it then saves a checkpoint and exits with 128 + the signal number); the handler
//! restores the default actions, so a second signal kills the process at once. No extra crate:
//! `signal` comes from the C library std already links.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Signal numbers (the same on Linux and macOS).
pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;
#[cfg(unix)]
const HANDLED: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

#[cfg(unix)]
mod sys {
    pub const SIG_DFL: usize = 0;
    extern "C" {
        pub fn signal(signum: i32, handler: usize) -> usize;
    }
}

#[cfg(unix)]
extern "C" fn on_signal(sig: i32) {
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; restoring the defaults makes a second signal fatal.
    unsafe {
        for s in HANDLED {
            sys::signal(s, sys::SIG_DFL);
        }
    }
}

/// Installs the handler (a no-op on non-Unix targets).
pub fn install() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic and calls signal(), both async-signal-safe.
    unsafe {
        for s in HANDLED {
            sys::signal(s, on_signal as extern "C" fn(i32) as usize);
        }
    }
}

/// The signal that asked to stop, once one arrived.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// How a signal is named to the user.
pub fn name(sig: i32) -> String {
    match sig {
        SIGINT => "Ctrl-C".into(),
        SIGTERM => "SIGTERM".into(),
        SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}
