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

use super::cli::CreateArgs;
use super::config::{self, Container};
use super::init::Handoff;
use super::resources;
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
    let container = config::load(&args.bundle)?;
    let linux = container.spec.linux().as_ref();
    let seccomp = plug::seccomp(linux.and_then(|l| l.seccomp().as_ref()))?;
    let cgroup_files = plug::cgroup_files(linux.and_then(|l| l.resources().as_ref()))?;
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
    let cgroup = match &scope {
        // --systemd-cgroup: a transient scope that systemd makes, and removes.
        Some(scope) => {
            let devices = container.device_filter.as_deref();
            let joined = super::systemd::join(scope, pid, &cgroup_files, devices)?;
            guard.unit = Some(scope.unit.clone());
            Some(joined)
        }
        None => {
            let cgroup = join_cgroup(&container, &args.id, pid, &cgroup_files)?;
            guard.cgroup = cgroup.clone();
            cgroup
        }
    };
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
        cgroup,
        pid_ns: container.new_namespaces.contains(CloneFlags::CLONE_NEWPID),
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
        cgroup: None,
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

/// The container's cgroup v2 leaf, from linux.cgroupsPath (relative paths below our own
/// cgroup); None when there is none or, without limits to apply, it cannot be made (an
/// unprivileged caller without a delegated subtree, as runc does rootless).
fn join_cgroup(
    c: &Container,
    id: &str,
    pid: i32,
    files: &[(String, String)],
) -> Result<Option<PathBuf>> {
    let path = c
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    let path = match path.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => path,
        // The device rules' program needs a cgroup: one named after the container, below
        // ours (as runc makes one for a config without a path).
        None if c.device_filter.is_some() => PathBuf::from(id),
        None if !files.is_empty() => bail!("linux.resources needs linux.cgroupsPath"),
        None => return Ok(None),
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = crate::supervisor::cgroup::cgroup2_mount(&mountinfo);
    let made = (|| -> Result<PathBuf> {
        let mount = mount.context("no cgroup2 filesystem is mounted")?;
        if path.to_string_lossy().contains(':') {
            bail!(
                "linux.cgroupsPath {} is a systemd slice:prefix:name: pass --systemd-cgroup \
                 (as podman --cgroup-manager systemd and containerd's SystemdCgroup = true do), \
                 or give a cgroupfs path (podman --cgroup-manager cgroupfs)",
                path.display()
            );
        }
        let leaf = if path.is_absolute() {
            mount.join(path.strip_prefix("/").unwrap_or(&path))
        } else {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let own = crate::supervisor::cgroup::own_cgroup(&own).unwrap_or_default();
            mount.join(own.trim_start_matches('/')).join(&path)
        };
        if leaf
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!("linux.cgroupsPath {} has \"..\"", path.display());
        }
        let made = make_leaf(&mount, &leaf)?;
        let joined = write_files(&leaf, files)
            .and_then(|()| match &c.device_filter {
                Some(rules) => super::devices::attach(&leaf, rules),
                None => Ok(()),
            })
            .and_then(|()| {
                std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
                    .with_context(|| format!("move the container into cgroup {}", leaf.display()))
            });
        if let Err(e) = joined {
            // Nothing is in it yet. Its parents stay: another container may be making its
            // own leaf beside it (runc leaves them too).
            if made {
                let _ = std::fs::remove_dir(&leaf);
            }
            return Err(e);
        }
        Ok(leaf)
    })();
    match made {
        Ok(leaf) => Ok(Some(leaf)),
        Err(_) if files.is_empty() && !nix::unistd::geteuid().is_root() => Ok(None),
        Err(_) if files.is_empty() && state::in_user_namespace() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The leaf and its missing parents, each parent with every controller it has enabled
/// for its children, as runc does; a controller that cannot be enabled (a parent with
/// processes of its own, or bound to a cgroup v1 hierarchy) is left out here, and
/// `write_files` says what that means. True when the leaf itself is new.
fn make_leaf(mount: &Path, leaf: &Path) -> Result<bool> {
    let relative = leaf.strip_prefix(mount).unwrap_or(leaf);
    let mut dir = mount.to_path_buf();
    let mut made = false;
    for part in relative.components() {
        let controllers =
            std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        for controller in controllers.split_whitespace() {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
        }
        dir.push(part);
        made = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).with_context(|| format!("create cgroup {}", dir.display())),
        };
    }
    Ok(made)
}

/// The resources' files. One whose controller the leaf lacks (on a hybrid host the
/// controllers belong to cgroup v1, which sbx-oci does not drive) is a weight, a relative
/// share that only matters under contention, and skipped with a warning; or a limit, and
/// an error, since the container would run without it.
fn write_files(leaf: &Path, files: &[(String, String)]) -> Result<()> {
    let available = std::fs::read_to_string(leaf.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    for (file, value) in files {
        // Only where the bfq scheduler is loaded; io.weight says the same to the others.
        if file == "io.bfq.weight" && !leaf.join(file).exists() {
            continue;
        }
        let controller = resources::controller_of(file);
        if controller != "cgroup" && !available.contains(&controller) {
            if resources::is_weight(file) {
                eprintln!(
                    "sbx-oci: warning: linux.resources: {file} not applied: the {controller} \
                     controller is not available in cgroup {} (cgroup v1 holds it?)",
                    leaf.display()
                );
                continue;
            }
            bail!(
                "linux.resources: {file} = {value} cannot be applied: the {controller} controller \
                 is not available in cgroup {} (sbx-oci uses cgroup v2 only; on a hybrid host \
                 the controllers belong to cgroup v1; boot with systemd.unified_cgroup_hierarchy=1 \
                 or leave this limit out)",
                leaf.display()
            );
        }
        std::fs::write(leaf.join(file), value)
            .with_context(|| format!("write {value} to {}", leaf.join(file).display()))?;
    }
    Ok(())
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

/// Undoes a create that failed part way: the process killed, the cgroup (or systemd
/// scope) and the state directory removed.
struct Guard {
    dir: Option<Dir>,
    child: Option<Pid>,
    cgroup: Option<PathBuf>,
    unit: Option<super::systemd::Unit>,
}

impl Guard {
    fn disarm(mut self) -> Dir {
        self.child = None;
        self.cgroup = None;
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
        if let Some(cgroup) = self.cgroup.take() {
            let _ = std::fs::remove_dir(cgroup);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}
