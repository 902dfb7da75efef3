//! Skeletons (`plan::Skeleton`): a tmpfs on a directory that is read-only in the sandbox,
//! with that directory's entries bound back, so the mount points the planner found missing
//! are made on the tmpfs and nothing is written to the host.
//!
//! The entries are cloned (recursively, as read-only as they were: the clone keeps each
//! mount's attributes) before the tmpfs covers them; links are read and made again as the
//! same links, never followed. The directory is opened with RESOLVE_NO_SYMLINKS inside the
//! new root, so a link cannot move the skeleton elsewhere. The tmpfs turns read-only once
//! every mount is in place (`seal`), so the run sees the directory as before, plus the new
//! mount points.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::plan::path_bytes;
use crate::sys::{self, new_mount, open_tree, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID};

/// One entry of the directory, ready to be put back.
enum Entry {
    /// A directory (its mount tree) or anything else (a file, socket, device node).
    Tree {
        name: CString,
        tree: OwnedFd,
        is_dir: bool,
    },
    /// A directory something else is mounted on straight away (the root's /proc, /dev and
    /// /tmp): cloning it would be wasted.
    Empty(CString),
    Link {
        name: CString,
        target: OsString,
    },
}

/// Puts the skeleton on `at` (inside the new root) and adds its tmpfs to `seal`. Entries
/// named in `covered` come back as empty directories.
pub(super) fn build(
    root: BorrowedFd,
    at: &Path,
    covered: &[&str],
    seal: &mut Vec<OwnedFd>,
) -> Result<()> {
    let what = || format!("make new mount points possible in {}", at.display());
    let dir = sys::openat2(
        root,
        &sys::cstr(path_bytes(at))?,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .with_context(|| format!("open {}", at.display()))
    .with_context(what)?;
    let mode = nix::sys::stat::fstat(&dir).with_context(what)?.st_mode & 0o7777;
    let entries = entries(dir.as_fd(), covered).with_context(what)?;
    let options = CString::new(format!("{mode:o}"))?;
    let fs = new_mount(
        c"tmpfs",
        &[(c"mode", Some(&options))],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
    .with_context(what)?;
    sys::move_mount_fd(fs.as_fd(), dir.as_fd()).with_context(what)?;
    for entry in entries {
        put_back(fs.as_fd(), entry)
            .with_context(|| format!("bind back the entries of {}", at.display()))?;
    }
    seal.push(fs);
    Ok(())
}

/// The directory's entries, each cloned or read (links), in the order the directory lists
/// them.
fn entries(dir: BorrowedFd, covered: &[&str]) -> Result<Vec<Entry>> {
    let mut listing = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("list it")?;
    let mut out = Vec::new();
    for entry in listing.iter() {
        let entry = entry.context("list it")?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let kind = match entry.file_type() {
            Some(kind) => kind,
            None => kind_at(dir, name)?,
        };
        let shown = name.to_string_lossy();
        out.push(match kind {
            Type::Symlink => Entry::Link {
                name: name.to_owned(),
                target: nix::fcntl::readlinkat(dir, name)
                    .with_context(|| format!("read the link {shown}"))?,
            },
            Type::Directory if covered.contains(&shown.as_ref()) => Entry::Empty(name.to_owned()),
            kind => Entry::Tree {
                name: name.to_owned(),
                tree: clone_entry(dir, name).with_context(|| format!("bind {shown}"))?,
                is_dir: kind == Type::Directory,
            },
        });
    }
    Ok(out)
}

/// The entry's type when the directory listing does not say.
fn kind_at(dir: BorrowedFd, name: &CStr) -> Result<Type> {
    let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .with_context(|| format!("inspect {}", name.to_string_lossy()))?;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFLNK => Type::Symlink,
        libc::S_IFDIR => Type::Directory,
        _ => Type::File,
    })
}

/// A detached copy of the entry's mount tree, taken without following a link or
/// triggering an automount.
fn clone_entry(dir: BorrowedFd, name: &CStr) -> std::io::Result<OwnedFd> {
    open_tree(
        dir.as_raw_fd(),
        name,
        sys::OPEN_TREE_CLONE
            | sys::OPEN_TREE_CLOEXEC
            | sys::AT_RECURSIVE as u32
            | libc::AT_SYMLINK_NOFOLLOW as u32
            | libc::AT_NO_AUTOMOUNT as u32,
    )
}

/// Makes the entry again on the tmpfs `fs`: a mount point with its tree moved onto it, an
/// empty directory, or the same link.
fn put_back(fs: BorrowedFd, entry: Entry) -> Result<()> {
    let (name, tree) = match entry {
        Entry::Link { name, target } => {
            return nix::unistd::symlinkat(target.as_os_str(), fs, name.as_c_str())
                .with_context(|| format!("link {}", name.to_string_lossy()));
        }
        Entry::Empty(name) => {
            return nix::sys::stat::mkdirat(fs, name.as_c_str(), Mode::from_bits_truncate(0o755))
                .with_context(|| format!("make {}", name.to_string_lossy()));
        }
        Entry::Tree {
            name,
            tree,
            is_dir: true,
        } => {
            nix::sys::stat::mkdirat(fs, name.as_c_str(), Mode::from_bits_truncate(0o755))
                .with_context(|| format!("make {}", name.to_string_lossy()))?;
            (name, tree)
        }
        Entry::Tree { name, tree, .. } => {
            nix::fcntl::openat(
                fs,
                name.as_c_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
            .with_context(|| format!("make {}", name.to_string_lossy()))?;
            (name, tree)
        }
    };
    let target = nix::fcntl::openat(
        fs,
        name.as_c_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", name.to_string_lossy()))?;
    sys::move_mount_fd(tree.as_fd(), target.as_fd())
        .with_context(|| format!("bind {}", name.to_string_lossy()))
}

/// Every skeleton's tmpfs (and every read-only tmpfs of the plan, made writable until its
/// mount points were made) turns read-only: only these mounts, not what is mounted on them.
pub(super) fn seal(mounts: &[OwnedFd]) -> Result<()> {
    for fs in mounts {
        sys::mount_setattr(fs.as_fd(), sys::MOUNT_ATTR_RDONLY, false)
            .context("make a tmpfs read-only once its mount points were made")?;
    }
    Ok(())
}
