//! PID 1 inside the sandbox: start the command, forward signals to it, reap every orphan,
//! report the command's outcome to the supervisor, and exit (which ends the namespace).

use std::convert::Infallible;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::pty::{posix_openpt, unlockpt};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::plan::Plan;
use crate::supervisor::FORWARDED;
use crate::sync::{Channel, Msg};

pub fn run(plan: &Plan, chan: &Channel) -> Result<Infallible> {
    // Not dumpable: the command, running as the same uid, cannot ptrace init or open
    // /proc/1/fd, /proc/1/mem or /proc/1/exe.
    nix::sys::prctl::set_dumpable(false).context("PR_SET_DUMPABLE")?;
    let pty = if plan.tty {
        Some(open_pty(chan)?)
    } else {
        None
    };

    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: init is single-threaded (the sandbox never starts threads before exec).
    let command = match unsafe { fork() }.context("fork the command")? {
        ForkResult::Child => {
            drop(report_r);
            crate::child::exec_command(plan, pty, report_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(report_w);
    drop(pty);

    match read_exec_report(report_r) {
        None => chan.send(&Msg::Started {
            pid: command.as_raw(),
        })?,
        Some((code, message)) => {
            let _ = waitpid(command, None);
            chan.send(&Msg::ExecFailed { code, message })?;
            exit(0);
        }
    }
    let outcome = supervise(command);
    chan.send(&outcome)?;
    exit(0)
}

/// Opens the command's terminal inside the sandbox's own devpts, hands the master side to
/// the supervisor and returns the slave side.
fn open_pty(chan: &Channel) -> Result<OwnedFd> {
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
    chan.send_fd(&Msg::Pty, Some(master.as_fd()))?;
    chan.expect_msg(&Msg::PtyReady)?;
    Ok(slave)
}

/// EOF means the command was executed; otherwise the command's process wrote why not.
fn read_exec_report(pipe: OwnedFd) -> Option<(i32, String)> {
    let mut buf = Vec::new();
    let _ = std::fs::File::from(pipe).read_to_end(&mut buf);
    if buf.len() < 4 {
        return None;
    }
    let code = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    Some((code, String::from_utf8_lossy(&buf[4..]).into_owned()))
}

/// Waits for the command while forwarding signals and reaping orphans.
fn supervise(command: Pid) -> Msg {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(*sig);
    }
    set.add(Signal::SIGCHLD);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(outcome) = reap(command) {
                    return outcome;
                }
            }
            Ok(sig) => {
                let _ = kill(command, sig);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every exited child; returns the command's outcome once it is among them.
fn reap(command: Pid) -> Option<Msg> {
    let mut outcome = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                outcome = Some(Msg::Exited(code))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                outcome = Some(Msg::Signaled(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return outcome,
            Ok(_) => {}
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends init immediately; the kernel then kills what is left in the
    // namespace. Nothing of ours needs flushing.
    unsafe { libc::_exit(code) }
}
