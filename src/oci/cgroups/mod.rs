//! The container's cgroups, as runc's drivers place them. The host's layout decides, read
//! once per command (`Host::read`): where any controller is mounted as cgroup v1 (a hybrid
//! or a v1 host) the v1 manager (`v1`) makes the container's directory in every v1
//! hierarchy, writes `linux.resources` as runc's fs driver does and the device rules as
//! `devices.allow`/`devices.deny` lines, and joins each; on a hybrid host it also joins
//! a leaf of the controller-less cgroup v2 tree, as runc does. Otherwise the v2 manager
//! (`v2`) makes one leaf and writes the fs2 files and the device program.
//!
//! `linux.cgroupsPath`, as runc's fs driver reads it: absolute, below each hierarchy's
//! mount point; relative, below the caller's own cgroup in that hierarchy; none, a name
//! from the container id (only when device rules need a cgroup). `create` records the
//! directories (`Placement`, in state.json); `exec` joins them, `delete` removes them.

pub mod v1;
pub mod v1_files;
pub mod v2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::supervisor::cgroup::{self as host_cgroup, CgroupHost, V1Hierarchy};

/// This process's cgroup layout: the cgroup v2 mount and cgroup, the v1 hierarchies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub v2: Option<CgroupHost>,
    pub v1: Vec<V1Hierarchy>,
}

impl Host {
    /// One reading of /proc/self/mountinfo and /proc/self/cgroup.
    pub fn read() -> Host {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Host::parse(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"))
    }

    pub fn parse(mountinfo: &str, cgroup: &str) -> Host {
        let v2 = host_cgroup::cgroup2_mount(mountinfo).map(|mount| CgroupHost {
            mount,
            own: host_cgroup::own_cgroup(cgroup).unwrap_or_else(|| "/".into()),
        });
        Host {
            v2,
            v1: host_cgroup::v1_hierarchies(mountinfo, cgroup),
        }
    }

    /// Controllers on cgroup v1: the v1 manager applies the resources.
    pub fn uses_v1(&self) -> bool {
        !self.v1.is_empty()
    }

    /// The v1 hierarchy holding `controller`.
    pub fn v1_with(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1.iter().find(|h| h.has(controller))
    }

    /// Device rules can be enforced by a cgroup: the v1 devices controller, or a device
    /// program on a cgroup v2 leaf.
    pub fn can_filter_devices(&self) -> bool {
        self.v1_with("devices").is_some() || self.v2.is_some()
    }
}

/// Where create placed the container (state.json keeps it): its cgroup v2 leaf and its
/// directory in each cgroup v1 hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(rename = "cgroup", default)]
    pub v2: Option<PathBuf>,
    #[serde(rename = "cgroup_v1", default, skip_serializing_if = "Vec::is_empty")]
    pub v1: Vec<PathBuf>,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.v2.is_none() && self.v1.is_empty()
    }

    /// Every directory, the v2 leaf first.
    pub fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.v2.iter().chain(self.v1.iter())
    }

    /// The processes in the container's cgroup, if it has one.
    pub fn procs(&self) -> Option<Vec<i32>> {
        let dir = self.dirs().next()?;
        let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Moves `pid` into every directory (`exec`); the first failure.
    pub fn enter(&self, pid: u32) -> Result<()> {
        for dir in self.dirs() {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(|e| anyhow::anyhow!("join cgroup {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Removes every directory, waiting up to `patience` for each to empty (a zombie
    /// still counts); true when none is left.
    pub fn remove(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let mut gone = true;
        for dir in self.dirs() {
            while std::fs::remove_dir(dir).is_err() && dir.exists() {
                if Instant::now() > deadline {
                    gone = false;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        gone
    }
}

/// What to place: the container's process and what its cgroup carries.
pub struct Request<'a> {
    pub id: &'a str,
    /// linux.cgroupsPath.
    pub path: Option<&'a Path>,
    /// The resources' files, as `files` chose them.
    pub files: &'a Files,
    /// The device rules, when a cgroup is to enforce them.
    pub devices: Option<&'a [super::devices::Rule]>,
    pub pid: i32,
    /// Root in the initial user namespace: failing to make a cgroup is then an error.
    pub privileged: bool,
}

/// The resources' files: for the cgroup v1 hierarchies, and for the cgroup v2 leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub v1: Vec<(String, String)>,
    pub v2: Vec<(String, String)>,
}

impl Files {
    pub fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.v2.is_empty()
    }
}

/// The files for `linux.resources`, each controller's where the host has it: a controller
/// mounted as cgroup v1 gets runc's fs files, any other its cgroup v2 files (on a hybrid
/// host, hugetlb or rdma may be on the v2 tree), and the v2 writer says when it is
/// missing there too. net_cls and net_prio have no v2 files and stay v1 (the v1 writer
/// warns when they are not mounted). The set fields the chosen files cannot carry are
/// named in a warning, as runc does.
pub fn files(host: &Host, res: Option<&oci_spec::runtime::LinuxResources>) -> Result<Files> {
    let Some(res) = res else {
        return Ok(Files::default());
    };
    let (ignored, manager) = if host.uses_v1() {
        (v1_files::ignored(res), "cgroup v1")
    } else {
        (super::resources::ignored(res), "cgroup v2")
    };
    if !ignored.is_empty() {
        eprintln!(
            "sbx-oci: warning: linux.resources: ignored on {manager}: {}",
            ignored.join(", ")
        );
    }
    if !host.uses_v1() {
        return Ok(Files {
            v1: Vec::new(),
            v2: super::resources::cgroup_files(res)?,
        });
    }
    let on_v1 = |file: &str| {
        let controller = match super::resources::controller_of(file) {
            "io" => "blkio",
            c => c,
        };
        host.v1_with(controller).is_some()
    };
    let v2_files = if host.v2.is_some() {
        super::resources::cgroup_files(res).unwrap_or_default()
    } else {
        Vec::new()
    };
    let v1 = v1_files::files(res)?
        .into_iter()
        .filter(|(f, _)| on_v1(f) || host.v2.is_none() || f.starts_with("net_"))
        .collect();
    let v2 = v2_files.into_iter().filter(|(f, _)| !on_v1(f)).collect();
    Ok(Files { v1, v2 })
}

/// Places the container's process. Nothing when there is no path and nothing to apply,
/// or, without limits to apply, when the caller cannot make the cgroups (unprivileged
/// without a delegated subtree, as runc does rootless). On failure nothing made is left.
pub fn join(host: &Host, req: &Request) -> Result<Placement> {
    let path = match req.path.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => path.to_path_buf(),
        // The device rules need a cgroup: one named after the container, below ours (as
        // runc makes one for a config without a path).
        None if req.devices.is_some() => PathBuf::from(req.id),
        None if !req.files.is_empty() => bail!("linux.resources needs linux.cgroupsPath"),
        None => return Ok(Placement::default()),
    };
    if path.to_string_lossy().contains(':') {
        bail!(
            "linux.cgroupsPath {} is a systemd slice:prefix:name: pass --systemd-cgroup \
             (as podman --cgroup-manager systemd and containerd's SystemdCgroup = true do), \
             or give a cgroupfs path (podman --cgroup-manager cgroupfs)",
            path.display()
        );
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        bail!("linux.cgroupsPath {} has \"..\"", path.display());
    }
    let made = if host.uses_v1() {
        v1::join(host, &path, req)
    } else {
        v2::join(host, &path, req)
    };
    match made {
        Err(_) if req.files.is_empty() && !req.privileged => Ok(Placement::default()),
        other => other,
    }
}

/// The directory for `path` in a hierarchy whose mount is `mount` and in which this
/// process's cgroup is `own_dir`.
pub fn leaf(mount: &Path, own_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    } else {
        own_dir.join(path)
    }
}

#[cfg(test)]
mod tests;
