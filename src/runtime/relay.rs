//! The caller's terminal while a sandboxed process runs, as one poll loop sees it: the
//! pty relay (`-t`), or the pipes that stand in for the terminals among fds 0-2. The
//! supervisor and `sbx exec` both relay through this.

use std::os::fd::{BorrowedFd, OwnedFd};

use anyhow::{Context, Result};

use super::poll::{Poller, Ready};
use super::stdio::{PipeEnd, PipeRelay};
use super::tty::Relay;

/// The terminal's descriptors, as a poll round names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFd {
    /// The pty's master side: the command's output.
    Master,
    /// The caller's terminal, for the pty.
    Stdin,
    /// One of the pipes for fds 0-2.
    Pipe(PipeEnd),
}

#[derive(Default)]
pub struct Relays {
    pty: Option<Relay>,
    pipes: Option<PipeRelay>,
}

impl Relays {
    pub fn new(pty: Option<Relay>, pipes: Option<PipeRelay>) -> Relays {
        Relays { pty, pipes }
    }

    /// The command's terminal came: relay it from now on.
    pub fn start_pty(&mut self, master: OwnedFd) -> Result<()> {
        self.pty = Some(Relay::start(master).context("setting up the terminal")?);
        Ok(())
    }

    /// Adds this round's descriptors to `poller`, each named by `name`.
    pub fn watch<'a, S: Copy + PartialEq>(
        &'a self,
        poller: &mut Poller<'a, S>,
        name: impl Fn(RelayFd) -> S + Copy,
    ) {
        if let Some(pty) = &self.pty {
            poller.read(name(RelayFd::Master), pty.master());
            if pty.stdin_open() {
                // SAFETY: fd 0 is open for the life of the process.
                let stdin = unsafe { BorrowedFd::borrow_raw(0) };
                poller.read(name(RelayFd::Stdin), stdin);
            }
        }
        if let Some(pipes) = &self.pipes {
            pipes.watch(poller, move |end| name(RelayFd::Pipe(end)));
        }
    }

    /// Moves bytes for the descriptors `watch` added that are `ready`.
    pub fn pump<S: Copy + PartialEq>(&mut self, ready: &Ready<S>, name: impl Fn(RelayFd) -> S) {
        if let Some(pty) = &mut self.pty {
            if ready.contains(name(RelayFd::Master)) {
                // False once the command's side is closed; its exit is still to come.
                pty.pump_output();
            }
            if ready.contains(name(RelayFd::Stdin)) {
                pty.pump_input();
            }
        }
        if let Some(pipes) = &mut self.pipes {
            pipes.pump(ready, |end| name(RelayFd::Pipe(end)));
        }
    }

    /// SIGWINCH: the caller's window changed size.
    pub fn resize(&self) {
        if let Some(pty) = &self.pty {
            pty.resize();
        }
    }

    /// The process has ended: copy what is still buffered, give the caller's terminal
    /// back, and let go of every pipe.
    pub fn finish(mut self) {
        if let Some(mut pty) = self.pty.take() {
            pty.drain();
        }
        if let Some(pipes) = self.pipes.take() {
            pipes.finish();
        }
    }
}
