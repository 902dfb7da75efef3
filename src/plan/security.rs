//! The hardening layers as planned: capabilities, the compiled seccomp filter, Landlock
//! rules, and what else the child covers.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct SecurityPlan {
    pub caps: CapsPlan,
    pub seccomp: Option<SeccompPlan>,
    pub landlock: LandlockPlan,
    /// Mask /proc/kcore & co, make /proc/sys & co read-only.
    pub mask_kernel_paths: bool,
    pub allow_nested: bool,
    /// Host pathname sockets to cover where the sandbox would see them (see `sockets`).
    pub host_sockets: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsPlan {
    /// The command's capabilities (effective, permitted and bounding; inheritable only for
    /// the ambient ones).
    pub set: caps::CapsHashSet,
    /// A non-root command keeps `set` across execve only as ambient capabilities.
    pub ambient: bool,
}

#[derive(Debug, Clone)]
pub struct SeccompPlan {
    /// One program: see `bpf` for its shape.
    pub program: seccompiler::BpfProgram,
    /// For `-v`: how many rules the filter has.
    pub denied: usize,
    pub errno: i32,
}

/// The newest ABI whose rights sbx asks for (filesystem V5, network V4, scopes V6).
pub const TARGET_ABI: u32 = 6;

/// What TCP may do (Landlock ABI 4+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tcp {
    /// No network: no TCP bind or connect at all.
    Deny,
    /// Unrestricted.
    Any,
    /// Connect only to these ports; bind unrestricted.
    ConnectOnly(Vec<u16>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    pub mode: LandlockMode,
    /// Directories (or files) the command may write beneath, as seen inside.
    pub writable: Vec<(PathBuf, bool)>,
    pub tcp: Tcp,
    /// The kernel's ABI, from the probe, for the report.
    pub kernel_abi: Option<u32>,
}

impl LandlockPlan {
    /// "fully enforced (ABI 6 of kernel ABI 7)", for `-v` and `sbx check`.
    pub fn outcome(&self) -> String {
        match (self.mode, self.kernel_abi) {
            (LandlockMode::Off, _) => {
                "off (--landlock off, the profile, or --allow-nested: Landlock forbids mounts)".into()
            }
            (_, None) | (_, Some(0)) => "not enforced: this kernel has no Landlock".into(),
            (_, Some(k)) if k >= TARGET_ABI => {
                format!("fully enforced (ABI {TARGET_ABI}; kernel ABI {k})")
            }
            (_, Some(k)) => format!(
                "partially enforced (kernel ABI {k} of the {TARGET_ABI} sbx uses: rights newer than ABI {k} are not enforced)"
            ),
        }
    }

    pub fn fully_enforced(&self) -> bool {
        self.kernel_abi.is_some_and(|k| k >= TARGET_ABI)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    /// As much as the kernel supports; `sbx run -v` and `sbx check` say how much.
    #[default]
    BestEffort,
    /// Anything less than full enforcement is an error.
    Required,
    /// No Landlock rules.
    Off,
}

impl std::str::FromStr for LandlockMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "best-effort" => Ok(LandlockMode::BestEffort),
            "required" => Ok(LandlockMode::Required),
            "off" => Ok(LandlockMode::Off),
            other => anyhow::bail!(
                "unknown Landlock mode {other:?}; use \"best-effort\", \"required\" or \"off\""
            ),
        }
    }
}
