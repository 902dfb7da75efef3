//! The last steps of a container's process, and of one `exec` starts: limits, working
//! directory, user and groups, the five capability sets, no_new_privs, then the program,
//! found along the config's PATH, executed with exactly the config's environment.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid};

use super::config::{CapSets, ProcessPlan};
use super::plug::Filter;
use crate::exit::{CANNOT_EXECUTE, NOT_FOUND};

/// A program ready to execute.
pub struct Prepared {
    no_new_privileges: bool,
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// Applies `p` to this process, which is still root in the container's user namespace
/// with every capability, and finds the program. The persona first (before a seccomp
/// profile that may allow personality(2) only with some values), then runc's order: rlimits while they
/// can still be raised, the seccomp filter while CAP_SYS_ADMIN allows it without
/// no_new_privs (only when the config does not ask for no_new_privs: with it, `exec`
/// installs the filter last, so that it need allow less), the bounding set while
/// CAP_SETPCAP is effective, the user with the permitted set kept, then the sets the
/// config asks for.
///
/// `setgroups_denied` is [`setgroups_denied`], read while `/proc` is the runtime's (a
/// container without a mount namespace of its own has none in its root).
pub fn prepare(
    p: &ProcessPlan,
    seccomp: Option<&Filter>,
    setgroups_denied: bool,
) -> Result<Prepared> {
    if let Some(persona) = p.personality {
        crate::sys::personality(persona)
            .with_context(|| format!("set linux.personality ({persona:#x})"))?;
    }
    for (resource, soft, hard) in &p.rlimits {
        nix::sys::resource::setrlimit(*resource, *soft, *hard)
            .with_context(|| format!("process.rlimits: set {resource:?} to {soft}:{hard}"))?;
    }
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask & 0o777));
    }
    nix::unistd::chdir(&p.cwd)
        .with_context(|| format!("process.cwd {}: cannot enter it", p.cwd.display()))?;
    if let (Some(filter), false) = (seccomp, p.no_new_privileges) {
        super::seccomp::install(&filter.program, filter.flags)?;
    }
    drop_bounding(&p.caps.bounding)?;
    nix::sys::prctl::set_keepcaps(true).context("keep capabilities across the user change")?;
    set_user(p, setgroups_denied)?;
    nix::sys::prctl::set_keepcaps(false).context("prctl PR_SET_KEEPCAPS")?;
    set_caps(&p.caps)?;
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().context("set no_new_privs")?;
    }
    // The working directory again, as the user: the same directory, now checked with the
    // user's permissions, as runc does.
    nix::unistd::chdir(&p.cwd)
        .with_context(|| format!("process.cwd {}: cannot enter it", p.cwd.display()))?;
    let path = find_program(&p.args[0], &p.env)?;
    let cstrings = |v: &[String]| -> Result<Vec<CString>> {
        v.iter()
            .map(|s| CString::new(s.as_bytes()).context("a NUL byte in process.args or env"))
            .collect()
    };
    Ok(Prepared {
        no_new_privileges: p.no_new_privileges,
        path: CString::new(path.as_os_str().as_bytes())?,
        argv: cstrings(&p.args)?,
        envp: cstrings(&p.env)?,
    })
}

fn drop_bounding(keep: &HashSet<Capability>) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("drop {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

/// Whether this process's user namespace denies setgroups (a single-id map).
pub fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

fn set_user(p: &ProcessPlan, denied: bool) -> Result<()> {
    if denied {
        if p.additional_gids.iter().any(|g| *g != p.gid) {
            bail!(
                "process.user.additionalGids cannot be set: this user namespace denies \
                 setgroups (a single-id map); map a range of ids to use them"
            );
        }
    } else {
        let groups: Vec<Gid> = p
            .additional_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).context("set process.user.additionalGids")?;
    }
    let gid = Gid::from_raw(p.gid);
    nix::unistd::setresgid(gid, gid, gid)
        .with_context(|| format!("set gid {} (is it mapped in the user namespace?)", p.gid))?;
    let uid = Uid::from_raw(p.uid);
    nix::unistd::setresuid(uid, uid, uid)
        .with_context(|| format!("set uid {} (is it mapped in the user namespace?)", p.uid))
}

fn known(set: &HashSet<Capability>) -> HashSet<Capability> {
    let supported = caps::runtime::thread_all_supported();
    set.iter()
        .filter(|c| supported.contains(c))
        .copied()
        .collect()
}

fn set_caps(c: &CapSets) -> Result<()> {
    caps::set(None, CapSet::Inheritable, &known(&c.inheritable))
        .context("set the inheritable capabilities")?;
    // Effective before permitted: root's effective set is still full, and it must stay
    // within the permitted set at each step.
    caps::set(None, CapSet::Effective, &known(&c.effective))
        .context("set the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &known(&c.permitted))
        .context("set the permitted capabilities (the effective set must be within it)")?;
    caps::clear(None, CapSet::Ambient).context("clear the ambient capabilities")?;
    for cap in known(&c.ambient) {
        caps::raise(None, CapSet::Ambient, cap).with_context(|| {
            format!("raise ambient {cap} (it must be permitted and inheritable too)")
        })?;
    }
    Ok(())
}

/// `name` itself when it has a slash, else the first executable file of that name along
/// the PATH in `env`. The messages are runc's, which engines turn into exit codes 126/127.
fn find_program(name: &str, env: &[String]) -> Result<PathBuf> {
    if name.contains('/') {
        return check_executable(Path::new(name)).map(|()| PathBuf::from(name));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    bail!("exec: {name:?}: executable file not found in $PATH")
}

fn check_executable(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("exec: {:?}: stat {}", path, path.display()))?;
    if meta.is_dir() {
        bail!("exec: {:?}: is a directory: permission denied", path);
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .with_context(|| format!("exec: {:?}: permission denied", path))
}

/// Closes every descriptor but 0-2 and the `preserve` ones after them at exec, installs
/// the seccomp filter last (under no_new_privs; without, `prepare` installed it), and
/// executes. Returns only on failure, with the exit code (126 or 127) and the reason.
pub fn exec(prepared: &Prepared, preserve: u32, seccomp: Option<&Filter>) -> (i32, String) {
    let first = 3 + preserve;
    if let Err(e) = mark_close_on_exec(first) {
        return (
            CANNOT_EXECUTE,
            format!("mark descriptors close-on-exec: {e}"),
        );
    }
    for fd in 3..first {
        // The preserved descriptors reach the program whatever their flags were.
        // SAFETY: F_SETFD on a descriptor number only changes its flags.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, 0) };
    }
    if let (Some(filter), true) = (seccomp, prepared.no_new_privileges) {
        if let Err(e) = super::seccomp::install(&filter.program, filter.flags) {
            return (CANNOT_EXECUTE, format!("{e:#}"));
        }
    }
    let e = nix::unistd::execve(&prepared.path, &prepared.argv, &prepared.envp).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    };
    (code, format!("exec {:?}: {e}", prepared.path))
}

/// FD_CLOEXEC on every descriptor from `first` on: close_range, or where the config's
/// seccomp profile (already installed without no_new_privs) refuses it, as runc does it,
/// fcntl on each descriptor /proc/self/fd lists, or on every number below RLIMIT_NOFILE.
fn mark_close_on_exec(first: u32) -> std::io::Result<()> {
    match crate::sys::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
            ) => {}
        other => return other,
    }
    let set = |fd: i32| {
        // SAFETY: F_SETFD on a descriptor number only changes its flags (EBADF when closed).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    };
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor is listed too; it is closed with the iterator.
        let fds: Vec<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.into_iter()
            .filter(|fd| *fd >= first as i32)
            .for_each(set);
        return Ok(());
    }
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(std::io::Error::from)?;
    let last = i32::try_from(soft.min(1 << 20)).unwrap_or(1 << 20);
    (first as i32..last).for_each(set);
    Ok(())
}
