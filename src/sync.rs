//! Typed channels, one per conversation, in the style of youki's: each end can send only
//! its direction's messages and receive only the other's, and a receiver waiting for one
//! message rejects any other with "expected X, got Y".
//!
//! Conversations:
//! - supervisor <-> sandbox (the child, then init): [`ToSandbox`] down, [`FromSandbox`] up;
//! - `sbx exec` <-> init, over the control socket: [`ToInit`], [`FromInit`];
//! - `sbx exec` <-> the process it starts inside: [`ToEntered`], [`FromEntered`];
//! - the command's process -> whoever forked it, one way: [`FromCommand`]. Close-on-exec,
//!   so end of file means the exec happened.
//!
//! Under each is a `SOCK_SEQPACKET` socketpair: one message per packet, so no framing; file
//! descriptors (a terminal's master side, a pidfd) travel with SCM_RIGHTS. The sandbox
//! never sends configuration back: only progress and outcomes.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::security::landlock::Enforced;

/// A message of one direction of one conversation.
pub trait Message: Serialize + DeserializeOwned {
    /// The variant's name, for "expected X, got Y".
    fn kind(&self) -> &'static str;
    /// The other side's reason, when the message says it failed.
    fn failure(&self) -> Option<&str> {
        None
    }
}

/// How a process ended, as init saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ended {
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl Ended {
    /// The exit code a shell would report.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => crate::exit::signalled(sig),
        }
    }
}

/// Supervisor to sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToSandbox {
    /// Ids are mapped and the host side is ready; set up and start.
    Go,
    /// The terminal is sized and relayed; start the command.
    PtyReady,
}

/// Sandbox to supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromSandbox {
    /// With the master fd attached: the command's terminal.
    Pty,
    /// Setup failed; the sandbox is gone.
    Failed(String),
    /// The command was executed (its pid inside the sandbox); the sandbox's namespaces
    /// (inode numbers by type) when the supervisor asked for them; what Landlock the kernel
    /// enforced on it (`None`: Landlock was off).
    Started {
        pid: i32,
        namespaces: BTreeMap<String, u64>,
        landlock: Option<Enforced>,
    },
    /// The command could not be executed: see [`FromCommand::ExecFailed`].
    ExecFailed { code: i32, message: String },
    /// How the command ended.
    Ended(Ended),
}

/// `sbx exec` to init, over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToInit {
    /// Report how this process (its pid in the sandbox) ends.
    Claim { pid: i32 },
}

/// Init to `sbx exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromInit {
    /// Noted; the outcome follows as `Ended`.
    Claimed,
    Ended(Ended),
}

/// `sbx exec` to the process it started inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToEntered {
    /// Init will report how you end: start.
    Go,
    /// The terminal is sized and relayed; start the command.
    PtyReady,
}

/// The process `sbx exec` started inside, to `sbx exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromEntered {
    /// With a pidfd attached: this is me (my pid in the sandbox), waiting for `Go`.
    Hello { pid: i32 },
    /// With the master fd attached: the command's terminal.
    Pty,
    /// Entering failed.
    Failed(String),
}

/// The command's process to whoever forked it, before its exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromCommand {
    /// What `restrict_self` reported: what the kernel enforces on the command.
    Landlock(Enforced),
    /// The command could not be executed. `code` is `CANNOT_EXECUTE` or `NOT_FOUND` (or
    /// `SBX_ERROR` for setup that happens in the command's own process, such as the
    /// working directory).
    ExecFailed { code: i32, message: String },
}

/// No message at all: the direction of a one-way channel that nobody sends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nothing {}

impl Message for ToSandbox {
    fn kind(&self) -> &'static str {
        match self {
            ToSandbox::Go => "Go",
            ToSandbox::PtyReady => "PtyReady",
        }
    }
}

impl Message for FromSandbox {
    fn kind(&self) -> &'static str {
        match self {
            FromSandbox::Pty => "Pty",
            FromSandbox::Failed(_) => "Failed",
            FromSandbox::Started { .. } => "Started",
            FromSandbox::ExecFailed { .. } => "ExecFailed",
            FromSandbox::Ended(_) => "Ended",
        }
    }
    fn failure(&self) -> Option<&str> {
        match self {
            FromSandbox::Failed(why) => Some(why),
            FromSandbox::Pty
            | FromSandbox::Started { .. }
            | FromSandbox::ExecFailed { .. }
            | FromSandbox::Ended(_) => None,
        }
    }
}

impl Message for ToInit {
    fn kind(&self) -> &'static str {
        match self {
            ToInit::Claim { .. } => "Claim",
        }
    }
}

impl Message for FromInit {
    fn kind(&self) -> &'static str {
        match self {
            FromInit::Claimed => "Claimed",
            FromInit::Ended(_) => "Ended",
        }
    }
}

impl Message for ToEntered {
    fn kind(&self) -> &'static str {
        match self {
            ToEntered::Go => "Go",
            ToEntered::PtyReady => "PtyReady",
        }
    }
}

impl Message for FromEntered {
    fn kind(&self) -> &'static str {
        match self {
            FromEntered::Hello { .. } => "Hello",
            FromEntered::Pty => "Pty",
            FromEntered::Failed(_) => "Failed",
        }
    }
    fn failure(&self) -> Option<&str> {
        match self {
            FromEntered::Failed(why) => Some(why),
            FromEntered::Hello { .. } | FromEntered::Pty => None,
        }
    }
}

impl Message for FromCommand {
    fn kind(&self) -> &'static str {
        match self {
            FromCommand::Landlock(_) => "Landlock",
            FromCommand::ExecFailed { .. } => "ExecFailed",
        }
    }
}

impl Message for Nothing {
    fn kind(&self) -> &'static str {
        match *self {}
    }
}

/// The supervisor's end of its conversation with the sandbox.
pub type SupervisorChannel = Channel<ToSandbox, FromSandbox>;
/// The sandbox's end (the child's, then init's).
pub type SandboxChannel = Channel<FromSandbox, ToSandbox>;
/// `sbx exec`'s end of the control socket.
pub type ExecControl = Channel<ToInit, FromInit>;
/// Init's end of one `sbx exec`'s control connection.
pub type InitControl = Channel<FromInit, ToInit>;
/// `sbx exec`'s end of its conversation with the process it starts.
pub type EnterChannel = Channel<ToEntered, FromEntered>;
/// The started process's end.
pub type EnteredChannel = Channel<FromEntered, ToEntered>;
/// The command's process's end of its one-way report.
pub type CommandReport = Channel<FromCommand, Nothing>;
/// Where the report arrives: init, or `sbx exec`.
pub type CommandReceiver = Channel<Nothing, FromCommand>;

/// One end of a conversation: sends `Out`, receives `In`.
#[derive(Debug)]
pub struct Channel<Out, In> {
    fd: OwnedFd,
    directions: PhantomData<fn(Out) -> In>,
}

const MAX_MSG: usize = 64 * 1024;

impl<Out: Message, In: Message> Channel<Out, In> {
    /// A connected pair: (this end, the other end), both close-on-exec.
    pub fn pair() -> Result<(Channel<Out, In>, Channel<In, Out>)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair for a channel")?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    /// A channel over an already connected `SOCK_SEQPACKET` socket.
    pub fn from_fd(fd: OwnedFd) -> Channel<Out, In> {
        Channel {
            fd,
            directions: PhantomData,
        }
    }

    pub fn send(&self, msg: &Out) -> Result<()> {
        self.send_with(msg, None)
    }

    /// Sends `msg` with `fd` attached.
    pub fn send_fd(&self, msg: &Out, fd: BorrowedFd) -> Result<()> {
        self.send_with(msg, Some(fd))
    }

    fn send_with(&self, msg: &Out, fd: Option<BorrowedFd>) -> Result<()> {
        let bytes = serde_json::to_vec(msg).context("encoding a channel message")?;
        let iov = [IoSlice::new(&bytes)];
        let raw: [RawFd; 1] = [fd.map_or(-1, |f| f.as_raw_fd())];
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
    pub fn recv(&self) -> Result<Option<(In, Option<OwnedFd>)>> {
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
                Err(e) => return Err(e).context("receiving from a channel"),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..len]).context("decoding a channel message")?;
        Ok(Some((msg, fd)))
    }

    /// Receives the message named `want`: `pick` takes it (and its fd) or hands back any
    /// other, which is an error, as is the end of the conversation. A message that says
    /// the other side failed becomes its reason.
    pub fn expect<T>(
        &self,
        want: &'static str,
        pick: impl FnOnce(In, Option<OwnedFd>) -> Result<T, In>,
    ) -> Result<T> {
        let Some((msg, fd)) = self.recv()? else {
            bail!("expected {want}, but the other side is gone");
        };
        match pick(msg, fd) {
            Ok(picked) => Ok(picked),
            Err(other) => match other.failure() {
                Some(why) => Err(anyhow!("{why}")),
                None => Err(anyhow!("expected {want}, got {}", other.kind())),
            },
        }
    }

    /// A failure message already waiting, if any (does not block).
    pub fn pending_failure(&self) -> Option<String> {
        let mut fds = [nix::poll::PollFd::new(
            self.fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) if n > 0 => match self.recv() {
                Ok(Some((msg, _))) => msg.failure().map(str::to_string),
                Ok(None) | Err(_) => None,
            },
            Ok(_) | Err(_) => None,
        }
    }
}

/// The fd a message must carry; its absence is an error naming the message.
fn attached(fd: Option<OwnedFd>, what: &str) -> Result<OwnedFd> {
    fd.ok_or_else(|| anyhow!("{what} came without its descriptor"))
}

impl SandboxChannel {
    pub fn wait_go(&self) -> Result<()> {
        self.expect("Go", |msg, _| match msg {
            ToSandbox::Go => Ok(()),
            other @ ToSandbox::PtyReady => Err(other),
        })
    }

    pub fn wait_pty_ready(&self) -> Result<()> {
        self.expect("PtyReady", |msg, _| match msg {
            ToSandbox::PtyReady => Ok(()),
            other @ ToSandbox::Go => Err(other),
        })
    }
}

impl ExecControl {
    /// Asks init to report how `pid` ends; returns once init has noted it.
    pub fn claim(&self, pid: i32) -> Result<()> {
        self.send(&ToInit::Claim { pid })?;
        self.expect("Claimed", |msg, _| match msg {
            FromInit::Claimed => Ok(()),
            other @ FromInit::Ended(_) => Err(other),
        })
    }
}

impl EnterChannel {
    /// The started process's pid in the sandbox and a pidfd of it.
    pub fn wait_hello(&self) -> Result<(i32, OwnedFd)> {
        let (pid, fd) = self.expect("Hello", |msg, fd| match msg {
            FromEntered::Hello { pid } => Ok((pid, fd)),
            other @ (FromEntered::Pty | FromEntered::Failed(_)) => Err(other),
        })?;
        Ok((pid, attached(fd, "Hello")?))
    }

    /// The master side of the started process's terminal.
    pub fn wait_pty(&self) -> Result<OwnedFd> {
        let fd = self.expect("Pty", |msg, fd| match msg {
            FromEntered::Pty => Ok(fd),
            other @ (FromEntered::Hello { .. } | FromEntered::Failed(_)) => Err(other),
        })?;
        attached(fd, "Pty")
    }
}

impl EnteredChannel {
    pub fn wait_go(&self) -> Result<()> {
        self.expect("Go", |msg, _| match msg {
            ToEntered::Go => Ok(()),
            other @ ToEntered::PtyReady => Err(other),
        })
    }

    pub fn wait_pty_ready(&self) -> Result<()> {
        self.expect("PtyReady", |msg, _| match msg {
            ToEntered::PtyReady => Ok(()),
            other @ ToEntered::Go => Err(other),
        })
    }
}

impl<Out, In> AsFd for Channel<Out, In> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_order() {
        let (supervisor, sandbox) = SupervisorChannel::pair().unwrap();
        supervisor.send(&ToSandbox::Go).unwrap();
        let failed = FromSandbox::ExecFailed {
            code: crate::exit::NOT_FOUND,
            message: "x: not found".into(),
        };
        sandbox.send(&failed).unwrap();
        sandbox.wait_go().unwrap();
        let (msg, fd) = supervisor.recv().unwrap().unwrap();
        assert_eq!(msg, failed);
        assert!(fd.is_none());
    }

    #[test]
    fn out_of_order_message_is_rejected() {
        let (supervisor, sandbox) = SupervisorChannel::pair().unwrap();
        supervisor.send(&ToSandbox::PtyReady).unwrap();
        let err = sandbox.wait_go().unwrap_err().to_string();
        assert_eq!(err, "expected Go, got PtyReady");
        let (exec, init) = ExecControl::pair().unwrap();
        init.send(&FromInit::Ended(Ended::Exited(0))).unwrap();
        let err = exec.claim(7).unwrap_err().to_string();
        assert_eq!(err, "expected Claimed, got Ended");
    }

    #[test]
    fn eof_and_failure_are_reported() {
        let (exec, entered) = EnterChannel::pair().unwrap();
        entered
            .send(&FromEntered::Failed("mount /x: denied".into()))
            .unwrap();
        assert_eq!(
            exec.wait_hello().unwrap_err().to_string(),
            "mount /x: denied"
        );
        drop(entered);
        assert_eq!(
            exec.wait_pty().unwrap_err().to_string(),
            "expected Pty, but the other side is gone"
        );
    }

    #[test]
    fn fds_travel_with_messages() {
        let (exec, entered) = EnterChannel::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        entered.send_fd(&FromEntered::Pty, file.as_fd()).unwrap();
        assert!(exec.wait_pty().is_ok());
        entered.send(&FromEntered::Pty).unwrap();
        assert_eq!(
            exec.wait_pty().unwrap_err().to_string(),
            "Pty came without its descriptor"
        );
    }

    #[test]
    fn a_pending_failure_is_found_without_blocking() {
        let (supervisor, sandbox) = SupervisorChannel::pair().unwrap();
        assert_eq!(supervisor.pending_failure(), None);
        sandbox.send(&FromSandbox::Failed("why".into())).unwrap();
        assert_eq!(supervisor.pending_failure().as_deref(), Some("why"));
    }
}
