//! Where the OCI config's seccomp profile, cgroup resources and sysctls meet the modules
//! that turn them into what the kernel takes (`oci/seccomp`, `oci/resources`): one call
//! site each, before any namespace exists.

use std::collections::HashMap;

use anyhow::Result;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, LinuxSeccomp};
use seccompiler::BpfProgram;

/// The config's seccomp profile, compiled, with its `SECCOMP_FILTER_FLAG_*` bits.
pub struct Filter {
    pub program: BpfProgram,
    pub flags: u32,
}

/// The config's seccomp profile as a BPF program, compiled before any namespace exists.
pub fn seccomp(profile: Option<&LinuxSeccomp>) -> Result<Option<Filter>> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    Ok(Some(Filter {
        program: super::seccomp::compile(profile)?,
        flags: super::seccomp::flags(profile)?,
    }))
}

/// The cgroup v2 files (name, value) that apply `resources` to the container's leaf;
/// the set fields cgroup v2 has no meaning for are named in a warning, as runc does.
/// `devices` (the device cgroup) is not enforced: see docs/oci.md.
pub fn cgroup_files(resources: Option<&LinuxResources>) -> Result<Vec<(String, String)>> {
    let Some(res) = resources else {
        return Ok(Vec::new());
    };
    let ignored = super::resources::ignored(res);
    if !ignored.is_empty() {
        eprintln!(
            "sbx-oci: warning: linux.resources: ignored on cgroup v2: {}",
            ignored.join(", ")
        );
    }
    super::resources::cgroup_files(res)
}

/// runc's rule: a sysctl only where the container has the namespace that isolates it.
pub fn check_sysctl(
    sysctl: &HashMap<String, String>,
    netns: bool,
    ipcns: bool,
    utsns: bool,
) -> Result<()> {
    let own: Vec<LinuxNamespaceType> = [
        (netns, LinuxNamespaceType::Network),
        (ipcns, LinuxNamespaceType::Ipc),
        (utsns, LinuxNamespaceType::Uts),
    ]
    .into_iter()
    .filter_map(|(has, ns)| has.then_some(ns))
    .collect();
    for key in sysctl.keys() {
        super::resources::check_sysctl(key, &own)?;
    }
    Ok(())
}
