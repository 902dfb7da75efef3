//! The container's root: the bundle's root directory bound over itself, the config's
//! mounts, devices, masked and read-only paths, then `pivot_root`. Every destination is
//! resolved inside the new root (RESOLVE_IN_ROOT), so a symlink in the image cannot point a
//! mount outside it; mounts are made through file descriptors (new mount API).

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::config::{Container, MountKind, MountPlan};
use crate::child::rootfs::{clone_fd, ensure_destination, existing};
use crate::plan::path_bytes;
use crate::sys::{self, new_mount, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID};
use crate::sys::{FsValue, MOUNT_ATTR_RDONLY};

/// Device nodes every container gets (runc's default set), and their numbers.
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Mount events in the container's namespace never propagate back to the host.
pub fn isolate(c: &Container) -> Result<()> {
    let _ = c;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("make / a slave mount in the container's mount namespace")
}

/// The root, bound over itself (recursively), with every configured mount on it.
pub fn build(c: &Container) -> Result<OwnedFd> {
    let path = sys::cstr(path_bytes(&c.rootfs))?;
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        &path,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | sys::AT_RECURSIVE as u32,
    )
    .with_context(|| format!("bind the root {}", c.rootfs.display()))?;
    let target = nix::fcntl::open(
        c.rootfs.as_path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open the root {}", c.rootfs.display()))?;
    sys::move_mount_fd(tree.as_fd(), target.as_fd()).context("attach the container's root")?;
    for m in &c.mounts {
        apply(tree.as_fd(), m).with_context(|| format!("mount {}", m.destination.display()))?;
    }
    Ok(tree)
}

fn apply(root: BorrowedFd, m: &MountPlan) -> Result<()> {
    let (mnt, is_dir) = match &m.kind {
        MountKind::Bind { source, recursive } => {
            let is_dir = std::fs::metadata(source)
                .with_context(|| format!("bind source {}", source.display()))?
                .is_dir();
            (bind_source(source, *recursive, m.attrs)?, is_dir)
        }
        MountKind::Fs { fstype, source } => (filesystem(fstype, source, m)?, true),
    };
    let target = ensure_destination(root, &m.destination, is_dir)?;
    if m.copy_up {
        super::copyup::copy_up(target.as_fd(), mnt.as_fd())
            .context("tmpcopyup: copy the directory's contents into the tmpfs")?;
    }
    sys::move_mount_fd(mnt.as_fd(), target.as_fd())?;
    if let Some(p) = m.propagation {
        sys::mount_setattr_propagation(
            mnt.as_fd(),
            p.bits() & !libc::MS_REC,
            p.contains(MsFlags::MS_REC),
        )
        .context("set its propagation")?;
    }
    Ok(())
}

fn bind_source(source: &Path, recursive: bool, attrs: u64) -> Result<OwnedFd> {
    let path = sys::cstr(path_bytes(source))?;
    let flags = sys::OPEN_TREE_CLONE
        | sys::OPEN_TREE_CLOEXEC
        | if recursive {
            sys::AT_RECURSIVE as u32
        } else {
            0
        };
    let tree = sys::open_tree(libc::AT_FDCWD, &path, flags)
        .with_context(|| format!("bind {}", source.display()))?;
    if attrs != 0 {
        sys::mount_setattr(tree.as_fd(), attrs, recursive)
            .with_context(|| format!("set the options of the bind of {}", source.display()))?;
    }
    Ok(tree)
}

/// A new filesystem; where the kernel refuses one in this user namespace (sysfs of a
/// network namespace it does not own, a cgroup tree without its own cgroup namespace,
/// mqueue), the host's is bound instead, as runc does rootless.
fn filesystem(fstype: &str, source: &str, m: &MountPlan) -> Result<OwnedFd> {
    let kernel_type = if fstype == "cgroup" {
        "cgroup2"
    } else {
        fstype
    };
    let made = fresh(kernel_type, source, m, true).or_else(|e| {
        // devpts refuses a gid that is not mapped: a single-id map has no tty group.
        if fstype == "devpts" && e.raw_os_error() == Some(libc::EINVAL) {
            fresh(kernel_type, source, m, false)
        } else {
            Err(e)
        }
    });
    match made {
        Ok(fd) => Ok(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EBUSY)) => {
            let host = match fstype {
                "sysfs" => "/sys",
                "cgroup" | "cgroup2" => "/sys/fs/cgroup",
                "mqueue" => "/dev/mqueue",
                _ => return Err(e).with_context(|| format!("mount a new {fstype}")),
            };
            bind_source(
                Path::new(host),
                true,
                m.attrs | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            )
            .with_context(|| format!("mount a new {fstype} ({e}), or bind the host's"))
        }
        Err(e) => Err(e).with_context(|| format!("mount a new {fstype}")),
    }
}

fn fresh(fstype: &str, source: &str, m: &MountPlan, with_gid: bool) -> std::io::Result<OwnedFd> {
    let fs = sys::fs_open(&sys::cstr(fstype.as_bytes())?)?;
    let src = sys::cstr(source.as_bytes())?;
    sys::fs_set(fs.as_fd(), c"source", FsValue::String(&src))?;
    for (key, value) in &m.data {
        if key == "gid" && !with_gid {
            continue;
        }
        let k = sys::cstr(key.as_bytes())?;
        match value {
            Some(v) => sys::fs_set(fs.as_fd(), &k, FsValue::String(&sys::cstr(v.as_bytes())?))?,
            None => sys::fs_set(fs.as_fd(), &k, FsValue::Flag)?,
        }
    }
    sys::fs_mount(fs.as_fd(), m.attrs)
}

/// After the mounts: devices, /dev's links, sysctls, masked and read-only paths, and the
/// root read-only if asked.
pub fn finish(root: BorrowedFd, c: &Container, in_userns: bool) -> Result<()> {
    let dev_is_fresh = c
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev") && !matches!(m.kind, MountKind::Bind { .. }));
    devices(root, c, in_userns, dev_is_fresh)?;
    if dev_is_fresh {
        dev_links(root)?;
    }
    sysctls(root, c)?;
    let linux = c.spec.linux().as_ref();
    for path in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask(root, Path::new(path)).with_context(|| format!("mask {path}"))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        read_only(root, Path::new(path)).with_context(|| format!("make {path} read-only"))?;
    }
    Ok(())
}

struct Device {
    path: std::path::PathBuf,
    kind: libc::mode_t,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn devices(root: BorrowedFd, c: &Container, in_userns: bool, dev_is_fresh: bool) -> Result<()> {
    let mut list: Vec<Device> = Vec::new();
    if dev_is_fresh {
        for (name, major, minor) in DEFAULT_DEVICES {
            list.push(Device {
                path: Path::new("/dev").join(name),
                kind: libc::S_IFCHR,
                major: *major,
                minor: *minor,
                mode: 0o666,
                uid: None,
                gid: None,
            });
        }
    }
    for d in c
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        use oci_spec::runtime::LinuxDeviceType as T;
        let kind = match d.typ() {
            T::C | T::U => libc::S_IFCHR,
            T::B => libc::S_IFBLK,
            T::P => libc::S_IFIFO,
            T::A => bail!(
                "linux.devices {}: type \"a\" is not a device",
                d.path().display()
            ),
        };
        list.retain(|x| x.path != *d.path());
        list.push(Device {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid(),
            gid: d.gid(),
        });
    }
    for d in &list {
        if in_userns {
            // No device nodes can be made in a user namespace: the host's own is bound.
            let host = CString::new(path_bytes(&d.path))?;
            let node = sys::open_tree(
                libc::AT_FDCWD,
                &host,
                sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
            )
            .with_context(|| format!("bind the host's {}", d.path.display()))?;
            let target = ensure_destination(root, &d.path, false)?;
            sys::move_mount_fd(node.as_fd(), target.as_fd())
                .with_context(|| format!("bind {}", d.path.display()))?;
        } else {
            make_node(root, d).with_context(|| format!("create device {}", d.path.display()))?;
        }
    }
    Ok(())
}

fn make_node(root: BorrowedFd, d: &Device) -> Result<()> {
    let parent = d.path.parent().unwrap_or(Path::new("/"));
    let name = d.path.file_name().context("a device needs a file name")?;
    let dir = ensure_destination(root, parent, true)?;
    // O_PATH fds cannot be used with mknodat: reopen the directory for real.
    let dir = crate::beneath::open(
        dir.as_fd(),
        Path::new("."),
        libc::O_DIRECTORY | libc::O_RDONLY,
    )?;
    let _ = nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let dev = libc::makedev(d.major as u32, d.minor as u32);
    nix::sys::stat::mknodat(
        dir.as_fd(),
        name,
        nix::sys::stat::SFlag::from_bits_truncate(d.kind),
        nix::sys::stat::Mode::from_bits_truncate(d.mode),
        dev,
    )?;
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        nix::sys::stat::Mode::from_bits_truncate(d.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .ok();
    if d.uid.is_some() || d.gid.is_some() {
        nix::unistd::fchownat(
            dir.as_fd(),
            name,
            d.uid.map(nix::unistd::Uid::from_raw),
            d.gid.map(nix::unistd::Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

fn dev_links(root: BorrowedFd) -> Result<()> {
    let dev = ensure_destination(root, Path::new("/dev"), true)?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match nix::unistd::symlinkat(target, dev.as_fd(), link) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("create /dev/{link}")),
        }
    }
    Ok(())
}

fn sysctls(root: BorrowedFd, c: &Container) -> Result<()> {
    let map = c
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default();
    for (key, value) in &map {
        let path = super::resources::sysctl_path(key)?;
        let fd = sys::open_in_root(root, &sys::cstr(path_bytes(&path))?, libc::O_WRONLY)
            .with_context(|| format!("linux.sysctl {key}: open {}", path.display()))?;
        std::io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes())
            .with_context(|| format!("linux.sysctl {key}: write {value:?}"))?;
    }
    Ok(())
}

/// A directory is covered by an empty read-only tmpfs, anything else by /dev/null. A path
/// this kernel does not have is skipped.
fn mask(root: BorrowedFd, path: &Path) -> Result<()> {
    let Some(target) = existing(root, path)? else {
        return Ok(());
    };
    let is_dir =
        nix::sys::stat::fstat(&target).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    let cover = if is_dir {
        new_mount(
            c"tmpfs",
            &[(c"mode", Some(c"0755")), (c"size", Some(c"0"))],
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )?
    } else {
        sys::open_tree(
            libc::AT_FDCWD,
            c"/dev/null",
            sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
        )?
    };
    sys::move_mount_fd(cover.as_fd(), target.as_fd())?;
    Ok(())
}

fn read_only(root: BorrowedFd, path: &Path) -> Result<()> {
    let Some(target) = existing(root, path)? else {
        return Ok(());
    };
    let tree = clone_fd(&target, true)?;
    sys::mount_setattr(
        tree.as_fd(),
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        true,
    )?;
    sys::move_mount_fd(tree.as_fd(), target.as_fd())?;
    Ok(())
}

/// Without a mount namespace of the container's own: the sysctls through the runtime's
/// `/proc`, then `chroot` into the root as it is, mounting nothing. Returns a descriptor of
/// the runtime's `/proc` (close-on-exec), through which the process waits on `exec.fifo`.
pub fn chroot(c: &Container) -> Result<OwnedFd> {
    let open = |path: &Path| {
        nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("open {}", path.display()))
    };
    sysctls(open(Path::new("/"))?.as_fd(), c)?;
    let proc = open(Path::new("/proc"))?;
    let root = open(&c.rootfs)?;
    nix::unistd::fchdir(&root).context("enter the container's root")?;
    nix::unistd::chroot(".")
        .with_context(|| format!("chroot into the container's root {}", c.rootfs.display()))?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(proc)
}

/// Makes `root` the process's `/` (read-only first if asked), detaching the old one.
pub fn pivot(root: OwnedFd, c: &Container) -> Result<()> {
    if c.root_readonly {
        sys::mount_setattr(root.as_fd(), MOUNT_ATTR_RDONLY, false)
            .context("make the root read-only")?;
    }
    nix::unistd::fchdir(&root).context("enter the new root")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root into the container's root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detach the old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    if let Some(p) = c.rootfs_propagation {
        mount(None::<&str>, "/", None::<&str>, p, None::<&str>)
            .context("set linux.rootfsPropagation")?;
    }
    Ok(())
}
