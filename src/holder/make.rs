//! Making a holder: a grandchild of sbx (so no sbx process is its parent for long) in a
//! session and process group of its own, at `/`, with a new user namespace whose maps
//! newuidmap/newgidmap write; it checks that a namespace can be nested in it, then execs
//! sbx as `sbx-holder`, which closes every descriptor but /dev/null on 0-2 and sleeps.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::record::Record;
use super::Wanted;
use crate::plan::ids::{IdMode, IdPlan};

/// The name the holder runs under (`ps` shows it); `main` checks for it first.
pub const IDLE_ARGV0: &str = "sbx-holder";

/// Makes a holder mapped as `wanted`; returns its record (not yet written). This process
/// must be single-threaded.
pub fn make(wanted: &Wanted) -> Result<Record> {
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the caller is single-threaded, so the child may allocate; it never returns
    // into our frames (both its branches end in exit_now or exec).
    let middle = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop((ready_r, go_w));
            // SAFETY: as above; the middle process only forks and exits.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => holder(ready_w, go_r),
                _ => crate::sys::exit_now(0),
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_w, go_r));
    let _ = waitpid(middle, None);
    let mut ready = File::from(ready_r);
    let pid = read_pid(&mut ready)?;
    let ids = IdPlan {
        host_uid: wanted.uid,
        host_gid: nix::unistd::getgid().as_raw(),
        inside_uid: 0,
        inside_gid: 0,
        mode: IdMode::Full {
            newuidmap: wanted.newuidmap.clone(),
            newgidmap: wanted.newgidmap.clone(),
            uid_map: wanted.uid_map.clone(),
            gid_map: wanted.gid_map.clone(),
        },
    };
    let kill = || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    };
    if let Err(e) = crate::supervisor::idmap::write(&ids, pid) {
        kill();
        return Err(e);
    }
    File::from(go_w)
        .write_all(b"g")
        .context("release the holder")?;
    // Its end closes at exec; anything before that is why it failed.
    let mut why = String::new();
    let _ = ready.read_to_string(&mut why);
    if !why.is_empty() {
        kill();
        bail!("{}", why.trim_start_matches('E'));
    }
    Record::of_process(pid).inspect_err(|_| kill())
}

/// The holder's pid line, or why it could not start (it then ended, closing the pipe).
fn read_pid(ready: &mut File) -> Result<i32> {
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    while !text.ends_with(b"\n") {
        match ready.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => text.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("wait for the holder"),
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    match text.strip_suffix('\n').map(str::parse::<i32>) {
        Some(Ok(pid)) => Ok(pid),
        _ => bail!("the holder did not start: {}", text.trim_start_matches('E')),
    }
}

/// The holder before exec. Never returns.
fn holder(ready: OwnedFd, go: OwnedFd) -> ! {
    let mut ready = File::from(ready);
    let result = (|| -> Result<()> {
        nix::unistd::setsid().context("setsid")?;
        nix::unistd::chdir("/").context("chdir /")?;
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).context("unshare a user namespace")?;
        // One write: the pipe delivers it whole.
        let line = format!("{}\n", std::process::id());
        ready.write_all(line.as_bytes()).context("tell sbx")?;
        let mut byte = [0u8; 1];
        if File::from(go)
            .read(&mut byte)
            .context("wait for the maps")?
            != 1
        {
            bail!("sbx ended before the maps were written");
        }
        probe_nesting()?;
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .context("open /dev/null")?;
        for fd in 0..3 {
            crate::sys::dup_to(null.as_fd(), fd).context("dup2 /dev/null")?;
        }
        drop(null);
        crate::sys::close_fds_except(&[ready.as_raw_fd()]).context("close_range")?;
        SigSet::empty()
            .thread_set_mask()
            .context("clear the signal mask")?;
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(IDLE_ARGV0)
            .env_clear()
            .exec();
        Err(err).context("exec sbx as the holder")
    })();
    if let Err(e) = result {
        let _ = ready.write_all(format!("E{e:#}").as_bytes());
    }
    crate::sys::exit_now(1)
}

/// A user namespace can be made inside this one (a `user.max_user_namespaces` limit or a
/// security module may refuse nesting): tried in a child, which exits at once.
fn probe_nesting() -> Result<()> {
    // SAFETY: single-threaded (a forked child of sbx); the probe only unshares and exits.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            crate::sys::exit_now(if ok { 0 } else { 1 })
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            _ => bail!(
                "a user namespace cannot be nested in the kept one here (a \
                 user.max_user_namespaces limit, or a security module)"
            ),
        },
    }
}

/// The holder itself, after exec: nothing open but /dev/null, default signal actions, no
/// work; it sleeps until it is killed (`sbx system reset`, or a reboot).
pub fn idle() -> ! {
    let _ = crate::sys::close_range(3, u32::MAX, 0);
    let _ = nix::sys::prctl::set_name(c"sbx-holder");
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: restoring a default action has no memory-safety preconditions.
        let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    loop {
        nix::unistd::pause();
    }
}
