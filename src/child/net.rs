//! Network setup inside the sandbox's own network namespace.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::plan::Plan;
use crate::profile::NetworkMode;

nix::ioctl_readwrite_bad!(get_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(set_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Before the new root (whose /proc/sys is read-only): in a network namespace of the
/// sandbox's own, every port is the command's to bind, as podman sets it, so a server
/// started as an ordinary user can listen on port 80 there (`--publish 8080:80`). A
/// convenience, not a protection: where /proc/sys is read-only already (inside a
/// container), low ports simply stay privileged.
pub fn before_root(plan: &Plan) -> Result<()> {
    match plan.network.mode {
        NetworkMode::None | NetworkMode::Slirp4netns => {
            match std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0") {
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
                other => other.context(
                    "let the sandbox bind low ports (net.ipv4.ip_unprivileged_port_start)",
                ),
            }
        }
        NetworkMode::Host | NetworkMode::Sandbox => Ok(()),
    }
}

pub fn setup(plan: &Plan) -> Result<()> {
    match plan.network.mode {
        // slirp4netns configured tap0 from outside before `Go`; loopback is ours.
        NetworkMode::None | NetworkMode::Slirp4netns => loopback_up().context("bring up loopback"),
        // The joined sandbox brought its loopback up.
        NetworkMode::Host | NetworkMode::Sandbox => Ok(()),
    }
}

/// A new network namespace has `lo` down; programs expect 127.0.0.1 to work.
fn loopback_up() -> Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, a valid ifreq.
    unsafe { get_flags(sock.as_raw_fd(), &mut req) }?;
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads name and flags from `req`, a valid, initialised ifreq.
    unsafe { set_flags(sock.as_raw_fd(), &req) }?;
    Ok(())
}
