//! An image root: the image's layers as the lower layers of an overlay, with a writable
//! upper layer, assembled inside the sandbox's user and mount namespaces.
//!
//! Kernel overlayfs with `userxattr` (Linux 5.11+ in a user namespace) is built with
//! fsopen/fsconfig; fuse-overlayfs, when forced or when the kernel refuses, runs inside
//! the sandbox's pid namespace (in a mount namespace of its own) and dies with it. The
//! layers (read-only) and a kept upper directory are cloned as detached mounts before the
//! id maps exist, like every other host path; then a small tmpfs is mounted on the staging
//! point, the clones are attached there, and the overlay is built from those short paths
//! and returned as a detached mount that `rootfs` attaches on top. The upper layer lives
//! on that tmpfs (discarded at exit, nothing on the host) unless the Plan names a directory
//! to keep it in.
//!
//! A kept directory is hostile ground: an earlier sandbox may have written it. It is
//! cloned only if it is still the directory the planner resolved (dev and inode, reached
//! without a symlink), and its `upper` and `work` directories are opened beneath it
//! without following any symlink; kernel overlayfs gets those descriptors, never a name.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use nix::fcntl::OFlag;

use crate::image::run::{OverlayKind, UpperDir};
use crate::sys::{
    self, new_mount, FsValue, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Detached clones of the layers and of the kept upper directory, taken in `prepare`
/// with the other host paths, while the host's view is untouched.
pub struct Parts {
    layers: Vec<OwnedFd>,
    upper: Option<(OwnedFd, PathBuf)>,
}

pub fn open_parts(layers: &[PathBuf], upper: Option<&UpperDir>) -> Result<Parts> {
    let read_only = |path: &PathBuf| -> Result<OwnedFd> {
        let tree = sys::open_tree(
            libc::AT_FDCWD,
            &cstring(path)?,
            sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
        )
        .with_context(|| format!("cannot bind {}", path.display()))?;
        sys::mount_setattr(tree.as_fd(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, false)
            .with_context(|| format!("make layer {} read-only", path.display()))?;
        Ok(tree)
    };
    Ok(Parts {
        layers: layers.iter().map(read_only).collect::<Result<_>>()?,
        upper: upper.map(open_upper).transpose()?,
    })
}

/// The upper directory the planner resolved, opened again without following a symlink
/// anywhere in its (canonical) path, and cloned only if it is still that directory.
fn open_upper(upper: &UpperDir) -> Result<(OwnedFd, PathBuf)> {
    let shown = upper.path.display();
    let dir = sys::openat2(
        nix::fcntl::AT_FDCWD,
        &cstring(&upper.path)?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .with_context(|| {
        format!("upper directory {shown} changed while sbx was starting (a symlink or something else now in its path); check what writes there, then run again")
    })?;
    let st = nix::sys::stat::fstat(&dir).with_context(|| format!("upper directory {shown}"))?;
    if (st.st_dev, st.st_ino) != (upper.dev, upper.ino) {
        bail!(
            "upper directory {shown} was replaced while sbx was starting; check what writes \
             there, then run again"
        );
    }
    let tree = sys::open_tree(
        dir.as_raw_fd(),
        c"",
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32,
    )
    .with_context(|| format!("cannot bind {shown}"))?;
    Ok((tree, upper.path.clone()))
}

/// Where the upper layer lives, for messages: the kept directory on the host, or the
/// scratch tmpfs.
enum Base {
    Kept(PathBuf),
    Tmpfs,
}

impl Base {
    fn show(&self, name: &str) -> String {
        match self {
            Base::Kept(dir) => dir.join(name).display().to_string(),
            Base::Tmpfs => format!("{name} on the upper layer's tmpfs"),
        }
    }
}

/// Builds the overlay from `parts` (layers bottom first); returns it as a detached mount.
/// The parts are attached on a scratch tmpfs at `staging` first, so every path the
/// overlay is given is short and lies in the sandbox's own mount namespace. The upper and
/// work directories are handed over as descriptors opened beneath the kept directory
/// without following symlinks (kernel overlayfs), or as paths checked the same way
/// before and after fuse-overlayfs opens them.
pub fn assemble(staging: &CStr, parts: Parts, overlay: &OverlayKind) -> Result<OwnedFd> {
    let scratch = Path::new(staging.to_str().context("staging path")?);
    mount_scratch(staging)?;
    let layers_dir = make_dir(scratch, "l")?;
    let mut layers = Vec::new();
    for (i, tree) in parts.layers.into_iter().enumerate() {
        let dir = make_dir(&layers_dir, &i.to_string())?;
        attach(&tree, &dir)?;
        layers.push(dir);
    }
    let (base_path, base_fd, base) = match parts.upper {
        Some((tree, host)) => {
            let dir = make_dir(scratch, "keep")?;
            attach(&tree, &dir)?;
            // The clone's descriptor names the attached mount's root: the kept directory.
            (dir, tree, Base::Kept(host))
        }
        None => {
            let fd = nix::fcntl::open(
                scratch,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .context("open the scratch tmpfs")?;
            (scratch.to_path_buf(), fd, Base::Tmpfs)
        }
    };
    let layers = layers.as_slice();
    let upper = subdir(base_fd.as_fd(), "upper", &base)?;
    let fuse_dirs = || -> Result<FuseDirs> {
        Ok(FuseDirs {
            base: base_fd.as_fd(),
            base_path: &base_path,
            upper: &upper,
            work: subdir(base_fd.as_fd(), "work.fuse", &base)?,
            shown: &base,
        })
    };
    match overlay {
        OverlayKind::Kernel => kernel(layers, &upper, &subdir(base_fd.as_fd(), "work", &base)?)
            .map_err(|e| anyhow::anyhow!("kernel overlayfs: {e:#}; try --overlay fuse")),
        OverlayKind::Fuse(helper) => fuse(helper, layers, fuse_dirs()?, scratch),
        OverlayKind::KernelElseFuse(helper) => {
            let work = subdir(base_fd.as_fd(), "work", &base)?;
            let kernel_error = match kernel(layers, &upper, &work) {
                Ok(root) => return Ok(root),
                Err(e) => e,
            };
            let Some(helper) = helper else {
                bail!(
                    "cannot assemble the image root: kernel overlayfs refused ({kernel_error:#}) \
                     and fuse-overlayfs is not installed; install fuse-overlayfs, or see \
                     `sbx check` (overlay_userns, fuse_overlayfs)"
                );
            };
            fuse(helper, layers, fuse_dirs()?, scratch).map_err(|fuse_error| {
                anyhow::anyhow!(
                    "cannot assemble the image root: kernel overlayfs refused \
                     ({kernel_error:#}) and fuse-overlayfs failed ({fuse_error:#}); see `sbx \
                     check` (overlay_userns, fuse_overlayfs)"
                )
            })
        }
    }
}

/// `name` beneath `parent`, made (0755) when missing. Refused unless it is a real
/// directory (never a symlink, wherever it points) owned by us: the kept directory may
/// have been written by an earlier sandbox, and overlayfs would write wherever it leads.
fn subdir(parent: BorrowedFd, name: &str, base: &Base) -> Result<OwnedFd> {
    let shown = base.show(name);
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("create {shown}")),
    }
    let planted = || {
        anyhow::anyhow!(
            "{shown} is a symlink, which sbx never makes there (an earlier sandbox may have \
             planted it to send the overlay's writes elsewhere); remove it and run again"
        )
    };
    let st = nix::sys::stat::fstatat(parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .with_context(|| format!("stat {shown}"))?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(planted());
    }
    // Opened without following a symlink, in case one replaced the directory since.
    let fd = sys::openat2(
        parent,
        &cstring(Path::new(name))?,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        sys::RESOLVE_BENEATH
            | sys::RESOLVE_NO_SYMLINKS
            | sys::RESOLVE_NO_MAGICLINKS
            | sys::RESOLVE_NO_XDEV,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => planted(),
        Some(libc::ENOTDIR) => {
            anyhow::anyhow!("{shown} is not a directory; remove it and run again")
        }
        _ => anyhow::anyhow!("open {shown}: {e}"),
    })?;
    let st = nix::sys::stat::fstat(&fd).with_context(|| format!("stat {shown}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != me {
        bail!(
            "{shown} is not a directory of yours (owner {} in the sandbox's user namespace); \
             remove it and run again",
            st.st_uid
        );
    }
    Ok(fd)
}

fn same_dir(a: BorrowedFd, b: BorrowedFd) -> Result<bool> {
    let (a, b) = (nix::sys::stat::fstat(a)?, nix::sys::stat::fstat(b)?);
    Ok((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino))
}

fn attach(tree: &OwnedFd, dir: &Path) -> Result<()> {
    let target = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", dir.display()))?;
    sys::move_mount_fd(tree.as_fd(), target.as_fd())
        .with_context(|| format!("mount on {}", dir.display()))
}

/// A small private tmpfs on the staging point, in our mount namespace only.
fn mount_scratch(staging: &CStr) -> Result<()> {
    let fs = new_mount(
        c"tmpfs",
        &[(c"mode", Some(c"0700"))],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
    .context("create the tmpfs for the overlay's scratch directories")?;
    let target = nix::fcntl::open(
        staging,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open the staging point")?;
    sys::move_mount_fd(fs.as_fd(), target.as_fd()).context("mount the scratch tmpfs")
}

/// A directory on the scratch tmpfs, which only this process writes.
fn make_dir(base: &Path, name: &str) -> Result<PathBuf> {
    let dir = base.join(name);
    nix::unistd::mkdir(&dir, Mode::from_bits_truncate(0o755))
        .with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn set_propagation(path: &Path, flags: MsFlags) -> Result<()> {
    nix::mount::mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("set the propagation of {}", path.display()))
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")
}

/// Kernel overlayfs, writable or not at all: when the upper directory cannot hold what
/// overlayfs needs (its work directory, xattrs), the kernel mounts the overlay read-only
/// and says so only in the kernel log. That counts as a refusal here.
fn kernel(layers: &[PathBuf], upper: &OwnedFd, work: &OwnedFd) -> Result<OwnedFd> {
    let root = kernel_mount(layers, upper.as_fd(), work.as_fd())?;
    let flags = nix::sys::statvfs::fstatvfs(&root).context("statvfs the overlay")?;
    if flags
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        bail!(
            "the kernel would mount it only read-only: the upper directory's filesystem cannot \
             hold overlayfs's work directory or its xattrs (the kernel log says which)"
        );
    }
    Ok(root)
}

fn kernel_mount(layers: &[PathBuf], upper: BorrowedFd, work: BorrowedFd) -> Result<OwnedFd> {
    let lowers: Vec<CString> = layers
        .iter()
        .rev()
        .map(|l| cstring(l))
        .collect::<Result<_>>()?;
    let fs = sys::fs_open(c"overlay").context("mount overlay (userxattr)")?;
    let set = |key: &CStr, value: FsValue| {
        sys::fs_set(fs.as_fd(), key, value)
            .with_context(|| format!("overlay option {}", key.to_string_lossy()))
    };
    set(c"userxattr", FsValue::Flag)?;
    set_dir(fs.as_fd(), c"upperdir", upper).context("overlay option upperdir")?;
    set_dir(fs.as_fd(), c"workdir", work).context("overlay option workdir")?;
    // Linux 6.8+: one `lowerdir+` per layer, top first, with no length limit.
    let mut lowers_iter = lowers.iter();
    let appended = match lowers_iter.next() {
        Some(first) => match sys::fs_set(fs.as_fd(), c"lowerdir+", FsValue::String(first)) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => return Err(e).context("overlay option lowerdir+"),
        },
        None => bail!("an image with no layers"),
    };
    if appended {
        for lower in lowers_iter {
            set(c"lowerdir+", FsValue::String(lower))?;
        }
    } else {
        // Older kernels: one colon-separated `lowerdir`, at most 256 bytes via fsconfig.
        let joined: Vec<&[u8]> = lowers.iter().map(|l| l.as_bytes()).collect();
        let joined = CString::new(joined.join(&b':'))?;
        if joined.as_bytes().len() > 255 {
            bail!("this kernel takes the layers only as one `lowerdir` string, and {} layers do not fit in one; use --overlay fuse", layers.len());
        }
        set(c"lowerdir", FsValue::String(&joined))?;
    }
    sys::fs_mount(fs.as_fd(), MOUNT_ATTR_NODEV).context("mount overlay (userxattr)")
}

/// The upper or work directory as the descriptor opened and checked (Linux 6.13+), else
/// as `/proc/self/fd/N` of it, which the kernel resolves to that very directory, not by
/// its name.
fn set_dir(fs: BorrowedFd, key: &CStr, dir: BorrowedFd) -> std::io::Result<()> {
    match sys::fs_set(fs, key, FsValue::Fd(dir)) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let path = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
            sys::fs_set(fs, key, FsValue::String(&path))
        }
        other => other,
    }
}

/// fuse-overlayfs's directories: it takes paths, and opens them itself.
struct FuseDirs<'a> {
    base: BorrowedFd<'a>,
    base_path: &'a Path,
    upper: &'a OwnedFd,
    work: OwnedFd,
    shown: &'a Base,
}

impl FuseDirs<'_> {
    /// After fuse-overlayfs has opened its directories: they must still be the ones
    /// checked before (a swap in between is refused, and the daemon ends with the sandbox).
    fn unchanged(&self, inner_work: &OwnedFd) -> Result<()> {
        let upper = subdir(self.base, "upper", self.shown)?;
        let work = subdir(self.base, "work.fuse", self.shown)?;
        let inner = subdir(work.as_fd(), "work", &self.inner_base())?;
        if !same_dir(upper.as_fd(), self.upper.as_fd())?
            || !same_dir(work.as_fd(), self.work.as_fd())?
            || !same_dir(inner.as_fd(), inner_work.as_fd())?
        {
            bail!(
                "{} changed while fuse-overlayfs started; check what writes there, then run again",
                self.shown.show("")
            );
        }
        Ok(())
    }

    fn inner_base(&self) -> Base {
        match self.shown {
            Base::Kept(dir) => Base::Kept(dir.join("work.fuse")),
            Base::Tmpfs => Base::Tmpfs,
        }
    }
}

fn fuse(helper: &Path, layers: &[PathBuf], dirs: FuseDirs, scratch: &Path) -> Result<OwnedFd> {
    // fuse-overlayfs makes `work` in its work directory and opens it by name: it must be a
    // real directory of ours too.
    let inner_work = subdir(dirs.work.as_fd(), "work", &dirs.inner_base())?;
    let upper = dirs.base_path.join("upper");
    let work = dirs.base_path.join("work.fuse");
    let merged = make_dir(scratch, "merged")?;
    let lowers: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={},allow_other",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    // It mounts, then forks into the background: the daemon lives in the sandbox's pid
    // namespace, and ends with it. It gets a mount namespace of its own, so the pivot
    // into the new root does not become its root too (any path it opened would then go
    // through its own mount: a deadlock); the mount reaches ours through the scratch
    // tmpfs, shared until the mount is there.
    set_propagation(scratch, MsFlags::MS_SHARED)?;
    // Its messages go to a file on the scratch tmpfs, shown only when it fails: a pipe
    // would stay open in the daemon, and the daemon's chatter is no business of the run.
    let log_path = scratch.join("fuse-overlayfs.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let mut cmd = Command::new(helper);
    cmd.args(["-o", &options])
        .arg(&merged)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec and calls only unshare(2),
    // an async-signal-safe system call; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(io::Error::from));
    }
    let status = cmd
        .status()
        .with_context(|| format!("run {}", helper.display()));
    set_propagation(scratch, MsFlags::MS_PRIVATE | MsFlags::MS_REC)?;
    let status = status?;
    if !status.success() {
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!(
            "{} exited with {status}: {}",
            helper.display(),
            said.trim().replace('\n', "; ")
        );
    }
    dirs.unchanged(&inner_work)?;
    let fs = nix::sys::statfs::statfs(&merged).context("statfs the fuse-overlayfs mount")?;
    if fs.filesystem_type().0 as i64 != FUSE_SUPER_MAGIC {
        bail!(
            "{} reported success but mounted nothing on {}",
            helper.display(),
            merged.display()
        );
    }
    let path = cstring(&merged)?;
    sys::open_tree(
        libc::AT_FDCWD,
        &path,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
    )
    .context("clone the fuse-overlayfs mount")
}
