//! The command's own process, between fork and execve, for the sandbox's command (forked
//! by init) and for `sbx exec` alike: clean signal state, session, terminal, working
//! directory, no stray fds, rlimits, ids, capabilities, no_new_privs, Landlock, seccomp,
//! then the exec with PATH lookup.
//!
//! It reports to whoever forked it over a close-on-exec channel: what Landlock the kernel
//! enforced, and why the exec failed if it did; the end of the channel means it happened.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{posix_openpt, unlockpt};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::exit::{CANNOT_EXECUTE, NOT_FOUND, SBX_ERROR};
use crate::plan::Plan;
use crate::security::landlock::Enforced;
use crate::security::{self, SecurityPlan};
use crate::sync::{CommandReceiver, CommandReport, FromCommand};

nix::ioctl_write_int_bad!(set_controlling_tty, libc::TIOCSCTTY);

struct Failure {
    code: i32,
    message: String,
}

fn setup_error(message: String) -> Failure {
    Failure {
        code: SBX_ERROR,
        message,
    }
}

/// What the command's process reported before its exec.
#[derive(Debug)]
pub enum Report {
    /// The exec happened, with this Landlock enforced (`None`: Landlock was off).
    Executed { landlock: Option<Enforced> },
    /// It did not: `code` and `message` say why.
    Failed { code: i32, message: String },
}

/// Reads the report until the channel closes: the exec closed it (close-on-exec), or the
/// process ended after saying why it could not exec.
pub fn read_report(chan: &CommandReceiver) -> Report {
    let mut landlock = None;
    loop {
        match chan.recv() {
            Ok(Some((FromCommand::Landlock(enforced), _))) => landlock = Some(enforced),
            Ok(Some((FromCommand::ExecFailed { code, message }, _))) => {
                return Report::Failed { code, message }
            }
            Ok(None) => return Report::Executed { landlock },
            Err(e) => {
                return Report::Failed {
                    code: SBX_ERROR,
                    message: format!("reading the command's report: {e:#}"),
                }
            }
        }
    }
}

/// The command's process, after fork: prepares itself and execs, or reports why not and
/// ends with that code.
pub fn exec(plan: &Plan, pty: Option<OwnedFd>, report: CommandReport) -> ! {
    let failure = match prepare_and_exec(plan, pty, &report) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let _ = report.send(&FromCommand::ExecFailed {
        code: failure.code,
        message: failure.message,
    });
    // Without touching state shared with init.
    crate::sys::exit_now(failure.code)
}

fn prepare_and_exec(
    plan: &Plan,
    pty: Option<OwnedFd>,
    report: &CommandReport,
) -> Result<std::convert::Infallible, Failure> {
    reset_signals();
    new_session(pty).map_err(|e| setup_error(format!("set up the command's terminal: {e}")))?;
    nix::unistd::chdir(&plan.workdir).map_err(|e| {
        setup_error(format!(
            "working directory {} is not usable inside the sandbox: {}; bind it in or pick another with -w",
            plan.workdir.display(),
            e.desc()
        ))
    })?;
    crate::sys::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32)
        .map_err(|e| setup_error(format!("close stray file descriptors: {e}")))?;
    crate::limits::apply_rlimits(&plan.limits.rlimits)
        .map_err(|e| setup_error(format!("{e:#}")))?;
    if let Some((uid, gid)) = plan.run_as {
        switch_ids(uid, gid)
            .map_err(|e| setup_error(format!("switch to uid {uid} and gid {gid} inside: {e:#}")))?;
    }
    harden(&plan.security, report).map_err(|e| setup_error(format!("{e:#}")))?;
    Err(exec_search(plan))
}

/// Capabilities, no_new_privs, Landlock, and seccomp last: nothing after it but execve,
/// so the filter need not allow what the other steps use. What Landlock the kernel
/// enforced goes to whoever forked us before seccomp, which could deny the sending.
fn harden(plan: &SecurityPlan, report: &CommandReport) -> anyhow::Result<()> {
    security::caps::apply(&plan.caps)?;
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    if let Some(enforced) = security::landlock::apply(&plan.landlock)? {
        report.send(&FromCommand::Landlock(enforced))?;
    }
    if let Some(filter) = &plan.seccomp {
        security::seccomp::apply(filter)?;
    }
    Ok(())
}

/// From root inside to the command's own ids (image roots), keeping the permitted
/// capabilities so `security::apply` can still shape them, and making them effective again.
fn switch_ids(uid: u32, gid: u32) -> anyhow::Result<()> {
    use anyhow::Context;
    // -1 means "unchanged" to setresuid: the command would stay root. The planner refuses
    // it; this is the last line.
    if uid == u32::MAX || gid == u32::MAX {
        anyhow::bail!("-1 is not an id that can be set");
    }
    nix::sys::prctl::set_keepcaps(true).context("PR_SET_KEEPCAPS")?;
    let gid = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).context("setresgid")?;
    let uid = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).context("setresuid")?;
    if nix::unistd::geteuid() != uid || nix::unistd::getegid() != gid {
        anyhow::bail!("the ids did not change");
    }
    let permitted = caps::read(None, caps::CapSet::Permitted).context("read capabilities")?;
    caps::set(None, caps::CapSet::Effective, &permitted).context("raise capabilities")?;
    nix::sys::prctl::set_keepcaps(false).context("PR_SET_KEEPCAPS")
}

/// Default dispositions and an empty mask: the command starts as if from a fresh shell
/// (Rust ignores SIGPIPE; init blocks the forwarded signals).
fn reset_signals() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL involves no handler code at all.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The command leads a session of its own; with a pty, that pty is its controlling
/// terminal and its stdin, stdout and stderr.
fn new_session(pty: Option<OwnedFd>) -> nix::Result<()> {
    nix::unistd::setsid()?;
    if let Some(slave) = pty {
        // SAFETY: TIOCSCTTY takes an integer argument and no pointers.
        unsafe { set_controlling_tty(slave.as_raw_fd(), 0) }?;
        nix::unistd::dup2_stdin(&slave)?;
        nix::unistd::dup2_stdout(&slave)?;
        nix::unistd::dup2_stderr(&slave)?;
    }
    Ok(())
}

/// execve with execvp's PATH rules; returns only on failure, with `CANNOT_EXECUTE` or
/// `NOT_FOUND`.
fn exec_search(plan: &Plan) -> Failure {
    let name = &plan.argv[0];
    let display = name.to_string_lossy().into_owned();
    if name.as_bytes().contains(&b'/') {
        let err = execve(name, plan);
        return exec_failure(&display, err, None);
    }
    let mut denied = None;
    for dir in plan.search_path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let Ok(path) = CString::new(format!("{dir}/{display}")) else {
            continue;
        };
        match execve(&path, plan) {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG => {}
            // Like a shell: a file that exists but cannot be run is "cannot execute"; a
            // directory of PATH we may not search is just not where the command is.
            Errno::EACCES | Errno::EPERM | Errno::EISDIR => {
                if nix::sys::stat::stat(path.as_c_str()).is_ok() {
                    denied = Some(Errno::EACCES);
                }
            }
            other => return exec_failure(&display, other, None),
        }
    }
    match denied {
        Some(e) => exec_failure(&display, e, None),
        None => exec_failure(&display, Errno::ENOENT, Some(&plan.search_path)),
    }
}

fn execve(path: &CStr, plan: &Plan) -> Errno {
    match nix::unistd::execve(path, &plan.argv, &plan.env) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn exec_failure(name: &str, err: Errno, searched: Option<&str>) -> Failure {
    match (err, searched) {
        (Errno::ENOENT, Some(path)) => Failure {
            code: NOT_FOUND,
            message: format!("{name}: command not found in the sandbox (PATH={path})"),
        },
        (Errno::ENOENT, None) => Failure {
            code: NOT_FOUND,
            message: format!("{name}: no such file or directory in the sandbox"),
        },
        (e, _) => Failure {
            code: CANNOT_EXECUTE,
            message: format!("{name}: cannot execute: {}", e.desc()),
        },
    }
}

/// The command's terminal, from the sandbox's own devpts.
pub struct Pty {
    /// For the relay outside, sent over a channel.
    pub master: nix::pty::PtyMaster,
    /// The command's controlling terminal and fds 0-2.
    pub slave: OwnedFd,
}

/// Opens a terminal inside the sandbox's own devpts.
pub fn open_pty() -> anyhow::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("open /dev/ptmx in the sandbox")?;
    unlockpt(&master).context("unlock the pty")?;
    let name = nix::pty::ptsname_r(&master).context("name the pty")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {name}"))?;
    Ok(Pty { master, slave })
}
