//! Raw system calls that nix does not wrap. Each `unsafe` block says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_uint, c_void};

pub use libc::{
    AT_RECURSIVE, FSMOUNT_CLOEXEC, FSOPEN_CLOEXEC, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH,
    OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
};

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor returned by a successful system call.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// What `clone_process` returned in each of the two processes.
pub enum Forked {
    Parent(nix::unistd::Pid),
    Child,
}

/// `clone(flags | SIGCHLD)` with no new stack: a fork that also creates namespaces.
///
/// # Safety
/// The caller must be single-threaded, and the child must only do what is safe after
/// `fork` in a single-threaded program (which is everything, since no other thread can
/// hold a lock). Without CLONE_VM the child gets a copy-on-write copy of our memory, and a
/// null stack means "keep the same stack pointer", exactly like fork(2).
pub unsafe fn clone_process(flags: c_int) -> io::Result<Forked> {
    // SAFETY: fork semantics (no CLONE_VM, null stack); the caller guarantees no other
    // thread exists whose locks could be copied while held.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_int>(),
            std::ptr::null_mut::<c_int>(),
            0 as libc::c_ulong,
        )
    };
    match check(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(nix::unistd::Pid::from_raw(pid as i32))),
    }
}

/// `open_tree(2)`: with OPEN_TREE_CLONE, a detached copy of the mount tree at `path`.
pub fn open_tree(dirfd: RawFd, path: &CStr, flags: c_uint) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) };
    check(ret).map(owned)
}

/// `move_mount(2)` of the mount `from` (a detached tree or fsmount fd) onto `to`.
pub fn move_mount_fd(from: BorrowedFd, to: BorrowedFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both fds are open for the call; empty paths with *_EMPTY_PATH mean "the fd itself".
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(ret).map(drop)
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` on the mount at `fd`, optionally recursively.
pub fn mount_setattr(fd: BorrowedFd, attr_set: u64, recursive: bool) -> io::Result<()> {
    // The kernel takes an atime mode (noatime, strictatime) only with the atime bits in
    // attr_clr (MOUNT_ATTR__ATIME); EINVAL otherwise.
    const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
    setattr(
        fd,
        MountAttr {
            attr_set,
            attr_clr: if attr_set & MOUNT_ATTR_ATIME_MASK != 0 {
                MOUNT_ATTR_ATIME_MASK
            } else {
                0
            },
            propagation: 0,
            userns_fd: 0,
        },
        recursive,
    )
}

/// `mount_setattr(2)` of the propagation type (MS_SHARED, MS_SLAVE, MS_PRIVATE or
/// MS_UNBINDABLE) of the mount at `fd`, optionally recursively.
pub fn mount_setattr_propagation(
    fd: BorrowedFd,
    propagation: u64,
    recursive: bool,
) -> io::Result<()> {
    setattr(
        fd,
        MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation,
            userns_fd: 0,
        },
        recursive,
    )
}

fn setattr(fd: BorrowedFd, attr: MountAttr, recursive: bool) -> io::Result<()> {
    let flags = libc::AT_EMPTY_PATH | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `attr` is a valid, initialised mount_attr and its exact size is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags as c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// A new, detached filesystem mount: fsopen + fsconfig + fsmount.
pub fn new_mount(
    fstype: &CStr,
    options: &[(&CStr, Option<&CStr>)],
    attrs: u64,
) -> io::Result<OwnedFd> {
    let fs = fs_open(fstype)?;
    for (key, value) in options {
        let value = match value {
            Some(v) => FsValue::String(v),
            None => FsValue::Flag,
        };
        fs_set(fs.as_fd(), key, value)?;
    }
    fs_mount(fs.as_fd(), attrs)
}

/// The value of one `fsconfig(2)` parameter.
#[derive(Clone, Copy)]
pub enum FsValue<'a> {
    Flag,
    String(&'a CStr),
    /// FSCONFIG_SET_FD: the file itself, never a path to look up again (overlayfs takes
    /// its layers this way since Linux 6.13). The fd must not be O_PATH.
    Fd(BorrowedFd<'a>),
}

/// `fsopen(2)`: a filesystem context of `fstype`, to configure with `fs_set`.
pub fn fs_open(fstype: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is a valid NUL-terminated string.
    check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) }).map(owned)
}

/// `fsconfig(2)` of one parameter. A refused parameter leaves the context usable, so the
/// caller may try another form of the same value.
pub fn fs_set(fs: BorrowedFd, key: &CStr, value: FsValue) -> io::Result<()> {
    let (cmd, value_ptr, aux) = match value {
        FsValue::Flag => (libc::FSCONFIG_SET_FLAG, std::ptr::null(), 0),
        FsValue::String(v) => (libc::FSCONFIG_SET_STRING, v.as_ptr(), 0),
        FsValue::Fd(fd) => (libc::FSCONFIG_SET_FD, std::ptr::null(), fd.as_raw_fd()),
    };
    // SAFETY: `key` and `value` are valid NUL-terminated strings (or null for a flag or an
    // fd); `aux` is an open descriptor for FSCONFIG_SET_FD, which the kernel only reads.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.as_ptr(),
            value_ptr,
            aux,
        )
    })
    .map(drop)
}

/// FSCONFIG_CMD_CREATE and `fsmount(2)`: the configured filesystem as a detached mount.
pub fn fs_mount(fs: BorrowedFd, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: no pointers are passed; `fs` is an open filesystem context.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<c_void>(),
            std::ptr::null::<c_void>(),
            0,
        )
    })?;
    // SAFETY: no pointers are passed; `fs` holds a created superblock.
    let mnt = check(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs as c_uint,
        )
    })?;
    Ok(owned(mnt))
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` with RESOLVE_IN_ROOT: `path` is resolved as if `root` were `/`, so neither
/// `..` nor a symlink can lead out of it.
pub fn open_in_root(root: BorrowedFd, path: &CStr, flags: c_int) -> io::Result<OwnedFd> {
    openat2(
        root,
        path,
        flags,
        0,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// `openat2(2)` with the given `RESOLVE_*` flags (and O_CLOEXEC always).
pub fn openat2(
    dir: BorrowedFd,
    path: &CStr,
    flags: c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    check(ret).map(owned)
}

/// `close_range(first, last, flags)`.
pub fn close_range(first: c_uint, last: c_uint, flags: c_int) -> io::Result<()> {
    // SAFETY: closing or marking descriptors has no memory-safety preconditions; callers own
    // every descriptor in the range by construction (they are stray inherited ones).
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// `personality(persona)`: the execution domain and flags of this process, kept across
/// execve (PER_LINUX32 makes `uname -m` say i686 on x86_64).
pub fn personality(persona: libc::c_ulong) -> io::Result<()> {
    // SAFETY: personality takes one integer and changes only this process's domain.
    let ret = unsafe { libc::personality(persona) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A C string from a path or name known to contain no NUL (the Plan checked).
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid fd yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// `dup2(from, to)` onto a fixed descriptor number (0, 1 or 2 at start-up), leaving `to`
/// open and owned by the process as a whole rather than by any Rust value.
pub fn dup_to(from: BorrowedFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 has no memory-safety preconditions; `to` is a standard descriptor slot
    // that no Rust object owns.
    check(unsafe { libc::dup2(from.as_raw_fd(), to) }.into()).map(drop)
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the Landlock ABI
/// version this kernel offers, or the error that says why there is none.
pub fn landlock_version() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: c_uint = 1 << 0;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel reads
    // and writes no memory; it only returns the ABI version (or an error).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    check(ret).map(|abi| u32::try_from(abi).unwrap_or(0))
}

/// The size of extended attribute `name` of `path` (following symlinks), without reading it.
pub fn xattr_size(path: &CStr, name: &CStr) -> io::Result<usize> {
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks only for the
    // attribute's size, so the kernel writes nothing.
    let size = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    usize::try_from(size).map_err(|_| io::Error::last_os_error())
}

/// Whether the open file `fd` (not O_PATH) has extended attribute `name`.
pub fn has_xattr(fd: BorrowedFd, name: &CStr) -> io::Result<bool> {
    // SAFETY: `name` is NUL-terminated; a null buffer of size 0 asks only for the size, so
    // the kernel writes nothing.
    let size = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if size >= 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(e),
    }
}

/// `fsetxattr(fd, name, value, 0)`: sets an extended attribute of an open file.
pub fn set_xattr(fd: BorrowedFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `value` is a valid buffer of the length passed.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast::<c_void>(),
            value.len(),
            0,
        )
    };
    check(ret.into()).map(drop)
}

/// `prctl(PR_GET_SECCOMP)`: the calling thread's seccomp mode (0 none, 2 filter).
pub fn seccomp_mode() -> io::Result<c_int> {
    // SAFETY: PR_GET_SECCOMP takes no pointers; it only returns this thread's seccomp mode.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if mode < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(mode)
    }
}

/// `_exit(code)`: ends the process at once, without running exit handlers or flushing
/// stdio buffers, as a forked child must so as not to repeat its parent's.
pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit has no preconditions and never returns; skipping destructors and
    // exit handlers only leaks, which is safe.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(pid, 0)`: a descriptor that names this process and no later one with its pid.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just created `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd, sig: c_int) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed (the kernel fills in a kill()-like one).
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// Closes every descriptor from 3 up except those in `keep`.
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<c_uint> = keep.iter().map(|&fd| fd as c_uint).collect();
    keep.sort_unstable();
    let mut first: c_uint = 3;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1, 0)?;
        }
        first = first.max(fd + 1);
    }
    close_range(first, c_uint::MAX, 0)
}

/// `ioctl(ns, NS_GET_OWNER_UID)`: the uid (as this process sees it) that owns the user
/// namespace `ns`.
pub fn ns_owner_uid(ns: BorrowedFd) -> io::Result<u32> {
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704; // _IO(0xb7, 0x4)
    let mut uid: libc::uid_t = 0;
    // SAFETY: the kernel writes one uid_t to the pointer, which points at a live uid_t.
    check(unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) } as libc::c_long)?;
    Ok(uid)
}

/// `ioctl(ns, NS_GET_PARENT)`: the parent of the user namespace `ns`, as a new descriptor.
pub fn ns_parent(ns: BorrowedFd) -> io::Result<OwnedFd> {
    const NS_GET_PARENT: libc::c_ulong = 0xb702; // _IO(0xb7, 0x2)
                                                 // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor or -1.
    let fd = check(unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) } as libc::c_long)?;
    // SAFETY: the kernel just created `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
