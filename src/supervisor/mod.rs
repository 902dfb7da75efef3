//! The parent side of a run: create the sandbox, feed it, wait for it, clean up.
//!
//! Sequence: block forwarded signals -> channel -> clone all namespaces -> id maps ->
//! `Go` -> supervise (forward signals, relay the terminal, collect the outcome) -> reap.

pub mod cgroup;
pub mod idmap;
mod net;
mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::plan::{Plan, UsernsMode};
use crate::runtime::namespaces::{namespace_flags, Namespaces};
use crate::runtime::signals;
use crate::runtime::stdio::TerminalPipes;
use crate::sync::{SupervisorChannel, ToSandbox};
use crate::sys::{self, Forked};

/// The sandbox's command is running.
#[derive(Debug, Clone)]
pub struct Started {
    pub init: Pid,
    /// The command's pid as the host sees it (for named sandboxes only: `exec` enters its
    /// namespaces, since init's own are closed to everyone by its being non-dumpable).
    pub command: Option<Pid>,
    /// Inode numbers by namespace type, when the plan reports status.
    pub namespaces: BTreeMap<String, u64>,
    /// The cgroup leaf, as a host path.
    pub cgroup: Option<PathBuf>,
}

/// How the sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// What sbx exits with.
    pub code: i32,
    /// The signal that killed the command, if one did.
    pub signal: Option<i32>,
}

/// Told about the sandbox's life: named sandboxes record their state, `--status-json`
/// writes a file. Each call happens once, in order; `finished` only after `started`.
pub trait Observer {
    fn started(&mut self, started: &Started) -> Result<()>;
    fn finished(&mut self, ended: &Ended);
}

/// Runs the plan's command in a new sandbox and returns the exit code sbx should exit with.
pub fn run(plan: &Plan, observer: &mut dyn Observer) -> Result<i32> {
    // Blocked before clone, so the child inherits the mask: no signal can kill the sandbox
    // half-built, and init and the parent both read them from a signalfd.
    let mask = signals::set(&[Signal::SIGCHLD, Signal::SIGWINCH]);
    mask.thread_block().context("blocking signals")?;

    // Before clone: the leaf and its limits exist before the sandbox does.
    let leaf = match &plan.limits.site {
        Some(site) => Some(cgroup::Leaf::create(site, &plan.limits.cgroup)?),
        None => None,
    };
    // `sbx exec` connects here; init serves it.
    let control = match &plan.instance {
        Some(paths) => Some(crate::runtime::control::listen(&paths.runtime)?),
        None => None,
    };
    // `--net sandbox:NAME`: into that sandbox's user and network namespaces; ours are made
    // inside them, and its id maps are ours. Host files stay reachable: our uid is the same.
    if let Some(join) = &plan.network.join {
        join_namespaces(join)?;
    }
    // Without a pty of its own, a terminal among our fds 0-2 reaches the sandbox as a pipe
    // we relay: a terminal fd passed on (SCM_RIGHTS to a longer-lived sandbox) would
    // outlive the run.
    // With the whole range: into the kept namespace, where our sandbox's own is nested and
    // we write its maps ourselves (no setuid helper); else per run, as before.
    let nested = enter_holder(plan);
    let pipes = if plan.tty {
        None
    } else {
        TerminalPipes::for_terminals()?
    };
    let (chan, child_chan) = SupervisorChannel::pair()?;
    let flags = namespace_flags(plan.network.mode, Namespaces::Create);
    // SAFETY: sbx is single-threaded here (no thread is ever started before a run), so the
    // child may do anything after the clone.
    let pid = match unsafe { sys::clone_process(flags.bits()) } {
        Ok(Forked::Child) => {
            drop(chan);
            crate::child::run(plan, child_chan, control, pipes.as_ref())
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(clone_error(e, nested.as_ref())),
    };
    drop(child_chan);
    drop(control);
    let pipes = pipes.map(TerminalPipes::into_relay);
    let mut sandbox = Sandbox { pid, reaped: false };

    if let Some(leaf) = &leaf {
        leaf.add(pid)?;
    }
    // The child prepares its mounts meanwhile; if it failed, its reason beats ours.
    if plan.network.join.is_none() {
        let written = match &nested {
            Some(nested) => crate::holder::write_nested(nested, pid.as_raw()),
            None => idmap::write(&plan.ids, pid.as_raw()),
        };
        if let Err(e) = written {
            return Err(chan.pending_failure().map_or(e, |why| anyhow::anyhow!(why)));
        }
    }
    // Dropped (stopped) when this function returns, before the sandbox's own guard.
    let zero_mapped = matches!(plan.ids.mode, idmap::IdMode::Full { .. })
        || (plan.ids.inside_uid == 0 && plan.ids.inside_gid == 0);
    let _network = match net::start(&plan.network, pid, zero_mapped) {
        Ok(n) => n,
        Err(e) => return Err(chan.pending_failure().map_or(e, |why| anyhow::anyhow!(why))),
    };
    chan.send(&ToSandbox::Go)?;
    let watch = wait::Watch {
        timeout: plan.limits.timeout,
        find_command: plan.instance.is_some(),
        verbose: plan.verbose,
        cgroup: leaf.as_ref().map(|l| l.path.clone()),
    };
    let ended = wait::supervise(&chan, &mask, &mut sandbox, &watch, pipes, observer)?;
    if let Some(leaf) = &leaf {
        for line in leaf.report() {
            eprintln!("sbx: {line}");
        }
    }
    observer.finished(&ended);
    Ok(ended.code)
}

/// Enters the user and network namespaces of a running sandbox, through a pidfd of its
/// command (checked to be the recorded process), and checks they are the ones its init
/// reported at start: a command that moved into nested namespaces (`unshare -Urn` under
/// `--allow-nested`) is not followed there, as `sbx exec` does not follow it.
fn join_namespaces(join: &crate::instance::Join) -> Result<()> {
    let fd = join.target.pidfd().ok_or_else(|| {
        anyhow::anyhow!("--net sandbox:{}: the sandbox has just ended", join.name)
    })?;
    nix::sched::setns(&fd, CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("--net sandbox:{}: enter its namespaces", join.name))?;
    join.check_namespaces("self")
}

/// Enters the holder's user namespace when the plan maps the whole range and asks for it;
/// None (and a line under `-v`) when it maps per run.
fn enter_holder(plan: &Plan) -> Option<crate::holder::Nested> {
    if plan.network.join.is_some() || !matches!(plan.ids.mode, idmap::IdMode::Full { .. }) {
        return None;
    }
    if plan.userns == UsernsMode::PerRun {
        if plan.verbose {
            eprintln!("sbx: userns: made per run, maps written by newuidmap/newgidmap (as asked)");
        }
        return None;
    }
    match crate::holder::enter(&plan.ids) {
        Ok(nested) => {
            if plan.verbose {
                let made = nested
                    .made
                    .as_ref()
                    .map_or(String::new(), |why| format!(", made now: {why}"));
                eprintln!(
                    "sbx: userns: nested in the kept user namespace of the holder (pid {}{made}); \
                     maps written by sbx",
                    nested.holder
                );
            }
            Some(nested)
        }
        Err(e) => {
            if plan.verbose {
                eprintln!(
                    "sbx: userns: no kept user namespace ({e:#}); newuidmap/newgidmap map this \
                     run"
                );
            }
            None
        }
    }
}

fn clone_error(e: std::io::Error, nested: Option<&crate::holder::Nested>) -> anyhow::Error {
    match (e.raw_os_error(), nested) {
        (Some(libc::ENOSPC) | Some(libc::EUSERS), Some(nested)) => nesting_refused(e, nested),
        (Some(libc::ENOSPC) | Some(libc::EUSERS), None) => anyhow::anyhow!(
            "cannot create the sandbox's namespaces ({e}): a limit on your namespaces is \
             reached (user.max_user_namespaces, or another user.max_*_namespaces); end other \
             sandboxes, or raise it (sysctl -w user.max_user_namespaces=15000)"
        ),
        (Some(libc::EPERM) | Some(libc::EACCES), _) => crate::error::HostFeature::new(
            "unprivileged user namespaces",
            format!(
                "cannot create the sandbox's namespaces ({e}); unprivileged user namespaces \
                 are disabled on this host; `sbx check` shows the setting that blocks them \
                 (kernel.unprivileged_userns_clone, user.max_user_namespaces or an AppArmor \
                 restriction)"
            ),
        )
        .into(),
        _ => crate::error::HostFeature::new(
            "unprivileged user namespaces",
            format!("cannot create the sandbox's namespaces ({e}); see `sbx check`"),
        )
        .into(),
    }
}

/// The kept user namespace refused a nested one (a `user.max_user_namespaces` limit, in it
/// or above it). This process is in it for good, so this run cannot map per run instead;
/// the holder is ended and the refusal recorded, so the next runs map per run for a while.
fn nesting_refused(e: std::io::Error, nested: &crate::holder::Nested) -> anyhow::Error {
    // Read inside the kept namespace: its own limit, which its owner may have lowered.
    let kept_limit = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| format!("; its own user.max_user_namespaces is {}", s.trim()))
        .unwrap_or_default();
    let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let why = format!(
        "the kept user namespace of the holder (pid {}) refused a nested one: {}{kept_limit}",
        nested.holder,
        errno.desc()
    );
    match crate::holder::refuse(nested.holder, &why) {
        Ok(()) => anyhow::anyhow!(
            "cannot create the sandbox's user namespace: {why}. sbx ended it, and runs map \
             per run through newuidmap/newgidmap for the next {} minutes: run the command \
             again. If it fails again, a limit on your namespaces is reached \
             (user.max_user_namespaces, or another user.max_*_namespaces): end other \
             sandboxes, or raise it",
            crate::holder::REFUSED_FOR_SECS / 60
        ),
        Err(end) => anyhow::anyhow!(
            "cannot create the sandbox's user namespace: {why}, and sbx could not end it \
             ({end:#}); run `sbx system reset`, then SBX_USERNS=per-run sbx run ..."
        ),
    }
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
