//! `exec`: another process in a running container. It joins the container's cgroup and,
//! through a pidfd of its process, every namespace of it that differs from ours, then
//! takes the same last steps as the container's own process (process.rs).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Process;

use super::cli::ExecArgs;
use super::config::{self, ProcessPlan};
use super::state::{Dir, Status};
use super::{console, plug, process, ContainerChannel, FromContainer, RuntimeChannel, ToContainer};
use crate::sys::{exit_now, Forked};

const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

pub fn exec(root: &Path, args: &ExecArgs) -> Result<i32> {
    let dir = Dir::open(root, &args.id)?;
    let record = dir.record()?;
    if dir.status(&record) != Status::Running {
        bail!(
            "container {} is not running: exec needs a running container",
            args.id
        );
    }
    let config = dir.config()?;
    let plan = process_of(args, &config)?;
    let seccomp = plug::seccomp(config.linux().as_ref().and_then(|l| l.seccomp().as_ref()))?;
    let console = match (&args.console_socket, plan.terminal) {
        (Some(path), true) => Some(OwnedFd::from(
            UnixStream::connect(path)
                .with_context(|| format!("connect to the console socket {}", path.display()))?,
        )),
        (None, true) => bail!("a terminal needs --console-socket"),
        (_, false) => None,
    };
    let pid = record.process.pid;
    let mut flags = CloneFlags::empty();
    for (name, flag) in NAMESPACES {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
            .with_context(|| format!("read the container's {name} namespace"))?;
        let ours = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if ours.as_ref() != Some(&theirs) {
            flags |= *flag;
        }
    }
    // All this process starts is then in the container's cgroups.
    if let Err(e) = record.cgroups.enter(std::process::id()) {
        if nix::unistd::geteuid().is_root() && !super::state::in_user_namespace() {
            return Err(e);
        }
    }
    let pidfd = record
        .process
        .pidfd()
        .with_context(|| format!("container {} is not running", args.id))?;
    let chroot = chroot_root(&record, &args.id)?;
    let (mine, theirs) = RuntimeChannel::pair()?;
    let entering = Entering {
        pidfd,
        flags,
        chroot,
        // The container's user namespace, which this process joins (or shares), read
        // through our /proc: the container's may be missing or of another pid namespace.
        setgroups_denied: std::fs::read_to_string(format!("/proc/{pid}/setgroups"))
            .is_ok_and(|s| s.trim() == "deny"),
        plan: &plan,
        console,
        seccomp,
        preserve_fds: args.preserve_fds,
    };
    // SAFETY: sbx-oci is single-threaded, so the child may do anything after fork.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(theirs);
            nix::sys::wait::waitpid(child, None).context("wait for the intermediate process")?;
        }
        ForkResult::Child => enter(&entering, theirs),
    }
    let pid = mine.expect("Child", |m, _| match m {
        FromContainer::Child(pid) => Ok(pid),
        other => Err(other),
    })?;
    // Gone already: what it said, or its end of file, is read next.
    let _ = mine.send(&ToContainer::PidKnown);
    mine.expect("Ready", |m, _| match m {
        FromContainer::Ready => Ok(()),
        other => Err(other),
    })?;
    // End of file: the exec happened (the channel is close-on-exec).
    if let Some((FromContainer::Failed(why), _)) = mine.recv()? {
        bail!("{why}");
    }
    if let Some(path) = &args.pid_file {
        super::create::write_pid_file(path, pid)?;
    }
    if args.detach {
        return Ok(0);
    }
    super::waiting::wait_child(Pid::from_raw(pid))
}

/// Without a mount namespace of its own, the container is a chroot: its root, opened
/// while its process is still the container's (not a recycled pid).
fn chroot_root(record: &super::state::Record, id: &str) -> Result<Option<OwnedFd>> {
    if !record.chroot {
        return Ok(None);
    }
    let root = nix::fcntl::open(
        format!("/proc/{}/root", record.process.pid).as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open the root of container {id}"))?;
    if !record.process.alive() {
        bail!("container {id} is not running");
    }
    Ok(Some(root))
}

/// The process to run: `--process`, or the container's own with the command line's
/// changes (as runc).
fn process_of(args: &ExecArgs, config: &oci_spec::runtime::Spec) -> Result<ProcessPlan> {
    let mut p: Process = match &args.process {
        Some(path) => {
            let bytes = super::waiting::read_small(path, 1 << 20)?;
            let mut value: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a runtime-spec process", path.display()))?;
            config::drop_unknown_capabilities(&mut value);
            serde_json::from_value(value)
                .with_context(|| format!("{} is not a runtime-spec process", path.display()))?
        }
        None => {
            let mut p = config.process().clone().unwrap_or_default();
            if args.args.is_empty() {
                bail!("exec needs a command: pass --process FILE or the arguments");
            }
            p.set_args(Some(args.args.clone()));
            p.set_terminal(Some(args.tty));
            p
        }
    };
    if !args.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        p.set_env(Some(env));
    }
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let mut u = p.user().clone();
        u.set_uid(
            uid.parse()
                .with_context(|| format!("--user {user}: not UID[:GID]"))?,
        );
        if let Some(g) = gid {
            u.set_gid(
                g.parse()
                    .with_context(|| format!("--user {user}: not UID[:GID]"))?,
            );
        }
        if !args.additional_gids.is_empty() {
            u.set_additional_gids(Some(args.additional_gids.clone()));
        }
        p.set_user(u);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    let mut plan = config::process_plan(&p)?;
    // The container's persona, as its own process has it.
    plan.personality = config::personality(config)?;
    for name in &args.cap {
        let cap = crate::security::caps::parse(name)?;
        for set in [
            &mut plan.caps.bounding,
            &mut plan.caps.effective,
            &mut plan.caps.permitted,
        ] {
            set.insert(cap);
        }
    }
    // The container's cgroup, which this process joins, holds the program if any.
    let _ = config::enforce_device_rules(config, &mut plan.caps, &super::cgroups::Host::read());
    if plan.args.is_empty() {
        bail!("process.args is empty: name the program to run");
    }
    Ok(plan)
}

struct Entering<'a> {
    pidfd: OwnedFd,
    flags: CloneFlags,
    /// The container's root, to chroot into after joining its namespaces.
    chroot: Option<OwnedFd>,
    /// The container's user namespace denies setgroups.
    setgroups_denied: bool,
    plan: &'a ProcessPlan,
    console: Option<OwnedFd>,
    seccomp: Option<super::plug::Filter>,
    preserve_fds: u32,
}

/// The intermediate: joins the namespaces, then starts the new process as the caller's
/// child, inside the pid namespace.
fn enter(e: &Entering, chan: ContainerChannel) -> ! {
    let entered = (|| -> Result<()> {
        nix::sched::setns(e.pidfd.as_fd(), e.flags).context("enter the container's namespaces")?;
        if let Some(root) = &e.chroot {
            nix::unistd::fchdir(root).context("enter the container's root")?;
            nix::unistd::chroot(".").context("chroot into the container's root")?;
            nix::unistd::chdir("/").context("chdir /")?;
        }
        Ok(())
    })();
    if let Err(err) = entered {
        let _ = chan.send(&FromContainer::Failed(format!("{err:#}")));
        exit_now(1);
    }
    // SAFETY: single-threaded (a fork of sbx-oci); a plain fork with CLONE_PARENT.
    match unsafe { crate::sys::clone_process(CloneFlags::CLONE_PARENT.bits()) } {
        Ok(Forked::Child) => run(e, chan),
        Ok(Forked::Parent(pid)) => {
            let _ = chan.send(&FromContainer::Child(pid.as_raw()));
            exit_now(0)
        }
        Err(err) => {
            let _ = chan.send(&FromContainer::Failed(format!("fork: {err}")));
            exit_now(1)
        }
    }
}

/// The new process. It shares the channel with the intermediate, which reports its pid
/// after the clone: it speaks only once `exec` has that pid, so the order is always
/// Child, then Ready (or Failed).
fn run(e: &Entering, chan: ContainerChannel) -> ! {
    let released = chan.expect("PidKnown", |m, _| match m {
        ToContainer::PidKnown => Ok(()),
        other => Err(other),
    });
    if released.is_err() {
        // `exec` is gone or failed: nobody to run for.
        exit_now(1);
    }
    let prepared = (|| -> Result<process::Prepared> {
        match &e.console {
            Some(socket) => console::attach(socket, e.plan.console_size, (e.plan.uid, e.plan.gid))?,
            None => {
                let _ = nix::unistd::setsid();
            }
        }
        process::prepare(e.plan, e.seccomp.as_ref(), e.setgroups_denied)
    })();
    let prepared = match prepared {
        Ok(p) => p,
        Err(err) => {
            let _ = chan.send(&FromContainer::Failed(format!("{err:#}")));
            exit_now(1)
        }
    };
    let _ = chan.send(&FromContainer::Ready);
    let (code, message) = process::exec(&prepared, e.preserve_fds, e.seccomp.as_ref());
    let _ = chan.send(&FromContainer::Failed(message));
    exit_now(code)
}
