//! The user namespace's ids: who the command is inside, and how the id maps are written.

use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One line of a uid_map/gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Debug, Clone)]
pub struct IdPlan {
    pub host_uid: u32,
    pub host_gid: u32,
    pub inside_uid: u32,
    pub inside_gid: u32,
    pub mode: IdMode,
}

#[derive(Debug, Clone)]
pub enum IdMode {
    /// The caller's id plus all its subordinate ids, written by the setuid helpers.
    Full {
        newuidmap: PathBuf,
        newgidmap: PathBuf,
        uid_map: Vec<IdRange>,
        gid_map: Vec<IdRange>,
    },
    /// Only the caller's own id; `warning` says why and how to get the range.
    Single { warning: String },
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.inside, self.outside, self.count)
    }
}

/// How a full id map reaches the sandbox's user namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UsernsMode {
    /// Nested in the per-user kept namespace (see `holder`): sbx writes the maps itself, no
    /// setuid helper runs. The default.
    #[default]
    Holder,
    /// A namespace of its own, whose maps newuidmap/newgidmap write on every run.
    PerRun,
}

impl UsernsMode {
    /// `SBX_USERNS`'s values: `holder`, `per-run`.
    pub fn parse(value: &str) -> Option<UsernsMode> {
        match value {
            "holder" => Some(UsernsMode::Holder),
            "per-run" => Some(UsernsMode::PerRun),
            _ => None,
        }
    }
}
