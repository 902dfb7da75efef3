//! `create`: everything up to the container process blocked before its exec, the pid file
//! written, and this process gone (the container process stays with the caller's
//! subreaper). `run` is this, then `start`, then waiting.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::cgroups;
use super::cli::CreateArgs;
use super::config::{self, Container};
use super::init::Handoff;
use super::state::{self, Dir, OciState, Record, Status};
use super::{hooks, plug, FromContainer, RuntimeChannel, ToContainer};
use crate::plan::ids::IdRange;
use crate::plan::net::ProcId;

/// A created container: its directory, record and process (our child until we exit).
pub struct Created {
    pub dir: Dir,
    pub record: Record,
    pub child: Pid,
}

pub fn create(root: &Path, args: &CreateArgs) -> Result<Created> {
    let host = cgroups::Host::read();
    let container = config::load(&args.bundle, &host)?;
    let linux = container.spec.linux().as_ref();
    let seccomp = plug::seccomp(linux.and_then(|l| l.seccomp().as_ref()))?;
    let cgroup_files = cgroups::files(&host, linux.and_then(|l| l.resources().as_ref()))?;
    let has = |f: CloneFlags| {
        container.new_namespaces.contains(f) || container.joins.iter().any(|(j, _)| *j == f)
    };
    plug::check_sysctl(
        &linux.and_then(|l| l.sysctl().clone()).unwrap_or_default(),
        has(CloneFlags::CLONE_NEWNET),
        has(CloneFlags::CLONE_NEWIPC),
        has(CloneFlags::CLONE_NEWUTS),
    )?;
    // Checked before anything exists: a cgroupsPath that names no scope.
    let scope = systemd_scope(&container, args)?;
    let (mut guard, handoff) = prepare(root, args, &container, seccomp)?;
    let dir = guard.dir.as_ref().expect("set by prepare");
    let (mine, theirs) = RuntimeChannel::pair()?;
    super::init::spawn(&container, &handoff, theirs)?;
    let pid = mine.expect("Child", |m, _| match m {
        FromContainer::Child(pid) => Ok(pid),
        other => Err(other),
    })?;
    let child = Pid::from_raw(pid);
    guard.child = Some(child);
    let process = ProcId::of(pid)?;
    if container.new_namespaces.contains(CloneFlags::CLONE_NEWUSER) {
        write_id_maps(pid, &container.uid_mappings, &container.gid_mappings)?;
    }
    if let Some(adj) = container.process.oom_score_adj {
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
            .with_context(|| format!("set process.oomScoreAdj {adj}"))?;
    }
    // Each way cleans up after itself when it fails; the guard undoes it after that.
    let cgroups = place(&host, &container, args, scope.as_ref(), pid, &cgroup_files)?;
    match &scope {
        Some(scope) => guard.unit = Some(scope.unit.clone()),
        None => guard.cgroups = cgroups.clone(),
    }
    let record = Record {
        id: args.id.clone(),
        process,
        bundle: container.bundle.clone(),
        rootfs: container.rootfs.clone(),
        created: state::now_rfc3339(),
        owner: nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name),
        annotations: container.spec.annotations().clone().unwrap_or_default(),
        cgroups,
        pid_ns: container.new_namespaces.contains(CloneFlags::CLONE_NEWPID),
        chroot: !container.own_mount_ns,
        systemd_unit: scope.map(|s| s.unit),
    };
    let mut oci = dir.oci_state(&record);
    oci.status = Status::Creating;
    mine.send(&ToContainer::Go(Box::new(oci.clone())))?;
    wait_ready(&mine, &container, &oci)?;
    dir.write(state::STATE, &serde_json::to_vec(&record)?)?;
    if let Some(path) = &args.pid_file {
        write_pid_file(path, pid)?;
    }
    let dir = guard.disarm();
    Ok(Created { dir, record, child })
}

/// Places the container's process: in the systemd scope with --systemd-cgroup, else in
/// the cgroups linux.cgroupsPath names.
fn place(
    host: &cgroups::Host,
    container: &Container,
    args: &CreateArgs,
    scope: Option<&super::systemd::Scope>,
    pid: i32,
    cgroup_files: &cgroups::Files,
) -> Result<cgroups::Placement> {
    let linux = container.spec.linux().as_ref();
    Ok(match scope {
        // --systemd-cgroup: a transient scope that systemd makes, and removes.
        Some(scope) => {
            if !cgroup_files.v1.is_empty() {
                bail!(
                    "linux.resources: limits on cgroup v1 controllers cannot go in a systemd \
                     scope; leave --systemd-cgroup out (cgroupfs drives cgroup v1)"
                );
            }
            let devices = container.device_filter.as_deref();
            let joined = super::systemd::join(scope, pid, &cgroup_files.v2, devices)?;
            cgroups::Placement {
                v2: Some(joined),
                v1: Vec::new(),
            }
        }
        None => {
            let cgroups_path = linux.and_then(|l| l.cgroups_path().clone());
            cgroups::join(
                host,
                &cgroups::Request {
                    id: &args.id,
                    path: cgroups_path.as_deref(),
                    files: cgroup_files,
                    devices: container.device_filter.as_deref(),
                    pid,
                    privileged: nix::unistd::geteuid().is_root() && !state::in_user_namespace(),
                },
            )?
        }
    })
}

/// With --systemd-cgroup, the scope linux.cgroupsPath names.
fn systemd_scope(c: &Container, args: &CreateArgs) -> Result<Option<super::systemd::Scope>> {
    if !args.systemd_cgroup {
        return Ok(None);
    }
    let path = c
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    // The user manager's for anyone but root in the initial user namespace (rootless
    // podman calls sbx-oci as root of its own user namespace).
    let user = !nix::unistd::geteuid().is_root() || state::in_user_namespace();
    super::systemd::scope(path.as_deref(), &args.id, user).map(Some)
}

/// The state directory with the config and the fifo, and what the container process
/// inherits: the fifo, the console socket, the seccomp program.
fn prepare(
    root: &Path,
    args: &CreateArgs,
    container: &Container,
    seccomp: Option<super::plug::Filter>,
) -> Result<(Guard, Handoff)> {
    let console = match (&args.console_socket, container.process.terminal) {
        (Some(path), true) => Some(OwnedFd::from(
            UnixStream::connect(path)
                .with_context(|| format!("connect to the console socket {}", path.display()))?,
        )),
        (None, true) => bail!("process.terminal is true: pass --console-socket"),
        (_, false) => None,
    };
    let dir = Dir::create(root, &args.id)?;
    let guard = Guard {
        dir: Some(dir),
        child: None,
        cgroups: cgroups::Placement::default(),
        unit: None,
    };
    let dir = guard.dir.as_ref().expect("set above");
    dir.write(state::CONFIG, &serde_json::to_vec(&container.spec)?)?;
    nix::unistd::mkfifoat(
        dir.fd.as_fd(),
        state::FIFO,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .context("create exec.fifo")?;
    // Writable by whichever user the container process becomes; only reachable through
    // the state directory, which is ours alone.
    nix::sys::stat::fchmodat(
        dir.fd.as_fd(),
        state::FIFO,
        nix::sys::stat::Mode::from_bits_truncate(0o622),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .context("chmod exec.fifo")?;
    let fifo = crate::beneath::open(dir.fd.as_fd(), Path::new(state::FIFO), libc::O_PATH)
        .context("open exec.fifo")?;
    let handoff = Handoff {
        fifo,
        console,
        seccomp,
        preserve_fds: args.preserve_fds,
        in_userns: state::in_user_namespace()
            || container.new_namespaces.contains(CloneFlags::CLONE_NEWUSER),
    };
    Ok((guard, handoff))
}

/// Answers the container process until it is ready: the runtime's hooks when its mounts
/// are in place, then `Ready`, or its failure.
fn wait_ready(chan: &RuntimeChannel, c: &Container, state: &OciState) -> Result<()> {
    loop {
        let Some((msg, _)) = chan.recv()? else {
            bail!("the container process ended during setup");
        };
        match msg {
            FromContainer::RunHooks => {
                let h = c.spec.hooks().as_ref();
                #[allow(deprecated)]
                let prestart = h.and_then(|h| h.prestart().clone()).unwrap_or_default();
                let runtime = h
                    .and_then(|h| h.create_runtime().clone())
                    .unwrap_or_default();
                hooks::run(&prestart, "prestart", state, Status::Created)?;
                hooks::run(&runtime, "createRuntime", state, Status::Creating)?;
                chan.send(&ToContainer::HooksDone)?;
            }
            FromContainer::Ready => return Ok(()),
            FromContainer::Failed(why) => bail!("{why}"),
            FromContainer::Child(_) => bail!("expected Ready, got Child"),
        }
    }
}

/// The config's maps: written directly by root (in the initial user namespace or in the
/// one rootless podman made), or by an unprivileged caller for its own ids alone; through
/// newuidmap and newgidmap otherwise.
fn write_id_maps(pid: i32, uid_map: &[IdRange], gid_map: &[IdRange]) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let own =
        |map: &[IdRange], id: u32| map.len() == 1 && map[0].outside == id && map[0].count == 1;
    let text = |map: &[IdRange]| map.iter().map(|r| format!("{r}\n")).collect::<String>();
    if euid == 0 || (own(uid_map, euid) && own(gid_map, egid)) {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        std::fs::write(proc_dir.join("uid_map"), text(uid_map))
            .with_context(|| format!("write linux.uidMappings to /proc/{pid}/uid_map"))?;
        if euid != 0 {
            std::fs::write(proc_dir.join("setgroups"), "deny\n")
                .context("write /proc/PID/setgroups")?;
        }
        return std::fs::write(proc_dir.join("gid_map"), text(gid_map))
            .with_context(|| format!("write linux.gidMappings to /proc/{pid}/gid_map"));
    }
    let helper = |name: &str| {
        crate::helpers::find(name).with_context(|| {
            format!("{name} is needed to map more than your own id (install the uidmap package)")
        })
    };
    let ids = crate::plan::ids::IdPlan {
        host_uid: euid,
        host_gid: egid,
        inside_uid: 0,
        inside_gid: 0,
        mode: crate::plan::ids::IdMode::Full {
            newuidmap: helper("newuidmap")?,
            newgidmap: helper("newgidmap")?,
            uid_map: uid_map.to_vec(),
            gid_map: gid_map.to_vec(),
        },
    };
    crate::supervisor::idmap::write(&ids, pid)
}

/// Written atomically beside its final name, as the engine may read it at any time.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("--pid-file names no file")?;
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open the directory of --pid-file {}", path.display()))?;
    crate::beneath::write_atomic(fd.as_fd(), name, pid.to_string().as_bytes())
        .with_context(|| format!("write --pid-file {}", path.display()))
}

/// Undoes a create that failed part way: the process killed, the cgroups (or systemd
/// scope) and the state directory removed.
struct Guard {
    dir: Option<Dir>,
    child: Option<Pid>,
    cgroups: cgroups::Placement,
    unit: Option<super::systemd::Unit>,
}

impl Guard {
    fn disarm(mut self) -> Dir {
        self.child = None;
        self.cgroups = cgroups::Placement::default();
        self.unit = None;
        self.dir.take().expect("disarmed once")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        if let Some(unit) = self.unit.take() {
            super::systemd::stop(&unit, None);
        }
        // Empty once the process is reaped.
        self.cgroups.remove(std::time::Duration::from_secs(1));
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}
