//! Host feature probes, used by `sbx check`, by preflight checks and by the tests.
//!
//! Each probe is fast and leaves nothing behind: namespaces are tried in a forked child
//! that ends with `_exit` (its mounts die with it), the overlay probe's scratch directory is
//! removed whatever happens, and no probe installs a filter or a ruleset on sbx itself.
//! Parsing is done by functions that take text, so it is tested without the host.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::Serialize;

use crate::supervisor::idmap::{find_helper, parse_subids, SubRange, SUBGID, SUBUID};

/// The outcome of one probe. `fix` says what to do when `ok` is false.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        let (ok, detail, fix) = (true, detail.into(), None);
        Check {
            name,
            ok,
            detail,
            fix,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        let (ok, detail, fix) = (false, detail.into(), Some(fix.into()));
        Check {
            name,
            ok,
            detail,
            fix,
        }
    }
}

/// `sbx check`: prints the report; exit 0 when sbx can run its default profile here.
pub fn check_command(json: bool) -> Result<i32> {
    let checks = probe_all();
    let text = if json {
        render_json(&checks)?
    } else {
        render_human(&checks)
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("write the report to stdout")?;
    Ok(exit_code(&checks))
}

/// Every probe, in report order.
pub fn probe_all() -> Vec<Check> {
    let caller = Caller::current();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = parse_mountinfo(&mountinfo);
    vec![
        userns(),
        id_helper("newuidmap"),
        id_helper("newgidmap"),
        subids("subuid", SUBUID, &caller),
        subids("subgid", SUBGID, &caller),
        mount_api(),
        overlay_userns(&caller),
        fuse_overlayfs(),
        device("dev_fuse", "/dev/fuse", "fuse"),
        slirp4netns(),
        device("dev_net_tun", "/dev/net/tun", "tun"),
        cgroup_v2(&mounts),
        cgroup_delegation(&mounts, &caller),
        landlock(),
        seccomp(),
    ]
}

/// 0 when the checks the default profile depends on pass, 1 otherwise.
fn exit_code(checks: &[Check]) -> i32 {
    let required = ["userns", "mount_api"];
    let ok = |name: &str| checks.iter().any(|c| c.name == name && c.ok);
    if required.iter().all(|name| ok(name)) {
        0
    } else {
        1
    }
}

struct Caller {
    uid: u32,
    gid: u32,
    name: String,
}

impl Caller {
    fn current() -> Caller {
        let uid = nix::unistd::getuid();
        let name = match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            _ => uid.to_string(),
        };
        let gid = nix::unistd::getgid().as_raw();
        Caller {
            uid: uid.as_raw(),
            gid,
            name,
        }
    }
}

fn userns() -> Check {
    let verdict = in_child(|| {
        enter_userns(CloneFlags::empty())?;
        // AppArmor's restriction lets the unshare succeed but strips the capabilities the
        // new namespace should grant; needing CAP_SYS_ADMIN in it tells the two apart.
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
            format!("no capabilities in a new user namespace: unshare(CLONE_NEWNS): {e}")
        })
    });
    let Err(why) = verdict else {
        return Check::pass("userns", "user namespaces work for this user");
    };
    let blockers = userns_blockers(|key| fs::read_to_string(Path::new("/proc/sys").join(key)).ok());
    if blockers.is_empty() {
        let fix = "no blocking sysctl found; inside a container, its seccomp profile or LSM may \
                   deny unshare(CLONE_NEWUSER): run sbx on the host or allow user namespaces there";
        return Check::fail("userns", why, fix);
    }
    let (settings, fixes): (Vec<String>, Vec<String>) = blockers.into_iter().unzip();
    let detail = format!("{why}; blocked by {}", settings.join(", "));
    Check::fail("userns", detail, fixes.join("; "))
}

/// Settings that block unprivileged user namespaces, each with the command that lifts it.
/// `read` returns the contents of a file under /proc/sys.
fn userns_blockers(read: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let rules = [
        ("kernel/unprivileged_userns_clone", "0", "1", ""),
        ("user/max_user_namespaces", "0", "15000", ""),
        (
            "kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "0",
            " (Ubuntu 23.10+; or give sbx an AppArmor profile that allows `userns,`)",
        ),
    ];
    let mut found = Vec::new();
    for (file, bad, good, note) in rules {
        if read(file).is_some_and(|v| v.trim() == bad) {
            let key = file.replace('/', ".");
            let fix = format!(
                "`sudo sysctl -w {key}={good}`, kept across reboots in /etc/sysctl.d/{note}"
            );
            found.push((format!("{key} = {bad}"), fix));
        }
    }
    found
}

fn id_helper(name: &'static str) -> Check {
    let install =
        "`sudo apt-get install uidmap` (Debian/Ubuntu) or `sudo dnf install shadow-utils`";
    let Some(path) = find_helper(name) else {
        let detail = "not found in /usr/bin, /usr/sbin, /bin or /sbin; sbx falls back to a \
                      single-id map";
        return Check::fail(name, detail, install);
    };
    let shown = path.display();
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) => return Check::fail(name, format!("cannot stat {shown}: {e}"), install),
    };
    let nosuid = nix::sys::statvfs::statvfs(&path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID));
    let setuid_root = meta.mode() & libc::S_ISUID != 0 && meta.uid() == 0;
    if setuid_root && !nosuid {
        Check::pass(name, format!("{shown} (setuid root)"))
    } else if has_file_caps(&path) && !nosuid {
        Check::pass(name, format!("{shown} (file capabilities)"))
    } else {
        let why = if nosuid {
            "its filesystem is mounted nosuid"
        } else {
            "it is neither setuid root nor carries file capabilities"
        };
        let detail =
            format!("{shown} cannot write id maps: {why}; sbx falls back to a single-id map");
        Check::fail(name, detail, format!("reinstall it: {install}"))
    }
}

fn has_file_caps(path: &Path) -> bool {
    let Ok(c_path) = crate::sys::cstr(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks only for the
    // attribute's size, so the kernel writes nothing.
    let size = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size >= 0
}

fn subids(name: &'static str, file: &str, caller: &Caller) -> Check {
    let user = &caller.name;
    let fix =
        format!("`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`");
    let fallback = "sbx falls back to a single-id map (only your own id inside), not fatal";
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return Check::fail(name, format!("cannot read {file} ({e}); {fallback}"), fix),
    };
    let ranges = parse_subids(&text, user, caller.uid);
    if ranges.is_empty() {
        Check::fail(
            name,
            format!("no range for {user} in {file}; {fallback}"),
            fix,
        )
    } else {
        Check::pass(
            name,
            format!("{user} in {file}: {}", describe_ranges(&ranges)),
        )
    }
}

/// "100000-165535 (65536 ids in total)": inclusive ranges and the total count.
fn describe_ranges(ranges: &[SubRange]) -> String {
    let spans: Vec<String> = ranges
        .iter()
        .map(|r| {
            format!(
                "{}-{}",
                r.start,
                u64::from(r.start) + u64::from(r.count) - 1
            )
        })
        .collect();
    let total: u64 = ranges.iter().map(|r| u64::from(r.count)).sum();
    format!("{} ({total} ids in total)", spans.join(", "))
}

fn mount_api() -> Check {
    // The same calls sbx makes for the host rootfs: a recursive detached clone of /, made
    // read-only, from inside a new user and mount namespace.
    let verdict = in_child(|| {
        enter_userns(CloneFlags::CLONE_NEWNS)?;
        let flags = crate::sys::OPEN_TREE_CLONE
            | crate::sys::OPEN_TREE_CLOEXEC
            | crate::sys::AT_RECURSIVE as u32;
        let tree = crate::sys::open_tree(libc::AT_FDCWD, c"/", flags)
            .map_err(|e| format!("open_tree(/, OPEN_TREE_CLONE): {e}"))?;
        crate::sys::mount_setattr(tree.as_fd(), crate::sys::MOUNT_ATTR_RDONLY, true)
            .map_err(|e| format!("mount_setattr(MOUNT_ATTR_RDONLY): {e}"))
    });
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = format!("Linux {}", release.trim());
    match verdict {
        Ok(()) => Check::pass(
            "mount_api",
            format!("open_tree and mount_setattr work in a user namespace ({kernel})"),
        ),
        Err(why) => {
            let fix = if why.contains("ENOSYS") {
                "upgrade to Linux 5.12 or newer (open_tree, move_mount, mount_setattr)"
            } else {
                "sbx needs a recursive read-only clone of / in a user namespace; the error \
                 says what refused it (a security module, or an old kernel: upgrade to 5.12+)"
            };
            let detail = format!("{why} ({kernel}); sbx requires the new mount API");
            Check::fail("mount_api", detail, needs_userns(&why).unwrap_or(fix))
        }
    }
}

/// Child side: a new user namespace plus `more` namespaces. Its errors start with
/// NO_USERNS, so the parent can tell "no user namespace at all" from a later failure.
fn enter_userns(more: CloneFlags) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWUSER | more).map_err(|e| format!("{NO_USERNS}{e}"))
}

const NO_USERNS: &str = "cannot create a user namespace: ";

/// The fix for a probe that failed because user namespaces do not work at all.
fn needs_userns(why: &str) -> Option<&'static str> {
    why.starts_with(NO_USERNS)
        .then_some("user namespaces must work first: see the `userns` check")
}

fn overlay_userns(caller: &Caller) -> Check {
    let name = "overlay_userns";
    let fix = "use a kernel with overlayfs in user namespaces (Linux 5.11+, or Ubuntu's patch); \
               sbx can use fuse-overlayfs instead (see fuse_overlayfs)";
    let scratch = match Scratch::create() {
        Ok(scratch) => scratch,
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot create a scratch directory: {e:#}"),
                fix,
            )
        }
    };
    let (uid, gid, dir) = (caller.uid, caller.gid, scratch.path.clone());
    let verdict = in_child(move || {
        enter_userns(CloneFlags::CLONE_NEWNS)?;
        let write = |file: &str, text: String| {
            fs::write(file, &text).map_err(|e| format!("write {text:?} to {file}: {e}"))
        };
        write("/proc/self/setgroups", "deny".to_string())?;
        write("/proc/self/uid_map", format!("0 {uid} 1"))?;
        write("/proc/self/gid_map", format!("0 {gid} 1"))?;
        let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
        mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
            .map_err(|e| format!("make / private: {e}"))?;
        // Relative paths, so no character of the scratch path can break the option string.
        nix::unistd::chdir(&dir).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
        let options = "lowerdir=lower,upperdir=upper,workdir=work,userxattr";
        mount(
            Some("overlay"),
            "merged",
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
        .map_err(|e| format!("mount overlay ({options}): {e}"))
    });
    drop(scratch);
    match verdict {
        Ok(()) => {
            let base = std::env::temp_dir();
            let detail = format!(
                "overlay with userxattr mounts in a user namespace (tried in {})",
                base.display()
            );
            Check::pass(name, detail)
        }
        Err(why) => {
            let fix = needs_userns(&why).unwrap_or(fix);
            Check::fail(name, why, fix)
        }
    }
}

/// A private directory with lower/upper/work/merged for the overlay probe, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..16u32 {
            let path = base.join(format!(
                "sbx-probe-{}-{nanos}-{attempt}",
                std::process::id()
            ));
            // mkdir never follows a symlink planted at `path`, and fails if anything is there.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let scratch = Scratch { path };
                    for sub in ["lower", "upper", "work", "merged"] {
                        let dir = scratch.path.join(sub);
                        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                    }
                    return Ok(scratch);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("mkdir {}", path.display())),
            }
        }
        anyhow::bail!("no free name for a scratch directory in {}", base.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("sbx: warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Like `remove_dir_all`, but first makes each directory accessible: overlayfs creates its
/// `work/work` with mode 0.
fn remove_tree(path: &Path) -> io::Result<()> {
    if !fs::symlink_metadata(path)?.is_dir() {
        return fs::remove_file(path);
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

fn first_file(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn fuse_overlayfs() -> Check {
    match first_file(&["/usr/bin/fuse-overlayfs", "/bin/fuse-overlayfs"]) {
        Some(path) => Check::pass("fuse_overlayfs", path.display().to_string()),
        None => Check::fail(
            "fuse_overlayfs",
            "not found in /usr/bin or /bin; it is the fallback when kernel overlayfs does not \
             work in a user namespace",
            "`sudo apt-get install fuse-overlayfs` (Debian/Ubuntu) or `sudo dnf install fuse-overlayfs`",
        ),
    }
}

fn slirp4netns() -> Check {
    let Some(path) = first_file(&["/usr/bin/slirp4netns", "/bin/slirp4netns"]) else {
        return Check::fail(
            "slirp4netns",
            "not found in /usr/bin or /bin; needed for network access from a sandbox",
            "`sudo apt-get install slirp4netns` (Debian/Ubuntu) or `sudo dnf install slirp4netns`",
        );
    };
    let version = std::process::Command::new(&path)
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        });
    match version {
        Some(v) if !v.trim().is_empty() => {
            Check::pass("slirp4netns", format!("{} ({})", path.display(), v.trim()))
        }
        _ => Check::pass("slirp4netns", path.display().to_string()),
    }
}

/// A character device the caller must be able to open read-write.
fn device(name: &'static str, path: &str, module: &str) -> Check {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Check::pass(name, format!("{path} opens read-write")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Check::fail(
            name,
            format!("{path} does not exist"),
            format!("load the module: `sudo modprobe {module}`"),
        ),
        Err(e) => {
            let mode = fs::metadata(path)
                .map(|m| format!(" (mode {:04o}, owner uid {})", m.mode() & 0o7777, m.uid()))
                .unwrap_or_default();
            Check::fail(
                name,
                format!("cannot open {path} read-write: {e}{mode}"),
                format!("`sudo chmod 666 {path}`; distributions normally ship it 0666"),
            )
        }
    }
}

fn cgroup_v2(mounts: &[MountInfo]) -> Check {
    let v1 = v1_controllers(&fs::read_to_string("/proc/cgroups").unwrap_or_default());
    match cgroup_layout(mounts, &v1) {
        Ok(detail) => Check::pass("cgroup_v2", detail),
        Err(detail) => Check::fail(
            "cgroup_v2",
            detail,
            "boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`, the default on current \
             distributions)",
        ),
    }
}

/// Where cgroup2 is mounted and whether v1 hierarchies exist beside it; Err when it is not.
fn cgroup_layout(mounts: &[MountInfo], v1_controllers: &[String]) -> Result<String, String> {
    let v2: Vec<&str> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point.as_str())
        .collect();
    let named_v1 = mounts.iter().any(|m| m.fstype == "cgroup");
    let v1 = if v1_controllers.is_empty() {
        "named v1 hierarchies only".to_string()
    } else {
        format!("controllers on cgroup v1: {}", v1_controllers.join(" "))
    };
    match (v2.is_empty(), named_v1 || !v1_controllers.is_empty()) {
        (true, _) => Err(format!(
            "no cgroup2 filesystem mounted (cgroup v1 only; {v1})"
        )),
        (false, false) => Ok(format!("cgroup2 at {} (unified)", v2.join(", "))),
        (false, true) => Ok(format!("cgroup2 at {} (hybrid; {v1})", v2.join(", "))),
    }
}

fn cgroup_delegation(mounts: &[MountInfo], caller: &Caller) -> Check {
    let name = "cgroup_delegation";
    let fix = "run under a systemd user session with delegation (`systemd-run --user --scope -p \
               Delegate=yes sbx ...`) or on a cgroup v2 host";
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(cgroup) = own_cgroup(&self_cgroup) else {
        return Check::fail(name, "no cgroup v2 entry (0::) in /proc/self/cgroup", fix);
    };
    let Some(dir) = cgroup_dir(mounts, &cgroup) else {
        return Check::fail(
            name,
            format!("cgroup {cgroup} is not under a cgroup2 mount"),
            fix,
        );
    };
    let delegated = |d: &Path| {
        let owned = fs::metadata(d).is_ok_and(|m| m.uid() == caller.uid);
        owned && nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok()
    };
    let parent = dir
        .parent()
        .filter(|_| cgroup != "/")
        .map(Path::to_path_buf);
    let target = std::iter::once(dir.clone())
        .chain(parent)
        .find(|d| delegated(d));
    let shown = target.as_deref().unwrap_or(&dir);
    let text = fs::read_to_string(shown.join("cgroup.controllers")).unwrap_or_default();
    let controllers: Vec<&str> = text.split_whitespace().collect();
    let useful = controllers
        .iter()
        .any(|c| ["memory", "pids", "cpu"].contains(c));
    let access = match &target {
        Some(t) => format!(
            "{} is owned and writable by uid {}",
            t.display(),
            caller.uid
        ),
        None => {
            let owner = fs::metadata(&dir)
                .map(|m| format!("owner uid {}, mode {:04o}", m.uid(), m.mode() & 0o7777))
                .unwrap_or_else(|e| e.to_string());
            format!(
                "{} is not writable by uid {} ({owner})",
                dir.display(),
                caller.uid
            )
        }
    };
    let listed = if controllers.is_empty() {
        "none".to_string()
    } else {
        controllers.join(" ")
    };
    let detail = format!("cgroup {cgroup}: {access}; controllers: {listed}");
    match (target.is_some(), useful) {
        (true, true) => Check::pass(name, detail),
        (true, false) => {
            let fix = "none of memory, pids, cpu is available to this cgroup (on a hybrid host \
                       they are bound to cgroup v1): use a cgroup v2 host, or enable them in the \
                       parent's cgroup.subtree_control";
            Check::fail(name, detail, fix)
        }
        (false, _) => Check::fail(name, detail, fix),
    }
}

fn landlock() -> Check {
    let fix = "a kernel with CONFIG_SECURITY_LANDLOCK=y, booted with landlock in its LSM list \
               (`lsm=landlock,...`)";
    if let Some(abi) = landlock_abi() {
        return Check::pass("landlock", format!("ABI {abi}"));
    }
    let detail = match landlock_version() {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            format!("not built into this kernel ({e})")
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            format!("built in but not enabled at boot ({e})")
        }
        Err(e) => format!("unavailable ({e})"),
        Ok(abi) => format!("unexpected ABI {abi}"),
    };
    Check::fail("landlock", detail, fix)
}

/// The Landlock ABI version this kernel offers, or None without Landlock.
pub fn landlock_abi() -> Option<u32> {
    landlock_version().ok().filter(|abi| *abi >= 1)
}

fn landlock_version() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel reads
    // and writes no memory; it only returns the ABI version (or an error).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(u32::try_from(ret).unwrap_or(0))
    }
}

fn seccomp() -> Check {
    let fix = "a kernel with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER";
    // SAFETY: PR_GET_SECCOMP takes no pointers; it only returns this thread's seccomp mode.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if mode < 0 {
        let e = io::Error::last_os_error();
        return Check::fail("seccomp", format!("prctl(PR_GET_SECCOMP): {e}"), fix);
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status_field(&status, "Seccomp").is_none() {
        return Check::fail("seccomp", "no Seccomp field in /proc/self/status", fix);
    }
    let filters = status_field(&status, "Seccomp_filters").unwrap_or("?");
    let state = match mode {
        0 => "mode 0: sbx itself runs unfiltered".to_string(),
        _ => format!(
            "mode {mode}: sbx already runs under {filters} inherited filter(s); new ones stack"
        ),
    };
    let actions = fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let detail = match actions.trim() {
        "" => state,
        list => format!("{state}; actions: {list}"),
    };
    Check::pass("seccomp", detail)
}

/// The value of `Key:` in /proc/PID/status text.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// Runs `body` in a forked child and returns its verdict: Ok, or the message it sent back.
/// A child that does not finish within two seconds is killed and reaped.
fn in_child(body: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: sbx starts no threads before or during `sbx check`, so the child may allocate
    // and do anything; it never returns into the caller's frames, since it ends with _exit.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(read_end);
            let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let code = match verdict {
                Ok(Ok(())) => 0,
                Ok(Err(msg)) => {
                    let _ = File::from(write_end).write_all(msg.as_bytes());
                    1
                }
                Err(_) => 2,
            };
            // SAFETY: _exit ends the child at once, without running exit handlers or
            // flushing stdio buffers copied from the parent.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let message = read_verdict(read_end, Duration::from_secs(2));
            if message.is_none() {
                let _ = kill(child, Signal::SIGKILL);
            }
            let status = reap(child);
            match (status, message) {
                (_, None) => Err("no answer from the probe's child within 2 s".to_string()),
                (Ok(WaitStatus::Exited(_, 0)), _) => Ok(()),
                (Ok(WaitStatus::Exited(_, 1)), Some(msg)) if !msg.is_empty() => Err(msg),
                (Ok(other), _) => Err(format!("probe child ended with {other:?}")),
                (Err(e), _) => Err(format!("waitpid: {e}")),
            }
        }
    }
}

/// Everything the child wrote before closing its end, or None after `limit`.
fn read_verdict(fd: OwnedFd, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut file = File::from(fd);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(_) => {}
        }
        match file.read(&mut chunk) {
            Ok(0) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn reap(child: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// One mount from /proc/self/mountinfo, with octal escapes decoded.
#[derive(Debug, PartialEq, Eq)]
struct MountInfo {
    root: String,
    mount_point: String,
    fstype: String,
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(MountInfo {
                root: unescape(fields[3]),
                mount_point: unescape(fields[4]),
                fstype: (*fields.get(sep + 1)?).to_string(),
            })
        })
        .collect()
}

/// Decodes the kernel's `\NNN` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) if bytes[i] == b'\\' => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path from /proc/self/cgroup text (the `0::PATH` line).
fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().to_string())
}

/// The directory of cgroup `path` under the first cgroup2 mount whose root contains it.
fn cgroup_dir(mounts: &[MountInfo], path: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .find_map(|m| {
            let rest = if m.root == "/" {
                path
            } else {
                path.strip_prefix(m.root.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))?
            };
            let dir = Path::new(&m.mount_point);
            Some(match rest.trim_start_matches('/') {
                "" => dir.to_path_buf(),
                rest => dir.join(rest),
            })
        })
}

/// Controllers bound to a cgroup v1 hierarchy, from /proc/cgroups text.
fn v1_controllers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bound = f.len() >= 4 && f[1] != "0" && f[3] == "1";
            bound.then(|| f[0].to_string())
        })
        .collect()
}

fn render_human(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let status = if c.ok { "ok  " } else { "MISSING" };
        out.push_str(&format!("{status} {:width$}  {}\n", c.name, c.detail));
        if let (false, Some(fix)) = (c.ok, &c.fix) {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    out
}

/// One JSON object keyed by check name, in report order (serde_json's map would sort them).
fn render_json(checks: &[Check]) -> Result<String> {
    #[derive(Serialize)]
    struct Entry<'a> {
        ok: bool,
        detail: &'a str,
        fix: Option<&'a str>,
    }
    let mut lines = Vec::with_capacity(checks.len());
    for c in checks {
        let entry = Entry {
            ok: c.ok,
            detail: &c.detail,
            fix: c.fix.as_deref(),
        };
        let key = serde_json::to_string(c.name).context("encode a check name")?;
        let value = serde_json::to_string(&entry).context("encode a check result")?;
        lines.push(format!("  {key}: {value}"));
    }
    Ok(format!("{{\n{}\n}}\n", lines.join(",\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

    fn check(name: &'static str, ok: bool, fix: Option<&str>) -> Check {
        let detail = format!("{name} says \"hi\"");
        let fix = fix.map(str::to_string);
        Check {
            name,
            ok,
            detail,
            fix,
        }
    }

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text =
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw\n\
                    garbage line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            [MountInfo {
                root: "/mnt1".into(),
                mount_point: "/mnt two".into(),
                fstype: "ext3".into(),
            }]
        );
        assert_eq!(parse_mountinfo(HYBRID)[3].fstype, "cgroup2");
        assert_eq!(unescape("a\\134b\\011c\\12"), "a\\b\tc\\12");
    }

    #[test]
    fn finds_own_cgroup_v2_path() {
        let text = "4:memory:/process_api/x\n1:cpu:/\n0::/user.slice/user-1000.slice/app.scope\n";
        assert_eq!(
            own_cgroup(text).as_deref(),
            Some("/user.slice/user-1000.slice/app.scope")
        );
        assert_eq!(own_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(own_cgroup("1:name=systemd:/\n"), None);
    }

    #[test]
    fn resolves_cgroup_directory_under_the_cgroup2_mount() {
        let hybrid = parse_mountinfo(HYBRID);
        assert_eq!(
            cgroup_dir(&hybrid, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup_dir(&hybrid, "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/a/b"))
        );
        let nested = parse_mountinfo("1 0 0:5 /a /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup_dir(&nested, "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/b"))
        );
        assert_eq!(cgroup_dir(&nested, "/ab"), None);
        assert_eq!(cgroup_dir(&parse_mountinfo(HYBRID)[..3], "/"), None);
    }

    #[test]
    fn tells_unified_hybrid_and_v1_apart() {
        let proc_cgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                            cpu\t1\t1\t1\nmemory\t4\t23\t1\nhugetlb\t0\t1\t1\npids\t8\t1\t0\n";
        let v1 = v1_controllers(proc_cgroups);
        assert_eq!(v1, ["cpu", "memory"]);
        let hybrid = cgroup_layout(&parse_mountinfo(HYBRID), &v1);
        assert_eq!(
            hybrid.as_deref(),
            Ok("cgroup2 at /sys/fs/cgroup/unified (hybrid; controllers on cgroup v1: cpu memory)")
        );
        let unified = parse_mountinfo("1 0 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup_layout(&unified, &[]).as_deref(),
            Ok("cgroup2 at /sys/fs/cgroup (unified)")
        );
        let v1_only = &parse_mountinfo(HYBRID)[..3];
        assert!(cgroup_layout(v1_only, &v1).is_err());
    }

    #[test]
    fn names_every_blocking_sysctl() {
        let blockers = userns_blockers(|key| match key {
            "user/max_user_namespaces" => Some("0\n".into()),
            "kernel/apparmor_restrict_unprivileged_userns" => Some("1\n".into()),
            _ => None,
        });
        let settings: Vec<&str> = blockers.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            settings,
            [
                "user.max_user_namespaces = 0",
                "kernel.apparmor_restrict_unprivileged_userns = 1"
            ]
        );
        assert!(blockers[1]
            .1
            .contains("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"));
        assert!(userns_blockers(|_| Some("1".into())).len() == 1);
        assert!(userns_blockers(|_| None).is_empty());
    }

    #[test]
    fn describes_subordinate_ranges() {
        let ranges = [
            SubRange {
                start: 100000,
                count: 65536,
            },
            SubRange {
                start: 300000,
                count: 1,
            },
        ];
        assert_eq!(
            describe_ranges(&ranges),
            "100000-165535, 300000-300000 (65537 ids in total)"
        );
    }

    #[test]
    fn reads_status_fields_exactly() {
        let status = "Name:\tsbx\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Seccomp_filters"), Some("3"));
        assert_eq!(status_field(status, "Secc"), None);
    }

    #[test]
    fn human_report_has_one_line_per_check_and_fixes_for_gaps() {
        let checks = [
            check("userns", true, None),
            check("cgroup_delegation", false, Some("do it")),
        ];
        assert_eq!(
            render_human(&checks),
            "ok   userns             userns says \"hi\"\n\
             MISSING cgroup_delegation  cgroup_delegation says \"hi\"\n    fix: do it\n"
        );
    }

    #[test]
    fn json_report_keeps_order_and_escapes() {
        let checks = [
            check("userns", true, None),
            check("mount_api", false, Some("upgrade")),
            check("cgroup_v2", true, None),
        ];
        let text = render_json(&checks).expect("render");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["userns"]["ok"], true);
        assert_eq!(value["userns"]["fix"], serde_json::Value::Null);
        assert_eq!(value["userns"]["detail"], "userns says \"hi\"");
        assert_eq!(value["mount_api"]["fix"], "upgrade");
        let at = |key: &str| text.find(&format!("\"{key}\"")).expect("key present");
        assert!(at("userns") < at("mount_api") && at("mount_api") < at("cgroup_v2"));
    }

    #[test]
    fn exit_code_needs_userns_and_mount_api() {
        let all = [check("userns", true, None), check("mount_api", true, None)];
        assert_eq!(exit_code(&all), 0);
        let no_mount = [check("userns", true, None), check("mount_api", false, None)];
        assert_eq!(exit_code(&no_mount), 1);
        assert_eq!(exit_code(&all[..1]), 1);
    }

    #[test]
    fn scratch_directory_is_removed_with_unreadable_subdirectories() {
        let scratch = Scratch::create().expect("scratch");
        let path = scratch.path.clone();
        let locked = path.join("work/work");
        fs::create_dir(&locked).expect("mkdir");
        fs::write(path.join("upper/file"), "x").expect("write");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        drop(scratch);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
