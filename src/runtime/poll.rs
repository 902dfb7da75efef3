//! One `poll` round over descriptors that each have a name, so a loop asks "is the
//! channel ready?" rather than counting positions in an array.
//!
//! ```ignore
//! #[derive(Clone, Copy, PartialEq, Eq)]
//! enum Source { Signals, Channel }
//! let mut poller = Poller::new();
//! poller.read(Source::Signals, signals.as_fd());
//! poller.read(Source::Channel, chan.as_fd());
//! let ready = poller.wait(PollTimeout::NONE)?;
//! if ready.contains(Source::Signals) { /* ... */ }
//! ```

use std::os::fd::BorrowedFd;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// The descriptors to watch this round, each under the name `S` the caller gave it.
pub struct Poller<'fd, S> {
    fds: Vec<PollFd<'fd>>,
    sources: Vec<S>,
}

impl<'fd, S: Copy + PartialEq> Default for Poller<'fd, S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'fd, S: Copy + PartialEq> Poller<'fd, S> {
    pub fn new() -> Self {
        Poller {
            fds: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Watches `fd` for input (or hang-up, or an error) as `source`.
    pub fn read(&mut self, source: S, fd: BorrowedFd<'fd>) {
        self.add(source, fd, PollFlags::POLLIN);
    }

    /// Watches `fd` for room to write (or hang-up, or an error) as `source`.
    pub fn write(&mut self, source: S, fd: BorrowedFd<'fd>) {
        self.add(source, fd, PollFlags::POLLOUT);
    }

    fn add(&mut self, source: S, fd: BorrowedFd<'fd>, events: PollFlags) {
        self.fds.push(PollFd::new(fd, events));
        self.sources.push(source);
    }

    /// Waits up to `timeout` and names the sources with events; an interrupted wait
    /// (EINTR) is a round in which nothing is ready.
    pub fn wait(mut self, timeout: PollTimeout) -> Result<Ready<S>> {
        match nix::poll::poll(&mut self.fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let ready = self
            .fds
            .iter()
            .zip(&self.sources)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, source)| *source)
            .collect();
        Ok(Ready { sources: ready })
    }
}

/// The sources a round found ready; a source that was not watched is never among them.
#[derive(Debug)]
pub struct Ready<S> {
    sources: Vec<S>,
}

impl<S: Copy + PartialEq> Ready<S> {
    pub fn contains(&self, source: S) -> bool {
        self.sources.contains(&source)
    }

    pub fn iter(&self) -> impl Iterator<Item = S> + '_ {
        self.sources.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Source {
        Quiet,
        Written,
        Unwatched,
    }

    #[test]
    fn names_the_ready_sources() {
        let (quiet_r, _quiet_w) = nix::unistd::pipe().unwrap();
        let (written_r, written_w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&written_w, b"x").unwrap();
        let mut poller = Poller::new();
        poller.read(Source::Quiet, quiet_r.as_fd());
        poller.read(Source::Written, written_r.as_fd());
        let ready = poller.wait(PollTimeout::ZERO).unwrap();
        assert!(ready.contains(Source::Written));
        assert!(!ready.contains(Source::Quiet));
        assert!(!ready.contains(Source::Unwatched));
        assert_eq!(ready.iter().collect::<Vec<_>>(), [Source::Written]);
    }
}
