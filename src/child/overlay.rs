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

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::image::run::OverlayKind;
use crate::sys::{self, new_mount, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Detached clones of the layers and of the kept upper directory, taken in `prepare`
/// with the other host paths, while the host's view is untouched.
pub struct Parts {
    layers: Vec<OwnedFd>,
    upper: Option<OwnedFd>,
}

pub fn open_parts(layers: &[PathBuf], upper: Option<&Path>) -> Result<Parts> {
    let clone = |path: &Path| -> Result<OwnedFd> {
        sys::open_tree(
            libc::AT_FDCWD,
            &cstring(path)?,
            sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
        )
        .with_context(|| format!("cannot bind {}", path.display()))
    };
    let read_only = |path: &PathBuf| -> Result<OwnedFd> {
        let tree = clone(path)?;
        sys::mount_setattr(tree.as_fd(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, false)
            .with_context(|| format!("make layer {} read-only", path.display()))?;
        Ok(tree)
    };
    Ok(Parts {
        layers: layers.iter().map(read_only).collect::<Result<_>>()?,
        upper: upper.map(clone).transpose()?,
    })
}

/// Builds the overlay from `parts` (layers bottom first); returns it as a detached mount.
/// The parts are attached on a scratch tmpfs at `staging` first, so every path the
/// overlay is given is short and lies in the sandbox's own mount namespace.
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
    let base = match parts.upper {
        Some(tree) => {
            let dir = make_dir(scratch, "keep")?;
            attach(&tree, &dir)?;
            dir
        }
        None => scratch.to_path_buf(),
    };
    let layers = layers.as_slice();
    let upper_dir = make_dir(&base, "upper")?;
    match overlay {
        OverlayKind::Kernel => kernel(layers, &upper_dir, &make_dir(&base, "work")?)
            .map_err(|e| anyhow::anyhow!("kernel overlayfs: {e:#}; try --overlay fuse")),
        OverlayKind::Fuse(helper) => fuse(
            helper,
            layers,
            &upper_dir,
            &make_dir(&base, "work.fuse")?,
            scratch,
        ),
        OverlayKind::KernelElseFuse(helper) => {
            let kernel_error = match kernel(layers, &upper_dir, &make_dir(&base, "work")?) {
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
            let work = make_dir(&base, "work.fuse")?;
            fuse(helper, layers, &upper_dir, &work, scratch).map_err(|fuse_error| {
                anyhow::anyhow!(
                    "cannot assemble the image root: kernel overlayfs refused \
                     ({kernel_error:#}) and fuse-overlayfs failed ({fuse_error:#}); see `sbx \
                     check` (overlay_userns, fuse_overlayfs)"
                )
            })
        }
    }
}

fn attach(tree: &OwnedFd, dir: &Path) -> Result<()> {
    let target = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
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
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open the staging point")?;
    sys::move_mount_fd(fs.as_fd(), target.as_fd()).context("mount the scratch tmpfs")
}

fn make_dir(base: &Path, name: &str) -> Result<PathBuf> {
    let dir = base.join(name);
    match nix::unistd::mkdir(&dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(dir),
        Err(e) => Err(e).with_context(|| format!("create {}", dir.display())),
    }
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
fn kernel(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<OwnedFd> {
    let root = kernel_mount(layers, upper, work)?;
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

fn kernel_mount(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<OwnedFd> {
    let lowers: Vec<CString> = layers
        .iter()
        .rev()
        .map(|l| cstring(l))
        .collect::<Result<_>>()?;
    let (upper, work) = (cstring(upper)?, cstring(work)?);
    let fixed: [(&CStr, Option<&CStr>); 3] = [
        (c"userxattr", None),
        (c"upperdir", Some(&upper)),
        (c"workdir", Some(&work)),
    ];
    // Linux 6.8+: one `lowerdir+` per layer, top first, with no length limit.
    let mut options = fixed.to_vec();
    options.extend(lowers.iter().map(|l| (c"lowerdir+", Some(l.as_c_str()))));
    let attrs = MOUNT_ATTR_NODEV;
    match new_mount(c"overlay", &options, attrs) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Older kernels: one colon-separated `lowerdir`, at most 256 bytes via fsconfig.
            let joined: Vec<&[u8]> = lowers.iter().map(|l| l.as_bytes()).collect();
            let joined = CString::new(joined.join(&b':'))?;
            if joined.as_bytes().len() > 255 {
                bail!("this kernel takes the layers only as one `lowerdir` string, and {} layers do not fit in one; use --overlay fuse", layers.len());
            }
            let mut options = fixed.to_vec();
            options.push((c"lowerdir", Some(&joined)));
            new_mount(c"overlay", &options, attrs).context("mount overlay (userxattr)")
        }
        Err(e) => Err(e).context("mount overlay (userxattr)"),
    }
}

fn fuse(
    helper: &Path,
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    scratch: &Path,
) -> Result<OwnedFd> {
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
