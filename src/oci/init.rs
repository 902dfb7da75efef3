//! The container process, from its clone to the exec of process.args, and the
//! intermediate process that joins the config's namespaces before cloning it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{ForkResult, Gid, Uid};

use super::config::Container;
use super::process::{self, Prepared};
use super::state::{OciState, Status};
use super::{console, hooks, mounts, ContainerChannel, FromContainer, ToContainer};
use crate::sys::{exit_now, Forked};

/// What the container process inherits from `create`.
pub struct Handoff {
    pub fifo: OwnedFd,
    pub console: Option<OwnedFd>,
    pub seccomp: Option<super::plug::Filter>,
    pub preserve_fds: u32,
    /// Device nodes cannot be made: bind the host's.
    pub in_userns: bool,
}

/// Forks the intermediate process, which starts the container process as our child and
/// reports its pid on `chan`; returns once the intermediate has exited.
pub fn spawn(c: &Container, h: &Handoff, chan: ContainerChannel) -> Result<()> {
    // SAFETY: sbx-oci is single-threaded (it starts no thread), so the child may do
    // anything after fork.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(chan);
            nix::sys::wait::waitpid(child, None).context("wait for the intermediate process")?;
            Ok(())
        }
        ForkResult::Child => intermediate(c, h, chan),
    }
}

fn intermediate(c: &Container, h: &Handoff, chan: ContainerChannel) -> ! {
    let joined = (|| -> Result<()> {
        for (flag, path) in &c.joins {
            let fd: OwnedFd = nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_context(|| format!("open namespace {}", path.display()))?;
            nix::sched::setns(fd, *flag)
                .with_context(|| format!("join namespace {}", path.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = joined {
        let _ = chan.send(&FromContainer::Failed(format!("{e:#}")));
        exit_now(1);
    }
    let flags = c.new_namespaces | CloneFlags::CLONE_PARENT;
    // SAFETY: single-threaded (a fork of sbx-oci); the clone is a fork with namespaces.
    match unsafe { crate::sys::clone_process(flags.bits()) } {
        Ok(Forked::Child) => container(c, h, chan),
        Ok(Forked::Parent(pid)) => {
            let _ = chan.send(&FromContainer::Child(pid.as_raw()));
            exit_now(0)
        }
        Err(e) => {
            let _ = chan.send(&FromContainer::Failed(format!(
                "create the container's namespaces: {e}"
            )));
            exit_now(1)
        }
    }
}

fn container(c: &Container, h: &Handoff, chan: ContainerChannel) -> ! {
    let (prepared, state, proc) = match setup(c, h, &chan) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = chan.send(&FromContainer::Failed(format!("{e:#}")));
            exit_now(1)
        }
    };
    if chan.send(&FromContainer::Ready).is_err() {
        exit_now(1);
    }
    drop(chan);
    if let Err(e) = wait_for_start(&h.fifo, proc.as_ref()) {
        eprintln!("sbx-oci: {e:#}");
        exit_now(1);
    }
    // The runtime's /proc is not for what runs next (it is close-on-exec as well).
    drop(proc);
    if c.process.terminal && c.process.console_size.is_none() {
        console::wait_for_size();
    }
    let start = c
        .spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().clone())
        .unwrap_or_default();
    if let Err(e) = hooks::run(&start, "startContainer", &state, Status::Created) {
        eprintln!("sbx-oci: {e:#}");
        exit_now(1);
    }
    let (code, message) = process::exec(&prepared, h.preserve_fds, h.seccomp.as_ref());
    eprintln!("sbx-oci: {message}");
    exit_now(code)
}

/// Everything before the wait for `start`, in order; with, for a container without a
/// mount namespace of its own, the runtime's `/proc`.
fn setup(
    c: &Container,
    h: &Handoff,
    chan: &ContainerChannel,
) -> Result<(Prepared, OciState, Option<OwnedFd>)> {
    let state = chan.expect("Go", |m, _| match m {
        ToContainer::Go(state) => Ok(*state),
        other => Err(other),
    })?;
    if c.new_namespaces.contains(CloneFlags::CLONE_NEWUSER) {
        // Root of the new user namespace when the maps have a root; the capabilities
        // from the clone either way.
        let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    if c.new_cgroup_ns {
        // Now, in the cgroup create placed us in, so that it is our cgroup root.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).context("create the cgroup namespace")?;
    }
    let setgroups_denied = process::setgroups_denied();
    let proc = if c.own_mount_ns {
        mounts::isolate(c)?;
        let root = mounts::build(c)?;
        run_creation_hooks(c, chan, &state)?;
        mounts::finish(root.as_fd(), c, h.in_userns)?;
        set_names(c)?;
        mounts::pivot(root, c)?;
        None
    } else {
        // In the runtime's mount namespace: nothing may be mounted.
        run_creation_hooks(c, chan, &state)?;
        set_names(c)?;
        Some(mounts::chroot(c)?)
    };
    match &h.console {
        Some(socket) => console::attach(
            socket,
            c.process.console_size,
            (c.process.uid, c.process.gid),
        )?,
        None => {
            // A session of its own: the caller's terminal (if any) is not its controlling one.
            let _ = nix::unistd::setsid();
        }
    }
    let prepared = process::prepare(&c.process, h.seccomp.as_ref(), setgroups_denied)?;
    Ok((prepared, state, proc))
}

/// `hostname` and `domainname`, in the container's uts namespace.
fn set_names(c: &Container) -> Result<()> {
    if let Some(name) = c.spec.hostname().as_deref().filter(|n| !n.is_empty()) {
        nix::unistd::sethostname(name).with_context(|| format!("set hostname {name:?}"))?;
    }
    if let Some(name) = c.spec.domainname().as_deref().filter(|n| !n.is_empty()) {
        // SAFETY: the pointer and length describe `name`'s bytes for the call.
        let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if ret != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("set domainname {name:?}"));
        }
    }
    Ok(())
}

/// The prestart and createRuntime hooks (run by `create`, in the runtime's namespaces),
/// then createContainer (here, in the container's, before the pivot).
fn run_creation_hooks(c: &Container, chan: &ContainerChannel, state: &OciState) -> Result<()> {
    let Some(h) = c.spec.hooks().as_ref() else {
        return Ok(());
    };
    #[allow(deprecated)]
    let runtime_side = h.prestart().is_some() || h.create_runtime().is_some();
    if runtime_side {
        chan.send(&FromContainer::RunHooks)?;
        chan.expect("HooksDone", |m, _| match m {
            ToContainer::HooksDone => Ok(()),
            other => Err(other),
        })?;
    }
    let create = h.create_container().clone().unwrap_or_default();
    hooks::run(&create, "createContainer", state, Status::Creating)
}

/// The signals whose default is to end a process, which a created container's pid 1 (with
/// no handler, the kernel ignores them) must still obey, as runc's does: `kill ID TERM`
/// before `start` stops it.
const ENDING: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

extern "C" fn end_on_signal(signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(128 + signal) }
}

fn set_ending_handlers(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    for signal in ENDING {
        // SAFETY: the handler only calls _exit (async-signal-safe); SIG_DFL needs nothing.
        // A seccomp profile refusing rt_sigaction leaves the kernel's default, as before.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &action) };
    }
}

/// Blocks until `start` opens the fifo for reading, then tells it we are going. Until
/// then the ending signals end it (exit 128 + N). The fifo is reopened through the
/// container's `/proc`, or `proc` (the runtime's) when given.
fn wait_for_start(fifo: &OwnedFd, proc: Option<&OwnedFd>) -> Result<()> {
    set_ending_handlers(SigHandler::Handler(end_on_signal));
    let flags = nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC;
    let fd: OwnedFd = match proc {
        Some(proc) => nix::fcntl::openat(
            proc.as_fd(),
            format!("self/fd/{}", fifo.as_raw_fd()).as_str(),
            flags,
            nix::sys::stat::Mode::empty(),
        ),
        None => nix::fcntl::open(
            format!("/proc/self/fd/{}", fifo.as_raw_fd()).as_str(),
            flags,
            nix::sys::stat::Mode::empty(),
        ),
    }
    .context("open exec.fifo to wait for start (the container needs /proc mounted)")?;
    set_ending_handlers(SigHandler::SigDfl);
    nix::unistd::write(&fd, b"0").context("write exec.fifo")?;
    Ok(())
}
