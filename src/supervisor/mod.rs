//! The parent side of a run: create the sandbox, feed it, wait for it, clean up.
//!
//! Sequence: block forwarded signals -> channel -> clone all namespaces -> id maps ->
//! `Go` -> supervise (forward signals, relay the terminal, collect the outcome) -> reap.

pub mod cgroup;
pub mod idmap;
mod net;
mod tty;
mod wait;

use anyhow::{Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::plan::Plan;
use crate::profile::NetworkMode;
use crate::sync::{Channel, Msg};
use crate::sys::{self, Forked};

/// Signals the runner passes on to the command.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Runs the plan's command in a new sandbox and returns the exit code sbx should exit with.
pub fn run(plan: &Plan) -> Result<i32> {
    // Blocked before clone, so the child inherits the mask: no signal can kill the sandbox
    // half-built, and init collects them with sigwait. The parent reads them from a signalfd.
    let mask = supervisor_signals();
    mask.thread_block().context("blocking signals")?;

    // Before clone: the leaf and its limits exist before the sandbox does.
    let leaf = match &plan.limits.site {
        Some(site) => Some(cgroup::Leaf::create(site, &plan.limits.cgroup)?),
        None => None,
    };
    let (chan, child_chan) = Channel::pair()?;
    // SAFETY: sbx is single-threaded here (no thread is ever started before a run), so the
    // child may do anything after the clone.
    let pid = match unsafe { sys::clone_process(namespace_flags(plan).bits()) } {
        Ok(Forked::Child) => {
            drop(chan);
            crate::child::run(plan, child_chan)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(clone_error(e)),
    };
    drop(child_chan);
    let mut sandbox = Sandbox { pid, reaped: false };

    if let Some(leaf) = &leaf {
        leaf.add(pid)?;
    }
    // The child prepares its mounts meanwhile; if it failed, its reason beats ours.
    if let Err(e) = idmap::write(&plan.ids, pid.as_raw()) {
        return Err(chan.pending_failure().map_or(e, |why| anyhow::anyhow!(why)));
    }
    // Dropped (stopped) when this function returns, before the sandbox's own guard.
    let zero_mapped = matches!(plan.ids.mode, idmap::IdMode::Full { .. })
        || (plan.ids.inside_uid == 0 && plan.ids.inside_gid == 0);
    let _network = match net::start(&plan.network, pid, zero_mapped) {
        Ok(n) => n,
        Err(e) => return Err(chan.pending_failure().map_or(e, |why| anyhow::anyhow!(why))),
    };
    chan.send(&Msg::Go)?;
    let code = wait::supervise(&chan, &mask, &mut sandbox, plan.limits.timeout)?;
    if let Some(leaf) = &leaf {
        for line in leaf.report() {
            eprintln!("sbx: {line}");
        }
    }
    Ok(code)
}

fn namespace_flags(plan: &Plan) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    // The cgroup namespace comes later: the child unshares it once it is in its leaf, so
    // the leaf is what it sees as `/`.
    if plan.network.mode != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

fn supervisor_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(*sig);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

fn clone_error(e: std::io::Error) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "unprivileged user namespaces are disabled on this host; `sbx check` shows the \
             setting that blocks them (kernel.unprivileged_userns_clone, \
             user.max_user_namespaces or an AppArmor restriction)"
        }
        Some(libc::ENOSPC) | Some(libc::EUSERS) => {
            "the per-user namespace limit is reached; raise user.max_user_namespaces"
        }
        _ => "see `sbx check`",
    };
    crate::error::HostFeature::new(
        "unprivileged user namespaces",
        format!("cannot create the sandbox's namespaces ({e}); {hint}"),
    )
    .into()
}

/// The sandbox's init as the supervisor sees it. Dropping it before it was reaped (an error
/// path) kills the whole sandbox: init is PID 1 of its namespace, so everything goes with it.
pub struct Sandbox {
    pub pid: Pid,
    pub reaped: bool,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}
