//! The control socket of a named sandbox: the supervisor binds it before clone, the
//! sandbox's init answers on it, `sbx exec` connects.
//!
//! It sits in the sandbox's private runtime directory; init also checks that the peer is
//! our own user. Paths go through `/proc/self/fd/N/` so that a long home directory cannot
//! exceed the 108 bytes a socket address holds.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::socket::{
    bind, connect as connect_to, listen as listen_on, socket, AddressFamily, Backlog, SockFlag,
    SockType, UnixAddr,
};
use nix::sys::stat::Mode;

use crate::sync::ExecControl;

/// The socket's name in the sandbox's runtime directory.
pub const CONTROL: &str = "ctl.sock";

/// Binds and listens on `dir/ctl.sock`, replacing a stale one.
pub fn listen(dir: &Path) -> Result<OwnedFd> {
    let what = || format!("control socket {}", dir.join(CONTROL).display());
    let sock = seqpacket().with_context(what)?;
    let (_dir, addr) = address(dir).with_context(what)?;
    match std::fs::remove_file(dir.join(CONTROL)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(what),
    }
    bind(sock.as_raw_fd(), &addr).with_context(what)?;
    listen_on(&sock, Backlog::new(16).unwrap_or(Backlog::MAXCONN)).with_context(what)?;
    Ok(sock)
}

/// Connects to the sandbox whose runtime directory is `dir`.
pub fn connect(dir: &Path) -> Result<ExecControl> {
    let what = || format!("connect to {}", dir.join(CONTROL).display());
    let sock = seqpacket().with_context(what)?;
    let (_dir, addr) = address(dir).with_context(what)?;
    connect_to(sock.as_raw_fd(), &addr).with_context(what)?;
    Ok(ExecControl::from_fd(sock))
}

fn seqpacket() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// The socket's address through an fd of its directory; the fd must outlive its use.
fn address(dir: &Path) -> Result<(OwnedFd, UnixAddr)> {
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let addr = UnixAddr::new(format!("/proc/self/fd/{}/{CONTROL}", fd.as_raw_fd()).as_str())?;
    Ok((fd, addr))
}
