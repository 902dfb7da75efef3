//! Running store writers inside a user namespace mapped with the caller's whole subordinate
//! range, as `podman unshare` does: the caller is root there and every id of the range is
//! an ordinary id, so layers keep the ownership their archives give, and files owned by
//! subordinate ids can be removed again.
//!
//! A forked child unshares the user namespace, the parent has newuidmap/newgidmap write
//! its maps (the same `IdPlan` a sandbox with `--uid 0` gets), then the child does the work
//! and exits; only its verdict, Ok or a message, comes back through a pipe.

use std::fs::File;
use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::plan::ids::{IdMode, IdPlan, UsernsMode};
use crate::runtime::fork::{fork_verdict, Forked, Judged};
use crate::supervisor::idmap;

/// The id plan of store writers and of sandboxes on an image: the caller is root inside,
/// the subordinate range fills 1, 2, ...
pub fn store_ids() -> IdPlan {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    crate::planner::ids::plan(&crate::planner::facts::user_name(uid), uid, gid, 0, 0)
}

/// Whether this process has a single thread, so `fork` may run arbitrary code.
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Runs `body` in a forked child inside a new user namespace with the store's id map.
/// The caller must be single-threaded.
pub fn run(body: impl FnOnce() -> Result<()>) -> Result<()> {
    let ids = store_ids();
    if let IdMode::Single { warning } = &ids.mode {
        eprintln!("sbx: warning: {warning}");
    }
    if let Some(holder) = kept_namespace(&ids) {
        return run_in(holder, body);
    }
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the caller guarantees sbx is single-threaded here, so the child may do
    // anything.
    match unsafe { fork_verdict() }.context("fork")? {
        Forked::Child(verdict) => {
            drop((ready_r, go_w));
            verdict.conclude(|| {
                let done = child(File::from(ready_w), File::from(go_r), body);
                let _ = std::io::stdout().flush();
                done.map_err(|e| format!("{e:#}"))
            })
        }
        Forked::Parent(mut helper) => {
            drop((ready_w, go_r));
            let mut byte = [0u8; 1];
            let mut ready = File::from(ready_r);
            if ready.read(&mut byte).context("wait for the child")? == 1 {
                let pid = helper.pid().context("the store's helper process is gone")?;
                idmap::write(&ids, pid.as_raw())?;
                File::from(go_w)
                    .write_all(b"g")
                    .context("release the child")?;
            }
            let message = helper.read(None).unwrap_or_default();
            judged(helper.judge(message))
        }
    }
}

/// The holder of the kept namespace, whose map is the store's (see `holder`), unless
/// `SBX_USERNS=per-run` or there is none to be had.
fn kept_namespace(ids: &IdPlan) -> Option<crate::holder::Holder> {
    let mode = std::env::var("SBX_USERNS").ok();
    if mode.as_deref().and_then(UsernsMode::parse) == Some(UsernsMode::PerRun) {
        return None;
    }
    crate::holder::get(&crate::holder::Wanted::for_ids(ids)?).ok()
}

/// `run` in the kept namespace: the child enters it, no map to write.
fn run_in(holder: crate::holder::Holder, body: impl FnOnce() -> Result<()>) -> Result<()> {
    // SAFETY: the caller guarantees sbx is single-threaded here, so the child may do
    // anything.
    match unsafe { fork_verdict() }.context("fork")? {
        Forked::Child(verdict) => verdict.conclude(|| {
            let done = (|| {
                nix::sched::setns(holder.userns, CloneFlags::CLONE_NEWUSER).with_context(|| {
                    format!("enter the kept user namespace (holder pid {})", holder.pid)
                })?;
                let _ = nix::unistd::setgroups(&[]);
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
                body()
            })();
            let _ = std::io::stdout().flush();
            done.map_err(|e| format!("{e:#}"))
        }),
        Forked::Parent(mut helper) => {
            drop(holder);
            let message = helper.read(None).unwrap_or_default();
            judged(helper.judge(message))
        }
    }
}

fn judged(verdict: Result<(), Judged>) -> Result<()> {
    match verdict {
        Ok(()) => Ok(()),
        Err(Judged::Failed(message)) => Err(anyhow::anyhow!(message)),
        Err(Judged::Ended(other)) => bail!("the store's helper process ended with {other:?}"),
        Err(Judged::Wait(e)) => Err(e).context("waitpid"),
    }
}

fn child(mut ready: File, mut go: File, body: impl FnOnce() -> Result<()>) -> Result<()> {
    let parent = nix::unistd::getppid();
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
        crate::error::HostFeature::new(
            "unprivileged user namespaces",
            format!("cannot create a user namespace for the image store ({e}); see `sbx check`"),
        )
    })?;
    ready.write_all(b"r").context("signal the parent")?;
    let mut byte = [0u8; 1];
    if go.read(&mut byte).context("wait for the id maps")? != 1 {
        bail!("the id maps were not written");
    }
    // Our ids are root's now; setgroups drops the caller's host groups where allowed.
    let _ = nix::unistd::setgroups(&[]);
    // Killed with sbx: an interrupted import stops at once and leaves only tmp/ entries.
    // Set only now, since a change of credentials (the new namespace) clears it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    if nix::unistd::getppid() != parent {
        bail!("sbx ended before the import started");
    }
    body()
}
