//! `linux.resources` as the cgroup v2 files runc writes (libcontainer/cgroups/fs2), and
//! `linux.sysctl` checked as runc checks it. Pure: the caller writes the files into the
//! container's leaf, in order (later entries win: `unified` comes last, as in runc).
//!
//! Fields with no cgroup v2 meaning are ignored as runc ignores them on v2, and named by
//! `ignored` so the caller can warn: memory.kernel, kernelTCP, swappiness,
//! disableOOMKiller, useHierarchy, checkBeforeUpdate; cpu.realtimeRuntime and
//! realtimePeriod; blockIO.leafWeight; network (classID, priorities: net_cls, net_prio).
//!
//! `devices`: cgroup v2 enforces them with a BPF_PROG_TYPE_CGROUP_DEVICE program, which
//! only a process privileged in the initial user namespace can attach. `device_access`
//! says what sbx-oci does instead: in a user namespace no device node can be created
//! (mknod) or used from a filesystem mounted there, so the only devices are those bound
//! or created by the runtime from `linux.devices`: the rules hold by construction. Without
//! one, as root with a cgroup, sbx-oci attaches the program (`oci/devices`); otherwise
//! deny-all with the engines' usual allows is kept by dropping CAP_MKNOD; rules allowing
//! everything (privileged containers) need nothing.

use std::path::PathBuf;

use anyhow::{bail, Result};
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType, LinuxResources, LinuxThrottleDevice,
};

/// The files and values to write, in order. `io.bfq.weight` exists only where the bfq
/// scheduler is loaded: the writer skips it when it is missing (runc then falls back to
/// `io.weight`, which this list carries too).
pub fn cgroup_files(res: &LinuxResources) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut put = |file: &str, value: String| out.push((file.to_string(), value));
    pids(res, &mut put);
    memory(res, &mut put)?;
    io(res, &mut put)?;
    cpu(res, &mut put);
    hugetlb(res, &mut put)?;
    rdma(res, &mut put)?;
    unified(res, &mut put)?;
    Ok(out)
}

fn pids(res: &LinuxResources, put: &mut impl FnMut(&str, String)) {
    if let Some(pids) = res.pids() {
        match pids.limit() {
            0 => {}
            n if n < 0 => put("pids.max", "max".into()),
            n => put("pids.max", n.to_string()),
        }
    }
}

/// Swap first: runc writes it before lowering memory.max.
fn memory(res: &LinuxResources, put: &mut impl FnMut(&str, String)) -> Result<()> {
    let Some(mem) = res.memory() else {
        return Ok(());
    };
    let limit = mem.limit().unwrap_or(0);
    if let Some(swap) = swap_max(mem.swap().unwrap_or(0), limit)? {
        put("memory.swap.max", swap);
    }
    if let Some(v) = max_or_number(limit, "memory.limit")? {
        put("memory.max", v);
    }
    if let Some(v) = max_or_number(mem.reservation().unwrap_or(0), "memory.reservation")? {
        put("memory.low", v);
    }
    Ok(())
}

fn io(res: &LinuxResources, put: &mut impl FnMut(&str, String)) -> Result<()> {
    let Some(io) = res.block_io() else {
        return Ok(());
    };
    if let Some(w) = io.weight().filter(|&w| w != 0) {
        check_range(u64::from(w), 10, 1000, "blockIO.weight")?;
        put("io.bfq.weight", w.to_string());
        put("io.weight", io_weight(w).to_string());
    }
    for d in io.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            check_range(u64::from(w), 10, 1000, "blockIO.weightDevice")?;
            put("io.bfq.weight", format!("{}:{} {w}", d.major(), d.minor()));
        }
    }
    let throttles = [
        ("rbps", io.throttle_read_bps_device()),
        ("wbps", io.throttle_write_bps_device()),
        ("riops", io.throttle_read_iops_device()),
        ("wiops", io.throttle_write_iops_device()),
    ];
    for (key, list) in throttles {
        for d in list.iter().flatten() {
            put("io.max", throttle(key, d));
        }
    }
    Ok(())
}

fn hugetlb(res: &LinuxResources, put: &mut impl FnMut(&str, String)) -> Result<()> {
    for limit in res.hugepage_limits().iter().flatten() {
        let size = limit.page_size();
        if !valid_page_size(size) {
            bail!(
                "linux.resources.hugepageLimits: page size {size:?}: use a size such as 2MB or 1GB"
            );
        }
        let value = if limit.limit() < 0 {
            "max".to_string()
        } else {
            limit.limit().to_string()
        };
        put(&format!("hugetlb.{size}.max"), value);
    }
    Ok(())
}

fn rdma(res: &LinuxResources, put: &mut impl FnMut(&str, String)) -> Result<()> {
    let mut rdma: Vec<_> = res.rdma().iter().flatten().collect();
    rdma.sort_by(|a, b| a.0.cmp(b.0));
    for (device, limits) in rdma {
        if device.is_empty() || device.contains(char::is_whitespace) {
            bail!("linux.resources.rdma: device name {device:?}");
        }
        let mut line = device.clone();
        if let Some(n) = limits.hca_handles() {
            line += &format!(" hca_handle={n}");
        }
        if let Some(n) = limits.hca_objects() {
            line += &format!(" hca_object={n}");
        }
        put("rdma.max", line);
    }
    Ok(())
}

/// Last, so that it wins over the fields (runc writes it last too); file names only.
fn unified(res: &LinuxResources, put: &mut impl FnMut(&str, String)) -> Result<()> {
    let mut unified: Vec<_> = res.unified().iter().flatten().collect();
    unified.sort();
    for (file, value) in unified {
        if file.is_empty() || file.contains(['/', '\0']) || file == "." || file == ".." {
            bail!("linux.resources.unified: {file:?} must be a file name of the cgroup, such as memory.high");
        }
        put(file, value.clone());
    }
    Ok(())
}

fn cpu(res: &LinuxResources, put: &mut impl FnMut(&str, String)) {
    let Some(cpu) = res.cpu() else {
        return;
    };
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        put("cpu.weight", cpu_weight(shares).to_string());
    }
    if let Some(idle) = cpu.idle() {
        put("cpu.idle", idle.to_string());
    }
    let (quota, period) = (cpu.quota().unwrap_or(0), cpu.period().unwrap_or(0));
    if quota != 0 || period != 0 {
        let quota = if quota > 0 {
            quota.to_string()
        } else {
            "max".to_string()
        };
        // The kernel's default period.
        let period = if period == 0 { 100_000 } else { period };
        put("cpu.max", format!("{quota} {period}"));
    }
    if let Some(burst) = cpu.burst() {
        put("cpu.max.burst", burst.to_string());
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        put("cpuset.cpus", cpus.to_string());
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        put("cpuset.mems", mems.to_string());
    }
}

/// The set fields that have no cgroup v2 meaning, for a warning.
pub fn ignored(res: &LinuxResources) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        let set = [
            (m.kernel().is_some(), "memory.kernel"),
            (m.kernel_tcp().is_some(), "memory.kernelTCP"),
            (m.swappiness().is_some(), "memory.swappiness"),
            (m.disable_oom_killer().is_some(), "memory.disableOOMKiller"),
            (m.use_hierarchy().is_some(), "memory.useHierarchy"),
        ];
        out.extend(set.iter().filter(|s| s.0).map(|s| s.1));
    }
    if let Some(c) = res.cpu() {
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            out.push("cpu.realtimeRuntime/realtimePeriod");
        }
    }
    if let Some(io) = res.block_io() {
        let leaf = io.leaf_weight().is_some()
            || io
                .weight_device()
                .iter()
                .flatten()
                .any(|d| d.leaf_weight().is_some());
        if leaf {
            out.push("blockIO.leafWeight");
        }
    }
    if res.network().is_some() {
        out.push("network");
    }
    out
}

/// The controller a cgroup v2 file belongs to: the part before its first dot
/// ("cgroup" for the core files, which every cgroup has).
pub fn controller_of(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// A relative share (cpu.weight, io.weight, io.bfq.weight), not a limit.
pub fn is_weight(file: &str) -> bool {
    file.ends_with(".weight")
}

/// `numToStr` of runc: -1 is "max", 0 unset, other negatives an error.
fn max_or_number(value: i64, what: &str) -> Result<Option<String>> {
    Ok(match value {
        0 => None,
        -1 => Some("max".into()),
        n if n < 0 => bail!("linux.resources.{what}: {n} is neither a size nor -1 (unlimited)"),
        n => Some(n.to_string()),
    })
}

/// The spec's swap is memory plus swap; memory.swap.max is the swap alone.
fn swap_max(swap: i64, memory: i64) -> Result<Option<String>> {
    let value = match (swap, memory) {
        // Unlimited memory and no word on swap: unlimited both, as with cgroup v1.
        (0, -1) | (-1, _) => return Ok(Some("max".into())),
        (0, _) => return Ok(None),
        (_, 0 | -1) => bail!(
            "linux.resources.memory.swap needs memory.limit: it counts memory and swap together"
        ),
        (s, m) if s < m => bail!(
            "linux.resources.memory.swap ({s}) is below memory.limit ({m}); it counts memory and swap together"
        ),
        (s, m) if s < 0 || m < 0 => bail!("linux.resources.memory: negative sizes"),
        (s, m) => s - m,
    };
    Ok(Some(value.to_string()))
}

/// cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc and crun use.
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio.weight (10..1000) to io.weight (1..10000), runc's conversion.
pub fn io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight).max(10) - 10) * 9999 / 990
}

fn check_range(value: u64, low: u64, high: u64, what: &str) -> Result<()> {
    if !(low..=high).contains(&value) {
        bail!("linux.resources.{what}: {value} is outside {low}..{high}");
    }
    Ok(())
}

fn throttle(key: &str, d: &LinuxThrottleDevice) -> String {
    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate())
}

/// "2MB", "64KB", "1GB": what the kernel names its hugetlb files by.
pub fn valid_page_size(size: &str) -> bool {
    let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &size[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB")
}

/// How `linux.resources.devices` is honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAccess {
    /// In a user namespace: only the devices the runtime binds or creates exist.
    ByConstruction,
    /// Every device allowed (privileged): nothing to enforce.
    AllowAll,
    /// No user namespace, as root in the initial one with a cgroup: the rules as a
    /// device cgroup program on the leaf (`oci/devices`), as runc does.
    Filter,
    /// No user namespace and no program (not root, or no cgroup): drop CAP_MKNOD from
    /// every capability set, so that no device node beyond the runtime's own can appear.
    DropMknod,
}

/// `can_filter`: sbx-oci may attach a device cgroup program to the container's leaf.
pub fn device_access(
    rules: &[LinuxDeviceCgroup],
    user_namespace: bool,
    can_filter: bool,
) -> DeviceAccess {
    if user_namespace {
        return DeviceAccess::ByConstruction;
    }
    // The last rule that matches decides (the kernel's and runc's reading): allow-all
    // means a last rule allowing every type, number and access.
    let allow_all = rules.last().is_some_and(|r| {
        r.allow()
            && matches!(r.typ(), None | Some(LinuxDeviceType::A))
            && r.major().map_or(true, |m| m < 0)
            && r.minor().map_or(true, |m| m < 0)
            && r.access()
                .as_deref()
                .map_or(true, |a| ["r", "w", "m"].iter().all(|c| a.contains(c)))
    });
    if allow_all {
        DeviceAccess::AllowAll
    } else if can_filter {
        DeviceAccess::Filter
    } else {
        DeviceAccess::DropMknod
    }
}

/// runc's rule: a sysctl is allowed only where the container has the namespace that
/// isolates it. `own` lists the namespaces the container does not share with the host
/// (new ones, or joined ones that are not the host's).
pub fn check_sysctl(name: &str, own: &[LinuxNamespaceType]) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let dotted = normalize(name);
    let has = |ns| own.contains(&ns);
    if IPC.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
        if has(LinuxNamespaceType::Ipc) {
            return Ok(());
        }
        bail!("linux.sysctl {name:?} would change the host's IPC namespace; add an ipc namespace");
    }
    if dotted.starts_with("net.") {
        if has(LinuxNamespaceType::Network) {
            return Ok(());
        }
        bail!("linux.sysctl {name:?} would change the host's network namespace; add a network namespace");
    }
    match dotted.as_str() {
        "kernel.domainname" if has(LinuxNamespaceType::Uts) => Ok(()),
        "kernel.hostname" if has(LinuxNamespaceType::Uts) => {
            bail!("linux.sysctl {name:?} conflicts with the config's hostname field; set that instead")
        }
        _ => bail!("linux.sysctl {name:?} is not isolated by any namespace of the container"),
    }
}

/// The file for a sysctl: dots become slashes ("net.ipv4.ip_forward" is
/// /proc/sys/net/ipv4/ip_forward); in a name written with slashes, dots stay
/// ("net/ipv4/conf/eth0.100/forwarding"), as runc reads both.
pub fn sysctl_path(name: &str) -> Result<PathBuf> {
    let path: String = normalize(name)
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        bail!("linux.sysctl {name:?} is not a sysctl name");
    }
    Ok(PathBuf::from("/proc/sys").join(path))
}

/// The dotted form: a name whose first separator is a slash has dots and slashes swapped.
fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests;
