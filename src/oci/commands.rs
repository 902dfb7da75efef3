//! The lifecycle commands after `create`: start, state, kill, delete, run, list, ps, and
//! the informational spec and features.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::cli::{Cli, Command, CreateArgs, RunArgs};
use super::state::{self, Dir, Record, Status};
use super::{create, hooks, log};

pub fn dispatch(cli: &Cli) -> Result<i32> {
    let root = cli.root.clone().unwrap_or_else(state::default_root);
    match &cli.command {
        Command::Create(args) => {
            let args = CreateArgs {
                systemd_cgroup: cli.systemd_cgroup,
                ..args.clone()
            };
            create::create(&root, &args).map(|_| 0)
        }
        Command::Start { id } => start(cli, &Dir::open(&root, id)?).map(|()| 0),
        Command::Run(args) => run(cli, &root, args),
        Command::State { id } => {
            let dir = Dir::open(&root, id)?;
            let state = dir.oci_state(&dir.record()?);
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let signal = parse_signal(signal.as_deref().unwrap_or("TERM"))?;
            kill(&Dir::open(&root, id)?, signal, *all).map(|()| 0)
        }
        Command::Delete { force, id } => match Dir::open(&root, id) {
            Ok(dir) => delete(cli, dir, *force).map(|()| 0),
            // Nothing to delete is what --force asks for.
            Err(_) if *force => Ok(0),
            Err(e) => Err(e),
        },
        Command::Exec(args) => super::exec::exec(&root, args),
        Command::Ps { format, id } => ps(&Dir::open(&root, id)?, format).map(|()| 0),
        Command::List { format, quiet } => list(&root, format, *quiet).map(|()| 0),
        Command::Spec { bundle } => {
            let rootless = cli.rootless.as_deref().is_some_and(|r| r == "true");
            spec(bundle, rootless).map(|()| 0)
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
    }
}

/// Releases the container process: opens the fifo for reading (which lets its blocked
/// open return), takes its byte, removes the fifo (the container is now running), runs
/// the poststart hooks.
pub fn start(cli: &Cli, dir: &Dir) -> Result<()> {
    let record = dir.record()?;
    match dir.status(&record) {
        Status::Created => {}
        other => bail!(
            "container {} is {}, not created: it cannot be started",
            dir.id,
            serde_json::to_value(other)?.as_str().unwrap_or_default()
        ),
    }
    let fifo: OwnedFd = crate::beneath::open(
        dir.fd.as_fd(),
        Path::new(state::FIFO),
        libc::O_RDONLY | libc::O_NONBLOCK,
    )
    .context("open exec.fifo")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::from(100u16)).context("poll exec.fifo")?;
        match nix::unistd::read(&fifo, &mut byte) {
            Ok(1) => break,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e).context("read exec.fifo"),
        }
        if !record.process.alive() {
            bail!("container {} ended before it started", dir.id);
        }
        if Instant::now() > deadline {
            bail!("container {} did not take the start within 10 s", dir.id);
        }
    }
    nix::unistd::unlinkat(
        dir.fd.as_fd(),
        state::FIFO,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    )
    .context("remove exec.fifo")?;
    let config = dir.config()?;
    let post = config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().clone())
        .unwrap_or_default();
    let mut state = dir.oci_state(&record);
    // The process it started, even when it has already ended (`true`): the hooks are told
    // of the start, as runc tells them.
    state.pid = record.process.pid;
    for warning in hooks::run_warn(&post, "poststart", &state, Status::Running) {
        log::report(cli.log.as_deref(), cli.log_format, "warning", &warning);
    }
    Ok(())
}

fn run(cli: &Cli, root: &Path, args: &RunArgs) -> Result<i32> {
    let create = CreateArgs {
        systemd_cgroup: cli.systemd_cgroup,
        ..args.create.clone()
    };
    let created = create::create(root, &create)?;
    start(cli, &created.dir)?;
    if args.detach {
        return Ok(0);
    }
    let code = super::waiting::wait_child(created.child)?;
    delete(cli, created.dir, true)?;
    Ok(code)
}

/// Signals the container's process (checked by its start time), or with `all` every
/// process in it.
pub fn kill(dir: &Dir, signal: Signal, all: bool) -> Result<()> {
    let record = dir.record()?;
    let Some(pidfd) = record.process.pidfd() else {
        // runc's words, which containerd's shim looks for to tell "already ended" apart.
        bail!("container not running: {} has stopped", dir.id);
    };
    if all {
        for pid in processes(&record) {
            if let Ok(fd) = crate::sys::pidfd_open(pid) {
                let _ = crate::sys::pidfd_send_signal(fd.as_fd(), signal as i32);
            }
        }
    }
    crate::sys::pidfd_send_signal(pidfd.as_fd(), signal as i32)
        .with_context(|| format!("send {signal} to container {}", dir.id))
}

/// The processes in the container: those in its cgroup, else in its pid namespace.
fn processes(record: &Record) -> Vec<i32> {
    if let Some(procs) = record.cgroups.procs() {
        return procs;
    }
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(theirs) = ns(record.process.pid) else {
        return Vec::new();
    };
    if !record.pid_ns {
        return vec![record.process.pid];
    }
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| ns(*pid).as_ref() == Some(&theirs))
        .collect()
}

/// Removes a stopped container (with `force`, kills it first and waits for its end), its
/// cgroup and its state, then runs the poststop hooks.
pub fn delete(cli: &Cli, dir: Dir, force: bool) -> Result<()> {
    let record = dir.record()?;
    let status = dir.status(&record);
    if status != Status::Stopped {
        if !force {
            bail!(
                "container {} is {}: stop it first, or delete it with --force",
                dir.id,
                serde_json::to_value(status)?.as_str().unwrap_or_default()
            );
        }
        let _ = kill(&dir, Signal::SIGKILL, true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while record.process.alive() {
            if Instant::now() > deadline {
                bail!("container {} did not end after SIGKILL", dir.id);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let config = dir.config().ok();
    let mut state = dir.oci_state(&record);
    state.status = Status::Stopped;
    if let Some(unit) = &record.systemd_unit {
        // The scope's cgroup is systemd's to remove.
        super::systemd::stop(unit, record.cgroups.v2.as_deref());
    } else {
        // Empty once its processes are reaped; a zombie still counts, so try a while.
        record.cgroups.remove(Duration::from_secs(2));
    }
    dir.remove()?;
    let post = config
        .as_ref()
        .and_then(|c| c.hooks().as_ref())
        .and_then(|h| h.poststop().clone())
        .unwrap_or_default();
    for warning in hooks::run_warn(&post, "poststop", &state, Status::Stopped) {
        log::report(cli.log.as_deref(), cli.log_format, "warning", &warning);
    }
    Ok(())
}

fn ps(dir: &Dir, format: &str) -> Result<()> {
    let record = dir.record()?;
    let pids = if record.process.alive() {
        processes(&record)
    } else {
        Vec::new()
    };
    if format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
    } else {
        println!("PID");
        for pid in pids {
            println!("{pid}");
        }
    }
    Ok(())
}

fn list(root: &Path, format: &str, quiet: bool) -> Result<()> {
    let states: Vec<state::OciState> = state::ids(root)
        .iter()
        .filter_map(|id| {
            let dir = Dir::open(root, id).ok()?;
            Some(dir.oci_state(&dir.record().ok()?))
        })
        .collect();
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if format == "json" {
        println!("{}", serde_json::to_string(&states)?);
    } else {
        println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
        for s in &states {
            let status = serde_json::to_value(s.status)?;
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                s.id,
                s.pid,
                status.as_str().unwrap_or_default(),
                s.bundle.display(),
                s.created,
                s.owner
            );
        }
    }
    Ok(())
}

/// runc's default config: a shell on a terminal in `rootfs`, every namespace but the
/// user's (with `rootless`: a user namespace mapping the caller's ids, no network one).
pub fn default_spec(rootless: bool) -> oci_spec::runtime::Spec {
    let mut spec = if rootless {
        oci_spec::runtime::Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        oci_spec::runtime::Spec::default()
    };
    spec.set_hostname(Some("sbx".to_string()));
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
    }
    if rootless {
        // No tty group in a single-id map: devpts takes no gid there.
        for m in spec.mounts_mut().iter_mut().flatten() {
            if let Some(options) = m.options().clone() {
                m.set_options(Some(
                    options
                        .into_iter()
                        .filter(|o| !o.starts_with("gid="))
                        .collect(),
                ));
            }
        }
    }
    spec
}

fn spec(bundle: &Path, rootless: bool) -> Result<()> {
    let path: PathBuf = bundle.join("config.json");
    if path.exists() {
        bail!("{} exists; remove it first", path.display());
    }
    let text = serde_json::to_string_pretty(&default_spec(rootless))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// runtime-spec features.md.
fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "suid", "nodev", "dev",
                         "noexec", "exec", "noatime", "strictatime", "nodiratime",
                         "relatime", "private", "rprivate", "shared", "rshared", "slave",
                         "rslave", "unbindable", "runbindable", "tmpcopyup", "notmpcopyup"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": true},
            "seccomp": super::seccomp::features(),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "sbx-oci"},
    })
}

/// "KILL", "SIGKILL", "kill" or "9".
pub fn parse_signal(name: &str) -> Result<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {name}"));
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>()
        .with_context(|| format!("unknown signal {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn the_default_spec_is_runcs() {
        let spec = default_spec(false);
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
        let rootless = default_spec(true);
        let json = serde_json::to_string(&rootless).unwrap();
        assert!(
            json.contains("uidMappings") && !json.contains("gid=5"),
            "{json}"
        );
    }
}
