//! PID 1 inside the sandbox: start the command, forward signals to it, reap every orphan,
//! report the command's outcome to the supervisor, and exit (which ends the namespace).
//! For a named sandbox it also tells `sbx exec` how the processes it started ended: they
//! become init's children, so only init can.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::poll::PollTimeout;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{accept4, getsockopt, sockopt::PeerCredentials, SockFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::plan::Plan;
use crate::runtime::command::{self, Report};
use crate::runtime::poll::Poller;
use crate::runtime::signals;
use crate::sync::{
    CommandReceiver, Ended, FromInit, FromSandbox, InitControl, SandboxChannel, ToInit,
};

pub fn run(plan: &Plan, chan: &SandboxChannel, control: Option<OwnedFd>) -> Result<Infallible> {
    // Not dumpable: the command, running as the same uid, cannot ptrace init or open
    // /proc/1/fd, /proc/1/mem or /proc/1/exe.
    nix::sys::prctl::set_dumpable(false).context("PR_SET_DUMPABLE")?;
    let pty = if plan.tty {
        let pty = open_pty(chan)?;
        // The command's fds 0-2 become the pty; init's need not stay the caller's terminal,
        // which nothing in the sandbox may hold (not even init, non-dumpable as it is).
        let null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context("open /dev/null in the sandbox")?;
        for fd in 0..3 {
            crate::sys::dup_to(null.as_fd(), fd).context("/dev/null as fds 0-2")?;
        }
        Some(pty)
    } else {
        None
    };

    let (report_r, report_w) = CommandReceiver::pair()?;
    // SAFETY: init is single-threaded (the sandbox never starts threads before exec).
    let command = match unsafe { fork() }.context("fork the command")? {
        ForkResult::Child => {
            drop(report_r);
            drop(control);
            command::exec(plan, pty, report_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(report_w);
    drop(pty);

    match command::read_report(&report_r) {
        Report::Executed { landlock } => chan.send(&FromSandbox::Started {
            pid: command.as_raw(),
            namespaces: if plan.reports_status() {
                own_namespaces()
            } else {
                BTreeMap::new()
            },
            landlock,
        })?,
        Report::Failed { code, message } => {
            let _ = waitpid(command, None);
            chan.send(&FromSandbox::ExecFailed { code, message })?;
            crate::sys::exit_now(0);
        }
    }
    drop(report_r);
    let outcome = supervise(command, control)?;
    chan.send(&FromSandbox::Ended(outcome))?;
    // The kernel then kills what is left in the namespace; nothing of ours needs flushing.
    crate::sys::exit_now(0)
}

/// The inode numbers of init's namespaces, which are the sandbox's.
fn own_namespaces() -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    NAMESPACES
        .iter()
        .filter_map(|ns| {
            let meta = std::fs::metadata(format!("/proc/self/ns/{ns}")).ok()?;
            Some((ns.to_string(), meta.ino()))
        })
        .collect()
}

const NAMESPACES: &[&str] = &["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"];

/// The command's terminal: the master side goes to the supervisor, which relays it; the
/// slave side is returned for the command.
fn open_pty(chan: &SandboxChannel) -> Result<OwnedFd> {
    let pty = command::open_pty()?;
    chan.send_fd(&FromSandbox::Pty, pty.master.as_fd())?;
    chan.wait_pty_ready()?;
    Ok(pty.slave)
}

/// What one poll round can find ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    /// The control socket: a new `sbx exec`.
    Control,
    /// A connected `sbx exec`, by its id.
    Client(u64),
}

/// Waits for the command while forwarding signals, reaping orphans and serving `sbx exec`.
fn supervise(command: Pid, control: Option<OwnedFd>) -> Result<Ended> {
    // The signals are blocked since before clone; the signalfd collects them.
    let signals = signals::signalfd(&signals::set(&[Signal::SIGCHLD]))?;
    let mut execs = Execs::default();
    loop {
        let ready = {
            let mut poller = Poller::new();
            poller.read(Source::Signals, signals.as_fd());
            if let Some(listener) = &control {
                poller.read(Source::Control, listener.as_fd());
            }
            for client in &execs.clients {
                poller.read(Source::Client(client.id), client.chan.as_fd());
            }
            poller.wait(PollTimeout::NONE)?
        };
        if ready.contains(Source::Signals) {
            for sig in signals::pending(&signals).unwrap_or_default() {
                match sig {
                    Signal::SIGCHLD => {
                        if let Some(outcome) = execs.reap(command) {
                            return Ok(outcome);
                        }
                    }
                    sig => {
                        let _ = kill(command, sig);
                    }
                }
            }
        }
        if let (Some(listener), true) = (&control, ready.contains(Source::Control)) {
            execs.accept(listener);
        }
        for source in ready.iter() {
            match source {
                Source::Client(id) => execs.serve(id),
                Source::Signals | Source::Control => {}
            }
        }
    }
}

/// The processes that `sbx exec` started here: they are init's children once their
/// starter exits, so only init learns how they end, and tells whoever asked.
#[derive(Default)]
struct Execs {
    clients: Vec<ExecClient>,
    /// The id of the next client: ids outlive the clients' places in `clients`.
    next_id: u64,
    /// Outcomes of children nobody asked about yet (an exec'd process may end before its
    /// `sbx exec` asks): the most recent few.
    unclaimed: VecDeque<(i32, Ended)>,
}

struct ExecClient {
    id: u64,
    chan: InitControl,
    pid: Option<i32>,
}

const UNCLAIMED: usize = 64;

impl Execs {
    fn accept(&mut self, listener: &OwnedFd) {
        let Ok(fd) = accept4(listener.as_fd(), SockFlag::SOCK_CLOEXEC) else {
            return;
        };
        // Only our own user: the socket's directory is private too.
        let ours = getsockopt(&fd, PeerCredentials)
            .is_ok_and(|c| c.uid() == nix::unistd::getuid().as_raw());
        if ours {
            self.next_id += 1;
            self.clients.push(ExecClient {
                id: self.next_id,
                chan: InitControl::from_fd(fd),
                pid: None,
            });
        }
    }

    /// Reads client `id`'s claim: answered at once when its process has ended already.
    fn serve(&mut self, id: u64) {
        // Gone already: its process ended this round, and it has its answer.
        let Some(at) = self.clients.iter().position(|c| c.id == id) else {
            return;
        };
        let client = &mut self.clients[at];
        let pid = match client.chan.recv() {
            Ok(Some((ToInit::Claim { pid }, _))) if client.pid.is_none() => pid,
            // A second claim, the end of the connection, or garbage: done with it.
            Ok(Some((ToInit::Claim { .. }, _))) | Ok(None) | Err(_) => {
                self.clients.remove(at);
                return;
            }
        };
        let ended = self.unclaimed.iter().position(|(p, _)| *p == pid);
        if let Some((_, outcome)) = ended.and_then(|i| self.unclaimed.remove(i)) {
            let _ = client.chan.send(&FromInit::Claimed);
            let _ = client.chan.send(&FromInit::Ended(outcome));
            self.clients.remove(at);
        } else if client.chan.send(&FromInit::Claimed).is_ok() {
            client.pid = Some(pid);
        } else {
            self.clients.remove(at);
        }
    }

    /// Reaps every exited child; returns the command's outcome once it is among them.
    fn reap(&mut self, command: Pid) -> Option<Ended> {
        let mut outcome = None;
        loop {
            let (pid, msg) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Ended::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Ended::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return outcome,
                Ok(_) => continue,
            };
            if pid == command {
                outcome = Some(msg);
            } else if let Some(at) = self
                .clients
                .iter()
                .position(|c| c.pid == Some(pid.as_raw()))
            {
                let client = self.clients.remove(at);
                let _ = client.chan.send(&FromInit::Ended(msg));
            } else if !self.clients.is_empty() {
                if self.unclaimed.len() == UNCLAIMED {
                    self.unclaimed.pop_front();
                }
                self.unclaimed.push_back((pid.as_raw(), msg));
            }
        }
    }
}
