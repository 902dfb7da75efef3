//! The child side of a run, from `clone` to the sandbox's init.
//!
//! Runs as the future PID 1 of the new pid namespace, holding every capability of the new
//! user namespace. It never panics and never returns: any failure becomes a `Failed`
//! message for the parent and exit status `exit::SBX_ERROR`.

mod net;
mod overlay;
pub mod rootfs;
mod skeleton;

use std::convert::Infallible;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use crate::exit::SBX_ERROR;
use crate::plan::Plan;
use crate::runtime::stdio::TerminalPipes;
use crate::supervisor::idmap::IdMode;
use crate::sync::{FromSandbox, SandboxChannel};

/// Entry point after clone, in the child. Never returns.
pub fn run(
    plan: &Plan,
    chan: SandboxChannel,
    control: Option<OwnedFd>,
    stdio: Option<&TerminalPipes>,
) -> ! {
    let failure = match setup(plan, &chan, control, stdio) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&FromSandbox::Failed(format!("{failure:#}")));
    // Without the parent's atexit handlers or the buffers of its copy of stdio.
    crate::sys::exit_now(SBX_ERROR)
}

fn setup(
    plan: &Plan,
    chan: &SandboxChannel,
    control: Option<OwnedFd>,
    stdio: Option<&TerminalPipes>,
) -> Result<Infallible> {
    die_with_parent()?;
    // The relay's pipes in place of the caller's terminals, before the originals close.
    if let Some(pipes) = stdio {
        pipes.install().context("stdio pipes")?;
    }
    close_stray_fds(chan, control.as_ref())?;
    // A session of our own: the caller's terminal is not our controlling terminal, so
    // terminal signals reach only the runner, which forwards them once.
    nix::unistd::setsid().context("setsid")?;
    let sources = rootfs::prepare(plan)?;
    chan.wait_go().context("waiting for the supervisor")?;
    drop_supplementary_groups(plan)?;
    // Now in its cgroup leaf (when it has one), which the namespace makes its `/`.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .context("unshare the cgroup namespace")?;
    net::before_root(plan)?;
    rootfs::build(plan, sources)?;
    if let Some(name) = &plan.hostname {
        set_hostname(name)?;
    }
    net::setup(plan)?;
    crate::init::run(plan, chan, control)
}

/// If the runner dies, even by SIGKILL, the kernel kills init and with it the sandbox.
fn die_with_parent() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("PR_SET_PDEATHSIG")
}

/// Only stdin, stdout, stderr, the channel and the control socket survive into the sandbox.
fn close_stray_fds(chan: &SandboxChannel, control: Option<&OwnedFd>) -> Result<()> {
    let mut keep = vec![chan.as_fd().as_raw_fd()];
    keep.extend(control.map(|c| c.as_raw_fd()));
    crate::sys::close_fds_except(&keep).context("close_range")
}

/// The caller's host groups would still grant access to group-owned host files; with a
/// full gid map (setgroups allowed) we drop them. A single-id map forbids setgroups.
fn drop_supplementary_groups(plan: &Plan) -> Result<()> {
    if matches!(plan.ids.mode, IdMode::Full { .. }) {
        nix::unistd::setgroups(&[]).context("setgroups")?;
        die_with_parent()?;
    }
    Ok(())
}

/// The sandbox's hostname, in its own UTS namespace. A container whose seccomp profile
/// denies `sethostname` (podman's and docker's do, for containers without CAP_SYS_ADMIN)
/// leaves the sandbox with the container's name: a warning, not a failure, since the UTS
/// namespace is the sandbox's own either way and nothing inside can change it.
fn set_hostname(name: &str) -> Result<()> {
    match nix::unistd::sethostname(name) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) if crate::probe::userns::under_seccomp_filter() => {
            eprintln!(
                "sbx: warning: cannot set the hostname to {name}: the seccomp filter sbx runs \
                 under (a container's) denies sethostname; the sandbox keeps the container's \
                 hostname in a UTS namespace of its own"
            );
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("set hostname {name}")),
    }
}
