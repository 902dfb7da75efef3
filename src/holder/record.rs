//! The holder's record (`.holder.json` in the runtime directory) and the checks that tie it
//! to a live process: nothing in it is trusted until the process and its namespace match.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::read_at;

/// The record's name; it starts with a dot, so no sandbox name can be it.
pub const NAME: &str = ".holder.json";

/// How long a failure to make a holder is remembered (runs map per run meanwhile).
pub const REFUSED_FOR_SECS: u64 = 600;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: the process's start time, in clock ticks after boot.
    pub start: u64,
    /// The holder's user namespace: device and inode of /proc/PID/ns/user.
    pub userns_dev: u64,
    pub userns_ino: u64,
    /// Set instead when making a holder failed: why, and when (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(default)]
    pub at: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Record {
    /// The record, or None when there is none. A symlink, a file of someone else's, or
    /// anything that is not a record is an error (and so never trusted).
    pub fn read(dir: BorrowedFd) -> Result<Option<Record>> {
        let fd = match nix::fcntl::openat(
            dir,
            NAME,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(nix::errno::Errno::ELOOP) => bail!("the holder's record is a symlink"),
            Err(e) => return Err(e).context("open the holder's record"),
        };
        let st = nix::sys::stat::fstat(&fd).context("fstat the holder's record")?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG
            || st.st_uid != nix::unistd::getuid().as_raw()
            || st.st_size > 4096
        {
            bail!("the holder's record is not a small file of yours");
        }
        let mut text = String::new();
        File::from(fd)
            .read_to_string(&mut text)
            .context("read the holder's record")?;
        serde_json::from_str(&text)
            .map(Some)
            .context("the holder's record is not a record")
    }

    pub fn write(&self, dir: BorrowedFd) -> Result<()> {
        let text = serde_json::to_vec(self).context("serialize the holder's record")?;
        crate::beneath::write_atomic(dir, NAME.as_ref(), &text).context("write the holder's record")
    }

    pub fn refused(why: &str) -> Record {
        Record {
            refused: Some(why.to_string()),
            at: now(),
            ..Record::default()
        }
    }

    /// Why making a holder failed, if that was lately.
    pub fn refused_lately(&self) -> Option<String> {
        let why = self.refused.as_ref()?;
        let age = now().saturating_sub(self.at);
        (age < REFUSED_FOR_SECS).then(|| format!("{why} (tried {age} s ago)"))
    }

    /// The record of a live holder process, read from /proc.
    pub fn of_process(pid: i32) -> Result<Record> {
        let dir = proc_dir(pid)?;
        let ns = nix::fcntl::openat(
            &dir,
            "ns/user",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context("open its user namespace")?;
        let st = nix::sys::stat::fstat(&ns)?;
        Ok(Record {
            pid,
            start: start_time(dir.as_fd())?,
            userns_dev: st.st_dev,
            userns_ino: st.st_ino,
            ..Record::default()
        })
    }

    /// The recorded process, if it is alive and the user's: its /proc directory, and a
    /// pidfd that names it and no later process with its pid.
    pub fn identify(&self) -> Result<(OwnedFd, OwnedFd)> {
        if self.pid <= 0 || self.refused.is_some() {
            bail!("the record names no process");
        }
        let pidfd = crate::sys::pidfd_open(self.pid)
            .with_context(|| format!("the holder (pid {}) is gone", self.pid))?;
        let dir = proc_dir(self.pid)?;
        let st = nix::sys::stat::fstat(&dir)?;
        if st.st_uid != nix::unistd::getuid().as_raw() {
            bail!("pid {} is not a process of yours", self.pid);
        }
        // Read after pidfd_open: a match means the pidfd names the recorded process.
        if start_time(dir.as_fd())? != self.start {
            bail!(
                "pid {} is another process than the recorded holder",
                self.pid
            );
        }
        Ok((dir, pidfd))
    }

    /// The recorded process's user namespace, if it is the recorded one, owned by `uid`
    /// and a child of this process's own.
    pub fn check_userns(&self, proc_dir: BorrowedFd, uid: u32) -> Result<OwnedFd> {
        let ns = nix::fcntl::openat(
            proc_dir,
            "ns/user",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context("open the holder's user namespace")?;
        let st = nix::sys::stat::fstat(&ns)?;
        if (st.st_dev, st.st_ino) != (self.userns_dev, self.userns_ino) {
            bail!("the holder's user namespace is not the recorded one");
        }
        if crate::sys::ns_owner_uid(ns.as_fd())? != uid {
            bail!("the holder's user namespace is not yours");
        }
        let parent = crate::sys::ns_parent(ns.as_fd()).context("NS_GET_PARENT")?;
        let parent = nix::sys::stat::fstat(&parent)?;
        let own = nix::sys::stat::stat("/proc/self/ns/user")?;
        if (parent.st_dev, parent.st_ino) != (own.st_dev, own.st_ino) {
            bail!("the holder's user namespace is not a child of ours");
        }
        Ok(ns)
    }
}

fn proc_dir(pid: i32) -> Result<OwnedFd> {
    nix::fcntl::open(
        format!("/proc/{pid}").as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("the holder (pid {pid}) is gone"))
}

/// Field 22 of /proc/PID/stat (counted after the command name, which may hold spaces).
fn start_time(proc_dir: BorrowedFd) -> Result<u64> {
    let stat = read_at(proc_dir, "stat").context("read the holder's stat")?;
    parse_start_time(&stat).context("the holder has exited")
}

/// The start time of a process that has not exited: a zombie keeps its credentials (and
/// so its user namespace) until it is reaped, but it holds nothing for long.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 \
                    100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("42 (x"), None);
        assert_eq!(parse_start_time(&stat.replace(") S ", ") Z ")), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_start_time(&own).is_some());
    }

    #[test]
    fn garbage_and_unknown_fields_are_not_records() {
        assert!(serde_json::from_str::<Record>("{\"pid\": 1").is_err());
        assert!(serde_json::from_str::<Record>("[]").is_err());
        let extra = r#"{"pid":1,"start":2,"userns_dev":3,"userns_ino":4,"at":0,"x":1}"#;
        assert!(serde_json::from_str::<Record>(extra).is_err());
    }

    #[test]
    fn a_refusal_is_remembered_for_a_while() {
        assert!(Record::refused("no").refused_lately().is_some());
        let old = Record {
            at: now() - REFUSED_FOR_SECS - 1,
            ..Record::refused("no")
        };
        assert!(old.refused_lately().is_none());
        assert!(Record::default().refused_lately().is_none());
    }
}
