//! The sandbox's network: its mode, published ports, host loopback, where slirp4netns is,
//! and the running sandbox whose namespaces it joins.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inside addresses slirp4netns sets up with `--configure`.
pub const GUEST_ADDR: &str = "10.0.2.100";
pub const GATEWAY: &str = "10.0.2.2";
pub const DNS: &str = "10.0.2.3";
pub const MTU: u32 = 65520;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `[IP:]HPORT:PORT[/tcp|/udp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_addr,
            self.host_port,
            self.guest_port,
            self.proto.name()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    pub mode: NetworkMode,
    pub publish: Vec<Publish>,
    pub allow_host_loopback: bool,
    /// Outbound TCP only to these ports (Landlock ABI 4+); empty: unrestricted.
    pub allow_tcp_connect: Vec<u16>,
    /// Absolute path of slirp4netns (slirp4netns mode only).
    pub slirp4netns: Option<PathBuf>,
    /// `--net sandbox:NAME`: whose namespaces to join.
    pub join: Option<Join>,
}

impl NetPlan {
    /// Whether the namespace has slirp4netns's NAT (its own, or the joined sandbox's), and
    /// so wants the generated resolv.conf and hosts.
    pub fn user_mode_nat(&self) -> bool {
        self.mode == NetworkMode::Slirp4netns || self.join.as_ref().is_some_and(|j| j.nat)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace of its own with only loopback.
    #[default]
    None,
    /// The host's network namespace: no network isolation.
    Host,
    /// A network namespace of its own, with outbound TCP/UDP through slirp4netns's
    /// user-mode NAT; the host's loopback stays closed unless allowed.
    Slirp4netns,
    /// The network namespace of a running named sandbox (`--net sandbox:NAME` only).
    #[serde(skip)]
    Sandbox,
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Slirp4netns => "slirp4netns",
            NetworkMode::Sandbox => "sandbox",
        })
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "slirp4netns" => Ok(NetworkMode::Slirp4netns),
            other => anyhow::bail!(
                "unknown network mode {other:?}; use \"none\", \"host\", \"slirp4netns\" or \
                 (on the command line) \"sandbox:NAME\""
            ),
        }
    }
}

/// `--net sandbox:NAME`: a running named sandbox whose user and network namespaces a new
/// sandbox joins, as the containers of one pod share a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub name: String,
    /// Its command's process, whose namespaces are entered (init's are closed to us).
    pub target: ProcId,
    /// Its network has slirp4netns's NAT (so DNS at 10.0.2.3).
    pub nat: bool,
    /// The ids our own uid and gid have in its user namespace: the new sandbox's ids.
    pub uid: u32,
    pub gid: u32,
    /// Its user and network namespaces as init reported them at start (inode numbers):
    /// the ones we may land in. Its command could have moved into nested ones since.
    pub user_ns: u64,
    pub net_ns: u64,
}

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start: u64,
}
