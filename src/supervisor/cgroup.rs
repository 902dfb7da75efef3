//! cgroup v2 limits through delegation: the sandbox gets a leaf of its own, created and
//! configured by the supervisor before the child is released, beside the caller's own
//! cgroup inside the subtree delegated to the caller. Never any cgroup v1 write (the v1
//! hierarchies are only parsed here, for sbx-oci's `oci/cgroups`).
//!
//! The leaf is removed when the run ends; if sbx itself is killed, a tiny janitor process
//! forked beforehand notices (its pipe from sbx closes), waits for the leaf to empty and
//! removes it, then exits.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::unistd::{AccessFlags, Pid};

use crate::plan::limits::CgroupLimits;
pub use crate::plan::limits::Site;

/// Where the caller's cgroup lies: the cgroup2 mount and the caller's own cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupHost {
    pub mount: PathBuf,
    /// As /proc/self/cgroup names it (`/user.slice/...`).
    pub own: String,
}

/// This process's cgroup2 mount and cgroup, or what is missing (read only).
pub fn host() -> std::result::Result<CgroupHost, String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mount = cgroup2_mount(&read("/proc/self/mountinfo"))
        .ok_or("this host has no cgroup v2 hierarchy mounted (a cgroup v1 host)")?;
    let own = own_cgroup(&read("/proc/self/cgroup"))
        .ok_or("this process is in no cgroup v2 cgroup (a cgroup v1 host)")?;
    Ok(CgroupHost { mount, own })
}

/// Finds the delegated parent of the caller's cgroup, or says exactly what is missing;
/// changes nothing (for `sbx check`).
pub fn probe_site(needed: &[&str]) -> std::result::Result<Site, String> {
    locate(&host()?, needed).map(|(site, _)| site)
}

/// The delegated parent of the caller's cgroup, and which of `needed` its
/// `cgroup.subtree_control` does not enable yet (`enable` does that, in `prepare`). Reads
/// only.
pub fn locate(
    host: &CgroupHost,
    needed: &[&str],
) -> std::result::Result<(Site, Vec<String>), String> {
    let current = host.mount.join(host.own.trim_start_matches('/'));
    // Beside our own cgroup: ours holds our process, so by the no-internal-processes rule
    // it cannot also have a child with controllers enabled.
    let parent = match current.parent() {
        Some(p) if host.own != "/" => p.to_path_buf(),
        _ => host.mount.clone(),
    };
    let missing = check_site(&parent, needed)?;
    Ok((Site { parent }, missing))
}

const FIX: &str = "run sbx in a delegated cgroup, as systemd does for a user session \
                   (`systemd-run --user --scope -p Delegate=yes sbx run ...`)";

fn check_site(parent: &Path, needed: &[&str]) -> std::result::Result<Vec<String>, String> {
    let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&&str> = needed
        .iter()
        .filter(|c| !available.split_whitespace().any(|a| a == **c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the controllers {missing:?} are not available in {} (available: {:?}); on a \
             hybrid cgroup v1 host boot with systemd.unified_cgroup_hierarchy=1, else {FIX}",
            parent.display(),
            available.trim()
        ));
    }
    let writable = |p: &Path| nix::unistd::access(p, AccessFlags::W_OK).is_ok();
    if !writable(parent) || !writable(&parent.join("cgroup.procs")) {
        return Err(format!(
            "the cgroup {} above yours is not delegated to you (not writable); {FIX}",
            parent.display()
        ));
    }
    // Enabled for the parent's children (ours may enable what its parent offers).
    let enabled =
        std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    Ok(needed
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| c.to_string())
        .collect())
}

/// Enables `controllers` for the children of the site (`prepare` does this, just before
/// the run); the error says what failed and how to fix it.
pub fn enable(site: &Site, controllers: &[String]) -> std::result::Result<(), String> {
    if controllers.is_empty() {
        return Ok(());
    }
    let control = site.parent.join("cgroup.subtree_control");
    let want: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    std::fs::write(&control, want.join(" ")).map_err(|e| {
        format!(
            "cannot enable {} in {}: {e}; {FIX}",
            want.join(" "),
            control.display()
        )
    })
}

/// The mount point of the cgroup2 filesystem (e.g. /sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on a hybrid host).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The `0::/path` entry of /proc/self/cgroup.
pub fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|path| path.trim().to_string())
}

/// The cgroup v1 controllers sbx-oci knows; a v1 mount carrying none of them (a named
/// hierarchy such as `name=systemd`) is left out.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
];

/// One mounted cgroup v1 hierarchy and this process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Its controllers (`cpu`, or `cpu` and `cpuacct` mounted together).
    pub controllers: Vec<String>,
    pub mount: PathBuf,
    /// The cgroup the mount shows at its mount point (`/` but in a container).
    pub root: String,
    /// As /proc/self/cgroup names it, from the hierarchy's root.
    pub own: String,
}

impl V1Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The directory of this process's own cgroup.
    pub fn own_dir(&self) -> PathBuf {
        let below = self
            .own
            .strip_prefix(self.root.trim_end_matches('/'))
            .unwrap_or(&self.own);
        self.mount.join(below.trim_start_matches('/'))
    }
}

/// The cgroup v1 hierarchies with controllers, from /proc/self/mountinfo and
/// /proc/self/cgroup; the first mount of each (the same hierarchy may be mounted twice).
pub fn v1_hierarchies(mountinfo: &str, cgroup: &str) -> Vec<V1Hierarchy> {
    let mut out: Vec<V1Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let options = post.nth(1).unwrap_or_default();
        let controllers: Vec<String> = options
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            .map(str::to_string)
            .collect();
        let mut pre = pre.split_whitespace();
        let (Some(root), Some(mount)) = (pre.nth(3), pre.next()) else {
            continue;
        };
        if controllers.is_empty() || out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        let own = cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mut names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
            names.sort_unstable();
            let mut want: Vec<&str> = controllers.iter().map(String::as_str).collect();
            want.sort_unstable();
            (names == want).then(|| path.trim().to_string())
        });
        out.push(V1Hierarchy {
            controllers,
            mount: PathBuf::from(mount),
            root: root.to_string(),
            own: own.unwrap_or_else(|| "/".into()),
        });
    }
    out
}

/// The sandbox's own cgroup.
pub struct Leaf {
    pub path: PathBuf,
    limits: CgroupLimits,
    janitor: Option<(Pid, OwnedFd)>,
}

impl Leaf {
    /// Creates and configures the leaf; the command never runs without its limits.
    pub fn create(site: &Site, limits: &CgroupLimits) -> Result<Leaf> {
        let path = site.parent.join(format!("sbx-{}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("create the cgroup {}", path.display()))?;
        let mut leaf = Leaf {
            path,
            limits: limits.clone(),
            janitor: None,
        };
        leaf.configure()?;
        leaf.janitor = Some(spawn_janitor(&leaf.path)?);
        Ok(leaf)
    }

    fn configure(&self) -> Result<()> {
        let l = &self.limits;
        let mut writes: Vec<(&str, String)> = Vec::new();
        if let Some(m) = l.memory {
            writes.push(("memory.max", m.to_string()));
        }
        if let Some(m) = l.memory_swap {
            writes.push(("memory.swap.max", m.to_string()));
        }
        if let Some((quota, period)) = l.cpu {
            writes.push(("cpu.max", format!("{quota} {period}")));
        }
        if let Some(n) = l.pids {
            writes.push(("pids.max", n.to_string()));
        }
        if let Some(w) = l.io_weight {
            writes.push(("io.weight", format!("default {w}")));
        }
        for (file, value) in writes {
            std::fs::write(self.path.join(file), &value).with_context(|| {
                format!("write {value:?} to {}", self.path.join(file).display())
            })?;
        }
        Ok(())
    }

    /// Moves the (still waiting) child into the leaf.
    pub fn add(&self, pid: Pid) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.as_raw().to_string())
            .with_context(|| format!("move the sandbox into {}", procs.display()))
    }

    /// One line per limit that was hit, read from memory.events and pids.events.
    pub fn report(&self) -> Vec<String> {
        let count = |file: &str, key: &str| -> u64 {
            std::fs::read_to_string(self.path.join(file))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        let mut lines = Vec::new();
        if let Some(m) = self.limits.memory {
            if count("memory.events", "oom_kill ") > 0 {
                lines.push(format!("killed: out of memory (limit {})", human(m)));
            }
        }
        if let Some(n) = self.limits.pids {
            if count("pids.events", "max ") > 0 {
                lines.push(format!("pids limit {n} reached"));
            }
        }
        lines
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        remove_when_empty(&self.path, Duration::from_secs(2));
        if let Some((pid, pipe)) = self.janitor.take() {
            drop(pipe);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

fn human(bytes: u64) -> String {
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

fn remove_when_empty(path: &Path, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return,
        }
    }
}

/// A child that outlives sbx only to remove the leaf if sbx is killed: it waits for EOF on
/// a pipe whose write end only sbx holds.
fn spawn_janitor(leaf: &Path) -> Result<(Pid, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: sbx is single-threaded here; the child only makes system calls and exits.
    match unsafe { nix::unistd::fork() }.context("fork the cgroup janitor")? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(read);
            Ok((child, write))
        }
        nix::unistd::ForkResult::Child => {
            drop(write);
            janitor(leaf, read)
        }
    }
}

fn janitor(leaf: &Path, pipe: OwnedFd) -> ! {
    let keep = pipe.as_raw_fd() as u32;
    let _ = crate::sys::close_range(0, keep.saturating_sub(1), 0);
    let _ = crate::sys::close_range(keep + 1, u32::MAX, 0);
    let _ = nix::unistd::setsid();
    let mut byte = [0u8; 1];
    while matches!(nix::unistd::read(&pipe, &mut byte), Ok(n) if n > 0) {}
    remove_when_empty(leaf, Duration::from_secs(30));
    crate::sys::exit_now(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_and_own_cgroup() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
        assert_eq!(
            own_cgroup("1:memory:/x\n0::/user.slice/a.scope\n").as_deref(),
            Some("/user.slice/a.scope")
        );
        assert_eq!(own_cgroup("1:memory:/x\n"), None);
    }

    #[test]
    fn finds_the_v1_hierarchies_and_own_cgroups() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                         32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                         35 31 0:32 /lxc/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                         42 31 0:29 / /mnt/again rw - cgroup cgroup rw,cpu,cpuacct\n";
        let cgroup = "9:name=systemd:/\n4:memory:/lxc/c1/app\n1:cpuacct,cpu:/a b\n0::/\n";
        let found = v1_hierarchies(mountinfo, cgroup);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].controllers, ["cpu", "cpuacct"]);
        assert!(found[0].has("cpuacct") && !found[0].has("memory"));
        assert_eq!(found[0].own, "/a b");
        assert_eq!(
            found[0].own_dir(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a b")
        );
        // A mount of a hierarchy's subtree (in a container): below that root.
        assert_eq!(found[1].root, "/lxc/c1");
        assert_eq!(
            found[1].own_dir(),
            PathBuf::from("/sys/fs/cgroup/memory/app")
        );
        assert!(v1_hierarchies(
            "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n"
        )
        .is_empty());
    }

    #[test]
    fn leaf_is_configured_against_a_fake_tree() {
        let dir = std::env::temp_dir().join(format!("sbx-cgroup-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let site = Site {
            parent: dir.clone(),
        };
        let limits = CgroupLimits {
            memory: Some(256 << 20),
            cpu: Some((150_000, 100_000)),
            pids: Some(64),
            io_weight: Some(50),
            ..Default::default()
        };
        let leaf = Leaf {
            path: site.parent.join("sbx-test"),
            limits: limits.clone(),
            janitor: None,
        };
        std::fs::create_dir(&leaf.path).unwrap();
        leaf.configure().unwrap();
        let read = |f: &str| std::fs::read_to_string(leaf.path.join(f)).unwrap();
        assert_eq!(read("memory.max"), "268435456");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("io.weight"), "default 50");
        std::fs::write(
            leaf.path.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(leaf.path.join("pids.events"), "max 7\n").unwrap();
        assert_eq!(
            leaf.report(),
            [
                "killed: out of memory (limit 256M)",
                "pids limit 64 reached"
            ]
        );
        for f in [
            "memory.max",
            "cpu.max",
            "pids.max",
            "io.weight",
            "memory.events",
            "pids.events",
        ] {
            std::fs::remove_file(leaf.path.join(f)).unwrap();
        }
        drop(leaf);
        assert!(!dir.join("sbx-test").exists(), "removed on drop");
        std::fs::remove_dir(dir).unwrap();
    }
}
