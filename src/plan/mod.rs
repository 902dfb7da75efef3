//! The Plan: everything a sandbox will be, as plain data. It imports nothing that builds or
//! runs it (`ci/layers.py` checks): the types are here, one file per part, and the modules
//! that plan (`planner`), prepare (`prepare`) and run a sandbox (supervisor, child, init)
//! import them.
//!
//! Data flows one way: profile + overrides + host facts -> `planner::build` (writes
//! nothing) -> `Plan` -> `prepare` (makes what `Plan::setup` lists, then plans again until
//! it lists nothing) -> supervisor and child, which only read it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

pub mod ids;
pub mod limits;
pub mod net;
pub mod rootfs;
pub mod security;

pub use ids::{IdMode, IdPlan, IdRange, UsernsMode};
pub use limits::LimitsPlan;
pub use net::NetPlan;
pub use rootfs::{
    Mount, OverlayKind, Rootfs, Skeleton, TmpfsSize, UpperDir, DEFAULT_SHM_SIZE, DEFAULT_TMP_SIZE,
};
pub use security::SecurityPlan;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The validated description of one sandbox run. Nothing changes a Plan once it is built:
/// `prepare` makes the host match `setup` and builds a new one, which the runtime reads.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Profile name and where it came from, for `-v`.
    pub profile: String,
    pub profile_origin: String,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The `PATH` the command is looked up in, inside the sandbox.
    pub search_path: String,
    pub rootfs: Rootfs,
    pub mounts: Vec<Mount>,
    /// Read-only directories that take new mount points (see `Skeleton`); empty for most
    /// runs, which then cost nothing more.
    pub skeletons: Vec<Skeleton>,
    pub workdir: PathBuf,
    pub hostname: Option<String>,
    pub network: NetPlan,
    pub ids: IdPlan,
    /// With a full id map: nested in the kept namespace, or made per run (see `holder`).
    pub userns: UsernsMode,
    /// The uid and gid the command switches to before exec, when the id map puts the
    /// caller at 0 rather than at the command's ids (image roots: see `image::userns`).
    pub run_as: Option<(u32, u32)>,
    pub security: SecurityPlan,
    pub limits: LimitsPlan,
    /// Give the command a pseudo-terminal of its own (stdin is a terminal).
    pub tty: bool,
    pub verbose: bool,
    /// A named sandbox: where its state and control socket live.
    pub instance: Option<Paths>,
    /// `--status-json`: where to write the sandbox's status.
    pub status_json: Option<PathBuf>,
    /// What the planner left out or changed, for the user to know (printed by `run`).
    pub warnings: Vec<String>,
    /// Sizes of the sandbox's own /tmp and /dev/shm.
    pub tmp_size: TmpfsSize,
    pub shm_size: TmpfsSize,
    /// What must be made on the host before this Plan can run; empty for a Plan that can.
    pub setup: HostSetup,
}

impl Plan {
    /// Whether anyone wants pids and namespace ids reported.
    pub fn reports_status(&self) -> bool {
        self.instance.is_some() || self.status_json.is_some()
    }
}

/// What the planner found missing on the host, for `prepare` to make (the planner writes
/// nothing). Once it is made, planning again finds it, and gives a Plan whose setup is
/// empty: the one the runtime gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSetup {
    /// Profile bind sources with `"create": true` that do not exist (mode 0700).
    pub bind_sources: Vec<PathBuf>,
    /// The kept upper directory of an image root, when it does not exist (mode 0700).
    pub upper: Option<PathBuf>,
    /// Protected paths missing beneath writable binds (see `protect`).
    pub protected: Vec<ProtectedPath>,
    /// Controllers the cgroup site's `cgroup.subtree_control` does not enable yet.
    pub controllers: Vec<String>,
}

impl HostSetup {
    pub fn is_empty(&self) -> bool {
        *self == HostSetup::default()
    }
}

/// A protected path to create beneath a writable bind: a directory or an empty file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedPath {
    /// The bind's source (canonical host path).
    pub bind: PathBuf,
    /// Relative to it.
    pub rel: PathBuf,
    pub is_dir: bool,
}

/// One named sandbox's two directories.
#[derive(Debug, Clone)]
pub struct Paths {
    pub name: String,
    /// Record, log, writable layer.
    pub data: PathBuf,
    /// State and control socket.
    pub runtime: PathBuf,
}

/// An absolute path with `.` removed; `..` is rejected rather than resolved.
pub fn normalize_absolute(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.is_absolute() {
        bail!("{what}: {} is not an absolute path", path.display());
    }
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                bail!(
                    "{what}: {} contains `..`; give the path without it",
                    path.display()
                )
            }
            Component::Prefix(_) => unreachable!("no path prefixes on Linux"),
        }
    }
    Ok(out)
}

/// "64M", "1G", "4096" -> bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|_| {
        anyhow::anyhow!("invalid size {s:?}; use a number with an optional K, M, G or T suffix")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

/// "0700" -> 0o700.
pub fn parse_mode(s: &str) -> Result<u32> {
    match u32::from_str_radix(s, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => bail!("invalid mode {s:?}; use octal digits such as \"0755\""),
    }
}

/// Bytes of a path, for building C strings.
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}
