//! Unpacking one layer's tar into a directory of its own, inside the store's user namespace.
//!
//! Every entry is written relative to the layer's directory fd: parents are opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, the last component is created with
//! `*at` calls that never follow it, so no entry can reach outside the layer, and one that
//! tries (`..`, an absolute path, a path through a symlink an earlier entry planted) fails
//! the whole import. Ownership, modes, symlinks and hard links are kept; OCI whiteouts
//! become overlayfs whiteouts (0/0 character devices, which an unprivileged user may
//! create) and opaque markers become `user.overlay.opaque` xattrs (with `userxattr`, and
//! fuse-overlayfs's own name). Device nodes we may not create are skipped and counted.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{FchownatFlags, Gid, Uid, UnlinkatFlags};

use crate::sys;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The opaque-directory xattrs kernel overlayfs (with `userxattr`) and fuse-overlayfs read.
const OPAQUE_XATTRS: &[&std::ffi::CStr] = &[c"user.overlay.opaque", c"user.fuseoverlayfs.opaque"];

/// What an unpack did beyond writing entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub entries: u64,
    /// Device nodes that cannot be created without privilege.
    pub devices_skipped: u64,
    /// Entries whose owner is outside the mapped range (kept root's).
    pub unmapped_owners: u64,
    /// Entry types sbx does not unpack (sockets, sparse files of unknown kinds).
    pub other_skipped: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.entries += other.entries;
        self.devices_skipped += other.devices_skipped;
        self.unmapped_owners += other.unmapped_owners;
        self.other_skipped += other.other_skipped;
    }
}

/// Unpacks the tar stream `input` into the existing, empty directory `dest`. `lowers` are
/// the image's layers below it, bottom first: a hard link may name a file of theirs.
pub fn unpack(input: impl Read, dest: &Path, lowers: &[PathBuf]) -> Result<Stats> {
    let open = |dir: &Path| {
        nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("open {}", dir.display()))
    };
    let mut layer = Layer {
        root: open(dest)?,
        lowers: lowers
            .iter()
            .rev()
            .map(|l| open(l))
            .collect::<Result<_>>()?,
        stats: Stats::default(),
    };
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().context("read the tar stream")? {
        let mut entry = entry.context("read a tar entry")?;
        let path = entry.path().context("a tar entry's path")?.into_owned();
        layer
            .entry(&mut entry)
            .with_context(|| format!("entry {}", path.display()))?;
    }
    Ok(layer.stats)
}

struct Layer {
    root: OwnedFd,
    /// The layers below, top first.
    lowers: Vec<OwnedFd>,
    stats: Stats,
}

/// The owner, mode and time an entry carries.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

impl Meta {
    fn of(header: &tar::Header) -> Result<Meta> {
        Ok(Meta {
            uid: u32::try_from(header.uid()?).unwrap_or(u32::MAX),
            gid: u32::try_from(header.gid()?).unwrap_or(u32::MAX),
            mode: header.mode()? & 0o7777,
            mtime: i64::try_from(header.mtime()?).unwrap_or(0),
        })
    }
}

impl Layer {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        let meta = Meta::of(entry.header())?;
        let parts = components(&entry.path()?)?;
        let Some((name, parents)) = parts.split_last() else {
            // `./` itself: the layer's root directory.
            if kind.is_dir() {
                let root = self.root.try_clone().context("dup the layer's fd")?;
                self.set_meta(root.as_fd(), None, &meta, true)?;
            }
            return Ok(());
        };
        let parent = self.parent(parents)?;
        let parent = parent.as_fd();
        if whiteout(parent, name)? {
            return Ok(());
        }
        match kind {
            tar::EntryType::Directory => self.directory(parent, name, &meta),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.file(parent, name, &meta, entry)
            }
            tar::EntryType::Symlink => {
                let target = link_target(entry, "a symlink without a target")?;
                remove_existing(parent, name)?;
                nix::unistd::symlinkat(&target, parent, name.as_os_str())
                    .context("create the symlink")?;
                self.set_meta(parent, Some(name), &meta, false)
            }
            tar::EntryType::Link => {
                let target = link_target(entry, "a hard link without a target")?;
                self.hard_link(parent, name, &target)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.node(parent, name, entry.header(), &meta)
            }
            _ => {
                self.stats.other_skipped += 1;
                Ok(())
            }
        }
    }

    /// A device node or a FIFO. Device nodes need privilege the store's user namespace
    /// lacks: skipped and counted (the sandbox's /dev has its own).
    fn node(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        header: &tar::Header,
        meta: &Meta,
    ) -> Result<()> {
        let kind_flag = match header.entry_type() {
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let (major, minor) = if kind_flag == SFlag::S_IFIFO {
            (0, 0)
        } else {
            (
                u64::from(header.device_major()?.unwrap_or(0)),
                u64::from(header.device_minor()?.unwrap_or(0)),
            )
        };
        remove_existing(parent, name)?;
        let dev = nix::sys::stat::makedev(major, minor);
        let perm = Mode::from_bits_truncate(meta.mode);
        match nix::sys::stat::mknodat(parent, name, kind_flag, perm, dev) {
            Ok(()) => self.set_meta(parent, Some(name), meta, true),
            Err(Errno::EPERM) if kind_flag != SFlag::S_IFIFO => {
                self.stats.devices_skipped += 1;
                Ok(())
            }
            Err(e) => Err(e).context("create the device node"),
        }
    }

    /// The directory `parents` inside the layer, created (root-owned, 0755) where missing;
    /// a symlink on the way is an attack, not a path.
    fn parent(&self, parents: &[OsString]) -> Result<OwnedFd> {
        let mut current = self.root.try_clone().context("dup the layer's fd")?;
        for part in parents {
            current = match open_dir(current.as_fd(), part) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    nix::sys::stat::mkdirat(current.as_fd(), part.as_os_str(), Mode::from_bits_truncate(0o755))
                        .with_context(|| format!("create directory {}", part.to_string_lossy()))?;
                    open_dir(current.as_fd(), part).with_context(|| {
                        format!("open directory {}", part.to_string_lossy())
                    })?
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => bail!(
                    "refusing to write through {}, which an earlier entry made a symlink or a file (a hostile archive?)",
                    part.to_string_lossy()
                ),
                Err(e) => return Err(e).with_context(|| format!("open directory {}", part.to_string_lossy())),
            };
        }
        Ok(current)
    }

    fn directory(&mut self, parent: BorrowedFd, name: &OsStr, meta: &Meta) -> Result<()> {
        match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => match open_dir(parent, name) {
                Ok(_) => {}
                Err(_) => {
                    remove_existing(parent, name)?;
                    nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700))
                        .context("create the directory")?;
                }
            },
            Err(e) => return Err(e).context("create the directory"),
        }
        let dir = open_dir(parent, name).context("open the new directory")?;
        self.set_meta(dir.as_fd(), None, meta, true)
    }

    fn file(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        meta: &Meta,
        data: &mut impl Read,
    ) -> Result<()> {
        remove_existing(parent, name)?;
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .context("create the file")?;
        let mut file = File::from(fd);
        io::copy(data, &mut file).context("write the file")?;
        self.set_meta(file.as_fd(), None, meta, true)
    }

    fn hard_link(&mut self, parent: BorrowedFd, name: &OsStr, target: &Path) -> Result<()> {
        let parts = components(target).context("hard link target")?;
        let Some((target_name, target_parents)) = parts.split_last() else {
            bail!("a hard link to the layer's root directory");
        };
        let target_parent = self.parent(target_parents)?;
        remove_existing(parent, name)?;
        match nix::unistd::linkat(
            target_parent.as_fd(),
            target_name.as_os_str(),
            parent,
            name,
            AtFlags::empty(),
        ) {
            Err(Errno::ENOENT) => self.copy_from_lower(&parts, parent, name),
            other => other.with_context(|| format!("hard link to {}", target.display())),
        }
    }

    /// A hard link to a file of a lower layer cannot cross layers: the file is copied up,
    /// as overlayfs would on the first write, with its owner, mode and time.
    fn copy_from_lower(
        &mut self,
        parts: &[OsString],
        parent: BorrowedFd,
        name: &OsStr,
    ) -> Result<()> {
        let target: PathBuf = parts.iter().collect();
        let Some((target_name, dirs)) = parts.split_last() else {
            bail!("a hard link to the layer's root directory");
        };
        for lower in &self.lowers {
            let mut dir = lower.try_clone().context("dup a layer's fd")?;
            let mut found = true;
            for part in dirs {
                match open_dir(dir.as_fd(), part) {
                    Ok(fd) => dir = fd,
                    Err(_) => {
                        found = false;
                        break;
                    }
                }
            }
            let opened = found
                .then(|| {
                    nix::fcntl::openat(
                        dir.as_fd(),
                        target_name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ok()
                })
                .flatten();
            let Some(source) = opened else { continue };
            let st = nix::sys::stat::fstat(&source).context("stat a lower layer's file")?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                bail!(
                    "hard link to {}, which is not a regular file",
                    target.display()
                );
            }
            let meta = Meta {
                uid: st.st_uid,
                gid: st.st_gid,
                mode: st.st_mode & 0o7777,
                mtime: st.st_mtime,
            };
            return self.file(parent, name, &meta, &mut File::from(source));
        }
        bail!(
            "hard link to {}, which is in neither this layer nor one below",
            target.display()
        )
    }

    /// Owner, then mode (chown clears set-id bits), then modification time. `name` None:
    /// `fd` itself; Some: the entry `name` in directory `fd`, not followed.
    fn set_meta(
        &mut self,
        fd: BorrowedFd,
        name: Option<&OsStr>,
        meta: &Meta,
        chmod: bool,
    ) -> Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
        let owned = match name {
            None => nix::unistd::fchown(fd, uid, gid),
            Some(n) => nix::unistd::fchownat(fd, n, uid, gid, FchownatFlags::AT_SYMLINK_NOFOLLOW),
        };
        match owned {
            Ok(()) => {}
            // An id outside the namespace's map: the entry stays root's.
            Err(Errno::EINVAL) => self.stats.unmapped_owners += 1,
            Err(e) => return Err(e).context("set the owner"),
        }
        let time = nix::sys::time::TimeSpec::new(meta.mtime, 0);
        match name {
            None => {
                if chmod {
                    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode))
                        .context("set the mode")?;
                }
                nix::sys::stat::futimens(fd, &time, &time).context("set the time")?;
            }
            Some(n) => {
                if chmod {
                    nix::sys::stat::fchmodat(
                        fd,
                        n,
                        Mode::from_bits_truncate(meta.mode),
                        nix::sys::stat::FchmodatFlags::FollowSymlink,
                    )
                    .context("set the mode")?;
                }
                nix::sys::stat::utimensat(
                    fd,
                    n,
                    &time,
                    &time,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .context("set the time")?;
            }
        }
        Ok(())
    }
}

/// A directory entry `name` of `dir`, never through a symlink.
fn open_dir(dir: BorrowedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    sys::openat2(
        dir,
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Removes what an earlier entry of the same layer put at `name` (a later entry wins).
fn remove_existing(parent: BorrowedFd, name: &OsStr) -> Result<()> {
    match nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => {
            let dir = open_dir(parent, name).context("open a directory to replace")?;
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
            let real = std::fs::read_link(&path).context("locate a directory to replace")?;
            drop(dir);
            super::store::remove_any(&real)
        }
        Err(e) => Err(e).context("replace an earlier entry"),
    }
}

/// An overlay marker, applied to `parent`: the opaque-directory marker, or a `.wh.NAME`
/// whiteout hiding NAME in the layers below. False for any other entry.
fn whiteout(parent: BorrowedFd, name: &OsStr) -> Result<bool> {
    let name_str = name.to_string_lossy();
    if name_str == OPAQUE_MARKER {
        for xattr in OPAQUE_XATTRS {
            sys::set_xattr(parent, xattr, b"y").context("mark the directory opaque")?;
        }
        return Ok(true);
    }
    if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        let hidden = OsStr::new(hidden);
        check_name(hidden)?;
        remove_existing(parent, hidden)?;
        nix::sys::stat::mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
            .context("create a whiteout")?;
        return Ok(true);
    }
    Ok(false)
}

/// Where a symlink or hard link entry points.
fn link_target<R: Read>(entry: &tar::Entry<R>, missing: &'static str) -> Result<PathBuf> {
    Ok(entry.link_name()?.context(missing)?.into_owned())
}

/// The normal components of an archive path; `..` and absolute paths are refused.
fn components(path: &Path) -> Result<Vec<OsString>> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => {
                check_name(part)?;
                parts.push(part.to_os_string());
            }
            Component::RootDir => bail!(
                "absolute path {} in the archive (a hostile archive?); layer paths are relative",
                path.display()
            ),
            Component::ParentDir => bail!(
                "path {} climbs out with `..` (a hostile archive?)",
                path.display()
            ),
            Component::Prefix(_) => bail!("unexpected path prefix in {}", path.display()),
        }
    }
    Ok(parts)
}

fn check_name(name: &OsStr) -> Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        bail!("invalid file name {:?} in the archive", name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(components(Path::new("./a/b")).unwrap(), ["a", "b"]);
        assert!(components(Path::new("./")).unwrap().is_empty());
        assert!(components(Path::new("/etc/passwd")).is_err());
        assert!(components(Path::new("a/../../b")).is_err());
    }
}
