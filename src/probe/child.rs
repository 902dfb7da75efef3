//! Running a probe in a forked child: the child's namespaces and mounts die with it, and
//! only its verdict, Ok or a message, comes back through a pipe.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Runs `body` in a forked child and returns its verdict: Ok, or the message it sent back.
/// A child that does not finish within two seconds is killed and reaped.
pub(super) fn in_child(body: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: sbx starts no threads before or during `sbx check`, so the child may allocate
    // and do anything; it never returns into the caller's frames, since it ends with _exit.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(read_end);
            let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let code = match verdict {
                Ok(Ok(())) => 0,
                Ok(Err(msg)) => {
                    let _ = File::from(write_end).write_all(msg.as_bytes());
                    1
                }
                Err(_) => 2,
            };
            // _exit ends the child at once, without running exit handlers or flushing
            // stdio buffers copied from the parent.
            crate::sys::exit_now(code)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let message = read_verdict(read_end, Duration::from_secs(2));
            if message.is_none() {
                let _ = kill(child, Signal::SIGKILL);
            }
            let status = reap(child);
            match (status, message) {
                (_, None) => Err("no answer from the probe's child within 2 s".to_string()),
                (Ok(WaitStatus::Exited(_, 0)), _) => Ok(()),
                (Ok(WaitStatus::Exited(_, 1)), Some(msg)) if !msg.is_empty() => Err(msg),
                (Ok(other), _) => Err(format!("probe child ended with {other:?}")),
                (Err(e), _) => Err(format!("waitpid: {e}")),
            }
        }
    }
}

/// Everything the child wrote before closing its end, or None after `limit`.
fn read_verdict(fd: OwnedFd, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut file = File::from(fd);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(_) => {}
        }
        match file.read(&mut chunk) {
            Ok(0) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn reap(child: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}
