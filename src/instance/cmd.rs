//! The commands that change named sandboxes: `run --name`, `start`, `stop`, `kill`, `rm`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::state::{Liveness, ProcId, Record, State};
use super::{
    launch, make_private_dir, read_json, validate_name, write_json, Dirs, Paths, RECORD, STATE,
};
use crate::cli::{ExecArgs, KillArgs, RmArgs, StartArgs, StopArgs};
use crate::plan::Plan;
use crate::planner::{self, Request, LAYER};
use crate::prepare::{self, Prepared};

/// How long `stop`, `kill` and `rm -f` wait for the supervisor to record the end.
const SETTLE: Duration = Duration::from_secs(10);

/// The directories a sandbox named `name` has (or will have).
pub fn paths_for(name: &str) -> Result<Paths> {
    validate_name(name)?;
    Ok(Dirs::from_env()?.paths(name))
}

/// `sbx run --name NAME [-d]`: record the sandbox, prepare the host, then run it. `plan`
/// is built from `req` (whose `instance` is the sandbox's directories); the overrides have
/// their env files folded in already, so `start` gets the same variables even if a file
/// changes.
pub fn create(name: &str, req: &Request, plan: Plan, detach: bool) -> Result<i32> {
    validate_name(name)?;
    let dirs = Dirs::from_env()?;
    let lock = dirs.lock()?;
    let paths = dirs.paths(name);
    if paths.data.join(RECORD).exists() {
        let state = load_state(&paths);
        let now = describe_state(&state);
        let running = state.as_ref().map(State::liveness) == Some(Liveness::Running);
        let what_to_do = if running {
            format!("run in it with `sbx exec {name} -- CMD`, or stop and remove it with `sbx rm -f {name}`")
        } else {
            format!("remove it with `sbx rm {name}` or start it again with `sbx start {name}`")
        };
        bail!("a sandbox named {name} already exists ({now}); {what_to_do}");
    }
    // The record first, the runtime directory after it: a start killed in between leaves a
    // record (`sbx ps -a` shows it, `sbx rm` removes it), never a runtime directory that
    // nothing names.
    make_private_dir(&paths.data)?;
    let record = Record::new(name, (req.overrides, detach), req.loaded, req.caller);
    let prepared = write_json(&paths.data.join(RECORD), &record)
        .and_then(|()| make_private_dir(&dirs.runtime))
        .and_then(|()| make_private_dir(&paths.runtime))
        .and_then(|()| prepare::prepare(req, plan));
    let (plan, prepared) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            remove_dirs(&paths);
            return Err(e);
        }
    };
    launch_recorded(&plan, &prepared, &paths, lock, detach, true)
}

/// Runs a recorded sandbox, detached or not. A sandbox that never got as far as running
/// its command on its first start is forgotten again: nothing is left half-created.
fn launch_recorded(
    plan: &Plan,
    prepared: &Prepared,
    paths: &Paths,
    lock: nix::fcntl::Flock<std::fs::File>,
    detach: bool,
    first: bool,
) -> Result<i32> {
    if detach {
        match launch::detached(plan, prepared, paths, lock) {
            Ok(None) => {
                println!("{}", paths.name);
                Ok(died_at_once(paths).unwrap_or(0))
            }
            Ok(Some(code)) => {
                if first {
                    remove_dirs(paths);
                }
                Ok(code)
            }
            Err(e) => {
                if first {
                    remove_dirs(paths);
                }
                Err(e)
            }
        }
    } else {
        let (result, started) = launch::foreground(plan, prepared, Some(lock));
        if first && !started {
            remove_dirs(paths);
        }
        result
    }
}

/// `sbx start NAME`: the same plan again (from the record, not today's profile files).
pub fn start(args: &StartArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    let (paths, record) = find(&dirs, &args.name)?;
    let lock = dirs.lock()?;
    let state = load_state(&paths);
    if state.as_ref().map(State::liveness) == Some(Liveness::Running) {
        bail!("sandbox {} is already running", args.name);
    }
    let stdin_is_tty = args.attach && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let loaded = record.loaded();
    let caller = record.caller(stdin_is_tty);
    let rebuilt = || format!("sandbox {} can no longer be built as recorded", args.name);
    let host = super::host_facts(&record.overrides).with_context(rebuilt)?;
    let req = Request {
        loaded: &loaded,
        overrides: &record.overrides,
        caller: &caller,
        host: &host,
        instance: Some(&paths),
    };
    let plan = planner::build(&req).with_context(rebuilt)?;
    if let Some(warning) = planner::limits::not_enforced_warning(&plan.limits) {
        eprintln!("sbx: warning: {warning}");
    }
    if let Some(systemd_run) = &plan.limits.via_systemd {
        drop(lock);
        return Err(crate::limits::rerun_in_scope(systemd_run));
    }
    make_private_dir(&dirs.runtime)?;
    make_private_dir(&paths.runtime)?;
    let (plan, prepared) = prepare::prepare(&req, plan)?;
    launch_recorded(&plan, &prepared, &paths, lock, !args.attach, false)
}

/// The Plan `sbx exec` runs its command with: the recorded one, with this command, its
/// variables and working directory. Built by the planner alone: `exec` prepares nothing,
/// the sandbox it enters holds what its run needs.
pub fn exec_plan(record: &Record, args: &ExecArgs) -> Result<Plan> {
    let mut overrides = record.overrides.clone();
    let mut env = args.env.clone();
    // A bare name takes its value from the environment recorded at creation.
    let caller = record.caller(args.tty);
    crate::envfile::fold(&mut args.env_file.clone(), &mut env, &caller.vars.env)?;
    overrides.env.extend(env);
    overrides.command = args.command.clone();
    if let Some(dir) = &args.workdir {
        overrides.workdir = Some(dir.clone());
    }
    let rebuilt = || format!("sandbox {} can no longer be built as recorded", args.name);
    let host = super::host_facts(&overrides).with_context(rebuilt)?;
    let loaded = record.loaded();
    let plan = planner::build(&Request {
        loaded: &loaded,
        overrides: &overrides,
        caller: &caller,
        host: &host,
        instance: None,
    })
    .with_context(rebuilt)?;
    if let Some(warning) = planner::limits::not_enforced_warning(&plan.limits) {
        eprintln!("sbx: warning: {warning}");
    }
    Ok(plan)
}

/// `sbx stop [-t SECONDS] NAME...`.
pub fn stop(args: &StopArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    for_each(&args.names, |name| {
        let target = running(&find(&dirs, name)?.0)?;
        // Init passes SIGTERM on to the command; SIGKILL to init ends everything.
        target.signal_init(Signal::SIGTERM)?;
        if !target.wait_init(Duration::from_secs(args.time)) {
            target.signal_init(Signal::SIGKILL)?;
            target.wait_init(SETTLE);
        }
        target.settle();
        println!("{name}");
        Ok(())
    })
}

/// `sbx kill [-s SIGNAL] NAME...`: the signal goes to the command; SIGKILL ends the whole
/// sandbox at once.
pub fn kill(args: &KillArgs) -> Result<i32> {
    let sig = parse_signal(&args.signal)?;
    let dirs = Dirs::from_env()?;
    for_each(&args.names, |name| {
        let target = running(&find(&dirs, name)?.0)?;
        if sig == Signal::SIGKILL {
            target.signal_init(sig)?;
            target.wait_init(SETTLE);
            target.settle();
        } else {
            target.signal_command(sig)?;
        }
        println!("{name}");
        Ok(())
    })
}

/// `sbx rm [-f] NAME...`.
pub fn rm(args: &RmArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    for_each(&args.names, |name| {
        // The record itself is not read: one this sbx cannot read can be removed.
        let paths = recorded(&dirs, name)?;
        let lock = dirs.lock()?;
        if let Ok(target) = running(&paths) {
            if !args.force {
                bail!("sandbox {name} is running; stop it first (`sbx stop {name}`) or use `sbx rm -f`");
            }
            target.signal_init(Signal::SIGKILL)?;
            target.wait_init(SETTLE);
            target.settle();
        }
        remove_dirs(&paths);
        drop(lock);
        println!("{name}");
        Ok(())
    })
}

/// A running sandbox, found safely: pidfds opened, then checked to be the recorded
/// processes (a pid reused since cannot be signalled by mistake).
struct Target {
    init: OwnedFd,
    command: Option<OwnedFd>,
    supervisor: Option<OwnedFd>,
}

fn running(paths: &Paths) -> Result<Target> {
    let name = &paths.name;
    let state = load_state(paths);
    let Some(tracking) = state.as_ref().and_then(State::running) else {
        bail!(
            "sandbox {name} is not running ({}); start it with `sbx start {name}`",
            describe_state(&state)
        );
    };
    let init = tracking
        .init
        .pidfd()
        .ok_or_else(|| anyhow!("sandbox {name} has just ended"))?;
    Ok(Target {
        init,
        command: tracking.command.as_ref().and_then(ProcId::pidfd),
        supervisor: tracking.supervisor.pidfd(),
    })
}

impl Target {
    fn signal_init(&self, sig: Signal) -> Result<()> {
        match crate::sys::pidfd_send_signal(self.init.as_fd(), sig as i32) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("send {sig} to the sandbox")),
        }
    }

    fn signal_command(&self, sig: Signal) -> Result<()> {
        match &self.command {
            Some(fd) => match crate::sys::pidfd_send_signal(fd.as_fd(), sig as i32) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                Err(e) => Err(e).with_context(|| format!("send {sig} to the command")),
            },
            None => self.signal_init(sig),
        }
    }

    /// True once init has exited (within `limit`).
    fn wait_init(&self, limit: Duration) -> bool {
        wait_exit(&self.init, limit)
    }

    /// Waits for the supervisor to record the end and exit.
    fn settle(&self) {
        if let Some(fd) = &self.supervisor {
            wait_exit(fd, SETTLE);
        }
    }
}

fn wait_exit(pidfd: &OwnedFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            _ => {}
        }
    }
}

fn parse_signal(s: &str) -> Result<Signal> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("unknown signal number {n}"));
    }
    name.parse::<Signal>().map_err(|_| {
        anyhow!("unknown signal {s:?}; use a name such as TERM, HUP or KILL, or a number")
    })
}

/// Runs `f` for each name; every failure is reported, and any makes the exit code `exit::SBX_ERROR`.
fn for_each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = 0;
    for name in names {
        if let Err(e) = f(name) {
            eprintln!("sbx: error: {e:#}");
            failed += 1;
        }
    }
    Ok(if failed > 0 {
        crate::error::exit::SBX_ERROR
    } else {
        0
    })
}

/// The sandbox's directories and record, or a clear error.
pub fn find(dirs: &Dirs, name: &str) -> Result<(Paths, Record)> {
    let paths = recorded(dirs, name)?;
    let record = Record::read(&paths.data.join(RECORD))?;
    Ok((paths, record))
}

/// The directories of a recorded sandbox, or a clear error.
fn recorded(dirs: &Dirs, name: &str) -> Result<Paths> {
    validate_name(name)?;
    let paths = dirs.paths(name);
    if !paths.data.join(RECORD).exists() {
        bail!("no sandbox named {name}; `sbx ps -a` lists them");
    }
    Ok(paths)
}

pub fn load_state(paths: &Paths) -> Option<State> {
    read_json(&paths.runtime.join(STATE)).ok()
}

fn describe_state(state: &Option<State>) -> String {
    match state {
        None => "never started".into(),
        Some(s) => match s.liveness() {
            Liveness::Running => "running".into(),
            Liveness::Exited => match (s.exit_code, s.signal) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(code), None) => format!("exited with code {code}"),
                (None, None) => "exited".into(),
            },
            Liveness::Vanished => "exited without sbx recording how".into(),
        },
    }
}

fn remove_dirs(paths: &Paths) {
    // The writable layer holds files of subordinate ids: only the user namespace with the
    // store's id map (whose root is us) may delete them.
    let layer = paths.data.join(LAYER);
    if layer.exists() {
        let removed = crate::image::userns::run(|| crate::image::store::remove_any(&layer));
        if let Err(e) = removed {
            eprintln!("sbx: warning: cannot remove {}: {e:#}", layer.display());
        }
    }
    for dir in [&paths.runtime, &paths.data] {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("sbx: warning: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// A detached command that failed within its first moments (a server that could not bind
/// its port): its status, said on stderr, so that `sbx run -d` does not look like success.
/// A command still running, or one that ended with 0, is None.
fn died_at_once(paths: &Paths) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        let state = load_state(paths)?;
        // Vanished: init has ended but the supervisor is still tearing down (stopping
        // slirp4netns) before it records the status; wait for that record.
        if state.liveness() == Liveness::Exited {
            let code = state.exit_code.filter(|c| *c != 0)?;
            eprintln!(
                "sbx: {}: the command ended at once with status {code}; `sbx logs {}` shows \
                 its output",
                paths.name, paths.name
            );
            return Some(code);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }
}
