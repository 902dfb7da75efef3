//! Making a holder: a grandchild of sbx (so no sbx process is its parent for long) in a
//! session and process group of its own, at `/`, with a new user namespace whose maps
//! newuidmap/newgidmap write; it checks that a namespace can be nested in it, waits until sbx
//! has written its record, then execs sbx as `sbx-holder`, which closes every descriptor but
//! /dev/null on 0-2 and sleeps. Should sbx fail or die before the record is written, the
//! holder sees its pipe close and ends: no holder is left that no record names.

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

/// Makes a holder mapped as `wanted` and has `publish` record it; returns its record.
/// The holder waits for the record before it settles: if `publish` fails or this process
/// dies first, it ends, so no holder outlives its maker unrecorded. This process must be
/// single-threaded.
pub fn make(wanted: &Wanted, publish: impl FnOnce(&Record) -> Result<()>) -> Result<Record> {
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
    let mut go = File::from(go_w);
    let pid = read_pid(&mut ready)?;
    let kill = || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    };
    let settled = (|| {
        // 1. Its maps, by newuidmap/newgidmap.
        crate::supervisor::idmap::write(&holder_ids(wanted), pid)?;
        go.write_all(MAPPED).context("release the holder")?;
        // 2. It checks that a namespace nests in its own.
        expect(&mut ready, NESTS)?;
        // 3. Its record, written while it waits.
        let record = Record::of_process(pid)?;
        publish(&record)?;
        go.write_all(RECORDED).context("release the holder")?;
        // 4. It execs as `sbx-holder`; its end of `ready` closes then, unless it failed.
        let mut why = String::new();
        let _ = ready.read_to_string(&mut why);
        if !why.is_empty() {
            bail!("{}", why.trim_start_matches('E'));
        }
        Ok(record)
    })();
    settled.inspect_err(|_| kill())
}

/// What the maker tells the holder on `go`, one byte each: its maps are written; its record
/// is written.
const MAPPED: &[u8] = b"m";
const RECORDED: &[u8] = b"r";
/// What the holder tells the maker on `ready` after its pid line: a namespace nests in its
/// own. Anything else is `E` and why it failed.
const NESTS: &[u8] = b"n";

/// The ids a holder's own maps are written from: the whole range at the user's ids.
fn holder_ids(wanted: &Wanted) -> IdPlan {
    IdPlan {
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
    }
}

/// Reads the holder's next word on `ready`: `want`, or its reason for failing.
fn expect(ready: &mut File, want: &[u8]) -> Result<()> {
    let mut got = vec![0u8; want.len()];
    match ready.read_exact(&mut got) {
        Ok(()) if got == want => Ok(()),
        Ok(()) => {
            let mut rest = String::new();
            let _ = ready.read_to_string(&mut rest);
            let text = format!("{}{rest}", String::from_utf8_lossy(&got));
            bail!("{}", text.trim_start_matches('E'))
        }
        Err(e) => Err(e).context("the holder ended without a word"),
    }
}

/// Waits on `go` for the maker's `want`; the maker's end closing first means it failed or
/// died, and the holder must not outlive it.
fn await_maker(go: &mut File, want: &[u8]) -> Result<()> {
    let mut got = vec![0u8; want.len()];
    match go.read_exact(&mut got) {
        Ok(()) if got == want => Ok(()),
        _ => bail!("sbx ended before the holder was set up"),
    }
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
        let mut go = File::from(go);
        await_maker(&mut go, MAPPED)?;
        probe_nesting()?;
        ready.write_all(NESTS).context("tell sbx")?;
        await_maker(&mut go, RECORDED)?;
        drop(go);
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
