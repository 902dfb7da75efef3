//! The runner's loop while the sandbox runs: forward signals, relay the terminal, read the
//! outcome from init, reap. One `poll` over a signalfd, the channel and the terminal.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{Ended, Observer, Sandbox, Started};
use crate::runtime::poll::Poller;
use crate::runtime::relay::{RelayFd, Relays};
use crate::runtime::signals;
use crate::runtime::stdio::PipeRelay;
use crate::security::landlock::Enforced;
use crate::sync::{self, FromSandbox, SupervisorChannel, ToSandbox};

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
    pipes: Option<PipeRelay>,
    observer: &mut dyn Observer,
) -> Result<Ended> {
    let mut state = Loop {
        chan,
        sandbox,
        watch,
        observer,
        signals: signals::signalfd(mask)?,
        relays: Relays::new(None, pipes),
        report: Report::default(),
        chan_open: true,
        status: None,
        deadline: watch.timeout.map(|t| (Instant::now() + t, Signal::SIGTERM)),
        timed_out: false,
    };
    while state.status.is_none() {
        state.round()?;
    }
    state.finish()
}

/// What one poll round can find ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    Channel,
    Terminal(RelayFd),
}

/// The supervisor's loop and what it has learnt so far.
struct Loop<'a> {
    chan: &'a SupervisorChannel,
    sandbox: &'a mut Sandbox,
    watch: &'a Watch,
    observer: &'a mut dyn Observer,
    signals: SignalFd,
    relays: Relays,
    report: Report,
    /// Until init closes its end (it has exited).
    chan_open: bool,
    /// Init's wait status, once reaped.
    status: Option<WaitStatus>,
    /// When to send which signal next, with a timeout.
    deadline: Option<(Instant, Signal)>,
    timed_out: bool,
}

impl Loop<'_> {
    fn round(&mut self) -> Result<()> {
        let ready = {
            let mut poller = Poller::new();
            poller.read(Source::Signals, self.signals.as_fd());
            if self.chan_open {
                poller.read(Source::Channel, self.chan.as_fd());
            }
            self.relays.watch(&mut poller, Source::Terminal);
            poller.wait(self.poll_timeout())?
        };
        self.relays.pump(&ready, Source::Terminal);
        self.check_deadline();
        if ready.contains(Source::Signals) {
            self.on_signals()?;
        }
        if ready.contains(Source::Channel) {
            self.on_message()?;
        }
        // A sandbox that has exited may still have its last messages queued.
        if self.status.is_none() && !self.chan_open {
            self.status = reap_blocking(self.sandbox)?;
        }
        Ok(())
    }

    /// Until the deadline, at most a minute (the clock may jump).
    fn poll_timeout(&self) -> PollTimeout {
        match self.deadline {
            Some((at, _)) => {
                let left = at.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(left.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
            }
            None => PollTimeout::NONE,
        }
    }

    fn check_deadline(&mut self) {
        let Some((at, sig)) = self.deadline else {
            return;
        };
        if Instant::now() >= at {
            self.timed_out = true;
            let _ = kill(self.sandbox.pid, sig);
            self.deadline = (sig == Signal::SIGTERM).then(|| {
                (
                    Instant::now() + crate::limits::TIMEOUT_GRACE,
                    Signal::SIGKILL,
                )
            });
        }
    }

    fn on_signals(&mut self) -> Result<()> {
        for sig in signals::pending(&self.signals)? {
            match sig {
                Signal::SIGCHLD => {
                    if let Some(s) = try_reap(self.sandbox)? {
                        self.status = Some(s);
                    }
                }
                Signal::SIGWINCH => self.relays.resize(),
                sig => {
                    let _ = kill(self.sandbox.pid, sig);
                }
            }
        }
        Ok(())
    }

    fn on_message(&mut self) -> Result<()> {
        match self.chan.recv()? {
            Some((FromSandbox::Pty, Some(master))) => {
                self.relays.start_pty(master)?;
                self.chan.send(&ToSandbox::PtyReady)?;
            }
            Some((FromSandbox::Pty, None)) => {
                bail!("the sandbox's terminal came without its descriptor")
            }
            Some((msg, _)) => {
                if let Some(launch) = self.report.absorb(msg) {
                    say_landlock(self.watch, &launch);
                    let started = started_event(self.sandbox, launch, self.watch);
                    self.observer.started(&started)?;
                }
            }
            None => self.chan_open = false,
        }
        Ok(())
    }

    /// Init has exited: the terminal's last output, init's last messages, the verdict.
    fn finish(mut self) -> Result<Ended> {
        std::mem::take(&mut self.relays).finish();
        while let Some((msg, _)) = self.chan.recv()? {
            // Started this late: the command has ended already; nothing to record.
            if let Some(launch) = self.report.absorb(msg) {
                say_landlock(self.watch, &launch);
            }
        }
        if self.timed_out {
            // What the command did once signalled is not the story: the timeout is.
            let timeout = self.watch.timeout.unwrap_or_default();
            eprintln!("sbx: timed out after {timeout:?}");
            return Ok(Ended {
                code: crate::exit::TIMEOUT,
                signal: self.report.signal,
            });
        }
        let status = self.status.unwrap_or(WaitStatus::StillAlive);
        let signal = match (self.report.signal, self.report.exit_code, status) {
            (Some(sig), _, _) => Some(sig),
            (None, None, WaitStatus::Signaled(_, sig, _)) => Some(sig as i32),
            _ => None,
        };
        let code = outcome(self.report, status)?;
        Ok(Ended { code, signal })
    }
}

/// `-v`: what the kernel enforced, now that the command runs under it.
fn say_landlock(watch: &Watch, launch: &Launch) {
    if watch.verbose {
        eprintln!(
            "sbx: {}",
            crate::security::landlock::describe_enforced(launch.landlock)
        );
    }
}

fn started_event(sandbox: &Sandbox, launch: Launch, watch: &Watch) -> Started {
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
