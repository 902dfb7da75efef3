//! The signals the runtime forwards, and the one way to build a set of them and read them
//! from a signalfd.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals passed on to the command: by the supervisor to init, by init to the command,
/// by `sbx exec` to the process it started.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The forwarded signals and `extra` (SIGCHLD to reap, SIGWINCH to resize a terminal).
pub fn set(extra: &[Signal]) -> SigSet {
    let mut set = SigSet::empty();
    for sig in FORWARDED.iter().chain(extra) {
        set.add(*sig);
    }
    set
}

/// A non-blocking, close-on-exec signalfd for `set`, whose signals must be blocked.
pub fn signalfd(set: &SigSet) -> Result<SignalFd> {
    SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).context("signalfd")
}

/// Every signal waiting in `fd`, oldest first. An error is returned only when it comes
/// before any signal was read.
pub fn pending(fd: &SignalFd) -> Result<Vec<Signal>> {
    let mut signals = Vec::new();
    loop {
        match fd.read_signal() {
            Ok(Some(info)) => signals.extend(Signal::try_from(info.ssi_signo as i32).ok()),
            Ok(None) => return Ok(signals),
            Err(e) if signals.is_empty() => return Err(e).context("reading signalfd"),
            Err(_) => return Ok(signals),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_holds_the_forwarded_signals_and_the_extras() {
        let s = set(&[Signal::SIGCHLD]);
        assert!(s.contains(Signal::SIGTERM) && s.contains(Signal::SIGCHLD));
        assert!(!s.contains(Signal::SIGWINCH));
    }
}
