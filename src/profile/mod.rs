//! Sandbox profiles: the serde types a JSON profile deserializes into.
//!
//! Every field is optional so that profiles can be layered and CLI options can override them;
//! `plan` turns the merged result into a validated `Plan`. Unknown fields are rejected
//! everywhere (`deny_unknown_fields`), so a typo never silently weakens a sandbox.

pub mod builtin;
pub mod cmd;
pub mod layer;
pub mod load;
pub mod select;
pub mod vars;

use std::collections::BTreeMap;

use schemars::JsonSchema;

pub use crate::plan::ids::UsernsMode;
/// The modes a profile names are the Plan's own types (src/plan/), so the Plan imports no
/// profile type.
pub use crate::plan::net::NetworkMode;
pub use crate::plan::security::LandlockMode;
use serde::{Deserialize, Serialize};

/// One JSON profile file, as written by its author.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The JSON Schema this file follows, for editors (`profiles/schema.json`); ignored.
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    /// The profile's name (defaults to the file name without `.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One line for `sbx profile ls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Another profile this one layers on top of: scalars override, maps merge, lists
    /// append (see `replace`). `name`, `description` and `commands` are not inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Inherited lists this profile replaces instead of appending to: any of "mounts",
    /// "env.pass".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<ListField>,
    /// Program names (base names) this profile is picked for when no `--profile` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Root filesystem: `"host"` (the host's `/`, read-only), an absolute directory path, or
    /// `{"image": "NAME"}` (an imported image under a writable overlay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsSpec>,
    /// Mounts applied on top of the root filesystem, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    /// The command's environment: nothing from the host unless listed in `pass`.
    #[serde(default, skip_serializing_if = "EnvSpec::is_empty")]
    pub env: EnvSpec,
    /// Working directory inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Host name inside the sandbox's UTS namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Size of the sandbox's own /tmp: "512M", or a share of memory such as "20%" (the
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_size: Option<String>,
    /// Size of the sandbox's own /dev/shm (default "64M", as podman's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    /// Ids the command runs as inside the sandbox.
    #[serde(default, skip_serializing_if = "UserSpec::is_empty")]
    pub user: UserSpec,
    /// Network: a mode (`"none"`, `"host"`, `"slirp4netns"`) or an object with the mode and
    /// its options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Hardening layers: capabilities, seccomp, Landlock, masked and protected paths.
    #[serde(default, skip_serializing_if = "SecuritySpec::is_empty")]
    pub security: SecuritySpec,
    /// Resource limits: cgroup v2 (memory, CPU, pids, io), rlimits and a wall-clock timeout.
    #[serde(default, skip_serializing_if = "LimitsSpec::is_empty")]
    pub limits: LimitsSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// memory.max, such as "512M".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// memory.swap.max, such as "0" or "1G".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<String>,
    /// cpu.max as a number of CPUs, such as "1.5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// pids.max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// io.weight, 1 to 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u32>,
    /// rlimits by name (nofile, nproc, core, fsize, as, cpu, stack, memlock): "SOFT[:HARD]".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rlimits: BTreeMap<String, String>,
    /// Wall-clock limit, such as "30s" or "10m": SIGTERM, then SIGKILL; the exit status is then timeout(1)'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// false: when cgroup limits cannot be enforced here, warn and run with the rlimits
    /// only (default true: fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_required: Option<bool>,
}

impl LimitsSpec {
    pub fn is_empty(&self) -> bool {
        *self == LimitsSpec::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecuritySpec {
    /// Capabilities on top of the defaults (none for a non-root command; podman's set
    /// for uid 0 inside).
    #[serde(default, skip_serializing_if = "CapsSpec::is_empty")]
    pub capabilities: CapsSpec,
    /// The seccomp filter.
    #[serde(default, skip_serializing_if = "SeccompSpec::is_empty")]
    pub seccomp: SeccompSpec,
    /// Landlock: "best-effort" (the default), "required" or "off".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockMode>,
    /// Mask /proc/kcore and friends and make /proc/sys & co read-only (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_kernel_paths: Option<bool>,
    /// Paths kept read-only inside every writable bind (relative), or at an absolute path
    /// inside. Missing ones are created first (a directory when the entry ends in `/`, else
    /// an empty file), so they stay protected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    /// The `.git` of a repository at the root of a writable bind: "read-only" as a whole
    /// (the default), or "writable" for steps that must commit, with only what git runs
    /// or trusts kept read-only (hooks, config, commondir, info, objects/info, modules,
    /// worktrees). See SECURITY.md for what "writable" costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitMode>,
    /// Cover the host's unix sockets (listening and datagram ones, as /proc/net/unix lists
    /// them at start) wherever the sandbox would see them but through a bind you asked for
    /// (default true): a read-only mount does not stop `connect()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_host_sockets: Option<bool>,
}

impl SecuritySpec {
    pub fn is_empty(&self) -> bool {
        *self == SecuritySpec::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapsSpec {
    /// Names such as "NET_RAW" or "CAP_NET_RAW".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Names, or "ALL".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

impl CapsSpec {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drop.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeccompSpec {
    /// false turns the filter off (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// More system calls to deny.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Default-denied system calls to allow again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// The error denied calls fail with, such as "EPERM" (the default) or "ENOSYS".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Allow nested sandboxes (unshare, setns, namespace clones, mounts): for build steps
    /// that run bwrap or podman themselves. Also turns off the kernel path masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_nested: Option<bool>,
}

impl SeccompSpec {
    pub fn is_empty(&self) -> bool {
        *self == SeccompSpec::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GitMode {
    /// The whole `.git` is read-only: nothing a step does can change what git runs later.
    #[default]
    ReadOnly,
    /// Commits work; hooks, config and the other files git trusts stay read-only.
    Writable,
}

impl std::str::FromStr for GitMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "read-only" => Ok(GitMode::ReadOnly),
            "writable" => Ok(GitMode::Writable),
            other => anyhow::bail!("unknown git mode {other:?}; use \"read-only\" or \"writable\""),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ListField {
    #[serde(rename = "mounts")]
    Mounts,
    #[serde(rename = "env.pass")]
    EnvPass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountOption {
    /// Read-only.
    Ro,
    /// Nothing on it can be executed.
    Noexec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MountKind {
    /// Read-write bind mount of a host path.
    Bind,
    /// Read-only bind mount of a host path (sub-mounts read-only too).
    RoBind,
    /// An empty tmpfs.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (binds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path inside the sandbox.
    pub destination: String,
    /// Binds: skip this mount when the source does not exist, instead of failing. Tmpfs:
    /// hide the host's directory only where the root is the host's and it exists there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Binds only: create the source directory (mode 0700) on the host when it is missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create: bool,
    /// Extra mount options: "ro" (read-only, also for a tmpfs), "noexec".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<MountOption>,
    /// Tmpfs only: size limit, such as `"64M"` or `"20%"` of memory (default: the kernel's,
    /// half of memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Tmpfs only: octal mode of its root, such as `"0700"` (default `"0755"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// Variables to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Host variables passed through when set on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<String>,
}

impl EnvSpec {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.pass.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// How the full id range is mapped: "holder" (the default: nested in a kept per-user
    /// namespace, no setuid helper per run) or "per-run" (newuidmap/newgidmap every run).
    /// The environment variable SBX_USERNS overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UsernsMode>,
}

impl UserSpec {
    pub fn is_empty(&self) -> bool {
        self.uid.is_none() && self.gid.is_none() && self.userns.is_none()
    }
}

/// `"rootfs": "host"`, `"rootfs": "/some/dir"`, or `"rootfs": {"image": "centos:stream9"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RootfsSpec {
    Path(String),
    Image(ImageRootfs),
}

/// An image from the store (`sbx image ls`) as the root, under a writable overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRootfs {
    /// The image's name, `NAME[:TAG]`.
    pub image: String,
    /// Where the image is pulled from when it is missing (shown in the error), such as
    /// `"quay.io/centos/centos:stream9"`; an image stored under this reference is used too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<String>,
    /// A host directory that keeps the overlay's upper layer (the run's changes) between
    /// runs; created when missing. Default: changes are discarded when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<String>,
    /// "auto" (kernel overlayfs, else fuse-overlayfs; the default), "kernel" or "fuse".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayMode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverlayMode {
    /// Kernel overlayfs where the kernel allows it in a user namespace, else fuse-overlayfs.
    #[default]
    Auto,
    /// Kernel overlayfs only.
    Kernel,
    /// fuse-overlayfs only.
    Fuse,
}

impl std::str::FromStr for OverlayMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(OverlayMode::Auto),
            "kernel" => Ok(OverlayMode::Kernel),
            "fuse" => Ok(OverlayMode::Fuse),
            other => {
                anyhow::bail!("unknown overlay {other:?}; use \"auto\", \"kernel\" or \"fuse\"")
            }
        }
    }
}

impl<'de> Deserialize<'de> for RootfsSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RootfsSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"host\", a directory, or an object such as {\"image\": \"NAME\"}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RootfsSpec, E> {
                Ok(RootfsSpec::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RootfsSpec, A::Error> {
                ImageRootfs::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RootfsSpec::Image)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `"network": "none"`, or `"network": {"mode": "slirp4netns", "publish": [...], ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NetworkSpec {
    Mode(NetworkMode),
    Full(NetworkOptions),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetworkMode>,
    /// Host ports forwarded into the sandbox: `[IP:]HPORT:PORT[/tcp|/udp]`, IP defaulting
    /// to 127.0.0.1 (slirp4netns only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Let the sandbox reach the host's 127.0.0.1 through 10.0.2.2 (slirp4netns only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_loopback: Option<bool>,
    /// With Landlock's network rules (ABI 4+), outbound TCP only to these ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_tcp_connect: Vec<u16>,
}

impl NetworkSpec {
    /// Everything as options (a bare mode is an object with just the mode).
    pub fn options(&self) -> NetworkOptions {
        match self {
            NetworkSpec::Mode(mode) => NetworkOptions {
                mode: Some(*mode),
                ..Default::default()
            },
            NetworkSpec::Full(options) => options.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for NetworkSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NetworkSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a network mode (\"none\", \"host\", \"slirp4netns\") or an object")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NetworkSpec, E> {
                NetworkMode::deserialize(serde::de::value::StrDeserializer::<E>::new(v))
                    .map(NetworkSpec::Mode)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<NetworkSpec, A::Error> {
                NetworkOptions::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(NetworkSpec::Full)
            }
        }
        d.deserialize_any(Visitor)
    }
}
