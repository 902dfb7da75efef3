//! The runner's loop while the sandbox runs: forward signals, relay the terminal, read the
//! outcome from init, reap. One `poll` over a signalfd, the channel and the terminal.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::stdio::PipeRelay;
use super::tty::Relay;
use super::{Ended, Observer, Sandbox, Started};
use crate::security::landlock::Enforced;
use crate::sync;
use crate::sync::{FromSandbox, SupervisorChannel, ToSandbox};

/// What init told us about the command.
#[derive(Debug, Default)]
struct Report {
    setup_failed: Option<String>,
    exec_failed: Option<(i32, String)>,
    exit_code: Option<i32>,
    signal: Option<i32>,
}

impl Report {
    /// Notes a message; `Started` is handed back for the observer.
    fn absorb(&mut self, msg: FromSandbox) -> Option<Launch> {
        match msg {
            FromSandbox::Failed(why) => self.setup_failed = Some(why),
            FromSandbox::ExecFailed { code, message } => self.exec_failed = Some((code, message)),
            FromSandbox::Ended(ended) => {
                self.exit_code = Some(ended.code());
                if let sync::Ended::Signaled(sig) = ended {
                    self.signal = Some(sig);
                }
            }
            FromSandbox::Started {
                pid,
                namespaces,
                landlock,
            } => {
                return Some(Launch {
                    pid,
                    namespaces,
                    landlock,
                })
            }
            // Only while the loop has no terminal yet: it takes `Pty` itself.
            FromSandbox::Pty => {}
        }
        None
    }
}

/// What `Started` said.
struct Launch {
    pid: i32,
    namespaces: BTreeMap<String, u64>,
    landlock: Option<Enforced>,
}

/// What the loop watches besides init.
pub struct Watch {
    pub timeout: Option<Duration>,
    /// Find the command's host pid for the observer (named sandboxes).
    pub find_command: bool,
    /// `-v`: say what Landlock the kernel enforced once the command runs.
    pub verbose: bool,
    pub cgroup: Option<PathBuf>,
}

/// Runs until init exits; with a timeout, SIGTERM when it expires and SIGKILL after the
/// grace period, and then exit code `exit::TIMEOUT`.
pub fn supervise(
    chan: &SupervisorChannel,
    mask: &SigSet,
    sandbox: &mut Sandbox,
    watch: &Watch,
    mut pipes: Option<PipeRelay>,
    observer: &mut dyn Observer,
) -> Result<Ended> {
    let timeout = watch.timeout;
    let started = Instant::now();
    let mut deadline = timeout.map(|t| (started + t, Signal::SIGTERM));
    let mut timed_out = false;
    let signals = crate::runtime::signals::signalfd(mask)?;
    let mut report = Report::default();
    let mut relay: Option<Relay> = None;
    let mut chan_open = true;
    let mut status = None;

    while status.is_none() {
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if chan_open {
            fds.push(PollFd::new(chan.as_fd(), PollFlags::POLLIN));
        }
        // Which terminal fds this round polls: the relay may start during the round.
        let polled_master = relay.is_some();
        let polled_stdin = relay.as_ref().is_some_and(|r| r.stdin_open());
        if let Some(r) = &relay {
            fds.push(PollFd::new(r.master(), PollFlags::POLLIN));
            if polled_stdin {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        let wait = match deadline {
            Some((at, _)) => {
                let left = at.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(left.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
            }
            None => PollTimeout::NONE,
        };
        // The pipes' fds come last.
        let first_pipe = fds.len();
        let polled_pipes = pipes.as_ref().map(|p| p.watch(&mut fds));
        let ready = crate::sys::poll_ready(&mut fds, wait).context("poll")?;
        drop(fds);
        if let (Some(p), Some(polled)) = (&mut pipes, &polled_pipes) {
            p.pump(polled, &ready[first_pipe..first_pipe + polled.count()]);
        }

        if let Some((at, sig)) = deadline {
            if Instant::now() >= at {
                timed_out = true;
                let _ = kill(sandbox.pid, sig);
                deadline = (sig == Signal::SIGTERM).then(|| {
                    (
                        Instant::now() + crate::limits::TIMEOUT_GRACE,
                        Signal::SIGKILL,
                    )
                });
            }
        }
        let mut i = 0;
        if ready[i] {
            while let Some(info) = signals.read_signal().context("reading signalfd")? {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                match sig {
                    Some(Signal::SIGCHLD) => {
                        if let Some(s) = try_reap(sandbox)? {
                            status = Some(s);
                        }
                    }
                    Some(Signal::SIGWINCH) => {
                        if let Some(r) = &relay {
                            r.resize();
                        }
                    }
                    Some(sig) => {
                        let _ = kill(sandbox.pid, sig);
                    }
                    None => {}
                }
            }
        }
        i += 1;
        if chan_open {
            if ready[i] {
                match chan.recv()? {
                    Some((FromSandbox::Pty, Some(master))) => {
                        relay = Some(Relay::start(master).context("setting up the terminal")?);
                        chan.send(&ToSandbox::PtyReady)?;
                    }
                    Some((msg, _)) => {
                        if let Some(launch) = report.absorb(msg) {
                            observer.started(&started_event(sandbox, launch, watch))?;
                        }
                    }
                    None => chan_open = false,
                }
            }
            i += 1;
        }
        if let (Some(r), true) = (&mut relay, polled_master) {
            if ready[i] {
                // False once the command's side is closed; the exit is still to come.
                r.pump_output();
            }
            i += 1;
            if polled_stdin && ready[i] {
                r.pump_input();
            }
        }
        // A sandbox that has exited may still have its last messages queued.
        if status.is_none() && !chan_open {
            if let Some(s) = reap_blocking(sandbox)? {
                status = Some(s);
            }
        }
    }

    if let Some(r) = &mut relay {
        r.drain();
    }
    drop(relay);
    if let Some(p) = pipes {
        p.finish();
    }
    while chan_open {
        match chan.recv()? {
            Some((msg, _)) => {
                // Started this late: the command has ended already; nothing to record.
                let _ = report.absorb(msg);
            }
            None => chan_open = false,
        }
    }
    if timed_out {
        // What the command did once signalled is not the story: the timeout is.
        eprintln!("sbx: timed out after {:?}", timeout.unwrap_or_default());
        return Ok(Ended {
            code: crate::exit::TIMEOUT,
            signal: report.signal,
        });
    }
    let status = status.unwrap_or(WaitStatus::StillAlive);
    let signal = match (report.signal, report.exit_code, status) {
        (Some(sig), _, _) => Some(sig),
        (None, None, WaitStatus::Signaled(_, sig, _)) => Some(sig as i32),
        _ => None,
    };
    let code = outcome(report, status)?;
    Ok(Ended { code, signal })
}

fn started_event(sandbox: &Sandbox, launch: Launch, watch: &Watch) -> Started {
    if watch.verbose {
        eprintln!(
            "sbx: {}",
            crate::security::landlock::describe_enforced(launch.landlock)
        );
    }
    Started {
        init: sandbox.pid,
        command: if watch.find_command {
            command_on_host(sandbox.pid, launch.pid)
        } else {
            None
        },
        namespaces: launch.namespaces,
        cgroup: watch.cgroup.clone(),
    }
}

/// The host pid of init's child whose pid inside the sandbox is `inside`: the last field
/// of its `NSpid` line.
fn command_on_host(init: Pid, inside: i32) -> Option<Pid> {
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|ids| ids.split_whitespace().last())
                    .and_then(|id| id.parse::<i32>().ok())
                    == Some(inside)
            })
        })
        .map(Pid::from_raw)
}

fn try_reap(sandbox: &mut Sandbox) -> Result<Option<WaitStatus>> {
    match waitpid(sandbox.pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
            sandbox.reaped = true;
            Ok(Some(s))
        }
        Ok(_) => Ok(None),
        Err(Errno::ECHILD) => {
            sandbox.reaped = true;
            Ok(Some(WaitStatus::StillAlive))
        }
        Err(e) => Err(e).context("waitpid"),
    }
}

fn reap_blocking(sandbox: &mut Sandbox) -> Result<Option<WaitStatus>> {
    loop {
        match waitpid(sandbox.pid, None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                sandbox.reaped = true;
                return Ok(Some(s));
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                sandbox.reaped = true;
                return Ok(Some(WaitStatus::StillAlive));
            }
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}

/// Turns init's report and its wait status into sbx's exit code.
fn outcome(report: Report, status: WaitStatus) -> Result<i32> {
    if let Some(why) = report.setup_failed {
        bail!("{why}");
    }
    if let Some((code, message)) = report.exec_failed {
        if code == crate::exit::SBX_ERROR {
            bail!("{message}");
        }
        eprintln!("sbx: {message}");
        return Ok(code);
    }
    if let Some(code) = report.exit_code {
        return Ok(code);
    }
    match status {
        WaitStatus::Signaled(_, sig, _) => {
            eprintln!("sbx: the sandbox was killed by {sig}");
            Ok(crate::exit::signalled(sig as i32))
        }
        WaitStatus::Exited(_, code) => Err(anyhow!(
            "the sandbox's init exited with status {code} before reporting the command's outcome"
        )),
        _ => Err(anyhow!("the sandbox's init disappeared without a report")),
    }
}
