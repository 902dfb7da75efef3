//! Paths where a sandbox may have written first.
//!
//! A sandbox can write its writable binds, so everything below them is hostile input for
//! every later action of sbx: a directory may have become a symbolic link to `~`, a file
//! sbx is about to write may already exist as a link to `~/.ssh/authorized_keys`. The rules
//! this module enforces (SECURITY.md, "Paths a sandbox can write are hostile"):
//!
//! - never follow a symlink sbx did not make: paths below a directory are opened with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from that directory's descriptor, and
//!   canonical paths are reopened with `RESOLVE_NO_SYMLINKS`, so a link planted since they
//!   were resolved is an error instead of a detour;
//! - create with `O_CREAT | O_EXCL | O_NOFOLLOW` (files) or `mkdirat` beneath an open
//!   directory (directories): nothing existing is ever reused as if sbx had made it;
//! - compare identities (device and inode), never path strings.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};

use crate::sys;

const BENEATH: u64 = sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS;

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

impl Identity {
    pub fn of(fd: BorrowedFd) -> io::Result<Identity> {
        let st = fstat(fd)?;
        Ok(Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The identity of `path`, following links (for paths the user named).
    pub fn of_path(path: &Path) -> io::Result<Identity> {
        let st = nix::sys::stat::stat(path)?;
        Ok(Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// Opens a canonical absolute path (one `canonicalize` returned) again, refusing any
/// symbolic link on the way: one found now was planted after the path was resolved.
pub fn reopen_canonical(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = sys::cstr(path.as_os_str().as_bytes())?;
    sys::openat2(
        nix::fcntl::AT_FDCWD,
        &c,
        flags,
        0,
        sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `rel` below the directory `dir`, never leaving it and following no symlink.
pub fn open(dir: BorrowedFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = sys::cstr(rel.as_os_str().as_bytes())?;
    sys::openat2(dir, &c, flags, 0, BENEATH)
}

/// Whether an error from `open` means a symbolic link (or an escape) lies on the path.
pub fn is_link_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV))
}

/// The relative path's plain components; `None` if it has `..`, `/` or `.`.
fn plain(rel: &Path) -> Option<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Creates the directories of `rel` below `dir` that are missing (mode `mode`), following
/// no symlink, and returns the last one opened `O_PATH`.
pub fn create_dirs(dir: BorrowedFd, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
    let parts = plain(rel).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut current = dir.try_clone_to_owned()?;
    for part in parts {
        match nix::sys::stat::mkdirat(current.as_fd(), part, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        current = open(
            current.as_fd(),
            Path::new(part),
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
    }
    Ok(current)
}

/// Creates the empty file `rel` below `dir` (its missing parents too): `O_EXCL`, so an
/// existing file or link is an error, never reused.
pub fn create_file(dir: BorrowedFd, rel: &Path, mode: u32) -> io::Result<()> {
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => create_dirs(dir, p, 0o700)?,
        _ => dir.try_clone_to_owned()?,
    };
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    nix::fcntl::openat(
        parent.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// `lstat` of `name` in `dir`: what is there, without following it.
pub fn kind_at(dir: BorrowedFd, name: &Path) -> io::Result<libc::mode_t> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// Writes `bytes` to `name` in `dir` atomically: a fresh temporary file (`O_EXCL |
/// O_NOFOLLOW`, so a link planted under the temporary name is never written through), then
/// `renameat`, which replaces whatever `name` is (a planted link included) without following
/// it.
pub fn write_atomic(dir: BorrowedFd, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
    let mut attempt = 0u32;
    let (tmp, file) = loop {
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.{}.tmp", std::process::id(), nonce(attempt)));
        match nix::fcntl::openat(
            dir,
            tmp.as_os_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => break (tmp, File::from(fd)),
            Err(nix::errno::Errno::EEXIST) if attempt < 16 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let written = (|| {
        let mut file = file;
        file.write_all(bytes)?;
        file.sync_data()?;
        nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name).map_err(io::Error::from)
    })();
    if written.is_err() {
        let _ = nix::unistd::unlinkat(
            dir,
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    written
}

/// A number that differs between calls and processes (std's randomly keyed hasher), so
/// temporary names cannot be predicted and sprayed with links in advance.
fn nonce(attempt: u32) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(attempt)
}

/// Where `path` lies below the directory whose identity is `top`: the relative rest, or
/// None when it is not below it. Decided by identities, not by comparing strings, so a
/// symlinked home (`/home/u -> /data/u`) or a bind of a parent is recognised. A `path` that
/// does not exist yet is placed by its nearest existing ancestor.
pub fn relative_below(top: Identity, path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut existing = path.to_path_buf();
    // The nearest ancestor that exists (a stat each), then one realpath of it.
    while existing.symlink_metadata().is_err() {
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?.to_path_buf();
    }
    let canonical = existing.canonicalize().ok()?;
    let mut below = Vec::new();
    let mut at = canonical.as_path();
    loop {
        if Identity::of_path(at).ok() == Some(top) {
            let mut rel: PathBuf = below.iter().rev().collect();
            rel.extend(rest.iter().rev());
            return Some(rel);
        }
        below.push(at.file_name()?.to_os_string());
        at = at.parent()?;
    }
}

/// Whether the directory whose identity is `top` is `path` itself or one of its ancestors.
pub fn contains(top: Identity, path: &Path) -> bool {
    relative_below(top, path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sbx-beneath-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn dirfd(path: &Path) -> OwnedFd {
        OwnedFd::from(File::open(path).unwrap())
    }

    #[test]
    fn write_atomic_replaces_a_planted_link_without_following_it() {
        let dir = tmp("write");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("st.json")).unwrap();
        let fd = dirfd(&dir);
        write_atomic(fd.as_fd(), OsStr::new("st.json"), b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(dir.join("st.json")).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(dir.join("st.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn create_and_open_refuse_links() {
        let dir = tmp("create");
        let outside = tmp("create-outside");
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        let fd = dirfd(&dir);
        let e = create_dirs(fd.as_fd(), Path::new("link/hooks"), 0o700).unwrap_err();
        assert!(is_link_error(&e), "{e}");
        let e = create_file(fd.as_fd(), Path::new("link/x"), 0o600).unwrap_err();
        assert!(is_link_error(&e), "{e}");
        assert!(!outside.join("hooks").exists() && !outside.join("x").exists());
        let e = open(fd.as_fd(), Path::new("link"), libc::O_PATH).unwrap_err();
        assert!(is_link_error(&e), "{e}");
        create_file(fd.as_fd(), Path::new("a/b/c"), 0o600).unwrap();
        assert!(dir.join("a/b/c").is_file());
        assert!(create_file(fd.as_fd(), Path::new("a/b/c"), 0o600).is_err());
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(outside).unwrap();
    }

    #[test]
    fn relative_below_compares_identities() {
        let dir = tmp("below");
        std::fs::create_dir_all(dir.join("real/home/.config")).unwrap();
        std::os::unix::fs::symlink(dir.join("real/home"), dir.join("home")).unwrap();
        let top = Identity::of_path(&dir.join("real")).unwrap();
        assert_eq!(
            relative_below(top, &dir.join("home/.config/sbx/profiles")),
            Some(PathBuf::from("home/.config/sbx/profiles"))
        );
        let other = Identity::of_path(&dir.join("real/home/.config")).unwrap();
        assert_eq!(relative_below(other, &dir.join("real")), None);
        assert!(contains(top, &dir.join("real")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reopen_canonical_refuses_a_link() {
        let dir = tmp("reopen");
        std::fs::create_dir(dir.join("d")).unwrap();
        std::os::unix::fs::symlink(dir.join("d"), dir.join("l")).unwrap();
        let canonical = dir.canonicalize().unwrap();
        assert!(reopen_canonical(&canonical.join("d"), libc::O_PATH).is_ok());
        let e = reopen_canonical(&canonical.join("l"), libc::O_PATH).unwrap_err();
        assert!(is_link_error(&e), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
