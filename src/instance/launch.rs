//! Starting a sandbox that someone will want to find again: in the foreground, or detached
//! with its output in a size-capped log; recording its state as it starts and ends.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use nix::fcntl::{Flock, OFlag};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult};

use super::state::{self, ProcId, State, Status, Tracking};
use super::termsafe::TerminalSafe;
use super::{make_private_dir, write_json, Paths, LOG, STATE};
use crate::plan::Plan;
use crate::prepare::Prepared;
use crate::supervisor::{self, Ended, Observer, Started};

/// Each log file is capped at this size; one older file (`log.1`) is kept beside it.
pub const LOG_CAP: u64 = 1024 * 1024;

/// Records a sandbox's life: its state file (named sandboxes), the `--status-json` file,
/// and, once the command runs, lets go of the lock and tells a waiting `run -d`.
pub struct Reporter {
    paths: Option<Paths>,
    /// `--status-json`: its directory, opened before the sandbox exists (the sandbox may
    /// be able to write there, and swap it for a link later), and the file's name.
    status_json: Option<(std::io::Result<OwnedFd>, PathBuf)>,
    lock: Option<Flock<File>>,
    notify: Option<OwnedFd>,
    detached: bool,
    network: String,
    state: Option<State>,
}

impl Reporter {
    pub fn new(plan: &Plan, lock: Option<Flock<File>>) -> Reporter {
        Reporter {
            paths: plan.instance.clone(),
            status_json: plan
                .status_json
                .as_ref()
                .map(|p| (open_parent(p), p.clone())),
            lock,
            notify: None,
            detached: false,
            network: match &plan.network.join {
                Some(join) if join.nat => "slirp4netns".into(),
                Some(_) => "none".into(),
                None => plan.network.mode.to_string(),
            },
            state: None,
        }
    }

    /// Whether the command ever ran.
    pub fn started(&self) -> bool {
        self.state.is_some()
    }

    fn write(&self) -> Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        if let Some(paths) = &self.paths {
            write_json(&paths.runtime.join(STATE), state)?;
        }
        if let Some((dir, path)) = &self.status_json {
            let public = State {
                tracking: None,
                ..state.clone()
            };
            let mut bytes = serde_json::to_vec_pretty(&public).context("encode JSON")?;
            bytes.push(b'\n');
            let name = path.file_name().unwrap_or_default();
            dir.as_ref()
                .map_err(|e| anyhow!("{e}"))
                .and_then(|dir| Ok(crate::beneath::write_atomic(dir.as_fd(), name, &bytes)?))
                .with_context(|| format!("--status-json: write {}", path.display()))?;
        }
        Ok(())
    }
}

/// The directory of `path`, as the user named it.
fn open_parent(path: &Path) -> std::io::Result<OwnedFd> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).map(OwnedFd::from)
}

impl Observer for Reporter {
    fn started(&mut self, s: &Started) -> Result<()> {
        let tracking = match &self.paths {
            Some(_) => Some(Tracking {
                boot_id: state::boot_id(),
                supervisor: ProcId::of(std::process::id() as i32)?,
                // Already reaped when the command ended at once: then it reads as gone.
                init: ProcId::of(s.init.as_raw()).unwrap_or(ProcId {
                    pid: s.init.as_raw(),
                    start: 0,
                }),
                command: s.command.and_then(|p| ProcId::of(p.as_raw()).ok()),
                network: self.network.clone(),
                cgroup: s.cgroup.clone(),
                detached: self.detached,
            }),
            None => None,
        };
        self.state = Some(State {
            status: Status::Running,
            pid: s.init.as_raw(),
            command_pid: s.command.map(|p| p.as_raw()),
            namespaces: s.namespaces.clone(),
            started: state::now(),
            finished: None,
            exit_code: None,
            signal: None,
            tracking,
        });
        self.write()?;
        self.lock = None;
        if let Some(fd) = self.notify.take() {
            let _ = File::from(fd).write_all(b"ok");
        }
        Ok(())
    }

    fn finished(&mut self, ended: &Ended) {
        if let Some(state) = &mut self.state {
            state.status = Status::Exited;
            state.finished = Some(state::now());
            state.exit_code = Some(ended.code);
            state.signal = ended.signal;
        }
        if let Err(e) = self.write() {
            eprintln!("sbx: {e:#}");
        }
    }
}

/// Runs the sandbox in the foreground; returns its exit code and whether it ever started.
/// `_prepared` (the image's layer locks) is held until the sandbox ends.
pub fn foreground(
    plan: &Plan,
    _prepared: &Prepared,
    lock: Option<Flock<File>>,
) -> (Result<i32>, bool) {
    let mut reporter = Reporter::new(plan, lock);
    let result = supervisor::run(plan, &mut reporter);
    (result, reporter.started())
}

/// Starts the sandbox under a supervisor of its own that outlives this process, and
/// returns once the command runs (None), or the exit code of a sandbox that ended before
/// its command started (a command not found: 127, as in the foreground), having shown what
/// it printed; or the reason it could not start. The supervisor inherits what `_prepared`
/// holds (the layer locks), for as long as the sandbox runs.
pub fn detached(
    plan: &Plan,
    _prepared: &Prepared,
    paths: &Paths,
    lock: Flock<File>,
) -> Result<Option<i32>> {
    make_private_dir(&paths.data)?;
    let log = paths.data.join(LOG);
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: sbx is single-threaded; the child goes on to be the supervisor.
    match unsafe { fork() }.context("fork the supervisor")? {
        ForkResult::Child => {
            drop(ready_r);
            // Not unlocked: the lock belongs to the waiting parent, which unlocks it.
            forget_lock(lock);
            let code = match daemon(plan, &log, ready_w) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sbx: {e:#}");
                    crate::error::exit::SBX_ERROR
                }
            };
            crate::sys::exit_now(code)
        }
        ForkResult::Parent { .. } => {
            drop(ready_w);
            let mut answer = String::new();
            let _ = File::from(ready_r).read_to_string(&mut answer);
            drop(lock);
            if let Some((code, printed)) = ended_before_start(&answer) {
                let mut stderr = TerminalSafe::new(std::io::stderr().lock(), true);
                let _ = stderr.write_all(printed.as_bytes());
                let _ = stderr.finish();
                return Ok(Some(code));
            }
            match answer.as_str() {
                "ok" => Ok(None),
                "" => Err(anyhow!(
                    "the sandbox's supervisor ended before the command started; see `sbx logs {}`",
                    paths.name
                )),
                why => Err(anyhow!("{why}")),
            }
        }
    }
}

/// The detached supervisor: a session of its own, stdin from /dev/null, stdout and stderr
/// through a pipe into the capped log; then the same supervision as in the foreground.
fn daemon(plan: &Plan, log: &Path, ready: OwnedFd) -> Result<i32> {
    nix::unistd::setsid().context("setsid")?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, Mode::empty()).context("/dev/null")?;
    // Nothing may keep the caller's stdout open: `name=$(sbx run -d ...)` must return.
    for fd in 0..3 {
        crate::sys::dup_to(null.as_fd(), fd)?;
    }
    let (log_r, log_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let logger = spawn_logger(log_r, log)?;
    crate::sys::dup_to(log_w.as_fd(), 1)?;
    crate::sys::dup_to(log_w.as_fd(), 2)?;
    drop(log_w);

    let mut reporter = Reporter::new(plan, None);
    reporter.detached = true;
    reporter.notify = Some(ready);
    let result = supervisor::run(plan, &mut reporter);
    if let Err(e) = &result {
        if let Some(fd) = reporter.notify.take() {
            let _ = File::from(fd).write_all(format!("{e:#}").as_bytes());
        }
        eprintln!("sbx: {e:#}");
    }
    // Our copies of the log pipe go; the logger drains what is left and ends.
    crate::sys::dup_to(null.as_fd(), 1)?;
    crate::sys::dup_to(null.as_fd(), 2)?;
    let _ = waitpid(logger, None);
    // Ended without its command ever running (not found, not executable): the caller shows
    // what the sandbox printed, since a sandbox that never started is not kept.
    if let (Ok(code), Some(fd)) = (&result, reporter.notify.take()) {
        let message = format!("{ENDED}{code}\n{}", log_tail(log));
        let _ = File::from(fd).write_all(message.as_bytes());
    }
    result
}

/// How the supervisor says the sandbox ended before its command started: `ENDED` CODE,
/// a newline, then the end of what the sandbox printed.
const ENDED: &str = "ended ";
/// That much of the log's end is shown.
const TAIL: u64 = 4096;

fn ended_before_start(answer: &str) -> Option<(i32, &str)> {
    let (code, printed) = answer.strip_prefix(ENDED)?.split_once('\n')?;
    Some((code.parse().ok()?, printed))
}

/// The last TAIL bytes of the log, from the start of a line.
fn log_tail(log: &Path) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut text = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL)))
        .is_err()
        || file.take(TAIL).read_to_end(&mut text).is_err()
    {
        return String::new();
    }
    if len > TAIL {
        let start = text.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        text.drain(..start);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn forget_lock(lock: Flock<File>) {
    let raw: RawFd = lock.as_raw_fd();
    std::mem::forget(lock);
    // SAFETY: `raw` was the lock's fd, which nothing else will use or close now that the
    // lock is forgotten; closing it does not unlock the parent's copy.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
}

/// A process that copies the pipe into `log`, moving it to `log.1` at each LOG_CAP bytes.
fn spawn_logger(pipe: OwnedFd, log: &Path) -> Result<nix::unistd::Pid> {
    let mut file = open_log(log)?;
    // SAFETY: single-threaded; the child only copies bytes and exits.
    match unsafe { fork() }.context("fork the logger")? {
        ForkResult::Child => {
            let keep = [pipe.as_raw_fd(), file.as_raw_fd()];
            let _ = crate::sys::close_fds_except(&keep);
            let mut pipe = File::from(pipe);
            let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut chunk = &buf[..n];
                if written + n as u64 > LOG_CAP && written > 0 {
                    // The old file ends with a whole line where the chunk has a line end.
                    let split = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    if file.write_all(&chunk[..split]).is_err() {
                        break;
                    }
                    chunk = &chunk[split..];
                    let _ = std::fs::rename(log, log.with_extension("1"));
                    match open_log(log) {
                        Ok(f) => file = f,
                        Err(_) => break,
                    }
                    written = 0;
                }
                if file.write_all(chunk).is_err() {
                    break;
                }
                written += chunk.len() as u64;
            }
            crate::sys::exit_now(0)
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

fn open_log(log: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(log)
        .with_context(|| format!("open {}", log.display()))
}
