//! Landlock: read and execute everywhere, write only beneath the sandbox's writable mounts;
//! with no network, no TCP bind or connect at all; no signals or abstract unix sockets out
//! of the sandbox. Best effort by default, and the outcome is never hidden.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::{Deserialize, Serialize};

pub use crate::plan::security::{LandlockPlan, Tcp, TARGET_ABI};
use crate::profile::LandlockMode;

const TARGET: ABI = ABI::V6;

/// What the kernel enforced, as `restrict_self` reported it: the authoritative answer,
/// where `LandlockPlan::outcome` is the prediction from the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enforced {
    Fully,
    Partially,
    Not,
}

impl Enforced {
    fn from_status(status: &RulesetStatus) -> Enforced {
        match status {
            RulesetStatus::FullyEnforced => Enforced::Fully,
            RulesetStatus::PartiallyEnforced => Enforced::Partially,
            RulesetStatus::NotEnforced => Enforced::Not,
        }
    }

    /// For `-v`: "fully enforced", as the landlock crate says it.
    pub fn describe(self) -> &'static str {
        match self {
            Enforced::Fully => "fully enforced",
            Enforced::Partially => "partially enforced (rights this kernel lacks are not)",
            Enforced::Not => "not enforced",
        }
    }
}

/// The `-v` line for what the kernel enforced on the command (`None`: Landlock was off).
pub fn describe_enforced(enforced: Option<Enforced>) -> String {
    match enforced {
        Some(e) => format!(
            "landlock: the kernel reports it {} on the command",
            e.describe()
        ),
        None => "landlock: off; the command runs without a ruleset".to_string(),
    }
}

/// Decides the mode; `required` on a kernel that cannot fully enforce it is an error now,
/// before any namespace exists.
pub fn plan(
    mode: LandlockMode,
    writable: Vec<(PathBuf, bool)>,
    tcp: Tcp,
    kernel_abi: Option<u32>,
) -> Result<LandlockPlan> {
    let plan = LandlockPlan {
        mode,
        writable,
        tcp,
        kernel_abi,
    };
    if mode == LandlockMode::Required && !plan.fully_enforced() {
        bail!(
            "Landlock is required by the profile but {}; use a kernel with Landlock ABI {TARGET_ABI} \
             or newer (`sbx check` shows this one), or set \"landlock\": \"best-effort\"",
            plan.outcome()
        );
    }
    Ok(plan)
}

/// In the command's process, after its working directory is set and before seccomp;
/// returns what the kernel enforced (`None` when Landlock is off).
pub fn apply(plan: &LandlockPlan) -> Result<Option<Enforced>> {
    if plan.mode == LandlockMode::Off {
        return Ok(None);
    }
    let level = match plan.mode {
        LandlockMode::Required => CompatLevel::HardRequirement,
        _ => CompatLevel::BestEffort,
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET))?
        .scope(Scope::from_all(TARGET))?;
    match &plan.tcp {
        Tcp::Deny => ruleset = ruleset.handle_access(AccessNet::from_all(TARGET))?,
        Tcp::ConnectOnly(_) => ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?,
        Tcp::Any => {}
    }
    let mut created = ruleset.create()?.add_rule(PathBeneath::new(
        PathFd::new("/")?,
        AccessFs::from_read(TARGET),
    ))?;
    if let Tcp::ConnectOnly(ports) = &plan.tcp {
        for port in ports {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
    }
    // Devices: read, write and ioctl on what /dev holds; nothing can be created there.
    created = created.add_rule(PathBeneath::new(
        PathFd::new("/dev")?,
        AccessFs::from_read(TARGET) | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev,
    ))?;
    // /proc/self/* writes (oom_score_adj, attr, comm); /proc/sys & co are read-only mounts.
    created = created.add_rule(PathBeneath::new(
        PathFd::new("/proc")?,
        AccessFs::from_read(TARGET) | AccessFs::WriteFile | AccessFs::Truncate,
    ))?;
    // The caller's stdin, stdout and stderr may be files or terminals outside the sandbox;
    // reopening them (`> /dev/stderr`) must keep working, with no more access than each was
    // opened with: a file given as stdin (`< notes.txt`) stays read-only.
    for fd in 0..3 {
        // A descriptor with no path (a namespace file, an anonymous inode: its link reads
        // `user:[...]`, `anon_inode:...`) cannot be reopened by path, and Landlock refuses
        // rules on it (EBADFD): nothing to allow. Skipping only leaves out an allow rule.
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
        if !link.is_ok_and(|target| target.is_absolute()) {
            continue;
        }
        let Ok(file) = PathFd::new(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        let kind = nix::sys::stat::fstat(file.as_fd()).map(|st| st.st_mode & libc::S_IFMT);
        if let (Ok(kind @ (libc::S_IFREG | libc::S_IFCHR)), Some(access)) =
            (kind, opened_access(fd))
        {
            let access = if kind == libc::S_IFCHR {
                access | AccessFs::IoctlDev
            } else {
                access
            };
            created = created.add_rule(PathBeneath::new(file, access))?;
        }
    }
    for (path, is_dir) in &plan.writable {
        let access = if *is_dir {
            AccessFs::from_all(TARGET)
        } else {
            AccessFs::from_file(TARGET)
        };
        let fd = PathFd::new(path).map_err(|e| {
            // The crate's error repeats its source: name the path and the errno once.
            let cause = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            anyhow::anyhow!("open {} for Landlock: {cause}", path.display())
        })?;
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    let status = created.restrict_self().context("Landlock restrict_self")?;
    if plan.mode == LandlockMode::Required && status.ruleset != RulesetStatus::FullyEnforced {
        bail!(
            "Landlock is required but the kernel enforced it only {:?}",
            status.ruleset
        );
    }
    Ok(Some(Enforced::from_status(&status.ruleset)))
}

/// The file access descriptor `fd` was opened with, as Landlock rights.
fn opened_access(fd: i32) -> Option<landlock::BitFlags<AccessFs>> {
    // SAFETY: F_GETFL only reads the flags of a descriptor of this process; an unused
    // number yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return None;
    }
    let write = AccessFs::WriteFile | AccessFs::Truncate;
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => Some(AccessFs::ReadFile.into()),
        libc::O_WRONLY => Some(write),
        libc::O_RDWR => Some(write | AccessFs::ReadFile),
        _ => None,
    }
}
