//! `process.terminal`: a pty made inside the container (its own devpts), the slave as the
//! process's controlling terminal and stdio, the master sent over `--console-socket` with
//! SCM_RIGHTS, as conmon and containerd expect.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Creates the pty, sends its master over `socket`, and makes its slave this process's
/// terminal (a new session) and fds 0-2. `owner` gets the slave, so the process can open
/// /dev/tty after it changes user.
pub fn attach(socket: &OwnedFd, size: Option<(u16, u16)>, owner: (u32, u32)) -> Result<()> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("open /dev/ptmx in the container (is a devpts mounted on /dev/pts?)")?;
    nix::pty::grantpt(&master).context("grantpt")?;
    nix::pty::unlockpt(&master).context("unlockpt")?;
    let name = nix::pty::ptsname_r(&master).context("ptsname")?;
    let slave: OwnedFd = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {name}"))?;
    let _ = nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(owner.0)), None);
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let raw = [master.as_raw_fd()];
    let iov = [IoSlice::new(b"/dev/ptmx")];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .context("send the terminal over --console-socket")?;
    drop(master);
    nix::unistd::setsid().context("setsid")?;
    // SAFETY: TIOCSCTTY takes an integer argument; no memory is passed.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error())
            .context("make the pty the controlling terminal");
    }
    for fd in 0..3 {
        crate::sys::dup_to(slave.as_fd(), fd).context("make the pty stdio")?;
    }
    Ok(())
}

/// The engine sets the terminal's size on the master it was sent (conmon after podman
/// attaches), which can come after `start`: a program asking at once (`stty size`) would see
/// 0x0. Without `process.consoleSize`, the process waits up to 100 ms for a size first.
pub fn wait_for_size() {
    for _ in 0..100 {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize struct that lives for the call.
        let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
        if rc != 0 || ws.ws_row != 0 || ws.ws_col != 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
