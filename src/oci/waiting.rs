//! Waiting for a process `run` or `exec` started, and small reads.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

/// Waits for our child, forwarding the usual termination signals to it.
pub fn wait_child(child: nix::unistd::Pid) -> Result<i32> {
    let forwarded = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ];
    let mask = crate::runtime::signals::set(&forwarded);
    mask.thread_block().context("block signals")?;
    let sfd = crate::runtime::signals::signalfd(&mask)?;
    let pidfd = crate::sys::pidfd_open(child.as_raw()).context("pidfd of the container")?;
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        if fds[1].any().unwrap_or(false) {
            for sig in crate::runtime::signals::pending(&sfd)? {
                let _ = crate::sys::pidfd_send_signal(pidfd.as_fd(), sig as i32);
            }
        }
        if fds[0].any().unwrap_or(false) {
            let status = nix::sys::wait::waitpid(child, None).context("wait for the container")?;
            return Ok(crate::exit::from_wait_status(status).unwrap_or(crate::exit::SBX_ERROR));
        }
    }
}

/// Reads up to `limit` bytes of a small file.
pub fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("open {}", path.display()))?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}
