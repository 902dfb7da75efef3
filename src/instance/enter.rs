//! `sbx exec`: another process inside a running named sandbox.
//!
//! Who does what:
//! - `sbx exec` (stays outside): builds the same Plan the sandbox was created with, joins
//!   its cgroup leaf (so all it starts is in it), connects to its control socket, relays
//!   the terminal, forwards signals, and learns the outcome from init.
//! - an intermediate process: enters the namespaces through a pidfd of the sandbox's
//!   command (user first, then mount, pid, net, uts, ipc, cgroup, in one
//!   `setns`), and forks once more inside the pid namespace.
//! - a starter, inside: forks the new process and exits at once, so that the new process
//!   is orphaned *inside* the pid namespace and becomes a child of the sandbox's init,
//!   which reaps it and reports its end to `sbx exec`.
//! - the new process: checks it is in the sandbox's namespaces, announces itself with a
//!   pidfd, waits for `Go`, and then takes the very path the sandbox's command took:
//!   session, terminal, working directory, rlimits, capabilities, no_new_privs, Landlock,
//!   seccomp, execve.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::PollTimeout;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use super::cmd::{find, load_state};
use super::state::{State, Tracking};
use super::{control, Dirs};
use crate::cli::ExecArgs;
use crate::exit::SBX_ERROR;
use crate::plan::Plan;
use crate::runtime::command::{self, Report};
use crate::runtime::namespaces::{namespace_flags, Namespaces};
use crate::runtime::poll::Poller;
use crate::runtime::relay::{RelayFd, Relays};
use crate::runtime::signals;
use crate::runtime::stdio::TerminalPipes;
use crate::supervisor::idmap::IdMode;
use crate::sync::{
    CommandReceiver, CommandReport, EnterChannel, EnteredChannel, ExecControl, FromEntered,
    FromInit, ToEntered,
};
use crate::sys::exit_now;

pub fn exec(args: &ExecArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    let (paths, record) = find(&dirs, &args.name)?;
    // Held until init has taken the new process: `rm` or `stop` waits for that.
    let lock = dirs.lock()?;
    let loaded = load_state(&paths);
    let Some((state, tracking)) = loaded.as_ref().and_then(|s| s.running().map(|t| (s, t))) else {
        bail!(
            "sandbox {} is not running; start it with `sbx start {}`",
            args.name,
            args.name
        );
    };

    // The recorded plan with this command: the same hardening, never more.
    let plan = super::cmd::exec_plan(&record, args)?;

    // The cgroup first, for this process and so for all it starts: /sys/fs/cgroup is
    // read-only inside.
    if let Some(leaf) = &tracking.cgroup {
        if let Err(e) = join_cgroup(leaf) {
            if let Some(systemd_run) = crate::limits::systemd_user_manager() {
                // Outside any delegated subtree (a login session's scope): from a scope
                // of our own the move is ours to make.
                drop(lock);
                return Err(crate::limits::rerun_in_scope(&systemd_run));
            }
            return Err(e);
        }
    }
    let control = control::connect(&paths.runtime)
        .with_context(|| format!("sandbox {} does not answer", args.name))?;
    let target = enter_target(tracking)
        .ok_or_else(|| anyhow!("sandbox {} has no command process to enter", args.name))?;

    // Without -t, the terminals among our fds 0-2 reach the new process as pipes we relay:
    // a terminal fd would outlive `sbx exec` in whatever the process leaves behind.
    let pipes = if plan.tty {
        None
    } else {
        TerminalPipes::for_terminals()?
    };
    let mask = signals::set(&[Signal::SIGWINCH]);
    mask.thread_block().context("blocking signals")?;
    let (mine, theirs) = EnterChannel::pair()?;
    let (report_r, report_w) = CommandReceiver::pair()?;
    spawn(&plan, state, target, pipes.as_ref(), theirs, report_w)?;
    let pipes = pipes.map(TerminalPipes::into_relay);
    let (pid, pidfd) = mine
        .wait_hello()
        .with_context(|| format!("cannot enter sandbox {}", args.name))?;

    // Init will report how it ends; then it may start.
    control
        .claim(pid)
        .with_context(|| format!("sandbox {} did not take the process", args.name))?;
    drop(lock);
    mine.send(&ToEntered::Go)?;
    let mut relays = Relays::new(None, pipes);
    if plan.tty {
        relays.start_pty(mine.wait_pty()?)?;
        mine.send(&ToEntered::PtyReady)?;
    }
    if let Report::Failed { code, message } = command::read_report(&report_r) {
        if code == SBX_ERROR {
            bail!("{message}");
        }
        eprintln!("sbx: {message}");
        return Ok(code);
    }
    wait(&control, &mask, &pidfd, relays)
}

/// Forks the intermediate process, which enters the sandbox and starts the new process
/// there, and reaps it. Our other descriptors (our end of the channels, the control
/// socket) the intermediate closes before it enters.
fn spawn(
    plan: &Plan,
    state: &State,
    target: OwnedFd,
    pipes: Option<&TerminalPipes>,
    chan: EnteredChannel,
    report: CommandReport,
) -> Result<()> {
    // SAFETY: sbx is single-threaded; the child only enters and forks.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let (chan, e) = match intermediate(plan, state, &target, pipes, chan, report) {
                Ok(never) => match never {},
                Err(failure) => failure,
            };
            let _ = chan.send(&FromEntered::Failed(format!("{e:#}")));
            exit_now(SBX_ERROR)
        }
        ForkResult::Parent { child } => {
            drop((chan, report, target));
            let _ = waitpid(child, None);
            Ok(())
        }
    }
}

fn join_cgroup(leaf: &std::path::Path) -> Result<()> {
    std::fs::write(leaf.join("cgroup.procs"), "0").with_context(|| {
        format!(
            "cannot join the sandbox's cgroup {}, so its limits would not apply",
            leaf.display()
        )
    })
}

/// The command's process: dumpable (it exec'd), unlike init, so the kernel lets our own
/// user enter through it; checked to be the recorded one.
fn enter_target(tracking: &Tracking) -> Option<OwnedFd> {
    tracking.command?.pidfd()
}

/// Outside still: namespaces, then fork into the pid namespace. On failure the
/// channel goes back with the error, to be reported.
fn intermediate(
    plan: &Plan,
    state: &State,
    target: &OwnedFd,
    pipes: Option<&TerminalPipes>,
    chan: EnteredChannel,
    report: CommandReport,
) -> Result<std::convert::Infallible, (EnteredChannel, anyhow::Error)> {
    let result = (|| -> Result<()> {
        if let Some(pipes) = pipes {
            pipes.install().context("stdio pipes")?;
        }
        crate::sys::close_fds_except(&[
            chan.as_fd().as_raw_fd(),
            report.as_fd().as_raw_fd(),
            target.as_raw_fd(),
        ])
        .context("close_range")?;
        nix::sched::setns(
            target,
            namespace_flags(plan.network.mode, Namespaces::Enter),
        )
        .context("enter the sandbox's namespaces")?;
        Ok(())
    })();
    if let Err(e) = result {
        return Err((chan, e));
    }
    // SAFETY: single-threaded; the child forks again and exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: single-threaded; the grandchild becomes the new process.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => inside(plan, &state.namespaces, chan, report),
                // The starter: its exit hands the new process to the sandbox's init.
                Ok(ForkResult::Parent { .. }) => exit_now(0),
                Err(e) => {
                    let _ = chan.send(&FromEntered::Failed(format!(
                        "fork inside the sandbox: {e}"
                    )));
                    exit_now(SBX_ERROR)
                }
            }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = waitpid(child, None);
            exit_now(0)
        }
        Err(e) => Err((chan, anyhow!("fork inside the sandbox: {e}"))),
    }
}

/// The new process, inside every namespace of the sandbox.
fn inside(
    plan: &Plan,
    namespaces: &BTreeMap<String, u64>,
    chan: EnteredChannel,
    report: CommandReport,
) -> ! {
    let result = (|| -> Result<Option<OwnedFd>> {
        check_namespaces(namespaces)?;
        if matches!(plan.ids.mode, IdMode::Full { .. }) {
            nix::unistd::setgroups(&[]).context("setgroups")?;
        }
        let me = nix::unistd::getpid().as_raw();
        let pidfd = crate::sys::pidfd_open(me).context("pidfd_open")?;
        chan.send_fd(&FromEntered::Hello { pid: me }, pidfd.as_fd())?;
        drop(pidfd);
        chan.wait_go()?;
        if plan.tty {
            let pty = command::open_pty()?;
            chan.send_fd(&FromEntered::Pty, pty.master.as_fd())?;
            chan.wait_pty_ready()?;
            return Ok(Some(pty.slave));
        }
        Ok(None)
    })();
    match result {
        Ok(pty) => {
            drop(chan);
            command::exec(plan, pty, report)
        }
        Err(e) => {
            let _ = chan.send(&FromEntered::Failed(format!("{e:#}")));
            exit_now(SBX_ERROR)
        }
    }
}

/// The namespaces we are in must be the ones init reported: the command could have moved
/// into nested ones (with --allow-nested), and we must not follow it there.
fn check_namespaces(expected: &BTreeMap<String, u64>) -> Result<()> {
    for (ns, ino) in expected {
        let here = std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .with_context(|| format!("/proc/self/ns/{ns}"))?
            .ino();
        if here != *ino {
            bail!(
                "the sandbox's command has left the sandbox's {ns} namespace; \
                 `sbx exec` will not enter a nested one"
            );
        }
    }
    Ok(())
}

/// What one poll round can find ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    Control,
    Terminal(RelayFd),
}

/// Relays the terminal and signals until init reports the process's end.
fn wait(control: &ExecControl, mask: &SigSet, pidfd: &OwnedFd, mut relays: Relays) -> Result<i32> {
    let signals = signals::signalfd(mask)?;
    loop {
        let ready = {
            let mut poller = Poller::new();
            poller.read(Source::Signals, signals.as_fd());
            poller.read(Source::Control, control.as_fd());
            relays.watch(&mut poller, Source::Terminal);
            poller.wait(PollTimeout::NONE)?
        };
        relays.pump(&ready, Source::Terminal);
        if ready.contains(Source::Signals) {
            for sig in signals::pending(&signals).unwrap_or_default() {
                match sig {
                    Signal::SIGWINCH => relays.resize(),
                    sig => {
                        let _ = crate::sys::pidfd_send_signal(pidfd.as_fd(), sig as i32);
                    }
                }
            }
        }
        if ready.contains(Source::Control) {
            let outcome = control.recv()?;
            // The process has ended: nothing in the sandbox keeps a way to our terminal.
            relays.finish();
            return match outcome {
                Some((FromInit::Ended(ended), _)) => Ok(ended.code()),
                Some((FromInit::Claimed, _)) => Err(anyhow!(
                    "the sandbox's init sent Claimed twice; expected Ended"
                )),
                None => {
                    // Init is gone, and the kernel killed everything in the namespace.
                    eprintln!("sbx: the sandbox ended while the command ran");
                    Ok(crate::exit::signalled(Signal::SIGKILL as i32))
                }
            };
        }
    }
}
