//! `tmpcopyup` (runc's mount option): a new tmpfs over a directory of the root starts with
//! a copy of that directory's contents, with their owners, modes and times.
//!
//! The source is the image, which earlier runs of the container may have written: nothing
//! in it is followed. Every entry is looked at without following symlinks, opened with
//! `O_NOFOLLOW` and checked again once open; symlinks are copied as symlinks. The
//! destination is the new tmpfs, not yet attached anywhere, so only this process sees it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

/// Deeper than any real directory tree; a guard against a crafted one.
const MAX_DEPTH: usize = 256;

/// Copies the contents of `source` (a directory of the root, any fd) into `tmpfs`.
pub fn copy_up(source: BorrowedFd, tmpfs: BorrowedFd) -> Result<()> {
    let dir = open_dir(source, OsStr::new("."))?;
    copy_dir(&dir, tmpfs, Path::new(""), 0)
}

fn open_dir(parent: BorrowedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn copy_dir(source: &OwnedFd, dest: BorrowedFd, at: &Path, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{} is nested too deep to copy", at.display());
    }
    let entries = nix::dir::Dir::from_fd(source.try_clone()?)
        .with_context(|| format!("read the directory {}", at.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read the directory {}", at.display()))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let path = at.join(name);
        copy_entry(source.as_fd(), dest, name, depth)
            .with_context(|| format!("copy {}", path.display()))?;
    }
    Ok(())
}

fn copy_entry(source: BorrowedFd, dest: BorrowedFd, name: &OsStr, depth: usize) -> Result<()> {
    let st = nix::sys::stat::fstatat(source, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let from = open_dir(source, name)?;
            nix::sys::stat::mkdirat(dest, name, Mode::from_bits_truncate(0o700))?;
            let to = open_dir(dest, name)?;
            copy_dir(&from, to.as_fd(), Path::new(name), depth + 1)?;
            set_meta(to.as_fd(), &nix::sys::stat::fstat(&from)?)
        }
        libc::S_IFREG => {
            let from = nix::fcntl::openat(
                source,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let st = nix::sys::stat::fstat(&from)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                bail!("it changed while being copied");
            }
            let to = nix::fcntl::openat(
                dest,
                name,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?;
            std::io::copy(
                &mut std::fs::File::from(from),
                &mut std::fs::File::from(to.try_clone()?),
            )?;
            set_meta(to.as_fd(), &st)
        }
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(source, name)?;
            nix::unistd::symlinkat(target.as_os_str(), dest, name)?;
            chown_at(dest, name, &st)?;
            let times = [
                TimeSpec::new(st.st_atime, st.st_atime_nsec),
                TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            ];
            nix::sys::stat::utimensat(
                dest,
                name,
                &times[0],
                &times[1],
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )?;
            Ok(())
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
            let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
            nix::sys::stat::mknodat(dest, name, kind, mode, st.st_rdev)?;
            chown_at(dest, name, &st)?;
            // Ours alone (the tmpfs is not attached yet): following is safe.
            nix::sys::stat::fchmodat(
                dest,
                name,
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
            Ok(())
        }
        // A socket is bound by a process; a copy of one would be meaningless.
        _ => Ok(()),
    }
}

/// The owner (where this user namespace maps it), then the mode (chown clears set-id
/// bits), then the times.
fn set_meta(fd: BorrowedFd, st: &FileStat) -> Result<()> {
    match nix::unistd::fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    ) {
        Ok(()) | Err(Errno::EINVAL | Errno::EPERM) => {}
        Err(e) => return Err(e).context("set the owner"),
    }
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))
        .context("set the mode")?;
    nix::sys::stat::futimens(
        fd,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
    .context("set the times")
}

/// An owner this user namespace does not map (a single-id map) stays the creator's.
fn chown_at(dir: BorrowedFd, name: &OsStr, st: &FileStat) -> Result<()> {
    match nix::unistd::fchownat(
        dir,
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(()) | Err(Errno::EINVAL | Errno::EPERM) => Ok(()),
        Err(e) => Err(e).context("set the owner"),
    }
}
