//! Resource limits as planned: cgroup v2 values and where the sandbox's leaf goes, rlimits,
//! a wall-clock timeout.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::resource::Resource;

/// What goes into the leaf's control files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory: Option<u64>,
    pub memory_swap: Option<u64>,
    /// cpu.max: quota and period in microseconds.
    pub cpu: Option<(u64, u64)>,
    pub pids: Option<u64>,
    pub io_weight: Option<u32>,
}

impl CgroupLimits {
    pub fn is_empty(&self) -> bool {
        *self == CgroupLimits::default()
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() || self.memory_swap.is_some() {
            c.push("memory");
        }
        if self.cpu.is_some() {
            c.push("cpu");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        if self.io_weight.is_some() {
            c.push("io");
        }
        c
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub name: &'static str,
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone)]
pub struct LimitsPlan {
    pub cgroup: CgroupLimits,
    /// Where the leaf goes; None when no cgroup limit was asked for, or when they cannot be
    /// enforced here and the profile allows running without them.
    pub site: Option<Site>,
    pub rlimits: Vec<Rlimit>,
    pub timeout: Option<Duration>,
    /// No delegated subtree, but a systemd user manager can make one: sbx runs itself again
    /// in a transient scope with `Delegate=yes` (`systemd-run --user --scope`).
    pub via_systemd: Option<PathBuf>,
    /// Why the cgroup limits asked for are not enforced, when the profile lets the run go on
    /// without them (`limits_required: false`).
    pub not_enforced: Option<String>,
}

/// Where leaves are created: a directory of the cgroup2 tree that the caller owns, whose
/// `cgroup.subtree_control` enables the controllers the limits need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub parent: PathBuf,
}
