//! The typed channel between the supervisor and the sandbox's init.
//!
//! A `SOCK_SEQPACKET` socketpair: one message per packet, so no framing; file descriptors
//! (the terminal's master side) travel with SCM_RIGHTS. The child never sends configuration
//! back: only progress and outcomes.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Parent to child: ids are mapped and the host side is ready; set up and start.
    Go,
    /// Child to parent, with the master fd attached: the command's terminal.
    Pty,
    /// Parent to child: the terminal is sized and relayed; start the command.
    PtyReady,
    /// Child to parent: setup failed; the sandbox is gone.
    Failed(String),
    /// Child to parent: the command was executed (its pid inside the sandbox), and the
    /// sandbox's namespaces (inode numbers by type) when the parent asked for them.
    Started {
        pid: i32,
        namespaces: BTreeMap<String, u64>,
    },
    /// Child to parent: the command could not be executed. `code` is `CANNOT_EXECUTE` or
    /// `NOT_FOUND` (or `SBX_ERROR` for setup that happens in the command's own process,
    /// such as the working directory).
    ExecFailed { code: i32, message: String },
    /// Child to parent: the command exited with this code.
    Exited(i32),
    /// Child to parent: the command was killed by this signal.
    Signaled(i32),
    /// `sbx exec`, to init over the control socket: report this process's outcome (its pid
    /// in the sandbox) when it ends. To `sbx exec` from its process inside, with a pidfd:
    /// this is me, waiting for `Go`.
    Enter { pid: i32 },
    /// Init to `sbx exec`: noted; the outcome follows as `Exited` or `Signaled`.
    Entered,
}

impl Msg {
    fn kind(&self) -> &'static str {
        match self {
            Msg::Go => "Go",
            Msg::Pty => "Pty",
            Msg::PtyReady => "PtyReady",
            Msg::Failed(_) => "Failed",
            Msg::Started { .. } => "Started",
            Msg::ExecFailed { .. } => "ExecFailed",
            Msg::Exited(_) => "Exited",
            Msg::Signaled(_) => "Signaled",
            Msg::Enter { .. } => "Enter",
            Msg::Entered => "Entered",
        }
    }
}

#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

const MAX_MSG: usize = 64 * 1024;

impl Channel {
    /// A connected pair: (parent's end, child's end), both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair for the supervisor channel")?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// A channel over an already connected `SOCK_SEQPACKET` socket.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.send_fd(msg, None)
    }

    pub fn send_fd(&self, msg: &Msg, fd: Option<BorrowedFd>) -> Result<()> {
        let bytes = serde_json::to_vec(msg).context("encoding a channel message")?;
        let iov = [IoSlice::new(&bytes)];
        let raw: [RawFd; 1] = [fd.map(|f| f.as_raw_fd()).unwrap_or(-1)];
        let cmsgs: &[ControlMessage] = if fd.is_some() {
            &[ControlMessage::ScmRights(&raw)]
        } else {
            &[]
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).with_context(|| format!("sending {}", msg.kind())),
            }
        }
    }

    /// The next message and any fd that came with it; `None` when the other end is gone.
    pub fn recv(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MSG];
        let mut cmsg_buf = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut fd = None;
                    for cmsg in r.cmsgs().context("reading channel control data")? {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            for raw in fds {
                                // SAFETY: SCM_RIGHTS just installed `raw` in our table; we are
                                // its only owner.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (r.bytes, fd);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("receiving from the supervisor channel"),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..len]).context("decoding a channel message")?;
        Ok(Some((msg, fd)))
    }

    /// A `Failed` message already waiting, if any (does not block).
    pub fn pending_failure(&self) -> Option<String> {
        let mut fds = [nix::poll::PollFd::new(
            self.fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) if n > 0 => match self.recv() {
                Ok(Some((Msg::Failed(why), _))) => Some(why),
                _ => None,
            },
            _ => None,
        }
    }

    /// Receives a message that must be `want`; anything else (or EOF) is an error.
    pub fn expect_msg(&self, want: &Msg) -> Result<Option<OwnedFd>> {
        match self.recv()? {
            Some((msg, fd)) if msg == *want => Ok(fd),
            Some((Msg::Failed(why), _)) => bail!("{why}"),
            Some((msg, _)) => bail!("expected {}, got {}", want.kind(), msg.kind()),
            None => bail!("expected {}, but the other side is gone", want.kind()),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_order() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::Go).unwrap();
        b.send(&Msg::ExecFailed {
            code: crate::exit::NOT_FOUND,
            message: "x: not found".into(),
        })
        .unwrap();
        assert!(b.expect_msg(&Msg::Go).unwrap().is_none());
        let (msg, fd) = a.recv().unwrap().unwrap();
        assert_eq!(
            msg,
            Msg::ExecFailed {
                code: crate::exit::NOT_FOUND,
                message: "x: not found".into()
            }
        );
        assert!(fd.is_none());
    }

    #[test]
    fn out_of_order_message_is_rejected() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::PtyReady).unwrap();
        let err = b.expect_msg(&Msg::Go).unwrap_err().to_string();
        assert_eq!(err, "expected Go, got PtyReady");
    }

    #[test]
    fn eof_and_failure_are_reported() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::Failed("mount /x: denied".into())).unwrap();
        assert_eq!(
            b.expect_msg(&Msg::Go).unwrap_err().to_string(),
            "mount /x: denied"
        );
        drop(a);
        assert!(b.recv().unwrap().is_none());
    }

    #[test]
    fn fds_travel_with_messages() {
        let (a, b) = Channel::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        a.send_fd(&Msg::Pty, Some(file.as_fd())).unwrap();
        let fd = b.expect_msg(&Msg::Pty).unwrap();
        assert!(fd.is_some());
    }
}
