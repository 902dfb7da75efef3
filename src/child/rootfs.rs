//! Assembles the sandbox's root filesystem and switches into it.
//!
//! Every host path the sandbox uses is cloned as a detached mount tree *first*, while the
//! host's view is untouched. The new root is then attached at `/tmp` of our own mount
//! namespace (the host never sees it), everything is mounted into it through file
//! descriptors (destinations resolved with RESOLVE_IN_ROOT, so a symlink inside the new root
//! cannot point a mount outside it), and `pivot_root` makes it `/` with the old root
//! detached. Nothing is created on the host (but the missing mount points of a `--rootfs`
//! directory, as runc does) and nothing needs cleaning up afterwards: the mounts die with
//! the namespace.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use std::io::Write;

use crate::network::{DNS, GUEST_ADDR};
use crate::plan::{path_bytes, Mount, Plan, Rootfs, TmpfsSize};
use crate::sys::{
    self, new_mount, open_tree, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
};

/// Host device nodes bound into the sandbox's minimal /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Hidden behind /dev/null (files) or an empty read-only tmpfs (directories), as runc does.
const MASKED: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/sys/firmware",
];
/// Kernel knobs that stay visible but read-only.
const READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];
/// Where the new root is attached before the pivot (in our mount namespace only).
const STAGING: &CStr = c"/tmp";

/// Detached clones of every host path the sandbox binds, taken before anything is covered.
pub struct Sources {
    /// None for an image root, which is assembled after the id maps exist.
    root: Option<OwnedFd>,
    /// An image root's layers and kept upper directory.
    overlay: Option<super::overlay::Parts>,
    devices: Vec<OwnedFd>,
    /// One per `Plan::mounts` entry; `None` for a tmpfs.
    binds: Vec<Option<OwnedFd>>,
}

/// Before the id maps exist: nothing here creates a file, so it overlaps with the
/// supervisor running newuidmap and newgidmap.
pub fn prepare(plan: &Plan) -> Result<Sources> {
    make_rprivate()?;
    open_sources(plan)
}

/// After the id maps: builds the new root from `sources` and pivots into it.
pub fn build(plan: &Plan, sources: Sources) -> Result<()> {
    let tree = match (sources.root, sources.overlay, &plan.rootfs) {
        (Some(tree), _, _) => tree,
        (None, Some(parts), Rootfs::Image { overlay, .. }) => {
            super::overlay::assemble(STAGING, parts, overlay)?
        }
        _ => bail!("internal error: no root filesystem was opened"),
    };
    // Tmpfs mounts that turn read-only once every mount point in them is made.
    let mut seal = Vec::new();
    let root = attach_root(plan, tree)?;
    let root = root_skeleton(plan, root, &mut seal)?;
    mount_proc(root.as_fd())?;
    mount_dev(root.as_fd(), sources.devices, plan.shm_size)?;
    if plan.security.mask_kernel_paths {
        mask_kernel_paths(root.as_fd())?;
    }
    mount_tmpfs(
        root.as_fd(),
        Path::new("/tmp"),
        0o1777,
        Some(plan.tmp_size),
        0,
    )?;
    for (i, (mount, source)) in plan.mounts.iter().zip(sources.binds).enumerate() {
        skeletons_before(root.as_fd(), plan, i, &mut seal)?;
        apply(root.as_fd(), mount, source, &mut seal)?;
    }
    skeletons_before(root.as_fd(), plan, plan.mounts.len(), &mut seal)?;
    hide_host_sockets(root.as_fd(), plan)?;
    if plan.network.user_mode_nat() {
        mount_net_files(root.as_fd(), plan)?;
    }
    if plan.limits.site.is_some() {
        mount_cgroup(root.as_fd())?;
    }
    super::skeleton::seal(&seal)?;
    seal_dev(root.as_fd())?;
    pivot_into(root.as_fd())
}

/// The skeleton of `/` itself (a new mount point on the host's root), before anything is
/// mounted on the root: returns the new root, the skeleton's tmpfs, stacked on the old.
fn root_skeleton(plan: &Plan, root: OwnedFd, seal: &mut Vec<OwnedFd>) -> Result<OwnedFd> {
    if !plan.skeletons.iter().any(|s| s.before.is_none()) {
        return Ok(root);
    }
    // The sandbox's own /proc, /dev and /tmp cover these at once.
    super::skeleton::build(root.as_fd(), Path::new("/"), &["proc", "dev", "tmp"], seal)?;
    nix::fcntl::open(
        STAGING,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open the new root")
}

/// The skeletons the plan puts just before its mount `i` (after all of them: `i` is their
/// count).
fn skeletons_before(
    root: BorrowedFd,
    plan: &Plan,
    i: usize,
    seal: &mut Vec<OwnedFd>,
) -> Result<()> {
    for s in plan.skeletons.iter().filter(|s| s.before == Some(i)) {
        super::skeleton::build(root, &s.at, &[], seal)?;
    }
    Ok(())
}

/// Mount events in our namespace must never propagate back to the host.
fn make_rprivate() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private in the sandbox's mount namespace")
}

fn open_sources(plan: &Plan) -> Result<Sources> {
    let root = match &plan.rootfs {
        Rootfs::Host => {
            let tree = clone_tree(Path::new("/"), true)?;
            // Read-only now, before anything is attached to it, so mount points that do not
            // exist on the host can never be created there.
            set_attrs(&tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, true, "/")?;
            Some(tree)
        }
        Rootfs::Dir(dir) => Some(clone_canonical(dir)?),
        Rootfs::Image { .. } => None,
    };
    let overlay = match &plan.rootfs {
        Rootfs::Image { layers, upper, .. } => {
            Some(super::overlay::open_parts(layers, upper.as_ref())?)
        }
        _ => None,
    };
    let devices = DEVICES
        .iter()
        .map(|name| clone_tree(&Path::new("/dev").join(name), false))
        .collect::<Result<_>>()?;
    let binds = plan
        .mounts
        .iter()
        .map(|m| match m {
            Mount::Bind {
                source,
                readonly,
                noexec,
                ..
            } => {
                let tree = clone_canonical(source)?;
                let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | flag_attrs(*readonly, *noexec);
                set_attrs(&tree, attrs, true, &source.to_string_lossy())?;
                Ok(Some(tree))
            }
            Mount::Tmpfs { .. } => Ok(None),
        })
        .collect::<Result<_>>()?;
    Ok(Sources {
        root,
        overlay,
        devices,
        binds,
    })
}

fn flag_attrs(readonly: bool, noexec: bool) -> u64 {
    (if readonly { MOUNT_ATTR_RDONLY } else { 0 }) | if noexec { MOUNT_ATTR_NOEXEC } else { 0 }
}

fn clone_tree(path: &Path, recursive: bool) -> Result<OwnedFd> {
    let c = sys::cstr(path_bytes(path))?;
    let flags = sys::OPEN_TREE_CLONE
        | sys::OPEN_TREE_CLOEXEC
        | if recursive {
            sys::AT_RECURSIVE as u32
        } else {
            0
        };
    open_tree(libc::AT_FDCWD, &c, flags).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ENOSYS) {
            "; sbx needs Linux 5.12 or newer (open_tree, move_mount, mount_setattr)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot bind {}: {e}{hint}", path.display())
    })
}

/// A recursive clone of a host path the planner resolved (canonical), reopened without
/// following any link: a directory a sandbox could write that became a link since then is
/// an error, never a detour to wherever the link points.
fn clone_canonical(path: &Path) -> Result<OwnedFd> {
    let fd = crate::beneath::reopen_canonical(path, libc::O_PATH).map_err(|e| {
        if crate::beneath::is_link_error(&e) {
            anyhow::anyhow!(
                "cannot bind {}: it changed into a symbolic link while sbx was starting \
                 (something that can write there replaced it); check it and run again",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot bind {}: {e}", path.display())
        }
    })?;
    clone_fd(&fd, true).with_context(|| format!("cannot bind {}", path.display()))
}

fn set_attrs(tree: &OwnedFd, attrs: u64, recursive: bool, what: &str) -> Result<()> {
    sys::mount_setattr(tree.as_fd(), attrs, recursive)
        .with_context(|| format!("set mount attributes of {what}"))
}

/// Attaches the new root at the staging point; returns an fd for its top directory.
fn attach_root(plan: &Plan, root: OwnedFd) -> Result<OwnedFd> {
    let staging = nix::fcntl::open(
        STAGING,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open /tmp to stage the new root (the host needs a /tmp directory)")?;
    sys::move_mount_fd(root.as_fd(), staging.as_fd()).context("attach the new root")?;
    if let Rootfs::Dir(dir) = &plan.rootfs {
        // A directory rootfs gets its mount points while it is still writable, then turns
        // read-only like the host's.
        create_mount_points(root.as_fd(), plan);
        set_attrs(
            &root,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
            true,
            &dir.to_string_lossy(),
        )?;
    }
    Ok(root)
}

/// Only mount points that land directly on the directory: one nested in another mount
/// (the working directory under the sandbox's /tmp) is made on that mount instead.
fn create_mount_points(root: BorrowedFd, plan: &Plan) {
    let mut placed: Vec<&Path> = Vec::new();
    let mut base = vec![
        (Path::new("/proc"), true),
        (Path::new("/dev"), true),
        (Path::new("/tmp"), true),
    ];
    if plan.limits.site.is_some() {
        base.push((Path::new("/sys/fs/cgroup"), true));
    }
    if plan.network.user_mode_nat() {
        base.push((Path::new("/etc/resolv.conf"), false));
        base.push((Path::new("/etc/hosts"), false));
    }
    let planned = plan.mounts.iter().map(|m| {
        let is_dir = !matches!(
            m,
            Mount::Bind {
                source_is_dir: false,
                ..
            }
        );
        (m.destination(), is_dir)
    });
    for (dst, is_dir) in base.into_iter().chain(planned) {
        if placed.iter().any(|p| dst.starts_with(p)) {
            continue;
        }
        // Best effort: a real failure is reported when the mount itself is made.
        let _ = ensure_destination(root, dst, is_dir);
        placed.push(dst);
    }
}

fn mount_proc(root: BorrowedFd) -> Result<()> {
    let proc = new_mount(
        c"proc",
        &[],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
    .map_err(|e| {
        // In a container whose runtime masked parts of /proc, the kernel refuses a new one:
        // say so, and how to run the container instead (`sbx check` reports the same).
        let masked = crate::probe::container::masked_proc_here();
        if e.raw_os_error() == Some(libc::EPERM) && !masked.is_empty() {
            anyhow::anyhow!(
                "mount a new /proc: {e}: /proc is partly covered ({}), as a container runtime \
                 masks it, and the kernel then refuses a new one; {}",
                masked.join(", "),
                crate::probe::container::UNMASK_FIX
            )
        } else {
            anyhow::anyhow!("mount a new /proc: {e}")
        }
    })?;
    attach(root, &proc, Path::new("/proc"), true)
}

/// A minimal /dev: a few host devices, a private devpts, /dev/shm and the usual links.
fn mount_dev(root: BorrowedFd, devices: Vec<OwnedFd>, shm_size: TmpfsSize) -> Result<()> {
    mount_tmpfs(root, Path::new("/dev"), 0o755, None, MOUNT_ATTR_NOEXEC)?;
    // A tmpfs of ours, new and empty, that nothing else can reach yet: its entries are made
    // and mounted on by name beneath its fd, without resolving each path from the root.
    let dev = open_path(root, Path::new("/dev"))?;
    for (name, device) in DEVICES.iter().zip(devices) {
        let node = nix::fcntl::openat(
            dev.as_fd(),
            *name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .with_context(|| format!("create /dev/{name}"))?;
        sys::move_mount_fd(device.as_fd(), node.as_fd())
            .with_context(|| format!("mount on /dev/{name}"))?;
    }
    let devpts = new_mount(
        c"devpts",
        &[
            (c"newinstance", None),
            (c"ptmxmode", Some(c"0666")),
            (c"mode", Some(c"0620")),
        ],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
    )
    .context("mount a new /dev/pts")?;
    attach_dir(dev.as_fd(), "pts", &devpts)?;
    let shm = new_tmpfs(Path::new("/dev/shm"), 0o1777, Some(shm_size), 0)?;
    attach_dir(dev.as_fd(), "shm", &shm)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, dev.as_fd(), link)
            .with_context(|| format!("create /dev/{link}"))?;
    }
    Ok(())
}

/// Generated /etc/resolv.conf and /etc/hosts, bound read-only over the root's own: written
/// on a small tmpfs staged in /dev, which is detached again once they are bound.
fn mount_net_files(root: BorrowedFd, plan: &Plan) -> Result<()> {
    let hostname = match &plan.hostname {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let files = [
        ("resolv.conf", format!("nameserver {DNS}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{GUEST_ADDR}\t{hostname}\n"),
        ),
    ];
    let staging = Path::new("/dev/.sbx-net");
    let fs = new_mount(
        c"tmpfs",
        &[(c"mode", Some(c"0755")), (c"size", Some(c"64k"))],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
    .context("create a tmpfs for /etc/resolv.conf and /etc/hosts")?;
    attach(root, &fs, staging, true)?;
    for (name, text) in &files {
        let file = nix::fcntl::openat(
            fs.as_fd(),
            *name,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .with_context(|| format!("write {name}"))?;
        std::fs::File::from(file).write_all(text.as_bytes())?;
        let src = open_path(root, &staging.join(name))?;
        let copy = clone_fd(&src, false).with_context(|| format!("bind {name}"))?;
        set_attrs(&copy, MOUNT_ATTR_RDONLY, false, name)?;
        attach(root, &copy, &Path::new("/etc").join(name), false)?;
    }
    let staged = format!("/proc/self/fd/{}", fs.as_raw_fd());
    umount2(staged.as_str(), MntFlags::MNT_DETACH).context("detach the staging tmpfs")?;
    let dev = open_path(root, Path::new("/dev"))?;
    nix::unistd::unlinkat(
        dev.as_fd(),
        ".sbx-net",
        nix::unistd::UnlinkatFlags::RemoveDir,
    )
    .context("remove the staging directory")
}

/// The sandbox's own cgroup tree, its leaf as the root, read-only, on /sys/fs/cgroup.
fn mount_cgroup(root: BorrowedFd) -> Result<()> {
    let fs = new_mount(
        c"cgroup2",
        &[],
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
    .context("mount the sandbox's cgroup2")?;
    attach(root, &fs, Path::new("/sys/fs/cgroup"), true)
}

/// Covers each host socket the sandbox can still see with /dev/null (see
/// `security::sockets`), but those shown by a bind the profile or command line asked for.
fn hide_host_sockets(root: BorrowedFd, plan: &Plan) -> Result<()> {
    let binds: Vec<&Path> = plan
        .mounts
        .iter()
        .filter(|m| matches!(m, Mount::Bind { .. }))
        .map(Mount::destination)
        .collect();
    for path in &plan.security.host_sockets {
        if crate::security::sockets::under_any(path, &binds) {
            continue;
        }
        // A path that does not resolve inside the root the plain way (missing, through a
        // magic link such as a socket bound at /proc/self/fd/N/NAME, not searchable) is
        // not one the sandbox reaches by name either.
        let Ok(Some(target)) = existing(root, path) else {
            continue;
        };
        let is_socket = nix::sys::stat::fstat(&target)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
        if !is_socket {
            continue;
        }
        let null = open_path(root, Path::new("/dev/null"))?;
        let cover = clone_fd(&null, false).with_context(|| format!("hide {}", path.display()))?;
        sys::move_mount_fd(cover.as_fd(), target.as_fd())
            .with_context(|| format!("hide the host socket {}", path.display()))?;
    }
    Ok(())
}

/// Once every mount is in place, nothing more can be created in /dev.
fn seal_dev(root: BorrowedFd) -> Result<()> {
    let dev = open_path(root, Path::new("/dev"))?;
    sys::mount_setattr(dev.as_fd(), MOUNT_ATTR_RDONLY, false).context("make /dev read-only")
}

/// What the kernel exposes in /proc and /sys that a sandbox has no business reading or
/// changing. A path this kernel does not have is skipped.
fn mask_kernel_paths(root: BorrowedFd) -> Result<()> {
    for path in MASKED.iter().map(Path::new) {
        let Some(target) = existing(root, path)? else {
            continue;
        };
        let is_dir = nix::sys::stat::fstat(&target)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        let cover = if is_dir {
            new_mount(
                c"tmpfs",
                &[(c"mode", Some(c"0555")), (c"size", Some(c"0"))],
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            )
        } else {
            let null = open_path(root, Path::new("/dev/null"))?;
            clone_fd(&null, false)
        }
        .with_context(|| format!("mask {}", path.display()))?;
        sys::move_mount_fd(cover.as_fd(), target.as_fd())
            .with_context(|| format!("mask {}", path.display()))?;
    }
    for path in READ_ONLY.iter().map(Path::new) {
        let Some(target) = existing(root, path)? else {
            continue;
        };
        let tree = clone_fd(&target, true).with_context(|| format!("bind {}", path.display()))?;
        set_attrs(&tree, MOUNT_ATTR_RDONLY, true, &path.to_string_lossy())?;
        sys::move_mount_fd(tree.as_fd(), target.as_fd())
            .with_context(|| format!("make {} read-only", path.display()))?;
    }
    Ok(())
}

pub fn existing(root: BorrowedFd, path: &Path) -> Result<Option<OwnedFd>> {
    match sys::open_in_root(
        root,
        &sys::cstr(path_bytes(path))?,
        libc::O_PATH | libc::O_NOFOLLOW,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("open {}", path.display())),
    }
}

fn open_path(root: BorrowedFd, path: &Path) -> Result<OwnedFd> {
    existing(root, path)?.with_context(|| format!("{} is missing", path.display()))
}

/// A detached copy of the mount at `fd` (inside the new root).
pub fn clone_fd(fd: &OwnedFd, recursive: bool) -> std::io::Result<OwnedFd> {
    let flags = sys::OPEN_TREE_CLONE
        | sys::OPEN_TREE_CLOEXEC
        | libc::AT_EMPTY_PATH as u32
        | if recursive {
            sys::AT_RECURSIVE as u32
        } else {
            0
        };
    open_tree(fd.as_raw_fd(), c"", flags)
}

/// A new tmpfs on `dst`; `attrs` adds to nosuid and nodev (read-only, noexec). Returns
/// the mount.
fn mount_tmpfs(
    root: BorrowedFd,
    dst: &Path,
    mode: u32,
    size: Option<TmpfsSize>,
    attrs: u64,
) -> Result<OwnedFd> {
    let fs = new_tmpfs(dst, mode, size, attrs)?;
    attach(root, &fs, dst, true)?;
    Ok(fs)
}

/// A detached tmpfs, for `dst` (named in errors).
fn new_tmpfs(dst: &Path, mode: u32, size: Option<TmpfsSize>, attrs: u64) -> Result<OwnedFd> {
    let mode = CString::new(format!("{mode:o}"))?;
    let size = size.map(|s| CString::new(s.to_string())).transpose()?;
    let mut options: Vec<(&CStr, Option<&CStr>)> = vec![(c"mode", Some(&mode))];
    if let Some(size) = &size {
        options.push((c"size", Some(size)));
    }
    new_mount(
        c"tmpfs",
        &options,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | attrs,
    )
    .with_context(|| format!("create a tmpfs for {}", dst.display()))
}

/// One mount of the plan. A read-only tmpfs stays writable until `seal`, so the mount
/// points of the mounts inside it can be made.
fn apply(
    root: BorrowedFd,
    mount: &Mount,
    source: Option<OwnedFd>,
    seal: &mut Vec<OwnedFd>,
) -> Result<()> {
    match (mount, source) {
        (
            Mount::Bind {
                destination,
                source_is_dir,
                ..
            },
            Some(tree),
        ) => attach(root, &tree, destination, *source_is_dir),
        (
            Mount::Tmpfs {
                destination,
                size,
                mode,
                readonly,
                noexec,
            },
            _,
        ) => {
            let fs = mount_tmpfs(root, destination, *mode, *size, flag_attrs(false, *noexec))?;
            if *readonly {
                seal.push(fs);
            }
            Ok(())
        }
        (Mount::Bind { destination, .. }, None) => {
            bail!(
                "internal error: no source opened for {}",
                destination.display()
            )
        }
    }
}

/// Moves a detached mount onto `dst` inside the new root, creating `dst` if needed.
/// `mnt` on a new directory `name` of `dir`, a directory of sbx's own new /dev.
fn attach_dir(dir: BorrowedFd, name: &str, mnt: &OwnedFd) -> Result<()> {
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755))
        .with_context(|| format!("create /dev/{name}"))?;
    let target = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open /dev/{name}"))?;
    sys::move_mount_fd(mnt.as_fd(), target.as_fd()).with_context(|| format!("mount on /dev/{name}"))
}

fn attach(root: BorrowedFd, mnt: &OwnedFd, dst: &Path, is_dir: bool) -> Result<()> {
    let target = ensure_destination(root, dst, is_dir)?;
    sys::move_mount_fd(mnt.as_fd(), target.as_fd())
        .with_context(|| format!("mount on {}", dst.display()))
}

/// An O_PATH fd for `dst` inside the new root; missing components are created (directories,
/// and an empty file as the last one when binding a file).
pub fn ensure_destination(root: BorrowedFd, dst: &Path, is_dir: bool) -> Result<OwnedFd> {
    let c = sys::cstr(path_bytes(dst))?;
    match sys::open_in_root(root, &c, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("mount point {}", dst.display())),
    }
    let parts: Vec<&std::ffi::OsStr> = dst
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut current = root.try_clone_to_owned()?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let made = if last && !is_dir {
            nix::fcntl::openat(
                current.as_fd(),
                *part,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
        } else {
            nix::sys::stat::mkdirat(current.as_fd(), *part, Mode::from_bits_truncate(0o755))
        };
        match made {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(mount_point_error(dst, e.into())),
        }
        let prefix: std::path::PathBuf = parts[..=i].iter().collect();
        let prefix = sys::cstr(path_bytes(&Path::new("/").join(prefix)))?;
        current = sys::open_in_root(root, &prefix, libc::O_PATH)
            .map_err(|e| mount_point_error(dst, e))?;
    }
    Ok(current)
}

fn mount_point_error(dst: &Path, e: io::Error) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        // The planner makes room for every mount point it finds missing on something
        // read-only (`plan::Skeleton`): this one was there when it looked.
        Some(libc::EROFS) => {
            "; the directory above it is read-only in the sandbox, and it existed when sbx \
             planned the run: something removed it since; run again"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => "; you cannot create it there",
        _ => "",
    };
    anyhow::anyhow!("cannot create mount point {}: {e}{hint}", dst.display())
}

/// Makes the new root `/` and detaches the old one: nothing of it stays reachable.
fn pivot_into(root: BorrowedFd) -> Result<()> {
    nix::unistd::fchdir(root).context("enter the new root")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detach the old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}
