//! The kept user namespace: one per user, with the whole subordinate range mapped once by
//! newuidmap/newgidmap, held open by a tiny idle process (the holder), as rootless podman
//! keeps its pause process.
//!
//! A run enters it with `setns` (the user owns it, so sbx gets every capability there),
//! creates the sandbox's own user namespace nested in it, and writes the nested maps
//! itself: no setuid helper runs. The holder is found through a record in the runtime
//! directory (`$XDG_RUNTIME_DIR/sbx/.holder.json`) and verified before every use (`find`);
//! a record that does not verify is never used, and a fresh holder is made under a lock.
//!
//! No sandbox process lives in the holder's namespace: each sandbox has its own, a child of
//! the holder's, so a sandbox's root has no capability over a sibling or over the holder,
//! and the holder lives in the host's pid namespace, where no sandbox can see it.

mod make;
pub mod maps;
mod record;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::plan::ids::{IdMode, IdPlan, IdRange};

pub use make::{idle, IDLE_ARGV0};
use record::Record;
pub use record::REFUSED_FOR_SECS;

/// What a holder must be: the maps newuidmap/newgidmap give it, by the helpers named.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub uid: u32,
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

impl Wanted {
    /// The holder a full id plan nests in; None for a single-id plan (no range to keep).
    pub fn for_ids(ids: &IdPlan) -> Option<Wanted> {
        match &ids.mode {
            IdMode::Full {
                newuidmap,
                newgidmap,
                uid_map,
                gid_map,
            } => Some(Wanted {
                uid: ids.host_uid,
                uid_map: maps::holder_map(uid_map, ids.host_uid),
                gid_map: maps::holder_map(gid_map, ids.host_gid),
                newuidmap: newuidmap.clone(),
                newgidmap: newgidmap.clone(),
            }),
            IdMode::Single { .. } => None,
        }
    }
}

/// A verified holder: its user namespace, open, and its maps as the kernel shows them.
#[derive(Debug)]
pub struct Holder {
    pub pid: i32,
    pub userns: OwnedFd,
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// Made by this call: why the recorded one (if any) was not used.
    pub made: Option<String>,
}

/// The maps a sandbox nested in the holder gets, in the holder's ids.
#[derive(Debug, Clone)]
pub struct Nested {
    pub holder: i32,
    /// Made by this run: why the recorded one was not used.
    pub made: Option<String>,
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
}

/// Finds the verified holder, or makes one under the lock; then enters its user namespace.
/// Afterwards this process is root in the holder's namespace, and a user namespace it
/// creates is nested there, with the maps returned written by `write_nested`. Fails, with
/// this process unchanged, when there is no usable holder: the caller maps per run.
///
/// This process must be single-threaded (the kernel refuses `setns` into a user namespace
/// otherwise, with EINVAL).
pub fn enter(ids: &IdPlan) -> Result<Nested> {
    let wanted = Wanted::for_ids(ids).context("only a full id map is nested")?;
    let IdMode::Full {
        uid_map, gid_map, ..
    } = &ids.mode
    else {
        bail!("only a full id map is nested");
    };
    let holder = get(&wanted)?;
    let nested = Nested {
        holder: holder.pid,
        made: holder.made.clone(),
        uid_map: maps::nest(uid_map, &holder.uid_map).context("the holder lacks uids")?,
        gid_map: maps::nest(gid_map, &holder.gid_map).context("the holder lacks gids")?,
    };
    nix::sched::setns(holder.userns.as_fd(), CloneFlags::CLONE_NEWUSER).with_context(|| {
        format!(
            "setns into the user namespace of the holder (pid {})",
            holder.pid
        )
    })?;
    Ok(nested)
}

/// Writes a nested sandbox's maps (from inside the holder's namespace, where this process
/// has CAP_SETUID and CAP_SETGID). setgroups stays allowed, as with newgidmap.
pub fn write_nested(nested: &Nested, pid: i32) -> Result<()> {
    for (file, map) in [("uid_map", &nested.uid_map), ("gid_map", &nested.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, maps::text(map)).with_context(|| {
            format!(
                "cannot write {} to {path} (nested in the holder, pid {})",
                maps::text(map).trim().replace('\n', ", "),
                nested.holder
            )
        })?;
    }
    Ok(())
}

/// The verified holder for `wanted`, made if there is none. A record that names a holder
/// whose maps are not `wanted` (the subordinate ranges changed) has that holder ended.
pub fn get(wanted: &Wanted) -> Result<Holder> {
    let dir = runtime_dir()?;
    if let Ok(holder) = find(dir.as_fd(), wanted) {
        return Ok(holder);
    }
    let _lock = lock(dir.as_fd())?;
    // Another first run may have made it while we waited for the lock.
    let why = match find(dir.as_fd(), wanted) {
        Ok(holder) => return Ok(holder),
        Err(Unusable::Refused(why)) => bail!("{why}"),
        Err(Unusable::Outdated(pidfd)) => {
            let _ = crate::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            "the recorded holder maps other ids".to_string()
        }
        Err(Unusable::Absent(why)) => why,
    };
    sweep_unfinished(dir.as_fd());
    match make::make(wanted, |record| record.write(dir.as_fd())) {
        Ok(_) => {
            let found = find(dir.as_fd(), wanted).map_err(|why| {
                // Recorded, but not what a run may use: ended, and made again next time.
                let _ = reset_locked(dir.as_fd());
                anyhow::anyhow!("the new holder does not verify: {why:?}")
            });
            found.map(|holder| Holder {
                made: Some(why),
                ..holder
            })
        }
        Err(e) => {
            // Remembered for a while, so every run does not pay for the attempt again.
            let _ = Record::refused(&format!("{e:#}")).write(dir.as_fd());
            Err(e)
        }
    }
}

/// Ends the verified holder, if there is one, and forgets its record. Returns its pid.
pub fn reset() -> Result<Option<i32>> {
    let dir = runtime_dir()?;
    let _lock = lock(dir.as_fd())?;
    reset_locked(dir.as_fd())
}

/// `reset`, with the lock held.
fn reset_locked(dir: BorrowedFd) -> Result<Option<i32>> {
    sweep_unfinished(dir);
    let ended = match Record::read(dir) {
        Ok(Some(record)) if record.refused.is_none() => match record.identify() {
            Ok((_, pidfd)) => {
                crate::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL)
                    .with_context(|| format!("kill the holder (pid {})", record.pid))?;
                Some(record.pid)
            }
            Err(_) => None,
        },
        _ => None,
    };
    match nix::unistd::unlinkat(dir, record::NAME, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(ended),
        Err(e) => Err(e).context("remove the holder's record"),
    }
}

/// Removes what record writes left unfinished, their writer killed mid-way: the
/// `..holder.json.PID.N.tmp` files of `beneath::write_atomic`. Every record write holds
/// the lock, as the caller does, so none of these is in progress.
fn sweep_unfinished(dir: BorrowedFd) {
    let Ok(mut listing) = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let prefix = format!(".{}.", record::NAME);
    let unfinished: Vec<std::ffi::CString> = listing
        .iter()
        .flatten()
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| {
            let bytes = name.to_bytes();
            bytes.starts_with(prefix.as_bytes()) && bytes.ends_with(b".tmp")
        })
        .collect();
    for name in unfinished {
        let _ = nix::unistd::unlinkat(
            dir,
            name.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Gives up on the holder `pid` after its namespace refused a nested one: ends it (if the
/// record still names it) and records the refusal, so runs map per run for
/// `REFUSED_FOR_SECS`. Called from inside the holder's namespace, where the same user owns
/// the runtime directory and may signal the holder.
pub fn refuse(pid: i32, why: &str) -> Result<()> {
    let dir = runtime_dir()?;
    let _lock = lock(dir.as_fd())?;
    if let Ok(Some(record)) = Record::read(dir.as_fd()) {
        if record.pid == pid {
            if let Ok((_, pidfd)) = record.identify() {
                crate::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL)
                    .with_context(|| format!("kill the holder (pid {pid})"))?;
            }
        }
    }
    Record::refused(why).write(dir.as_fd())
}

/// Why there is no usable holder.
#[derive(Debug)]
enum Unusable {
    /// No record, or one that does not name a live holder of ours.
    Absent(String),
    /// Ours, alive, but with other maps: to be ended (by this pidfd) and made anew.
    Outdated(OwnedFd),
    /// Making one failed lately; nesting is refused here.
    Refused(String),
}

/// The holder the record names, verified: the process is the one recorded (pid and start
/// time), it is the user's, its user namespace is the recorded one, owned by the user,
/// a child of ours, and maps exactly what `wanted` asks.
fn find(dir: BorrowedFd, wanted: &Wanted) -> Result<Holder, Unusable> {
    let record = match Record::read(dir) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(Unusable::Absent("no record".into())),
        Err(e) => return Err(Unusable::Absent(format!("{e:#}"))),
    };
    if let Some(why) = record.refused_lately() {
        return Err(Unusable::Refused(why));
    }
    let (proc_dir, _) = record
        .identify()
        .map_err(|e| Unusable::Absent(format!("{e:#}")))?;
    let userns = record
        .check_userns(proc_dir.as_fd(), wanted.uid)
        .map_err(|e| Unusable::Absent(format!("{e:#}")))?;
    let read_map = |name: &str| {
        read_at(proc_dir.as_fd(), name)
            .ok()
            .and_then(|t| maps::parse(&t))
    };
    let (Some(uid_map), Some(gid_map)) = (read_map("uid_map"), read_map("gid_map")) else {
        return Err(Unusable::Absent("its maps cannot be read".into()));
    };
    if maps::normalize(&uid_map) != wanted.uid_map || maps::normalize(&gid_map) != wanted.gid_map {
        return match record.identify() {
            Ok((_, pidfd)) => Err(Unusable::Outdated(pidfd)),
            Err(e) => Err(Unusable::Absent(format!("{e:#}"))),
        };
    }
    Ok(Holder {
        pid: record.pid,
        userns,
        uid_map,
        gid_map,
        made: None,
    })
}

/// A small file below an open directory (a `/proc/PID` directory), read whole.
fn read_at(dir: BorrowedFd, name: &str) -> std::io::Result<String> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

/// The user's runtime directory for sbx (`$XDG_RUNTIME_DIR/sbx`, else `run/` beside the
/// image store), made 0700 if missing, open, and checked to be the user's and private.
fn runtime_dir() -> Result<OwnedFd> {
    let path = crate::image::store::Store::runtime_location()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    match nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
    }
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", path.display()))?;
    let st = nix::sys::stat::fstat(&fd).context("fstat")?;
    if st.st_uid != nix::unistd::getuid().as_raw() || st.st_mode & 0o022 != 0 {
        bail!(
            "{} is not a private directory of yours; remove it, and sbx makes it again",
            path.display()
        );
    }
    Ok(fd)
}

/// The lock under which a holder is made or ended, so concurrent first runs make one.
fn lock(dir: BorrowedFd) -> Result<nix::fcntl::Flock<File>> {
    let fd = nix::fcntl::openat(
        dir,
        ".holder.lock",
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .context("open the holder's lock")?;
    nix::fcntl::Flock::lock(File::from(fd), nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("lock the holder's lock")
}
