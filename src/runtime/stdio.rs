//! The caller's terminal stays outside: without a pty of the sandbox's own, each of
//! stdin, stdout and stderr that is a terminal reaches the command as a pipe that sbx
//! relays, never as the terminal itself.
//!
//! A terminal fd inside a sandbox outlives the command that got it: a process that forked,
//! called `setsid` and kept the fd reads what the user types into the shell after sbx has
//! returned, and writes into that shell's screen (or passes the fd on with SCM_RIGHTS). A
//! pipe of sbx's ends with the relay: once sbx stops relaying, whatever in the sandbox
//! kept its end reads EOF and writes into a pipe with no reader.
//!
//! Non-terminals (files, the caller's own pipes, /dev/null) are passed as they are.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;

use super::poll::{Poller, Ready};

/// Pipes made for the terminals among fds 0-2, before the fork or clone.
pub struct TerminalPipes {
    /// The command's ends and the fd each becomes in it.
    theirs: Vec<(OwnedFd, RawFd)>,
    relay: PipeRelay,
}

impl TerminalPipes {
    /// `None` when none of stdin, stdout and stderr is a terminal.
    pub fn for_terminals() -> Result<Option<TerminalPipes>> {
        let tty = |fd: RawFd| {
            // SAFETY: fds 0-2 are open for the life of the process (or isatty says no).
            nix::unistd::isatty(unsafe { BorrowedFd::borrow_raw(fd) }).unwrap_or(false)
        };
        let (stdin, stdout, stderr) = (tty(0), tty(1), tty(2));
        if !(stdin || stdout || stderr) {
            return Ok(None);
        }
        let mut theirs = Vec::new();
        let mut relay = PipeRelay {
            input: None,
            pending: Vec::new(),
            outputs: Vec::new(),
        };
        if stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).context("pipe for stdin")?;
            // Ours only: the caller's terminal itself is never made non-blocking.
            fcntl(&w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("pipe for stdin")?;
            theirs.push((r, 0));
            relay.input = Some(w);
        }
        // Both on one terminal: one pipe, so their order on the screen is kept.
        let shared = stdout && stderr && same_file(1, 2);
        for (fd, is_tty) in [(1, stdout), (2, stderr && !shared)] {
            if !is_tty {
                continue;
            }
            let (r, w) = pipe2(OFlag::O_CLOEXEC).context("pipe for output")?;
            if shared {
                theirs.push((w.try_clone().context("dup")?, 2));
            }
            theirs.push((w, fd));
            relay.outputs.push((r, fd));
        }
        Ok(Some(TerminalPipes { theirs, relay }))
    }

    /// In the child, before its stray fds are closed: the pipes become its fds 0-2
    /// (`dup2` leaves them without close-on-exec; the originals have it).
    pub fn install(&self) -> io::Result<()> {
        for (fd, slot) in &self.theirs {
            crate::sys::dup_to(fd.as_fd(), *slot)?;
        }
        Ok(())
    }

    /// In the parent, after the fork or clone: our ends only.
    pub fn into_relay(self) -> PipeRelay {
        self.relay
    }
}

fn same_file(a: RawFd, b: RawFd) -> bool {
    let stat = |fd: RawFd| {
        // SAFETY: fds 1 and 2 are open for the life of the process (or fstat fails).
        nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(fd) })
            .map(|s| (s.st_dev, s.st_ino, s.st_rdev))
    };
    matches!((stat(a), stat(b)), (Ok(x), Ok(y)) if x == y)
}

/// sbx's ends: terminal input into the command's stdin pipe, its output pipes onto the
/// terminal.
pub struct PipeRelay {
    /// Write end of the command's stdin, until the terminal or the command closes it.
    input: Option<OwnedFd>,
    /// Read from the terminal, not yet taken by the pipe (which is full).
    pending: Vec<u8>,
    /// Read ends and the fd of ours each is copied to.
    outputs: Vec<(OwnedFd, RawFd)>,
}

/// The relay's descriptors, as a poll round names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// The caller's terminal, to read.
    Terminal,
    /// The command's stdin pipe, to write what the terminal gave and the pipe did not take.
    Input,
    /// The read end of the n-th output pipe.
    Output(usize),
}

impl PipeRelay {
    /// Adds the fds to watch this round, each named by `name`.
    pub fn watch<'a, S: Copy + PartialEq>(
        &'a self,
        poller: &mut Poller<'a, S>,
        name: impl Fn(PipeEnd) -> S,
    ) {
        if let Some(input) = &self.input {
            if self.pending.is_empty() {
                // SAFETY: fd 0 is open for the life of the process.
                let stdin = unsafe { BorrowedFd::borrow_raw(0) };
                poller.read(name(PipeEnd::Terminal), stdin);
            } else {
                poller.write(name(PipeEnd::Input), input.as_fd());
            }
        }
        for (i, (r, _)) in self.outputs.iter().enumerate() {
            poller.read(name(PipeEnd::Output(i)), r.as_fd());
        }
    }

    /// Moves bytes for the fds `watch` added that are `ready`.
    pub fn pump<S: Copy + PartialEq>(&mut self, ready: &Ready<S>, name: impl Fn(PipeEnd) -> S) {
        if ready.contains(name(PipeEnd::Terminal)) {
            self.read_terminal();
        }
        if ready.contains(name(PipeEnd::Input)) {
            self.feed();
        }
        let mut ended = Vec::new();
        for (i, (r, to)) in self.outputs.iter().enumerate() {
            if ready.contains(name(PipeEnd::Output(i))) && !copy_once(r.as_fd(), *to) {
                ended.push(i);
            }
        }
        for i in ended.into_iter().rev() {
            self.outputs.remove(i);
        }
    }

    fn read_terminal(&mut self) {
        let mut buf = [0u8; 4096];
        // SAFETY: fd 0 is open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        match nix::unistd::read(stdin, &mut buf) {
            // End of input (^D) closes the command's stdin; EIO: we lost the terminal.
            Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => self.input = None,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.feed();
            }
            Err(_) => {}
        }
    }

    fn feed(&mut self) {
        while !self.pending.is_empty() {
            let Some(input) = &self.input else {
                self.pending.clear();
                return;
            };
            match nix::unistd::write(input, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                // The command closed its stdin: stop reading the terminal for it.
                Err(_) => self.input = None,
            }
        }
    }

    /// The command has ended: copy what its output pipes hold now, then let go of every
    /// pipe. Whatever in the sandbox still holds an end reads EOF or writes into nothing.
    pub fn finish(mut self) {
        for (r, to) in &self.outputs {
            if fcntl(r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_err() {
                continue;
            }
            // Bounded: a process left behind may write without end.
            for _ in 0..256 {
                if !copy_once(r.as_fd(), *to) {
                    break;
                }
            }
        }
        self.outputs.clear();
        self.input = None;
    }
}

/// One read from `from`, written whole to our fd `to`; false at EOF or on an error.
fn copy_once(from: BorrowedFd, to: RawFd) -> bool {
    let mut buf = [0u8; 16384];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            // SAFETY: fds 1 and 2 are open for the life of the process.
            let out = unsafe { BorrowedFd::borrow_raw(to) };
            let _ = write_all(out, &buf[..n]);
            true
        }
        Err(Errno::EINTR) => true,
        Err(_) => false,
    }
}

fn write_all(fd: BorrowedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
