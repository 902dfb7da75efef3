//! Looking at the host.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// A process on the host, as /proc shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub argv: Vec<String>,
}

/// Every process whose command line (any argument) contains `marker`, except this test
/// process itself.
pub fn processes_with(marker: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            // The process may be gone by now; then it is not a leftover.
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.iter()
                .any(|a| a.contains(marker))
                .then_some(Proc { pid, argv })
        })
        .collect()
}

/// Waits until some process matches `pred` (within `timeout`); returns it or fails.
#[track_caller]
pub fn wait_for_process(marker: &str, pred: impl Fn(&Proc) -> bool, timeout: Duration) -> Proc {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = processes_with(marker).into_iter().find(|p| pred(p)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no process with {marker:?} appeared within {timeout:?}; processes with it: {:?}",
            processes_with(marker)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until no process has `marker` in its command line; fails listing the survivors
/// if some are still there after `timeout`.
#[track_caller]
pub fn assert_no_process_with(marker: &str, timeout: Duration) {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes outlived the sandbox ({timeout:?} after it ended): {left:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One line of a mountinfo file: the mount point and its per-mount options.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountEntry {
    pub mount_point: String,
    pub options: String,
    pub line: String,
}

/// Parses mountinfo text (`/proc/PID/mountinfo`), unescaping octal escapes in the mount
/// point.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Some(MountEntry {
                mount_point: unescape_octal(fields.get(4)?),
                options: fields.get(5)?.to_string(),
                line: line.to_string(),
            })
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Guards the host's mount table within one test binary (tests run as its threads): a test
/// that mounts on the host itself (a FUSE filesystem) holds it exclusively from mount to
/// unmount, and every snapshot-and-compare of the table ([`HostState`]) holds it shared,
/// so a test's own mount never shows up as one a sandbox left behind. A thread must not
/// take it twice.
static HOST_MOUNT_TABLE: RwLock<()> = RwLock::new(());

/// Held while this test mounts something on the host (see [`HOST_MOUNT_TABLE`]).
pub fn mounting_on_the_host() -> RwLockWriteGuard<'static, ()> {
    HOST_MOUNT_TABLE
        .write()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Held while this test compares snapshots of the host's mount table.
pub fn reading_host_mounts() -> RwLockReadGuard<'static, ()> {
    HOST_MOUNT_TABLE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The host's mount table as this test process sees it (it runs in the host's mount
/// namespace, where sbx must never leave a mount). Compare two snapshots only while
/// holding [`reading_host_mounts`], as [`HostState`] does.
pub fn host_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Entries of the temporary directory owned by the current user or one of its
/// subordinate uids (what a sandbox of ours could create), excluding the harness's own.
pub fn tmp_entries() -> BTreeSet<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let tmp = std::env::temp_dir();
    let me = uid();
    let ranges = subordinate_ranges("/etc/subuid");
    let ours = |owner: u32| {
        owner == me
            || ranges
                .iter()
                .any(|&(start, count)| (start..start + count).contains(&u64::from(owner)))
    };
    let Ok(entries) = fs::read_dir(&tmp) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(PREFIX))
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| ours(m.uid())))
        .map(|e| e.path())
        .collect()
}

/// A snapshot of what a run could leave behind on the host: mounts and temp files. It
/// holds the mount table lock until dropped, so no test of this binary mounts on the host
/// in between.
pub struct HostState {
    mounts: BTreeSet<String>,
    tmp: BTreeSet<PathBuf>,
    _mount_table: RwLockReadGuard<'static, ()>,
}

impl HostState {
    pub fn capture() -> HostState {
        let guard = reading_host_mounts();
        HostState {
            mounts: host_mounts(),
            tmp: tmp_entries(),
            _mount_table: guard,
        }
    }

    /// Fails if mounts or temp entries appeared since the snapshot.
    #[track_caller]
    pub fn assert_nothing_new(&self) {
        let mounts = host_mounts();
        let new_mounts: Vec<&String> = mounts.difference(&self.mounts).collect();
        assert!(
            new_mounts.is_empty(),
            "new mounts on the host after the run: {new_mounts:#?}"
        );
        let tmp = tmp_entries();
        let new_tmp: Vec<&PathBuf> = tmp.difference(&self.tmp).collect();
        assert!(
            new_tmp.is_empty(),
            "new entries in {} after the run: {new_tmp:?}",
            std::env::temp_dir().display()
        );
    }
}

/// Reads /etc/subuid or /etc/subgid and returns the ranges `(start, count)` that belong to
/// the current user (by name or by uid), as sbx should.
pub fn subordinate_ranges(file: &str) -> Vec<(u64, u64)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let (name, id) = (user_name(), uid().to_string());
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?;
            let start = f.next()?.parse().ok()?;
            let count = f.next()?.parse().ok()?;
            (owner == name || owner == id).then_some((start, count))
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// Parses `/proc/PID/uid_map` text into `(inside, outside, count)` lines.
pub fn parse_id_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect()
}

/// The file at `path` exists as a static binary we can copy (no ELF interpreter), as
/// Debian's busybox-static installs /bin/busybox.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = fs::read(path) else {
        return false;
    };
    // ELF64 little-endian: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        // PT_INTERP = 3: a dynamically linked program names its loader.
        data.get(off..off + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// Mount points the default profile adds over the host's own paths: the hidden runtime
/// directories and the covers over host unix sockets (`/proc/net/unix`).
pub fn hides_host_path(mount_point: &str) -> bool {
    let path = Path::new(mount_point);
    if ["/run/user", "/run/dbus"]
        .iter()
        .any(|r| path.starts_with(r))
    {
        return true;
    }
    fs::read_to_string("/proc/net/unix").is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(7) == Some(mount_point))
    })
}

/// A map read inside a sandbox, in host ids. Nested in the kept user namespace (the
/// default), a sandbox sees its map's outside ids as the holder's ids; they are turned into
/// host ids through the holder's own map, as the kernel does. `file` is `uid_map` or
/// `gid_map`. Without a holder (per-run mode) the map is returned as it is.
pub fn in_host_ids(map: &[(u64, u64, u64)], file: &str) -> Vec<(u64, u64, u64)> {
    let runtime = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(r) => std::path::PathBuf::from(r).join("sbx"),
        None => home().join(".local/share/sbx/run"),
    };
    let holder = fs::read_to_string(runtime.join(".holder.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["pid"].as_i64())
        .and_then(|pid| fs::read_to_string(format!("/proc/{pid}/{file}")).ok());
    let (Some(holder), false) = (
        holder,
        std::env::var("SBX_USERNS").is_ok_and(|v| v == "per-run"),
    ) else {
        return map.to_vec();
    };
    let holder = parse_id_map(&holder);
    let mut out = Vec::new();
    for &(inside, outside, count) in map {
        for &(h_in, h_out, h_count) in &holder {
            let (a, b) = (outside.max(h_in), (outside + count).min(h_in + h_count));
            if a < b {
                out.push((inside + (a - outside), h_out + (a - h_in), b - a));
            }
        }
    }
    out
}

/// The cgroup hierarchies of this host: for each mount with controllers, its controllers
/// ("" for the cgroup v2 one) and mount point; a named v1 hierarchy (`name=systemd`) is
/// left out. One per hierarchy: the first mount.
pub fn cgroup_hierarchies() -> Vec<(Vec<String>, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<(Vec<String>, PathBuf)> = Vec::new();
    for m in parse_mountinfo(&text) {
        let Some((_, post)) = m.line.split_once(" - ") else {
            continue;
        };
        let post: Vec<&str> = post.split_whitespace().collect();
        let controllers: Vec<String> = match post.first() {
            Some(&"cgroup2") => vec![String::new()],
            Some(&"cgroup") => post
                .get(2)
                .unwrap_or(&"")
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('=') && !o.starts_with("no"))
                .filter(|o| {
                    !matches!(
                        *o,
                        "relatime" | "xattr" | "clone_children" | "cpuset_v2_mode"
                    )
                })
                .map(str::to_string)
                .collect(),
            _ => continue,
        };
        if controllers.is_empty() || out.iter().any(|(c, _)| *c == controllers) {
            continue;
        }
        out.push((controllers, PathBuf::from(m.mount_point)));
    }
    out
}

/// The directory of `pid`'s cgroup in the hierarchy with `controller` ("" for cgroup v2),
/// from /proc/PID/cgroup (seen from this process's cgroup namespace).
pub fn cgroup_dir_of(pid: i32, controller: &str) -> Option<PathBuf> {
    let (_, mount) = cgroup_hierarchies()
        .into_iter()
        .find(|(c, _)| c.iter().any(|c| c == controller))?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            names.is_empty()
        } else {
            names.split(',').any(|n| n == controller)
        };
        matches.then(|| mount.join(path.trim().trim_start_matches('/')))
    })
}
