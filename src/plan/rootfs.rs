//! The sandbox's file system: its root, its mounts, and the sizes of its own tmpfs mounts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::parse_size;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// The host's `/`, recursively read-only.
    Host,
    /// A directory (canonical host path), read-only.
    Dir(PathBuf),
    /// An image's layers as the lower layers of a writable overlay.
    Image {
        name: String,
        /// Unpacked layers in the store, bottom first.
        layers: Vec<PathBuf>,
        /// Host directory keeping the upper layer between runs; None: a tmpfs in the
        /// sandbox's own mount namespace, discarded at exit.
        upper: Option<UpperDir>,
        overlay: OverlayKind,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Bind {
        /// Canonical host path.
        source: PathBuf,
        /// Normalized absolute path inside.
        destination: PathBuf,
        readonly: bool,
        noexec: bool,
        source_is_dir: bool,
    },
    Tmpfs {
        destination: PathBuf,
        size: Option<TmpfsSize>,
        mode: u32,
        readonly: bool,
        noexec: bool,
    },
}

impl Mount {
    pub fn destination(&self) -> &Path {
        match self {
            Mount::Bind { destination, .. } | Mount::Tmpfs { destination, .. } => destination,
        }
    }
}

/// A directory that is read-only in the sandbox (on the host's root, or in a read-only
/// bind) and must take a new mount point: the child puts a tmpfs on it with the
/// directory's entries bound back (read-only, recursively; links recreated as the same
/// link), so new mount points are made on the tmpfs and nothing on the host. The tmpfs
/// turns read-only once every mount is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// The directory inside the sandbox: absolute, normalized, reached through no
    /// symbolic link.
    pub at: PathBuf,
    /// Built just before `Plan::mounts[i]` (the first mount beneath it); `i` equal to
    /// their count: after all of them, before /etc/resolv.conf, /etc/hosts and
    /// /sys/fs/cgroup; `None`: before anything is mounted on the root, the sandbox's own
    /// /proc, /dev and /tmp included (the skeleton of `/` itself).
    pub before: Option<usize>,
}

/// How the child assembles the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayKind {
    Kernel,
    /// fuse-overlayfs at this path.
    Fuse(PathBuf),
    /// Kernel overlayfs; if the kernel refuses, fuse-overlayfs when there is one.
    KernelElseFuse(Option<PathBuf>),
}

/// A kept upper directory: the host path the planner resolved once, and the directory it
/// named then. The child opens it again without following any symlink and checks that it
/// is the same directory (dev and inode) before anything is made in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperDir {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// The size of a tmpfs: bytes, or a share of the machine's memory (as the kernel's
/// `size=N%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpfsSize {
    Bytes(u64),
    PercentOfRam(u32),
}

impl TmpfsSize {
    /// "64M", "1G", "4096" or "20%".
    pub fn parse(s: &str) -> Result<TmpfsSize> {
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p @ 1..=100) => Ok(TmpfsSize::PercentOfRam(p)),
                _ => bail!("invalid size {s:?}; a share of memory is 1% to 100%"),
            },
            None => Ok(TmpfsSize::Bytes(parse_size(s)?)),
        }
    }
}

/// The tmpfs `size=` option.
impl std::fmt::Display for TmpfsSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TmpfsSize::Bytes(n) => write!(f, "{n}"),
            TmpfsSize::PercentOfRam(p) => write!(f, "{p}%"),
        }
    }
}

impl serde::Serialize for TmpfsSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The sandbox's own /dev/shm, as podman's.
pub const DEFAULT_SHM_SIZE: TmpfsSize = TmpfsSize::Bytes(64 << 20);
/// The sandbox's own /tmp: with the default profile's hidden home (the same share), less
/// than half of the memory in all.
pub const DEFAULT_TMP_SIZE: TmpfsSize = TmpfsSize::PercentOfRam(20);
