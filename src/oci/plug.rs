//! Where the OCI config's seccomp profile and cgroup resources plug in. Each has a single
//! call site here; the modules that implement them (`oci/seccomp.rs`, `oci/resources.rs`)
//! come separately. Until then a config that asks for either is refused, clearly, rather
//! than run with less than it asked for.

use std::collections::HashMap;

use anyhow::{bail, Result};
use oci_spec::runtime::{LinuxResources, LinuxSeccomp};
use seccompiler::BpfProgram;

/// The config's seccomp profile as a BPF program, compiled before any namespace exists.
pub fn seccomp(profile: Option<&LinuxSeccomp>) -> Result<Option<BpfProgram>> {
    let Some(_profile) = profile else {
        return Ok(None);
    };
    // TODO(seccomp): Ok(Some(super::seccomp::compile(_profile)?))
    bail!(
        "linux.seccomp is set, but this sbx-oci cannot compile seccomp profiles yet; run \
         without one (podman: --security-opt seccomp=unconfined)"
    )
}

/// The cgroup v2 files (name, value) that apply `resources` to the container's leaf.
/// `devices` (the device cgroup) is not enforced: see docs/oci.md.
pub fn cgroup_files(resources: Option<&LinuxResources>) -> Result<Vec<(String, String)>> {
    let Some(res) = resources else {
        return Ok(Vec::new());
    };
    let limited = res.memory().is_some()
        || res.cpu().is_some()
        || res.pids().is_some()
        || res.block_io().is_some()
        || res
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        || res.network().is_some()
        || res.rdma().as_ref().is_some_and(|r| !r.is_empty())
        || res.unified().as_ref().is_some_and(|u| !u.is_empty());
    if !limited {
        return Ok(Vec::new());
    }
    // TODO(resources): super::resources::cgroup_files(res)
    bail!(
        "linux.resources sets limits, but this sbx-oci cannot apply cgroup limits yet; run \
         without them"
    )
}

/// Namespaced sysctls only: one of the host's own is never written. What runc allows.
pub fn check_sysctl(
    sysctl: &HashMap<String, String>,
    netns: bool,
    ipcns: bool,
    utsns: bool,
) -> Result<()> {
    // TODO(resources): super::resources::check_sysctl(..)
    for key in sysctl.keys() {
        let ipc = [
            "kernel.msgmax",
            "kernel.msgmnb",
            "kernel.msgmni",
            "kernel.sem",
            "kernel.shmall",
            "kernel.shmmax",
            "kernel.shmmni",
            "kernel.shm_rmid_forced",
        ]
        .contains(&key.as_str())
            || key.starts_with("fs.mqueue.");
        let allowed = (ipc && ipcns)
            || (key.starts_with("net.") && netns)
            || (["kernel.hostname", "kernel.domainname"].contains(&key.as_str()) && utsns);
        if !allowed || key.contains("..") || key.contains('/') {
            bail!(
                "linux.sysctl {key:?} is not allowed: only sysctls of a namespace the \
                 container has of its own can be set"
            );
        }
    }
    Ok(())
}
