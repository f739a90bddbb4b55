//! Ctrl-C during training: the first SIGINT sets a flag the training loop polls (it then saves a
//! checkpoint and stops); the handler restores the default action, so a second Ctrl-C kills the
//! process at once. No extra crate: `signal` comes from the C library std already links.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
mod sys {
    pub const SIGINT: i32 = 2;
    pub const SIG_DFL: usize = 0;
    extern "C" {
        pub fn signal(signum: i32, handler: usize) -> usize;
    }
}

#[cfg(unix)]
extern "C" fn on_sigint(_: i32) {
    STOP.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; restoring the default makes a second Ctrl-C fatal.
    unsafe {
        sys::signal(sys::SIGINT, sys::SIG_DFL);
    }
}

/// Installs the handler (a no-op on non-Unix targets).
pub fn install() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic and calls signal(), both async-signal-safe.
    unsafe {
        sys::signal(sys::SIGINT, on_sigint as extern "C" fn(i32) as usize);
    }
}

/// True once Ctrl-C was pressed.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
