//! `linux.resources` as the cgroup v1 files runc's fs driver writes
//! (libcontainer/cgroups/fs), in order. Pure: `v1` writes them into each controller's
//! directory. A file's controller is the part of its name before the first dot.
//!
//! `devices` are not files here: `v1` writes the device rules (`oci/devices`) as
//! `devices.deny` and `devices.allow` lines. `unified` has no cgroup v1 meaning and is
//! refused, as runc refuses it; `memory.useHierarchy` and `checkBeforeUpdate` are named by
//! `ignored` (the kernel keeps hierarchy on; sbx-oci has no update).

use anyhow::{bail, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

/// The files and values to write, in order.
pub fn files(res: &LinuxResources) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut put = |file: &str, value: String| out.push((file.to_string(), value));
    if let Some(pids) = res.pids() {
        match pids.limit() {
            0 => {}
            n if n < 0 => put("pids.max", "max".into()),
            n => put("pids.max", n.to_string()),
        }
    }
    if let Some(mem) = res.memory() {
        memory(mem, &mut put)?;
    }
    if let Some(cpu) = res.cpu() {
        self::cpu(cpu, &mut put);
    }
    if let Some(io) = res.block_io() {
        blkio(io, &mut put);
    }
    for limit in res.hugepage_limits().iter().flatten() {
        let size = limit.page_size();
        if !super::super::resources::valid_page_size(size) {
            bail!(
                "linux.resources.hugepageLimits: page size {size:?}: use a size such as 2MB or 1GB"
            );
        }
        let value = if limit.limit() < 0 { -1 } else { limit.limit() };
        put(&format!("hugetlb.{size}.limit_in_bytes"), value.to_string());
    }
    if let Some(net) = res.network() {
        if let Some(id) = net.class_id() {
            put("net_cls.classid", id.to_string());
        }
        for p in net.priorities().iter().flatten() {
            put(
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            );
        }
    }
    if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        bail!(
            "linux.resources.unified needs cgroup v2, and this host's controllers are on cgroup \
             v1: use the named fields (memory, cpu, pids, ...) or leave unified out"
        );
    }
    Ok(out)
}

/// runc's order: on a new cgroup both limits are unlimited, so the memory limit goes
/// first and memory+swap (never below it) after; an unlimited swap goes first.
fn memory(mem: &LinuxMemory, put: &mut impl FnMut(&str, String)) -> Result<()> {
    let limit = mem.limit().unwrap_or(0);
    let swap = mem.swap().unwrap_or(0);
    for (value, what) in [(limit, "limit"), (swap, "swap")] {
        if value < -1 {
            bail!("linux.resources.memory.{what}: {value} is neither a size nor -1 (unlimited)");
        }
    }
    if limit > 0 && swap > 0 && swap < limit {
        bail!(
            "linux.resources.memory.swap ({swap}) is below memory.limit ({limit}); it counts \
             memory and swap together"
        );
    }
    let swap_first = swap == -1;
    if swap_first {
        put("memory.memsw.limit_in_bytes", "-1".into());
    }
    if limit != 0 {
        put("memory.limit_in_bytes", limit.to_string());
    }
    if swap != 0 && !swap_first {
        put("memory.memsw.limit_in_bytes", swap.to_string());
    }
    if let Some(r) = mem.reservation().filter(|&r| r != 0) {
        put("memory.soft_limit_in_bytes", r.to_string());
    }
    #[allow(deprecated)]
    if let Some(k) = mem.kernel().filter(|&k| k != 0) {
        put("memory.kmem.limit_in_bytes", k.to_string());
    }
    if let Some(k) = mem.kernel_tcp().filter(|&k| k != 0) {
        put("memory.kmem.tcp.limit_in_bytes", k.to_string());
    }
    if let Some(s) = mem.swappiness() {
        if s > 100 {
            bail!("linux.resources.memory.swappiness: {s} is outside 0..100");
        }
        put("memory.swappiness", s.to_string());
    }
    if mem.disable_oom_killer() == Some(true) {
        put("memory.oom_control", "1".into());
    }
    Ok(())
}

/// The period before the quota and the realtime period before its runtime, as runc.
fn cpu(cpu: &LinuxCpu, put: &mut impl FnMut(&str, String)) {
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        put("cpu.shares", shares.to_string());
    }
    if let Some(period) = cpu.period().filter(|&p| p != 0) {
        put("cpu.cfs_period_us", period.to_string());
    }
    if let Some(quota) = cpu.quota().filter(|&q| q != 0) {
        put("cpu.cfs_quota_us", quota.to_string());
    }
    if let Some(burst) = cpu.burst() {
        put("cpu.cfs_burst_us", burst.to_string());
    }
    if let Some(period) = cpu.realtime_period().filter(|&p| p != 0) {
        put("cpu.rt_period_us", period.to_string());
    }
    if let Some(runtime) = cpu.realtime_runtime().filter(|&r| r != 0) {
        put("cpu.rt_runtime_us", runtime.to_string());
    }
    if let Some(idle) = cpu.idle() {
        put("cpu.idle", idle.to_string());
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        put("cpuset.cpus", cpus.to_string());
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        put("cpuset.mems", mems.to_string());
    }
}

/// Weights go to blkio.bfq.* where the bfq scheduler offers them (the writer's choice).
fn blkio(io: &LinuxBlockIo, put: &mut impl FnMut(&str, String)) {
    if let Some(w) = io.weight().filter(|&w| w != 0) {
        put("blkio.weight", w.to_string());
    }
    if let Some(w) = io.leaf_weight().filter(|&w| w != 0) {
        put("blkio.leaf_weight", w.to_string());
    }
    for d in io.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            put(
                "blkio.weight_device",
                format!("{}:{} {w}", d.major(), d.minor()),
            );
        }
        if let Some(w) = d.leaf_weight() {
            put(
                "blkio.leaf_weight_device",
                format!("{}:{} {w}", d.major(), d.minor()),
            );
        }
    }
    let throttles = [
        ("read_bps_device", io.throttle_read_bps_device()),
        ("write_bps_device", io.throttle_write_bps_device()),
        ("read_iops_device", io.throttle_read_iops_device()),
        ("write_iops_device", io.throttle_write_iops_device()),
    ];
    for (file, list) in throttles {
        for d in list.iter().flatten() {
            put(
                &format!("blkio.throttle.{file}"),
                format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            );
        }
    }
}

/// The set fields cgroup v1 gives no file to, for a warning.
pub fn ignored(res: &LinuxResources) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        if m.use_hierarchy().is_some() {
            out.push("memory.useHierarchy");
        }
        if m.check_before_update().is_some() {
            out.push("memory.checkBeforeUpdate");
        }
    }
    out
}

/// A relative share, not a limit: skipped with a warning where the kernel lacks its file
/// (no cfq or bfq scheduler) or its controller, as a weight changes nothing without
/// contention; a class id or priority for the network is a label, not a limit, either.
pub fn is_soft(file: &str) -> bool {
    file.ends_with("weight")
        || file.ends_with("weight_device")
        || file.starts_with("net_cls.")
        || file.starts_with("net_prio.")
}

/// Where the kernel may refuse a value it no longer enforces (kernel memory limits since
/// Linux 5.16): a warning, as runc ignores the field altogether.
pub fn is_deprecated(file: &str) -> bool {
    file == "memory.kmem.limit_in_bytes"
}
