//! Fork and verdict: a child that does one job (a probe, a store writer inside a user
//! namespace) and reports only Ok or a message, through a close-on-exec pipe; its
//! namespaces and mounts die with it.
//!
//! ```ignore
//! // SAFETY: single-threaded here.
//! match unsafe { fork_verdict() }? {
//!     Forked::Child(verdict) => verdict.conclude(|| job()),
//!     Forked::Parent(mut child) => {
//!         let message = child.read(None);
//!         child.judge(message.unwrap_or_default())
//!     }
//! }
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

pub enum Forked {
    /// In the child: do the job and `conclude`.
    Child(Verdict),
    /// In the parent.
    Parent(VerdictChild),
}

/// Forks; the child gets the pipe's write end, the parent the read end.
///
/// # Safety
///
/// The caller must be single-threaded, so that the child may allocate and do anything.
pub unsafe fn fork_verdict() -> nix::Result<Forked> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the caller guarantees a single thread; the child never returns into the
    // caller's frames, since `conclude` ends it with _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(read);
            Ok(Forked::Child(Verdict { pipe: write }))
        }
        ForkResult::Parent { child } => Ok(Forked::Parent(VerdictChild {
            pid: Some(child),
            pipe: File::from(read),
        })),
    }
}

/// The child's end.
pub struct Verdict {
    pipe: OwnedFd,
}

/// How the child ends: 0 Ok, 1 with a message, 2 when the job panicked.
const OK: i32 = 0;
const FAILED: i32 = 1;
const PANICKED: i32 = 2;

impl Verdict {
    /// Runs `job`, sends its verdict, and ends the child at once: no exit handlers, no
    /// flushing of stdio buffers copied from the parent.
    pub fn conclude(self, job: impl FnOnce() -> Result<(), String>) -> ! {
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        let code = match verdict {
            Ok(Ok(())) => OK,
            Ok(Err(message)) => {
                let _ = File::from(self.pipe).write_all(message.as_bytes());
                FAILED
            }
            Err(_) => PANICKED,
        };
        crate::sys::exit_now(code)
    }
}

/// The parent's view of the child; dropped before `judge`, it kills and reaps the child.
pub struct VerdictChild {
    pid: Option<Pid>,
    pipe: File,
}

impl VerdictChild {
    pub fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// Everything the child wrote before closing its end, or `None` when it has not
    /// closed it within `limit` (with no limit: until it does).
    pub fn read(&mut self, limit: Option<Duration>) -> Option<String> {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, ms) {
                    Ok(0) => return None,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return None,
                    Ok(_) => {}
                }
            }
            match self.pipe.read(&mut chunk) {
                Ok(0) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Kills the child (it did not answer in time) and reaps it.
    pub fn kill(mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = reap(pid);
        }
    }

    /// Reaps the child: Ok when it exited 0; its message when it failed with one;
    /// otherwise the status it ended with.
    pub fn judge(mut self, message: String) -> Result<(), Judged> {
        let Some(pid) = self.pid.take() else {
            return Err(Judged::Wait(Errno::ECHILD));
        };
        match reap(pid) {
            Ok(WaitStatus::Exited(_, OK)) => Ok(()),
            Ok(WaitStatus::Exited(_, FAILED)) if !message.is_empty() => {
                Err(Judged::Failed(message))
            }
            Ok(other) => Err(Judged::Ended(other)),
            Err(e) => Err(Judged::Wait(e)),
        }
    }
}

/// Why a child's job did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// The job's own message.
    Failed(String),
    /// No message: how the child ended.
    Ended(WaitStatus),
    /// It could not be reaped.
    Wait(Errno),
}

impl Drop for VerdictChild {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = reap(pid);
        }
    }
}

fn reap(pid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}
